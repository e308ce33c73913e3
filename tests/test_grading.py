"""End to end: `python -m autograder grade` on a synthetic class, with a real SQLite gradebook."""
import csv
import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

from autograder import SOLUTIONS, load_config
from autograder.course import ConfigNotLoaded
from conftest import REPO, autograder, read_grades, run
from notebook_text import hidden_test_lines, leaked, visible_text
from synthetic_class import (class_modules, load_class, make_bad_files_class, make_combined_wrong_class, make_wrong_class,
                             micro_run_cells, solution_bodies, stub, write_submission)

ASSIGNMENT = NOTEBOOK = "rlhf_update_rules"

TIMEOUT = 5  # seconds per cell: the infinite loop costs this once per Part B test cell


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the synthetic class once, from a working directory outside the repository."""
    root = tmp_path_factory.mktemp("class")
    expect = make_bad_files_class(root / "submissions")
    proc = autograder("grade", root / "submissions", "--out", root / "out/grades.csv",
                      "--course-dir", root / "course", "--timeout", TIMEOUT, cwd=root)
    rows = read_grades(root / "out/grades.csv")
    return root, expect, rows, proc


def test_one_row_per_student_with_the_lms_columns(graded):
    root, expect, rows, _ = graded
    assert set(rows) == set(expect)
    header = (root / "out/grades.csv").read_text().splitlines()[0]
    assert header == "student_id,assignment,score,max_score,status,message"
    assert all(r["assignment"] == ASSIGNMENT and float(r["max_score"]) == 15 for r in rows.values())


def _check(expect, rows):
    wrong = []
    for student, want in expect.items():
        row, score = rows[student], float(rows[student]["score"])
        if "score" in want and score != want["score"]:
            wrong.append(f"{student}: score {score}, expected {want['score']} ({row['message']})")
        if "below" in want and not score < want["below"]:
            wrong.append(f"{student}: {score} points, the full {want['below']} for a wrong implementation")
        if "status" in want and row["status"] != want["status"]:
            wrong.append(f"{student}: status {row['status']}, expected {want['status']} ({row['message']})")
        if "message" in want and want["message"] not in row["message"]:
            wrong.append(f"{student}: message {row['message']!r} lacks {want['message']!r}")
        lost = re.findall(r"(\w+) \([\d.]+/[\d.]+\)", row["message"].split("lost points in", 1)[-1]) \
            if "lost points in" in row["message"] else []
        wrong += _points_policy(student, want, set(lost))
    assert not wrong, "\n".join(wrong)


def _points_policy(student: str, want: dict, lost: set[str]) -> list[str]:
    """What is wrong with the test cells a student lost: each mistake must cost points in its own function's
    test cells (`lose_in`); and, the policy each notebook states, a mistake costs points in its own
    function's tests, in those of a function whose answer calls it, and in micro-runs, never in another
    function's tests (`may_lose_in`)."""
    wrong = [f"{student}: mistake {mistake} lost no points in its own test cells {cells} (lost: {sorted(lost)})"
             for mistake, cells in want.get("lose_in", {}).items() if not set(cells) & lost]
    if "may_lose_in" in want and lost - want["may_lose_in"]:
        wrong.append(f"{student}: lost points in {sorted(lost - want['may_lose_in'])}, the tests of functions it "
                     "has no mistake in")
    return wrong


def test_scores_and_messages(graded):
    _, expect, rows, _ = graded
    _check(expect, rows)


@pytest.mark.parametrize("assignment", class_modules())
def test_at_least_four_wrong_implementations_per_function(assignment):
    module = load_class(assignment)
    per_cell = {gid: 0 for gid in solution_bodies(assignment, getattr(module, "NOTEBOOK", assignment))}
    for cell, *_ in module.WRONG.values():
        per_cell[cell] += 1
    for gid in getattr(module, "FUNCTIONS", per_cell):
        assert per_cell[gid] >= 4, f"{assignment}: only {per_cell[gid]} wrong implementations of {gid}"
    if assignment == "rlhf_update_rules":
        assert "pg_identical_branches" in module.WRONG


