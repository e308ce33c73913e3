"""`python -m autograder grade`: real nbgrader autograde for a folder of submissions.

The submissions folder holds ``<student_id>/<assignment>/<notebook>.ipynb`` (what `nbgrader collect`
produces, or an unzipped LMS download). Every student × assignment gets a row in the CSV, whatever
went wrong with their files: one broken submission never stops the class.

nbgrader runs here, in the grader's process; each notebook's kernel, the process that runs the
student's code, runs in the sandbox of ``autograder.sandbox`` and sees only that submission's files.
"""
import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder import feedback, sandbox
from autograder.course import (COURSE_DIR, EXERCISES, REPO, SOLUTIONS, assignments, first_line, graded_cells,
                               load_config, nbgrader_meta, notebooks, test_cell_id)

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
    cells: list[dict] = field(default_factory=list)   # per graded test cell: score and failure (for `report`)

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


def _test_cells(nb) -> dict[str, str]:
    """grade_id -> source of every autograded test (code) cell of a notebook."""
    return {gid: cell.source for gid, cell in graded_cells(nb).items() if cell.cell_type == "code"}


def _last_line(text: str | None, default: str = "unknown error") -> str:
    """The last non-empty line of an error log (where a traceback names the exception): a one-line message."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else default


MAX_NOTEBOOK_BYTES = 50 * 2**20   # the course's notebooks are < 2 MB with outputs; a bigger one is not read


def _read_notebook(path: Path):
    """Parse and validate a submitted notebook; raise ValueError with a student-readable reason."""
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"{path.name} is {size / 2**20:.0f} MB, more than a notebook of this course can be "
                         f"({MAX_NOTEBOOK_BYTES // 2**20} MB): clear its outputs and hand it in again")
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


def _configure(config, course_dir: Path, db: Path, timeout: int | None, sandboxed: bool = True):
    config.CourseDirectory.root = str(course_dir)
    # Hidden tests come from the gradebook, which generate_assignment fills from solutions/.
    config.CourseDirectory.source_directory = str(SOLUTIONS)
    config.CourseDirectory.release_directory = "release"
    # graded in parallel, workers write one gradebook: wait for a busy one (SQLite's lock) up to a minute
    config.CourseDirectory.db_url = f"sqlite:///{db}?timeout=60"
    if timeout is not None:
        config.Execute.timeout = timeout
    from nbgrader.converters.autograde import Autograde
    from nbgrader.preprocessors import Execute

    from autograder.kernel import SandboxedExecute, VerifiedExecute

    # nbgrader's own list, with Execute checked from outside (and its kernel in the sandbox); it must be
    # there to be replaced
    steps = Autograde.class_traits()["autograde_preprocessors"].default()
    if Execute not in steps:
        raise GradingError(f"nbgrader's autograde steps changed ({steps}): cannot check its kernel from outside")
    ours = SandboxedExecute if sandboxed else VerifiedExecute
    config.Autograde.autograde_preprocessors = [ours if p is Execute else p for p in steps]
    config.VerifiedExecute.trusted_dir = str(course_dir / "trusted")
    return config


def _executor(config, sandboxed: bool):
    from autograder.kernel import SandboxedExecute, VerifiedExecute

    return (SandboxedExecute if sandboxed else VerifiedExecute)(config=config)


def _as_graded(db_url: str, solution: Path, tmp: Path) -> Path:
    """The solution notebook with the test cells the gradebook holds for it: the tests the students'
    kernels run. An assignment graded before keeps the tests it was first graded with (``_warn_if_stale``),
    and the outside check must record the solution against those, not against a newer solutions/ (where an
    added assertion would make every correct submission's calls differ from the record). Unchanged: the
    solution itself; else a copy of its folder under ``tmp`` with those cells' stored sources."""
    from nbgrader.api import Gradebook, MissingEntry

    name, nb_name = solution.parent.name, solution.stem
    nb = nbformat.read(solution, as_version=4)
    changed = False
    with Gradebook(db_url) as gb:
        for grade_id, cell in graded_cells(nb).items():
            try:
                stored = gb.find_source_cell(grade_id, nb_name, name).source
            except MissingEntry:
                continue
            if cell.cell_type == "code" and stored != cell.source:
                cell.source, changed = stored, True
    if not changed:
        return solution
    folder = tmp / name
    if not folder.exists():
        shutil.copytree(solution.parent, folder)
    nbformat.write(nb, folder / solution.name)
    return folder / solution.name


def _prepare_outside_check(config, names: list[str], course_dir: Path, sandboxed: bool, progress: bool,
                           jobs: int) -> None:
    """Record the solution's graded calls in every test cell (``autograder.verify``), once per version of
    each solution notebook (``jobs`` at a time), and put them where the grader, not the sandbox, reads them.
    The test cells are those of the gradebook (``_as_graded``), which the kernels run."""
    if sandboxed:
        from autograder.verify import cache_dir

        if any(cache_dir().resolve().is_relative_to(root) for root in sandbox.read_only_roots()):
            raise GradingError(f"the outside check's cache {cache_dir()} is inside a folder the sandbox can read: "
                               "set AUTOGRADER_CACHE to a folder of the grader's own")
    with tempfile.TemporaryDirectory(prefix="autograder-graded-") as tmp:
        solutions = [_as_graded(config.CourseDirectory.db_url, SOLUTIONS / name / f"{nb}.ipynb", Path(tmp))
                     for name in names for nb in notebooks(name)]
        _record_outside_check(config, solutions, course_dir, sandboxed, progress, jobs)


def _record_outside_check(config, solutions: list[Path], course_dir: Path, sandboxed: bool, progress: bool,
                          jobs: int) -> None:
    from autograder.verify import cache_dir, cached_plan, outside_share

    plans = {path: cached_plan(path) for path in solutions}
    todo = [path for path, plan in plans.items() if plan is None]
    if todo and progress:      # a run takes up to a minute, and the lines below come only after them all
        print(f"outside check: running the solutions of {len(todo)} notebook(s) once (cached in {cache_dir()}) ...",
              file=sys.stderr)
    _TRUSTED.update(config=config, sandboxed=sandboxed)
    if len(todo) > 1 and jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_record_trusted, todo))
    else:
        results = [_record_trusted(path) for path in todo]
    for path, (plan, error) in zip(todo, results):
        if error:
            raise GradingError(error)
        plans[path] = plan
    for path, plan in plans.items():
        dest = course_dir / "trusted" / path.parent.name / path.name.replace(".ipynb", ".json")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(plan), encoding="utf-8")
        if progress:
            values, replayed, structure, total = outside_share(plan, nbformat.read(path, as_version=4))
            print(f"{path.parent.name}/{path.stem}: of {_fmt(total)} points, {_fmt(values)} checked outside the "
                  f"students' kernels by value, {_fmt(replayed)} by the cells' own assertions run again on "
                  f"the answers, {_fmt(structure)} by the shape of their calls", file=sys.stderr)


