"""The feedback notes (autograder/feedback.py) on hand-made notebooks: no grading run needed.

The end-to-end checks of the HTML students get are in tests/test_grading.py (`graded` fixture).
"""
import textwrap

import nbformat
import pytest

from autograder import SOLUTIONS, assignments, notebooks
from autograder.feedback import FeedbackNotes, bound_names, docstring_title, failure_origin

TEST_CELL = textwrap.dedent('''\
    """Part A: values by hand.

    More words.
    """
    out = f(1)
    assert out == 2, f"f(1) should be 2, got {out}"
    assert out > 0
    ### BEGIN HIDDEN TESTS
    for _x in range(3):
        assert f(_x) == 2 * _x, f"hidden: f({_x}) should be {2 * _x}"
    if f(0) != 0:
        raise ValueError("hidden: f(0) must be " + "zero")
    ### END HIDDEN TESTS
    ''')


@pytest.mark.parametrize("ename, evalue, origin", [
    ("AssertionError", "f(1) should be 2, got 3", "visible"),
    ("AssertionError", "hidden: f(2) should be 4", "hidden"),
    ("ValueError", "hidden: f(0) must be zero", "hidden"),
    ("AssertionError", "", "visible"),                        # the bare `assert out > 0`
    ("TypeError", "unsupported operand", ""),                 # raised in the student's f: no test says which
    ("AssertionError", "something the cell never says", ""),
    ("ValueError", "f(1) should be 2, got 3", ""),            # the text of a visible assert, another type
])
def test_failure_origin_matches_the_message_to_the_statement_that_can_raise_it(ename, evalue, origin):
    assert failure_origin(TEST_CELL, ename, evalue) == origin


def test_a_message_both_parts_can_raise_is_not_attributed():
    both = "assert x, 'same words'\n### BEGIN HIDDEN TESTS\nassert y, 'same words'\n### END HIDDEN TESTS\n"
    assert failure_origin(both, "AssertionError", "same words") == ""


def test_docstring_title_and_bound_names():
    assert docstring_title(TEST_CELL) == "Part A: values by hand."
    assert docstring_title("x = 1\n") == ""
    code = "import numpy as np\nfrom a.b import c as d\ndef f(x):\n    inner = 1\nclass K: pass\nif 1:\n    y, z = 1, 2\n%time w = 3\n"
    assert bound_names(code) == {"np", "d", "f", "K", "y", "z"}


def _cell(source, grade_id=None, outputs=(), points=None, score=None, solution=False):
    cell = nbformat.v4.new_code_cell(source, outputs=list(outputs))
    if grade_id:
        cell.metadata["nbgrader"] = {"grade_id": grade_id, "grade": points is not None, "solution": solution}
        if points is not None:
            cell.metadata["nbgrader"].update(points=points, score=score)
    return cell


def _error(ename, evalue, traceback=None):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                  traceback=traceback or [f"{ename}: {evalue}"])


def test_notes_name_cells_mark_hidden_failures_and_quiet_follow_on_errors():
    nb = nbformat.v4.new_notebook(cells=[
        _cell("import numpy as np\nraise RuntimeError('oops')\n", "f", [_error("RuntimeError", "oops")],
              solution=True),
        _cell('"""Uses f."""\nf(1)\n', "test_follow", [_error("NameError", "name 'f' is not defined")], 3, 0),
        _cell('"""Uses g."""\ng(1)\n', "test_typo", [_error("NameError", "name 'g' is not defined")], 3, 0),
        # a full (non-minimal) traceback that quotes a hidden line: cut to its last line
        _cell(TEST_CELL, "test_hidden", [_error("AssertionError", "hidden: f(1) should be 2", [
            "Traceback (most recent call last)", "    assert f(_x) == 2 * _x, f\"hidden: ...\"",
            "AssertionError: hidden: f(1) should be 2"])], 3, 0),
        _cell('"""Passes."""\nassert True\n', "test_ok", [], 3, 3),
    ])
    nb, _ = FeedbackNotes().preprocess(nb, {"nbgrader": {"assignment": "none", "notebook": "none"}})
    notes = {c.metadata["nbgrader"]["grade_id"]: c.metadata.get("feedback") for c in nb.cells}
    # No cell binds f (the failed one binds only np, and no released notebook says it should bind f):
    # the NameError is the cell's own, shown as it is.
    assert notes["test_follow"]["status"] == "error" and nb.cells[1].outputs
    assert notes["test_typo"]["status"] == "error" and "NameError" in notes["test_typo"]["message"]
    assert notes["test_hidden"] == {"title": "Part A: values by hand.", "status": "hidden",
                                    "message": "AssertionError: hidden: f(1) should be 2"}
    assert nb.cells[3].outputs[0]["traceback"] == ["AssertionError: hidden: f(1) should be 2"]
    assert notes["test_ok"] == {"title": "Passes.", "status": "passed", "message": ""}