CHAPTERS = [a for a in class_modules() if a != "rlhf_update_rules"]


# Each chapter's class: the correct student, the stub, and students who each carry one mistake per graded
# function (make_combined_wrong_class). Every one of them runs against the solution's test cells, hidden
# tests included, in tests/mistakes.py (a fork per student of one process per chapter); the correct student,
# the stub and the first student with mistakes are also graded end to end by `grade` (in beyond_ppo the first
# two: between them they hold the four mistakes issue 12 names, the overflowing sigmoid among them).
GRADED = ("correct", "stub", "mix00")
GRADED_MORE = {"beyond_ppo": ("mix01",)}


def _graded(assignment: str, student: str) -> bool:
    return student.split("_")[0] in GRADED + GRADED_MORE.get(assignment, ())


@pytest.fixture(scope="module")
def chapter_students(tmp_path_factory):
    """Every chapter's class written once: (folder, {assignment: {student: expectations}})."""
    root = tmp_path_factory.mktemp("chapter-students")
    return root, {assignment: make_combined_wrong_class(root / assignment, assignment) for assignment in CHAPTERS}


@pytest.fixture(scope="module")
def chapter_classes(chapter_students, tmp_path_factory):
    """The GRADED students of every chapter, graded in ONE run with `grade --jobs 2`.

    Each correct student's notebook runs real training micro-runs. One run for all chapters keeps both cores
    busy to the end (the slowest notebooks, the capstone's, go first) and pays grading's start-up once. Two
    workers use both cores (the sandbox gives each kernel one torch thread: two kernels with two spinning
    threads each on two cores run several times slower). Student ids are `<assignment>.<student>`; each
    hands in one assignment, so the others are "missing" rows, not graded.
    """
    built, everyone = chapter_students
    root = tmp_path_factory.mktemp("chapters")
    (root / "submissions").mkdir()
    expects = {}
    for assignment in CHAPTERS:
        graded = [s for s in everyone[assignment] if _graded(assignment, s)]
        for student in graded:
            shutil.copytree(built / assignment / student, root / "submissions" / f"{assignment}.{student}")
        expects[assignment] = {f"{assignment}.{s}": everyone[assignment][s] for s in graded}
    proc = autograder("grade", root / "submissions", "--out", root / "grades.csv", "--course-dir", root / "course",
                      "--jobs", 2, "--quiet", cwd=root, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(root / "grades.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["student_id"].startswith(r["assignment"] + ".")]
    return expects, {a: {r["student_id"]: r for r in rows if r["assignment"] == a} for a in CHAPTERS}


@pytest.mark.parametrize("assignment", CHAPTERS)
def test_wrong_implementations_lose_points(assignment, chapter_classes):
    # rlhf_update_rules' wrong students are graded one mistake each in the `graded` fixture above, with
    # the bad files. Here, end to end: the correct student gets full marks, the stub 0, and each mistake of
    # the first student with mistakes costs points in its own function's test cells.
    expects, rows = chapter_classes
    expect, rows = expects[assignment], rows[assignment]
    assert set(rows) == set(expect) and len(expect) == len(GRADED) + len(GRADED_MORE.get(assignment, ()))
    _check(expect, rows)
    if assignment == "beyond_ppo":
        named = {"rloo_includes_self", "group_population_std", "dpo_ref_signs_swapped", "dpo_naive_sigmoid"}
        assert named <= {m for want in expect.values() for m in want.get("lose_in", {})}, "issue 12's examples"


@pytest.fixture(scope="module")
def chapter_mistakes(chapter_students):
    """{assignment: {student: {grade_id: "" or why it failed}}}: tests/mistakes.py on every chapter's class
    (the stub left out, the micro-runs not run), one process per chapter, two at a time, largest first."""
    from concurrent.futures import ThreadPoolExecutor

    built, everyone = chapter_students
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}

    def check(assignment):
        notebook = getattr(load_class(assignment), "NOTEBOOK", assignment)
        micro_runs = micro_run_cells(assignment, notebook)
        students = [s for s in everyone[assignment] if s != "stub"]
        argv = [sys.executable, REPO / "tests/mistakes.py", assignment, notebook, built / assignment, *students,
                *(["--skip", *micro_runs] if micro_runs else [])]
        proc = subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=900, env=env)
        assert proc.returncode == 0, f"{assignment}: {proc.stderr[-4000:]}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    order = sorted(CHAPTERS, key=lambda a: -len(everyone[a]))
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(order, pool.map(check, order)))


