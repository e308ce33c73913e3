"""Regression tests for `python -m autograder` on inputs a code review found to crash or mislead.

Small classes only (one to five students of rlhf_update_rules): each nbgrader autograde costs seconds.
"""
import os
import shutil
import sys

import nbformat
import pytest

from autograder import SOLUTIONS
from conftest import REPO, autograder, read_grades, run
from notebook_text import hidden_test_lines, leaked, secret_lines, visible_text, without_comments
from synthetic_class import fill, solution_bodies, stub, write_submission

ASSIGNMENT = NOTEBOOK = "rlhf_update_rules"
FULL = 15.0
CLIPPING = "test_rlhf_policy_gradient_clipping"


def _correct():
    return fill(stub(ASSIGNMENT, NOTEBOOK), solution_bodies(ASSIGNMENT, NOTEBOOK))


def _write(root, student, nb, name=NOTEBOOK, assignment=ASSIGNMENT):
    write_submission(root, student, assignment, name, nb)


def _cell(nb, grade_id):
    [cell] = [c for c in nb.cells if (c.metadata.get("nbgrader") or {}).get("grade_id") == grade_id]
    return cell


def _one_line_error(proc) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# --- one class with several odd (but gradable) submissions --------------------------------------------

@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    root = tmp_path_factory.mktemp("edge")
    subs = root / "submissions"
    _write(subs, "correct", _correct())
    (subs / "correct" / "week_9_typo").mkdir()          # not an assignment of solutions/
    (subs / "other" / "week_9_typo").mkdir(parents=True)
    nb = _correct()
    nb.cells[0].metadata["nbgrader"] = None             # made nbgrader and _test_cells crash
    _write(subs, "null_metadata", nb)
    nb = _correct()
    cell = _cell(nb, CLIPPING)
    cell.cell_type = "markdown"
    del cell["outputs"], cell["execution_count"]
    _write(subs, "markdown_test_cell", nb)
    _write(subs, "extra_notebook", _correct())
    _write(subs, "extra_notebook", stub(ASSIGNMENT, NOTEBOOK), name="scratch")
    db = root / "no" / "such" / "folder" / "gradebook.db"  # SQLAlchemy cannot create missing folders
    proc = autograder("grade", subs, "--out", root / "out" / "grades.csv", "--course-dir", root / "course",
                      "--db", db, "--timeout", 20, "--quiet", cwd=root)
    return root, read_grades(root / "out" / "grades.csv"), proc, db


def test_malformed_nbgrader_metadata_is_graded_with_a_warning(edge):
    _, rows, _, _ = edge
    row = rows["null_metadata"]
    assert (float(row["score"]), row["status"]) == (FULL, "warning"), row
    assert "malformed nbgrader metadata ignored in cell(s) 1" in row["message"]
    assert rows["correct"]["status"] == "ok" and float(rows["correct"]["score"]) == FULL


