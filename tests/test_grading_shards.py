"""`grade --shard K/N` and `merge`: a class graded as 3 shards merges into the CSV (byte for byte) and the
gradebook (every student, the same scores, read with nbgrader's API) of one run over the whole class; the
merge refuses, with one line, to write anything partial or mixed."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from autograder.cli import main
from autograder.grading import GradingError, grade
from autograder.shard import merge, parse, select, shard_of
from conftest import REPO, read_grades
from synthetic_class import fill, mutate, solution_bodies, stub, write_submission

ASSIGNMENT = NOTEBOOK = "rlhf_update_rules"
N = 3
# One graded student in each of the 3 shards (checked below: the shard is a hash of the id) and one who
# handed in nothing (a "missing" row), so every shard grades someone.
GRADED = ("correct", "pg_sample_std", "stub")
STUDENTS = (*GRADED, "absent")


def _make_class(subs):
    correct = solution_bodies(ASSIGNMENT, NOTEBOOK)
    sample_std = mutate(correct["rlhf_policy_gradient"], "rewards.std()", "rewards.std(ddof=1)")
    write_submission(subs, "correct", ASSIGNMENT, NOTEBOOK, fill(stub(ASSIGNMENT, NOTEBOOK), correct))
    write_submission(subs, "pg_sample_std", ASSIGNMENT, NOTEBOOK,
                     fill(stub(ASSIGNMENT, NOTEBOOK), {**correct, "rlhf_policy_gradient": sample_std}))
    write_submission(subs, "stub", ASSIGNMENT, NOTEBOOK, stub(ASSIGNMENT, NOTEBOOK))
    (subs / "absent").mkdir()


def _grade_args(subs, course_dir, *extra):
    return ["grade", str(subs), "--out", str(course_dir / "grades.csv"), "--course-dir", str(course_dir),
            "--feedback-dir", str(course_dir.parent / "feedback"), "--jobs", "1", "--quiet", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The class graded whole, and as 3 shards laid out as deploy/slurm does it (OUT/shard-K/).

    Two runs at a time, one per core: a `python -m autograder` process grades the whole class while
    the shards run one after the other through the same command line in this process (`cli.main`),
    which saves each the seconds a fresh interpreter spends on imports. Shard 3 runs the command line
    the committed Slurm script builds for array task 3 of 3.
    """
    root = tmp_path_factory.mktemp("shards")
    _make_class(root / "subs")
    args = _grade_args(root / "subs", root / "whole", "--feedback-dir", str(root / "whole/feedback"))
    whole = subprocess.Popen([sys.executable, "-m", "autograder", *args], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        for k in (1, 2):
            assert main(_grade_args(root / "subs", root / f"shard-{k}", "--shard", f"{k}/{N}")) == 0
        argv = _script_argv(["bash", REPO / "deploy/slurm/grade.sbatch", root / "subs", root],
                            SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT=str(N))
        assert argv[:3] == ["-m", "autograder", "grade"] and argv[argv.index("--shard") + 1] == f"3/{N}", argv
        assert main(argv[2:]) == 0
        output, _ = whole.communicate(timeout=600)
    finally:
        whole.kill()
    assert whole.returncode == 0, output[-3000:]
    return root


def _script_argv(cmd, **env) -> list[str]:
    """The command line a deploy script runs, with a stand-in interpreter that only records it."""
    with tempfile.TemporaryDirectory() as scratch:
        fake, argv_file = Path(scratch) / "python", Path(scratch) / "argv"
        fake.write_text('#!/bin/sh\nprintf "%s\\0" "$@" > "$ARGV_FILE"\n')
        fake.chmod(0o755)
        subprocess.run([str(c) for c in cmd], cwd=REPO, check=True, env={
            **os.environ, "COURSE": str(REPO), "SLURM_CPUS_PER_TASK": "1", **env,
            "PYTHON": str(fake), "ARGV_FILE": str(argv_file)})
        return argv_file.read_text().split("\0")[:-1]


@pytest.fixture(scope="module")
def merged(runs):
    """deploy/slurm/merge.sbatch's command line, run in this process: OUT/grades.csv, OUT/gradebook.db."""
    argv = _script_argv(["bash", REPO / "deploy/slurm/merge.sbatch", runs, N])
    assert argv[:3] == ["-m", "autograder", "merge"] and argv[3:3 + N] == [str(d) for d in _shards(runs)], argv
    assert main(argv[2:]) == 0
    return runs / "grades.csv", runs / "gradebook.db"


def _shards(root):
    return [root / f"shard-{k}" for k in range(1, N + 1)]


def test_every_student_is_in_one_shard_and_adding_students_moves_nobody():
    assert sorted(shard_of(s, N) for s in GRADED) == [1, 2, 3], "the test class must reach every shard"
    students = [f"s{i:03d}" for i in range(300)]
    parts = [select(students, k, N) for k in range(1, N + 1)]
    assert sorted(sum(parts, [])) == students                       # a partition of the class
    assert all(70 <= len(p) <= 130 for p in parts), [len(p) for p in parts]   # balanced on average
    bigger = students + [f"late{i}" for i in range(50)]
    assert all(set(select(students, k, N)) <= set(select(bigger, k, N)) for k in range(1, N + 1))
    assert shard_of("correct", N) == shard_of("correct", N) and shard_of("x", 1) == 1


def test_each_shard_grades_only_its_students(runs):
    for k, course_dir in enumerate(_shards(runs), start=1):
        assert set(read_grades(course_dir / "grades.csv")) == set(select(sorted(STUDENTS), k, N))


def test_merge_writes_the_csv_of_one_run_byte_for_byte(runs, merged):
    csv_path, _ = merged
    assert csv_path.read_bytes() == (runs / "whole/grades.csv").read_bytes()
    rows = read_grades(csv_path)
    assert [float(rows[s]["score"]) for s in ("correct", "stub", "absent")] == [15.0, 0.0, 0.0]
    assert float(rows["pg_sample_std"]["score"]) < 15 and rows["absent"]["status"] == "missing"
    # merge.sbatch's --course-dir gathers every submission's saved result, for `report --course-dir`
    gathered = sorted(path.parent.name for path in (runs / "merged/results").rglob("*.json"))
    assert gathered == sorted(STUDENTS)


def test_slurm_submit_queues_the_array_then_the_merge(tmp_path):
    # a stand-in sbatch on PATH that records its arguments and answers with a job id
    (tmp_path / "bin").mkdir()
    sbatch = tmp_path / "bin/sbatch"
    sbatch.write_text('#!/bin/sh\necho "$@" >> "$LOG"\necho 4711\n')
    sbatch.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "LOG": str(tmp_path / "log")}
    proc = subprocess.run(["bash", REPO / "deploy/slurm/submit.sh", "SUBS", tmp_path / "out", "5"], env=env,
                          capture_output=True, text=True, check=True)
    array, merge_call = (tmp_path / "log").read_text().splitlines()
    assert "--array=1-5" in array and "SHARDS=5" in array and array.endswith(f"grade.sbatch SUBS {tmp_path / 'out'}")
    assert "--dependency=afterany:4711" in merge_call and merge_call.endswith(f"merge.sbatch {tmp_path / 'out'} 5")
    assert "4711" in proc.stdout