@pytest.mark.parametrize("assignment", CHAPTERS)
def test_every_mistake_fails_its_own_test_cells(assignment, chapter_students, chapter_mistakes):
    _, everyone = chapter_students
    expect, results = everyone[assignment], chapter_mistakes[assignment]
    n_mistakes = sum(len(want.get("lose_in", {})) for want in expect.values())
    assert n_mistakes == len(load_class(assignment).WRONG), "every listed mistake is handed in"
    assert set(results) == set(expect) - {"stub"}
    # the control: the solution passes every test cell run this way, so a failure below is the mistake's
    assert not {g: why for g, why in results["correct"].items() if why}, results["correct"]
    wrong = []
    for student, want in expect.items():
        if "lose_in" not in want:
            continue
        assert "__error__" not in results[student], f"{student}: {results[student]['__error__']}"
        wrong += _points_policy(student, want, {g for g, why in results[student].items() if why})
    assert not wrong, "\n".join(wrong)


def test_real_sqlite_gradebook(graded):
    root, expect, rows, _ = graded
    with sqlite3.connect(root / "course/gradebook.db") as db:
        students = {s for (s,) in db.execute("SELECT id FROM student")}
        n_graded = db.execute("SELECT COUNT(*) FROM submitted_assignment").fetchone()[0]
    submitted = {s for s, r in rows.items() if r["status"] not in ("invalid", "missing")}
    assert submitted <= students and n_graded == len(submitted)


def test_feedback_for_every_graded_student_without_hidden_tests(graded):
    root, _, rows, _ = graded
    secrets = hidden_test_lines(SOLUTIONS / ASSIGNMENT / f"{NOTEBOOK}.ipynb")
    assert len(secrets) > 20
    for student, row in rows.items():
        html = root / "out/feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html"
        if row["status"] in ("invalid", "missing"):
            assert not html.exists()
            continue
        assert html.exists(), f"no feedback for {student}"
        text = visible_text(html)
        assert leaked(secrets, text) == [], f"feedback of {student} shows hidden tests"
    # The feedback shows what a failing hidden test says, not its code.
    text = visible_text(root / "out/feedback/pg_sample_std" / ASSIGNMENT / f"{NOTEBOOK}.html")
    assert "AssertionError" in text


def _feedback_html(root, student):
    return root / "out/feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html"


def _toc(html_path) -> dict[str, str]:
    """grade_id -> the text of its line in the feedback's table of contents (whitespace squashed)."""
    raw = html_path.read_text(encoding="utf-8")
    toc = re.search(r'<div id="toc">(.*?)</div>', raw, flags=re.DOTALL).group(1)
    items = [re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", li))).strip()
             for li in re.findall(r"<li>(.*?)</li>", toc, flags=re.DOTALL)]
    return {item.split(" ")[0]: item for item in items if item != "Comment"}     # graders' comments: none here


