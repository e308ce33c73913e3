"""Unit tests of rlhf_course.ppo, the PPO training scaffolding (with reference GAE / clip gradient)."""
import numpy as np
import pytest
import torch

from rlhf_course.ppo import Agent, PPOConfig, make_envs, train_ppo


def reference_gae(rewards, values, dones, last_value, gamma=0.99, lam=0.95):
    # Explicit-sum form, deliberately different from the exercise's backward recursion.
    T = len(rewards)
    next_values = np.append(values[1:], last_value)
    delta = rewards + gamma * next_values * (1 - dones) - values
    advantages = np.zeros(T)
    for t in range(T):
        weight = 1.0
        for k in range(t, T):
            advantages[t] += weight * delta[k]
            weight *= gamma * lam * (1 - dones[k])
    return advantages, advantages + values


def reference_clip_grad(log_probs, old_log_probs, advantages, clip_eps=0.2):
    ratio = np.exp(log_probs - old_log_probs)
    clipped = ((advantages > 0) & (ratio > 1 + clip_eps)) | ((advantages < 0) & (ratio < 1 - clip_eps))
    return np.where(clipped, 0.0, -advantages * ratio / len(ratio))


def tiny(**kwargs) -> PPOConfig:
    return PPOConfig(**{"total_timesteps": 2 * 512, "seed": 3, **kwargs})


def initial_agent(seed: int) -> Agent:
    torch.manual_seed(seed)  # train_ppo builds its agent right after seeding torch
    return Agent(4, 2)


def test_defaults_are_cleanrl_cartpole():
    cfg = PPOConfig()
    assert (cfg.num_envs, cfg.num_steps, cfg.num_minibatches, cfg.update_epochs) == (4, 128, 4, 4)
    assert (cfg.learning_rate, cfg.anneal_lr, cfg.gamma, cfg.gae_lambda) == (2.5e-4, True, 0.99, 0.95)
    assert (cfg.clip_coef, cfg.ent_coef, cfg.vf_coef, cfg.max_grad_norm, cfg.adam_eps) == (0.2, 0.01, 0.5, 0.5, 1e-5)
    assert cfg.batch_size == 512 and cfg.minibatch_size == 128


def test_sanity_numbers_ratio_one_first_minibatch_kl_finite():
    record = train_ppo(reference_gae, reference_clip_grad, tiny(), progress=False)
    assert len(record.updates) == 2
    for stats in record.updates:
        assert stats["first_ratio_max_dev"] < 1e-6, "ratio must be 1 on the first minibatch of every update"
        assert np.isfinite(stats["approx_kl"]) and stats["approx_kl"] >= 0   # k3 estimator is ≥ 0
        assert 0.0 <= stats["clipfrac"] <= 1.0
    assert record.updates[-1]["approx_kl"] > 0, "the policy must move during an update"


def test_weights_change_and_student_gradient_drives_the_actor():
    record = train_ppo(reference_gae, reference_clip_grad, tiny(), progress=False)
    start = initial_agent(3)
    assert torch.equal(start.critic[0].weight, initial_agent(3).critic[0].weight)
    for name, p0 in start.state_dict().items():
        assert not torch.equal(p0, record.agent.state_dict()[name]), f"{name} did not change"
    # With a zero policy gradient and no entropy bonus nothing else touches the actor: it must stay put.
    zero = train_ppo(reference_gae, lambda lp, old, adv, eps: np.zeros_like(lp), tiny(ent_coef=0.0), progress=False)
    for name, p0 in start.state_dict().items():
        moved = not torch.equal(p0, zero.agent.state_dict()[name])
        assert moved == name.startswith("critic"), f"{name}: moved={moved}"


def test_deterministic_under_a_seed():
    a = train_ppo(reference_gae, reference_clip_grad, tiny(), progress=False)
    b = train_ppo(reference_gae, reference_clip_grad, tiny(), progress=False)
    c = train_ppo(reference_gae, reference_clip_grad, tiny(seed=4), progress=False)
    assert a.episode_returns == b.episode_returns and a.episode_steps == b.episode_steps
    for name, p in a.agent.state_dict().items():
        assert torch.equal(p, b.agent.state_dict()[name])
    assert a.episode_returns != c.episode_returns


def test_gae_gets_one_env_column_with_real_transitions_only():
    calls = []

    def spy(rewards, values, dones, last_value, gamma, lam):
        calls.append((rewards.copy(), dones.copy(), last_value, gamma, lam))
        return reference_gae(rewards, values, dones, last_value, gamma, lam)

    record = train_ppo(spy, reference_clip_grad, tiny(), progress=False)
    assert len(calls) == 2 * 4                                  # updates x envs
    for rewards, dones, last_value, gamma, lam in calls:
        assert rewards.shape == dones.shape == (128,)
        assert isinstance(last_value, float) and (gamma, lam) == (0.99, 0.95)
        # Gymnasium's default NEXT_STEP autoreset would insert reward-0 reset steps; SAME_STEP must not.
        assert np.all(rewards == 1.0), "a fake (reset) transition was stored in the rollout"
        assert set(np.unique(dones)) <= {0.0, 1.0}
    assert sum(int(d.sum()) for _, d, *_ in calls) == len(record.episode_returns)
    # CartPole pays 1 per step: an episode's return is its length, and lengths add up to the steps taken.
    assert all(r == int(r) and 8 <= r <= 500 for r in record.episode_returns)


def test_same_step_autoreset_returns_the_reset_observation():
    envs = make_envs("CartPole-v1", 1)
    obs, _ = envs.reset(seed=0)
    for _ in range(200):
        obs, reward, terminated, truncated, info = envs.step(np.array([0]))
        if terminated[0] or truncated[0]:
            assert reward[0] == 1.0
            assert not np.allclose(obs[0], info["final_obs"][0]), "SAME_STEP returns the new episode's first obs"
            assert np.all(np.abs(obs[0]) <= 0.05), "a freshly reset CartPole state is within ±0.05"
            break
    else:
        pytest.fail("always pushing left must end the episode within 200 steps")
    envs.close()