def test_kubernetes_indexed_job_runs_shard_index_plus_one(capsys):
    import yaml

    job = yaml.safe_load((REPO / "deploy/k8s/grade-job.yaml").read_text())
    spec, container = job["spec"], job["spec"]["template"]["spec"]["containers"][0]
    shards = int({e["name"]: e["value"] for e in container["env"]}["SHARDS"])
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == shards
    merge_job = yaml.safe_load((REPO / "deploy/k8s/merge-job.yaml").read_text())["spec"]["template"]["spec"]
    merge_container = merge_job["containers"][0]
    assert int({e["name"]: e["value"] for e in merge_container["env"]}["SHARDS"]) == shards
    argv = _script_argv([*container["command"], container["args"][0]], SHARDS=str(shards), JOB_COMPLETION_INDEX="1")
    assert argv[argv.index("--shard") + 1] == f"2/{shards}" and "/data/grading/shard-2" in argv
    merge_argv = _script_argv([*merge_container["command"], merge_container["args"][0]], SHARDS=str(shards))
    assert merge_argv[3:3 + shards] == [f"/data/grading/shard-{k}" for k in range(1, shards + 1)]
    # the command line is one our CLI accepts: it gets as far as looking for the (absent) folders
    capsys.readouterr()
    assert main(argv[2:]) == 2 and "submissions folder /data/submissions does not exist" in capsys.readouterr().err
    assert main(merge_argv[2:]) == 2 and "is not a shard's course dir" in capsys.readouterr().err


