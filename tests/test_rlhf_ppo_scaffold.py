"""Unit tests of rlhf_course.rlhf_ppo, the PPO-RLHF scaffolding (with reference graded functions).

The reference functions below are written differently from the exercise's solution on purpose (loops,
torch instead of numpy where convenient), so that a shared mistake cannot hide.
"""
import numpy as np
import pytest
import torch

from rlhf_course.rlhf_ppo import (TRL_METRICS, FixedKLController, RLHFConfig, make_rlhf_state, make_value_head,
                                  ppo_rlhf_iteration, token_gae)


def ref_kl_estimates(log_probs, ref_log_probs):
    q = np.exp(np.asarray(ref_log_probs) - np.asarray(log_probs))   # π_ref / π
    return -np.log(q), 0.5 * np.log(q) ** 2, q - 1 - np.log(q)


def ref_per_token_rewards(scores, log_probs, ref_log_probs, mask, kl_coef):
    out = np.zeros(np.shape(mask))
    for i in range(out.shape[0]):
        real = np.flatnonzero(np.asarray(mask)[i] > 0)
        out[i, real] = -kl_coef * (log_probs[i, real] - ref_log_probs[i, real])
        out[i, real[-1]] += scores[i]
    return out


def ref_masked_mean(x, mask):
    return float(np.asarray(x)[np.asarray(mask) > 0].mean())


def ref_masked_whiten(x, mask, shift_mean=True):
    x, mask = np.asarray(x, dtype=float), np.asarray(mask)
    real = x[mask > 0]
    out = (x - real.mean()) / np.sqrt(real.var() + 1e-8) + (0.0 if shift_mean else real.mean())
    return np.where(mask > 0, out, 0.0)


def ref_response_log_probs(logits, input_ids, context_length, temperature=1.0):
    logp = torch.log_softmax(logits[:, context_length - 1:-1] / temperature, dim=-1)
    return logp.gather(-1, input_ids[:, context_length:, None])[..., 0]


FNS = dict(response_log_probs=ref_response_log_probs, per_token_rewards=ref_per_token_rewards,
           masked_mean=ref_masked_mean, masked_whiten=ref_masked_whiten, kl_estimates=ref_kl_estimates)


def tiny(**kwargs) -> RLHFConfig:
    return RLHFConfig(**{"batch_size": 8, "response_length": 10, "seed": 3, **kwargs})