def test_test_cell_turned_into_markdown_is_restored_and_graded(edge):
    # nbgrader restores the cell type from the gradebook: the cell runs and scores; it is not "deleted".
    root, rows, _, _ = edge
    row = rows["markdown_test_cell"]
    assert (float(row["score"]), row["status"]) == (FULL, "warning"), row
    assert f"{CLIPPING} changed to markdown; restored as code and graded" in row["message"]
    assert "deleted" not in row["message"]
    graded = nbformat.read(root / "course/autograded/markdown_test_cell" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    assert _cell(graded, CLIPPING).cell_type == "code"


def test_extra_notebook_is_mentioned(edge):
    _, rows, _, _ = edge
    row = rows["extra_notebook"]
    assert (float(row["score"]), row["status"]) == (FULL, "warning"), row
    assert f"ignored scratch.ipynb (not a notebook of {ASSIGNMENT})" in row["message"]


def test_unknown_assignment_folders_get_one_warning_line(edge):
    _, rows, proc, _ = edge
    lines = [ln for ln in proc.stderr.splitlines() if "week_9_typo" in ln]
    assert lines == ["warning: ignored folder(s) that are not assignments in solutions/: week_9_typo"]
    assert rows["other"]["status"] == "missing"          # week_9_typo is not graded as anything


def test_db_in_a_new_folder_is_created(edge):
    _, rows, _, db = edge
    assert db.is_file() and len(rows) == 5


# --- a row that breaks the grader ---------------------------------------------------------------------

def test_unexpected_exception_in_one_row_does_not_stop_the_class(tmp_path, monkeypatch):
    from autograder import grading

    subs = tmp_path / "subs"
    for student in ("alice", "boom", "carol"):
        _write(subs, student, _correct())
    real = grading._collect

    def collect(student_dir, *args):
        if student_dir.name == "boom":
            raise RuntimeError("disk on fire\nsecond line")
        return real(student_dir, *args)

    monkeypatch.setattr(grading, "_collect", collect)
    grading.grade(subs, out=tmp_path / "g.csv", course_dir=tmp_path / "course", progress=False)
    rows = read_grades(tmp_path / "g.csv")
    assert [(s, r["status"], float(r["score"])) for s, r in rows.items()] == [
        ("alice", "ok", FULL), ("boom", "error", 0.0), ("carol", "ok", FULL)]
    assert rows["boom"]["message"] == "grading this submission failed (RuntimeError: disk on fire); check it by hand"


def test_a_failed_autograde_is_tried_once_more(tmp_path, monkeypatch):
    """A kernel that fails to start once (two grading runs on one machine) must not cost a student."""
    from nbgrader.apps.api import NbGraderAPI
    from autograder import grading

    subs = tmp_path / "subs"
    for student in ("alice", "bob", "carol"):
        _write(subs, student, _correct())
    real, calls = NbGraderAPI.autograde, []

    def flaky(self, assignment, student, **kwargs):
        calls.append(student)
        if student == "bob" and calls.count("bob") == 1:
            return {"success": False, "error": "Traceback ...\nRuntimeError: Kernel died before replying to kernel_info\n"}
        if student == "carol":
            return {"success": False, "error": "Traceback ...\nValueError: always broken\n"}
        return real(self, assignment, student, **kwargs)

    monkeypatch.setattr(NbGraderAPI, "autograde", flaky)
    # jobs=1: grade in this process, where the patch is (a worker process would see it too, but its
    # calls would be counted in its own copy of `calls`)
    grading.grade(subs, out=tmp_path / "g.csv", course_dir=tmp_path / "course", progress=False, jobs=1)
    rows = read_grades(tmp_path / "g.csv")
    assert calls.count("alice") == 1 and calls.count("bob") == 2 and calls.count("carol") == 2
    assert (rows["bob"]["status"], float(rows["bob"]["score"])) == ("ok", FULL)
    assert "second attempt" in rows["bob"]["message"] and "Kernel died" in rows["bob"]["message"]
    assert rows["carol"]["status"] == "error" and "ValueError: always broken" in rows["carol"]["message"]


def test_failed_generate_assignment_message_is_readable(tmp_path, monkeypatch):
    from autograder.grading import GradingError, _prepare_gradebook

    # nbgrader's Gradebook runs `alembic` by name (load_config does this for the CLI).
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}")

    class FailingAPI:
        def generate_assignment(self, name, **kwargs):
            return {"success": False, "error": "Traceback (most recent call last):\n  ...\nValueError: bad cell\n"}

    with pytest.raises(GradingError) as info:
        _prepare_gradebook(FailingAPI(), f"sqlite:///{tmp_path}/gb.db", [ASSIGNMENT])
    assert str(info.value) == f"nbgrader generate_assignment {ASSIGNMENT} failed: ValueError: bad cell"


# --- runs that cannot start: one line, exit 2, before any grading ---------------------------------------

@pytest.fixture
def one_student(tmp_path):
    _write(tmp_path / "subs", "alice", _correct())
    return tmp_path


