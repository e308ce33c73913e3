import csv
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


# ------------------------------------------------------------------ the book, built in the background
# Building the book executes every chapter page, one kernel at a time (about 95 s on 2 cores), while
# much of the rest of the suite also runs one process at a time: start the build as soon as the tests
# are collected, run the book's tests last, and the two overlap.
_BOOK: dict = {}


def pytest_collection_modifyitems(session, config, items):
    book_items = [item for item in items if item.module.__name__ == "test_book"]
    if not book_items:
        return
    items[:] = [item for item in items if item not in book_items] + book_items
    out = Path(tempfile.mkdtemp(prefix="rlhf-book-"))
    log = open(out / "build.log", "w")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", str(REPO), "-W", "--keep-going", "--all", "--path-output", str(out)]
    _BOOK.update(out=out, log=log, cmd=cmd,
                 proc=subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))


def built_book(timeout: float = 900) -> Path:
    """Wait for the background build started at collection; return its _build/html folder."""
    assert _BOOK, "the book build was not started (is test_book among the collected tests?)"
    proc = _BOOK["proc"]
    returncode = proc.wait(timeout=timeout)
    output = (_BOOK["out"] / "build.log").read_text(errors="replace")
    assert returncode == 0, f"{' '.join(_BOOK['cmd'])} exited {returncode}\n--- output ---\n{output[-6000:]}"
    return _BOOK["out"] / "_build" / "html"


def pytest_sessionfinish(session, exitstatus):
    if _BOOK:
        if _BOOK["proc"].poll() is None:
            _BOOK["proc"].kill()
        _BOOK["log"].close()
        shutil.rmtree(_BOOK["out"], ignore_errors=True)


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
