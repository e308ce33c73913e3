"""Measure the budgets the README reports (numbers, not asserts: timings belong here, not in tests).

    .venv/bin/python scripts/benchmark.py            # grading speed and notebook execution times
    .venv/bin/python scripts/benchmark.py class [N]  # a class of N (40) update-rules submissions: --jobs 1,
                                                     # --jobs 2 and plain `nbgrader autograde`, side by side
    time make test; rm -rf _build && time make book  # the other two rows of the budgets table
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the synthetic class lives with the tests that use it

from autograder import SOLUTIONS, assignments, notebooks  # noqa: E402
from autograder.grading import grade  # noqa: E402
from synthetic_class import make_bad_files_class  # noqa: E402


def time_grading() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_bad_files_class(tmp / "all")
        shutil.rmtree(tmp / "all" / "infinite_loop")  # its cost is the timeout, by design
        one = tmp / "one"
        shutil.copytree(tmp / "all" / "correct", one / "correct")
        t0 = time.perf_counter()
        grade(one, out=tmp / "g1.csv", course_dir=tmp / "c1", progress=False)
        t_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = grade(tmp / "all", out=tmp / "g.csv", course_dir=tmp / "c", progress=False)
        t_all = time.perf_counter() - t0
        n = sum(r["status"] not in ("invalid", "missing") for r in rows)
        print(f"grading: 1 notebook {t_one:.1f} s (start-up included); {n} notebooks {t_all:.1f} s; "
              f"marginal {(t_all - t_one) / (n - 1):.2f} s per notebook")


def time_class(n: int = 40) -> None:
    """N submissions (the synthetic class's students, repeated), graded three ways on the same files."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_bad_files_class(tmp / "pool")
        pool = sorted(p.name for p in (tmp / "pool").iterdir()
                      if p.name not in ("infinite_loop",) and (p / "rlhf_update_rules").is_dir())
        for i in range(n):
            shutil.copytree(tmp / "pool" / pool[i % len(pool)], tmp / "class" / f"s{i:03d}_{pool[i % len(pool)]}")
        times = {}
        for jobs in (1, 2):
            t0 = time.perf_counter()
            rows = grade(tmp / "class", out=tmp / f"g{jobs}.csv", course_dir=tmp / f"c{jobs}", progress=False,
                         jobs=jobs)
            times[f"ours, --jobs {jobs} (sandboxed, feedback HTML)"] = time.perf_counter() - t0
        assert (tmp / "g1.csv").read_bytes() == (tmp / "g2.csv").read_bytes(), "jobs 1 and 2 disagree"
        # plain nbgrader: the same notebooks in submitted/, its own CLI, no sandbox, no feedback
        course = tmp / "plain"
        for student in sorted((tmp / "class").iterdir()):
            shutil.copytree(student / "rlhf_update_rules", course / "submitted" / student.name / "rlhf_update_rules")
        nbgrader = [str(Path(sys.executable).parent / "nbgrader")]
        flags = [f"--CourseDirectory.root={course}", f"--CourseDirectory.source_directory={SOLUTIONS}",
                 "--Execute.timeout=60", "--log-level=ERROR"]
        env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        subprocess.run([*nbgrader, "generate_assignment", "rlhf_update_rules", "--force", *flags], check=True,
                       cwd=tmp, env=env, capture_output=True)
        t0 = time.perf_counter()
        subprocess.run([*nbgrader, "autograde", "rlhf_update_rules", "--force", *flags], cwd=tmp, env=env,
                       capture_output=True)
        times["plain nbgrader autograde (no sandbox, no feedback)"] = time.perf_counter() - t0
        graded = sum(r["status"] not in ("invalid", "missing") for r in rows)
        print(f"{n} submissions ({graded} gradable) of rlhf_update_rules on {os.cpu_count()} cores:")
        for what, t in times.items():
            print(f"  {what:52} {t:6.1f} s  {t / n:5.2f} s per submission")


def time_notebooks() -> None:
    for a in assignments():
        for nb_name in notebooks(a):
            path = SOLUTIONS / a / f"{nb_name}.ipynb"
            nb = nbformat.read(path, as_version=4)
            t0 = time.perf_counter()
            NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
            print(f"solution {a}/{nb_name}: executes in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["class"]:
        time_class(int(sys.argv[2]) if len(sys.argv) > 2 else 40)
    else:
        time_notebooks()
        time_grading()
