"""RLOO on the text world: the loop around the learner's ``rloo_advantages`` (chapter 6's graded micro-run).

CleanRL-style, like ``rlhf_course.rlhf_ppo``: a dataclass of hyperparameters, two small helpers, then
``rloo_iteration`` with numbered phases. RLOO (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics")
is REINFORCE with one reward per response and, as its baseline, the mean reward of the other k − 1
responses to the same prompt: no value network, no GAE, no ratio, one gradient step per rollout.

The graded algorithm is NOT here. ``rloo_iteration`` receives the learner's function

* ``rloo_advantages(rewards, k) -> (N·k,)`` (numpy): rewards in groups of k consecutive samples of the
  same prompt; each sample's reward minus the mean of the other k − 1 of its group,

and does the rest: sample k responses to each of N prompts from the current policy, score them with the
text world's simulated human (``gold_reward``), subtract β times each response's KL to the reference
(the k1 estimate summed over its tokens: the KL in the reward, where Ahmadian et al. put it, unlike GRPO's
k3 in the loss), call ``rloo_advantages``, and take one Adam step on

    loss = −(1 / (N·k)) Σ_i A_i · Σ_t log π_θ(y_{i,t} | x_i, y_{i,<t})        (real tokens only).

Conventions are chapter 4's: left-padded prompts, R response tokens, a mask that is 1 up to and
including the first EOS, the log-probability of response token t read from the logits at position
ctx − 1 + t, every log-prob taken from the distribution the sampler draws from (the temperature
divides the logits, the pad token is never drawn).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from rlhf_course import textworld as tw
from rlhf_course.rlhf_ppo import logprob_targets, response_logits, sampling_logits, use_fast_kernels


@dataclass
class RLOOConfig:
    seed: int = 0
    """seeds the prompts and the sampling of every iteration"""
    prompts_per_iteration: int = 16
    """N: prompts per rollout"""
    k: int = 4
    """responses sampled per prompt (consecutive in the batch): the group RLOO's baseline comes from"""
    response_length: int = 16
    """maximum number of generated tokens per response (R)"""
    temperature: float = 0.7
    """sampling temperature; every log-prob divides the logits by it too"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    kl_coef: float = 0.05
    """β: each response's reward is its score minus β · Σ_t (log π − log π_ref) over its tokens"""
    max_grad_norm: float = 1.0
    """global gradient-norm clip"""
    torch_threads: int = 1
    """torch CPU threads (the grader runs two notebooks at once on 2 cores: one each)"""
    iterations: int = 30
    """iterations of a run (the graded micro-run's 30: about 15 s on one CPU thread)"""
    eval_prompts: int = 128
    """held-out prompts of ``evaluate``, sampled with a fixed seed (common random numbers)"""

    @property
    def batch_size(self) -> int:
        return self.prompts_per_iteration * self.k


@dataclass
class RLOOState:
    """Everything an RLOO run carries from iteration to iteration."""
    policy: nn.Module
    """the language model being trained (π_θ)"""
    ref_policy: nn.Module
    """frozen copy of the starting policy (π_ref)"""
    tokenizer: object
    """the tokenizer (distinct pad and eos ids)"""
    optimizer: torch.optim.Optimizer
    """Adam over the policy"""
    iteration: int = 0
    """iterations done so far"""
    history: list = field(default_factory=list)
    """one metrics dict per iteration"""
    last_rollout: dict = field(default_factory=dict)
    """prompts, responses, scores, rewards, advantages of the latest iteration"""


