"""The tiny GPT-2 of the text world: tokenizer, config, cache, policy loader and sampling plumbing.

The real tiny LM is built once per session through the default path (``load_tiny_lm()``, cached in
``$RLHF_COURSE_CACHE`` or ``~/.cache/rlhf_course``: about a minute the first time, about a second
afterwards). Cache mechanics are tested on quick, deliberately bad builds in temporary folders.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import make_gpt2_shaped_checkpoint
from rlhf_course import textworld as tw
from rlhf_course.tiny_lm import (
    EOS_TOKEN, PAD_TOKEN, TinyLMBuild, generate_responses, load_tiny_lm, position_ids_from_mask,
    tiny_gpt2_config, tiny_lm_dir, tiny_lm_info, train_tokenizer,
)

QUICK = TinyLMBuild(n_reviews=300, n_heldout=20, steps=2, batch_size=4, warmup=1)
"""A build that takes a few seconds and learns nothing: for cache mechanics only."""
GRAMMAR_WORDS = set(" ".join(tw.SUBJECTS + tw.NEUTRAL + tw.OPENERS + tw.VERBS + tw.ADVERBS
                             + tw.CONJUNCTIONS).split()) | set(tw.LEXICON) | {"."}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run each test on one torch thread: tiny matmuls gain nothing from two, and on a CPU shared with
    other processes two spinning threads make sampling ~20x slower. Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny():
    """The default tiny LM (built on the first run on this machine, loaded afterwards)."""
    return load_tiny_lm(progress=False)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ tokenizer and config
def test_tokenizer_special_ids_and_round_trip():
    """pad != eos (pad = eos would hide the real EOS); decode(encode(review)) == review."""
    reviews = tw.sample_reviews(500, seed=1)
    tok = train_tokenizer(reviews, vocab_size=400)
    assert len(tok) == 400
    assert tok.eos_token == tok.bos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert (tok.eos_token_id, tok.pad_token_id) == (0, 1)
    assert tok.padding_side == "right"
    for r in tw.sample_reviews(50, seed=2) + ["Junk ### ünïcode text!!"]:
        ids = tok(r).input_ids
        assert tok.decode(ids) == r, "round trip failed: clean_up_tokenization_spaces on?"
        assert EOS_TOKEN not in tok.decode(ids) and 0 not in ids, "nothing special is added on encode"
    assert tok.decode(tok(reviews[0] + EOS_TOKEN).input_ids, skip_special_tokens=True) == reviews[0]


def test_tiny_config_size_and_dropout():
    """1–2 M parameters, every dropout 0, special ids set."""
    from transformers import GPT2LMHeadModel

    config = tiny_gpt2_config(512)
    n_params = sum(p.numel() for p in GPT2LMHeadModel(config).parameters())
    assert 1e6 <= n_params <= 2e6, n_params
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.0
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (0, 0, 1)
    assert tiny_gpt2_config(512, n_layer=2).n_layer == 2


def test_position_ids_from_mask_by_hand():
    """cumsum(mask) - 1, clamped at 0: a left-padded row starts at position 0."""
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]])
    want = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 1, 2, 2]])
    assert torch.equal(position_ids_from_mask(mask), want)


# ------------------------------------------------------------------ cache mechanics
def test_build_then_load_from_cache(tmp_path, capsys):
    """First call builds into the cache, second loads identical weights and says so."""
    model, tok = load_tiny_lm(cache_dir=tmp_path, progress=False, build=QUICK)
    assert "built" in capsys.readouterr().out
    assert not model.training and next(model.parameters()).device.type == "cpu"
    folder = tiny_lm_dir(tmp_path, QUICK)
    assert folder.is_dir() and (folder / "build_info.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [folder.name], "temporary build folders left behind"
    model2, tok2 = load_tiny_lm(cache_dir=tmp_path, progress=False, build=QUICK)
    out = capsys.readouterr().out
    assert "loaded" in out and str(folder) in out
    w1, w2 = _weights(model), _weights(model2)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert tok2(tw.sample_reviews(1)[0]).input_ids == tok(tw.sample_reviews(1)[0]).input_ids
    assert tiny_lm_info(tmp_path, QUICK)["n_params"] == sum(p.numel() for p in model.parameters())


def test_build_is_deterministic_and_hash_tracks_settings(tmp_path):
    """Same settings -> same weights (rebuild=True); other settings -> another cache folder."""
    model, _ = load_tiny_lm(cache_dir=tmp_path, progress=False, build=QUICK)
    again, _ = load_tiny_lm(cache_dir=tmp_path, progress=False, build=QUICK, rebuild=True)
    w1, w2 = _weights(model), _weights(again)
    assert all(torch.equal(w1[k], w2[k]) for k in w1), "the build must be deterministic given its seed"
    other = TinyLMBuild(**{**QUICK.__dict__, "seed": 1})
    assert tiny_lm_dir(tmp_path, other) != tiny_lm_dir(tmp_path, QUICK)
    assert tiny_lm_dir(tmp_path).name.startswith("tiny_lm-v")


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    """Without an argument the cache is $RLHF_COURSE_CACHE."""
    monkeypatch.setenv("RLHF_COURSE_CACHE", str(tmp_path / "c"))
    assert tiny_lm_dir(build=QUICK).parent == tmp_path / "c"


@pytest.mark.parametrize("damage", ["no_info", "truncated_weights", "garbage_info"])
def test_partial_or_corrupted_cache_is_rebuilt(tmp_path, capsys, damage):
    """A folder without build_info.json, with broken weights or a broken info file is never used."""
    load_tiny_lm(cache_dir=tmp_path, progress=False, build=QUICK)
    folder = tiny_lm_dir(tmp_path, QUICK)
    if damage == "no_info":
        (folder / "build_info.json").unlink()
    elif damage == "truncated_weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (folder / "build_info.json").write_text("{not json")
    capsys.readouterr()
    model, tok = load_tiny_lm(cache_dir=tmp_path, progress=False, build=QUICK)
    out = capsys.readouterr().out
    assert "ignoring unusable cache" in out and "built" in out, out
    assert model(torch.tensor([[0, 5, 6]])).logits.isfinite().all()
    assert (folder / "build_info.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name], "leftover temporary folders"


def test_two_processes_building_at_once(tmp_path):
    """Two processes building the same cache concurrently both succeed and leave one good copy."""
    code = textwrap.dedent(f"""
        from rlhf_course.tiny_lm import TinyLMBuild, load_tiny_lm
        model, tok = load_tiny_lm(cache_dir={str(tmp_path)!r}, progress=False, build=TinyLMBuild(**{QUICK.__dict__!r}))
        print("OK", sum(p.numel() for p in model.parameters()))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "OK" in out, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [tiny_lm_dir(tmp_path, QUICK).name]
    model, _ = load_tiny_lm(cache_dir=tmp_path, progress=False, build=QUICK)  # loads, does not build


