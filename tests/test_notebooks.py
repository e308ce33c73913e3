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
    # The validate command on one assignment: a solution (with its hidden tests) and its released stub
    # through nbgrader's Validator. Every other assignment's solution passing every test and its stub
    # failing every test is shown by grading: its class in tests/test_grading.py has a "correct" student
    # (full marks) and a "stub" (0), graded with the hidden tests; running them all again here would
    # cost a minute of the suite's budget.
    assert validate(["rlhf_update_rules"]) == 0, capsys.readouterr().err


def test_every_assignment_is_graded_with_a_correct_and_a_stub_student():
    # what lets test_validate_solutions_pass_and_stubs_fail check one assignment only
    from synthetic_class import class_modules

    assert set(class_modules()) == {a for a, _ in PAIRS}


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


def unguarded_follow_ons(nb) -> list[str]:
    """Ungraded code cells that read names a graded test cell defines, without checking they exist.

    A graded micro-run that fails leaves its names undefined; a plot cell after it that uses them anyway
    adds a NameError that blames the wrong thing. Such a cell must test `"name" in globals()` for a name
    its test cell assigns no earlier than every name the plot cell reads from it (if that one exists,
    so do they). Names a cell assigns itself (loop variables) do not count.
    """
    import ast
    import re

    defined: dict[str, tuple[int, int]] = {}        # name -> (test cell index, statement index in it)
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        if meta.get("grade"):
            for position, node in enumerate(tree.body):
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for name in (n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)):
                        defined[name] = (index, position)
        elif not meta.get("solution"):
            stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            guarded = set(re.findall(r"[\"'](\w+)[\"']\s+(?:not\s+)?in\s+globals\(\)", cell.source))
            needs: dict[int, int] = {}                      # test cell -> latest position read from it
            for name in used - stored:
                if name in defined:
                    cell_index, position = defined[name]
                    needs[cell_index] = max(needs.get(cell_index, -1), position)
            for cell_index, position in needs.items():
                if not any(defined.get(g, (None,))[0] == cell_index and defined[g][1] >= position for g in guarded):
                    names = sorted(n for n in used - stored if defined.get(n, (None,))[0] == cell_index)
                    problems.append(f"{meta.get('grade_id', '?')}: uses {', '.join(names)} without checking "
                                    "that the test cell defining them finished")
    return problems


@pytest.mark.parametrize("assignment,notebook", PAIRS)
def test_cells_after_a_micro_run_survive_its_failure(assignment, notebook):
    nb = nbformat.read(SOLUTIONS / assignment / f"{notebook}.ipynb", as_version=4)
    assert not unguarded_follow_ons(nb), unguarded_follow_ons(nb)


def test_the_follow_on_check_can_fail():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("records = train()", metadata={"nbgrader": {"grade": True, "grade_id": "t"}}),
        nbformat.v4.new_code_cell("plot(records)", metadata={"nbgrader": {"grade_id": "plot"}}),
        nbformat.v4.new_code_cell('if "records" in globals():\n    plot(records)', metadata={}),
    ])
    assert unguarded_follow_ons(nb) == ["plot: uses records without checking that the test cell defining them "
                                        "finished"]
    # a guard on an earlier name of the test cell does not cover a later one
    nb.cells[0].source = "early = 1\nrecords = train()"
    nb.cells[2].source = 'if "early" in globals():\n    plot(records)'
    assert len(unguarded_follow_ons(nb)) == 2