def test_a_name_the_failed_cell_should_bind_makes_the_error_a_follow_on(tmp_path, monkeypatch):
    # The released notebook's answer cell defines f; the student's version raised before defining it.
    import autograder.feedback as feedback

    (tmp_path / "hw").mkdir()
    released = nbformat.v4.new_notebook(cells=[_cell("def f(x):\n    raise NotImplementedError()\n", "f",
                                                     solution=True)])
    nbformat.write(released, tmp_path / "hw" / "hw.ipynb")
    monkeypatch.setattr(feedback, "EXERCISES", tmp_path)
    nb = nbformat.v4.new_notebook(cells=[
        _cell("raise RuntimeError('oops')\n", "f", [_error("RuntimeError", "oops")], solution=True),
        _cell('"""Uses f."""\nf(1)\n', "test_follow", [nbformat.v4.new_output("stream", text="before\n"),
                                                      _error("NameError", "name 'f' is not defined")], 3, 0),
        _cell("y = f(2)\n", None, [_error("NameError", "name 'f' is not defined")]),
        _cell('"""Uses y."""\ny + 1\n', "test_chain", [_error("NameError", "name 'y' is not defined")], 3, 0),
    ])
    nb, _ = FeedbackNotes().preprocess(nb, {"nbgrader": {"assignment": "hw", "notebook": "hw"}})
    note = nb.cells[1].metadata["feedback"]
    assert note["status"] == "follow-on" and "cell f above" in note["message"] and "RuntimeError: oops" in note["message"]
    assert [o["output_type"] for o in nb.cells[1].outputs] == ["stream"]      # the NameError is gone, print kept
    assert nb.cells[2].metadata["feedback"]["status"] == "follow-on" and nb.cells[2].outputs == []
    # a chain points at the cell that should have bound the name, itself a follow-on
    assert "cell 3 above" in nb.cells[3].metadata["feedback"]["message"]


def test_a_name_a_deleted_test_cell_binds_makes_the_error_a_follow_on(tmp_path, monkeypatch):
    # The capstone's Part C cell makes the SFT model Parts D-E use: deleted, it scores 0, and the cells after it
    # say to put it back instead of showing a bare NameError.
    import autograder.feedback as feedback

    (tmp_path / "hw").mkdir()
    released = nbformat.v4.new_notebook(cells=[
        _cell('"""Part C: the micro-run."""\nsft_model = train()\nassert sft_model\n', "test_c", [], 2, None),
        _cell('"""Part D: from the Part C model."""\nassert sft_model\n', "test_d", [], 2, None)])
    nbformat.write(released, tmp_path / "hw" / "hw.ipynb")
    monkeypatch.setattr(feedback, "EXERCISES", tmp_path)
    nb = nbformat.v4.new_notebook(cells=[     # test_c deleted
        _cell('"""Part D: from the Part C model."""\nassert sft_model\n', "test_d",
              [_error("NameError", "name 'sft_model' is not defined")], 2, 0)])
    nb, _ = FeedbackNotes().preprocess(nb, {"nbgrader": {"assignment": "hw", "notebook": "hw"}})
    note = nb.cells[0].metadata["feedback"]
    assert note["status"] == "follow-on" and "cell test_c above" in note["message"], note
    assert "deleted from your notebook" in note["message"] and nb.cells[0].outputs == []


