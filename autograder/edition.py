"""The student edition: the course as students clone it, without the answers or the tools that need them.

    python -m autograder export-student ../rlhf-course-student [--url https://github.com/<owner>/<name>]

This repository holds every answer (``solutions/``, hidden tests included) and the tools that grade with
them. The student edition is a copy of what students need, chosen file by file from an explicit list
(``FILES``, ``FOLDERS``): the book's sources and data, ``exercises/``, the helper package, the install
files, ``binder/``, the Pages workflow. A file the list does not name (a new instructor script, a grading
module) is never exported by accident. A few files are written for the edition instead of copied
(``WRITTEN``): its README (this README's "For students"), a Makefile without the instructor's targets, and
an ``autograder`` package holding only ``launch.py``, which the book's build uses to check launch buttons.

The edition is its own repository (``--url``; default: this one's ``repository.url`` + ``-student``): its
``_config.yml``, the Colab setup cell of every notebook and the chapter notebooks' links name it, so its
published book's Binder and Colab buttons open the edition, never this repository.

The folder must be new or empty. Everything is written into a hidden sibling folder first and renamed into
place at the end: an export that fails leaves nothing that looks like an edition.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from autograder.launch import (CONFIG, REPO, Repository, add_setup_cell, chapter_notebook, chapter_pages,
                               github_repository, notebook_path, notebook_text, repository)

FILES = ("_config.yml", "_toc.yml", "pyproject.toml", "requirements.txt", ".gitignore",
         ".github/workflows/book.yml",      # publishes the edition's own book (launch buttons open the edition)
         "autograder/launch.py",            # book/_ext/course_launch.py checks every launch button with it
         "scripts/gpu_check.sh")            # the capstone's GPU check, on the student's own answers
"""Single files the edition copies (when the course has them)."""

FOLDERS = ("book/", "exercises/", "rlhf_course/", "binder/")
"""Folders the edition copies whole: book pages and their data, released stubs, the helper package."""

WRITTEN = ("README.md", "Makefile", "autograder/__init__.py")
"""Files written for the edition instead (student_readme, student_makefile, AUTOGRADER_INIT)."""

NEVER = ("solutions", "tests", "autograder/course")
"""Folders no exported path may be inside, whatever the lists above say (a second line of defence)."""

TEXT = (".md", ".ipynb", ".py", ".yml", ".yaml", ".json", ".txt", ".toml", ".cfg", ".sh", ".bib", ".csv")
"""Files whose text may name the course's repository or hold a marker (images, fonts, vendored scripts do not)."""

MARKERS = ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS")
"""nbgrader's region markers: a file holding one is an unreleased source notebook, and stops the export."""

PLACEHOLDER = "<student edition URL>"
"""How this README's "For students" names the edition's address; the edition's README gets the real one."""

STUDENT_MAKE_TARGETS = ("$(STAMP)", "venv", "models", "book", "serve")
"""The instructor Makefile's rules the edition keeps: install, build the tiny GPT-2, build and serve the book."""


class EditionError(RuntimeError):
    """The edition cannot be written; the CLI prints the message as one line and exits with code 2."""


