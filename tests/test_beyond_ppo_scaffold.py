"""Unit tests of rlhf_course.beyond_ppo, the RLOO loop around chapter 6's graded rloo_advantages.

The reference rloo_advantages below is a plain loop (the exercise's solution is vectorised), so that a
shared mistake cannot hide.
"""
import numpy as np
import pytest
import torch

from rlhf_course import gold_reward
from rlhf_course.beyond_ppo import RLOOConfig, evaluate, make_rloo_state, rloo_iteration


def ref_rloo_advantages(rewards, k):
    out = np.empty(len(rewards))
    for i in range(len(rewards)):
        group = rewards[(i // k) * k:(i // k + 1) * k]
        out[i] = rewards[i] - (group.sum() - rewards[i]) / (k - 1)
    return out


def tiny(**kwargs) -> RLOOConfig:
    return RLOOConfig(**{"prompts_per_iteration": 4, "k": 3, "response_length": 10, "seed": 5, "eval_prompts": 8,
                         **kwargs})


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def one_iteration():
    cfg = tiny()
    state = make_rloo_state(cfg)
    policy0, ref0 = weights(state.policy), weights(state.ref_policy)
    calls = []

    def recording(rewards, k):
        calls.append((rewards.copy(), k))
        return ref_rloo_advantages(rewards, k)

    metrics = rloo_iteration(state, cfg, rloo_advantages=recording)
    return cfg, state, metrics, calls, policy0, ref0


def test_the_advantages_function_gets_consecutive_groups_of_k(one_iteration):
    cfg, state, _, calls, _, _ = one_iteration
    assert len(calls) == 1 and calls[0][1] == cfg.k and calls[0][0].shape == (cfg.prompts_per_iteration * cfg.k,)
    prompts = state.last_rollout["prompts"]
    groups = [prompts[i:i + cfg.k] for i in range(0, len(prompts), cfg.k)]
    assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) == cfg.prompts_per_iteration
    # the rewards are the gold scores of the full reviews minus beta times each response's KL
    roll = state.last_rollout
    reviews = [p + " " + r for p, r in zip(roll["prompts"], roll["responses"])]
    assert np.allclose(roll["scores"], gold_reward(reviews))
    assert np.allclose(calls[0][0], roll["scores"] - cfg.kl_coef * roll["kl"])


def test_first_iteration_sanity(one_iteration):
    cfg, _, metrics, _, _, _ = one_iteration
    assert metrics["sanity/logprob_max_dev"] < 1e-3          # training forward = the sampler's own record
    assert metrics["sanity/advantage_group_sum"] < 1e-9
    assert abs(metrics["objective/kl"]) < 1e-4               # policy = reference before the first step
    assert np.isfinite(metrics["loss/policy"])


def test_policy_moves_reference_does_not(one_iteration):
    _, state, _, _, policy0, ref0 = one_iteration
    assert any(not torch.equal(v, state.policy.state_dict()[k]) for k, v in policy0.items())
    assert all(torch.equal(v, state.ref_policy.state_dict()[k]) for k, v in ref0.items())


def test_the_step_follows_the_advantages():
    # Zero advantages: the REINFORCE loss is 0 and the weights stay put; the same rollout with the
    # reference advantages moves them.
    cfg = tiny()
    state = make_rloo_state(cfg)
    before = weights(state.policy)
    rloo_iteration(state, cfg, rloo_advantages=lambda r, k: np.zeros_like(r))
    assert all(torch.equal(v, state.policy.state_dict()[k]) for k, v in before.items())


def test_a_wrong_shape_is_refused():
    cfg = tiny()
    state = make_rloo_state(cfg)
    with pytest.raises(ValueError, match="shape"):
        rloo_iteration(state, cfg, rloo_advantages=lambda r, k: r[:-1])


def test_evaluate_is_repeatable_and_kl_is_zero_at_the_reference():
    cfg = tiny()
    state = make_rloo_state(cfg)
    a = evaluate(cfg, state.policy, state.ref_policy, state.tokenizer)
    b = evaluate(cfg, state.policy, state.ref_policy, state.tokenizer)
    assert a["gold"] == b["gold"] and a["texts"] == b["texts"] and len(a["texts"]) == cfg.eval_prompts
    assert abs(a["kl"]) < 1e-5 and a["length"] > 0
    assert np.isclose(a["gold"], gold_reward(a["texts"]).mean())