# ------------------------------------------------------------------ the real tiny LM
def test_pretrained_model_learned_the_language(tiny):
    """Held-out loss far below the unigram baseline; completions are reviews that end with EOS."""
    model, tok = tiny
    info = tiny_lm_info()
    assert info["heldout_loss"] < 0.6 * info["unigram_loss"], info
    prompts = tw.sample_prompts(48, seed=11)
    for do_sample in (False, True):
        out = generate_responses(model, tok, prompts, max_new_tokens=24, seed=0, do_sample=do_sample)
        R = out["response_mask"].shape[1]
        ended = (out["query_response"][:, -R:] == tok.eos_token_id).any(-1).float().mean().item()
        assert ended >= 0.85, f"only {ended:.0%} of completions ended with EOS (do_sample={do_sample})"
        words = [w for r in out["responses"] for w in r.split()]
        grammatical = np.mean([w in GRAMMAR_WORDS for w in words])
        assert grammatical >= 0.95, f"{grammatical:.0%} grammar words: {out['responses'][:5]}"
        full_ok = np.mean([(p + " " + r).endswith(" .") for p, r in zip(prompts, out["responses"])])
        assert full_ok >= 0.85


def test_generate_shapes_masks_and_eos(tiny):
    """Shapes, masks up to and including the first EOS, pad after it, determinism given seed."""
    model, tok = tiny
    prompts = ["the pasta was", "honestly the waiter seemed", "i think the soup was"] * 4
    out = generate_responses(model, tok, prompts, max_new_tokens=10, seed=3)
    qr, am, rm, ctx = out["query_response"], out["attention_mask"], out["response_mask"], out["context_length"]
    assert ctx == max(len(tok(p).input_ids) for p in prompts)
    assert qr.shape == am.shape == (12, ctx + 10) and rm.shape == (12, 10)
    assert qr.dtype == torch.long and rm.dtype == torch.float32
    response = qr[:, ctx:]                                                     # (B, R)
    for row, mask in zip(response, rm):
        eos = (row == tok.eos_token_id).nonzero()
        n_real = int(eos[0]) + 1 if len(eos) else 10
        assert mask.tolist() == [1.0] * n_real + [0.0] * (10 - n_real), "mask must include the first EOS"
        assert (row[n_real:] == tok.pad_token_id).all(), "slots after EOS must hold pad"
        assert (row[:n_real] != tok.pad_token_id).all(), "pad is never a real token"
    assert torch.equal(am[:, ctx:], rm.long())
    assert torch.equal(am[:, :ctx], (qr[:, :ctx] != tok.pad_token_id).long()), "queries are left-padded"
    assert am[:, ctx - 1].all(), "left padding: every query's last token is real"
    again = generate_responses(model, tok, prompts, max_new_tokens=10, seed=3)
    assert torch.equal(again["query_response"], qr) and again["responses"] == out["responses"]
    other = generate_responses(model, tok, prompts, max_new_tokens=10, seed=4)
    assert not torch.equal(other["query_response"], qr)
    for r in out["responses"]:
        assert not r.startswith(" ") and EOS_TOKEN not in r and PAD_TOKEN not in r


