"""PPO on CartPole, CleanRL-style: the training scaffolding around the student's graded functions.

One file, one visible loop (CleanRL's ``ppo.py`` layout): a dataclass of hyperparameters, two tiny
helpers (the actor-critic and the vector env), then ``train_ppo`` with numbered phases. The graded
algorithm is NOT here: ``train_ppo`` receives the student's numpy functions as arguments,

* ``compute_gae(rewards, values, dones, last_value, gamma, lam) -> (advantages, returns)`` and
* ``ppo_clip_grad(log_probs, old_log_probs, advantages, clip_eps) -> dL/dlog_probs``,

and optionally ``categorical_entropy(logits)`` and ``ppo_clip_loss(...)`` for logging only.

How the student's numpy gradient drives torch: with g = ppo_clip_grad(newlogprob, old, A, ε) held
constant, the scalar ``(newlogprob * g).sum()`` has gradient Σ_i g_i ∇_θ log π_i = ∇_θ L^CLIP with
respect to the actor's parameters, so backpropagating it is backpropagating the clipped loss.

Gymnasium ≥ 1.0 changed the vector envs' default autoreset to NEXT_STEP: the step *after* a done
returns the reset observation with reward 0 and an action that is ignored. Storing that step in the
rollout would create a fake transition. We ask for ``AutoresetMode.SAME_STEP`` instead (the old
0.x behaviour CleanRL was written for): the step that ends an episode already returns the first
observation of the next one, so every stored transition is real and ``dones[t] = 1`` means "the
episode ended at step t". As in CleanRL, time-limit truncation (CartPole stops at 500) is treated
like termination.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch._dynamo  # noqa: F401  Adam imports it on first use (~3 s): pay once, at import time
from torch.distributions.categorical import Categorical
from tqdm.auto import tqdm


@dataclass
class PPOConfig:
    env_id: str = "CartPole-v1"
    """gymnasium id of the environment (discrete actions)"""
    seed: int = 1
    """seeds torch, numpy and the environments (env i gets seed + i)"""
    total_timesteps: int = 500_000
    """environment steps over all envs; the number of updates is total_timesteps // batch_size"""
    num_envs: int = 4
    """parallel environments in the (synchronous) vector env"""
    num_steps: int = 128
    """steps per env per rollout, so a rollout holds num_envs * num_steps transitions"""
    learning_rate: float = 2.5e-4
    """Adam learning rate at the first update"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over the updates"""
    gamma: float = 0.99
    """discount factor γ"""
    gae_lambda: float = 0.95
    """GAE λ: 0 is one-step TD, 1 is Monte Carlo minus the baseline"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    update_epochs: int = 4
    """passes over each rollout"""
    norm_adv: bool = True
    """standardise the advantages within each minibatch"""
    clip_coef: float = 0.2
    """ε, the half-width of the ratio's trust band [1 − ε, 1 + ε]"""
    clip_vloss: bool = True
    """clip the value update around the rollout's values (CleanRL's default)"""
    ent_coef: float = 0.01
    """weight of the entropy bonus (subtracted from the loss)"""
    vf_coef: float = 0.5
    """weight of the value loss"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    adam_eps: float = 1e-5
    """Adam's ε (CleanRL: 1e-5 instead of PyTorch's 1e-8)"""
    torch_threads: int = 1
    """torch CPU threads: a 64-64 MLP runs fastest single-threaded"""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights, constant bias: CleanRL's (and openai/baselines') initialisation."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Separate 64-64 tanh actor and critic (a shared trunk learns CartPole much more slowly)."""

    def __init__(self, obs_dim: int, n_actions: int):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, n_actions), std=0.01),  # near-uniform initial policy
        )

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)                      # (B,)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        """(B, obs_dim) -> action (B,), log π(action) (B,), entropy (B,), V (B,), logits (B, A)."""
        logits = self.actor(x)                                 # (B, A)
        dist = Categorical(logits=logits, validate_args=False)  # skip per-call argument checks
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.get_value(x), logits


