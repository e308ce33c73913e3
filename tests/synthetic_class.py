"""Synthetic classes of submissions for the end-to-end grading tests.

Each student starts from the released stub (what a real student downloads) and fills the answer
cells with one implementation: the reference solution, or the solution with one plausible mistake.
Every assignment lists its mistakes in ``tests/classes/<assignment>.py`` (``WRONG``, ``FULL_SCORE``).
"""
import ast
import importlib
import json
import re
import textwrap
from pathlib import Path

import nbformat

from autograder import EXERCISES, SOLUTIONS

CLASSES = Path(__file__).parent / "classes"


def class_modules() -> list[str]:
    """Names of the assignments that define a synthetic class."""
    return sorted(p.stem for p in CLASSES.glob("*.py") if not p.name.startswith("_"))


def load_class(assignment: str):
    return importlib.import_module(f"classes.{assignment}")


def solution_bodies(assignment: str, notebook: str) -> dict[str, str]:
    """grade_id -> the reference code of each answer cell (markers removed)."""
    nb = nbformat.read(SOLUTIONS / assignment / f"{notebook}.ipynb", as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: re.sub(r"\n\s*### (BEGIN|END) SOLUTION", "", c.source)
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def mutate(code: str, old: str, new: str) -> str:
    assert old in code, f"mutation target not found in the solution: {old!r}"
    return code.replace(old, new)


def fill(nb, bodies: dict[str, str]):
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in bodies:
            cell.source = bodies[gid]
    return nb


def stub(assignment: str, notebook: str):
    return nbformat.read(EXERCISES / assignment / f"{notebook}.ipynb", as_version=4)


def write_submission(root: Path, student: str, assignment: str, name: str, nb=None, raw: str | None = None) -> Path:
    """Hand in `nb` (or the raw file text `raw`) as <root>/<student>/<assignment>/<name>.ipynb."""
    path = root / student / assignment / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path.write_text(raw)
    else:
        nbformat.write(nb, path)
    return path


def make_wrong_class(root: Path, assignment: str) -> dict[str, dict]:
    """The reference solution, the untouched stub, and one student per entry of WRONG."""
    module = load_class(assignment)
    return _write_class(root, assignment, {name: {cell: name} for name, (cell, *_rest) in module.WRONG.items()})


def _write_class(root: Path, assignment: str, students: dict[str, dict[str, str]]) -> dict[str, dict]:
    """Write "correct", "stub" and each student {answer grade_id: mistake name}; return the expectations.

    A student's mistake in a function must cost points in that function's own test cells (`lose_in`).
    """
    module = load_class(assignment)
    notebook = getattr(module, "NOTEBOOK", assignment)
    correct = solution_bodies(assignment, notebook)
    owners = owned_test_cells(assignment, notebook)
    expect: dict[str, dict] = {}

    def write(student, bodies, drop=()):
        nb = fill(stub(assignment, notebook), bodies) if bodies is not None else stub(assignment, notebook)
        nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in drop]
        write_submission(root, student, assignment, notebook, nb)

    write("correct", correct)
    expect["correct"] = {"score": module.FULL_SCORE, "status": "ok"}
    write("stub", None)
    expect["stub"] = {"score": 0.0, "status": "ok"}
    deps = _depends(assignment, notebook)
    micro_runs = set(micro_run_cells(assignment, notebook))
    for student, bugs in students.items():
        bodies = dict(correct)
        for cell, name in bugs.items():
            _, old, new, _why = module.WRONG[name]
            bodies[cell] = mutate(correct[cell], old, new)
        # A student with mistakes hands in no micro-run cells (each scores 0, "deleted"): what is checked
        # here is where each mistake costs points, and a micro-run may cost points for any mistake, so
        # running them (most of a chapter notebook's grading time) would check nothing. The "correct"
        # student runs them all.
        write(student, bodies, drop=micro_runs)
        broken = set(bugs)
        while True:            # a function whose answer or tests call a broken one may fail too
            more = {f for f, uses in deps.items() if uses & broken} - broken
            if not more:
                break
            broken |= more
        expect[student] = {"below": module.FULL_SCORE, "status": "warning" if micro_runs else "ok",
                           **({"message": f"{sorted(micro_runs)[0]}"} if micro_runs else {}),
                           "lose_in": {name: owners[cell] for cell, name in bugs.items()},
                           "may_lose_in": micro_runs | {c for f in broken for c in owners[f]}}
    return expect


def owned_test_cells(assignment: str, notebook: str) -> dict[str, list[str]]:
    """answer grade_id -> the graded test cells that test it: those after it, up to the next answer cell
    or the next "## Part" heading. Micro-run parts (no answer cell of their own) belong to no function."""
    nb = nbformat.read(SOLUTIONS / assignment / f"{notebook}.ipynb", as_version=4)
    owners: dict[str, list[str]] = {}
    current = None
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("## Part"):
            current = None
        if meta.get("solution"):
            current = meta["grade_id"]
            owners[current] = []
        elif meta.get("grade") and current is not None:
            owners[current].append(meta["grade_id"])
    return owners


def micro_run_cells(assignment: str, notebook: str) -> list[str]:
    """grade_ids of the graded test cells no function owns: the micro-runs (any mistake may cost them)."""
    owned = {c for cells in owned_test_cells(assignment, notebook).values() for c in cells}
    return [c for c in graded_cells(assignment, notebook) if c not in owned]


def graded_cells(assignment: str, notebook: str) -> list[str]:
    """grade_ids of every graded test cell of the solution notebook."""
    nb = nbformat.read(SOLUTIONS / assignment / f"{notebook}.ipynb", as_version=4)
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


