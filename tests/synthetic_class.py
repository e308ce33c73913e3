"""A synthetic class of submissions for the end-to-end grading test.

Each student starts from the released stub (what a real student downloads) and fills the answer
cells with one implementation: correct, or one of the plausible mistakes people make.
"""
import json
import re
import textwrap
from pathlib import Path

import nbformat

from autograder import EXERCISES, SOLUTIONS

ASSIGNMENT = NOTEBOOK = "rlhf_update_rules"


def _solution_bodies() -> dict[str, str]:
    """grade_id -> the reference code of each answer cell (markers removed)."""
    nb = nbformat.read(SOLUTIONS / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: re.sub(r"\n\s*### (BEGIN|END) SOLUTION", "", c.source)
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def _mutate(code: str, old: str, new: str) -> str:
    assert old in code, f"mutation target not found: {old!r}"
    return code.replace(old, new)


WEIGHT = "rlhf_weight_update"
PG = "rlhf_policy_gradient"

# (function, old, new, what the mistake is) — every one must cost points.
WRONG = {
    "w_kl_sign": (WEIGHT, "policy_log_probs - ref_log_probs", "ref_log_probs - policy_log_probs", "KL reversed"),
    "w_sum": (WEIGHT, ".mean(axis=0)", ".sum(axis=0)", "sum instead of mean over samples"),
    "w_descent": (WEIGHT, "return weights + lr * gradient", "return weights - lr * gradient", "descent, not ascent"),
    "w_no_kl": (WEIGHT, "rewards - beta * kl", "rewards", "KL penalty dropped"),
    "w_in_place": (WEIGHT, "return weights + lr * gradient", "weights += lr * gradient\n    return weights",
                   "mutates the caller's weights"),
    "w_mean_of_means": (WEIGHT, "(adjusted_rewards[:, None] * log_prob_grads).mean(axis=0)",
                        "adjusted_rewards.mean() * log_prob_grads.mean(axis=0)", "mean of product ≠ product of means"),
    "pg_identical_branches": (PG, "np.where(clipped, 0.0, -advantages * ratios / n)",
                              "np.where(clipped, -advantages * ratios / n, -advantages * ratios / n)",
                              "the published solution's identical-branch gradient"),
    "pg_sample_std": (PG, "rewards.std()", "rewards.std(ddof=1)", "sample instead of population std"),
    "pg_no_ratio": (PG, "-advantages * ratios / n)", "-advantages / n)", "chain rule through the ratio forgotten"),
    "pg_ascent": (PG, "log_probs - lr * grad", "log_probs + lr * grad", "update adds the loss gradient"),
    "pg_clip_reversed": (PG, "((advantages > 0) & (ratios > 1 + clip_epsilon)) | ((advantages < 0) & (ratios < 1 - clip_epsilon))",
                         "((advantages > 0) & (ratios < 1 - clip_epsilon)) | ((advantages < 0) & (ratios > 1 + clip_epsilon))",
                         "zeroes the gradient on the wrong side of the band"),
    "pg_upper_only": (PG, " | ((advantages < 0) & (ratios < 1 - clip_epsilon))", "", "only the A > 0 side is clipped"),
    "pg_no_mean": (PG, "-advantages * ratios / n)", "-advantages * ratios)", "gradient of the sum, not the mean"),
    "pg_loss_sign": (PG, "loss = -np.mean(", "loss = np.mean(", "loss sign flipped"),
    "pg_unstandardised": (PG, "(rewards - rewards.mean()) / (rewards.std() + 1e-8)", "rewards - rewards.mean()",
                          "advantages not divided by the std"),
}


def _fill(nb, bodies: dict[str, str]):
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in bodies:
            cell.source = bodies[gid]
    return nb


def _stub():
    return nbformat.read(EXERCISES / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)


def make_class(root: Path) -> dict[str, dict]:
    """Write the class under root/<student>/<assignment>/; return what each student should get.

    Expectation keys: "score" (exact) or "below_full" (True), and optionally "status" and
    "message" (a substring of the CSV message).
    """
    correct = _solution_bodies()
    full = 15.0
    expect: dict[str, dict] = {}

    def write(student: str, nb=None, name: str = NOTEBOOK, raw: str | None = None):
        folder = root / student / ASSIGNMENT
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.ipynb"
        if raw is not None:
            path.write_text(raw)
        else:
            nbformat.write(nb, path)

    write("correct", _fill(_stub(), correct))
    expect["correct"] = {"score": full, "status": "ok"}
    write("stub", _stub())
    expect["stub"] = {"score": 0.0, "status": "ok"}

    for student, (func, old, new, _why) in WRONG.items():
        bodies = dict(correct)
        bodies[func] = _mutate(correct[func], old, new)
        write(student, _fill(_stub(), bodies))
        expect[student] = {"below_full": True, "status": "ok"}

    # Edits a visible test to pass, with the identical-branch bug: the original test is restored.
    nb = _fill(_stub(), {**correct, PG: _mutate(correct[PG], *WRONG["pg_identical_branches"][1:3])})
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_rlhf_policy_gradient_clipping":
            cell.source = "assert True  # trust me"
    write("tampered", nb)
    expect["tampered"] = {"below_full": True, "status": "warning", "message": "edited; the originals were restored"}

    # Deletes one test cell of an otherwise correct notebook: that cell scores 0.
    nb = _fill(_stub(), correct)
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
    write("infinite_loop", _fill(_stub(), {**correct, PG: loop}))
    expect["infinite_loop"] = {"score": 6.0, "status": "warning", "message": "interrupted"}

    # A cell that raises: Part A's answer cell crashes before defining the function.
    write("raises", _fill(_stub(), {**correct, WEIGHT: "import numpy as np\nraise RuntimeError('oops')\n"}))
    expect["raises"] = {"score": 9.0, "status": "ok"}

    write("corrupted", raw='{"cells": [ this is not json')
    expect["corrupted"] = {"score": 0.0, "status": "invalid", "message": "invalid JSON"}

    write("not_a_notebook", raw=json.dumps({"hello": "world"}))
    expect["not_a_notebook"] = {"score": 0.0, "status": "invalid", "message": "not a valid notebook"}

    write("renamed", _fill(_stub(), correct), name=f"{NOTEBOOK} (1)")
    expect["renamed"] = {"score": full, "status": "warning", "message": "renamed notebook"}

    (root / "no_folder").mkdir(parents=True)
    expect["no_folder"] = {"score": 0.0, "status": "missing", "message": "no rlhf_update_rules/ folder"}

    return expect