def state_dict_copy(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def one_iteration():
    cfg = tiny()
    state = make_rlhf_state(cfg)
    policy0, ref0 = state_dict_copy(state.policy), state_dict_copy(state.ref_policy)
    metrics = ppo_rlhf_iteration(state, cfg, **FNS)
    return cfg, state, policy0, ref0, metrics


def test_metrics_have_trl_names_and_sane_values(one_iteration):
    _, _, _, _, metrics = one_iteration
    missing = [k for k in TRL_METRICS if k not in metrics]
    assert not missing, f"missing TRL metrics: {missing}"
    assert metrics["sanity/first_ratio_max_dev"] < 1e-4, "ratio must be 1 on the first minibatch"
    for key in ("loss/policy_avg", "loss/value_avg", "objective/kl", "policy/approxkl_avg", "val/ratio"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["policy/clipfrac_avg"] <= 1 and metrics["policy/approxkl_avg"] >= 0
    # Before any update policy and reference are the same model: the KL of the rollout is exactly 0.
    assert metrics["objective/kl"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["objective/rlhf_reward"] == pytest.approx(metrics["objective/scores"], abs=1e-5)


def test_policy_moves_reference_does_not(one_iteration):
    _, state, policy0, ref0, _ = one_iteration
    assert any(not torch.equal(v, state.policy.state_dict()[k]) for k, v in policy0.items())
    assert all(torch.equal(v, state.ref_policy.state_dict()[k]) for k, v in ref0.items())
    assert all(not p.requires_grad for p in state.ref_policy.parameters())


def test_second_iteration_sees_a_positive_kl(one_iteration):
    cfg, state, _, _, _ = one_iteration
    metrics = ppo_rlhf_iteration(state, cfg, **FNS)
    assert metrics["objective/kl"] != 0.0 and metrics["objective/kl_k3"] > 0, "the policy moved: KL(π‖π_ref) > 0"
    assert metrics["sanity/first_ratio_max_dev"] < 1e-4
    assert metrics["episode"] == 2 * cfg.batch_size and len(state.history) == 2


def test_bf16_autocast_runs_on_a_cpu():
    """bf16=True is autocast on whatever device the loop runs on (TRL's bf16=True does the same through
    accelerate). Its logits differ from fp32's by bf16 rounding, so the same seed gives other numbers; the
    sampler's and the training pass's logits still agree: to the last bit with rollout_logprobs="forward"
    (the same pass twice), and to bf16's rounding (2^-8 relative) with "sampling", whose one-token-at-a-time
    matmuls round differently from the training pass's (on a CPU without bf16 instructions, 9e-4 here)."""
    runs = {}
    for name, kw, tol in [("fp32", {}, 1e-4), ("bf16", {"bf16": True}, 2 ** -8),
                          ("bf16-forward", {"bf16": True, "rollout_logprobs": "forward"}, 1e-4)]:
        cfg = tiny(**kw)
        runs[name] = ppo_rlhf_iteration(make_rlhf_state(cfg), cfg, **FNS)
        assert runs[name]["sanity/first_ratio_max_dev"] < tol, name
        # KL(π‖π_ref) before any step: 0, up to the same rounding on each of the R tokens
        kl_tol = 1e-5 if tol < 2 ** -8 else tol * cfg.response_length
        assert np.isfinite(runs[name]["loss/policy_avg"]) and runs[name]["objective/kl"] == pytest.approx(0, abs=kl_tol)
    assert abs(runs["bf16"]["policy/entropy_avg"] - runs["fp32"]["policy/entropy_avg"]) > 1e-4, \
        "bf16=True computed exactly what fp32 does: was autocast applied?"
    assert runs["bf16-forward"]["policy/entropy_avg"] == pytest.approx(runs["bf16"]["policy/entropy_avg"], rel=1e-3)


def test_value_head_starts_at_zero():
    head = make_value_head(16)
    assert torch.equal(head(torch.randn(3, 16)), torch.zeros(3, 1))


def test_deterministic_under_a_seed():
    a, b, c = make_rlhf_state(tiny()), make_rlhf_state(tiny()), make_rlhf_state(tiny(seed=4))
    ma = ppo_rlhf_iteration(a, tiny(), **FNS)
    mb = ppo_rlhf_iteration(b, tiny(), **FNS)
    mc = ppo_rlhf_iteration(c, tiny(seed=4), **FNS)
    assert a.last_rollout["responses"] == b.last_rollout["responses"]
    for k, v in a.policy.state_dict().items():
        assert torch.equal(v, b.policy.state_dict()[k])
    assert ma["loss/policy_avg"] == mb["loss/policy_avg"]
    assert a.last_rollout["responses"] != c.last_rollout["responses"] or ma["loss/policy_avg"] != mc["loss/policy_avg"]


def test_kl_controller_is_called_with_the_rollout_kl():
    calls = []

    class Spy(FixedKLController):
        def update(self, current_kl, n_steps):
            calls.append((current_kl, n_steps))

    state = make_rlhf_state(tiny(), Spy(0.05))
    metrics = ppo_rlhf_iteration(state, tiny(), **FNS)
    assert calls == [(metrics["objective/kl"], 8)]


def test_student_log_probs_drive_the_gradient():
    # With a detached response_log_probs nothing reaches the LM on the first (and here only) step: the
    # value head is zero-initialised, so the value loss sends no gradient into the shared trunk either.
    def detached(logits, input_ids, context_length, temperature=1.0):
        return ref_response_log_probs(logits, input_ids, context_length, temperature).detach()

    cfg = tiny(num_ppo_epochs=1, num_minibatches=1)
    frozen = make_rlhf_state(cfg)
    policy0 = state_dict_copy(frozen.policy)
    ppo_rlhf_iteration(frozen, cfg, **{**FNS, "response_log_probs": detached})
    assert all(torch.equal(v, frozen.policy.state_dict()[k]) for k, v in policy0.items())
    live = make_rlhf_state(cfg)
    ppo_rlhf_iteration(live, cfg, **FNS)
    assert any(not torch.equal(v, live.policy.state_dict()[k]) for k, v in policy0.items())


def test_a_broken_function_is_caught():
    # A sign error in the KL reward makes the rewards differ from the reference once the policy has
    # moved; log-probs of the wrong shape must raise rather than be broadcast silently.
    state = make_rlhf_state(tiny())

    def plus_kl(scores, log_probs, ref_log_probs, mask, kl_coef):
        return ref_per_token_rewards(scores, log_probs, ref_log_probs, mask, -kl_coef)

    ppo_rlhf_iteration(state, tiny(), **FNS)
    good = make_rlhf_state(tiny())
    ppo_rlhf_iteration(good, tiny(), **FNS)
    ppo_rlhf_iteration(state, tiny(), **{**FNS, "per_token_rewards": plus_kl})
    ppo_rlhf_iteration(good, tiny(), **FNS)
    assert not np.allclose(state.last_rollout["rewards"], good.last_rollout["rewards"])

    def wrong_shape(logits, input_ids, context_length, temperature=1.0):
        return ref_response_log_probs(logits, input_ids, context_length, temperature)[:, :-1]

    with pytest.raises(Exception):
        ppo_rlhf_iteration(make_rlhf_state(tiny()), tiny(), **{**FNS, "response_log_probs": wrong_shape})


def test_token_gae_matches_explicit_sum():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    gamma, lam = 0.9, 0.8
    adv, ret = token_gae(rewards, values, gamma, lam)
    nxt = np.concatenate([values[:, 1:], np.zeros((3, 1))], 1)
    delta = rewards + gamma * nxt - values
    for t in range(5):
        want = sum((gamma * lam) ** (k - t) * delta[:, k] for k in range(t, 5))
        assert np.allclose(adv[:, t], want)
    assert np.allclose(ret, adv + values)


def test_the_same_iteration_runs_on_a_gpt2_shaped_policy(tmp_path, monkeypatch):
    """make_rlhf_state(policy="gpt2") goes through load_policy's GPT-2 branch (another tokenizer, a pad
    token added to it, resized embeddings) and ppo_rlhf_iteration runs on it unchanged."""
    import rlhf_course.tiny_lm as tiny_lm
    from conftest import make_gpt2_shaped_checkpoint

    checkpoint = make_gpt2_shaped_checkpoint(tmp_path / "gpt2-like")
    load_local = tiny_lm._load_gpt2
    monkeypatch.setattr(tiny_lm, "_load_gpt2", lambda name="gpt2": load_local(str(checkpoint)))
    cfg = tiny()
    state = make_rlhf_state(cfg, policy="gpt2")
    assert state.description.startswith("gpt2") and state.policy.config.n_embd == 32
    assert state.tokenizer.pad_token_id != state.tokenizer.eos_token_id
    policy0 = state_dict_copy(state.policy)
    # An untrained model writes bytes the gold reward scores 0: score the response length instead.
    metrics = ppo_rlhf_iteration(state, cfg, **FNS, reward_fn=lambda texts: np.array([len(t) / 10 for t in texts]))
    assert metrics["sanity/first_ratio_max_dev"] < 1e-4 and metrics["objective/scores"] > 0
    assert all(np.isfinite(metrics[k]) for k in ("loss/policy_avg", "loss/value_avg", "objective/scores"))
    assert any(not torch.equal(v, state.policy.state_dict()[k]) for k, v in policy0.items())
    with pytest.raises(ValueError):
        make_rlhf_state(cfg, policy="gpt-3")


def _sampler_log_prob_oracle(model, tokenizer, query_response, ctx, mask, T):
    """Per token, with no padding and no cache: log p(y_t) under softmax(logits / T) with the pad removed,
    the distribution generate_responses draws from. Also the same under the full softmax."""
    pad = tokenizer.pad_token_id
    B, R = mask.shape
    want, full = np.zeros((B, R)), np.zeros((B, R))
    with torch.no_grad():
        for i in range(B):
            query = query_response[i, :ctx]
            query = query[query != pad]
            for t in range(int(mask[i].sum())):
                ids = torch.cat([query, query_response[i, ctx:ctx + t]])[None]
                logits = model(input_ids=ids).logits[0, -1].double() / T
                token = int(query_response[i, ctx + t])
                full[i, t] = float(torch.log_softmax(logits, -1)[token])
                logits[pad] = -float("inf")
                want[i, t] = float(torch.log_softmax(logits, -1)[token])
    return want, full


@pytest.mark.parametrize("policy", ["tiny", "gpt2"])
def test_log_probs_are_those_of_the_sampling_distribution(policy, tmp_path, monkeypatch):
    """The sampler never draws pad, so log π_old and log π_ref must be normalised without it (a loop
    that left pad in the softmax would be off by log(1 − p_pad) at every token). Checked against a
    per-token forward with no padding, on the tiny LM (its pad made as likely as EOS, so the check
    can fail) and on a GPT-2 whose pad token was added and mean-initialised by load_policy."""
    if policy == "gpt2":
        import rlhf_course.tiny_lm as tiny_lm
        from conftest import make_gpt2_shaped_checkpoint

        checkpoint = make_gpt2_shaped_checkpoint(tmp_path / "gpt2-like")
        load_local = tiny_lm._load_gpt2
        monkeypatch.setattr(tiny_lm, "_load_gpt2", lambda name="gpt2": load_local(str(checkpoint)))
    cfg = tiny(num_ppo_epochs=1, num_minibatches=1)
    state = make_rlhf_state(cfg, policy=policy)
    tok = state.tokenizer
    if policy == "tiny":   # a pad as likely as EOS (tied head: same logit); pad inputs are never attended
        with torch.no_grad():
            for model in (state.policy, state.ref_policy):
                emb = model.get_input_embeddings().weight
                emb[tok.pad_token_id] = emb[tok.eos_token_id]
    reward_fn = lambda texts: np.array([len(t) / 10 for t in texts])  # noqa: E731 (bytes of an untrained GPT-2)
    metrics = ppo_rlhf_iteration(state, cfg, **FNS, reward_fn=reward_fn)
    roll = state.last_rollout
    want, full = _sampler_log_prob_oracle(state.ref_policy, tok, roll["query_response"], roll["context_length"],
                                          roll["mask"], cfg.temperature)
    mask = roll["mask"] > 0
    assert np.abs(full - want)[mask].max() > 1e-3, "the pad token is too unlikely here for the check to fail"
    # the policy has not moved at rollout time: π_old = π_ref = the sampling distribution
    assert np.allclose(roll["ref_logprobs"][mask], want[mask], atol=2e-4)
    assert np.allclose(roll["logprobs"][mask], want[mask], atol=2e-4)
    assert np.all(roll["logprobs"][~mask] == 0) and np.isfinite(metrics["policy/entropy_avg"])
    assert metrics["sanity/first_ratio_max_dev"] < 1e-4 and np.isfinite(metrics["loss/policy_avg"])


@pytest.mark.parametrize("rollout_logprobs", ["sampling", "forward"])
def test_log_probs_are_checked_against_the_samplers_record(rollout_logprobs):
    """sanity/logprob_max_dev compares log π_old with the log-prob each token was drawn with: ~0 for the
    reference function, large for a forgotten temperature or an off-by-one position (whichever pass
    produced π_old's logits)."""
    def no_temperature(logits, input_ids, context_length, temperature=1.0):
        return ref_response_log_probs(logits, input_ids, context_length, 1.0)

    def off_by_one(logits, input_ids, context_length, temperature=1.0):
        logp = torch.log_softmax(logits[:, context_length:] / temperature, dim=-1)      # (B, R, V), one late
        logp = torch.cat([logp, logp[:, -1:]], 1)[:, :input_ids.shape[1] - context_length]
        return logp.gather(-1, input_ids[:, context_length:, None])[..., 0]

    cfg = tiny(rollout_logprobs=rollout_logprobs, temperature=0.7, num_ppo_epochs=1, num_minibatches=1)
    good = ppo_rlhf_iteration(make_rlhf_state(cfg), cfg, **FNS)
    assert good["sanity/logprob_max_dev"] < 1e-4
    for broken in (no_temperature, off_by_one):
        metrics = ppo_rlhf_iteration(make_rlhf_state(cfg), cfg, **{**FNS, "response_log_probs": broken})
        assert metrics["sanity/logprob_max_dev"] > 0.1, broken.__name__


def test_sampling_entropy_is_that_of_the_sampling_distribution():
    """sampling_entropy equals −Σ p log p of softmax(logits / T) over every token but the pad, in
    float64, and stays finite although the pad's logit is −inf."""
    from rlhf_course.rlhf_ppo import sampling_entropy, sampling_logits

    torch.manual_seed(0)
    raw = torch.randn(3, 4, 40) * 3
    raw[0, 0] = 0.0                                           # uniform over the 39 non-pad tokens
    logits = sampling_logits(raw, pad_id=7)
    got = sampling_entropy(logits, 0.7, pad_id=7)
    keep = torch.arange(40) != 7
    p = torch.softmax(raw.double()[..., keep] / 0.7, -1)
    want = -(p * p.log()).sum(-1)
    assert got.shape == (3, 4) and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert got[0, 0].item() == pytest.approx(np.log(39), rel=1e-6)
    torch.testing.assert_close(got, torch.special.entr(torch.softmax(logits / 0.7, -1)).sum(-1))


@pytest.mark.parametrize("max_grad_norm", [1e6, 1e-3, float("nan")])
def test_clipped_step_takes_clip_grad_norms_step_bit_for_bit(max_grad_norm, monkeypatch):
    """clipped_step gives exactly the parameters of clip_grad_norm_ then the step: with a norm under
    the bound it skips the × 1.0 pass over the gradients (no clip_grads_with_norm_ call); above it, or
    with a NaN bound, it scales them as clip_grad_norm_ does."""
    from rlhf_course.rlhf_ppo import clipped_step

    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.1) for m in models]
    x = torch.randn(8, 6)
    scaled = []
    clip = torch.nn.utils.clip_grads_with_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", lambda *a, **k: scaled.append(1) or clip(*a, **k))
    for _ in range(3):
        for m in models:
            m.zero_grad()
            (m(x) ** 2).sum().mul(10).backward()
        torch.nn.utils.clip_grad_norm_(models[0].parameters(), max_grad_norm)
        optimizers[0].step()
        clipped_step(optimizers[1], list(models[1].parameters()), max_grad_norm)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b) or (torch.isnan(a).all() and torch.isnan(b).all())
    assert len(scaled) == (0 if max_grad_norm == 1e6 else 3)