def test_pad_is_never_sampled(tiny):
    """At a very high temperature (near-uniform sampling) the pad token still never appears."""
    model, tok = tiny
    out = generate_responses(model, tok, ["the soup was"] * 32, max_new_tokens=12, temperature=50.0)
    real = out["query_response"][:, out["context_length"]:][out["response_mask"].bool()]
    assert (real != tok.pad_token_id).all()


def test_greedy_generation_is_padding_invariant(tiny):
    """A row generates the same greedy tokens alone and inside a left-padded batch."""
    model, tok = tiny
    prompts = ["the pasta was", "honestly the waiter seemed", "i think the wine was", "the bread seemed"]
    batch = generate_responses(model, tok, prompts, max_new_tokens=12, do_sample=False)
    assert len({len(tok(p).input_ids) for p in prompts}) > 1, "prompts must need padding"
    for i, p in enumerate(prompts):
        alone = generate_responses(model, tok, [p], max_new_tokens=12, do_sample=False)
        assert torch.equal(alone["query_response"][0, alone["context_length"]:],
                           batch["query_response"][i, batch["context_length"]:]), p
        assert alone["responses"][0] == batch["responses"][i]


def test_cached_sampling_matches_a_full_forward(tiny):
    """Oracle for the key/value-cache loop: one full forward (position ids from the mask) on the
    returned query_response predicts every greedy token."""
    model, tok = tiny
    out = generate_responses(model, tok, tw.sample_prompts(8, seed=4), max_new_tokens=12, do_sample=False)
    qr, am, ctx = out["query_response"], out["attention_mask"], out["context_length"]
    with torch.no_grad():
        logits = model(input_ids=qr, attention_mask=am, position_ids=position_ids_from_mask(am)).logits
    logits[..., tok.pad_token_id] = -float("inf")
    pred = logits[:, ctx - 1:-1].argmax(-1)                       # (B, R): token t is predicted at ctx-1+t
    real = out["response_mask"].bool()
    assert torch.equal(pred[real], qr[:, ctx:][real])


def test_the_samplers_logits_and_hidden_states_are_a_full_forwards(tiny):
    """Oracle for rollout_logprobs="sampling": the logits and last hidden states the sampler keeps are those
    a full forward over query_response computes at positions ctx-1+t, on every real response token."""
    from rlhf_course.rlhf_ppo import response_logits

    model, tok = tiny
    out = generate_responses(model, tok, tw.sample_prompts(8, seed=5), max_new_tokens=12, temperature=0.7,
                             seed=3, return_logits=True, return_hidden=True)
    qr, am, ctx = out["query_response"], out["attention_mask"], out["context_length"]
    with torch.no_grad():
        logits, hidden = response_logits(model, qr, am, ctx)          # (B, R, V), (B, R, H)
    real = out["response_mask"].bool()
    assert real.sum() > 20
    torch.testing.assert_close(out["logits"][real], logits[real], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["hidden"][real], hidden[real], rtol=1e-4, atol=1e-4)