def _test_cells_of_the_solution() -> dict[str, tuple[str, str]]:
    """grade_id -> (first line of its docstring, its source), read from solutions/ (the oracle)."""
    import ast

    import nbformat

    nb = nbformat.read(SOLUTIONS / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: (ast.get_docstring(ast.parse(c.source)).splitlines()[0], c.source)
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"}


def test_feedback_names_every_test_cell_by_id_and_docstring(graded):
    root = graded[0]
    cells = _test_cells_of_the_solution()
    toc = _toc(_feedback_html(root, "correct"))
    assert set(toc) == set(cells), toc
    for gid, (title, _) in cells.items():
        assert toc[gid].startswith(f"{gid} — {title} (Score: 3.0 / 3.0) passed"), toc[gid]
    raw = _feedback_html(root, "correct").read_text(encoding="utf-8")
    assert "Test cell" not in raw                      # nbgrader's own name for every one of them
    assert raw.count('class="test-status status-passed"') == len(cells)      # and in each cell's heading


def test_feedback_marks_hidden_test_failures_with_their_message_only(graded):
    root = graded[0]
    cells = _test_cells_of_the_solution()
    hidden = "beta = 0: the step is the product of means"     # the oracle: where each message stands
    visible = "the product of means, mean(r) * mean_i grad_i"
    invariants, values = cells["test_rlhf_weight_update_invariants"][1], cells["test_rlhf_weight_update_values"][1]
    assert hidden in invariants.split("### BEGIN HIDDEN TESTS")[1] and visible in values.split("### BEGIN HIDDEN")[0]
    toc = _toc(_feedback_html(root, "w_mean_of_means"))
    assert f"a hidden test failed: AssertionError: {hidden}" in toc["test_rlhf_weight_update_invariants"]
    assert "a visible test failed: AssertionError: rewards [2, 0]" in toc["test_rlhf_weight_update_values"]
    text = visible_text(_feedback_html(root, "w_mean_of_means"))
    assert text.count(f"a hidden test failed: AssertionError: {hidden}") == 2    # contents and the cell's heading


def test_feedback_says_which_failure_to_fix_first_instead_of_follow_on_tracebacks(graded):
    root = graded[0]
    # "raises": Part A's answer cell raises before defining rlhf_weight_update; both Part A tests then
    # meet a NameError that only follows from it.
    toc = _toc(_feedback_html(root, "raises"))
    for gid in ("test_rlhf_weight_update_values", "test_rlhf_weight_update_invariants"):
        assert ("(Score: 0.0 / 3.0) not run to the end: it uses rlhf_weight_update, which the cell "
                "rlhf_weight_update above should define, but that cell failed (RuntimeError: oops)") in toc[gid]
    text = visible_text(_feedback_html(root, "raises"))
    assert "RuntimeError: oops" in text and "NameError" not in text
    stub_toc = _toc(_feedback_html(root, "stub"))         # the stub's own failures are not follow-ons
    assert all(line.endswith("failed: NotImplementedError") for line in stub_toc.values()), stub_toc


def test_feedback_loads_mathjax_from_beside_the_html_and_nothing_from_the_network(graded):
    root, _, rows, _ = graded
    pages = [_feedback_html(root, s) for s in rows if _feedback_html(root, s).exists()]
    assert len(pages) > 10
    for page in pages:
        raw = page.read_text(encoding="utf-8")
        sources = re.findall(r"""<(?:script|img|link|iframe)\b[^>]*\b(?:src|href)=["']([^"']*)""", raw)
        assert sources == ["mathjax/tex-mml-chtml.js"], (page, sources)
        assert (page.parent / sources[0]).is_file() and (page.parent / "mathjax/LICENSE").is_file()
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", raw), page          # no CSS from the network
        assert "cdn." not in raw.lower() and "x-mathjax-config" not in raw


def test_feedback_formulas_render_offline_opened_from_disk(graded):
    from browser import Browser

    page = _feedback_html(graded[0], "w_mean_of_means")
    with Browser() as browser:              # in a network namespace with no network, where it can make one
        tab = browser.new_tab()
        load = tab.load(page.as_uri(), ready="window.MathJax.startup.promise", timeout=60)
        typeset = tab.evaluate("document.querySelectorAll('mjx-container').length")
        raw_tex = tab.evaluate("document.body.innerText.includes('\\\\mathrm{KL}')")
    assert not load.failed and not load.external and not load.console_errors, load
    assert typeset >= 20 and raw_tex is False        # every formula typeset, none left as LaTeX source


def test_inline_mathjax_makes_a_lone_feedback_page_render_its_formulas(graded, tmp_path):
    # nbgrader's release_feedback hands out the .html alone, without the mathjax/ folder beside it: after
    # `inline-mathjax` the page, copied to a folder of its own, typesets every formula offline, from disk
    from browser import Browser

    page = _feedback_html(graded[0], "w_mean_of_means")
    lone = tmp_path / "exchange" / page.name
    lone.parent.mkdir()
    shutil.copy(page, lone)
    assert "1 page(s) now carry MathJax" in autograder("inline-mathjax", lone.parent).stdout
    assert "0 page(s) now carry MathJax, 1 already did" in autograder("inline-mathjax", lone.parent).stdout
    raw = lone.read_text(encoding="utf-8")
    assert re.findall(r"""<(?:script|img|link|iframe)\b[^>]*\b(?:src|href)=""", raw) == []   # loads no file
    assert 0.5e6 < lone.stat().st_size - page.stat().st_size < 1.1e6
    ready = ("new Promise(done => { const wait = setInterval(() => { const s = window.MathJax.startup; "
             "if (s && s.promise) { clearInterval(wait); s.promise.then(done); } }, 50); })")
    with Browser() as browser:              # in a network namespace with no network, where it can make one
        tab = browser.new_tab()
        load = tab.load(lone.as_uri(), ready=ready, timeout=60)
        typeset = tab.evaluate("document.querySelectorAll('mjx-container svg').length")
        raw_tex = tab.evaluate("document.body.innerText.includes('\\\\mathrm{KL}')")
    assert not load.failed and not load.external and not load.console_errors, load
    assert typeset >= 20 and raw_tex is False
    # what is not a feedback page of the course is refused, with a one-line reason, and left as it was
    other = tmp_path / "other" / "page.html"
    other.parent.mkdir()
    other.write_text("<html><body>$x$</body></html>")
    proc = autograder("inline-mathjax", other.parent, check=False)
    assert proc.returncode == 2 and "not a feedback page" in proc.stderr and "page.html" in proc.stderr
    assert other.read_text() == "<html><body>$x$</body></html>"
    proc = autograder("inline-mathjax", tmp_path / "nowhere", check=False)
    assert proc.returncode == 2 and "no such folder" in proc.stderr


def test_summary_and_no_progress_bar_in_a_log(graded):
    _, _, _, proc = graded
    assert "correct" in proc.stdout and "15/15" in proc.stdout
    assert "submission/s" not in proc.stderr and "%|" not in proc.stderr   # stderr was a pipe: no bar


def test_progress_bar_with_eta_on_a_terminal(tmp_path):
    import pty

    write_submission(tmp_path / "subs", "s1", ASSIGNMENT, NOTEBOOK, stub(ASSIGNMENT, NOTEBOOK))
    write_submission(tmp_path / "subs", "s2", ASSIGNMENT, NOTEBOOK, stub(ASSIGNMENT, NOTEBOOK))
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))   # a 160-column terminal
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", tmp_path / "subs", "--out",
                           tmp_path / "g.csv", "--course-dir", tmp_path / "course", "--jobs", "2"],
                          stderr=follower, stdout=subprocess.PIPE, text=True, cwd=tmp_path, timeout=600)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0
    assert "grading: 100%" in text and "2/2" in text, text[-500:]
    assert "submission/s" in text or "s/submission" in text, text[-500:]          # the rate, and the ETA:
    assert "<" in text.split("grading:")[1], text[-500:]                           # [elapsed<remaining]


