"""`python -m autograder grade`: real nbgrader autograde for a folder of submissions.

The submissions folder holds ``<student_id>/<assignment>/<notebook>.ipynb`` (what `nbgrader collect`
produces, or an unzipped LMS download). Every student × assignment gets a row in the CSV, whatever
went wrong with their files: one broken submission never stops the class.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.course import EXERCISES, PACKAGE, SOLUTIONS, assignments, first_line, load_config, notebooks

CSV_FIELDS = ["student_id", "assignment", "score", "max_score", "status", "message"]


class GradingError(RuntimeError):
    """The run as a whole cannot proceed (as opposed to one bad submission)."""


@dataclass
class Row:
    student_id: str
    assignment: str
    score: float = 0.0
    max_score: float = 0.0
    status: str = "ok"          # ok | warning | missing | invalid | error
    notes: list[str] = field(default_factory=list)

    def note(self, status: str, message: str) -> None:
        rank = ["ok", "warning", "missing", "invalid", "error"]
        if rank.index(status) > rank.index(self.status):
            self.status = status
        self.notes.append(message)

    def as_dict(self) -> dict:
        return {"student_id": self.student_id, "assignment": self.assignment,
                "score": _fmt(self.score), "max_score": _fmt(self.max_score),
                "status": self.status, "message": "; ".join(self.notes)}


def _fmt(x: float) -> str:
    return f"{x:g}"


def _nbgrader_meta(cell) -> dict:
    """A cell's nbgrader metadata, or {} when it is absent or malformed (``null``, a list, ...)."""
    meta = cell.get("metadata")
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else {}


def _graded_cells(nb) -> dict[str, dict]:
    """grade_id -> cell, for every autograded test cell of a notebook, whatever its cell type now."""
    out = {}
    for cell in nb.cells:
        meta = _nbgrader_meta(cell)
        if meta.get("grade") and not meta.get("solution"):
            out[meta.get("grade_id")] = cell
    return out


def _test_cells(nb) -> dict[str, str]:
    """grade_id -> source of every autograded test (code) cell of a notebook."""
    return {gid: cell.source for gid, cell in _graded_cells(nb).items() if cell.cell_type == "code"}