def test_lm_head_is_the_heads_product_and_sampling_logits_copy_it_contiguous():
    """fast_gpt2.lm_head computes head(hidden) as (W hᵀ)ᵀ on a CPU: the same numbers, transposed in
    memory; sampling_logits turns that into contiguous float32 logits with the pad at −inf, and the
    gradient reaches the head's weight and the hidden states as through head(hidden)."""
    from rlhf_course.fast_gpt2 import lm_head
    from rlhf_course.rlhf_ppo import sampling_logits

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(7, 16, requires_grad=True)
    logits = lm_head(head, hidden)
    torch.testing.assert_close(logits, head(hidden))
    assert logits.stride() == (1, 7)                       # the transpose of a (V, N) product
    out = sampling_logits(logits, pad_id=3)
    assert out.is_contiguous() and out.dtype == torch.float32 and torch.isneginf(out[:, 3]).all()
    assert torch.isfinite(logits).all()                    # the input is not changed
    weights = torch.randn(7, 50)
    weights[:, 3] = 0.0
    grads = torch.autograd.grad((out.masked_fill(torch.isinf(out), 0) * weights).sum(), (head.weight, hidden))
    expected = torch.autograd.grad((head(hidden) * weights).sum(), (head.weight, hidden))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)
    with_bias = torch.nn.Linear(16, 50)                    # a head with a bias is left to itself
    torch.testing.assert_close(lm_head(with_bias, hidden), with_bias(hidden))
    assert lm_head(with_bias, hidden).is_contiguous()


def test_sampling_logits_past_end_appends_the_unread_position_in_the_same_copy():
    """past_end=True: (B, R, V) -> (B, R + 1, V) for the graded response_log_probs, whose last position is
    never read: the first R positions are sampling_logits' own, the appended one zeros (pad at −inf), and
    the gradient of the first R reaches the input unchanged, as with the plain copy; bf16 input -> float32."""
    from rlhf_course.rlhf_ppo import sampling_logits

    torch.manual_seed(0)
    raw = torch.randn(3, 5, 11, dtype=torch.float64).float().requires_grad_()
    plain, past = sampling_logits(raw, pad_id=4), sampling_logits(raw, pad_id=4, past_end=True)
    assert past.shape == (3, 6, 11) and past.is_contiguous() and past.dtype == torch.float32
    assert torch.equal(past[:, :5], plain)
    assert torch.equal(past[:, 5, :4], torch.zeros(3, 4)) and torch.isneginf(past[:, 5, 4]).all()
    weights = torch.randn(3, 6, 11)
    finite = lambda x: x.masked_fill(torch.isinf(x), 0)  # noqa: E731
    got, = torch.autograd.grad((finite(past) * weights).sum(), raw)
    want, = torch.autograd.grad((finite(plain) * weights[:, :5]).sum(), raw)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    half = sampling_logits(raw.detach().bfloat16(), pad_id=4, past_end=True)
    assert half.dtype == torch.float32 and torch.equal(half[:, :5], sampling_logits(raw.detach().bfloat16(), 4))


def test_lm_head_through_onednn_is_the_heads_product_and_contiguous(monkeypatch):
    """A head large enough for oneDNN (GPT-2's) gives head(hidden) with contiguous logits and the same
    gradients; its weight's gradient is torch's product (faster there), and under autocast the head is
    left to torch."""
    from rlhf_course.fast_gpt2 import lm_head

    calls = _through_onednn(monkeypatch)
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(7, 16, requires_grad=True)
    logits = lm_head(head, hidden)
    torch.testing.assert_close(logits, head(hidden))
    assert logits.is_contiguous() and calls == [(50, 16)]
    weights = torch.randn(7, 50)
    grads = torch.autograd.grad((logits * weights).sum(), (head.weight, hidden))
    expected = torch.autograd.grad((head(hidden) * weights).sum(), (head.weight, hidden))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)
    assert calls == [(50, 16), (16, 50)], "forward and dx through oneDNN, the weight's gradient through torch"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lm_head(head, hidden).dtype == torch.bfloat16 and len(calls) == 2


