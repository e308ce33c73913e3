"""The student edition (`python -m autograder export-student`): no answer in it, nothing it needs missing.

The suite's one book build builds the book of a freshly exported edition (conftest.start_book_build), so
tests/test_book.py and tests/test_book_browser.py check the edition's book; this file checks the rest of it,
and that the data chapter 4's pages read instead of solutions/ is up to date.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder.edition import (FILES, PLACEHOLDER, WRITTEN, EditionError, course_files, export_student, exported,
                                student_repository)
from autograder.launch import repository
from conftest import REPO, autograder, executed_stubs, student_edition
from notebook_text import hidden_test_lines, leaked, secret_lines, visible_text

SOURCES = sorted((REPO / "solutions").glob("*/*.ipynb"))
RELEASED = sorted((REPO / "exercises").glob("*/*.ipynb"))
VENDOR = "book/_static/vendor/"          # MathJax, RequireJS, the widget manager: third-party JavaScript

# Lines of the edition that match solution lines and are shown on purpose: chapters derive an equation and
# compute it (the rule of notebook_text.secret_lines), and some lines are bookkeeping any code has. Any other
# solution line, and every hidden-test line, anywhere in the edition fails
# test_no_solution_or_hidden_test_line_in_the_edition. Keys are paths without suffix (a page and its notebook).
SHOWN_ON_PURPOSE = {
    "book/rlhf_update_rules": [
        "advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-8)",     # eq-advantage
        "unclipped = ratio * advantages",                                     # the clipped loss it differentiates
        "clipped = np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * advantages"],
    "rlhf_course/fast_gpt2": ["B, T = input_ids.shape"],                      # shape bookkeeping
}

# Files of the edition that may name solutions/, and why; they do not need it (the book builds without it).
MENTIONS = {
    "_config.yml": "exclude_patterns keep a solutions folder out of any book build",
    "rlhf_course/capstone.py": "default_answers() prefers the instructor's solution, else the learner's exercise",
    "book/capstone/data/summary.json": "records which notebook the committed capstone runs used",
    "book/beyond_ppo/data/summary.json": "records which notebooks chapter 6's committed race used",
}
SOLUTIONS_PATH = re.compile(r"""\bsolutions/|["']solutions["']""")


@pytest.fixture(scope="module")
def edition() -> Path:
    return student_edition()


@pytest.fixture(scope="module")
def secrets() -> list[str]:
    found = sorted({line for src in SOURCES for line in secret_lines(src)})
    assert len(found) > 500, "the leak check has little to look for"
    return found


def readable(folder: Path):
    """(path relative to `folder`, text a person can read) of every text file outside the vendored JavaScript."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(VENDOR):
            continue
        try:
            yield rel, visible_text(path) if path.suffix == ".ipynb" else path.read_text()
        except UnicodeDecodeError:          # images, fonts
            continue


def leaks(folder: Path, secrets: list[str]) -> dict[str, list[str]]:
    """File -> the secret lines (and nbgrader markers) it holds outside the lines SHOWN_ON_PURPOSE there."""
    found = {}
    for rel, text in readable(folder):
        for line in SHOWN_ON_PURPOSE.get(rel.rsplit(".", 1)[0], []):
            text = text.replace(line, "")
        bad = leaked(secrets, text)
        if bad:
            found[rel] = bad
    return found


# ------------------------------------------------------------------------------------------- what is in it
def test_the_edition_holds_exactly_the_listed_files(edition):
    files = {p.relative_to(edition).as_posix() for p in edition.rglob("*") if p.is_file()}
    assert files == {f for f in course_files() if exported(f)} | set(WRITTEN)
    assert not [f for f in files if re.match(r"(solutions|tests|scripts/(?!gpu_check))", f) or f.endswith(".db")]
    assert {f for f in files if f.startswith("autograder/")} == {"autograder/__init__.py", "autograder/launch.py"}
    for path in RELEASED:
        assert path.relative_to(REPO).as_posix() in files
    for rel in ("book/_ext/course_launch.py", "rlhf_course/__init__.py", "binder/requirements.txt", *FILES):
        assert rel in files, rel
    assert os.access(edition / "binder/postBuild", os.X_OK), "Binder runs postBuild only if it is executable"


def test_only_listed_paths_are_exported():
    # A file an instructor adds later stays out until the list names it.
    for path in ("solutions/ppo/ppo.ipynb", "tests/test_x.py", "autograder/grading.py", "autograder/verify.py",
                 "autograder/course/gradebook.db", "scripts/rlhf_page_data.py", "scripts/new_tool.py",
                 "notes.md", "README.md"):
        assert not exported(path), path
    for path in ("book/rlhf/data/ppo_run.json", "exercises/ppo/ppo.ipynb", "rlhf_course/ppo.py", "_config.yml",
                 "autograder/launch.py"):
        assert exported(path), path


def test_no_solution_or_hidden_test_line_in_the_edition(edition, secrets):
    # Exact lines, and comment-blind: each secret is compared without its trailing comment (secret_lines).
    assert leaks(edition, secrets) == {}


def test_the_leak_check_can_fail(tmp_path, secrets):
    hidden = hidden_test_lines(REPO / "solutions/ppo/ppo.ipynb")[0]
    solution = next(s for s in secret_lines(REPO / "solutions/rlhf_ppo/rlhf_ppo.ipynb") if s not in hidden)
    (tmp_path / "book").mkdir()
    (tmp_path / "book/page.md").write_text(f"```python\n{hidden}   # a comment of its own\n```\n")
    (tmp_path / "helper.py").write_text(f"x = 1\n{solution}\n")
    (tmp_path / "book/rlhf_update_rules.md").write_text("unclipped = ratio * advantages\n")   # shown on purpose
    found = leaks(tmp_path, secrets)
    assert set(found) == {"book/page.md", "helper.py"}
    assert hidden in found["book/page.md"] and solution in found["helper.py"]


def test_nothing_in_the_edition_names_solutions(edition):
    assert not (edition / "solutions").exists()
    named = {rel for rel, text in readable(edition) if SOLUTIONS_PATH.search(text)}
    assert named <= set(MENTIONS), f"files of the student edition that name solutions/: {sorted(named - set(MENTIONS))}"
    assert SOLUTIONS_PATH.search('path = root / "solutions" / name') and SOLUTIONS_PATH.search("`solutions/x`")


def test_every_url_names_the_edition_not_the_course(edition):
    course, ours = repository(), repository(edition / "_config.yml")
    assert ours == student_repository() and ours.url == course.url + "-student"
    instructor = re.compile(re.escape(course.url) + r"(?![\w-])|" + re.escape(course.pages_url))
    assert not [rel for rel, text in readable(edition) if instructor.search(text) or PLACEHOLDER in text]
    readme = (edition / "README.md").read_text()
    assert f"git clone {ours.url} rlhf-course" in readme and ours.pages_url in readme and "## For students" in readme
    setup = next(c for c in nbformat.read(edition / "exercises/ppo/ppo.ipynb", as_version=4).cells
                 if c.cell_type == "code")
    assert f'COURSE_URL = "{ours.url}"' in setup.source
    assert instructor.search(f"git clone {course.url}.git") and not instructor.search(f"{course.url}-student")


def test_the_course_readme_sends_students_to_the_edition():
    students = (REPO / "README.md").read_text().split("## For students", 1)[1].split("\n## ", 1)[0]
    assert f"git clone {PLACEHOLDER}" in students and "student edition" in students
    assert repository().url not in students, "students would clone the repository with the solutions"


# ------------------------------------------------------------------------------------ what students run
def test_the_edition_installs(edition, tmp_path):
    """pip builds the package from the edition (pyproject lists autograder: the edition ships launch.py)."""
    shutil.copytree(edition, tmp_path / "edition", ignore=shutil.ignore_patterns("book"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "-w", tmp_path / "wheel", tmp_path / "edition"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rlhf_course/ppo.py" in names and "autograder/launch.py" in names
    assert not [n for n in names if n.startswith("autograder/") and n not in WRITTEN + ("autograder/launch.py",)]


def test_the_edition_makefile_installs_and_builds_the_book(edition):
    dry = subprocess.run(["make", "-n", "-C", edition, "venv", "book"], capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "pip install --quiet -r requirements.txt" in dry.stdout and "jupyter-book build" in dry.stdout
    makefile = (edition / "Makefile").read_text()
    assert not re.search(r"autograder|pytest|release|validate", makefile)
    assert "autograder notebooks" not in (edition / ".github/workflows/book.yml").read_text()


def _answer_names(source: Path) -> set[str]:
    """The functions and classes a solution notebook's answer cells define (a stub leaves them undefined)."""
    cells = nbformat.read(source, as_version=4).cells
    return {name for c in cells if c.metadata.get("nbgrader", {}).get("solution")
            for name in re.findall(r"^(?:def|class)\s+(\w+)", c.source, re.M)}


def stub_problems(nb, answer_names: set[str]) -> list[str]:
    """What is wrong with an executed stub: a test cell that passed, or an error that is not the stub's doing
    (not NotImplementedError, and not about a graded name the stub leaves undefined: a missing file, say)."""
    problems, errors = [], 0
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        outputs = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if meta.get("grade") and cell.cell_type == "code" and not outputs:
            problems.append(f"{meta.get('grade_id')}: passes on the stub")
        for out in outputs:
            errors += out.ename == "NotImplementedError"
            about_an_answer = any(re.search(rf"\b{n}\b", out.evalue) for n in answer_names)
            if out.ename != "NotImplementedError" and (not about_an_answer or out.ename in (
                    "ModuleNotFoundError", "ImportError", "FileNotFoundError", "OSError", "PermissionError")):
                problems.append(f"{meta.get('grade_id', 'cell')}: {out.ename}: {out.evalue[:200]}")
    return problems + ([] if errors else ["no cell raised the stub's NotImplementedError"])


@pytest.fixture(scope="module")
def edition_stubs() -> Path:
    """The edition's exercises, executed as released by tests/edition_stubs.py (conftest runs it in the
    background from the start of the session)."""
    return executed_stubs()


def test_exercises_run_as_stubs_in_the_edition(edition, edition_stubs):
    # Their kernels import the edition's own rlhf_course (PYTHONPATH), not the instructor's installed copy.
    env = {**os.environ, "PYTHONPATH": str(edition)}
    where = subprocess.run([sys.executable, "-c", "import rlhf_course; print(rlhf_course.__file__)"], env=env,
                           cwd=edition, capture_output=True, text=True).stdout
    assert where.startswith(str(edition)), where
    problems = []
    assert sorted(p.name for p in edition_stubs.glob("*.ipynb")) == sorted(p.name for p in RELEASED)
    for released in RELEASED:
        nb = nbformat.read(edition_stubs / released.name, as_version=4)
        source = REPO / "solutions" / released.parent.name / released.name
        problems += [f"exercises/{released.parent.name}/{released.name}: {p}"
                     for p in stub_problems(nb, _answer_names(source))]
    assert not problems, "\n".join(problems)


def test_the_stub_check_can_fail():
    cell = nbformat.v4.new_code_cell("f()", metadata={"nbgrader": {"grade": True, "grade_id": "t"}})
    missing = nbformat.v4.new_output("error", ename="FileNotFoundError", evalue="../../solutions/x", traceback=[])
    cell.outputs = [missing]
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert stub_problems(nb, {"f"}) == ["t: FileNotFoundError: ../../solutions/x",
                                        "no cell raised the stub's NotImplementedError"]
    cell.outputs = [nbformat.v4.new_output("error", ename="NameError", evalue="name 'f' is not defined", traceback=[])]
    assert stub_problems(nb, {"f"}) == ["no cell raised the stub's NotImplementedError"]
    cell.outputs = []
    assert "t: passes on the stub" in stub_problems(nb, {"f"})


# ------------------------------------------------------------------------------------------- the command
def test_export_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    proc = autograder("export-student", tmp_path / "mine", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "not an empty folder" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mine"], "the export left something next to the folder"
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(EditionError, match="needs one of its own"):
        export_student(tmp_path / "new", url=repository().url)
    with pytest.raises(EditionError, match="inside the course"):
        export_student(REPO / "student-edition")


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    import autograder.edition as edition_module

    def broken(dest, edition):
        raise OSError("disk full")

    monkeypatch.setattr(edition_module, "_point_at", broken)
    with pytest.raises(OSError, match="disk full"):
        export_student(tmp_path / "edition")
    assert list(tmp_path.iterdir()) == [], "a half-written edition (or its staging folder) was left behind"


# -------------------------------------------------------------------- pages that show graded functions
def _page_data_script():
    spec = importlib.util.spec_from_file_location("rlhf_page_data", REPO / "scripts/rlhf_page_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chapter_4_page_data_is_up_to_date():
    """book/rlhf/data/ was made from the current solution: rerun scripts/rlhf_page_data.py if this fails."""
    from rlhf_course.answers import load_answers

    script = _page_data_script()
    committed = {p.stem: json.loads(p.read_text()) for p in sorted(script.OUT.glob("*.json"))}
    assert set(committed) == {"masked_stats", "adaptive_kl", "ppo_run"}
    stale = [name for name, data in committed.items() if data["answers_sha256"] != script.answers_sha256()]
    assert not stale, f"{stale}: made from an older solution; run .venv/bin/python scripts/rlhf_page_data.py"
    fns = load_answers(script.NOTEBOOK, script.GRADED)
    for name, make in (("masked_stats", script.masked_stats), ("adaptive_kl", script.adaptive_kl)):
        made = json.loads(script.dumps(make(fns)))
        assert {k: committed[name][k] for k in made} == made, f"{name}.json differs from what the script makes"
    assert len(committed["ppo_run"]["history"]) == committed["ppo_run"]["iterations"] == 10


def test_the_page_data_fingerprint_follows_the_answers(tmp_path):
    script = _page_data_script()
    nb = nbformat.read(script.NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "masked_mean")
    cell.source = cell.source.replace("np.sum(mask)", "np.sum(mask) + 1e-12")
    nbformat.write(nb, tmp_path / "changed.ipynb")
    assert script.answers_sha256(tmp_path / "changed.ipynb") != script.answers_sha256()
