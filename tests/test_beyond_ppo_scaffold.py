"""Unit tests of chapter 6's plumbing: the critic-free branch of rlhf_course.rlhf_ppo (RLOO, GRPO) and the
DPO trainer rlhf_course.dpo, each around the learner's graded functions.

The reference advantages and losses below are plain loops or the formulas written again (the exercise's
solutions are vectorised), so that a shared mistake cannot hide.
"""
import copy

import numpy as np
import pytest
import torch

from rlhf_course import gold_reward
from rlhf_course import textworld as tw
from rlhf_course.dpo import (DPOConfig, encode_pairs, loss_gradients, make_dpo_state, sequence_log_probs,
                             train_dpo)
from rlhf_course.rlhf_ppo import (RLHFConfig, critic_free_iteration, evaluate, make_rlhf_state,
                                  ppo_rlhf_iteration, rlhf_iteration)


def ref_rloo_advantages(rewards, k):
    out = np.empty(len(rewards))
    for i in range(len(rewards)):
        group = rewards[(i // k) * k:(i // k + 1) * k]
        out[i] = rewards[i] - (group.sum() - rewards[i]) / (k - 1)
    return out


def ref_group_advantages(rewards, group_size, eps=1e-4):
    out = np.empty(len(rewards))
    for i in range(len(rewards)):
        group = rewards[(i // group_size) * group_size:(i // group_size + 1) * group_size]
        out[i] = (rewards[i] - group.mean()) / (np.std(group, ddof=1) + eps)
    return out


def ref_grpo_loss(log_probs, old, ref, adv, mask, clip_eps, beta, aggregation):
    ratio = torch.exp(log_probs - old)
    surrogate = torch.min(ratio * adv[:, None], ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv[:, None])
    k3 = torch.exp(ref - log_probs) - (ref - log_probs) - 1
    per_token = (-surrogate + beta * k3) * mask
    if aggregation == "token-mean":
        return per_token.sum() / mask.sum()
    return (per_token.sum(1) / mask.sum(1)).mean()


def ref_dpo_loss(pc, pr, rc, rr, beta):
    z = beta * ((pc - rc) - (pr - rr))
    return float(np.mean(np.logaddexp(0.0, -z))), beta * (pc - rc), beta * (pr - rr)


def tiny(algo="rloo", **kwargs) -> RLHFConfig:
    return RLHFConfig(**{"algo": algo, "batch_size": 12, "group_size": 3, "response_length": 10, "seed": 5,
                         **kwargs})


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------------
# RLOO
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_iteration():
    cfg = tiny()
    state = make_rlhf_state(cfg)
    policy0, ref0 = weights(state.policy), weights(state.ref_policy)
    calls = []

    def recording(rewards, k):
        calls.append((rewards.copy(), k))
        return ref_rloo_advantages(rewards, k)

    metrics = critic_free_iteration(state, cfg, rloo_advantages=recording)
    return cfg, state, metrics, calls, policy0, ref0


def test_the_advantages_function_gets_consecutive_groups_of_k(one_iteration):
    cfg, state, _, calls, _, _ = one_iteration
    n_prompts = cfg.batch_size // cfg.group_size
    assert len(calls) == 1 and calls[0][1] == cfg.group_size and calls[0][0].shape == (cfg.batch_size,)
    prompts = state.last_rollout["prompts"]
    groups = [prompts[i:i + cfg.group_size] for i in range(0, len(prompts), cfg.group_size)]
    assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) == n_prompts
    # the rewards are the gold scores of the full reviews minus beta times each response's KL
    roll = state.last_rollout
    reviews = [p + " " + r for p, r in zip(roll["prompts"], roll["responses"])]
    assert np.allclose(roll["scores"], gold_reward(reviews))
    assert np.allclose(calls[0][0], roll["scores"] - cfg.init_kl_coef * roll["kl"])


def test_first_iteration_sanity(one_iteration):
    cfg, _, metrics, _, _, _ = one_iteration
    assert metrics["sanity/logprob_max_dev"] < 1e-3          # training forward = the sampler's own record
    assert metrics["sanity/advantage_group_sum"] < 1e-9
    assert abs(metrics["objective/kl"]) < 1e-4               # policy = reference before the first step
    assert np.isfinite(metrics["loss/policy_avg"]) and metrics["val/ratio"] == pytest.approx(1.0, abs=1e-4)


def test_policy_moves_reference_does_not(one_iteration):
    _, state, _, _, policy0, ref0 = one_iteration
    assert any(not torch.equal(v, state.policy.state_dict()[k]) for k, v in policy0.items())
    assert all(torch.equal(v, state.ref_policy.state_dict()[k]) for k, v in ref0.items())


def test_the_step_follows_the_advantages():
    # Zero advantages: the REINFORCE loss is 0 and the weights stay put.
    cfg = tiny()
    state = make_rlhf_state(cfg)
    before = weights(state.policy)
    critic_free_iteration(state, cfg, rloo_advantages=lambda r, k: np.zeros_like(r))
    assert all(torch.equal(v, state.policy.state_dict()[k]) for k, v in before.items())


def test_the_rloo_step_is_the_reinforce_gradient():
    # One rollout, then the loop's step against the gradient of -(1/B) sum_i A_i log pi(y_i) taken by hand
    # on a copy: plain SGD makes the step equal to the gradient itself.
    cfg = tiny(learning_rate=0.1, max_grad_norm=1e9)
    state = make_rlhf_state(cfg)
    state.optimizer = torch.optim.SGD(state.policy.parameters(), lr=1.0)
    twin = copy.deepcopy(state.policy)
    before = weights(state.policy)
    critic_free_iteration(state, cfg, rloo_advantages=ref_rloo_advantages)
    roll = state.last_rollout
    from rlhf_course.rlhf_ppo import logprob_targets, token_log_probs
    from rlhf_course.tiny_lm import generate_responses

    gen = generate_responses(twin, state.tokenizer, roll["prompts"], max_new_tokens=cfg.response_length,
                             temperature=cfg.temperature, seed=cfg.seed * 100_003 + 7_919 * 0)
    assert list(gen["responses"]) == roll["responses"]       # the same rollout, re-sampled
    qr, am, ctx = gen["query_response"], gen["attention_mask"], gen["context_length"]
    targets = logprob_targets(qr, ctx, state.tokenizer.pad_token_id, state.tokenizer.eos_token_id)
    lp = token_log_probs(twin, qr, am, ctx, targets, cfg.temperature, state.tokenizer.pad_token_id)
    adv = torch.as_tensor(roll["advantages"], dtype=torch.float32)
    loss = -(adv * (lp * gen["response_mask"]).sum(1)).mean()
    loss.backward()
    for name, p in twin.named_parameters():
        if p.grad is None:
            continue
        g = p.grad.to_dense() if p.grad.is_sparse else p.grad
        step = before[name] - state.policy.state_dict()[name]
        assert torch.allclose(step, g, atol=1e-6, rtol=1e-4), name


def test_a_wrong_shape_is_refused():
    cfg = tiny()
    state = make_rlhf_state(cfg)
    with pytest.raises(ValueError, match="shape"):
        critic_free_iteration(state, cfg, rloo_advantages=lambda r, k: r[:-1])


def test_configs_and_loops_refuse_what_does_not_fit():
    with pytest.raises(ValueError, match="algo must be one of"):
        RLHFConfig(algo="a2c")
    with pytest.raises(ValueError, match="group_size"):
        RLHFConfig(algo="grpo", batch_size=10, group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        RLHFConfig(algo="rloo", batch_size=8, group_size=1)
    with pytest.raises(ValueError, match="PPO's options"):
        RLHFConfig(algo="grpo", rollout_logprobs="forward")
    with pytest.raises(ValueError, match="PPO's options"):
        RLHFConfig(algo="rloo", gradient_accumulation_steps=2)
    state = make_rlhf_state(tiny())
    with pytest.raises(ValueError, match="needs rloo_advantages"):
        critic_free_iteration(state, tiny())
    with pytest.raises(ValueError, match="needs 4 prompts per process"):
        critic_free_iteration(state, tiny(), rloo_advantages=ref_rloo_advantages, prompts=["a", "b"])
    with pytest.raises(ValueError, match="needs group_advantages"):
        critic_free_iteration(state, tiny("grpo"), group_advantages=ref_group_advantages)
    with pytest.raises(ValueError, match="critic_free_iteration"):
        ppo_rlhf_iteration(state, tiny(), response_log_probs=None, per_token_rewards=None, masked_mean=None,
                           masked_whiten=None, kl_estimates=None)


def test_evaluate_is_repeatable_and_kl_is_zero_at_the_reference():
    cfg = tiny()
    state = make_rlhf_state(cfg)
    a = evaluate(state, cfg, n_prompts=8)
    b = evaluate(state, cfg, n_prompts=8)
    assert a["gold"] == b["gold"] and a["texts"] == b["texts"] and len(a["texts"]) == 8
    assert abs(a["kl"]) < 1e-5 and a["length"] > 0 and "proxy" not in a
    assert np.isclose(a["gold"], gold_reward(a["texts"]).mean())


# --------------------------------------------------------------------------------------------------
# GRPO
# --------------------------------------------------------------------------------------------------
def test_grpo_calls_the_learners_functions_with_the_rollouts_numbers():
    cfg = tiny("grpo", num_ppo_epochs=2, num_minibatches=2, init_kl_coef=0.07, cliprange=0.3,
               loss_aggregation="sequence-mean")
    state = make_rlhf_state(cfg)
    adv_calls, loss_calls = [], []

    def group_advantages(rewards, g):
        adv_calls.append((rewards.copy(), g))
        return ref_group_advantages(rewards, g)

    def grpo_loss(log_probs, old, ref, adv, mask, clip_eps, beta, aggregation):
        loss_calls.append(dict(lp=log_probs.detach().clone(), old=old.clone(), ref=ref.clone(), adv=adv.clone(),
                               mask=mask.clone(), clip_eps=clip_eps, beta=beta, aggregation=aggregation))
        return ref_grpo_loss(log_probs, old, ref, adv, mask, clip_eps, beta, aggregation)

    m = rlhf_iteration(state, cfg, group_advantages=group_advantages, grpo_loss=grpo_loss)
    roll = state.last_rollout
    # the raw scores, not score - beta KL: GRPO puts the KL in the loss
    assert len(adv_calls) == 1 and adv_calls[0][1] == cfg.group_size
    assert np.allclose(adv_calls[0][0], roll["scores"])
    assert len(loss_calls) == cfg.num_ppo_epochs * cfg.num_minibatches
    first = loss_calls[0]
    assert first["lp"].shape == first["mask"].shape and first["adv"].shape == (cfg.batch_size // 2,)
    assert (first["clip_eps"], first["beta"], first["aggregation"]) == (0.3, 0.07, "sequence-mean")
    # nothing has moved on the first minibatch: log pi = log pi_old = log pi_ref on every real token
    assert torch.allclose(first["lp"] * first["mask"], first["old"] * first["mask"], atol=1e-4)
    assert torch.allclose(first["ref"] * first["mask"], first["old"] * first["mask"], atol=1e-4)
    # every response's advantage reached the loss once per epoch
    seen = torch.cat([c["adv"] for c in loss_calls[:cfg.num_minibatches]])
    assert np.allclose(np.sort(seen.numpy()), np.sort(roll["advantages"]), atol=1e-6)
    assert m["sanity/advantage_group_sum"] < 1e-6 and np.isfinite(m["loss/policy_avg"])


def test_grpo_learns_on_the_gold_reward():
    # A few iterations with the reference functions raise the gold score of the rollouts (seeded).
    cfg = tiny("grpo", batch_size=32, group_size=4, learning_rate=3e-4, num_minibatches=1, num_ppo_epochs=2)
    state = make_rlhf_state(cfg)
    before = evaluate(state, cfg, n_prompts=32)["gold"]
    for _ in range(8):
        rlhf_iteration(state, cfg, group_advantages=ref_group_advantages, grpo_loss=ref_grpo_loss)
    assert evaluate(state, cfg, n_prompts=32)["gold"] > before + 0.3


# --------------------------------------------------------------------------------------------------
# DPO
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prefs():
    from rlhf_course.tiny_lm import load_policy

    lm, tok, _ = load_policy("tiny")
    prompts = tw.sample_prompts(48, seed=3)
    a = [r for r in tw.sample_demonstrations(prompts, seed=1, n_candidates=1)]
    b = [r for r in tw.sample_demonstrations(prompts, seed=2, n_candidates=1)]
    return lm, tok, [p for p in tw.annotate_pairs(prompts, a, b, seed=0) if p.chosen != p.rejected]


def test_loss_gradients_match_the_analytic_dpo_gradient():
    rng = np.random.default_rng(0)
    pc, pr, rc, rr = (rng.normal(-20, 5, 16) for _ in range(4))
    beta = 0.3
    g_c, g_r = loss_gradients(ref_dpo_loss, pc, pr, rc, rr, beta)
    z = beta * ((pc - rc) - (pr - rr))
    weight = beta / (1 + np.exp(z)) / len(pc)                   # β σ(−z) / B
    assert np.allclose(g_c, -weight, atol=1e-8) and np.allclose(g_r, weight, atol=1e-8)


def test_sequence_log_probs_sum_the_response_tokens_only(prefs):
    lm, tok, pairs = prefs
    ids, rmask, attn = encode_pairs(tok, pairs[:4])["chosen"]
    got = sequence_log_probs(lm, ids, rmask, attn, 0.7, tok.pad_token_id)
    for i in range(4):                                          # one row at a time, no padding, a plain loop
        n = int(attn[i].sum())
        logits = lm(input_ids=ids[i:i + 1, :n]).logits[0].float()
        logits[:, tok.pad_token_id] = -float("inf")
        logp = (logits / 0.7).log_softmax(-1)
        want = sum(logp[t - 1, ids[i, t]] for t in range(n) if rmask[i, t])
        assert torch.isclose(got[i], want, atol=1e-4), i
    assert int(rmask[0].sum()) == len(tok(" " + pairs[0].chosen)["input_ids"]) + 1   # the response and EOS


def implicit_margin(state, pairs, beta) -> float:
    """Mean over all pairs of β·[(ℓ_w − ℓ_w,ref) − (ℓ_l − ℓ_l,ref)], measured by the test itself."""
    enc = encode_pairs(state.tokenizer, pairs)
    pad = state.tokenizer.pad_token_id
    with torch.no_grad():
        lp = {(side, name): sequence_log_probs(model, *enc[side], 0.7, pad)
              for side in ("chosen", "rejected") for name, model in (("pi", state.policy), ("ref", state.ref_policy))}
    return float(beta * ((lp["chosen", "pi"] - lp["chosen", "ref"]) - (lp["rejected", "pi"] - lp["rejected", "ref"])).mean())


def test_dpo_lowers_its_loss_and_a_flipped_loss_trains_the_wrong_way(prefs):
    lm, tok, pairs = prefs
    cfg = DPOConfig(beta=0.5, learning_rate=3e-4, batch_size=8, epochs=3)
    right = make_dpo_state(cfg, copy.deepcopy(lm), tok)
    hist = train_dpo(right, cfg, pairs, dpo_loss=ref_dpo_loss)
    assert len(hist) == 3 * (len(pairs) // 8) and hist[0]["loss"] == pytest.approx(np.log(2), abs=1e-6)
    assert np.mean([h["loss"] for h in hist[-3:]]) < np.log(2) - 0.1
    assert implicit_margin(right, pairs, cfg.beta) > 0.2
    flipped = make_dpo_state(cfg, copy.deepcopy(lm), tok)       # chosen and rejected swapped
    train_dpo(flipped, cfg, pairs, dpo_loss=lambda pc, pr, rc, rr, b: ref_dpo_loss(pr, pc, rr, rc, b))
    assert implicit_margin(flipped, pairs, cfg.beta) < -0.2
    assert all(torch.equal(v, lm.state_dict()[k]) for k, v in right.ref_policy.state_dict().items())


def test_dpo_refuses_too_few_pairs(prefs):
    lm, tok, pairs = prefs
    cfg = DPOConfig(batch_size=64)
    with pytest.raises(ValueError, match="no batch of 64"):
        train_dpo(make_dpo_state(cfg, copy.deepcopy(lm), tok), cfg, pairs[:10], dpo_loss=ref_dpo_loss)
