"""DPO on preference pairs: the one trainer of the course that is not a rollout loop (chapter 6).

Direct preference optimisation (Rafailov et al. 2023) fits the policy to labelled pairs (x, y_w, y_l)
with no sampling and no reward model. CleanRL-style, like ``rlhf_course.rlhf_ppo``: a dataclass of
hyperparameters, a state, ``dpo_step`` with numbered phases, ``train_dpo`` around it.

The graded loss is NOT here. ``dpo_step`` receives the learner's numpy function

* ``dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
  -> (loss, chosen_rewards, rejected_rewards)``,

which sees only the 2B summed log-probabilities of the batch. The loss depends on the policy's weights
through those 2B numbers alone, so by the chain rule

    ∇_θ L = Σ_i ∂L/∂ℓ_w,i · ∇_θ ℓ_w,i + ∂L/∂ℓ_l,i · ∇_θ ℓ_l,i,     ℓ = log π_θ(y | x) summed over tokens.

The 2B partial derivatives come from central differences of the learner's function (4B calls on (B,)
arrays, microseconds each, exact to about 1e-9 in float64); autograd then backpropagates the surrogate
Σ_i g_w,i ℓ_w,i + g_l,i ℓ_l,i, whose gradient is exactly the sum above. So a numpy answer drives a
torch model, and a wrong loss trains the wrong way, as it should.

Conventions: a response's log-probability is the sum over its tokens and the EOS after it, under the
same temperature-T distribution the rollout loops sample from (the policy DPO trains is the one the
race samples and measures). Pairs are texts, re-tokenised as ``encode_demonstrations`` does for SFT:
the prompt's ids, then " " + response, then EOS.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from rlhf_course.rlhf_ppo import (clipped_step, keep_freed_memory, predicting_hidden_states, sampling_log_softmax,
                                  use_fast_kernels)


@dataclass
class DPOConfig:
    seed: int = 0
    """seeds the order of the pairs"""
    beta: float = 0.1
    """β of the DPO loss: the KL coefficient of the objective it optimises"""
    learning_rate: float = 1e-4
    """Adam learning rate"""
    batch_size: int = 32
    """pairs per step"""
    epochs: int = 1
    """passes over the pairs"""
    temperature: float = 0.7
    """log-probs are those of softmax(logits / T), the distribution the rollout loops sample from"""
    max_grad_norm: float = 1.0
    """global gradient-norm clip"""
    torch_threads: int = 1
    """torch CPU threads"""


@dataclass
class DPOState:
    """Everything a DPO run carries from step to step."""
    policy: nn.Module
    """the language model being trained (π_θ)"""
    ref_policy: nn.Module
    """frozen copy of the starting policy (π_ref)"""
    tokenizer: object
    """the tokenizer (distinct pad and eos ids)"""
    optimizer: torch.optim.Optimizer
    """Adam over the policy"""
    step: int = 0
    """steps taken so far"""
    history: list = field(default_factory=list)
    """one metrics dict per step"""


def make_dpo_state(cfg: DPOConfig, policy: nn.Module, tokenizer) -> DPOState:
    """The policy (trained in place: pass a copy to keep the original), a frozen copy as π_ref, Adam."""
    torch.set_num_threads(cfg.torch_threads)
    if next(policy.parameters()).device.type == "cpu":
        keep_freed_memory()
    use_fast_kernels(policy).train(False)              # dropout is 0 anyway; keep it that way
    ref_policy = copy.deepcopy(policy)
    for p in ref_policy.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
    return DPOState(policy, ref_policy, tokenizer, optimizer)


def encode_pairs(tokenizer, prefs) -> dict:
    """Preferences (``textworld.Preference``) -> token ids of the chosen and the rejected texts.

    Returns "chosen" and "rejected", each (input_ids, response_mask, attention_mask) of shape (N, T):
    right-padded, response_mask 1 on the response's tokens and its EOS (what ℓ sums over).
    """
    from rlhf_course.capstone import encode_demonstrations

    prompts = [p.prompt for p in prefs]
    out = {}
    for side in ("chosen", "rejected"):
        ids, prompt_mask, attn = encode_demonstrations(tokenizer, prompts, [getattr(p, side) for p in prefs])
        out[side] = (ids, attn * (1 - prompt_mask), attn)
    return out


def sequence_log_probs(model: nn.Module, ids: torch.Tensor, response_mask: torch.Tensor,
                       attention_mask: torch.Tensor, temperature: float, pad_id: int) -> torch.Tensor:
    """(N,) ℓ = Σ_t log π(y_t | x, y_<t) over the response tokens (response_mask = 1), at temperature T.

    Token t is predicted by the hidden state at position t − 1. The LM head and the log-softmax run on
    those positions only, gathered into one (n, H) matrix (n = the batch's response tokens): GPT-2's head
    is a 50,257 × 768 matrix, and the prompt's and the padding's positions do not need it. The last
    position predicts nothing, so the trunk runs on the first T − 1 (``predicting_hidden_states``).
    """
    from rlhf_course import fast_gpt2

    T_len = int(attention_mask.sum(1).max())                 # trim the batch to its longest row
    ids, response_mask, attention_mask = ids[:, :T_len], response_mask[:, :T_len], attention_mask[:, :T_len]
    head_weight = fast_gpt2.tied_head_weight(model)          # before the trunk: see there
    hidden = predicting_hidden_states(model, ids, attention_mask)                        # (N, T − 1, H)
    predicts = response_mask[:, 1:] > 0                                                  # (N, T − 1)
    row = predicts.nonzero()[:, 0]                                                       # (n,) each one's row
    logits = fast_gpt2.lm_head(model.get_output_embeddings(), hidden[predicts], head_weight)  # (n, V)
    logp = sampling_log_softmax(logits, temperature, pad_id)                             # (n, V)
    tok = logp.gather(-1, ids[:, 1:][predicts][:, None]).squeeze(-1)                     # (n,)
    return torch.zeros(ids.shape[0], dtype=tok.dtype, device=tok.device).index_add(0, row, tok)


def stack_rows(first, second, pad_id: int):
    """Two (ids, response_mask, attention_mask) batches, each (B, T_i), right-padded to a common width and
    stacked: (2B, max T_i) each."""
    width = max(first[0].shape[1], second[0].shape[1])

    def widen(t, fill):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill)

    return tuple(torch.cat([widen(a, fill), widen(b, fill)]) for a, b, fill in zip(first, second, (pad_id, 0, 0)))


def loss_gradients(dpo_loss: Callable, pc: np.ndarray, pr: np.ndarray, rc: np.ndarray, rr: np.ndarray,
                   beta: float, h: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """∂L/∂ℓ_w and ∂L/∂ℓ_l, each (B,), by central differences of the learner's ``dpo_loss``."""
    def loss(a, b):
        return float(dpo_loss(a, b, rc, rr, beta)[0])

    g_c, g_r = np.zeros_like(pc), np.zeros_like(pr)
    for row, step in enumerate(np.eye(len(pc)) * h):        # perturb one pair's log-prob at a time
        g_c[row] = (loss(pc + step, pr) - loss(pc - step, pr)) / (2 * h)
        g_r[row] = (loss(pc, pr + step) - loss(pc, pr - step)) / (2 * h)
    return g_c, g_r


def dpo_step(state: DPOState, cfg: DPOConfig, chosen, rejected, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, dpo_loss: Callable) -> dict:
    """One Adam step on a batch of pairs with the learner's ``dpo_loss``.

    Args:
        chosen, rejected: (ids, response_mask, attention_mask) of the batch's pairs, each (B, T).
        ref_chosen, ref_rejected: (B,) ℓ under π_ref (fixed: computed once per pair by ``train_dpo``).
    Returns:
        "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins" (TRL's
        DPOTrainer names), "logps/chosen", "logps/rejected" (mean ℓ: watch them both fall).
    """
    pad = state.tokenizer.pad_token_id
    # 1. ℓ of both responses under the policy, with gradient: one forward over the 2B rows (one pass with
    #    twice the rows keeps the matrices larger, which is faster than two passes).
    B = chosen[0].shape[0]
    both = sequence_log_probs(state.policy, *stack_rows(chosen, rejected, pad), cfg.temperature, pad)
    lc, lr_ = both[:B], both[B:]                                                           # (B,) each
    as_np = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    pc, pr, rc, rr = as_np(lc), as_np(lr_), as_np(ref_chosen), as_np(ref_rejected)

    # 2. The learner's loss, and its gradient with respect to the 2B log-probabilities.
    loss, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, cfg.beta)
    g_c, g_r = loss_gradients(dpo_loss, pc, pr, rc, rr, cfg.beta)

    # 3. Backpropagate Σ g·ℓ: its gradient is the chain rule's ∇_θ L.
    surrogate = ((torch.as_tensor(g_c, dtype=lc.dtype, device=lc.device) * lc).sum()
                 + (torch.as_tensor(g_r, dtype=lc.dtype, device=lc.device) * lr_).sum())
    state.optimizer.zero_grad(set_to_none=True)
    surrogate.backward()
    clipped_step(state.optimizer, list(state.policy.parameters()), cfg.max_grad_norm)

    chosen_rewards, rejected_rewards = np.asarray(chosen_rewards), np.asarray(rejected_rewards)
    metrics = {"loss": float(np.asarray(loss)), "rewards/chosen": float(chosen_rewards.mean()),
               "rewards/rejected": float(rejected_rewards.mean()),
               "rewards/accuracies": float(np.mean(chosen_rewards > rejected_rewards)),
               "rewards/margins": float(np.mean(chosen_rewards - rejected_rewards)),
               "logps/chosen": float(pc.mean()), "logps/rejected": float(pr.mean())}
    state.step += 1
    state.history.append(metrics)
    return metrics