def make_rloo_state(cfg: RLOOConfig, policy="tiny", tokenizer=None) -> RLOOState:
    """The policy (the course's pretrained tiny GPT-2 by default, or a model with its tokenizer), a frozen
    copy as the reference, and Adam."""
    from rlhf_course.tiny_lm import load_policy

    torch.set_num_threads(cfg.torch_threads)
    if isinstance(policy, str):
        policy, tokenizer, _ = load_policy(policy)
    elif tokenizer is None:
        raise ValueError("make_rloo_state(policy=<a model>) needs its tokenizer too")
    use_fast_kernels(policy).train(False)                      # dropout is 0 anyway; keep it that way
    ref_policy = copy.deepcopy(policy)
    for p in ref_policy.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
    return RLOOState(policy, ref_policy, tokenizer, optimizer)


def token_log_probs(model: nn.Module, query_response: torch.Tensor, attention_mask: torch.Tensor, ctx: int,
                    targets: torch.Tensor, temperature: float, pad_id: int) -> torch.Tensor:
    """(B, R) log-probabilities of the response tokens under ``model``'s sampling distribution.

    targets: (B, 1 + R) from ``logprob_targets`` (the last query token, then the response with its
    padding read as EOS). ``response_logits`` returns the logits of positions ctx − 1 … ctx + R − 1:
    entry t predicts response token t.
    """
    logits, _ = response_logits(model, query_response, attention_mask, ctx)           # (B, R + 1, V)
    logp = (sampling_logits(logits[:, :-1], pad_id) / temperature).log_softmax(-1)     # (B, R, V)
    return logp.gather(-1, targets[:, 1:, None]).squeeze(-1)                           # (B, R)


def rloo_iteration(state: RLOOState, cfg: RLOOConfig, *, rloo_advantages: Callable,
                   reward_fn: Callable | None = None) -> dict:
    """One RLOO iteration: k samples per prompt, rewards, the learner's advantages, one policy-gradient step.

    Args:
        state: from make_rloo_state; updated in place (weights, optimizer, iteration, history).
        rloo_advantages: the learner's function, (rewards (N·k,), k) -> advantages (N·k,).
        reward_fn: full reviews (prompt + " " + response) -> (B,) scores; default the text world's gold
            reward (the simulated human).
    Returns:
        metrics: "objective/scores" (mean score), "objective/kl" (mean k1 KL per response, nats),
        "objective/rlhf_reward" (mean score − β·KL), "loss/policy", "sanity/advantage_group_sum" (max
        |sum of the advantages of a group|: 0 for RLOO), "sanity/logprob_max_dev" (training forward vs
        the sampler's own log-probs), "seconds".
    """
    from rlhf_course.tiny_lm import generate_responses

    start = time.perf_counter()
    torch.set_num_threads(cfg.torch_threads)
    policy, ref_policy, tok = state.policy, state.ref_policy, state.tokenizer
    seed = cfg.seed * 100_003 + state.iteration                 # a different, repeatable draw per iteration
    N, k, T = cfg.prompts_per_iteration, cfg.k, cfg.temperature
    prompts = tw.sample_prompts(N, seed=seed)
    repeated = [p for p in prompts for _ in range(k)]           # (N·k,): k consecutive samples per prompt

    # 1. Rollout: k responses to each prompt from the current policy.
    with torch.no_grad():
        gen = generate_responses(policy, tok, repeated, max_new_tokens=cfg.response_length, temperature=T,
                                 seed=seed + 7_919, return_token_logprobs=True)
    qr, am, ctx = gen["query_response"], gen["attention_mask"], gen["context_length"]
    mask = gen["response_mask"]                                 # (B, R) 1 up to and incl. the first EOS
    targets = logprob_targets(qr, ctx, tok.pad_token_id, tok.eos_token_id)   # (B, 1 + R)

    # 2. Scores of the full reviews, and each response's KL to the reference (k1 summed over its tokens).
    reviews = [p + " " + r for p, r in zip(repeated, gen["responses"])]
    scores = np.asarray((reward_fn or tw.gold_reward)(reviews), dtype=np.float64)          # (B,)
    with torch.no_grad():
        ref_logprobs = token_log_probs(ref_policy, qr, am, ctx, targets, T, tok.pad_token_id)  # (B, R)
    old_logprobs = gen["token_logprobs"]                        # (B, R) what each token was drawn with
    kl = ((old_logprobs - ref_logprobs) * mask).sum(1).double().numpy()                      # (B,) nats
    rewards = scores - cfg.kl_coef * kl                         # the KL in the reward (Ahmadian et al. 2024)

    # 3. The learner's leave-one-out advantages: one number per response.
    advantages = np.asarray(rloo_advantages(rewards.copy(), k), dtype=np.float64)          # (B,)
    if advantages.shape != rewards.shape:
        raise ValueError(f"rloo_advantages returned shape {advantages.shape} for rewards of shape {rewards.shape}")

    # 4. One REINFORCE step: −mean_i A_i · log π_θ(y_i), the log-prob of a response being the sum over its
    #    real tokens. On-policy, so no ratio and no clip.
    logprobs = token_log_probs(policy, qr, am, ctx, targets, T, tok.pad_token_id)          # (B, R), with grad
    seq_logprobs = (logprobs * mask).sum(1)                                                 # (B,)
    adv = torch.as_tensor(advantages, dtype=seq_logprobs.dtype)
    loss = -(adv * seq_logprobs).mean()
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for p in policy.parameters():    # a tied embedding whose head got no gradient (use_fast_kernels) is sparse
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.to_dense()
    nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
    state.optimizer.step()

    metrics = {
        "objective/scores": float(scores.mean()),
        "objective/kl": float(kl.mean()),
        "objective/rlhf_reward": float(rewards.mean()),
        "loss/policy": float(loss.item()),
        "sanity/advantage_group_sum": float(np.max(np.abs(advantages.reshape(-1, k).sum(1)))),
        "sanity/logprob_max_dev": float(((logprobs.detach() - old_logprobs).abs() * mask).max()),
        "seconds": time.perf_counter() - start,
    }
    state.iteration += 1
    state.history.append(metrics)
    state.last_rollout = {"prompts": repeated, "responses": list(gen["responses"]), "scores": scores,
                          "kl": kl, "rewards": rewards, "advantages": advantages}
    return metrics


