import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


def run(*args, cwd=None, timeout=900, check=True):
    """Run a command, returning CompletedProcess; on failure show its output in the assertion."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}\n" \
                                     f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    return proc


def autograder(*args, **kwargs):
    return run(sys.executable, "-m", "autograder", *args, **kwargs)


def read_grades(csv_path) -> dict[str, dict]:
    """student_id -> row of a grades.csv written by `python -m autograder grade` (one assignment)."""
    with open(csv_path, newline="") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


# ------------------------------------------------------------------ long runs, started in the background
# Much of the suite runs one process at a time on 2 cores. Long jobs start as soon as the tests are
# collected and use the other core: the book build, which executes every chapter page one kernel at a time
# (about 2 min), then the browser survey of the built book (about 3 min: a thread of test_book_browser
# driving Chromium), and the capstone's cpu preset end to end (about 2.5 min on one thread, at low priority
# so the foreground tests go first). The tests that read them run last.
_BACKGROUND: dict[str, dict] = {}


def _start_background(name: str, cmd: list, out: Path, nice: int = 0, cwd: Path = REPO,
                      env: dict | None = None) -> None:
    log = open(out / f"{name}.log", "w")
    cmd = [str(c) for c in cmd]
    proc = subprocess.Popen(["nice", "-n", str(nice), *cmd] if nice else cmd, stdout=log,
                            stderr=subprocess.STDOUT, cwd=cwd, env=env)
    _BACKGROUND[name] = dict(out=out, log=log, cmd=cmd, proc=proc)


def wait_background(name: str, timeout: float = 900) -> tuple[Path, str]:
    """Wait for a background job started at collection; return its folder and its output (stdout + stderr)."""
    assert name in _BACKGROUND, f"the background job {name!r} was not started (are its tests collected?)"
    job = _BACKGROUND[name]
    returncode = job["proc"].wait(timeout=timeout)
    job["log"].flush()
    output = (job["out"] / f"{name}.log").read_text(errors="replace")
    assert returncode == 0, f"{' '.join(job['cmd'])} exited {returncode}\n--- output ---\n{output[-6000:]}"
    return job["out"], output


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: start only what the selected tests need
def pytest_collection_modifyitems(session, config, items):
    book_items = [item for item in items if item.module.__name__ in ("test_book", "test_book_browser")]
    cpu_items = [item for item in items if "cpu_run" in getattr(item, "fixturenames", ())]
    stub_items = [item for item in items if "edition_stubs" in getattr(item, "fixturenames", ())]
    late = book_items + cpu_items + stub_items
    items[:] = [item for item in items if item not in late] + stub_items + cpu_items + book_items
    if stub_items:
        start_stub_run()
    if cpu_items:
        out = Path(tempfile.mkdtemp(prefix="rlhf-capstone-cpu-"))
        answers = os.environ.get("CAPSTONE_TEST_ANSWERS")           # else the CLI's default notebook
        _start_background("capstone-cpu", [sys.executable, "-m", "rlhf_course.capstone", "--preset", "cpu",
                                           "--seed", "0", "--out", out / "run", "--quiet", "--json",
                                           *(["--answers", answers] if answers else [])], out, nice=10)
    if book_items:
        start_book_build()
        # the browser survey of the built book, as soon as it is built (test_book_browser.start_in_background)
        for module in {item.module for item in book_items if hasattr(item.module, "start_in_background")}:
            module.start_in_background(ARTIFACTS)


def start_book_build() -> None:
    """Build the book of the student edition from scratch (warnings are errors) in the background.

    The one build the suite makes is of the book students get: exported without solutions/ (student_edition),
    its pages run by kernels that import the edition's own rlhf_course (PYTHONPATH), not the installed one.
    So it shows that this book builds and runs without solutions/, and test_book / test_book_browser read it.
    """
    out = Path(tempfile.mkdtemp(prefix="rlhf-book-"))
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    try:
        edition = student_edition()
    except Exception as err:  # noqa: BLE001 — not at collection: the book's tests fail, with the reason
        return _start_failed("book", out, f"export-student failed: {err}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(edition), os.environ.get("PYTHONPATH")]))}
    _start_background("book", [jupyter_book, "build", edition, "-W", "--keep-going", "--all", "--path-output", out],
                      out, cwd=edition, env=env)


def start_stub_run() -> None:
    """Run the student edition's exercises as released (tests/edition_stubs.py) in the background, at low
    priority: about half a minute of kernels, off the foreground's core (tests/test_edition.py judges them)."""
    out = Path(tempfile.mkdtemp(prefix="rlhf-stubs-"))
    try:
        edition = student_edition()
    except Exception as err:  # noqa: BLE001 — not at collection: the tests that wait for it fail, with the reason
        return _start_failed("edition-stubs", out, f"export-student failed: {err}")
    _start_background("edition-stubs", [sys.executable, REPO / "tests/edition_stubs.py", edition, out], out, nice=10)


def _start_failed(name: str, out: Path, message: str) -> None:
    """A background job that fails at once with `message`: wait_background then fails the tests that need it."""
    _start_background(name, [sys.executable, "-c", f"raise SystemExit({message!r})"], out)


def executed_stubs(timeout: float = 900) -> Path:
    """Wait for the background stub run (or start it now); return the folder of executed notebooks."""
    if "edition-stubs" not in _BACKGROUND:
        start_stub_run()
    out, _ = wait_background("edition-stubs", timeout)
    return out


_EDITION: dict[str, Path] = {}


def student_edition() -> Path:
    """The student edition of the course as it is now (`python -m autograder export-student`), exported once
    per session into a temporary folder; the book build and tests/test_edition.py share it (read only)."""
    if "path" not in _EDITION:
        from autograder.edition import export_student

        _EDITION["path"] = export_student(Path(tempfile.mkdtemp(prefix="rlhf-student-")) / "edition")["dest"]
    return _EDITION["path"]


def built_book(timeout: float = 900) -> Path:
    """Wait for the background build started at collection (or start it now); return its _build/html folder."""
    if "book" not in _BACKGROUND:       # a test file run on its own, outside the collection hook's order
        start_book_build()
    out, _ = wait_background("book", timeout)
    return out / "_build" / "html"


def pytest_sessionfinish(session, exitstatus):
    for job in _BACKGROUND.values():
        if job["proc"].poll() is None:
            job["proc"].kill()
        job["log"].close()
        shutil.rmtree(job["out"], ignore_errors=True)
    if "path" in _EDITION:
        shutil.rmtree(_EDITION["path"].parent, ignore_errors=True)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def course_copy(tmp_path) -> Path:
    """A scratch copy of solutions/ and exercises/ that a test may break on purpose."""
    for name in ("solutions", "exercises"):
        shutil.copytree(REPO / name, tmp_path / name)
    return tmp_path


def make_gpt2_shaped_checkpoint(path: Path, vocab_size: int = 300) -> Path:
    """Save a small GPT-2-shaped checkpoint as GPT-2 ships: eos only (no pad token), dropouts 0.1.

    Stands in for the real `gpt2` of a learner's Hugging Face cache, which these machines cannot fetch.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from rlhf_course import textworld as tw
    from rlhf_course.tiny_lm import EOS_TOKEN

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(tw.sample_reviews(200), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN).save_pretrained(path)
    GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=1, n_head=2,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(path)  # dropouts 0.1
    return path