def _depends(assignment: str, notebook: str) -> dict[str, set[str]]:
    """answer grade_id -> the other answers its reference code or its own test cells call by name."""
    nb = nbformat.read(SOLUTIONS / assignment / f"{notebook}.ipynb", as_version=4)
    source = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells if c.metadata.get("nbgrader")}
    owners = owned_test_cells(assignment, notebook)
    deps = {}
    for f, tests in owners.items():
        names = {node.id for code in [source[f], *(source[t] for t in tests)]
                 for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}   # uses, not docstrings
        deps[f] = {g for g in owners if g != f and g in names}
    return deps


def make_combined_wrong_class(root: Path, assignment: str) -> dict[str, dict]:
    """Like make_wrong_class, but each student carries one mistake in EACH of several functions.

    A function's mistake must then cost points in that function's OWN test cells (a stricter check
    than "the total is below full"), so the mistakes of one student cannot stand in for each other.
    Two functions whose code or tests call one another are never broken in the same student. Fewer
    students means fewer notebooks that each pay for a training micro-run.
    """
    module = load_class(assignment)
    deps = _depends(assignment, getattr(module, "NOTEBOOK", assignment))
    students: list[dict[str, str]] = []          # one {answer grade_id: mistake name} per student
    for name, (cell, *_rest) in module.WRONG.items():
        for bugs in students:
            clash = any(g == cell or g in deps[cell] or cell in deps[g] for g in bugs)
            if not clash:
                bugs[cell] = name
                break
        else:
            students.append({cell: name})

    return _write_class(root, assignment, {f"mix{k:02d}_" + "+".join(bugs.values()): bugs
                                           for k, bugs in enumerate(students)})


def make_bad_files_class(root: Path) -> dict[str, dict]:
    """rlhf_update_rules: the correct/stub/wrong students plus every kind of broken submission."""
    from classes.rlhf_update_rules import FULL_SCORE as full, WRONG

    assignment = notebook = "rlhf_update_rules"
    expect = make_wrong_class(root, assignment)
    correct = solution_bodies(assignment, notebook)
    pg = "rlhf_policy_gradient"

    def write(student, nb=None, name=notebook, raw=None):
        write_submission(root, student, assignment, name, nb, raw)

    # Edits a visible test to pass, with the identical-branch bug: the original test is restored.
    nb = fill(stub(assignment, notebook), {**correct, pg: mutate(correct[pg], *WRONG["pg_identical_branches"][1:3])})
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_rlhf_policy_gradient_clipping":
            cell.source = "assert True  # trust me"
    write("tampered", nb)
    # Restored, the clipping test fails on the identical-branch bug (0/3), as does the gradient test
    # (0/3): exactly pg_identical_branches' score. Graded as tampered (`assert True`) it would give 12.
    expect["tampered"] = {"score": full - 3 - 3, "status": "warning",
                          "message": "edited; the originals were restored before grading; "
                                     "lost points in test_rlhf_policy_gradient_clipping (0/3)"}
    expect["pg_identical_branches"] = {"score": full - 3 - 3, "status": "ok"}

    # Deletes one test cell of an otherwise correct notebook: that cell scores 0.
    nb = fill(stub(assignment, notebook), correct)
    nb.cells = [c for c in nb.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") != "test_rlhf_policy_gradient_clipping"]
    write("deleted", nb)
    expect["deleted"] = {"score": full - 3, "status": "warning", "message": "test_rlhf_policy_gradient_clipping deleted"}

    # Part B never returns: every Part B test times out, Part A still counts.
    loop = textwrap.dedent('''
        def rlhf_policy_gradient(log_probs, rewards, old_log_probs, clip_epsilon=0.2, lr=1e-4):
            while True:
                pass
    ''')
    write("infinite_loop", fill(stub(assignment, notebook), {**correct, pg: loop}))
    expect["infinite_loop"] = {"score": 6.0, "status": "warning", "message": "interrupted"}

    # A cell that raises: Part A's answer cell crashes before defining the function.
    write("raises", fill(stub(assignment, notebook),
                         {**correct, "rlhf_weight_update": "import numpy as np\nraise RuntimeError('oops')\n"}))
    expect["raises"] = {"score": 9.0, "status": "ok"}

    write("corrupted", raw='{"cells": [ this is not json')
    expect["corrupted"] = {"score": 0.0, "status": "invalid", "message": "invalid JSON"}

    # cut off half-way (an interrupted upload), and far too big (60 MB of outputs): neither is executed
    whole = nbformat.writes(fill(stub(assignment, notebook), correct))
    write("truncated", raw=whole[: len(whole) // 2])
    expect["truncated"] = {"score": 0.0, "status": "invalid", "message": "invalid JSON"}
    huge = fill(stub(assignment, notebook), correct)
    huge.cells.append(nbformat.v4.new_code_cell("", outputs=[nbformat.v4.new_output("stream", name="stdout",
                                                                                    text="x" * (60 * 2**20))]))
    write("huge", huge)
    expect["huge"] = {"score": 0.0, "status": "invalid", "message": "more than a notebook of this course can be"}

    write("not_a_notebook", raw=json.dumps({"hello": "world"}))
    expect["not_a_notebook"] = {"score": 0.0, "status": "invalid", "message": "not a valid notebook"}

    write("renamed", fill(stub(assignment, notebook), correct), name=f"{notebook} (1)")
    expect["renamed"] = {"score": full, "status": "warning", "message": "renamed notebook"}

    (root / "no_folder").mkdir(parents=True)
    expect["no_folder"] = {"score": 0.0, "status": "missing", "message": "no rlhf_update_rules/ folder"}
    return expect