# ------------------------------------------------------------------ hints and the points policy (issue 9)
def solution_code(nb) -> str:
    """The answer code of a notebook (what is between BEGIN and END SOLUTION), whitespace removed."""
    import re

    code = "".join(m for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")
                   for m in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", c.source, re.S))
    return re.sub(r"\s+", "", code)


def hint_problems(nb, min_span: int = 15) -> list[str]:
    """Each part with an answer has two collapsed hints, "Hint 1: the idea" then "Hint 2: the pitfall",
    before its first answer cell; no hint holds a code block or a code span of min_span or more
    characters (whitespace ignored) that appears in the notebook's answer code. A bare name, dotted or
    not (`torch.log_softmax`), names a tool and is allowed."""
    import re

    answer = solution_code(nb)
    problems, part, summaries = [], None, []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "markdown":
            if cell.source.lstrip().startswith("## Part"):
                part, summaries = cell.source.lstrip().splitlines()[0], []
            for block in re.findall(r"<details>(.*?)</details>", cell.source, re.S):
                summaries += re.findall(r"<summary>(.*?)</summary>", block)
                if "```" in block:
                    problems.append(f"{part}: a hint holds a code block")
                for span in re.findall(r"`([^`]+)`", block):
                    flat = re.sub(r"\s+", "", span)
                    if len(flat) >= min_span and flat in answer and not re.fullmatch(r"[\w.]+", flat):
                        problems.append(f"{part}: a hint holds the answer's code `{span}`")
        if meta.get("solution") and part is not None:
            if summaries[:2] != ["Hint 1: the idea", "Hint 2: the pitfall"]:
                problems.append(f"{part}: hints {summaries} are not 'Hint 1: the idea', 'Hint 2: the pitfall'")
            part = None            # a second answer cell of the same part shares its hints
    return problems


@pytest.mark.parametrize("assignment,notebook", PAIRS)
def test_hints_are_tiered_and_never_hold_the_answer(assignment, notebook):
    nb = nbformat.read(SOLUTIONS / assignment / f"{notebook}.ipynb", as_version=4)
    assert not hint_problems(nb), hint_problems(nb)


def test_the_hint_check_can_fail():
    def notebook(hint: str):
        return nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_markdown_cell("## Part A\n\n" + hint),
            nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return np.where(mask > 0, x, 0.0)\n"
                                      "    ### END SOLUTION", metadata={"nbgrader": {"solution": True, "grade_id": "f"}})])
    tiers = ("<details>\n<summary>Hint 1: the idea</summary>\n\n{}\n</details>\n\n"
             "<details>\n<summary>Hint 2: the pitfall</summary>\n\n{}\n</details>")
    assert hint_problems(notebook(tiers.format("Keep the real entries.", "Use `np.where`."))) == []
    assert hint_problems(notebook(tiers.format("Keep them.", "`np.where(mask>0, x, 0.0)`"))) == \
        ["## Part A: a hint holds the answer's code `np.where(mask>0, x, 0.0)`"]
    assert len(hint_problems(notebook("<details>\n<summary>Hint</summary>\n\nUse a mask.\n</details>"))) == 1
    assert len(hint_problems(notebook(tiers.format("```python\nx = 1\n```", "No.")))) == 1


def points_policy_problems(nb) -> list[str]:
    """The intro says how points are counted; a micro-run (a graded cell that tests no answer cell of
    its own part) is worth at most 2 points; the stated total is the sum of the test cells' points."""
    import re

    intro = nb.cells[0].source
    problems = [] if "**How points are counted.**" in intro else ["the intro does not say how points are counted"]
    total = re.search(r"\*\*Points:\*\* (\d+) in total", intro)
    points = [(c.metadata["nbgrader"]["grade_id"], c.metadata["nbgrader"]["points"])
              for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    if not total or int(total.group(1)) != sum(p for _, p in points):
        problems.append(f"the intro's total {total and total.group(1)} is not the cells' {sum(p for _, p in points)}")
    has_answer = False
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("## Part"):
            has_answer = False
        has_answer |= bool(meta.get("solution"))
        if meta.get("grade") and not has_answer and meta["points"] > 2:
            problems.append(f"micro-run {meta['grade_id']} is worth {meta['points']} > 2 points")
    return problems


@pytest.mark.parametrize("assignment,notebook", PAIRS)
def test_points_policy_is_stated_and_micro_runs_stay_small(assignment, notebook):
    nb = nbformat.read(SOLUTIONS / assignment / f"{notebook}.ipynb", as_version=4)
    assert not points_policy_problems(nb), points_policy_problems(nb)


def test_the_points_policy_check_can_fail():
    nb = nbformat.read(SOLUTIONS / "capstone/capstone.ipynb", as_version=4)
    assert points_policy_problems(nb) == []
    micro = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_sft_microrun")
    micro.metadata["nbgrader"]["points"] = 4
    assert points_policy_problems(nb) == ["the intro's total 15 is not the cells' 17",
                                          "micro-run test_sft_microrun is worth 4 > 2 points"]
    nb.cells[0].source = nb.cells[0].source.replace("**How points are counted.**", "")
    assert "the intro does not say how points are counted" in points_policy_problems(nb)