def test_report_pass_rates_failures_histogram_and_lms_files(graded, tmp_path):
    root, _, rows, _ = graded
    proc = autograder("report", root / "out/grades.csv", "--course-dir", root / "course", "--out-dir",
                      tmp_path / "rep", "--format", "canvas", cwd=root)
    text = (tmp_path / "rep/report.md").read_text()
    assert f"## {ASSIGNMENT}" in text and (tmp_path / f"rep/{ASSIGNMENT}_scores.png").stat().st_size > 5000
    # one table row per test cell of the notebook; the pass rate of the sample-std student's cell
    graded_rows = [r for r in rows.values() if r["status"] in ("ok", "warning")]
    table = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert len(table) == len({c for c in re.findall(r"\| `(\w+)` \|", text)}) >= 5
    lost = {}
    for r in graded_rows:
        for cell in re.findall(r"(\w+) \([\d.]+/[\d.]+\)", r["message"].split("lost points in", 1)[-1]) \
                if "lost points in" in r["message"] else []:
            lost[cell] = lost.get(cell, 0) + 1
    for cell, n in lost.items():     # the report's counts agree with the CSV's messages
        [line] = [ln for ln in table if ln.startswith(f"| `{cell}` |")]
        assert f"| {len(graded_rows) - n}/{len(graded_rows)} |" in line, (cell, line)
    assert "AssertionError" in text, "the most common failure messages are listed"
    with open(tmp_path / "rep/grades_canvas.csv", newline="") as f:
        canvas = list(csv.reader(f))
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", ASSIGNMENT]
    assert canvas[1][0].strip() == "Points Possible" and canvas[1][-1] == "15"
    assert {r[2]: r[-1] for r in canvas[2:]} == {s: "" if r["status"] == "missing" else r["score"]
                                                 for s, r in rows.items()}
    moodle = autograder("report", root / "out/grades.csv", "--course-dir", root / "course", "--out-dir",
                        tmp_path / "rep", "--format", "moodle", cwd=root)
    assert "report.md" in moodle.stdout and "report.md" in proc.stdout
    assert (tmp_path / "rep/grades_moodle.csv").read_text().splitlines()[0] == f"ID number,{ASSIGNMENT}"