def test_gpt2_through_onednn_matches_float64_with_the_tied_sparse_embedding(monkeypatch):
    """use_fast_kernels' GPT-2 (sparse embedding gradient tied to the head's dense one) with every
    product through oneDNN: response logits and every parameter's gradient equal a float64
    transformers model's to float32 rounding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_course.rlhf_ppo import response_logits, use_fast_kernels

    calls = _through_onednn(monkeypatch)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=300, n_positions=32, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    exact = GPT2LMHeadModel(config).double()
    fast = use_fast_kernels(GPT2LMHeadModel(config))
    fast.load_state_dict({k: v.float() for k, v in exact.state_dict().items()})
    assert fast.transformer.wte.sparse
    ids = torch.randint(0, 300, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0

    def logits_and_grads(model):
        logits, hidden = response_logits(model, ids, mask, 4)
        (logits.double().sin().sum() + hidden.double().cos().sum()).backward()
        return logits.double(), {n: (p.grad.to_dense() if p.grad.is_sparse else p.grad).double()
                                 for n, p in model.named_parameters()}

    want_logits, want = logits_and_grads(exact)
    got_logits, got = logits_and_grads(fast)
    assert len(calls) == 2 * 4 * 3 + 2, "every product: 4 a block, forward and 2 backward; the head: 2"
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    for name, g in want.items():
        scale = g.abs().max().clamp(min=1e-6)
        assert ((got[name] - g).abs().max() / scale) < 1e-5, name


@pytest.mark.parametrize("kernels", ["torch", "onednn"])
def test_tied_head_weight_adds_the_sparse_rows_in_place_to_the_same_bits(kernels, monkeypatch):
    """With use_fast_kernels' tied sparse embedding, the head's weight from tied_head_weight gives
    bit-identical gradients to the head's own weight, with the tiny GPT-2's products and with GPT-2
    small's (oneDNN), but autograd adds the embedding's sparse rows into the head's dense gradient in
    place instead of copying it (the control makes that copy). With no gradient, untied or dense,
    tied_head_weight is the head's weight itself."""
    from torch.profiler import profile
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_course.fast_gpt2 import lm_head, tied_head_weight
    from rlhf_course.rlhf_ppo import use_fast_kernels

    if kernels == "onednn":
        _through_onednn(monkeypatch)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=300, n_positions=32, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = use_fast_kernels(GPT2LMHeadModel(config))
    head = model.get_output_embeddings()
    ids = torch.randint(0, 300, (3, 9))

    def grads_and_full_copies(held: bool):
        weight = tied_head_weight(model) if held else head.weight
        hidden = model.transformer(input_ids=ids).last_hidden_state.reshape(27, 64)
        with profile(record_shapes=True) as prof:
            lm_head(head, hidden, weight).sin().sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        copies = [e for e in prof.events() if e.name == "aten::copy_" and list(e.input_shapes[:1]) == [[300, 64]]]
        return grads, len(copies)

    plain, plain_copies = grads_and_full_copies(held=False)
    held, held_copies = grads_and_full_copies(held=True)
    assert plain_copies >= 1 and held_copies == 0, (plain_copies, held_copies)
    assert not held["transformer.wte.weight"].is_sparse
    for name, g in plain.items():
        assert torch.equal(held[name], g), name
    assert tied_head_weight(model) is not head.weight
    with torch.no_grad():
        assert tied_head_weight(model) is head.weight
    model.transformer.wte.sparse = False
    assert tied_head_weight(model) is head.weight


def test_the_onednn_kernel_is_probed_before_it_is_used():
    """A kernel that answers wrongly, in another dtype, or raises, is not used; torch's own one is."""
    from rlhf_course import fast_gpt2

    def right(x, w, b, *_):
        return x @ w.t() + b

    assert fast_gpt2._computes_linear(right)
    assert not fast_gpt2._computes_linear(lambda x, w, b, *_: x @ w.t())                  # no bias
    assert not fast_gpt2._computes_linear(lambda x, w, b, *_: (x @ w.t() + b).double())  # another dtype
    assert not fast_gpt2._computes_linear(lambda *_: (_ for _ in ()).throw(RuntimeError("no such op")))
    if fast_gpt2.onednn_kernel() is not None:
        assert fast_gpt2._computes_linear(fast_gpt2.onednn_kernel())