_TRUSTED: dict = {}
"""The configuration the trusted runs use, set by ``_prepare_outside_check`` (inherited by forked workers)."""


def _record_trusted(solution: Path) -> tuple[dict | None, str | None]:
    """Run one solution notebook with the recorder (in this process or a worker): (plan, None) or
    (None, why it failed)."""
    from autograder.verify import record_plan

    config, sandboxed = _TRUSTED["config"], _TRUSTED["sandboxed"]

    def run(nb, workdir, plan):
        executor = _executor(config, sandboxed)
        executor.record_only, executor.plan = True, plan
        executor.timeout = max(config.Execute.timeout or 0, 300)   # the solution must not fail on time
        with _setenv(NBGRADER_EXECUTION="autograde"):
            executor.preprocess(nb, {"metadata": {"path": str(workdir)}})
        # each failed cell with its error: a solution that fails in the sandbox alone (a package the
        # kernel cannot import, say) must say why, not only where
        failed = [f"{gid} ({error.get('ename')}: {first_line(str(error.get('evalue', '')))[:200]})"
                  for cell in nb.cells if (gid := test_cell_id(cell))
                  for error in [o for o in cell.get("outputs", []) if o.get("output_type") == "error"][:1]]
        return executor.records, failed

    try:
        return record_plan(solution, run), None
    except Exception as exc:
        return None, f"the outside check could not run the solution {solution.parent.name}/{solution.name}: " \
                     f"{first_line(str(exc)) or type(exc).__name__}"