def test_lms_files_leave_a_missing_submission_blank(tmp_path):
    """A 0 imported into an LMS overwrites what an instructor entered by hand (a late notebook, say): only a
    graded submission gets a number; an unreadable notebook is graded, and scores 0."""
    from autograder.report import lms_csv

    rows = [dict(student_id=s, assignment="ppo", score=score, max_score="15", status=status, message="")
            for s, score, status in (("ann", "12", "ok"), ("bo", "0", "missing"), ("cy", "0", "invalid"))]
    for fmt, column in (("canvas", 2), ("moodle", 0)):
        lms_csv(rows, fmt, tmp_path / f"{fmt}.csv")
        with open(tmp_path / f"{fmt}.csv", newline="") as f:
            got = {r[column]: r[-1] for r in csv.reader(f) if r[column] in ("ann", "bo", "cy")}
        assert got == {"ann": "12", "bo": "", "cy": "0"}, (fmt, got)


def test_report_leaves_out_results_of_another_run(tmp_path, capsys):
    """`report` with another run's --course-dir: a saved result whose score is not the CSV's is another run's;
    its cells would describe a submission the CSV does not grade, so they are left out, with a warning."""
    from autograder.grading import CSV_FIELDS, write_csv
    from autograder.report import report

    rows = [dict(zip(CSV_FIELDS, (s, "ppo", score, "15", "ok", ""))) for s, score in (("ann", "15"), ("bo", "6"))]
    write_csv(tmp_path / "grades.csv", rows)
    for student, score, passed in (("ann", "15", 3.0), ("bo", "15", 3.0)):     # bo's is another run's (15, not 6)
        path = tmp_path / "course" / "results" / student / "ppo.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"key": "k", "row": dict(zip(CSV_FIELDS, (student, "ppo", score, "15", "ok", ""))),
                                    "cells": [{"cell": "test_a", "score": passed, "max_score": 3.0}]}))
    text = report(tmp_path / "grades.csv", course_dir=tmp_path / "course").read_text()
    assert "bo/ppo" in capsys.readouterr().err and "**Warning:**" in text
    assert "| `test_a` | 3 | 1/1 | 100% |" in text, text


def test_a_run_keeps_the_csv_rows_of_assignments_it_does_not_grade(tmp_path):
    from autograder.grading import CSV_FIELDS, _other_assignments_rows, write_csv

    out = tmp_path / "grades.csv"
    assert _other_assignments_rows(out, ["ppo"]) == []                      # no file yet
    rows = [dict(zip(CSV_FIELDS, (s, a, "1", "2", "ok", ""))) for s in ("ann", "bo") for a in ("ppo", "capstone")]
    write_csv(out, rows)
    assert _other_assignments_rows(out, ["ppo"]) == [r for r in rows if r["assignment"] == "capstone"]
    out.write_text("name,mark\nann,3\n")                                   # not a grades CSV: nothing kept
    assert _other_assignments_rows(out, ["ppo"]) == []