def test_response_logits_are_the_models_own_logits(tiny):
    """response_logits (the trunk on all positions but the last, the head on the R that predict a response
    token) equals transformers' full logits there, on left-padded rows that stop at EOS."""
    from rlhf_course.rlhf_ppo import response_logits

    model, tok = tiny
    out = generate_responses(model, tok, tw.sample_prompts(6, seed=8), max_new_tokens=10, seed=2)
    qr, am, ctx = out["query_response"], out["attention_mask"], out["context_length"]
    with torch.no_grad():
        full = model(input_ids=qr, attention_mask=am, position_ids=position_ids_from_mask(am)).logits
        logits, _ = response_logits(model, qr, am, ctx)
    assert (am[:, 0] == 0).any() and (am[:, -1] == 0).any()        # left padding, and a row that stopped
    torch.testing.assert_close(logits, full[:, ctx - 1:-1], rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_reuses_freed_blocks_instead_of_faulting_them_in_again():
    """Rounds of the same large temporaries (as training iterations allocate): with glibc's defaults
    every round maps them afresh and faults in every page again (the control, ≈ 37,000 faults a
    round); after keep_freed_memory() the heap stops growing and later rounds reuse its pages."""
    code = textwrap.dedent("""
        import resource, sys, torch
        from rlhf_course.rlhf_ppo import keep_freed_memory
        if sys.argv[1] == "keep":
            assert keep_freed_memory()
        faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        w = torch.randn(512, 512)
        per_round = []
        for _ in range(8):
            before = faults()
            x = torch.ones(8 * 2**20)                  # 32 MB, 64 MB and 8 MB temporaries a round
            y = (x * 2).repeat(2)
            z = torch.randn(4096, 512) @ w
            s = [str(k) * 10 for k in range(2000)]     # and small objects in between
            del x, y, z, s
            per_round.append(faults() - before)
        print(sum(per_round[3:]))                      # the last 5 rounds
    """)
    faults = {}
    for mode in ("default", "keep"):
        proc = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        faults[mode] = int(proc.stdout.split()[-1])
    assert faults["default"] > 5 * 20_000, faults          # ≥ 80 MB of fresh pages a round
    assert faults["keep"] < faults["default"] / 4, faults


# ------------------------------------------------------------------ load_policy
def test_load_policy_offline_falls_back_to_tiny(tiny, tmp_path):
    """With an empty Hugging Face cache, "gpt2" and "auto" fall back to the tiny LM with a message."""
    code = textwrap.dedent("""
        import socket
        attempts = []
        def refuse(self, address, *args, **kwargs):
            attempts.append(address)
            raise OSError("network disabled by the test")
        socket.socket.connect = refuse          # any hub request would land here
        socket.socket.connect_ex = refuse
        from rlhf_course.tiny_lm import load_policy
        import huggingface_hub.constants as hub_constants   # first imported by the line above
        print("HUB_OFFLINE_AT_IMPORT", hub_constants.HF_HUB_OFFLINE)
        for name in ("gpt2", "auto", "tiny"):
            model, tok, desc = load_policy(name)
            print("DESC", name, desc, tok.pad_token_id != tok.eos_token_id)
        print("CONNECTS", len(attempts))
    """)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    env.pop("HF_HUB_OFFLINE", None)  # load_policy itself must make the hub offline
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "CONNECTS 0" in lines, f"the loader tried the network: {proc.stdout}"
    assert "HUB_OFFLINE_AT_IMPORT True" in lines, "importing rlhf_course.tiny_lm must make the hub offline first"
    assert sum("not in the local Hugging Face cache" in line for line in lines) == 2, proc.stdout
    for name in ("gpt2", "auto", "tiny"):
        assert any(line.startswith(f"DESC {name} tiny") and line.endswith("True") for line in lines), proc.stdout
    with pytest.raises(ValueError):
        from rlhf_course.tiny_lm import load_policy
        load_policy("gpt3")


def test_gpt2_branch_adds_a_distinct_pad_and_turns_dropout_off(tmp_path, monkeypatch):
    """The GPT-2 loader on a local GPT-2-shaped checkpoint (no pad, dropout on): pad added and distinct,
    embeddings resized to the new vocabulary, every dropout 0, eval() mode, nothing downloaded."""
    import huggingface_hub.constants as hub_constants
    from rlhf_course.tiny_lm import _load_gpt2

    make_gpt2_shaped_checkpoint(tmp_path)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)  # as if transformers came in before us
    model, tok = _load_gpt2(str(tmp_path))
    assert hub_constants.HF_HUB_OFFLINE is False, "the loader must restore the hub's offline flag"
    assert tok.pad_token == PAD_TOKEN and tok.pad_token_id != tok.eos_token_id and len(tok) == 301
    assert model.get_input_embeddings().num_embeddings == 301 and model.config.pad_token_id == tok.pad_token_id
    assert not model.training and all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    out = generate_responses(model, tok, ["the soup was", "overall the pasta seemed"], max_new_tokens=4)
    assert out["query_response"].shape[1] == out["context_length"] + 4