@pytest.mark.parametrize("case", ["out_is_a_folder", "out_under_a_file", "feedback_is_a_file", "db_is_a_folder"])
def test_unusable_output_paths_fail_before_grading(one_student, case):
    root = one_student
    (root / "taken").mkdir()
    (root / "plain_file").write_text("not a folder")
    args = {"out_is_a_folder": ["--out", root / "taken"],
            "out_under_a_file": ["--out", root / "plain_file" / "grades.csv"],
            "feedback_is_a_file": ["--out", root / "g.csv", "--feedback-dir", root / "plain_file"],
            "db_is_a_folder": ["--out", root / "g.csv", "--db", root / "taken"]}[case]
    proc = autograder("grade", root / "subs", *args, "--course-dir", root / "course", cwd=root, check=False)
    err = _one_line_error(proc)
    assert ("is a folder" if "folder" in case else "cannot create") in err
    assert "grading" not in proc.stderr.replace(err, "")  # no progress bar: nothing was graded
    assert not (root / "course" / "gradebook.db").exists() and not (root / "course" / "submitted").exists()
    assert (root / "plain_file").read_text() == "not a folder"


def test_submissions_inside_the_course_dir_are_refused_untouched(one_student):
    """Collecting empties <course dir>/submitted/<student>/<assignment>/: grading that very folder would delete
    each notebook before reading it."""
    root = one_student
    inside = root / "course" / "submitted"
    shutil.copytree(root / "subs", inside)
    before = {p: p.read_bytes() for p in inside.rglob("*.ipynb")}
    proc = autograder("grade", inside, "--out", root / "g.csv", "--course-dir", root / "course", cwd=root, check=False)
    assert "inside the course dir" in _one_line_error(proc)
    assert before and {p: p.read_bytes() for p in inside.rglob("*.ipynb")} == before


# --- a copy of the package, to break its config or its exercises without touching the real ones ---------

@pytest.fixture
def package_copy(course_copy):
    """autograder/ + solutions/ + exercises/ copied to a scratch folder; `python -m autograder` run from
    there imports the copy (the working directory comes first on sys.path)."""
    shutil.copytree(REPO / "autograder", course_copy / "autograder",
                    ignore=shutil.ignore_patterns("course", "__pycache__"))
    proc = run(sys.executable, "-c", "import autograder; print(autograder.__file__)", cwd=course_copy)
    assert proc.stdout.strip() == str(course_copy / "autograder" / "__init__.py"), "the copy is not imported"
    _write(course_copy / "subs", "alice", _correct())
    return course_copy


@pytest.mark.parametrize("breakage", ["raise ValueError('typo in the config')", "c.Execute.timeout = = 5"])
def test_cli_refuses_a_broken_config(package_copy, breakage):
    config = package_copy / "autograder" / "nbgrader_config.py"
    config.write_text(config.read_text() + f"\n{breakage}\n")
    released = (package_copy / "exercises" / ASSIGNMENT / f"{NOTEBOOK}.ipynb").read_bytes()
    for command in (["release", ASSIGNMENT], ["grade", package_copy / "subs", "--out", package_copy / "g.csv"]):
        proc = autograder(*command, cwd=package_copy, check=False)
        err = _one_line_error(proc)
        assert f"nbgrader config {config} failed to load" in err
        assert ("ValueError: typo in the config" if "typo" in breakage else "SyntaxError") in err
    assert (package_copy / "exercises" / ASSIGNMENT / f"{NOTEBOOK}.ipynb").read_bytes() == released
    assert not (package_copy / "g.csv").exists() and not (package_copy / "autograder" / "course").exists()


def test_unreleased_assignment_is_a_one_line_error(package_copy):
    shutil.rmtree(package_copy / "exercises" / ASSIGNMENT)
    proc = autograder("grade", package_copy / "subs", "--out", package_copy / "g.csv", cwd=package_copy,
                      check=False)
    err = _one_line_error(proc)
    assert f"assignment {ASSIGNMENT} has not been released" in err
    assert f"run `python -m autograder release {ASSIGNMENT}` first" in err
    assert not (package_copy / "autograder" / "course").exists()


# --- the leak detector -----------------------------------------------------------------------------------