def _last_line(text: str | None, default: str = "unknown error") -> str:
    """The last non-empty line of an error log (where a traceback names the exception): a one-line message."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else default


def _read_notebook(path: Path):
    """Parse and validate a submitted notebook; raise ValueError with a student-readable reason."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name} is not a readable notebook (invalid JSON: {exc})") from None
    try:
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # nbformat raises several types for malformed notebooks
        raise ValueError(f"{path.name} is not a valid notebook ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from None
    return nb


def _configure(config, course_dir: Path, db: Path, timeout: int | None):
    config.CourseDirectory.root = str(course_dir)
    # Hidden tests come from the gradebook, which generate_assignment fills from solutions/.
    config.CourseDirectory.source_directory = str(SOLUTIONS)
    config.CourseDirectory.release_directory = "release"
    config.CourseDirectory.db_url = f"sqlite:///{db}"
    if timeout is not None:
        config.Execute.timeout = timeout
    return config


def _prepare_gradebook(api, db_url: str, names: list[str]) -> dict[str, float]:
    """Make sure the gradebook knows each assignment (with its hidden tests); return max scores."""
    from nbgrader.api import Gradebook, MissingEntry

    max_scores = {}
    for name in names:
        with Gradebook(db_url) as gb:
            try:
                assignment = gb.find_assignment(name)
                has_submissions = len(assignment.submissions) > 0
            except MissingEntry:
                assignment, has_submissions = None, False
        if has_submissions:
            _warn_if_stale(db_url, name)
        else:
            result = api.generate_assignment(name, force=True, create=True)
            if not result["success"]:
                raise GradingError(f"nbgrader generate_assignment {name} failed: "
                                   f"{_last_line(result.get('error') or result.get('log'))}")
        with Gradebook(db_url) as gb:
            max_scores[name] = float(gb.find_assignment(name).max_score)
    return max_scores


def _warn_if_stale(db_url: str, name: str) -> None:
    """An assignment graded before keeps its stored tests; say so if solutions/ has changed since."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(db_url) as gb:
        for nb_name in notebooks(name):
            source = _test_cells(nbformat.read(SOLUTIONS / name / f"{nb_name}.ipynb", as_version=4))
            for grade_id, text in source.items():
                try:
                    stored = gb.find_source_cell(grade_id, nb_name, name).source
                except MissingEntry:
                    stored = None
                if stored != text:
                    print(f"warning: the gradebook holds an older version of {name}/{nb_name} (cell {grade_id}); "
                          "grading uses the stored tests. Use a new --db to grade with the current solutions.",
                          file=sys.stderr)
                    return


def _collect(student_dir: Path, name: str, dest: Path, row: Row) -> list[str]:
    """Copy one student's notebooks for one assignment into nbgrader's submitted/ folder.

    Returns the notebook names that will be graded; records on `row` everything unusual.
    """
    folder = student_dir / name
    if not folder.is_dir():
        row.note("missing", f"no {name}/ folder in the submission")
        return []
    expected = notebooks(name)
    present = {p.stem: p for p in folder.glob("*.ipynb")}
    unexpected = sorted(set(present) - set(expected))
    missing = [nb for nb in expected if nb not in present]
    if len(missing) == 1 and len(unexpected) == 1:
        # A single renamed notebook ("rlhf_update_rules (1).ipynb"): grade it under its real name.
        present[missing[0]] = present.pop(unexpected[0])
        row.note("warning", f"graded {unexpected[0]}.ipynb as {missing[0]}.ipynb (renamed notebook)")
        missing, unexpected = [], []
    for nb in missing:
        row.note("missing", f"{nb}.ipynb not found" + (f" (found {', '.join(u + '.ipynb' for u in unexpected)})"
                                                      if unexpected else ""))
    if unexpected and not missing:
        row.note("warning", f"ignored {', '.join(u + '.ipynb' for u in unexpected)} (not a notebook of {name})")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    graded = []
    for nb_name in expected:
        if nb_name not in present:
            continue
        try:
            nb = _read_notebook(present[nb_name])
        except ValueError as exc:
            row.note("invalid", f"{exc}: scored 0")
            continue
        malformed = [i for i, c in enumerate(nb.cells)
                     if "nbgrader" in (c.get("metadata") or {}) and not isinstance(c.metadata["nbgrader"], dict)]
        for i in malformed:  # nbgrader itself crashes on them: grade the cell as an ordinary one
            del nb.cells[i].metadata["nbgrader"]
        if malformed:
            row.note("warning", f"{nb_name}: malformed nbgrader metadata ignored in cell(s) "
                                f"{', '.join(str(i + 1) for i in malformed)}")
        released = _test_cells(nbformat.read(EXERCISES / name / f"{nb_name}.ipynb", as_version=4))
        submitted = _graded_cells(nb)
        deleted = [g for g in released if g not in submitted]
        retyped = [g for g in released if g in submitted and submitted[g].cell_type != "code"]
        tampered = [g for g in released if g in submitted and submitted[g].source.strip() != released[g].strip()]
        if deleted:
            row.note("warning", f"{nb_name}: test cell(s) {', '.join(deleted)} deleted, scored 0")
        if retyped:
            # nbgrader's OverwriteCells restores the cell type (and source) from the gradebook.
            kinds = sorted({submitted[g].cell_type for g in retyped})
            row.note("warning", f"{nb_name}: test cell(s) {', '.join(retyped)} changed to {'/'.join(kinds)}; "
                                "restored as code and graded")
        if tampered:
            row.note("warning", f"{nb_name}: test cell(s) {', '.join(tampered)} edited; the originals were "
                                "restored before grading")
        nbformat.write(nb, dest / f"{nb_name}.ipynb")
        graded.append(nb_name)
    return graded


def _summarise_outputs(autograded: Path, row: Row, timeout: int) -> None:
    """Add a note for cells that hit the time limit (the usual sign of an infinite loop)."""
    for path in sorted(autograded.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        timed_out = [_nbgrader_meta(c).get("grade_id", f"cell {i}")
                     for i, c in enumerate(nb.cells) if c.cell_type == "code"
                     and any(o.get("ename") == "CellTimeoutError" for o in c.get("outputs", []))]
        if timed_out:
            row.note("warning", f"{path.stem}: {', '.join(timed_out)} ran longer than {timeout}s and "
                                "were interrupted (infinite loop?)")


def _record_scores(db_url: str, row: Row) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(db_url) as gb:
        try:
            submission = gb.find_submission(row.assignment, row.student_id)
        except MissingEntry:
            return
        row.score = float(submission.score)
        failed = []
        for nb in submission.notebooks:
            for grade in nb.grades:
                if grade.max_score and (grade.score or 0) < grade.max_score and grade.cell.cell_type == "code":
                    failed.append(f"{grade.name} ({_fmt(grade.score or 0)}/{_fmt(grade.max_score)})")
        if failed:
            row.notes.append("lost points in " + ", ".join(failed))


def _warm_caches(names: list[str], progress: bool) -> None:
    """Build the cached tiny GPT-2 once, before grading, if an assignment uses it.

    A cold build takes up to a minute: inside a graded cell it would hit the per-cell timeout and cost
    every student of the class the points of that cell.
    """
    markers = ("rlhf_course.tiny_lm", "rlhf_course.rlhf_ppo")  # the modules that load it
    uses_tiny_lm = [n for n in names if any(m in (SOLUTIONS / n / f"{nb}.ipynb").read_text()
                                            for nb in notebooks(n) for m in markers)]
    if uses_tiny_lm:
        proc = subprocess.run([sys.executable, "-m", "rlhf_course.tiny_lm"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise GradingError("could not build the tiny GPT-2 that " + ", ".join(uses_tiny_lm) +
                               " needs: " + (proc.stderr.strip().splitlines() or ["unknown error"])[-1])
        if progress:
            print(proc.stdout.strip().splitlines()[-1], file=sys.stderr)


def _unknown_assignment_folders(submissions: Path, students: list[str]) -> list[str]:
    """Folders in students' submissions that are not an assignment of solutions/ (typos, extras)."""
    known = set(assignments())
    return sorted({p.name for s in students for p in (submissions / s).iterdir()
                   if p.is_dir() and p.name not in known and not p.name.startswith((".", "_"))})


def _check_released(names: list[str]) -> None:
    """Submissions are compared with the released notebooks: every graded one must exist."""
    for name in names:
        absent = [nb for nb in notebooks(name) if not (EXERCISES / name / f"{nb}.ipynb").is_file()]
        if absent:
            raise GradingError(f"assignment {name} has not been released (no {EXERCISES / name / absent[0]}.ipynb): "
                               f"run `python -m autograder release {name}` first")


def _check_outputs(course_dir: Path, db: Path, out: Path, feedback_dir: Path) -> None:
    """Create the output folders and check the files can be written, before any grading work is done."""
    for path, what in ((out, "--out"), (db, "--db")):
        if path.is_dir():
            raise GradingError(f"{what} {path} is a folder; give a file name")
    for folder, what in ((course_dir, "--course-dir"), (db.parent, "--db folder"), (out.parent, "--out folder"),
                         (feedback_dir, "--feedback-dir")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GradingError(f"cannot create {what} {folder}: {exc.strerror or exc}") from None
    for path, what in ((out, "--out"), (db, "--db")):
        try:
            if path.exists():
                open(path, "a").close()  # appending nothing: checks permission, changes no byte
            else:
                with tempfile.NamedTemporaryFile(dir=path.parent):
                    pass
        except OSError as exc:
            raise GradingError(f"cannot write {what} {path}: {exc.strerror or exc}") from None


def _grade_one(api, config, submissions: Path, course_dir: Path, feedback_dir: Path, student: str, name: str,
               row: Row) -> None:
    """Collect, autograde and give feedback for one student × assignment; record everything on `row`."""
    graded = _collect(submissions / student, name, course_dir / "submitted" / student / name, row)
    if not graded:
        return
    result = api.autograde(name, student, force=True, create=True)
    if not result["success"]:
        # Once in a while a kernel fails to start when two grading runs share a machine (a port taken
        # between choosing and binding it): that is not the student's fault, so try once more.
        first_error = _last_line(result.get("error"))
        result = api.autograde(name, student, force=True, create=True)
        if not result["success"]:
            row.note("error", f"nbgrader could not autograde this submission: {_last_line(result.get('error'))}")
            return
        row.notes.append(f"graded on the second attempt (the first failed: {first_error})")
    _summarise_outputs(course_dir / "autograded" / student / name, row, config.Execute.timeout)
    _record_scores(db_url=config.CourseDirectory.db_url, row=row)
    result = api.generate_feedback(name, student, force=True)
    if not result["success"]:
        row.note("warning", "feedback HTML could not be generated")
        return
    src, dst = course_dir / "feedback" / student / name, feedback_dir / student / name
    try:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
    except OSError as exc:
        row.note("warning", f"feedback HTML could not be copied to {dst}: {exc.strerror or exc}")


def grade(submissions: Path, out: Path = Path("grades.csv"), feedback_dir: Path | None = None,
          course_dir: Path | None = None, db: Path | None = None, timeout: int | None = None,
          only: list[str] | None = None, progress: bool = True) -> list[dict]:
    """Autograde every student × assignment under `submissions`; write the CSV and feedback HTML."""
    from nbgrader.apps.api import NbGraderAPI
    from tqdm.auto import tqdm

    # nbgrader's gradebook code trips SQLAlchemy's autoflush warnings on every submission: noise.
    warnings.filterwarnings("ignore", message=".*not in session.*")

    config = load_config()  # a broken nbgrader config stops the run before it touches anything
    submissions = Path(submissions).resolve()
    if not submissions.is_dir():
        raise GradingError(f"submissions folder {submissions} does not exist or is not a folder")
    students = sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not students:
        raise GradingError(f"{submissions} holds no <student_id>/ folders")
    unknown = [n for n in only or [] if n not in assignments()]
    if unknown:
        raise GradingError(f"unknown assignment(s) {', '.join(unknown)}; known: {', '.join(assignments())}")
    # By default grade every assignment that at least one student handed in: an LMS download of week 3
    # should not give the whole class "missing" rows for weeks 1-2. A student without a folder that
    # classmates have still gets a "missing" row.
    names = only or [n for n in assignments() if any((submissions / s / n).is_dir() for s in students)]
    strays = _unknown_assignment_folders(submissions, students)
    if not names:
        raise GradingError(f"no <student_id>/<assignment>/ folders under {submissions}"
                           + (f" (found only {', '.join(strays)})" if strays else "")
                           + f"; known assignments: {', '.join(assignments())}")
    _check_released(names)
    course_dir = Path(course_dir or PACKAGE / "course").resolve()
    db = Path(db or course_dir / "gradebook.db").resolve()
    out = Path(out).resolve()
    feedback_dir = Path(feedback_dir or out.parent / "feedback").resolve()
    _check_outputs(course_dir, db, out, feedback_dir)
    config = _configure(config, course_dir, db, timeout)
    if strays:
        print(f"warning: ignored folder(s) that are not assignments in solutions/: {', '.join(strays)}",
              file=sys.stderr)

    _warm_caches(names, progress)
    db_url = config.CourseDirectory.db_url
    api = NbGraderAPI(config=config)
    api.log.setLevel("ERROR")
    max_scores = _prepare_gradebook(api, db_url, names)

    rows = []
    jobs = [(s, n) for s in students for n in names]
    bar = tqdm(jobs, desc="grading", unit="submission", disable=not progress, file=sys.stderr)
    for student, name in bar:
        bar.set_postfix_str(f"{student}/{name}")
        row = Row(student, name, max_score=max_scores[name])
        rows.append(row)
        try:
            _grade_one(api, config, submissions, course_dir, feedback_dir, student, name, row)
        except Exception as exc:  # one submission that breaks the grader must not stop the class
            message = first_line(str(exc))
            row.note("error", f"grading this submission failed ({type(exc).__name__}"
                              f"{': ' + message[:200] if message else ''}); check it by hand")

    # Write next to the target, then rename: an existing grades.csv is never left half-written.
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(r.as_dict() for r in rows)
    os.replace(tmp, out)
    if progress:
        width = max(len(r.student_id) for r in rows)
        for r in rows:
            print(f"{r.student_id:<{width}}  {r.assignment}  {_fmt(r.score):>5}/{_fmt(r.max_score):<5} {r.status:<8} "
                  f"{'; '.join(r.notes)}")
        print(f"wrote {out} ({len(rows)} rows) and feedback HTML under {feedback_dir}")
    return [r.as_dict() for r in rows]