@torch.no_grad()
def evaluate(cfg: RLOOConfig, policy: nn.Module, ref_policy: nn.Module, tokenizer, seed: int = 12_345) -> dict:
    """Sample the policy once on each of ``cfg.eval_prompts`` held-out prompts (fixed prompts and seed).

    Returns means over responses of "gold" (the simulated human's reward), "kl" (KL(π‖π_ref) of the whole
    response, exactly: the sum over its tokens of the KL between the two next-token sampling
    distributions, so no sampling noise from k1) and "length" (response tokens), and the "texts".
    """
    from rlhf_course.tiny_lm import generate_responses

    prompts = tw.sample_prompts(cfg.eval_prompts, seed=cfg.seed + 9_000)   # never a training prompt's seed
    T, pad = cfg.temperature, tokenizer.pad_token_id
    gen = generate_responses(policy, tokenizer, prompts, cfg.response_length, temperature=T, seed=seed,
                             return_logits=True)
    qr, am, ctx, mask = gen["query_response"], gen["attention_mask"], gen["context_length"], gen["response_mask"]
    ref_logits, _ = response_logits(ref_policy, qr, am, ctx)                          # (B, R + 1, V)
    logp = (sampling_logits(gen["logits"], pad) / T).log_softmax(-1)                  # (B, R, V)
    ref_logp = (sampling_logits(ref_logits[:, :-1], pad) / T).log_softmax(-1)
    kl_tok = (logp.exp() * (logp - ref_logp)).nan_to_num().sum(-1)                    # (B, R) exact per token
    texts = [p + " " + r for p, r in zip(prompts, gen["responses"])]
    return {"gold": float(tw.gold_reward(texts).mean()), "kl": float((kl_tok * mask).sum(1).mean()),
            "length": float(mask.sum(1).mean()), "texts": texts}
