"""A grading run killed at any moment loses nothing already graded; --resume finishes it; regrading
gives the same CSV byte for byte."""
import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO, read_grades
from synthetic_class import fill, solution_bodies, stub, write_submission

ASSIGNMENT = NOTEBOOK = "rlhf_update_rules"


def _class(root):
    subs = root / "submissions"
    correct = fill(stub(ASSIGNMENT, NOTEBOOK), solution_bodies(ASSIGNMENT, NOTEBOOK))
    for student in ("ada", "bob", "cy"):
        write_submission(subs, student, ASSIGNMENT, NOTEBOOK, correct)
    write_submission(subs, "dee", ASSIGNMENT, NOTEBOOK, stub(ASSIGNMENT, NOTEBOOK))
    return subs


def _grade_cmd(subs, root, *extra):
    return [sys.executable, "-m", "autograder", "grade", str(subs), "--out", str(root / "grades.csv"),
            "--course-dir", str(root / "course"), "--timeout", "30", *extra]


def test_a_killed_run_resumes_and_matches_a_clean_run(tmp_path):
    subs = _class(tmp_path)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    results = killed / "course" / "results"
    # kill -9 the whole run (grader and kernel) as soon as the first submission is saved: the moment a
    # power loss could come at; the second submission is then being graded
    proc = subprocess.Popen(_grade_cmd(subs, killed, "--quiet"), cwd=REPO, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not list(results.rglob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted(p.parent.name for p in results.rglob("*.json"))
    assert 1 <= len(saved) < 4, saved
    for path in results.rglob("*.json"):                       # whole rows only, never a half-written one
        assert set(json.loads(path.read_text())["row"]) >= {"student_id", "score", "status"}
    assert not (killed / "grades.csv").exists()

    resumed = subprocess.run(_grade_cmd(subs, killed, "--resume"), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed: {len(saved)} of 4 rows were graded by an earlier run" in resumed.stdout
    fresh = subprocess.run(_grade_cmd(subs, clean, "--quiet"), cwd=REPO, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert (killed / "grades.csv").read_bytes() == (clean / "grades.csv").read_bytes()
    rows = read_grades(clean / "grades.csv")
    assert [float(rows[s]["score"]) for s in ("ada", "bob", "cy", "dee")] == [15.0, 15.0, 15.0, 0.0]

    # a changed submission is graded again under --resume; the others are not
    write_submission(subs, "dee", ASSIGNMENT, NOTEBOOK,
                     fill(stub(ASSIGNMENT, NOTEBOOK), solution_bodies(ASSIGNMENT, NOTEBOOK)))
    again = subprocess.run(_grade_cmd(subs, clean, "--resume"), cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0 and "resumed: 3 of 4 rows" in again.stdout, again.stdout[-2000:]
    assert float(read_grades(clean / "grades.csv")["dee"]["score"]) == 15.0


def test_resume_reuses_a_row_only_where_its_gradebook_and_feedback_are(tmp_path):
    """A saved row's scores live in its gradebook and its page in its feedback folder: `--resume` with a new --db
    (the README's fresh start) or a new --out must grade again, or the new gradebook stays empty."""
    from autograder.grading import _submission_key

    (tmp_path / "subs" / "ann" / "ppo").mkdir(parents=True)
    (tmp_path / "subs" / "ann" / "ppo" / "ppo.ipynb").write_text("{}")
    key = lambda db, fb: _submission_key(tmp_path / "subs", "ann", "ppo", 120, True, tmp_path / db, tmp_path / fb)  # noqa: E731
    assert key("g.db", "feedback") == key("g.db", "feedback")
    assert len({key("g.db", "feedback"), key("fresh.db", "feedback"), key("g.db", "week2/feedback")}) == 3
