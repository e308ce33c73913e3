import shutil
import subprocess
import sys
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
