"""One class graded on N machines: ``grade --shard K/N`` and ``python -m autograder merge``.

Which students a shard grades. Student ``S`` is in shard ``K`` of ``N`` (K = 1 … N) when

    int.from_bytes(sha256(S.encode("utf-8")).digest()[:8], "big") % N == K - 1

a hash of the student id alone. Adding, removing or renaming other students (or any files) never moves
a student to another shard, so ``--resume`` in a shard's own course dir keeps working as submissions
trickle in; a student's shard is the same on every machine and Python version (no ``hash()``, which is
salted per process). The price: shards are balanced only on average (for 200 students, within about
±15 %); every shard sees the whole submissions folder and grades its part.

What a shard leaves for the merge. Besides its CSV, gradebook and ``results/`` (one JSON per
submission, see ``grading._save_row``), a shard writes ``<course dir>/shard.json`` before it grades
anything: K/N, the whole class as that shard saw it, the assignments, the time limit, the sandbox,
the released notebooks' digest, where its gradebook is, and the fingerprint of each of its submissions.

``merge`` reads those and refuses, with one line, to write anything partial or mixed: shards of another
split or graded differently (assignments, time limit, sandbox, released notebooks, max scores, the
gradebook's stored tests), the same shard twice, a missing shard (naming its students), a shard that
has not finished (naming a submission without a saved result). Otherwise it writes the CSV in the
class's order with the same writer ``grade`` uses, so the file is byte for byte the one a single run
over the whole class writes, and one nbgrader gradebook with every shard's students, submissions,
grades and comments, copied through nbgrader's own ``Gradebook`` API (``_copy_assignment``,
``_copy_submission``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from autograder.course import COURSE_ID, EXERCISES, load_config, notebooks
from autograder.grading import GradingError, _result_path, write_csv

MANIFEST = "shard.json"
FORMAT = 1
# What every shard of one class must have graded with: a difference makes the merged CSV meaningless.
SAME_RUN = ("students", "assignments", "timeout", "sandboxed", "released", "max_scores")


def parse(text: str) -> tuple[int, int]:
    """"K/N" -> (K, N) with 1 <= K <= N; GradingError with a one-line reason otherwise."""
    try:
        k, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise GradingError(f"--shard must be K/N with 1 <= K <= N (for example 2/3), not {text!r}")
    return k, n


def shard_of(student: str, n: int) -> int:
    """The shard (1 … n) a student belongs to: see the module docstring."""
    return int.from_bytes(hashlib.sha256(student.encode("utf-8")).digest()[:8], "big") % n + 1


def select(students: list[str], k: int, n: int) -> list[str]:
    return [s for s in students if shard_of(s, n) == k]


def released_digest(names: list[str]) -> dict[str, str]:
    """assignment -> sha256 of its released notebooks (what submissions are checked against)."""
    out = {}
    for name in names:
        h = hashlib.sha256()
        for nb in notebooks(name):
            h.update(hashlib.sha256((EXERCISES / name / f"{nb}.ipynb").read_bytes()).digest())
        out[name] = h.hexdigest()
    return out


# ------------------------------------------------------------------ the shard's side
def check_course_dir(course_dir: Path, k: int, n: int) -> None:
    """Refuse a course dir that holds another shard's work: two shards must never share one."""
    try:
        held = json.loads((course_dir / MANIFEST).read_text(encoding="utf-8"))["shard"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if held != [k, n]:
        raise GradingError(f"--course-dir {course_dir} holds shard {held[0]}/{held[1]}'s work; give each shard "
                           f"its own --course-dir (or delete {course_dir / MANIFEST} to reuse it)")


def write_manifest(course_dir: Path, k: int, n: int, students: list[str], names: list[str], timeout,
                   sandboxed: bool, max_scores: dict[str, float], db: Path, keys: dict) -> None:
    """Record what this shard grades and how (atomically), before it grades anything."""
    try:
        db_ref = str(db.relative_to(course_dir))          # the merge may see the folder at another path
    except ValueError:
        db_ref = str(db)
    manifest = {"format": FORMAT, "shard": [k, n], "students": students, "assignments": names,
                "timeout": timeout, "sandboxed": sandboxed, "released": released_digest(names),
                "max_scores": max_scores, "db": db_ref,
                "pairs": [[s, a, key] for (s, a), key in keys.items()]}
    tmp = course_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(tmp, course_dir / MANIFEST)


# ------------------------------------------------------------------ the merge
def _read_manifest(course_dir: Path) -> dict:
    try:
        manifest = json.loads((course_dir / MANIFEST).read_text(encoding="utf-8"))
    except OSError:
        raise GradingError(f"{course_dir} is not a shard's course dir (no {MANIFEST}: was it graded with "
                           "--shard K/N and this --course-dir?)") from None
    except ValueError:
        raise GradingError(f"{course_dir / MANIFEST} is not readable JSON") from None
    if manifest.get("format") != FORMAT:
        raise GradingError(f"{course_dir / MANIFEST} was written by another version of the grader")
    manifest["dir"] = course_dir
    return manifest


def _label(shard: dict) -> str:
    k, n = shard["shard"]
    return f"shard {k}/{n} ({shard['dir']})"


def _check_same_run(shards: list[dict]) -> None:
    """Every shard split the same class the same way and graded it with the same settings."""
    first = shards[0]
    for shard in shards[1:]:
        if shard["shard"][1] != first["shard"][1]:
            raise GradingError(f"shards of different splits: {_label(first)} and {_label(shard)}")
        for key in SAME_RUN:
            if shard[key] != first[key]:
                raise GradingError(f"shards graded differently ({key}): {_label(first)} has "
                                   f"{_show(first, key, shard)}, {_label(shard)} has {_show(shard, key, first)}")


def _show(shard: dict, key: str, other: dict) -> str:
    """A short rendering of what differs (for long lists: only what the other shard lacks)."""
    value = shard[key]
    if key == "students":
        extra = sorted(set(value) - set(other[key]))
        return f"{len(value)} students" + (f" ({', '.join(extra[:5])} not in the other)" if extra else "")
    if key == "timeout":
        return f"--timeout {value}"
    return str(value)[:200]


def _check_coverage(shards: list[dict]) -> None:
    """Each shard once, and all N of them: else name the missing shards and their students."""
    seen: dict[int, dict] = {}
    for shard in shards:
        k = shard["shard"][0]
        if k in seen:
            raise GradingError(f"overlapping shards: {_label(seen[k])} and {_label(shard)} are the same shard")
        seen[k] = shard
    n, students = shards[0]["shard"][1], shards[0]["students"]
    missing = [k for k in range(1, n + 1) if k not in seen]
    if missing:
        parts = []
        for k in missing:
            theirs = select(students, k, n)
            parts.append(f"{k}/{n} (" + (", ".join(theirs[:10]) + (" …" if len(theirs) > 10 else "")
                                        if theirs else "no students") + ")")
        raise GradingError(f"missing shard(s) {'; '.join(parts)}: pass every shard's course dir")
    for shard in shards:            # a shard's own pairs must be its students: not one more, not one less
        k = shard["shard"][0]
        own = {s for s, _, _ in shard["pairs"]}
        if own != set(select(students, k, n)):
            raise GradingError(f"{_label(shard)} does not hold the students of shard {k}/{n}")


def _shard_rows(shard: dict) -> dict[tuple[str, str], dict]:
    """(student, assignment) -> the saved row of each of the shard's submissions; every one must be there."""
    rows = {}
    for student, name, key in shard["pairs"]:
        try:
            saved = json.loads(_result_path(shard["dir"], student, name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("row"), dict):
            raise GradingError(f"{_label(shard)} has not finished: no result for {student}/{name} "
                               f"(run it again with --resume)")
        rows[student, name] = saved["row"]
    return rows


def merge(shard_dirs: list[Path], out: Path = Path("grades.csv"), db: Path = Path("gradebook.db"),
          course_dir: Path | None = None) -> list[dict]:
    """Merge the shards' results into one CSV (``out``) and one nbgrader gradebook (``db``).

    An existing ``db`` is merged into: its other assignments and students are kept, the shards'
    submissions replace any it holds for the same students. With ``course_dir``, the shards' saved
    results are copied into its ``results/`` too, so ``report`` can read them there.
    """
    warnings.filterwarnings("ignore", message=".*not in session.*")   # nbgrader + SQLAlchemy autoflush noise
    load_config()      # as `grade` does; it also readies nbgrader to create a gradebook (alembic)
    if not shard_dirs:
        raise GradingError("no shard course dirs given")
    shards = [_read_manifest(Path(d).resolve()) for d in shard_dirs]
    _check_same_run(shards)
    _check_coverage(shards)
    rows = {}
    for shard in shards:
        rows.update(_shard_rows(shard))
    first = shards[0]
    order = [(s, a) for s in first["students"] for a in first["assignments"]]     # grade()'s order
    out, db = Path(out).resolve(), Path(db).resolve()
    for path, what in ((out, "--out"), (db, "--db")):
        if path.is_dir():
            raise GradingError(f"{what} {path} is a folder; give a file name")
        path.parent.mkdir(parents=True, exist_ok=True)
    merge_gradebooks(shards, db)
    if course_dir is not None:
        _copy_results(shards, Path(course_dir).resolve())
    merged = [rows[p] for p in order]
    write_csv(out, merged)
    return merged


def _copy_results(shards: list[dict], course_dir: Path) -> None:
    for shard in shards:
        for student, name, _ in shard["pairs"]:
            dest = _result_path(course_dir, student, name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_result_path(shard["dir"], student, name), dest)


# ------------------------------------------------------------------ gradebooks, through nbgrader's API
def _shard_db(shard: dict) -> Path:
    path = Path(shard["db"])
    path = path if path.is_absolute() else shard["dir"] / path
    if not path.is_file():
        raise GradingError(f"{_label(shard)}: its gradebook {path} is missing")
    return path


def merge_gradebooks(shards: list[dict], db: Path) -> None:
    """Copy every shard's assignments (checked identical) and submissions into ``db``, atomically.

    Each shard's gradebook is read from a throw-away copy: opening one with nbgrader's ``Gradebook``
    can write to it (it records the course), and a shard's files are not ours to change.
    """
    from nbgrader.api import Gradebook

    tmp = db.with_name(f".{db.name}.tmp")
    tmp.unlink(missing_ok=True)
    if db.exists():
        shutil.copyfile(db, tmp)
    try:
        with Gradebook(f"sqlite:///{tmp}", course_id=COURSE_ID) as dst, \
                tempfile.TemporaryDirectory(prefix="merge-") as scratch:
            for shard in shards:
                copy = Path(scratch) / f"shard{shard['shard'][0]}.db"
                shutil.copyfile(_shard_db(shard), copy)
                with Gradebook(f"sqlite:///{copy}", course_id=COURSE_ID) as src:
                    for name in shard["assignments"]:
                        _copy_assignment(src, dst, name, shard)
                    for student, name, _ in shard["pairs"]:
                        _copy_submission(src, dst, name, student)
        os.replace(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def _columns(obj) -> dict:
    """An nbgrader row's own values: every mapped column but ids, foreign keys and the subclass tag."""
    from sqlalchemy import Column, inspect

    out = {}
    for attr in inspect(obj).mapper.column_attrs:
        column = attr.columns[0]
        if not isinstance(column, Column):       # computed: Grade.score, Assignment.max_score, ...
            continue
        if column.primary_key or column.foreign_keys or attr.key in ("type", "name"):
            continue
        out[attr.key] = getattr(obj, attr.key)
    return out


def _structure(assignment) -> list:
    """Everything a graded assignment's cells are: two shards' must match for their grades to mix."""
    return [(nb.name, nb.kernelspec,
             sorted((c.name, c.max_score, c.cell_type) for c in nb.grade_cells),
             sorted(c.name for c in nb.solution_cells),
             sorted((c.name, c.max_score, c.cell_type) for c in nb.task_cells),
             sorted((c.name, c.cell_type, c.locked, c.checksum) for c in nb.source_cells))
            for nb in assignment.notebooks]


def _copy_assignment(src, dst, name: str, shard: dict) -> None:
    """Create the assignment in ``dst`` as the shard's gradebook has it, or check it is the same."""
    from nbgrader.api import MissingEntry

    theirs = src.find_assignment(name)
    try:
        ours = dst.find_assignment(name)
    except MissingEntry:
        ours = None
    if ours is not None:
        if _structure(ours) != _structure(theirs):
            raise GradingError(f"{_label(shard)} graded {name} with other tests than the gradebook being "
                               "merged into holds (its stored test cells differ); merge into a new --db")
        return
    dst.add_assignment(name, **_columns(theirs))
    for nb in theirs.notebooks:
        dst.add_notebook(nb.name, name, **_columns(nb))
        for cell in nb.grade_cells:
            dst.add_grade_cell(cell.name, nb.name, name, **_columns(cell))
        for cell in nb.solution_cells:
            dst.add_solution_cell(cell.name, nb.name, name, **_columns(cell))
        for cell in nb.task_cells:
            dst.add_task_cell(cell.name, nb.name, name, **_columns(cell))
        for cell in nb.source_cells:
            dst.add_source_cell(cell.name, nb.name, name, **_columns(cell))


def _copy_submission(src, dst, name: str, student: str) -> None:
    """Copy one student (every one of the shard's, as ``grade`` adds them all) and their submission
    (grades, comments, flags) from ``src`` to ``dst``, replacing the one ``dst`` holds. A submission the
    shard never graded (missing, invalid) has none."""
    from nbgrader.api import MissingEntry

    try:
        dst.update_or_create_student(student, **_columns(src.find_student(student)))
    except MissingEntry:
        dst.update_or_create_student(student)
    try:
        theirs = src.find_submission(name, student)
    except MissingEntry:
        return
    try:
        dst.remove_submission(name, student)
    except MissingEntry:
        pass
    ours = dst.add_submission(name, student, **_columns(theirs))
    ours_nbs = {nb.name: nb for nb in ours.notebooks}
    for nb in theirs.notebooks:
        mine = ours_nbs[nb.name]
        _set(mine, nb)
        grades = {g.cell.name: g for g in mine.grades}
        for grade in nb.grades:
            _set(grades[grade.cell.name], grade)
        comments = {c.cell.name: c for c in mine.comments}
        for comment in nb.comments:
            _set(comments[comment.cell.name], comment)
    dst.db.commit()


def _set(ours, theirs) -> None:
    for key, value in _columns(theirs).items():
        setattr(ours, key, value)
