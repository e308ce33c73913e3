"""Run a chapter class's students against the solution's test cells, hidden tests included, without a grader.

    python tests/mistakes.py ASSIGNMENT NOTEBOOK CLASS_DIR STUDENT... [--skip GRADE_ID ...]   # one JSON line

For each student, CLASS_DIR/<student>/<ASSIGNMENT>/<NOTEBOOK>.ipynb is executed cell by cell as autograding
runs it: answer cells and the other cells as handed in, each graded test cell replaced by the solution's
(what nbgrader restores from the gradebook before it executes), a cell that raises does not stop the
notebook, and a graded test cell fails when it raises or writes to stderr (nbgrader scores both 0). The
output is {student: {grade_id: "" when it passed, else the first line of why}} for every graded test cell
the notebook holds, but those named by --skip (the micro-runs: not run at all).

Grading a notebook costs a kernel, its imports, the sandbox, the outside check and the feedback HTML: about
6 s of CPU, most of it the same for every student. Here the notebook's modules are imported once per
assignment and each student runs in a fork of that process, so one student's state (globals, RNG, patched
modules) never reaches the next. What this cannot see is the grader's own work, the outside check above all,
which can only take more points: tests/test_grading.py grades each chapter's correct student, its stub and
one student with mistakes end to end, and uses this for every mistake of the class.
"""
import contextlib
import importlib
import io
import json
import os
import signal
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
STUDENT_SECONDS = 300   # a student whose notebook runs longer than this is reported, not waited for


def solution_tests(assignment: str, notebook: str) -> dict[str, str]:
    """grade_id -> source of every graded test cell of the solution notebook (hidden tests included)."""
    nb = nbformat.read(REPO / "solutions" / assignment / f"{notebook}.ipynb", as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}


def run_notebook(path: Path, tests: dict[str, str], skip: frozenset = frozenset()) -> dict[str, str]:
    """Execute one handed-in notebook as autograding does; grade_id -> "" (passed) or why it failed."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in skip]
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    results = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        source = tests.get(grade_id, cell.source)
        err = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                exec(compile(source, f"<cell {grade_id or '?'}>", "exec"), namespace)
            why = f"wrote to stderr: {err.getvalue().strip()[:200]}" if err.getvalue() else ""
        except Exception as exc:  # noqa: BLE001 — a failing cell is what is recorded; the notebook goes on
            why = (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0][:300]
        if grade_id in tests:
            results[grade_id] = why
    return results


def run_class(assignment: str, notebook: str, root: Path, students: list[str],
              skip: frozenset = frozenset()) -> dict[str, dict[str, str]]:
    """Every student in a fork of this process, one after the other (imports paid once, state never shared)."""
    from autograder.verify import imported_modules

    os.environ["NBGRADER_EXECUTION"] = "autograde"       # what the notebooks see while they are graded
    tests = solution_tests(assignment, notebook)
    for module in imported_modules(nbformat.read(REPO / "solutions" / assignment / f"{notebook}.ipynb", 4)):
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    out = {}
    for student in students:
        path = root / student / assignment / f"{notebook}.ipynb"
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:                                      # the child: run, report, leave without cleanup
            os.close(read)
            signal.alarm(STUDENT_SECONDS)
            try:
                os.chdir(path.parent)
                data = json.dumps(run_notebook(path, tests, skip))
            except BaseException as exc:  # noqa: BLE001 — reported as the student's result
                data = json.dumps({"__error__": repr(exc)[:300]})
            with os.fdopen(write, "w") as f:
                f.write(data)
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        out[student] = json.loads(data) if data else {"__error__": f"the run ended without a result ({status})"}
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("assignment")
    parser.add_argument("notebook")
    parser.add_argument("root", type=Path)
    parser.add_argument("students", nargs="+")
    parser.add_argument("--skip", nargs="*", default=[])
    args = parser.parse_args()
    print(json.dumps(run_class(args.assignment, args.notebook, args.root.resolve(), args.students,
                               frozenset(args.skip))))