def test_gpt2_is_looked_up_under_both_hub_names_and_downloaded_only_when_allowed(tmp_path, monkeypatch):
    """A cache may hold GPT-2 as "gpt2" or as "openai-community/gpt2": both are tried, offline, in that order;
    HF_HUB_OFFLINE=0 (set by the learner) is the only way the loader lets transformers download."""
    from rlhf_course import tiny_lm

    checkpoint = make_gpt2_shaped_checkpoint(tmp_path)
    tried, real = [], tiny_lm.GPT2LMHeadModel.from_pretrained

    def from_pretrained(name, local_files_only):
        tried.append((name, local_files_only))
        if name != "openai-community/gpt2":
            raise OSError(f"{name} is not in the cache")
        return real(checkpoint, local_files_only=True)

    monkeypatch.setattr(tiny_lm.GPT2LMHeadModel, "from_pretrained", from_pretrained)
    import transformers
    real_tokenizer = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda name, local_files_only: real_tokenizer(checkpoint, local_files_only=True))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = tiny_lm._load_gpt2("gpt2")
    assert tried == [("gpt2", True), ("openai-community/gpt2", True)] and tok.pad_token_id != tok.eos_token_id
    tried.clear()
    with pytest.raises(OSError, match="elsewhere is not in the cache"):
        tiny_lm._load_gpt2("elsewhere")                     # a path or another name: that one only
    assert tried == [("elsewhere", True)]
    tried.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    tiny_lm._load_gpt2("gpt2")
    assert tried == [("gpt2", False), ("openai-community/gpt2", False)]


# ------------------------------------------------------------------ fast_gpt2: the same function, less overhead
def test_attention_scale_without_transformers_scaling_attribute():
    """transformers 5.x releases before March 2026 have no GPT2Attention.scaling: the factor comes from the
    config flags it was computed from, equal to it where it exists."""
    from transformers import GPT2Config, GPT2Model

    from rlhf_course import fast_gpt2

    for flags in ({}, {"scale_attn_weights": False}, {"scale_attn_by_inverse_layer_idx": True}):
        trunk = GPT2Model(GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=50, n_positions=16, **flags))
        for block in trunk.h:
            want = block.attn.scaling
            del block.attn.scaling
            assert fast_gpt2.attention_scale(block.attn, 8) == pytest.approx(want, rel=1e-12), (flags, block.attn.layer_idx)
            block.attn.scaling = 0.123
            assert fast_gpt2.attention_scale(block.attn, 8) == 0.123
def _through_onednn(monkeypatch) -> list:
    """Send every float32 product of fast_gpt2 through oneDNN, however small; returns a list that
    records each call of the kernel (the test is skipped where this torch has no usable kernel)."""
    from rlhf_course import fast_gpt2

    op = fast_gpt2.onednn_kernel()
    if op is None:
        pytest.skip("no usable oneDNN linear kernel in this torch build")
    calls = []

    def counting(*args):
        calls.append(tuple(args[1].shape))
        return op(*args)

    monkeypatch.setattr(fast_gpt2, "ONEDNN_MIN_WEIGHT", 1)
    monkeypatch.setattr(fast_gpt2, "onednn_kernel", lambda: counting)
    return calls