@contextlib.contextmanager
def _setenv(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _kernel_environment(sandboxed: bool, limits: sandbox.Limits):
    """JUPYTER_PATH with the sandbox's kernel spec first, and the limits its launcher reads; undone after."""
    saved = dict(os.environ)
    folder = Path(tempfile.mkdtemp(prefix="autograder-kernels-"))
    try:
        if sandboxed:
            sandbox.install_kernelspec(folder / "jupyter")
            os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(folder / "jupyter"),
                                                                        os.environ.get("JUPYTER_PATH")]))
            os.environ.update(sandbox.limits_env(limits))
        yield folder
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(folder, ignore_errors=True)
        if sandboxed:
            sandbox.remove_empty_cgroups()


@contextlib.contextmanager
def _private_runtime_dir(parent: Path):
    """A fresh JUPYTER_RUNTIME_DIR for one submission's kernels: nothing of another kernel is in it."""
    folder = Path(tempfile.mkdtemp(prefix="runtime-", dir=parent))
    old = os.environ.get("JUPYTER_RUNTIME_DIR")
    os.environ["JUPYTER_RUNTIME_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("JUPYTER_RUNTIME_DIR", None)
        else:
            os.environ["JUPYTER_RUNTIME_DIR"] = old
        shutil.rmtree(folder, ignore_errors=True)


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


def _add_students(db_url: str, students: list[str]) -> None:
    """Every student in the gradebook before grading: parallel jobs grading one student's assignments
    would otherwise race to create the same student row."""
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        for student in students:
            gb.update_or_create_student(student)


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
                          "grading uses the stored tests (the outside check too). Use a new --db to grade with "
                          "the current solutions.", file=sys.stderr)
                    return


def _assignment_folder(student_dir: Path, name: str, flat: bool = False) -> Path:
    """<student>/<assignment>/; or, with ``flat`` (one assignment named by ``--assignment NAME``), the
    student's folder itself if it holds notebooks and no such subfolder: an LMS download of one assignment
    unzipped into a folder per student (Moodle's layout)."""
    folder = student_dir / name
    if not folder.is_dir() and flat and any(student_dir.glob("*.ipynb")):
        return student_dir
    return folder


def _collect(student_dir: Path, name: str, dest: Path, row: Row, flat: bool = False) -> list[str]:
    """Copy one student's notebooks for one assignment into nbgrader's submitted/ folder.

    Returns the notebook names that will be graded; records on `row` everything unusual.
    """
    folder = _assignment_folder(student_dir, name, flat)
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
    _copy_exchange_files(folder, dest, row)
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
        submitted = graded_cells(nb)
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