# ---------------------------------------------------------------------------------------------- which files
def course_files() -> list[str]:
    """The course's files as git sees them: committed, plus new files not ignored (``.gitignore``)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise EditionError(f"cannot list the course's files with git in {REPO}: {err}") from err
    return sorted({f for f in out.split("\0") if f and (REPO / f).is_file()})   # deleted, not yet committed: gone


def exported(path: str) -> bool:
    """Whether the edition copies this repository path (posix, relative to the root)."""
    if any(path == top or path.startswith(top + "/") for top in NEVER):
        return False
    return path in FILES or path.startswith(FOLDERS)


# ---------------------------------------------------------------------------------------- written files
def student_repository(url: str | None = None, branch: str | None = None) -> Repository:
    """The edition's repository: `url` (default: this course's repository.url + "-student"), `branch`."""
    course = repository()
    try:
        edition = github_repository(url or course.url + "-student", branch or course.branch, where="--url")
    except ValueError as err:
        raise EditionError(str(err)) from None
    if edition.url.lower() == course.url.lower():
        raise EditionError(f"--url {edition.url} is this course's own repository: the student edition needs one of "
                           f"its own, or its launch buttons would open the solutions")
    return edition


def student_config(text: str, edition: Repository) -> str:
    """_config.yml with repository.url and .branch set to the edition's (the rest, comments included, as is)."""
    course = repository()
    for key, old, new in (("url", course.url, edition.url), ("branch", course.branch, edition.branch)):
        text, n = re.subn(rf"(?m)^([ \t]+{key}:[ \t]*){re.escape(old)}[ \t]*$", lambda m: m.group(1) + new, text)
        if n != 1:
            raise EditionError(f"{CONFIG.name}: found {n} lines 'repository.{key}: {old}', expected exactly one")
    return text


def student_workflow(text: str) -> str:
    """The Pages workflow without the instructor's check that chapter notebooks are regenerated (the export
    regenerates them; the edition has no `python -m autograder notebooks`)."""
    kept = [line for line in text.splitlines(keepends=True) if "autograder notebooks --check" not in line]
    if len(kept) != len(text.splitlines()) - 1:
        raise EditionError(".github/workflows/book.yml: expected one line running `autograder notebooks --check`")
    return "".join(kept).replace("Set repository.url to $here, run 'make notebooks release' and commit.",
                                 "Export the student edition again with --url $here.")


def section(markdown: str, title: str) -> str:
    """The body of the ``## title`` section of a Markdown file (up to the next ``## `` heading)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    if not match:
        raise EditionError(f"README.md has no '## {title}' section: the student README is made from it")
    return match.group(1).strip().removesuffix("---").strip()


def student_readme(edition: Repository) -> str:
    """The edition's README: what it is, where its book is, then this README's "For students"."""
    readme = (REPO / "README.md").read_text()
    title = readme.splitlines()[0].removeprefix("# ")
    students = section(readme, "For students").replace(PLACEHOLDER, edition.url)
    return (f"# {title}: student edition\n\n"
            f"The book's sources, the exercise notebooks and the helper package of the course, without the\n"
            f"instructor's solutions, hidden tests or grading tools. The book is online at {edition.pages_url}\n"
            f"(its rocket buttons open every page as a notebook, on Colab or Binder, from this repository).\n"
            f"`make book` builds the same book into `_build/html`, to read offline.\n\n"
            f"## For students\n\n{students}\n")


def student_makefile() -> str:
    """The instructor Makefile's variables and its install, model and book rules (one copy of each recipe)."""
    blocks = (REPO / "Makefile").read_text().split("\n\n")
    variables = [ln for ln in blocks[0].splitlines() if re.match(r"[A-Z]+\s*[:?]?=", ln)]
    rules = [b.strip("\n") for b in blocks
             if any(re.search(rf"^{re.escape(t)}:", b, re.M) for t in STUDENT_MAKE_TARGETS)]
    if len(rules) != len(STUDENT_MAKE_TARGETS):
        raise EditionError(f"Makefile: expected one rule each for {', '.join(STUDENT_MAKE_TARGETS)}")
    head = ["# The student edition of the course: `make venv`, then open the exercises (README.md).",
            *variables, "", ".PHONY: help venv models book serve", "", "help:",
            '\t@echo "make venv   install everything into .venv (about 1.5 GB, 2-3 minutes)"',
            '\t@echo "make book   build the book into _build/html (warnings are errors)"',
            '\t@echo "make serve  serve the built book at http://127.0.0.1:8000/ (PORT=... to change)"']
    return "\n".join(head) + "\n\n" + "\n\n".join(rules) + "\n"


AUTOGRADER_INIT = '''"""The book's launch-button tooling (launch.py), as the student edition ships it.

The course's instructor copy keeps its grading tools in this package; the student edition has none.
"""
'''


