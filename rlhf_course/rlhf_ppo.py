"""PPO on a language model (RLHF), CleanRL-style: the plumbing around the student's graded functions.

One file, one visible loop, the layout of ``rlhf_course/ppo.py`` carried over from CartPole to text:
a dataclass of hyperparameters, a few tiny helpers (the value head, one forward pass, GAE over
response tokens), then ``ppo_rlhf_iteration`` with numbered phases. The phases follow TRL's
``PPOTrainer.train`` (trl 1.12, ``trl.experimental.ppo``) and OpenAI's lm-human-preferences, whose
metric names it logs (``objective/kl``, ``policy/approxkl_avg``, ``val/ratio``, ...).

The graded algorithm is NOT here. ``ppo_rlhf_iteration`` receives the student's functions:

* ``response_log_probs(logits, input_ids, context_length, temperature) -> (B, R)`` (torch; its
  gradient drives the policy update),
* ``per_token_rewards(scores, log_probs, ref_log_probs, mask, kl_coef) -> (B, R)`` (numpy),
* ``masked_mean(x, mask) -> float`` and ``masked_whiten(x, mask, shift_mean) -> (B, R)`` (numpy),
* ``kl_estimates(log_probs, ref_log_probs) -> (k1, k2, k3)`` (numpy, for the logged KL),

and a KL controller with a ``value`` attribute and ``update(current_kl, n_steps)`` (the student's
``AdaptiveKLController``, or ``FixedKLController`` below).

Conventions. A batch holds B prompts, left-padded to a common context length ``ctx``, followed by R
generated tokens (pad after the first EOS). ``mask`` (B, R) is 1 on real response tokens, up to and
including the first EOS. The log-probability of response token t comes from the logits at position
ctx − 1 + t; the value of the state *before* token t is read at the same position.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn


@dataclass
class RLHFConfig:
    seed: int = 0
    """seeds the prompts, the sampling and the minibatch shuffles"""
    batch_size: int = 16
    """prompts per rollout, one response each"""
    response_length: int = 16
    """maximum number of generated tokens per response (R)"""
    temperature: float = 0.7
    """sampling temperature; every log-prob computation divides the logits by it too"""
    learning_rate: float = 1e-4
    """Adam learning rate (policy and value head); 3e-4 already gives approx KL ≈ 0.2 on the first update"""
    num_ppo_epochs: int = 4
    """passes over each rollout"""
    num_minibatches: int = 2
    """minibatches per epoch"""
    init_kl_coef: float = 0.05
    """β at the start (TRL's default kl_coef; lm-human-preferences used 0.15)"""
    kl_target: float = 6.0
    """target of the adaptive controller, in nats per response (lm-human-preferences: 6)"""
    kl_horizon: int = 10_000
    """horizon of the adaptive controller, in episodes (lm-human-preferences: 10 000)"""
    gamma: float = 1.0
    """discount over response tokens (1: the score at EOS counts fully for every token)"""
    lam: float = 0.95
    """GAE λ over response tokens"""
    cliprange: float = 0.2
    """ε of the clipped policy loss"""
    cliprange_value: float = 0.2
    """clip range of the value update around the rollout's values"""
    vf_coef: float = 0.1
    """weight of the value loss (TRL's default)"""
    whiten_rewards: bool = True
    """whiten the per-token rewards WITHOUT shifting their mean (lm-human-preferences)"""
    max_grad_norm: float = 1.0
    """global gradient-norm clip"""
    torch_threads: int = 1
    """torch CPU threads: a 1-2 M parameter model gains little from more"""

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches


class FixedKLController:
    """A constant β with the adaptive controller's interface."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


def make_value_head(hidden_size: int) -> nn.Linear:
    """Scalar value from the LM's last hidden state, zero-initialised (lm-human-preferences): V ≡ 0
    at the start, so the first advantages are the rewards themselves and the untrained head sends no
    gradient into the shared trunk."""
    head = nn.Linear(hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def forward(model: nn.Module, query_response: torch.Tensor, attention_mask: torch.Tensor):
    """One forward pass under left padding: (B, T) ids -> logits (B, T, V), last hidden state (B, T, H).

    Position ids count real tokens only (cumsum(mask) − 1, clamped at 0), so a left-padded prompt
    gets the same positions as the unpadded one; the pad ids themselves are never attended to.
    """
    from rlhf_course.tiny_lm import position_ids_from_mask

    out = model(input_ids=query_response, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), output_hidden_states=True)
    return out.logits, out.hidden_states[-1]


def token_gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float):
    """GAE over response tokens, all rows at once (the CartPole chapter's compute_gae, batched).

    Args:
        rewards, values: (B, R) per-token rewards and values, both 0 after the first EOS, so the
            padded tail contributes nothing; V after the last token is 0 (the episode is over).
    Returns:
        advantages (B, R), returns (B, R) = advantages + values.
    """
    B, R = rewards.shape
    advantages = np.zeros((B, R))
    lastgaelam = np.zeros(B)
    for t in reversed(range(R)):
        next_values = values[:, t + 1] if t + 1 < R else np.zeros(B)
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages[:, t] = lastgaelam
    return advantages, advantages + values


@dataclass
class RLHFState:
    """Everything one PPO-RLHF run carries from iteration to iteration."""
    policy: nn.Module
    """the language model being trained (π_θ)"""
    value_head: nn.Linear
    """V(s) on the policy's last hidden state (a shared trunk, as TRL's AutoModelForCausalLMWithValueHead)"""
    ref_policy: nn.Module
    """frozen copy of the starting policy (π_ref)"""
    tokenizer: object
    """the tiny LM's tokenizer (distinct pad and eos ids)"""
    optimizer: torch.optim.Optimizer
    """Adam over the policy and the value head"""
    kl_ctl: object
    """KL controller: .value is β, .update(current_kl, n_steps) adapts it"""
    iteration: int = 0
    """iterations done so far"""
    history: list = field(default_factory=list)
    """one metrics dict per iteration"""
    last_rollout: dict = field(default_factory=dict)
    """prompts, responses, scores, rewards, advantages and mask of the latest iteration"""
    description: str = ""
    """which language model the policy is ("tiny (1.09 M params, ...)" or "gpt2 (124 M params, ...)")"""


def make_rlhf_state(config: RLHFConfig | None = None, kl_ctl=None, policy: str = "tiny") -> RLHFState:
    """Load a pretrained LM as the policy, freeze a copy as the reference, add a value head.

    policy: "tiny" (the course's 1.1 M-parameter GPT-2, always available), "gpt2" or "auto" (the real
    GPT-2 from a LOCAL Hugging Face cache, e.g. on a GPU machine; falls back to tiny with a message).
    See ``rlhf_course.tiny_lm.load_policy``. Every later step is the same code at either scale.
    """
    from rlhf_course.tiny_lm import load_policy

    cfg = config or RLHFConfig()
    torch.set_num_threads(cfg.torch_threads)
    lm, tokenizer, description = load_policy(policy)          # `policy` names the model; `lm` is it
    lm.train(False)                                            # dropout is 0 anyway; keep it that way
    ref_policy = copy.deepcopy(lm)
    for p in ref_policy.parameters():
        p.requires_grad_(False)
    value_head = make_value_head(lm.config.n_embd)
    optimizer = torch.optim.Adam(list(lm.parameters()) + list(value_head.parameters()),
                                 lr=cfg.learning_rate, eps=1e-5)
    return RLHFState(lm, value_head, ref_policy, tokenizer, optimizer,
                     kl_ctl if kl_ctl is not None else FixedKLController(cfg.init_kl_coef),
                     description=description)


def _tmean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Torch twin of the student's masked_mean, for the losses that need autograd."""
    return (x * mask).sum() / mask.sum()


def ppo_rlhf_iteration(
    state: RLHFState,
    config: RLHFConfig,
    *,
    response_log_probs: Callable,
    per_token_rewards: Callable,
    masked_mean: Callable,
    masked_whiten: Callable,
    kl_estimates: Callable,
    reward_fn: Callable | None = None,
    prompts: list[str] | None = None,
) -> dict:
    """One PPO-RLHF iteration: rollout, scores, rewards, GAE, PPO epochs. Returns TRL-named metrics.

    Args:
        state: from make_rlhf_state; updated in place (weights, optimizer, β, iteration, history).
        config: hyperparameters.
        response_log_probs, per_token_rewards, masked_mean, masked_whiten, kl_estimates: the graded
            functions (see the module docstring).
        reward_fn: full reviews (prompt + " " + response) -> (B,) scores; the text world's gold_reward
            (the simulated human) if None.
        prompts: B prompts; B fresh ones from the text world if None.
    """
    from rlhf_course.textworld import gold_reward, sample_prompts
    from rlhf_course.tiny_lm import generate_responses

    cfg = config
    start = time.perf_counter()
    torch.set_num_threads(cfg.torch_threads)
    seed = cfg.seed * 100_003 + state.iteration                 # a different, repeatable draw per iteration
    rng = np.random.default_rng(seed)
    reward_fn = reward_fn or gold_reward
    if prompts is None:
        prompts = sample_prompts(cfg.batch_size, seed=seed)
    policy, ref_policy, value_head = state.policy, state.ref_policy, state.value_head
    B, T = len(prompts), cfg.temperature

    # 1. Rollout: sample one response per prompt from the current (old) policy.
    with torch.no_grad():
        gen = generate_responses(policy, state.tokenizer, prompts, max_new_tokens=cfg.response_length,
                                 temperature=T, seed=seed)
    query_response = gen["query_response"]                      # (B, ctx + R) left-padded queries, responses
    attention_mask = gen["attention_mask"]                      # (B, ctx + R)
    ctx = gen["context_length"]
    R = query_response.shape[1] - ctx
    mask_np = np.asarray(gen["response_mask"], dtype=np.float64)  # (B, R) 1 up to and incl. the first EOS
    mask = torch.as_tensor(mask_np, dtype=torch.float32)

    # 2. Scores: one number per response from the reward function (here the simulated human), which
    #    judges the whole review: prompt + " " + completion.
    reviews = [p + " " + r for p, r in zip(prompts, gen["responses"])]
    scores = np.asarray(reward_fn(reviews), dtype=np.float64)  # (B,)

    # 3. Log-probs of the sampled tokens under the policy and the reference, and values, no grad.
    with torch.no_grad():
        logits, hidden = forward(policy, query_response, attention_mask)           # (B, ctx+R, V), (B, ctx+R, H)
        logprobs = response_log_probs(logits, query_response, ctx, T)              # (B, R) log π_old
        ref_logits, _ = forward(ref_policy, query_response, attention_mask)
        ref_logprobs = response_log_probs(ref_logits, query_response, ctx, T)      # (B, R) log π_ref
        values = value_head(hidden[:, ctx - 1:-1]).squeeze(-1)                    # (B, R) V(s_t) before token t
    logprobs_np = logprobs.double().numpy() * mask_np          # padding: 0, never used
    ref_logprobs_np = ref_logprobs.double().numpy() * mask_np
    values_np = values.double().numpy() * mask_np              # V = 0 after the episode ends

    # 4. Per-token rewards: −β·(log π − log π_ref) on every real token, the score at the last one.
    kl_coef = float(state.kl_ctl.value)
    rewards = per_token_rewards(scores, logprobs_np, ref_logprobs_np, mask_np, kl_coef)   # (B, R)
    non_score_reward = -kl_coef * (logprobs_np - ref_logprobs_np) * mask_np              # for logging
    if cfg.whiten_rewards:
        rewards = masked_whiten(rewards, mask_np, shift_mean=False)  # scale only: a shift would bias GAE

    # 5. Advantages with GAE over the response tokens; whitened WITH the mean shift.
    advantages, returns = token_gae(rewards * mask_np, values_np, cfg.gamma, cfg.lam)
    advantages = masked_whiten(advantages, mask_np)            # (B, R), 0 on padding

    b_advantages = torch.as_tensor(advantages, dtype=torch.float32)
    b_returns = torch.as_tensor(returns, dtype=torch.float32)
    b_values = torch.as_tensor(values_np, dtype=torch.float32)
    b_logprobs = torch.as_tensor(logprobs_np, dtype=torch.float32)

    # 6. PPO epochs over minibatches: clipped policy loss and clipped value loss on real tokens only.
    stats = {k: [] for k in ("approxkl", "pg_clipfrac", "pg_loss", "vf_loss", "vf_clipfrac", "entropy", "ratio")}
    first_ratio_max_dev = None
    b_inds = np.arange(B)
    mb_size = max(1, B // cfg.num_minibatches)
    for epoch in range(cfg.num_ppo_epochs):
        rng.shuffle(b_inds)
        for start_i in range(0, B, mb_size):
            mb = b_inds[start_i:start_i + mb_size]
            mb_mask = mask[mb]                                                         # (mb, R)
            new_logits, new_hidden = forward(policy, query_response[mb], attention_mask[mb])
            new_logprobs = response_log_probs(new_logits, query_response[mb], ctx, T)  # (mb, R), with grad
            vpred = value_head(new_hidden[:, ctx - 1:-1]).squeeze(-1)                 # (mb, R)

            logratio = (new_logprobs - b_logprobs[mb]) * mb_mask
            ratio = torch.exp(logratio)                                                # (mb, R)
            mb_adv = b_advantages[mb]
            pg_losses = -mb_adv * ratio
            pg_losses2 = -mb_adv * torch.clamp(ratio, 1 - cfg.cliprange, 1 + cfg.cliprange)
            pg_loss = _tmean(torch.max(pg_losses, pg_losses2), mb_mask)

            mb_values, mb_returns = b_values[mb], b_returns[mb]
            vpredclipped = mb_values + torch.clamp(vpred - mb_values, -cfg.cliprange_value, cfg.cliprange_value)
            vf_losses1 = (vpred - mb_returns) ** 2
            vf_losses2 = (vpredclipped - mb_returns) ** 2
            vf_loss = 0.5 * _tmean(torch.max(vf_losses1, vf_losses2), mb_mask)
            loss = pg_loss + cfg.vf_coef * vf_loss

            state.optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(list(policy.parameters()) + list(value_head.parameters()), cfg.max_grad_norm)
            state.optimizer.step()

            # Diagnostics with the student's masked_mean on detached numpy copies.
            m = mb_mask.numpy().astype(np.float64)
            lr_np = logratio.detach().double().numpy()
            r_np = np.exp(lr_np)
            if first_ratio_max_dev is None:
                # Sanity check: nothing has moved yet, so every ratio of the first minibatch is 1.
                first_ratio_max_dev = float(np.max(np.abs(r_np - 1) * m))
            with torch.no_grad():
                scaled = new_logits[:, ctx - 1:-1] / T
                p = torch.softmax(scaled, -1)
                ent = (torch.logsumexp(scaled, -1) - (p * scaled).sum(-1)).double().numpy()  # (mb, R)
            stats["approxkl"].append(masked_mean(0.5 * lr_np ** 2, m))              # k2 of old vs new
            stats["pg_clipfrac"].append(masked_mean((pg_losses2 > pg_losses).double().numpy(), m))
            stats["pg_loss"].append(float(pg_loss.item()))
            stats["vf_loss"].append(float(vf_loss.item()))
            stats["vf_clipfrac"].append(masked_mean((vf_losses2 > vf_losses1).double().numpy(), m))
            stats["entropy"].append(masked_mean(ent, m))
            stats["ratio"].append(masked_mean(r_np, m))

    # 7. Metrics (TRL's names) and the KL controller's update.
    k1, _, k3 = kl_estimates(logprobs_np, ref_logprobs_np)
    mean_kl = float(np.mean(np.sum(np.asarray(k1) * mask_np, axis=1)))        # nats per response
    mean_non_score = float(np.mean(non_score_reward.sum(1)))
    metrics = {
        "objective/kl": mean_kl,
        "objective/kl_k3": float(np.mean(np.sum(np.asarray(k3) * mask_np, axis=1))),
        "objective/entropy": float(np.mean(np.sum(-logprobs_np, axis=1))),
        "objective/non_score_reward": mean_non_score,
        "objective/rlhf_reward": mean_non_score + float(scores.mean()),
        "objective/scores": float(scores.mean()),
        "objective/kl_coef": kl_coef,
        "policy/approxkl_avg": float(np.mean(stats["approxkl"])),
        "policy/clipfrac_avg": float(np.mean(stats["pg_clipfrac"])),
        "loss/policy_avg": float(np.mean(stats["pg_loss"])),
        "loss/value_avg": float(np.mean(stats["vf_loss"])),
        "val/clipfrac_avg": float(np.mean(stats["vf_clipfrac"])),
        "policy/entropy_avg": float(np.mean(stats["entropy"])),
        "val/ratio": float(np.mean(stats["ratio"])),
        "val/ratio_var": float(np.var(stats["ratio"])),
        "val/num_eos_tokens": int((query_response[:, ctx:] == state.tokenizer.eos_token_id).sum().item()),
        "sanity/first_ratio_max_dev": first_ratio_max_dev,
        "lr": state.optimizer.param_groups[0]["lr"],
        "episode": (state.iteration + 1) * B,
        "seconds": time.perf_counter() - start,
    }
    state.kl_ctl.update(mean_kl, B)
    state.iteration += 1
    state.history.append(metrics)
    state.last_rollout = {"prompts": list(prompts), "responses": list(gen["responses"]), "scores": scores,
                          "rewards": rewards, "advantages": advantages, "mask": mask_np}
    return metrics


TRL_METRICS = ["objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward",
               "objective/scores", "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg",
               "loss/value_avg", "val/clipfrac_avg", "policy/entropy_avg", "val/ratio", "val/ratio_var",
               "val/num_eos_tokens", "lr", "episode"]
"""The metric names TRL's PPOTrainer logs (trl 1.12), all present in ppo_rlhf_iteration's output."""


def print_metrics(metrics: dict, keys: list[str] | None = None) -> None:
    """One metric per line, TRL's names, aligned."""
    for key in keys or list(metrics):
        value = metrics[key]
        print(f"{key:28s} {value:12.5g}" if isinstance(value, float) else f"{key:28s} {value:>12}")