def test_message_templates_of_every_kind_and_a_hostile_message_in_linear_time():
    import time

    cell = textwrap.dedent('''\
        assert a, "rate %.2f too high for %s" % (x, y)
        assert b, "got {} and {!r}".format(x, y)
        assert c, "left " + str(x) + " right"
        ### BEGIN HIDDEN TESTS
        assert d, f"{x}{y} then {z} and {w} and {v} end"
        ### END HIDDEN TESTS
        ''')
    assert failure_origin(cell, "AssertionError", "rate 0.50 too high for me") == "visible"
    assert failure_origin(cell, "AssertionError", "got 1 and 'b'") == "visible"
    assert failure_origin(cell, "AssertionError", "left 3 right") == "visible"
    assert failure_origin(cell, "AssertionError", "12 then 3 and 4 and 5 end") == "hidden"
    assert failure_origin(cell, "AssertionError", "12 then 3 and 4 end") == ""     # a piece is missing
    # the student chooses the message: one that would make a backtracking regex run for ages
    hostile = " then" + " and" * 50_000 + " x"
    started = time.perf_counter()
    assert failure_origin(cell, "AssertionError", hostile) == ""
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize("assignment", assignments())
def test_every_test_cell_of_the_course_gets_a_name_and_a_result(assignment):
    # What generate_feedback does after GetGrades, on each solution notebook with a made-up error in
    # every test cell. (The page itself is rendered for every chapter's class by the grading tests.)
    for name in notebooks(assignment):
        nb = nbformat.read(SOLUTIONS / assignment / f"{name}.ipynb", as_version=4)
        tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]
        for cell in tests:
            cell.metadata["nbgrader"].update(score=0.0, points=cell.metadata["nbgrader"].get("points", 1))
            cell.outputs = [_error("AssertionError", "made up", ["Traceback", "  hidden line", "AssertionError: made up"])]
        nb, _ = FeedbackNotes().preprocess(nb, {"nbgrader": {"assignment": assignment, "notebook": name}})
        notes = [c.metadata["feedback"] for c in tests]
        assert tests and all(n["title"] and n["status"] == "error" and n["message"] == "AssertionError: made up"
                             for n in notes), (name, notes)
        hidden = [c for c in tests if "BEGIN HIDDEN TESTS" in c.source]
        assert all(c.outputs[0]["traceback"] == ["AssertionError: made up"] for c in hidden)


def test_inline_mathjax_replaces_the_script_tag_once_and_refuses_other_pages():
    import base64
    import gzip

    from autograder.feedback import MATHJAX_INLINE, inline_mathjax

    assert (MATHJAX_INLINE.parent / "LICENSE").is_file() and "Apache License" in \
        (MATHJAX_INLINE.parent / "LICENSE").read_text()
    page = ('<head><script>window.MathJax = {};</script>\n'
            '<script async="" id="MathJax-script" src="mathjax/tex-mml-chtml.js"></script></head><body>$x$</body>')
    inlined = inline_mathjax(page)
    assert "mathjax/tex-mml-chtml.js" not in inlined and inlined.startswith("<head><script>window.MathJax")
    assert inline_mathjax(inlined) == inlined                                   # idempotent
    payload = inlined.split('id="mathjax-inline">', 1)[1].split("</script>", 1)[0]
    code = gzip.decompress(base64.b64decode("".join(payload.split()))).decode()
    assert "MathJax" in code and len(code) > 2_000_000                          # the whole tex-svg-full.js
    with pytest.raises(ValueError, match="not a feedback page"):
        inline_mathjax("<html><body>$x$</body></html>")