# ------------------------------------------------------------------------------------------------ export
def _write(dest: Path, rel: str, text: str) -> None:
    path = dest / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _copy(files: list[str], dest: Path) -> None:
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)         # keeps the mode: binder/postBuild stays executable


def renamed(text: str, course: Repository, edition: Repository) -> str:
    """`text` with the course's repository and book addresses replaced by the edition's."""
    text = re.sub(re.escape(course.url) + r"(?![\w-])", edition.url, text)        # ".git" may follow
    return text.replace(course.pages_url, edition.pages_url)


def _point_at(dest: Path, edition: Repository) -> None:
    """Every course URL names the edition: page text (a clone command, a citation), setup cells, chapter
    notebooks. The config is student_config's (it also sets the branch)."""
    course = repository()
    for path in sorted(p for p in dest.rglob("*") if p.suffix in TEXT and p.name != CONFIG.name):
        text = path.read_text()
        if course.url in text or course.pages_url in text:
            path.write_text(renamed(text, course, edition))
    for path in sorted(dest.glob("exercises/*/*.ipynb")):
        nbformat.write(add_setup_cell(nbformat.read(path, as_version=4), repo=edition), path)
    for page in chapter_pages():
        _write(dest, notebook_path(page).relative_to(REPO).as_posix(), notebook_text(chapter_notebook(page, edition)))


def _check(dest: Path) -> None:
    """Refuse an edition holding a file off its lists or an nbgrader region marker (a source notebook)."""
    for path in (p for p in dest.rglob("*") if p.is_file()):
        rel = path.relative_to(dest).as_posix()
        if not exported(rel) and rel not in WRITTEN:
            raise EditionError(f"internal error: {rel} is in the edition but not on its list")
        if path.suffix in TEXT:
            text = path.read_text(errors="replace")
            if any(marker in text for marker in MARKERS):
                raise EditionError(f"{rel} holds an nbgrader solution or hidden-test marker: not exporting it")


def _empty_target(dest: Path) -> Path:
    """`dest`, absolute, if it is a new or empty folder outside the course; else EditionError."""
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise EditionError(f"{dest} exists and is not an empty folder: the student edition goes into a new "
                           f"or empty one")
    if dest.resolve().is_relative_to(REPO.resolve()):
        raise EditionError(f"{dest} is inside the course ({REPO}): export the student edition next to it")
    return dest


def export_student(dest: Path, url: str | None = None, branch: str | None = None) -> dict:
    """Write the student edition into `dest` (new or empty); return {"files", "repository", "dest"}."""
    dest = _empty_target(dest)
    edition = student_repository(url, branch)
    files = [f for f in course_files() if exported(f) and f not in WRITTEN]
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        _copy(files, staging)
        _write(staging, "_config.yml", student_config(CONFIG.read_text(), edition))
        _write(staging, "README.md", student_readme(edition))
        _write(staging, "Makefile", student_makefile())
        _write(staging, "autograder/__init__.py", AUTOGRADER_INIT)
        if (staging / ".github/workflows/book.yml").exists():
            _write(staging, ".github/workflows/book.yml",
                   student_workflow((staging / ".github/workflows/book.yml").read_text()))
        _point_at(staging, edition)
        _check(staging)
        staging.chmod(0o755)                         # mkdtemp's 0700 would make the clone unreadable to others
        os.rename(staging, dest)                     # atomic; replaces `dest` only if it is an empty folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"files": len(list(p for p in dest.rglob("*") if p.is_file())), "repository": edition, "dest": dest}


def main(args) -> int:
    """`python -m autograder export-student DIR [--url URL] [--branch BRANCH]` (cli.py parses the arguments)."""
    try:
        done = export_student(args.dir, url=args.url, branch=args.branch)
    except (EditionError, OSError) as exc:       # a full disk, a folder we may not write: one line too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    repo = done["repository"]
    print(f"wrote the student edition ({done['files']} files) to {done['dest']}, for {repo.url} "
          f"(branch {repo.branch}); push it there and enable GitHub Pages (README, 'The student edition')")
    return 0