@pytest.mark.parametrize("kernels", ["torch", "onednn"])
def test_fast_gpt2_matches_transformers_on_left_padded_batches(kernels, monkeypatch):
    """Outputs and gradients of the written-out forward equal transformers'; the key/value cache
    gives the full pass's hidden states; what it does not cover falls through to transformers.
    "onednn": the same with every block's product through oneDNN (``fast_gpt2._OneDNNLinear``, which
    GPT-2 small's weights take), forward, backward and decoding steps."""
    import copy

    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_course import fast_gpt2

    calls = _through_onednn(monkeypatch) if kernels == "onednn" else None
    torch.manual_seed(0)
    fast = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=48, n_head=4, vocab_size=97, n_positions=32,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    slow = copy.deepcopy(fast)
    assert fast_gpt2.install(fast) and "_transformers_forward" in vars(fast.transformer)
    ids = torch.randint(0, 97, (4, 11))
    mask = torch.ones(4, 11, dtype=torch.long)
    mask[1, :3], mask[2, :5] = 0, 0                                        # left padding
    pos = position_ids_from_mask(mask)
    real = mask.bool()
    out_fast = fast(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    out_slow = slow(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    assert torch.isfinite(out_fast).all(), "a padded query row must not produce NaN"
    assert torch.allclose(out_fast[real], out_slow[real], atol=1e-5)
    out_fast[real].log_softmax(-1)[:, 7].sum().backward()
    out_slow[real].log_softmax(-1)[:, 7].sum().backward()
    for (name, p), q in zip(fast.named_parameters(), slow.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name
    with torch.no_grad():
        full = slow.transformer(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
        cache = fast_gpt2.KVCache(fast.transformer, 4, 11)
        steps = [fast_gpt2.hidden_states(fast.transformer, ids[:, :6], mask[:, :6], pos[:, :6], cache)]
        for t in range(6, 11):
            steps.append(fast_gpt2.hidden_states(fast.transformer, ids[:, t:t + 1], mask[:, :t + 1], pos[:, t:t + 1], cache))
        assert torch.allclose(torch.cat(steps, 1)[real], full[real], atol=1e-5)
        # output_hidden_states is not covered: transformers answers, with every layer's states
        assert len(fast(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states) == 4
    assert not fast_gpt2.install(torch.nn.Linear(2, 2)), "only GPT-2 trunks are rewritten"
    if calls is not None:
        # 4 products a block (3 blocks): the graded pass's forward, its backward (dx and the weight's
        # gradient), then the cache's 6-token pass and its 5 one-token steps
        assert len(calls) == 3 * 4 * (1 + 2 + 1 + 5), len(calls)
        assert {(144, 48), (48, 48), (192, 48), (48, 192)} <= set(calls)              # W (out, in), forward


def test_sampling_draws_from_the_tempered_softmax():
    """sample_from_logits: token frequencies match softmax(logits / T) (a chi-square test at a 1e-4 false-alarm
    rate), a −inf logit is never drawn, and it is deterministic given the generator."""
    from rlhf_course.tiny_lm import sample_from_logits

    logits = torch.tensor([1.0, 0.0, -1.0, 2.0, -float("inf"), 0.5])
    p = torch.softmax(logits / 0.7, -1)
    n = 60_000
    draws = sample_from_logits(logits.expand(n, -1).clone(), 0.7, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=6).double()
    assert counts[4] == 0, "a token of probability 0 was drawn"
    keep = p > 0
    chi2 = float((((counts - n * p) ** 2) / (n * p))[keep].sum())
    assert chi2 < 25.7, f"chi-square {chi2:.1f} with 4 degrees of freedom: not softmax(logits / T)"  # p ≈ 4e-5
    again = sample_from_logits(logits.expand(n, -1).clone(), 0.7, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    # a wrong temperature (T = 1 instead of 0.7) is caught by the same test: it can go red
    wrong = torch.bincount(sample_from_logits(logits.expand(n, -1).clone(), 1.0, torch.Generator().manual_seed(0)),
                           minlength=6).double()
    assert float((((wrong - n * p) ** 2) / (n * p))[keep].sum()) > 25.7