def _copy_exchange_files(folder: Path, dest: Path, row: Row) -> None:
    """Keep what ``nbgrader collect`` puts beside the notebooks: timestamp.txt (the submission time, which
    the gradebook records for late submissions) and submission_secret.txt. nbgrader carries both on to
    feedback/, where ``nbgrader release_feedback`` needs them, byte for byte: it names the handed-out page
    by a hash of both, which the student's ``fetch_feedback`` computes again from its own copies. An
    unreadable time is left out with a warning (nbgrader would refuse to grade the submission)."""
    from nbgrader.utils import parse_utc

    for name in ("timestamp.txt", "submission_secret.txt"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
            if name == "timestamp.txt":
                parse_utc(data.decode("utf-8").strip())
        except (OSError, UnicodeDecodeError, ValueError, OverflowError):
            row.note("warning", f"{name} is not a time nbgrader can read: submission time not recorded")
            continue
        (dest / name).write_bytes(data)


def _autograde_failure(result: dict) -> str:
    """One line on why nbgrader's autograde failed, from its log (its own last line says only "see above")."""
    text = "\n".join(filter(None, [result.get("log"), result.get("error")]))
    if "Kernel died" in text or "DeadKernelError" in text:
        return ("the notebook's kernel died (its code ended its own process, or it hit the sandbox's memory or "
                "process limit), so its test cells were not scored")
    causes = [ln.strip() for ln in text.splitlines()
              if re.match(r"\s*[\w.]+(Error|Exception): ", ln) and "NbGraderException" not in ln]
    return causes[-1][:300] if causes else _last_line(result.get("error"))


def _read_autograded(autograded: Path) -> dict[str, nbformat.NotebookNode]:
    """notebook name -> the autograded copy (outputs included), read once for the notes and the scores."""
    return {path.stem: nbformat.read(path, as_version=4) for path in sorted(autograded.glob("*.ipynb"))}


def _summarise_outputs(autograded: dict, row: Row, timeout: int) -> None:
    """Add a note for cells that hit the time limit (the usual sign of an infinite loop)."""
    for nb_name, nb in autograded.items():
        timed_out = [nbgrader_meta(c).get("grade_id", f"cell {i}")
                     for i, c in enumerate(nb.cells) if c.cell_type == "code"
                     and any(o.get("ename") == "CellTimeoutError" for o in c.get("outputs", []))]
        if timed_out:
            row.note("warning", f"{nb_name}: {', '.join(timed_out)} ran longer than {timeout}s and "
                                "were interrupted (infinite loop?)")


def _failure_messages(autograded: dict) -> dict[tuple[str, str], str]:
    """(notebook, grade_id) -> "Error: message" of each test cell that raised, from the autograded copies."""
    out = {}
    for nb_name, nb in autograded.items():
        for cell in nb.cells:
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            if errors and (grade_id := nbgrader_meta(cell).get("grade_id")):
                e = errors[-1]
                out[nb_name, grade_id] = first_line(f"{e.get('ename')}: {e.get('evalue')}")[:300]
    return out


def _record_scores(db_url: str, row: Row, autograded: dict) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    messages = _failure_messages(autograded)
    with Gradebook(db_url) as gb:
        try:
            submission = gb.find_submission(row.assignment, row.student_id)
        except MissingEntry:
            return
        row.score = float(submission.score)
        failed = []
        for nb in submission.notebooks:
            for grade in nb.grades:
                if not grade.max_score or grade.cell.cell_type != "code":
                    continue
                score = float(grade.score or 0)
                row.cells.append({"notebook": nb.name, "cell": grade.name, "score": score,
                                  "max_score": float(grade.max_score),
                                  "message": messages.get((nb.name, grade.name), "") if score < grade.max_score else ""})
                if score < grade.max_score:
                    failed.append(f"{grade.name} ({_fmt(score)}/{_fmt(grade.max_score)})")
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
               row: Row, flat: bool = False) -> None:
    """Collect, autograde and give feedback for one student × assignment; record everything on `row`."""
    graded = _collect(submissions / student, name, course_dir / "submitted" / student / name, row, flat)
    if not graded:
        return
    result = api.autograde(name, student, force=True, create=True)
    if not result["success"]:
        # Once in a while a kernel fails to start when two grading runs share a machine (a port taken
        # between choosing and binding it): that is not the student's fault, so try once more.
        first_error = _last_line(result.get("error"))
        result = api.autograde(name, student, force=True, create=True)
        if not result["success"]:
            row.note("error", f"nbgrader could not autograde this submission: {_autograde_failure(result)}")
            return
        row.notes.append(f"graded on the second attempt (the first failed: {first_error})")
    autograded = _read_autograded(course_dir / "autograded" / student / name)
    _summarise_outputs(autograded, row, config.Execute.timeout)
    _record_scores(config.CourseDirectory.db_url, row, autograded)
    result = feedback.generate(api, name, student)      # the course's template (autograder/feedback.py)
    if not result["success"]:
        row.note("warning", "feedback HTML could not be generated")
        return
    src, dst = course_dir / "feedback" / student / name, feedback_dir / student / name
    try:
        feedback.publish(src, dst)                        # with MathJax beside the HTML
    except OSError as exc:
        row.note("warning", f"feedback HTML could not be copied to {dst}: {exc.strerror or exc}")


