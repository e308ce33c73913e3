"""A tiny GPT-2 that speaks the review language of ``rlhf_course.textworld``, built offline in seconds.

The pieces, in the order a chapter meets them:

* ``train_tokenizer``: a byte-level BPE (the GPT-2 tokenizer's kind) trained with ``tokenizers``.
  ``<|endoftext|>`` is bos = eos (id 0) and ``<|pad|>`` is a DISTINCT pad (id 1): with pad = eos, masking
  the padding would also hide the real end of every response.
* ``tiny_gpt2_config``: a ≈ 1.1 M-parameter GPT-2 with every dropout at 0 (RLHF needs the log-probs of
  the same tokens to be the same in the rollout and in the update).
* ``load_tiny_lm``: builds the model from nothing the first time (sample reviews -> tokenizer ->
  pretraining), saves it in a cache, and loads it in about a second afterwards.
* ``load_policy``: the real GPT-2 if it is in a local Hugging Face cache, else the tiny model.
* ``generate_responses`` and ``position_ids_from_mask``: sampling plumbing for RLHF under left padding.

Special-token ids of the tiny tokenizer: eos = bos = 0, pad = 1. Decoded responses do NOT start with a
space, as in ``textworld``: ``prompt + " " + response`` is the full text.

Two facts about transformers 5.23 worth knowing (checked on this model): a plain forward pass of
GPT-2 does NOT derive position ids from the attention mask, so under left padding pass
``position_ids=position_ids_from_mask(attention_mask)`` yourself (``model.generate`` does it for you);
and on a CPU shared with other processes, ``torch.set_num_threads(1)`` makes this model's sampling
roughly 20x faster than two spinning threads.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

# huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported (transformers imports it): set it
# before that, or an unreachable hub costs ~50 s of retries. Nothing in the course downloads; set
# HF_HUB_OFFLINE=0 before importing this module if you want transformers (and _load_gpt2) to reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

from rlhf_course import fast_gpt2, textworld
from rlhf_course.paths import default_cache_dir  # noqa: F401 (part of this module's interface)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

BUILD_VERSION = 1
"""Bump when the build code changes in a way the hashed settings below do not capture."""


# --------------------------------------------------------------------------------------------------
# Tokenizer and config
# --------------------------------------------------------------------------------------------------
def train_tokenizer(texts, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` offline (< 1 s for a few hundred KB).

    bos = eos = ``EOS_TOKEN`` (id 0), pad = ``PAD_TOKEN`` (id 1), padding_side "right". Nothing is added
    automatically when encoding: append the EOS yourself where a text ends. Words carry their leading
    space (" wonderful" is one token "Ġwonderful"), so decode(encode(text)) == text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],  # ids 0 and 1, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: junk text still encodes
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="right",
        clean_up_tokenization_spaces=False,  # would turn " ." into "." and break the round trip
    )
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    return tokenizer


def tiny_gpt2_config(vocab_size: int, **overrides) -> GPT2Config:
    """A ≈ 1.1 M-parameter GPT-2 config (4 layers × 144 wide, 4 heads, 64 positions), dropouts all 0.

    bos = eos = 0 and pad = 1 (the ids ``train_tokenizer`` assigns). Any field can be overridden.
    """
    settings = dict(
        vocab_size=vocab_size, n_positions=64, n_embd=144, n_layer=4, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        bos_token_id=0, eos_token_id=0, pad_token_id=1,
    )
    settings.update(overrides)
    return GPT2Config(**settings)


# --------------------------------------------------------------------------------------------------
# Building, caching, loading
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyLMBuild:
    """Everything that determines the tiny LM (its hash names the cache folder)."""
    n_reviews: int = 20_000
    """training reviews, each followed by EOS"""
    n_heldout: int = 1_000
    """held-out reviews for the reported loss (a different seed)"""
    vocab_size: int = 512
    """BPE vocabulary size, special tokens included"""
    n_layer: int = 4
    n_embd: int = 144
    n_head: int = 4
    n_positions: int = 64
    """context length; training rows are this long"""
    steps: int = 160
    """AdamW steps"""
    batch_size: int = 16
    """rows of n_positions tokens per step"""
    lr: float = 5e-3
    """peak learning rate (linear warm-up, cosine decay to lr / 10)"""
    warmup: int = 16
    seed: int = 0
    threads: int = 1
    """torch threads while training: matmuls this small gain little from 2, and lose 10x on a busy CPU"""


def _build_hash(build: TinyLMBuild) -> str:
    """A short hash of the build settings, the text world's grammar and the library versions."""
    import transformers
    import tokenizers

    world = {name: getattr(textworld, name) for name in (
        "SUBJECTS", "POSITIVE", "NEGATIVE", "NEUTRAL", "OPENERS", "VERBS", "ADVERBS", "CONJUNCTIONS")}
    blob = json.dumps({
        "build": asdict(build), "world": world, "version": BUILD_VERSION,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def tiny_lm_dir(cache_dir=None, build: TinyLMBuild | None = None) -> Path:
    """The folder where ``load_tiny_lm`` keeps (or will keep) this build."""
    build = build or TinyLMBuild()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"tiny_lm-v{BUILD_VERSION}-{_build_hash(build)}"


def _pack_rows(token_lists: list[list[int]], row_len: int, eos_id: int) -> torch.Tensor:
    """Cut training rows from the stream of reviews (each + EOS): no padding, no loss mask.

    Returns (n_rows, row_len) LongTensor. Every row starts at the start of a review (the model must
    learn to begin a review at position 0, as it will when completing a prompt); consecutive rows
    start at least row_len // 2 tokens apart, so rows overlap by at most half.
    """
    stream = [t for toks in token_lists for t in toks + [eos_id]]
    starts, pos = [], 0
    for toks in token_lists:  # rows start at review starts, at least row_len / 2 apart
        if not starts or pos - starts[-1] >= row_len // 2:
            starts.append(pos)
        pos += len(toks) + 1
    stream_t = torch.tensor(stream)
    rows = [stream_t[s:s + row_len] for s in starts if s + row_len <= len(stream)]
    return torch.stack(rows)


@torch.no_grad()
def _heldout_loss(model, tokenizer, texts: list[str]) -> float:
    """Mean next-token cross entropy (nats) over held-out reviews + EOS, first token excluded, on the
    model's device (GPT-2's architecture pretrained on a GPU: seconds there, minutes on one CPU thread)."""
    ids = tokenizer([t + EOS_TOKEN for t in texts], padding=True, return_tensors="pt").to(model.device)
    with torch.no_grad():
        logits = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask).logits  # (N, T, V)
    logprobs = logits[:, :-1].log_softmax(-1)                                         # token t+1 at t
    targets = ids.input_ids[:, 1:]
    mask = ids.attention_mask[:, 1:].float()
    nll = -logprobs.gather(-1, targets[..., None])[..., 0]                           # (N, T-1)
    return float((nll * mask).sum() / mask.sum())


def _unigram_loss(train_ids: list[list[int]], test_ids: list[list[int]], eos_id: int, vocab: int) -> float:
    """Cross entropy (nats/token) of a unigram model (train counts, add-one) on the same targets."""
    counts = np.ones(vocab)
    for toks in train_ids:
        np.add.at(counts, toks + [eos_id], 1)
    logp = np.log(counts / counts.sum())
    targets = [t for toks in test_ids for t in (toks + [eos_id])[1:]]
    return float(-logp[targets].mean())


def _build(out_dir: Path, build: TinyLMBuild, progress: bool, device: str = "cpu") -> dict:
    """Train tokenizer + tiny GPT-2 and save both (and build_info.json, last) into out_dir.

    On a CUDA device the forward passes run under bf16 autocast (fp32 master weights).
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    texts = textworld.sample_reviews(build.n_reviews, seed=build.seed)
    heldout = textworld.sample_reviews(build.n_heldout, seed=build.seed + 10_000)
    tokenizer = train_tokenizer(texts, vocab_size=build.vocab_size)
    train_ids = tokenizer(texts).input_ids
    rows = _pack_rows(train_ids, build.n_positions, tokenizer.eos_token_id)  # (n_rows, n_positions)

    torch.manual_seed(build.seed)
    config = tiny_gpt2_config(len(tokenizer), n_positions=build.n_positions, n_layer=build.n_layer,
                              n_embd=build.n_embd, n_head=build.n_head)
    model = GPT2LMHeadModel(config).to(device)
    model.loss_type = "ForCausalLM"  # what HF falls back to anyway, minus a warning (see _load_dir)
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                              enabled=torch.device(device).type == "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=build.lr, weight_decay=0.01)
    min_lr = build.lr / 10

    def lr_at(step):
        if step < build.warmup:
            return build.lr * (step + 1) / build.warmup
        frac = (step - build.warmup) / max(1, build.steps - build.warmup)
        return min_lr + 0.5 * (build.lr - min_lr) * (1 + math.cos(math.pi * frac))

    gen = torch.Generator().manual_seed(build.seed)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(build.threads)
    try:
        model.train()  # dropouts are 0, so train() and eval() compute the same function
        bar = tqdm(range(build.steps), desc="pretraining tiny GPT-2", disable=not progress)
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            batch = rows[torch.randint(len(rows), (build.batch_size,), generator=gen)].to(device)  # (B, T)
            with autocast:
                loss = model(input_ids=batch, labels=batch).loss  # HF shifts labels inside
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
        heldout_loss = _heldout_loss(model, tokenizer, heldout)
        model.cpu()
    finally:
        torch.set_num_threads(old_threads)
    heldout_ids = tokenizer(heldout).input_ids
    info = {
        "build": asdict(build),
        "hash": _build_hash(build),
        "n_params": sum(p.numel() for p in model.parameters()),
        "train_tokens": int(sum(len(t) + 1 for t in train_ids)),
        "heldout_loss": heldout_loss,
        "unigram_loss": _unigram_loss(train_ids, heldout_ids, tokenizer.eos_token_id, len(tokenizer)),
        "build_seconds": time.time() - t0,
    }
    with _quiet_progress_bars():
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    # written last: a folder without it is a partial build and is never loaded
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=1))
    return info


@contextlib.contextmanager
def _quiet_progress_bars():
    """Hide transformers' per-call "Loading weights" bars (noise in a notebook), then restore them."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_dir(path: Path):
    """Load model + tokenizer from a finished build folder, or raise if it is not one."""
    info = json.loads((path / "build_info.json").read_text())
    with _quiet_progress_bars():
        model = GPT2LMHeadModel.from_pretrained(path, local_files_only=True)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token_id == tokenizer.eos_token_id or len(tokenizer) != model.config.vocab_size:
        raise ValueError(f"inconsistent tokenizer in {path}")
    # transformers 5 cannot infer the loss from the name "GPT2LMHeadModel" and warns before using
    # the causal-LM loss for `labels=`; naming it here gives the same loss without the warning
    model.loss_type = "ForCausalLM"
    model.eval()
    return model, tokenizer, info


def load_tiny_lm(cache_dir=None, rebuild: bool = False, progress: bool = True,
                 build: TinyLMBuild | None = None,
                 device: str = "cpu") -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """The tiny review-language GPT-2 and its tokenizer, built on first use and cached.

    Args:
        cache_dir: where to cache; default ``$RLHF_COURSE_CACHE`` or ``~/.cache/rlhf_course``. The
            model lives in a subfolder ``tiny_lm-v<BUILD_VERSION>-<hash of everything that determines
            the build>``, so changing any of it builds afresh.
        rebuild: build even if a cached copy exists (and replace it).
        progress: show a tqdm bar while pretraining.
        build: the build settings; ``TinyLMBuild(steps=20)`` is a quick (bad) model for tests, and the
            capstone's GPU preset builds a GPT-2-124M-shaped one when the real GPT-2 is not cached.
        device: where to train if it must be built ("cuda": bf16 autocast); the model returned is on
            the CPU either way.
    Returns:
        (model in eval() mode on CPU, tokenizer). ``model.config.name_or_path`` is the cache folder,
        whose ``build_info.json`` holds the parameter count, held-out and unigram losses.

    Building writes to a temporary folder next to the final one and renames it into place, so a
    crash never leaves a half-written model where a later call would load it, and two processes
    building at once both end up loading one complete copy.
    """
    build = build or TinyLMBuild()
    final = tiny_lm_dir(cache_dir, build)
    if final.exists() and not rebuild:
        try:
            model, tokenizer, _ = _load_dir(final)
            print(f"tiny LM: loaded from {final}")
            return model, tokenizer
        except Exception as err:  # partial or corrupted: build a fresh one and replace it
            print(f"tiny LM: ignoring unusable cache {final} ({type(err).__name__}); rebuilding")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
    try:
        info = _build(tmp, build, progress, device)
        if final.exists() and not rebuild:  # another process may have finished first: keep its copy
            try:
                model, tokenizer, _ = _load_dir(final)
            except Exception:
                pass
            else:
                print(f"tiny LM: built in {info['build_seconds']:.0f} s, but another process saved "
                      f"{final} first; loaded that copy")
                return model, tokenizer
        if final.exists():  # an old or broken copy: move it aside, then delete it
            aside = Path(tempfile.mkdtemp(prefix=final.name + ".old-", dir=final.parent))
            try:
                os.replace(final, aside / "x")
            except FileNotFoundError:
                pass
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.replace(tmp, final)  # atomic on one filesystem
        except OSError:  # another process renamed its complete build in between: use that one
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model, tokenizer, _ = _load_dir(final)
    print(f"tiny LM: built in {info['build_seconds']:.0f} s and saved to {final} "
          f"({info['n_params'] / 1e6:.2f} M params, held-out loss {info['heldout_loss']:.2f} nats/token "
          f"vs unigram {info['unigram_loss']:.2f})")
    return model, tokenizer


def tiny_lm_info(cache_dir=None, build: TinyLMBuild | None = None) -> dict:
    """The build_info.json of a cached tiny LM (n_params, heldout_loss, unigram_loss, build_seconds)."""
    return json.loads((tiny_lm_dir(cache_dir, build) / "build_info.json").read_text())


# --------------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------------
GPT2_HUB_IDS = ("gpt2", "openai-community/gpt2")
"""The names GPT-2 124 M is cached under: the hub's old short id and the one its pages use today; a
cache holds whichever was downloaded (``huggingface-cli download openai-community/gpt2``, say)."""


def hub_downloads_allowed() -> bool:
    """True only where the learner set HF_HUB_OFFLINE=0 (or false/no/off) before importing this module."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() in ("0", "false", "no", "off")


def _load_gpt2(name_or_path: str = "gpt2"):
    """GPT-2 with a distinct pad token, dropout off, in eval() mode: from local files only, unless
    ``hub_downloads_allowed()``. "gpt2" tries both of its hub names (GPT2_HUB_IDS)."""
    import huggingface_hub.constants as hub_constants
    from transformers import AutoTokenizer

    local_only = not hub_downloads_allowed()

    def load(name):
        # Offline for this call even if transformers was imported before this module (see the top).
        was_offline, hub_constants.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE, local_only
        try:
            with _quiet_progress_bars():
                return (GPT2LMHeadModel.from_pretrained(name, local_files_only=local_only),
                        AutoTokenizer.from_pretrained(name, local_files_only=local_only))
        finally:
            hub_constants.HF_HUB_OFFLINE = was_offline

    *others, last = GPT2_HUB_IDS if name_or_path == "gpt2" else (name_or_path,)
    for name in others:                                  # the last name's error is the one raised
        try:
            model, tokenizer = load(name)
            break
        except Exception:
            continue
    else:
        model, tokenizer = load(last)
    # GPT-2 has no pad token, and pad = eos would hide the real EOS: add a distinct one
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"
    for attr in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):  # dropout off, as in RLHF practice
        setattr(model.config, attr, 0.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model.eval(), tokenizer


def load_policy(name: str = "auto"):
    """A language model to fine-tune: the real GPT-2 if available offline, else the tiny LM.

    Args:
        name: "gpt2" (GPT-2 124M from a LOCAL Hugging Face cache; falls back to tiny if absent),
            "tiny" (``load_tiny_lm()``) or "auto" (gpt2 if available locally, else tiny).
    Returns:
        (model in eval() mode on CPU, tokenizer with a distinct pad token, description string).
    The hub is never contacted: importing this module sets HF_HUB_OFFLINE=1 (unless it is already set)
    before transformers is imported, and ``local_files_only=True`` is passed, unless you set
    HF_HUB_OFFLINE=0 first: then GPT-2 is downloaded once into your Hugging Face cache.
    """
    if name not in ("auto", "gpt2", "tiny"):
        raise ValueError(f"name must be 'auto', 'gpt2' or 'tiny', got {name!r}")
    if name in ("auto", "gpt2"):
        try:
            model, tokenizer = _load_gpt2("gpt2")
        except Exception as err:
            print(f"load_policy: GPT-2 is not in the local Hugging Face cache "
                  f"({type(err).__name__}); using the tiny LM instead")
        else:
            n = sum(p.numel() for p in model.parameters())
            return model, tokenizer, f"gpt2 ({n / 1e6:.0f} M params, local Hugging Face cache)"
    model, tokenizer = load_tiny_lm()
    n = sum(p.numel() for p in model.parameters())
    return model, tokenizer, f"tiny ({n / 1e6:.2f} M params, {model.config.name_or_path})"


# --------------------------------------------------------------------------------------------------
# Sampling under left padding
# --------------------------------------------------------------------------------------------------
def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B, T) LongTensor of positions: cumsum(mask) - 1, clamped at 0.

    Under left padding the first real token of every row gets position 0, as it would alone.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def sample_from_logits(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids drawn from softmax(logits / temperature), one per row.

    By the inverse CDF: one uniform draw per row, located in the running sum of the probabilities.
    Four passes over the vocabulary and B random numbers, where torch.multinomial draws V exponentials
    per row (5x slower for GPT-2's 50,257 tokens). A token of probability 0 (logit −inf) is never drawn:
    the running sum does not rise at it and the search is for the first sum strictly above the draw.
    """
    scaled = logits / temperature
    cdf = (scaled - scaled.max(-1, keepdim=True).values).exp_().cumsum_(-1)               # (B, V) unnormalised
    u = torch.rand(logits.shape[0], 1, generator=generator, device=logits.device) * cdf[:, -1:]  # (B, 1)
    return torch.searchsorted(cdf, u, right=True)[:, 0].clamp_(max=logits.shape[-1] - 1)


@torch.no_grad()
def generate_responses(model, tokenizer, prompts: list[str] | torch.Tensor, max_new_tokens: int = 16,
                       temperature: float = 1.0, seed: int = 0, do_sample: bool = True,
                       stop_at_eos: bool = True, return_logits: bool = False,
                       return_hidden: bool = False, return_token_logprobs: bool = False) -> dict:
    """Sample a response to each prompt (a string, or a row of a (B, P) tensor of token ids), with the
    bookkeeping RLHF needs.

    A plain loop with a key/value cache: left-pad the queries to a common context length ctx, then
    draw one token per step from softmax(logits / temperature) (no top-k, no top-p;
    ``sample_from_logits``) or take the
    argmax (``do_sample=False`` or ``temperature == 0``). The pad token is never sampled. A row stops
    at its first EOS (``stop_at_eos=False``: every row generates all max_new_tokens, as a benchmark
    wants); later slots hold pad_token_id. Deterministic given seed (and the device).

    Returns a dict with
        "query_response": (B, ctx + R) LongTensor, left-padded query then response, R = max_new_tokens;
        "attention_mask": (B, ctx + R) LongTensor, 1 on real query tokens and real response tokens;
        "context_length": int ctx;
        "response_mask": (B, R) float, 1.0 for response tokens up to AND including the first EOS;
        "responses": list of B decoded responses, special tokens dropped, leading space dropped, so
            ``prompt + " " + response`` is the full text;
        "logits" (if return_logits): (B, R, V) float32, the model's raw logits (before the
            temperature, pad not masked) that predicted response token t, i.e. those of position
            ctx - 1 + t: what a full forward pass over query_response gives there, up to float
            rounding. RLHF reads the rollout policy's log-probs from them instead of a second pass;
        "hidden" (if return_hidden): (B, R, H), the last hidden state at the same positions (the
            input of a value head). Steps after every row has stopped are zeros (masked anyway);
        "token_logprobs" (if return_token_logprobs): (B, R) float32, the log-probability with which each
            response token was drawn: log softmax(logits / temperature) with the pad removed (temperature
            1 when greedy), 0 after the first EOS. The record a trainer's log π_old must agree with.
    Position ids are ``position_ids_from_mask(attention_mask)`` throughout, so padding does not
    shift any row.
    """
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad_id is None or pad_id == eos_id:
        raise ValueError("the tokenizer needs a pad token distinct from EOS")
    greedy = not do_sample or temperature == 0
    device = next(model.parameters()).device
    if isinstance(prompts, torch.Tensor):                       # token ids already, unpadded (benchmarks)
        query, query_mask = prompts.to(device), torch.ones_like(prompts, device=device)
    else:
        enc = tokenizer(list(prompts), padding=True, padding_side="left", return_tensors="pt")
        query, query_mask = enc.input_ids.to(device), enc.attention_mask.to(device)  # (B, ctx)
    B, ctx = query.shape
    gen = torch.Generator(device=device).manual_seed(seed)
    trunk, head = model.base_model, model.get_output_embeddings()  # the LM head only where it is needed
    cache = fast_gpt2.KVCache(trunk, B, ctx + max_new_tokens) if fast_gpt2.supports(trunk) else None

    mask = torch.cat([query_mask, torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)], 1)
    positions = position_ids_from_mask(query_mask)
    next_input, next_pos = query, positions
    past = None
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    step_logits = torch.zeros(B, max_new_tokens, head.out_features, device=device) if return_logits else None
    step_hidden = torch.zeros(B, max_new_tokens, head.in_features, device=device) if return_hidden else None
    step_logprobs = torch.zeros(B, max_new_tokens, device=device) if return_token_logprobs else None
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for t in range(max_new_tokens):
        if cache is not None:                                            # GPT-2: a cache written in place
            hidden = fast_gpt2.hidden_states(trunk, next_input, mask[:, :ctx + t], next_pos, cache)[:, -1]
        else:
            out = trunk(input_ids=next_input, attention_mask=mask[:, :ctx + t], position_ids=next_pos,
                        past_key_values=past, use_cache=True)
            past = out.past_key_values
            hidden = out.last_hidden_state[:, -1]                        # (B, H) at position ctx - 1 + t
        logits = fast_gpt2.lm_head(head, hidden).float().contiguous()    # (B, V)
        if return_logits:
            step_logits[:, t] = logits
        if return_hidden:
            step_hidden[:, t] = hidden
        logits[:, pad_id] = -float("inf")  # pad only ever marks "no token", never a sampled one
        token = logits.argmax(-1) if greedy else sample_from_logits(logits, temperature, gen)
        if return_token_logprobs:
            scaled = logits if greedy else logits / temperature
            drawn = scaled.log_softmax(-1).gather(1, token[:, None])[:, 0]                  # (B,)
            step_logprobs[:, t] = torch.where(done, torch.zeros_like(drawn), drawn)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        tokens[:, t] = token
        mask[:, ctx + t] = (~done).long()                                # EOS itself is real
        if stop_at_eos:
            done = done | (token == eos_id)
        next_input = token[:, None]
        next_pos = (mask.sum(-1, keepdim=True) - 1).clamp(min=0)         # position of the new token
        if stop_at_eos and bool(done.all()):
            break
    # real = at or before the first EOS; rows that never emit EOS are real for all R slots
    if stop_at_eos:
        is_eos = (tokens == eos_id).long()
        response_mask = ((torch.cumsum(is_eos, dim=1) - is_eos) == 0).float()  # (B, R)
    else:
        response_mask = torch.ones(B, max_new_tokens, device=device)
    attention_mask = torch.cat([query_mask, response_mask.long()], dim=1)
    texts = []
    for row, m in zip(tokens.cpu(), response_mask.cpu()):
        text = tokenizer.decode(row[m.bool()], skip_special_tokens=True)
        texts.append(text[1:] if text.startswith(" ") else text)
    result = {
        "query_response": torch.cat([query, tokens], dim=1),
        "attention_mask": attention_mask,
        "context_length": ctx,
        "response_mask": response_mask,
        "responses": texts,
    }
    if return_logits:
        result["logits"] = step_logits
    if return_hidden:
        result["hidden"] = step_hidden
    if return_token_logprobs:
        result["token_logprobs"] = step_logprobs
    return result


if __name__ == "__main__":
    # `python -m rlhf_course.tiny_lm`: build (or find) the cached tiny GPT-2 before anything times out
    # waiting for it: the book's executed pages, graded notebooks (30 s per cell) and the tests.
    load_tiny_lm()