def test_leak_detector_ignores_trailing_comments():
    src = SOLUTIONS / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    secrets = secret_lines(src)
    line = "advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-8)"
    assert line + "          # (N,) eq-advantage, ddof=0" in visible_text(src)  # as the solution writes it
    for copy in (line, line + "  # my own remark", "    " + line):
        assert leaked(secrets, copy) == [line], copy
    assert without_comments('s = "a # b"  # why\nt = 1 # x') == ['s = "a # b"  ', "t = 1 "]
    assert without_comments('x = f(  # open\n  "#no"') == ["x = f( ", '  "#no"']  # does not tokenize


def test_leak_detector_leaves_out_generic_and_deliberately_public_lines():
    every = {s for p in SOLUTIONS.glob("*/*.ipynb") for s in secret_lines(p)}
    for generic in ("super().__init__()", "for t in range(T):", "return k1, k2, k3"):
        assert generic not in every
    # The capstone's Part 0 answer cell holds chapter 3's RewardModel whole; its class line is released on
    # purpose, in chapter 3's stub. (Hints no longer spell out answer lines: tests/test_notebooks.py.)
    assert "class RewardModel(nn.Module):" not in secret_lines(SOLUTIONS / "capstone/capstone.ipynb")
    assert "logr = ref_log_probs - log_probs" in secret_lines(SOLUTIONS / "rlhf_ppo/rlhf_ppo.ipynb")


def test_book_chapters_show_no_hidden_test_line():
    # The rule (notebook_text.secret_lines): chapters may show solution code, never hidden tests.
    hidden = [s for p in SOLUTIONS.glob("*/*.ipynb") for s in hidden_test_lines(p)]
    assert len(hidden) > 100
    line = "advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-8)"
    assert line in (REPO / "book" / "rlhf_update_rules.md").read_text() and line not in hidden
    for page in sorted((REPO / "book").rglob("*.md")):
        assert leaked(hidden, page.read_text()) == [], page


def test_nbgrader_collects_timestamp_and_secret_are_kept_byte_for_byte(tmp_path):
    """`nbgrader release_feedback` names the handed-out page by a hash of timestamp.txt and submission_secret.txt,
    which the student's fetch_feedback recomputes from its own copies: they must reach nbgrader unchanged.
    A time nbgrader cannot parse would make it refuse the submission: left out, with a warning."""
    from autograder.grading import Row, _copy_exchange_files

    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir(), dest.mkdir()
    (src / "timestamp.txt").write_bytes(b"2026-12-01 10:00:00.000000 UTC")          # as nbgrader submit writes it
    (src / "submission_secret.txt").write_bytes(b"e3b0c44298fc")
    row = Row("ann", "ppo", max_score=1.0)
    _copy_exchange_files(src, dest, row)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {p.name: p.read_bytes() for p in src.iterdir()}
    assert row.status == "ok"
    (src / "timestamp.txt").write_text("yesterday-ish")
    (dest / "timestamp.txt").unlink()
    _copy_exchange_files(src, dest, row)
    assert not (dest / "timestamp.txt").exists() and row.status == "warning" and "timestamp.txt" in row.as_dict()["message"]


def test_a_download_of_one_assignment_with_notebooks_in_each_student_folder(tmp_path):
    """Moodle unzips one assignment into a folder per student holding the notebook itself: graded with
    --assignment NAME; without it, the one-line error says to name it."""
    subs = tmp_path / "subs"
    (subs / "ann").mkdir(parents=True)
    nbformat.write(_correct(), subs / "ann" / f"{NOTEBOOK}.ipynb")
    (subs / "bo").mkdir()
    nbformat.write(stub(ASSIGNMENT, NOTEBOOK), subs / "bo" / f"{NOTEBOOK}.ipynb")
    proc = autograder("grade", subs, "--out", tmp_path / "g.csv", "--course-dir", tmp_path / "course", cwd=tmp_path,
                      check=False)
    assert "--assignment NAME" in _one_line_error(proc)
    autograder("grade", subs, "--assignment", ASSIGNMENT, "--out", tmp_path / "g.csv", "--course-dir",
               tmp_path / "course", "--jobs", "1", "--quiet", cwd=tmp_path)
    rows = read_grades(tmp_path / "g.csv")
    assert (float(rows["ann"]["score"]), float(rows["bo"]["score"])) == (FULL, 0.0), rows