def grade(submissions: Path, out: Path = Path("grades.csv"), feedback_dir: Path | None = None,
          course_dir: Path | None = None, db: Path | None = None, timeout: int | None = None,
          only: list[str] | None = None, progress: bool = True, sandboxed: bool = True,
          limits: sandbox.Limits | None = None, resume: bool = False, jobs: int | None = None,
          shard: str | None = None) -> list[dict]:
    """Autograde every student × assignment under `submissions`; write the CSV and feedback HTML.

    sandboxed=False (``--no-sandbox``) runs the students' kernels with the grader's own permissions;
    every row's message then says so. Each graded submission's row is saved at once in
    ``<course dir>/results/``; resume=True (``--resume``) takes the saved row of every submission whose
    files (and the released notebooks and the time limit) are unchanged instead of grading it again.
    jobs (``--jobs``, default: the machine's cores) submissions are graded at once, each in a worker
    process with its own kernel; the CSV's rows keep the class's order whatever order they finish in.
    shard="K/N" (``--shard``) grades only the students of shard K of N (``autograder.shard``) and
    leaves what ``merge`` needs in the course dir.
    """
    from nbgrader.apps.api import NbGraderAPI
    from tqdm.auto import tqdm

    # nbgrader's gradebook code trips SQLAlchemy's autoflush warnings on every submission: noise.
    warnings.filterwarnings("ignore", message=".*not in session.*")

    config = load_config()  # a broken nbgrader config stops the run before it touches anything
    if jobs is not None and jobs < 1:
        raise GradingError(f"--jobs must be at least 1, not {jobs}")
    if shard is not None:
        from autograder import shard as sharding

        k, n = sharding.parse(shard)
    if sandboxed:
        reason = sandbox.unavailable_reason()
        if reason:
            raise GradingError(f"{reason}. To grade anyway, with the students' code running with your "
                               "permissions, pass --no-sandbox")
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
        notebooks_in_student_folders = any(any((submissions / s).glob("*.ipynb")) for s in students)
        raise GradingError(f"no <student_id>/<assignment>/ folders under {submissions}"
                           + (f" (found only {', '.join(strays)})" if strays else "")
                           + (" (the student folders hold notebooks directly: name their assignment with "
                              "--assignment NAME)" if notebooks_in_student_folders else "")
                           + f"; known assignments: {', '.join(assignments())}")
    flat = bool(only) and len(names) == 1              # <student>/<notebook>.ipynb: see _assignment_folder
    _check_released(names)
    course_dir = Path(course_dir or COURSE_DIR).resolve()
    if submissions == course_dir or submissions.is_relative_to(course_dir):
        raise GradingError(f"the submissions folder {submissions} is inside the course dir {course_dir}, whose "
                           "submitted/ and autograded/ folders grading empties and rewrites: copy the "
                           "submissions elsewhere first, or use another --course-dir")
    db = Path(db or course_dir / "gradebook.db").resolve()
    out = Path(out).resolve()
    feedback_dir = Path(feedback_dir or out.parent / "feedback").resolve()
    _check_outputs(course_dir, db, out, feedback_dir)
    exposed = [str(p) for p in (out, feedback_dir) if p.is_relative_to(REPO) and not p.is_relative_to(COURSE_DIR)]
    if exposed and progress:
        print(f"warning: {' and '.join(exposed)} inside the course repository {REPO}: grades and feedback are student "
              "data; keep them out of git (an --out elsewhere, e.g. ~/grading/)", file=sys.stderr)
    class_students = students
    if shard is not None:      # after `names`: every shard grades the assignments the whole class handed in
        sharding.check_course_dir(course_dir, k, n)
        students = sharding.select(students, k, n)
    config = _configure(config, course_dir, db, timeout, sandboxed)
    if strays:
        print(f"warning: ignored folder(s) that are not assignments in solutions/: {', '.join(strays)}",
              file=sys.stderr)

    _warm_caches(names, progress)
    db_url = config.CourseDirectory.db_url
    api = NbGraderAPI(config=config)
    api.log.setLevel("ERROR")
    max_scores = _prepare_gradebook(api, db_url, names)
    _add_students(db_url, students)

    pairs = [(s, n) for s in students for n in names]
    rows: dict[tuple[str, str], dict] = {}
    keys = {(s, n): _submission_key(submissions, s, n, config.Execute.timeout, sandboxed, db, feedback_dir, flat)
            for s, n in pairs}
    if shard is not None:
        sharding.write_manifest(course_dir, k, n, class_students, names, config.Execute.timeout, sandboxed,
                                max_scores, db, keys)
    if resume:
        rows = {p: row for p in pairs if (row := _saved_row(course_dir, *p, keys[p])) is not None}
    resumed = len(rows)
    todo = [p for p in pairs if p not in rows]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    wall_s = max(900, 8 * (config.Execute.timeout or 120))     # 16 min at the default 120 s per cell
    with _kernel_environment(sandboxed, limits or sandbox.Limits(wall_s=wall_s)) as tmp:
        _prepare_outside_check(config, names, course_dir, sandboxed, progress, jobs)
        # a bar with an ETA on a terminal; nothing when stderr is a file or a pipe (disable=None)
        bar = tqdm(total=len(pairs), initial=resumed, desc="grading", unit="submission",
                   disable=None if progress else True, file=sys.stderr, dynamic_ncols=True)
        _JOB.update(config=config, submissions=submissions, course_dir=course_dir, feedback_dir=feedback_dir,
                    max_scores=max_scores, sandboxed=sandboxed, tmp=tmp, api=api, flat=flat)
        if jobs == 1:
            results = ((p, _grade_job(p)) for p in todo)
        else:
            # fork: the workers inherit the configuration and the sandbox's environment set up above
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            _JOB["api"] = None                             # each worker opens its own nbgrader API
            pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"))
            futures = {pool.submit(_grade_job, p): p for p in todo}
            results = ((futures[f], f.result()) for f in as_completed(futures))
        try:
            for pair, (row, cells) in results:
                rows[pair] = row
                _save_row(course_dir, row, keys[pair], cells)   # at once: a killed run keeps it
                bar.set_postfix_str(f"{pair[0]}/{pair[1]}")
                bar.update()
        finally:
            if jobs > 1:
                pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
    rows = [rows[p] for p in pairs]
    kept = _other_assignments_rows(out, names)
    write_csv(out, kept + rows)
    if progress:
        width = max((len(r["student_id"]) for r in rows), default=0)   # a shard may hold no student
        for r in rows:
            print(f"{r['student_id']:<{width}}  {r['assignment']}  {r['score']:>5}/{r['max_score']:<5} "
                  f"{r['status']:<8} {r['message']}")
        if resumed:
            print(f"resumed: {resumed} of {len(rows)} rows were graded by an earlier run (--resume)")
        print(f"wrote {out} ({len(rows)} rows) and feedback HTML under {feedback_dir}")
        if kept:
            print(f"kept {len(kept)} row(s) of other assignments ({', '.join(sorted({r['assignment'] for r in kept}))}) "
                  f"that {out.name} already held", file=sys.stderr)
    return rows