def test_report_of_a_file_that_is_not_a_grades_csv_is_a_one_line_error(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    proc = autograder("report", tmp_path / "x.csv", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_missing_submissions_folder_is_a_one_line_error(tmp_path):
    proc = autograder("grade", tmp_path / "nope", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_empty_submissions_folder_is_an_error(tmp_path):
    (tmp_path / "subs").mkdir()
    proc = autograder("grade", tmp_path / "subs", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "no <student_id>/ folders" in proc.stderr


def test_broken_config_fails_loudly(tmp_path):
    bad = tmp_path / "nbgrader_config.py"
    bad.write_text("c = get_config()\nc.CourseDirectory.course_id = 'rlhf-course'\nraise ValueError('typo')\n")
    with pytest.raises(ConfigNotLoaded, match="typo"):
        load_config(bad)
    other = tmp_path / "other" / "nbgrader_config.py"
    other.parent.mkdir()
    other.write_text("c = get_config()\n")
    with pytest.raises(ConfigNotLoaded, match="course_id"):
        load_config(other)


def test_config_paths_do_not_depend_on_the_working_directory(tmp_path):
    proc = run(sys.executable, "-c", "from autograder import load_config; c = load_config(); "
               "print(c.CourseDirectory.root); print(c.Execute.timeout)", cwd=tmp_path)
    root, timeout = proc.stdout.split()
    assert root == str(REPO) and int(timeout) > 0


def test_regrading_into_the_same_gradebook_replaces_scores(tmp_path):
    # Week 2: the same gradebook, a resubmission. No stale-tests warning, new score replaces the old.
    make_wrong_class(tmp_path / "all", ASSIGNMENT)
    for student, keep in (("correct", "correct"), ("stub", "correct")):
        subs = tmp_path / f"run_{student}"
        (subs / keep).parent.mkdir(parents=True)
        shutil.copytree(tmp_path / "all" / student, subs / keep)
        proc = autograder("grade", subs, "--out", tmp_path / "g.csv", "--course-dir", tmp_path / "course",
                          "--quiet", cwd=tmp_path)
        assert "older version" not in proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "g.csv")))
    assert [(r["student_id"], r["score"]) for r in rows] == [("correct", "0")]
    with sqlite3.connect(tmp_path / "course/gradebook.db") as db:
        assert db.execute("SELECT COUNT(*) FROM submitted_assignment").fetchone()[0] == 1


def test_by_default_only_submitted_assignments_are_graded(tmp_path):
    # Week 1's LMS download holds one assignment: no "missing" rows for the others. A student who
    # handed in nothing while classmates did gets a "missing" row.
    make_wrong_class(tmp_path / "all", ASSIGNMENT)
    subs = tmp_path / "subs"
    shutil.copytree(tmp_path / "all" / "correct", subs / "correct")
    (subs / "absent").mkdir()
    autograder("grade", subs, "--out", tmp_path / "g.csv", "--course-dir", tmp_path / "course", "--quiet",
               cwd=tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "g.csv")))
    assert [(r["student_id"], r["assignment"], r["status"]) for r in rows] == [
        ("absent", ASSIGNMENT, "missing"), ("correct", ASSIGNMENT, "ok")]
    assert float(rows[1]["score"]) == 15


def test_the_tiny_lm_is_built_before_grading_the_chapters_that_use_it(tmp_path, monkeypatch, capsys):
    # A cold build inside a graded cell would hit the per-cell timeout (120 s) for the whole class.
    from autograder.grading import _warm_caches
    from rlhf_course.tiny_lm import tiny_lm_dir

    cached = tiny_lm_dir()
    assert (cached / "build_info.json").exists(), "make test builds the tiny LM first (make models)"
    shutil.copytree(cached, tmp_path / cached.name)
    monkeypatch.setenv("RLHF_COURSE_CACHE", str(tmp_path))
    _warm_caches(["policy_gradient"], progress=True)
    assert capsys.readouterr().err == ""                       # no model needed, none loaded
    _warm_caches(["rlhf_ppo"], progress=True)
    assert f"loaded from {tmp_path}" in capsys.readouterr().err
