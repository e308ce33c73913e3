"""Instructor command line: release, validate and grade the course's assignments.

    python -m autograder release                 # solutions/ -> exercises/ (nbgrader generate_assignment)
    python -m autograder validate                # solutions pass every test, stubs fail every test
    python -m autograder grade SUBMISSIONS_DIR   # nbgrader autograde (kernels sandboxed) + feedback + grades.csv
    python -m autograder merge SHARD_DIRS...     # the course dirs of `grade --shard K/N` -> one CSV + gradebook
    python -m autograder report grades.csv       # pass rates per test cell, common failures, histograms, LMS CSV
    python -m autograder inline-mathjax          # feedback pages carry MathJax, for nbgrader release_feedback
    python -m autograder notebooks [--check]     # book/**/<page>.md -> the .ipynb its launch buttons open
    python -m autograder export-student DIR      # the repository students clone: no solutions, no grading
"""
import argparse
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat

from autograder.course import EXERCISES, REPO, SOLUTIONS, ConfigNotLoaded, assignments, load_config, notebooks
from autograder.launch import add_setup_cell, write_chapter_notebooks


def _api(config):
    from nbgrader.apps.api import NbGraderAPI

    api = NbGraderAPI(config=config)
    api.log.setLevel(logging.WARNING)
    return api


def release(only: list[str] | None = None, solutions: Path = SOLUTIONS, exercises: Path = EXERCISES) -> int:
    """Regenerate exercises/<assignment>/ from solutions/ for every (or the named) assignment."""
    config = load_config()
    config.CourseDirectory.source_directory = str(Path(solutions).resolve())
    config.CourseDirectory.release_directory = str(Path(exercises).resolve())
    names = only or assignments(solutions)
    with tempfile.TemporaryDirectory() as tmp:
        # A throw-away gradebook: releasing must not depend on (or be blocked by) grading state.
        config.CourseDirectory.db_url = f"sqlite:///{tmp}/release.db"
        api = _api(config)
        for name in names:
            if not (solutions / name).is_dir():
                print(f"error: no assignment {name!r} in {solutions}", file=sys.stderr)
                return 2
            shutil.rmtree(exercises / name, ignore_errors=True)  # no stale files survive a release
            result = api.generate_assignment(name, force=True, create=True)
            made = sorted(p.name for p in (exercises / name).glob("*.ipynb"))
            if not result["success"] or made != sorted(f"{nb}.ipynb" for nb in notebooks(name, solutions)):
                print(f"error: nbgrader generate_assignment {name} failed (wrote {made or 'nothing'}):\n"
                      f"{result.get('log') or result.get('error')}", file=sys.stderr)
                return 1
            for path in (exercises / name).glob("*.ipynb"):
                # The Colab setup cell (autograder/launch.py), filled in from _config.yml's repository.url.
                nbformat.write(add_setup_cell(nbformat.read(path, as_version=4)), path)
            print(f"released {name}: {', '.join(made)} -> {exercises / name}/")
    return 0


def chapter_notebooks(check: bool = False) -> int:
    """Regenerate (or, with check, verify) the .ipynb of every chapter page from its MyST source."""
    changed = write_chapter_notebooks(check=check)
    for path in changed:
        print(f"{'out of date' if check else 'wrote'}: {path.relative_to(REPO)}")
    if check and changed:
        print("error: chapter notebooks out of date: run `python -m autograder notebooks`", file=sys.stderr)
        return 1
    if not changed:
        print("chapter notebooks up to date")
    return 0


def _validate_one(path: str, invert: bool) -> dict:
    """nbgrader's Validator on one notebook (a worker process's job): its result dict."""
    from nbgrader.validator import Validator

    validator = Validator(config=load_config(), invert=invert, ignore_checksums=not invert)
    return validator.validate(path)


