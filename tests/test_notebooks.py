"""Solutions pass, stubs fail, exercises/ is exactly what `release` generates, nothing leaks."""
import json

import nbformat
import pytest

from autograder import EXERCISES, SOLUTIONS, assignments, notebooks
from autograder.cli import release, validate
from notebook_text import leaked, secret_lines, visible_text

PAIRS = [(a, nb) for a in assignments() for nb in notebooks(a)]


def test_there_is_something_to_check():
    assert ("rlhf_update_rules", "rlhf_update_rules") in PAIRS


def test_validate_solutions_pass_and_stubs_fail(capsys):
    # Runs every solution (with its hidden tests) and every released stub through nbgrader's Validator.
    assert validate() == 0, capsys.readouterr().err


def test_validate_catches_a_broken_solution(course_copy, capsys):
    path = course_copy / "solutions/rlhf_update_rules/rlhf_update_rules.ipynb"
    text = path.read_text()
    assert "return weights + lr * gradient" in text
    path.write_text(text.replace("return weights + lr * gradient", "return weights - lr * gradient"))
    assert validate(["rlhf_update_rules"], course_copy / "solutions", course_copy / "exercises") == 1
    assert "FAIL on the solution" in capsys.readouterr().err


def test_validate_catches_a_test_cell_the_stub_passes(course_copy, capsys):
    # A test cell whose visible part never calls the student's function would give stubs free points.
    path = course_copy / "exercises/rlhf_update_rules/rlhf_update_rules.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") ==
                "test_rlhf_weight_update_invariants")
    cell.source = '"""Part A: invariants."""\nassert True'
    nbformat.write(nb, path)
    assert validate(["rlhf_update_rules"], course_copy / "solutions", course_copy / "exercises") == 1
    assert "PASS on the unsolved stub" in capsys.readouterr().err


def test_exercises_are_exactly_what_release_generates(tmp_path):
    assert release(solutions=SOLUTIONS, exercises=tmp_path) == 0
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(EXERCISES) for p in EXERCISES.rglob("*")
                       if p.is_file() and ".ipynb_checkpoints" not in p.parts)
    assert generated == committed, "exercises/ has files release does not make (or lacks some): run release"
    for rel in generated:
        assert (tmp_path / rel).read_bytes() == (EXERCISES / rel).read_bytes(), \
            f"exercises/{rel} differs from what `python -m autograder release` generates: never edit it by hand"


@pytest.mark.parametrize("assignment,notebook", PAIRS)
def test_no_solution_or_hidden_test_in_exercises(assignment, notebook):
    secrets = secret_lines(SOLUTIONS / assignment / f"{notebook}.ipynb")
    assert len(secrets) > 20, "the source notebook should have hidden tests and solutions to protect"
    exercise = EXERCISES / assignment / f"{notebook}.ipynb"
    assert leaked(secrets, visible_text(exercise)) == []
    # Released notebooks carry no outputs: nothing computed by the solution slips through.
    assert all(not c.get("outputs") for c in json.loads(exercise.read_text())["cells"])


def test_leak_detector_finds_what_it_looks_for():
    # The check above is only worth something if it flags the source notebook itself.
    src = SOLUTIONS / "rlhf_update_rules/rlhf_update_rules.ipynb"
    assert len(leaked(secret_lines(src), visible_text(src))) > 20


@pytest.mark.parametrize("assignment,notebook", PAIRS)
def test_exercise_notebooks_state_difficulty_time_points_and_hints(assignment, notebook):
    nb = nbformat.read(EXERCISES / assignment / f"{notebook}.ipynb", as_version=4)
    intro = nb.cells[0].source
    for word in ("Difficulty", "Estimated time", "Points"):
        assert word in intro, f"{notebook}: the first cell must state {word}"
    test_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert test_cells and all(c.metadata["nbgrader"]["points"] > 0 for c in test_cells)
    assert "| minutes |" in intro and "| difficulty |" in intro, f"{notebook}: state difficulty and minutes per part"
    # Every part with something to write offers a collapsed hint before its first answer cell.
    part, hinted, missing = None, False, []
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {})
        if c.cell_type == "markdown" and c.source.lstrip().startswith("## Part"):
            part, hinted = c.source.lstrip().splitlines()[0], False
        if c.cell_type == "markdown" and "<details>" in c.source:
            hinted = True
        if meta.get("solution") and not hinted and part not in missing:
            missing.append(part)
        if meta.get("solution"):
            hinted = True   # a second answer cell of the same part shares its hint
    assert not missing, f"{notebook}: no collapsed hint before the first answer of {missing}"