@torch.no_grad()
def reference_log_probs(state: DPOState, cfg: DPOConfig, pairs: dict, batch_size: int = 256):
    """(N,) ℓ under π_ref of every chosen and every rejected response, computed once."""
    pad = state.tokenizer.pad_token_id
    out = {}
    for side in ("chosen", "rejected"):
        ids, rmask, attn = pairs[side]
        out[side] = torch.cat([sequence_log_probs(state.ref_policy, ids[i:i + batch_size], rmask[i:i + batch_size],
                                                  attn[i:i + batch_size], cfg.temperature, pad)
                               for i in range(0, len(ids), batch_size)])
    return out["chosen"], out["rejected"]


def train_dpo(state: DPOState, cfg: DPOConfig, prefs, *, dpo_loss: Callable, callback: Callable | None = None,
              progress: bool = False) -> list[dict]:
    """``cfg.epochs`` passes over ``prefs`` in shuffled batches of ``cfg.batch_size`` pairs.

    callback(state, metrics) runs after every step (e.g. to evaluate every few steps). Returns the
    per-step metrics, each with "seconds" since the start.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    torch.set_num_threads(cfg.torch_threads)
    device = next(state.policy.parameters()).device
    pairs = {side: tuple(t.to(device) for t in tensors) for side, tensors in encode_pairs(state.tokenizer, prefs).items()}
    ref_c, ref_r = reference_log_probs(state, cfg, pairs)
    rng = np.random.default_rng(cfg.seed)
    n = len(prefs)
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{n} preference pairs make no batch of {cfg.batch_size}")
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="DPO", disable=not progress, leave=False)
    for _ in range(cfg.epochs):
        order = rng.permutation(n)
        for s in range(steps_per_epoch):
            rows = torch.as_tensor(order[s * cfg.batch_size:(s + 1) * cfg.batch_size])
            batch = [tuple(t[rows] for t in pairs[side]) for side in ("chosen", "rejected")]
            m = dpo_step(state, cfg, *batch, ref_c[rows], ref_r[rows], dpo_loss=dpo_loss)
            m["seconds"] = time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(loss=f"{m['loss']:.3f}")
            if callback is not None:
                callback(state, m)
    bar.close()
    return state.history