def make_envs(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    """A synchronous vector env with SAME_STEP autoreset (see the module docstring)."""
    return gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


@dataclass
class PPORecord:
    """What a run leaves behind: a learning curve and per-update diagnostics."""
    config: dict
    episode_steps: list = field(default_factory=list)
    """global step at which each finished episode ended"""
    episode_returns: list = field(default_factory=list)
    """undiscounted return of each finished episode"""
    updates: list = field(default_factory=list)
    """one dict per update: global_step, lr, first_ratio_max_dev, approx_kl, clipfrac, pg_loss, ..."""
    seconds: float = 0.0
    """wall-clock time of the run"""
    agent: nn.Module | None = None
    """the trained actor-critic"""

    def last_returns_mean(self, n: int = 10) -> float:
        """Mean return of the last n finished episodes (nan if none finished)."""
        return float(np.mean(self.episode_returns[-n:])) if self.episode_returns else float("nan")


def train_ppo(
    compute_gae: Callable,
    ppo_clip_grad: Callable,
    config: PPOConfig | None = None,
    categorical_entropy: Callable | None = None,
    ppo_clip_loss: Callable | None = None,
    progress: bool = True,
) -> PPORecord:
    """Train PPO with the student's GAE and clipped-loss gradient; returns a PPORecord.

    Args:
        compute_gae: the graded numpy GAE for one env's rollout of length T.
        ppo_clip_grad: the graded numpy dL^CLIP/dlog_probs (includes the 1/N of the mean).
        config: hyperparameters; CleanRL's CartPole defaults if None.
        categorical_entropy: optional graded numpy entropy, used only for the logged entropy.
        ppo_clip_loss: optional graded numpy loss, used only for the logged policy loss.
        progress: show a tqdm progress bar.
    """
    cfg = config or PPOConfig()
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)                      # minibatch shuffles
    record = PPORecord(config=asdict(cfg))
    start = time.perf_counter()

    envs = make_envs(cfg.env_id, cfg.num_envs)
    obs_dim = envs.single_observation_space.shape[0]
    agent = Agent(obs_dim, envs.single_action_space.n)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)

    # Rollout buffer. Index [t, e]: step t of env e. dones[t, e] = 1: the episode ended AT step t.
    T, E = cfg.num_steps, cfg.num_envs
    obs = torch.zeros((T, E, obs_dim))
    actions = torch.zeros((T, E), dtype=torch.long)
    logprobs = torch.zeros((T, E))
    rewards = np.zeros((T, E))
    dones = np.zeros((T, E))
    values = np.zeros((T, E))

    next_obs = torch.as_tensor(envs.reset(seed=[cfg.seed + i for i in range(E)])[0], dtype=torch.float32)
    running_return = np.zeros(E)
    global_step = 0
    bar = tqdm(range(cfg.num_updates), desc=f"PPO seed {cfg.seed}", disable=not progress, leave=False)
    for update in bar:
        # 1. Anneal the learning rate linearly to 0.
        if cfg.anneal_lr:
            frac = 1.0 - update / cfg.num_updates
            optimizer.param_groups[0]["lr"] = frac * cfg.learning_rate

        # 2. Rollout: num_steps steps in each of the num_envs envs with the current (old) policy.
        for t in range(T):
            global_step += E
            obs[t] = next_obs
            with torch.no_grad():
                action, logprob, _, value, _ = agent.get_action_and_value(next_obs)
            actions[t], logprobs[t], values[t] = action, logprob, value.numpy()
            o, r, terminated, truncated, _ = envs.step(action.numpy())
            done = np.logical_or(terminated, truncated)        # truncation treated as termination
            rewards[t], dones[t] = r, done
            next_obs = torch.as_tensor(o, dtype=torch.float32)  # SAME_STEP: already reset where done
            running_return += r
            for e in np.flatnonzero(done):
                record.episode_steps.append(global_step)
                record.episode_returns.append(float(running_return[e]))
                running_return[e] = 0.0

        # 3. Advantages and returns with the student's GAE, one env (one column) at a time.
        with torch.no_grad():
            last_values = agent.get_value(next_obs).numpy()    # (E,) V of the state after step T-1
        advantages, returns = np.zeros((T, E)), np.zeros((T, E))
        for e in range(E):
            adv_e, ret_e = compute_gae(rewards[:, e].copy(), values[:, e].copy(), dones[:, e].copy(),
                                       float(last_values[e]), gamma=cfg.gamma, lam=cfg.gae_lambda)
            advantages[:, e], returns[:, e] = adv_e, ret_e

        # 4. Flatten the rollout into a batch (b_ = batch, mb_ = minibatch).
        b_obs = obs.reshape(-1, obs_dim)                       # (T*E, obs_dim)
        b_actions = actions.reshape(-1)                        # (T*E,)
        b_logprobs = logprobs.reshape(-1).numpy()              # (T*E,) log π_old
        b_advantages = advantages.reshape(-1)
        b_returns = torch.as_tensor(returns.reshape(-1), dtype=torch.float32)
        b_values = torch.as_tensor(values.reshape(-1), dtype=torch.float32)

        # 5. Several epochs of minibatch updates on this one rollout.
        stats = {"global_step": global_step, "lr": optimizer.param_groups[0]["lr"]}
        clipfracs, approx_kls = [], []
        b_inds = np.arange(cfg.batch_size)
        for epoch in range(cfg.update_epochs):
            rng.shuffle(b_inds)
            for start_i in range(0, cfg.batch_size, cfg.minibatch_size):
                mb_inds = b_inds[start_i:start_i + cfg.minibatch_size]
                _, newlogprob, entropy, newvalue, logits = agent.get_action_and_value(
                    b_obs[mb_inds], b_actions[mb_inds])
                mb_old = b_logprobs[mb_inds]
                newlogprob_np = newlogprob.detach().numpy().astype(np.float64)
                logratio = newlogprob_np - mb_old
                ratio = np.exp(logratio)
                if epoch == 0 and start_i == 0:
                    # Sanity check: the policy has not moved yet, so every ratio is exactly 1.
                    stats["first_ratio_max_dev"] = float(np.max(np.abs(ratio - 1)))
                # k3 estimator of KL(π_old ‖ π) on samples from π_old (CleanRL's approx_kl).
                approx_kls.append(float(np.mean((ratio - 1) - logratio)))
                # CleanRL's clip fraction: share of samples whose ratio left the band.
                clipfracs.append(float(np.mean(np.abs(ratio - 1) > cfg.clip_coef)))

                mb_advantages = b_advantages[mb_inds]
                if cfg.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                # Policy loss: the student's exact gradient dL^CLIP/dlog π, pushed through log π.
                g = ppo_clip_grad(newlogprob_np, mb_old.astype(np.float64), mb_advantages, cfg.clip_coef)
                pg_surrogate = (newlogprob * torch.as_tensor(np.asarray(g), dtype=torch.float32)).sum()

                # Value loss, optionally clipped around the rollout's values.
                mb_returns, mb_values = b_returns[mb_inds], b_values[mb_inds]
                v_loss_unclipped = (newvalue - mb_returns) ** 2
                if cfg.clip_vloss:
                    v_clipped = mb_values + torch.clamp(newvalue - mb_values, -cfg.clip_coef, cfg.clip_coef)
                    v_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - mb_returns) ** 2).mean()
                else:
                    v_loss = 0.5 * v_loss_unclipped.mean()

                # Entropy bonus: H = −Σ p log p ≥ 0; SUBTRACTING it from the loss rewards exploration.
                entropy_loss = entropy.mean()
                loss = pg_surrogate + cfg.vf_coef * v_loss - cfg.ent_coef * entropy_loss

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                optimizer.step()

        # 6. Log diagnostics of the last minibatch and the update's averages.
        stats["approx_kl"] = float(np.mean(approx_kls))
        stats["clipfrac"] = float(np.mean(clipfracs))
        stats["v_loss"] = float(v_loss.item())
        if ppo_clip_loss is not None:
            stats["pg_loss"] = float(ppo_clip_loss(newlogprob_np, mb_old.astype(np.float64), mb_advantages,
                                                   cfg.clip_coef))
        if categorical_entropy is not None:
            stats["entropy"] = float(np.mean(categorical_entropy(logits.detach().numpy().astype(np.float64))))
        else:
            stats["entropy"] = float(entropy_loss.item())
        record.updates.append(stats)
        if progress and record.episode_returns:
            bar.set_postfix(ret=f"{record.last_returns_mean(10):.0f}", kl=f"{stats['approx_kl']:.4f}")

    envs.close()
    record.seconds = time.perf_counter() - start
    record.agent = agent
    return record
