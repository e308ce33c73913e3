"""Measure the budgets the README reports (numbers, not asserts: timings belong here, not in tests).

    .venv/bin/python scripts/benchmark.py            # grading speed and notebook execution times
    time make test; rm -rf _build && time make book  # the other two rows of the budgets table
"""
import shutil
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


def time_notebooks() -> None:
    for a in assignments():
        for nb_name in notebooks(a):
            path = SOLUTIONS / a / f"{nb_name}.ipynb"
            nb = nbformat.read(path, as_version=4)
            t0 = time.perf_counter()
            NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
            print(f"solution {a}/{nb_name}: executes in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    time_notebooks()
    time_grading()