def _other_assignments_rows(out: Path, names: list[str]) -> list[dict]:
    """The rows of an existing grades CSV for assignments this run does not grade: week 3's run into
    the same grades.csv keeps weeks 1-2. Nothing if the file is absent or not a grades CSV."""
    try:
        with open(out, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != CSV_FIELDS:
                return []
            return [row for row in reader if row["assignment"] not in names]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def write_csv(out: Path, rows: list[dict]) -> None:
    """The grades CSV (``merge`` writes it with this too, so both give the same bytes).

    Written next to the target, then renamed: an existing grades.csv is never left half-written.
    """
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)


_JOB: dict = {}
"""What every grading job needs, set once by ``grade`` (and inherited by forked workers)."""


def _grade_job(pair: tuple[str, str]) -> tuple[dict, list[dict]]:
    """Grade one student × assignment (in this process or a worker); return its CSV row and its cells."""
    student, name = pair
    job = _JOB
    if job.get("api") is None:
        from nbgrader.apps.api import NbGraderAPI

        warnings.filterwarnings("ignore", message=".*not in session.*")
        job["api"] = NbGraderAPI(config=job["config"])
        job["api"].log.setLevel("ERROR")
    row = Row(student, name, max_score=job["max_scores"][name])
    try:
        with _private_runtime_dir(job["tmp"]):
            _grade_one(job["api"], job["config"], job["submissions"], job["course_dir"], job["feedback_dir"],
                       student, name, row, job["flat"])
    except Exception as exc:  # one submission that breaks the grader must not stop the class
        message = first_line(str(exc))
        row.note("error", f"grading this submission failed ({type(exc).__name__}"
                          f"{': ' + message[:200] if message else ''}); check it by hand")
    if not job["sandboxed"]:
        row.notes.append("graded without a sandbox (--no-sandbox)")
    return row.as_dict(), row.cells


