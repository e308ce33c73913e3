"""A seeded K-armed bandit: the smallest environment a policy-gradient method can learn in.

One "episode" is a single pull: the agent picks an arm a ∈ {0, …, K−1} and receives a reward drawn
from that arm's distribution. There is no state, so a policy is just a probability vector over arms.

    bandit = GaussianBandit(means=[0.0, 0.5, 1.0], std=1.0, seed=0)
    rewards = bandit.pull([2, 2, 0])      # (3,) float rewards, reproducible for a given seed
    bandit.best_arm, bandit.optimal_value  # 2, 1.0

Plumbing only: the learning algorithm lives in the notebooks.
"""
from __future__ import annotations

import numpy as np


class GaussianBandit:
    """K arms; pulling arm a returns a reward ~ Normal(means[a], std²).

    Args:
        means: (K,) expected reward of each arm, K ≥ 2, all finite.
        std: standard deviation σ ≥ 0 of every arm's reward noise (0 makes rewards deterministic).
        seed: seed of the bandit's own random generator (None: fresh entropy, not reproducible).
    """

    def __init__(self, means, std: float = 1.0, seed: int | None = None):
        means = np.array(means, dtype=float)  # a copy: later changes to the caller's array don't leak in
        if means.ndim != 1 or means.size < 2:
            raise ValueError(f"means must be a 1-D sequence of at least 2 arm means, got shape {means.shape}")
        if not np.all(np.isfinite(means)):
            raise ValueError(f"means must be finite, got {means}")
        if isinstance(std, bool) or not np.isscalar(std) or not np.isfinite(std) or std < 0:
            raise ValueError(f"std must be a finite number >= 0, got {std!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        means.setflags(write=False)
        self.means = means
        self.std = float(std)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    @property
    def n_arms(self) -> int:
        """K, the number of arms (= the number of actions)."""
        return int(self.means.size)

    @property
    def best_arm(self) -> int:
        """Index of the arm with the highest mean (the first one on ties)."""
        return int(np.argmax(self.means))

    @property
    def optimal_value(self) -> float:
        """The highest expected reward, max_a means[a]."""
        return float(self.means.max())

    def reset(self, seed: int | None = None) -> None:
        """Restart the reward noise from `seed` (default: the seed given at construction)."""
        self.rng = np.random.default_rng(self.seed if seed is None else seed)

    def pull(self, actions):
        """Pull arms and observe their rewards.

        Args:
            actions: an int arm index, or an (N,) integer array of arm indices in [0, K).
        Returns:
            a float for an int action; an (N,) float array for an array of actions.
        """
        arr = np.asarray(actions)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"actions must be integer arm indices, got dtype {arr.dtype}")
        if arr.ndim > 1:
            raise ValueError(f"actions must be an int or a 1-D array, got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_arms):
            raise ValueError(f"arm indices must lie in [0, {self.n_arms}), got {arr}")
        rewards = self.means[arr] + self.std * self.rng.standard_normal(arr.shape)
        return float(rewards) if arr.ndim == 0 else rewards

    def expected_reward(self, probs) -> float:
        """Expected reward Σ_a π(a)·means[a] of a policy given as (K,) probabilities."""
        probs = np.asarray(probs, dtype=float)
        if probs.shape != self.means.shape:
            raise ValueError(f"probs must have shape {self.means.shape}, got {probs.shape}")
        return float(probs @ self.means)

    def __repr__(self) -> str:
        return f"GaussianBandit(means={self.means.tolist()}, std={self.std}, seed={self.seed})"