def _gradebook(db):
    """student -> (submission score, {cell: (auto, manual, needs_manual_grade)}) through nbgrader's API."""
    from nbgrader.api import Gradebook, MissingEntry

    out = {}
    with Gradebook(f"sqlite:///{db}", course_id="rlhf-course") as gb:
        assignment = gb.find_assignment(ASSIGNMENT)
        out["max_score"] = assignment.max_score
        for student in gb.students:
            try:
                sub = gb.find_submission(ASSIGNMENT, student.id)
            except MissingEntry:
                out[student.id] = None
                continue
            out[student.id] = (sub.score, {g.name: (g.auto_score, g.manual_score, g.needs_manual_grade)
                                           for nb in sub.notebooks for g in nb.grades})
    return out


def test_merged_gradebook_holds_every_student_with_the_scores_of_one_run(runs, merged, tmp_path):
    db = shutil.copyfile(merged[1], tmp_path / "gradebook.db")
    ours, whole = _gradebook(db), _gradebook(runs / "whole/gradebook.db")
    assert set(ours) == set(whole) == {*STUDENTS, "max_score"}
    assert ours == whole
    assert ours["correct"][0] == 15 and ours["absent"] is None and len(ours["stub"][1]) == 5
    # merging again into the same gradebook replaces the submissions: nothing doubles
    merge(_shards(runs), out=tmp_path / "grades.csv", db=db)
    assert _gradebook(db) == whole


def _copy_shard(src, dst):
    """A shard's manifest and results (all the merge reads before it touches a gradebook)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("feedback", "autograded", "submitted", "trusted"))
    return dst


def _edit_manifest(course_dir, **changes):
    path = course_dir / "shard.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_merge_refuses_partial_or_mixed_shards(runs, tmp_path, capsys):
    s1, s2, s3 = _shards(runs)
    out, db = tmp_path / "grades.csv", tmp_path / "gradebook.db"
    cases = {
        "missing shard(s) 3/3 (" + ", ".join(select(sorted(STUDENTS), 3, N)) + "): pass every shard's course dir":
            [s1, s2],
        "overlapping shards": [s1, _copy_shard(s1, tmp_path / "again"), s2, s3],
        "graded differently (timeout)": [s1, _edit_manifest_copy(s2, tmp_path / "t", timeout=5), s3],
        "graded differently (assignments)": [s1, _edit_manifest_copy(s2, tmp_path / "a", assignments=["ppo"]), s3],
        "shards of different splits": [s1, _edit_manifest_copy(s2, tmp_path / "n", shard=[2, 4]), s3],
        f"has not finished: no result for {select(sorted(STUDENTS), 3, N)[0]}/{ASSIGNMENT}":
            [s1, s2, _without_results(s3, tmp_path / "r")],
        "is not a shard's course dir": [s1, s2, s3, runs / "whole"],
    }
    for message, dirs in cases.items():
        with pytest.raises(GradingError) as info:
            merge(dirs, out=out, db=db)
        assert message in str(info.value) and "\n" not in str(info.value), (message, str(info.value))
    assert not out.exists() and not db.exists(), "a refused merge writes nothing"
    capsys.readouterr()
    assert main(["merge", str(s1), str(s2), "--out", str(out), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: missing shard(s) 3/3") and err.count("\n") == 1 and not out.exists()


def _edit_manifest_copy(src, dst, **changes):
    _edit_manifest(_copy_shard(src, dst), **changes)
    return dst


def _without_results(src, dst):
    _copy_shard(src, dst)
    for path in (dst / "results").rglob("*.json"):
        path.unlink()
    return dst


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "3", "1/2/3", ""])
def test_bad_shard_is_a_one_line_error(text):
    with pytest.raises(GradingError, match=r"--shard must be K/N with 1 <= K <= N"):
        parse(text)
    assert parse("3/3") == (3, 3)


def test_a_shard_will_not_reuse_another_shards_course_dir(runs, tmp_path, capsys):
    reused = _copy_shard(runs / "shard-1", tmp_path / "shard-1")
    with pytest.raises(GradingError, match="holds shard 1/3's work; give each shard its own --course-dir"):
        grade(runs / "subs", out=tmp_path / "g.csv", course_dir=reused, shard="2/3", progress=False)
    capsys.readouterr()
    assert main(_grade_args(runs / "subs", tmp_path / "c", "--shard", "4/3")) == 2
    err = capsys.readouterr().err
    assert err == "error: --shard must be K/N with 1 <= K <= N (for example 2/3), not '4/3'\n"
    assert not (tmp_path / "g.csv").exists() and not (tmp_path / "c/grades.csv").exists()