def _submission_key(submissions: Path, student: str, name: str, timeout, sandboxed: bool, db: Path | None = None,
                    feedback_dir: Path | None = None, flat: bool = False) -> str:
    """A fingerprint of everything a submission's grade depends on: its files, the released notebooks
    (whose test cells the submission is checked against), the time limit and the sandbox; and of where the
    grading put its results, the gradebook and the feedback folder: a resumed row's scores and page are
    there, so ``--resume`` with another --db or --out grades again instead of leaving them empty."""
    h = hashlib.sha256(json.dumps([student, name, timeout, sandboxed, str(db), str(feedback_dir)]).encode())
    folder = _assignment_folder(submissions / student, name, flat)
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        if path.is_file() and not path.is_symlink():
            h.update(hashlib.sha256(path.read_bytes()).digest())
        elif path.is_symlink():
            h.update(os.readlink(path).encode())
    for nb in notebooks(name):
        h.update(hashlib.sha256((EXERCISES / name / f"{nb}.ipynb").read_bytes()).digest())
    return h.hexdigest()


def _result_path(course_dir: Path, student: str, name: str) -> Path:
    return course_dir / "results" / student / f"{name}.json"


def _save_row(course_dir: Path, row: dict, key: str, cells: list[dict] | None = None) -> None:
    """Save one graded row at once, atomically (write, fsync, rename): a run killed at any moment keeps
    every row saved before, and never leaves a half-written one."""
    path = _result_path(course_dir, row["student_id"], row["assignment"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"key": key, "row": row, "cells": cells or []}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _saved_row(course_dir: Path, student: str, name: str, key: str) -> dict | None:
    """The row an earlier run saved for this submission, if its fingerprint still matches."""
    try:
        saved = json.loads(_result_path(course_dir, student, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("row"), dict):
        return None
    return saved["row"] if set(saved["row"]) == set(CSV_FIELDS) else None
