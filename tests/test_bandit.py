"""Unit tests of rlhf_course.bandit: seeded, validated, and rewards with the advertised distribution."""
import numpy as np
import pytest

from rlhf_course.bandit import GaussianBandit


def test_properties():
    bandit = GaussianBandit([0.1, 0.9, 0.3], std=0.5, seed=0)
    assert bandit.n_arms == 3 and bandit.best_arm == 1 and bandit.optimal_value == 0.9
    assert bandit.expected_reward([0.0, 1.0, 0.0]) == pytest.approx(0.9)
    assert bandit.expected_reward([0.5, 0.0, 0.5]) == pytest.approx(0.2)


def test_same_seed_same_rewards_and_reset_repeats():
    a, b = GaussianBandit([0.0, 1.0], seed=3), GaussianBandit([0.0, 1.0], seed=3)
    actions = np.array([0, 1, 1, 0, 1])
    first = a.pull(actions)
    assert np.array_equal(first, b.pull(actions))
    assert not np.array_equal(first, a.pull(actions)), "successive pulls must draw fresh noise"
    a.reset()
    assert np.array_equal(a.pull(actions), first)
    assert not np.array_equal(GaussianBandit([0.0, 1.0], seed=4).pull(actions), first)


def test_reward_distribution_matches_means_and_std():
    bandit = GaussianBandit([-1.0, 0.0, 2.0], std=0.5, seed=1)
    for arm, mean in enumerate(bandit.means):
        rewards = bandit.pull(np.full(20_000, arm))
        assert rewards.shape == (20_000,) and rewards.dtype == float
        assert abs(rewards.mean() - mean) < 0.02
        assert abs(rewards.std() - 0.5) < 0.02


def test_scalar_action_gives_float_and_zero_std_is_deterministic():
    bandit = GaussianBandit([0.25, 0.75], std=0.0, seed=0)
    reward = bandit.pull(1)
    assert isinstance(reward, float) and reward == 0.75
    assert np.array_equal(bandit.pull(np.array([0, 1])), [0.25, 0.75])
    assert bandit.pull(np.array([], dtype=int)).shape == (0,)


def test_means_are_copied_and_read_only():
    means = np.array([0.0, 1.0])
    bandit = GaussianBandit(means, seed=0)
    means[1] = 100.0
    assert bandit.means[1] == 1.0
    with pytest.raises(ValueError):
        bandit.means[0] = 5.0


@pytest.mark.parametrize("kwargs", [
    dict(means=[1.0]), dict(means=[[0.0, 1.0]]), dict(means=[0.0, np.nan]), dict(means=[0.0, np.inf]),
    dict(means=[0.0, 1.0], std=-1.0), dict(means=[0.0, 1.0], std=np.nan), dict(means=[0.0, 1.0], std=[1.0]),
    dict(means=[0.0, 1.0], seed=-1), dict(means=[0.0, 1.0], seed=1.5),
])
def test_bad_construction_is_rejected(kwargs):
    with pytest.raises(ValueError):
        GaussianBandit(**kwargs)


@pytest.mark.parametrize("actions,error", [
    (2, ValueError), (-1, ValueError), (np.array([0, 3]), ValueError), (np.array([[0, 1]]), ValueError),
    (0.5, TypeError), (np.array([0.0, 1.0]), TypeError), (True, TypeError),
])
def test_bad_actions_are_rejected(actions, error):
    with pytest.raises(error):
        GaussianBandit([0.0, 1.0], seed=0).pull(actions)


def test_expected_reward_checks_shape():
    with pytest.raises(ValueError):
        GaussianBandit([0.0, 1.0, 2.0]).expected_reward([0.5, 0.5])
