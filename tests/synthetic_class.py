"""Synthetic classes of submissions for the end-to-end grading tests.

Each student starts from the released stub (what a real student downloads) and fills the answer
cells with one implementation: the reference solution, or the solution with one plausible mistake.
Every assignment lists its mistakes in ``tests/classes/<assignment>.py`` (``WRONG``, ``FULL_SCORE``).
"""
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


def make_wrong_class(root: Path, assignment: str) -> dict[str, dict]:
    """The reference solution, the untouched stub, and one student per entry of WRONG."""
    module = load_class(assignment)
    notebook = getattr(module, "NOTEBOOK", assignment)
    correct = solution_bodies(assignment, notebook)
    expect: dict[str, dict] = {}

    def write(student, nb):
        (root / student / assignment).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, root / student / assignment / f"{notebook}.ipynb")

    write("correct", fill(stub(assignment, notebook), correct))
    expect["correct"] = {"score": module.FULL_SCORE, "status": "ok"}
    write("stub", stub(assignment, notebook))
    expect["stub"] = {"score": 0.0, "status": "ok"}
    for student, (cell, old, new, _why) in module.WRONG.items():
        write(student, fill(stub(assignment, notebook), {**correct, cell: mutate(correct[cell], old, new)}))
        expect[student] = {"below": module.FULL_SCORE, "status": "ok"}
    return expect


def make_bad_files_class(root: Path) -> dict[str, dict]:
    """rlhf_update_rules: the correct/stub/wrong students plus every kind of broken submission."""
    from classes.rlhf_update_rules import FULL_SCORE as full, WRONG

    assignment = notebook = "rlhf_update_rules"
    expect = make_wrong_class(root, assignment)
    correct = solution_bodies(assignment, notebook)
    pg = "rlhf_policy_gradient"

    def write(student, nb=None, name=notebook, raw=None):
        folder = root / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            (folder / f"{name}.ipynb").write_text(raw)
        else:
            nbformat.write(nb, folder / f"{name}.ipynb")

    # Edits a visible test to pass, with the identical-branch bug: the original test is restored.
    nb = fill(stub(assignment, notebook), {**correct, pg: mutate(correct[pg], *WRONG["pg_identical_branches"][1:3])})
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_rlhf_policy_gradient_clipping":
            cell.source = "assert True  # trust me"
    write("tampered", nb)
    expect["tampered"] = {"below": full, "status": "warning", "message": "edited; the originals were restored"}

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

    write("not_a_notebook", raw=json.dumps({"hello": "world"}))
    expect["not_a_notebook"] = {"score": 0.0, "status": "invalid", "message": "not a valid notebook"}

    write("renamed", fill(stub(assignment, notebook), correct), name=f"{notebook} (1)")
    expect["renamed"] = {"score": full, "status": "warning", "message": "renamed notebook"}

    (root / "no_folder").mkdir(parents=True)
    expect["no_folder"] = {"score": 0.0, "status": "missing", "message": "no rlhf_update_rules/ folder"}
    return expect