def _quiet_worker() -> None:
    # One torch thread per kernel: two kernels with two spinning threads each on two cores run slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def validate(only: list[str] | None = None, solutions: Path = SOLUTIONS, exercises: Path = EXERCISES,
             jobs: int | None = None) -> int:
    """Every solution passes all its test cells; every released stub fails every test cell.

    nbgrader's own `validate` command exits 0 either way, so we read the Validator's results. The
    notebooks run in ``jobs`` worker processes (default: one per core, at most 2), largest first.
    """
    problems, todo = [], []
    for name in only or assignments(solutions):
        for nb in notebooks(name, solutions):
            for folder, invert in ((solutions, False), (exercises, True)):
                path = folder / name / f"{nb}.ipynb"
                if not path.exists():
                    problems.append(f"{path}: missing (run `python -m autograder release`)")
                else:
                    todo.append((folder, path, invert))
    jobs = jobs or min(2, os.cpu_count() or 1)
    order = sorted(todo, key=lambda job: -job[1].stat().st_size)     # the longest notebooks start first
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_quiet_worker) as pool:
        futures = {job[1]: pool.submit(_validate_one, str(job[1]), job[2]) for job in order}
        for folder, path, invert in todo:                               # report in the course's order
            result = futures[path].result()
            rel = path.relative_to(folder.parent) if folder.parent == REPO else path
            bad = result.get("passed" if invert else "failed", []) + result.get("changed", [])
            if bad or "type_changed" in result:
                what = "test cells PASS on the unsolved stub" if invert else "test cells FAIL on the solution"
                details = "\n".join("    " + (c.get("raw_error") or c["source"]).strip().splitlines()[-1]
                                    for c in bad)
                problems.append(f"{rel}: {len(bad)} {what}\n{details}")
            else:
                print(f"ok  {rel}: " + ("every test cell fails on the stub" if invert else "every test cell passes"))
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


def inline_mathjax(folders: list[Path], course_dir: Path | None = None) -> int:
    """Rewrite the feedback pages under ``folders`` (default: the course dir's ``feedback/``) to carry
    MathJax inside them (``autograder.feedback.inline_mathjax``)."""
    from autograder.course import COURSE_DIR
    from autograder.feedback import inline_mathjax_in

    folders = folders or [Path(course_dir or COURSE_DIR) / "feedback"]
    missing = [str(f) for f in folders if not Path(f).is_dir()]
    if missing:
        print(f"error: no such folder: {', '.join(missing)} (grade the class first, or name the folders)",
              file=sys.stderr)
        return 2
    for folder in folders:
        try:
            changed, already = inline_mathjax_in(folder)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{folder}: {changed} page(s) now carry MathJax" + (f", {already} already did" if already else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("release", help="regenerate exercises/ from solutions/")
    p.add_argument("assignments", nargs="*", help="assignment names (default: all)")
    p = sub.add_parser("validate", help="solutions pass all tests, released stubs fail all tests")
    p.add_argument("assignments", nargs="*", help="assignment names (default: all)")
    p.add_argument("--jobs", type=int, default=None, help="notebooks run at once (default: min(2, cores))")
    p = sub.add_parser("notebooks", help="write book/**/<page>.ipynb, the notebooks the chapters' launch buttons open")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if any notebook is out of date")
    p = sub.add_parser("grade", help="autograde a folder of submissions with nbgrader")
    p.add_argument("submissions", type=Path, help="folder holding <student_id>/<assignment>/<notebook>.ipynb")
    p.add_argument("--out", type=Path, default=Path("grades.csv"), help="CSV of grades (default: grades.csv)")
    p.add_argument("--feedback-dir", type=Path, default=None,
                   help="where feedback HTML goes, as <student>/<assignment>/<notebook>.html "
                        "(default: a 'feedback' folder next to --out)")
    p.add_argument("--course-dir", type=Path, default=None,
                   help="nbgrader working folder for submitted/autograded copies (default: autograder/course)")
    p.add_argument("--db", type=Path, default=None,
                   help="SQLite gradebook file (default: gradebook.db in the course dir)")
    p.add_argument("--timeout", type=int, default=None, help="seconds per cell before it is interrupted (default: 120)")
    p.add_argument("--assignment", action="append", dest="only", help="grade only this assignment (repeatable; default: every assignment someone handed in)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    p.add_argument("--jobs", type=int, default=None,
                   help="submissions graded at once, each with its own kernel (default: the number of cores)")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows an interrupted (or earlier) run already graded, for unchanged submissions")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run the students' kernels without the sandbox, with your permissions (not recommended; "
                        "the CSV says so on every row)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="grade only shard K of N (1 <= K <= N) of the class, chosen by a hash of the student id; "
                        "give each shard its own --course-dir, then `merge` them")
    p = sub.add_parser("merge", help="merge the course dirs of `grade --shard K/N` runs into one CSV and gradebook")
    p.add_argument("shards", type=Path, nargs="+", help="every shard's --course-dir")
    p.add_argument("--out", type=Path, default=Path("grades.csv"), help="merged CSV (default: grades.csv)")
    p.add_argument("--db", type=Path, default=Path("gradebook.db"),
                   help="merged nbgrader gradebook; an existing one is merged into (default: gradebook.db)")
    p.add_argument("--course-dir", type=Path, default=None,
                   help="also copy the shards' per-submission results here, for `report --course-dir`")
    p = sub.add_parser("report", help="pass rates per test cell, common failures, score histograms; LMS CSVs")
    p.add_argument("grades", type=Path, help="the grades CSV `grade` wrote")
    p.add_argument("--out-dir", type=Path, default=None, help="where report.md and the PNGs go (default: a "
                   "'report' folder next to the CSV)")
    p.add_argument("--course-dir", type=Path, default=None,
                   help="the --course-dir the class was graded with (default: autograder/course)")
    p.add_argument("--format", choices=["canvas", "moodle"], default=None,
                   help="also write grades_<format>.csv in that LMS's grade-import layout")
    p = sub.add_parser("inline-mathjax", help="make feedback pages carry MathJax themselves (about 0.95 MB each), "
                       "so that formulas render in the lone .html nbgrader's release_feedback hands out")
    p.add_argument("folders", type=Path, nargs="*",
                   help="folders of feedback HTML (default: the course dir's feedback/, which release_feedback reads)")
    p.add_argument("--course-dir", type=Path, default=None,
                   help="the --course-dir the class was graded with (default: autograder/course)")
    p = sub.add_parser("export-student", help="write the student edition (no solutions, hidden tests or grading "
                       "tools) into a new or empty folder")
    p.add_argument("dir", type=Path, help="a new or empty folder outside the course, e.g. ../rlhf-course-student")
    p.add_argument("--url", default=None, help="the edition's GitHub repository, which its launch buttons open "
                   "(default: repository.url of _config.yml + '-student')")
    p.add_argument("--branch", default=None, help="its branch (default: repository.branch of _config.yml)")
    args = parser.parse_args(argv)

    try:
        if args.command == "release":
            return release(args.assignments)
        if args.command == "notebooks":
            return chapter_notebooks(check=args.check)
        if args.command == "validate":
            if args.jobs is not None and args.jobs < 1:
                print(f"error: --jobs must be at least 1, not {args.jobs}", file=sys.stderr)
                return 2
            return validate(args.assignments, jobs=args.jobs)
        if args.command == "export-student":
            from autograder.edition import main as edition_main

            return edition_main(args)
        if args.command == "report":
            from autograder.report import main as report_main

            return report_main(args)
        if args.command == "inline-mathjax":
            return inline_mathjax(args.folders, args.course_dir)
        from autograder.grading import GradingError, grade

        try:
            if args.command == "merge":
                from autograder.shard import merge

                rows = merge(args.shards, out=args.out, db=args.db, course_dir=args.course_dir)
                print(f"merged {len(args.shards)} shards: wrote {args.out} ({len(rows)} rows) and {args.db}")
                return 0
            grade(args.submissions, out=args.out, feedback_dir=args.feedback_dir, course_dir=args.course_dir,
                  db=args.db, timeout=args.timeout, only=args.only, progress=not args.quiet,
                  sandboxed=not args.no_sandbox, resume=args.resume, jobs=args.jobs, shard=args.shard)
        except GradingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    except ConfigNotLoaded as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
