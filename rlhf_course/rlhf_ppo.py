"""PPO on a language model (RLHF), CleanRL-style: the plumbing around the student's graded functions.

One file, one visible loop, the layout of ``rlhf_course/ppo.py`` carried over from CartPole to text:
a dataclass of hyperparameters, a few tiny helpers (the value head, one forward pass, GAE over
response tokens), then ``ppo_rlhf_iteration`` with numbered phases. The phases follow TRL's
``PPOTrainer.train`` (trl 1.12, ``trl.experimental.ppo``) and OpenAI's lm-human-preferences, whose
metric names it logs (``objective/kl``, ``policy/approxkl_avg``, ``val/ratio``, ...).

The same loop is chapter 4's single iteration and the capstone's trainer (``rlhf_course.capstone``):
device and precision are chosen once in the config (fp32, or bf16 autocast over fp32 master weights:
the gpu preset's choice, and on a CPU with bf16 matrix instructions the faster one for GPT-2 small), the reward is a text function (the simulated human) or a learned reward model on
token ids, and the update runs alone or under ``torchrun`` (DistributedDataParallel). Checkpoints
(``save_checkpoint`` / ``load_checkpoint``) hold everything an uninterrupted run would carry on with.

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
ctx − 1 + t; the value of the state *before* token t is read at the same position. Only those R
positions (ctx − 1 … ctx + R − 2) go through the LM head (``response_logits``; the last token predicts
past the end of the response, so the trunk never runs on it either), and the student's
``response_log_probs`` is called on them as ``response_log_probs(logits, query_response[:, ctx - 1:],
1, T)`` with one unused position of zeros appended (``sampling_logits(..., past_end=True)``): the same
function, a context of length 1, and none of the prompt's vocabulary-sized logits computed for nothing.

Log-probs are those of the distribution the sampler draws from. ``generate_responses`` never draws the
pad token, so every logit the student's function sees (π_old, π_ref and π_θ alike) has the pad column
set to −inf (``sampling_logits``), and the pad ids after each EOS are read as EOS (``logprob_targets``):
those positions are masked, but a gathered −inf times a mask of 0 would be NaN.
"""
from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn


ALGOS = ("ppo", "rloo", "grpo")
"""The policy-gradient estimators the loop knows (RLHFConfig.algo)."""


@dataclass
class RLHFConfig:
    seed: int = 0
    """seeds the prompts, the sampling and the minibatch shuffles"""
    batch_size: int = 16
    """responses per rollout (over all processes under torchrun): PPO samples one per prompt, RLOO and GRPO
    group_size per prompt"""
    response_length: int = 16
    """maximum number of generated tokens per response (R)"""
    temperature: float = 0.7
    """sampling temperature; every log-prob computation divides the logits by it too"""
    learning_rate: float = 1e-4
    """Adam learning rate (policy and value head); 3e-4 already gives approx KL ≈ 0.2 on the first update"""
    lr_schedule: str = "constant"
    """"constant", or "linear": decays to 0 at iteration total_iterations (TRL's default)"""
    total_iterations: int = 0
    """length of the run, for the linear schedule"""
    num_ppo_epochs: int = 4
    """passes over each rollout"""
    num_minibatches: int = 2
    """minibatches per epoch (one optimizer step each)"""
    gradient_accumulation_steps: int = 1
    """forward/backward passes per minibatch, to bound memory; the step is the same as without"""
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
    stop_at_eos: bool = True
    """a response ends at its first EOS (False: always R tokens, as the speed benchmark wants)"""
    rollout_logprobs: str = "sampling"
    """where log π_old and the values come from: "sampling" (the logits and hidden states the sampler
    computed anyway, as TRL does) or "forward" (one more no-grad pass; exactly the training pass's
    arithmetic, so the first ratio is 1 to the last bit even under bf16)"""
    device: str = "cpu"
    """"cpu", "cuda" (one GPU; under torchrun the process's own) or "auto" (cuda if available)"""
    bf16: bool = False
    """bf16 autocast for every forward pass, on any device (a CPU gains only where it has AVX512-BF16 or
    AMX); weights, optimizer and losses stay fp32"""
    torch_threads: int = 1
    """torch CPU threads: a 1-2 M parameter model gains little from more"""
    algo: str = "ppo"
    """"ppo" (GAE with a value head: ``ppo_rlhf_iteration``), or critic-free, one reward per response and
    ``group_size`` responses per prompt (``critic_free_iteration``, chapter 6): "rloo" (leave-one-out
    baseline, β·KL in the reward, one on-policy step per rollout) or "grpo" (group-normalised advantages,
    β·k3 in the loss, num_ppo_epochs × num_minibatches clipped steps per rollout)"""
    group_size: int = 4
    """rloo / grpo: responses sampled per prompt, in consecutive rows; batch_size counts responses"""
    loss_aggregation: str = "token-mean"
    """grpo: how the learner's grpo_loss averages over tokens: "token-mean" or "sequence-mean" """

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.algo != "ppo" and (self.group_size < 2 or self.batch_size % self.group_size):
            raise ValueError(f"{self.algo} needs group_size >= 2 dividing batch_size, got group_size="
                             f"{self.group_size}, batch_size={self.batch_size}")
        if self.algo != "ppo" and (self.rollout_logprobs != "sampling" or self.gradient_accumulation_steps != 1):
            raise ValueError(f"{self.algo} reads log π_old from the sampler and takes whole minibatches: "
                             "rollout_logprobs='forward' and gradient_accumulation_steps > 1 are PPO's options")


class FixedKLController:
    """A constant β with the adaptive controller's interface."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


def make_value_head(hidden_size: int) -> nn.Linear:
    """Scalar value from the LM's last hidden state, zero-initialised (lm-human-preferences): V ≡ 0
    at the start, so every δ_t is the reward r_t and the first advantages are the λ-discounted sums of
    the rewards ahead, Â_t = Σ_l (γλ)^l r_{t+l} (Σ_l 0.95^l r_{t+l} with γ = 1, λ = 0.95), before
    whitening; and the untrained head sends no gradient into the shared trunk."""
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


def predicting_hidden_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) left- or right-padded ids -> (B, T − 1, H): the trunk's last hidden state at every position
    but the last, i.e. at each position that predicts a next token in the row (position t predicts
    token t + 1). The last position predicts nothing, so the trunk never runs on it; attention is
    causal, so no other position changes. Position ids as in ``forward``."""
    from rlhf_course.tiny_lm import position_ids_from_mask

    inputs, mask = input_ids[:, :-1], attention_mask[:, :-1]
    return model.base_model(input_ids=inputs, attention_mask=mask,
                            position_ids=position_ids_from_mask(mask)).last_hidden_state


def response_logits(model: nn.Module, query_response: torch.Tensor, attention_mask: torch.Tensor,
                    context_length: int):
    """Like ``forward``, but only where a response token is predicted.

    Returns logits (B, R, V) and hidden states (B, R, H) of positions ctx − 1 … ctx + R − 2: entry t
    predicts response token t (and its hidden state is the state before it, a value head's input).
    With a 50 k vocabulary the head is a third of GPT-2's FLOPs; the prompt's positions do not need it.
    Nor does the last token, whose logits would predict past the end of the response
    (``predicting_hidden_states``; GPT-2 small's benchmark: 20 of 21 positions, 5 % of every forward
    and backward).
    """
    from rlhf_course import fast_gpt2

    head_weight = fast_gpt2.tied_head_weight(model)            # before the trunk: see there
    hidden = predicting_hidden_states(model, query_response, attention_mask)[:, context_length - 1:]  # (B, R, H)
    B, L, H = hidden.shape
    # One contiguous (B·R, H) matrix into the head: on a strided 3-D slice torch runs a batched
    # matmul at a third of the speed (GPT-2's head is a 50,257 × 768 matrix). On a CPU the logits come
    # back transposed in memory (fast_gpt2.lm_head); sampling_logits copies them contiguous.
    logits = fast_gpt2.lm_head(model.get_output_embeddings(), hidden.reshape(B * L, H), head_weight).view(B, L, -1)
    return logits, hidden


def sampling_logits(logits: torch.Tensor, pad_id: int, past_end: bool = False) -> torch.Tensor:
    """(..., V) logits -> float32 logits of the distribution ``generate_responses`` samples: the pad
    token's set to −inf, since the sampler never draws it. A contiguous copy (whatever the input's
    layout: ``response_logits`` gives them transposed on a CPU), so the gradient passes through.

    Without this, log π would be normalised over a token the policy never emits: off by log(1 − p_pad)
    at every token, which for GPT-2's added pad token (embedding initialised at the mean) is not small.

    past_end: (..., R, V) -> (..., R + 1, V), one more position of zeros after the last: the layout the
    graded ``response_log_probs(logits, query_response[:, ctx - 1:], 1, T)`` reads, whose last position
    predicts past the end of the response and is sliced off (never read; its gradient is 0). Written
    in the same copy, so it costs nothing where ``response_logits`` skipped that position.
    """
    pad = torch.tensor([pad_id], device=logits.device)
    if not past_end:
        copy = logits.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    else:
        *lead, R, V = logits.shape
        copy = logits.new_empty(*lead, R + 1, V, dtype=torch.float32)
        copy[..., R, :] = 0.0
        copy[..., :R, :] = logits                          # autograd: this slice's gradient goes to logits
    return copy.index_fill_(-1, pad, -float("inf"))


def sampling_log_softmax(logits: torch.Tensor, temperature: float, pad_id: int) -> torch.Tensor:
    """(..., V) logits -> (..., V) log of the distribution the sampler draws from: softmax(logits / T)
    with the pad token removed (plumbing of the critic-free loop and the evaluations; the PPO loop
    passes ``sampling_logits`` to the student's ``response_log_probs`` instead)."""
    return (sampling_logits(logits, pad_id) / temperature).log_softmax(-1)


def sampling_entropy(logits: torch.Tensor, temperature: float, pad_id: int) -> torch.Tensor:
    """(..., V) ``sampling_logits`` (the pad token's at −inf) -> (...) entropy −Σ p log p of
    softmax(logits / T), in nats (for logging).

    The pad token has p = 0 and log p = −inf, whose product is NaN in floating point; its log p is set
    to 0 instead, so it adds 0 · 0. (``torch.special.entr(p).sum(-1)`` gives the same, in 1.6× the time
    on GPT-2's 50 k vocabulary.)
    """
    logp = torch.log_softmax(logits / temperature, -1)                      # (..., V), a new tensor
    logp[..., pad_id] = 0.0
    return -torch.linalg.vecdot(logp.exp(), logp)


def logprob_targets(query_response: torch.Tensor, context_length: int, pad_id: int, eos_id: int) -> torch.Tensor:
    """(B, ctx + R) ids -> (B, 1 + R): the last query token, then the response with its padding read as
    EOS. The slots after the first EOS hold the pad id, whose sampling log-prob is −inf; they are masked
    everywhere, but −inf · 0 = NaN, so they are given a token of finite log-prob instead."""
    ids = query_response[:, context_length - 1:]
    return ids.masked_fill(ids == pad_id, eos_id)


def use_fast_kernels(model: nn.Module, sparse_embedding: bool = True) -> nn.Module:
    """The same GPT-2 function with less overhead and fewer passes over memory; returns the model.

    * The trunk's forward runs ``rlhf_course.fast_gpt2.hidden_states``: a dozen tensor operations per
      block instead of transformers' general machinery (for a tiny model, most of the time).

    * GPT-2's "gelu_new" activation is written in transformers as eight elementwise operations, each a
      full pass over the (tokens × 4E) MLP activations, forward and backward; torch's fused tanh-GELU
      kernel computes the same formula in one (equal to 1e-15 in float64).
    * GPT-2 ties the input embedding to the LM head. A dense embedding gradient is a (V × E) tensor of
      zeros with B·T rows filled in, then added to the head's gradient: two full passes over 154 MB
      per backward for GPT-2. A sparse one adds only the B·T rows into the head's (dense) gradient
      (in place, where the head's weight comes from ``fast_gpt2.tied_head_weight``).
      (Not under DistributedDataParallel, which insists that a sparse embedding's gradient stay sparse.)
    """
    from transformers.activations import ACT2FN

    from rlhf_course import fast_gpt2

    fast_gpt2.install(model)                                    # GPT-2's forward, written out (see there)
    swapped = False
    for module in model.modules():
        if type(getattr(module, "act", None)).__name__ == "NewGELUActivation":
            module.act, swapped = ACT2FN["gelu_pytorch_tanh"], True
    if swapped and getattr(model, "config", None) is not None:
        model.config.activation_function = "gelu_pytorch_tanh"   # saved with the model: reloads the same
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(embed, nn.Embedding):                          # only when tied: Adam needs a dense sum
        embed.sparse = sparse_embedding and head is not None and embed.weight is head.weight
    return model



def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep the memory torch frees for its next allocations; True if it agreed.

    An iteration allocates and frees the same large tensors every time (GPT-2's 55 MB logits, its
    154 MB head gradient, every activation). By default glibc hands blocks above its mmap threshold
    straight back to the kernel when they are freed, and trims the heap's top beyond 128 KB; the next
    allocation asks the kernel again, which maps and zeroes every 4 KB page on its first touch. On the
    GPT-2 small benchmark that was about 1.3 M page faults and 2 s of kernel CPU time per 10 s iteration.
    With mmap off (M_MMAP_MAX = 0) and trimming beyond 2 GB only (M_TRIM_THRESHOLD), freed blocks are
    reused: the process keeps its peak heap (≈ 10 % more resident memory here). Process-wide, like
    ``torch.set_num_threads``; a no-op where the C library has no ``mallopt`` (macOS, Windows).
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):                          # not glibc (or no symbol table)
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4                      # from glibc's <malloc.h>
    mmap_off = mallopt(M_MMAP_MAX, 0)                           # both set, whatever the first returns
    trim_late = mallopt(M_TRIM_THRESHOLD, 2**31 - 1)            # an int argument: 2 GB is its largest
    return bool(mmap_off and trim_late)


def clipped_step(optimizer: torch.optim.Optimizer, params: list, max_grad_norm: float) -> None:
    """Clip the global gradient norm of ``params`` and take the optimizer's step.

    A tied embedding whose head got no gradient this step (``use_fast_kernels``) holds a sparse gradient;
    Adam and the norm want it dense.
    """
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.to_dense()
    grads = [p.grad for p in params if p.grad is not None]
    total_norm = nn.utils.get_total_norm(grads)
    # clip_grad_norm_ always multiplies every gradient by min(max_norm / (norm + 1e-6), 1): a pass over
    # all of them even when the factor is 1, to spare a GPU a host sync. On a CPU reading the factor is
    # free, and skipping the × 1.0 is bit-identical (GPT-2 small: 4 passes over 500 MB an iteration).
    keep = total_norm.device.type == "cpu" and bool(max_grad_norm / (total_norm + 1e-6) >= 1.0)   # NaN: clip
    if not keep:
        nn.utils.clip_grads_with_norm_(params, max_grad_norm, total_norm)
    optimizer.step()

class PolicyAndValue(nn.Module):
    """The policy LM and its value head on the shared trunk: one module, so DDP can wrap both."""

    def __init__(self, lm: nn.Module, value_head: nn.Linear):
        super().__init__()
        self.lm, self.value_head = lm, value_head

    def forward(self, query_response, attention_mask, context_length):
        """-> logits (B, R, V) as ``response_logits``, values (B, R): V(state before token t)."""
        logits, hidden = response_logits(self.lm, query_response, attention_mask, context_length)
        return logits, self.value_head(hidden).squeeze(-1)


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
    """the tokenizer (distinct pad and eos ids)"""
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
    train_model: nn.Module | None = None
    """PolicyAndValue(policy, value_head), wrapped in DistributedDataParallel under torchrun"""

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device


def resolve_device(name: str) -> torch.device:
    """"cpu", "cuda" or "auto" -> a torch.device; under torchrun, CUDA means this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {name!r}")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU "
                             f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def distributed() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed has been initialised (torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def make_rlhf_state(config: RLHFConfig | None = None, kl_ctl=None, policy="tiny", tokenizer=None,
                    description: str | None = None) -> RLHFState:
    """Take a pretrained LM as the policy, freeze a copy as the reference, add a value head.

    policy: "tiny" (the course's 1.1 M-parameter GPT-2, always available), "gpt2" or "auto" (the real
    GPT-2 from a LOCAL Hugging Face cache, e.g. on a GPU machine; falls back to tiny with a message;
    see ``rlhf_course.tiny_lm.load_policy``), or a model itself (with its ``tokenizer``), e.g. the
    capstone's SFT model. Every later step is the same code at either scale. On ``config.device``;
    under torchrun the trained module is wrapped in DistributedDataParallel.
    """
    from rlhf_course.tiny_lm import load_policy

    cfg = config or RLHFConfig()
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.torch_threads)
        keep_freed_memory()
    if isinstance(policy, str):
        lm, tokenizer, description = load_policy(policy)       # `policy` names the model; `lm` is it
    elif tokenizer is None:
        raise ValueError("make_rlhf_state(policy=<a model>) needs its tokenizer too")
    else:
        lm = policy
        description = description or f"{type(lm).__name__} ({sum(p.numel() for p in lm.parameters()) / 1e6:.2f} M params)"
    use_fast_kernels(lm, sparse_embedding=distributed()[1] == 1).to(device)
    lm.train(False)                                            # dropout is 0 anyway; keep it that way
    ref_policy = copy.deepcopy(lm)
    for p in ref_policy.parameters():
        p.requires_grad_(False)
    value_head = make_value_head(lm.config.n_embd).to(device)
    # fused: one pass over parameters, gradients and both moments instead of a loop of small kernels
    optimizer = torch.optim.Adam(list(lm.parameters()) + list(value_head.parameters()),
                                 lr=cfg.learning_rate, eps=1e-5, fused=True)
    train_model = PolicyAndValue(lm, value_head)
    if distributed()[1] > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(train_model, device_ids=[device.index] if device.type == "cuda" else None)
    return RLHFState(lm, value_head, ref_policy, tokenizer, optimizer,
                     kl_ctl if kl_ctl is not None else FixedKLController(cfg.init_kl_coef),
                     description=description, train_model=train_model)


def _gather_rows(x: np.ndarray) -> np.ndarray:
    """Concatenate every process's rows in rank order (the identity in a single process)."""
    if distributed()[1] == 1:
        return x
    parts = [None] * distributed()[1]
    dist.all_gather_object(parts, x)
    return np.concatenate(parts, axis=0)


def _all_sum(x: float, device) -> float:
    """Sum of x over processes (x itself in a single process)."""
    if distributed()[1] == 1:
        return float(x)
    t = torch.tensor([float(x)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def _autocast(state: RLHFState, cfg: RLHFConfig):
    """bf16 autocast when asked for, otherwise nothing: the one place precision is chosen."""
    return torch.autocast(device_type=state.device.type, dtype=torch.bfloat16,
                          enabled=cfg.bf16)


def _apply_lr_schedule(state: RLHFState, cfg: RLHFConfig) -> None:
    """The learning rate of this iteration: constant, or TRL's default linear decay to 0."""
    if cfg.lr_schedule == "linear" and cfg.total_iterations > 0:
        for group in state.optimizer.param_groups:
            group["lr"] = cfg.learning_rate * max(0.0, 1.0 - state.iteration / cfg.total_iterations)


def _scores(state: RLHFState, cfg: RLHFConfig, gen: dict, reviews: list[str], reward_fn, reward_model) -> np.ndarray:
    """(B,) float64 scores, one per response: the learned reward model on the policy's own token ids if
    given, else ``reward_fn`` of the full reviews (default: the text world's simulated human)."""
    from rlhf_course.textworld import gold_reward

    if reward_model is not None:
        with torch.no_grad(), _autocast(state, cfg):
            return reward_model_scores(reward_model, gen["query_response"], gen["attention_mask"],
                                       gen["context_length"], state.tokenizer.eos_token_id)
    return np.asarray((reward_fn or gold_reward)(reviews), dtype=np.float64)


def _run_metrics(state: RLHFState, n_responses: int, start: float, t_generated: float, t_scored: float,
                 t_advantages: float, t_updated: float) -> dict:
    """The metrics every iteration ends with: learning rate, episodes so far, and where its time went (each
    phase ends at a host copy or a sync: right on a GPU too)."""
    return {"lr": state.optimizer.param_groups[0]["lr"], "episode": (state.iteration + 1) * n_responses,
            "seconds": time.perf_counter() - start, "time/generation": t_generated - start,
            "time/scores_and_logprobs": t_scored - t_generated, "time/advantages": t_advantages - t_scored,
            "time/ppo_update": t_updated - t_advantages}


def reward_model_scores(reward_model: nn.Module, query_response: torch.Tensor, attention_mask: torch.Tensor,
                        context_length: int, eos_token_id: int) -> np.ndarray:
    """(B,) float64 scores of a learned reward model on the policy's own token ids.

    The response's EOS is left out of the reward model's attention mask: it was trained on reviews
    without one (chapter 3), so it reads the last real word, as in training.
    """
    is_eos = (query_response == eos_token_id) & (
        torch.arange(query_response.shape[1], device=query_response.device) >= context_length)
    return reward_model(query_response, attention_mask * ~is_eos).float().double().cpu().numpy()


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
    reward_model: nn.Module | None = None,
    prompts: list[str] | torch.Tensor | None = None,
) -> dict:
    """One PPO-RLHF iteration: rollout, scores, rewards, GAE, PPO epochs. Returns TRL-named metrics.

    Args:
        state: from make_rlhf_state; updated in place (weights, optimizer, β, iteration, history).
        config: hyperparameters.
        response_log_probs, per_token_rewards, masked_mean, masked_whiten, kl_estimates: the graded
            functions (see the module docstring).
        reward_fn: full reviews (prompt + " " + response) -> (B,) scores; the text world's gold_reward
            (the simulated human) if neither it nor reward_model is given.
        reward_model: a learned reward model, (input_ids (B, T), attention_mask (B, T)) -> (B,), scored
            on the policy's own token ids (same tokenizer) with the EOS left out of its mask, since it
            was trained on reviews without one. Takes precedence over reward_fn.
        prompts: this process's prompts; B / world_size fresh ones from the text world if None; or a
            (B, P) tensor of prompt token ids (the speed benchmark's random prompts).
    """
    from rlhf_course.textworld import sample_prompts
    from rlhf_course.tiny_lm import generate_responses

    cfg = config
    if cfg.algo != "ppo":
        raise ValueError(f"ppo_rlhf_iteration runs algo='ppo', not {cfg.algo!r}: use critic_free_iteration "
                         "(or rlhf_iteration, which picks the right one)")
    start = time.perf_counter()
    device = state.device
    if device.type == "cpu":
        torch.set_num_threads(cfg.torch_threads)
    rank, world = distributed()
    seed = cfg.seed * 100_003 + state.iteration                 # a different, repeatable draw per iteration
    rng = np.random.default_rng([seed, rank])
    if prompts is None:
        if cfg.batch_size % world:
            raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the {world} processes")
        share = cfg.batch_size // world                         # each process rolls out its share
        prompts = sample_prompts(cfg.batch_size, seed=seed)[rank * share:(rank + 1) * share]
    _apply_lr_schedule(state, cfg)
    policy, ref_policy, value_head = state.policy, state.ref_policy, state.value_head
    B, T = len(prompts), cfg.temperature
    from_sampling = cfg.rollout_logprobs == "sampling"

    # 1. Rollout: sample one response per prompt from the current (old) policy, keeping the logits and
    #    hidden states the sampler computes anyway (they give log π_old and V without another pass).
    with torch.no_grad(), _autocast(state, cfg):
        gen = generate_responses(policy, state.tokenizer, prompts, max_new_tokens=cfg.response_length,
                                 temperature=T, seed=seed + 7_919 * rank, stop_at_eos=cfg.stop_at_eos,
                                 return_logits=from_sampling, return_hidden=from_sampling,
                                 return_token_logprobs=True)
    t_generated = time.perf_counter()   # generate_responses ends by copying tokens to the host: synchronised
    query_response = gen["query_response"]                      # (B, ctx + R) left-padded queries, responses
    attention_mask = gen["attention_mask"]                      # (B, ctx + R)
    ctx = gen["context_length"]
    pad_id, eos_id = state.tokenizer.pad_token_id, state.tokenizer.eos_token_id
    response_ids = logprob_targets(query_response, ctx, pad_id, eos_id)   # (B, 1 + R) last query token, response
    mask = gen["response_mask"].float()                         # (B, R) 1 up to and incl. the first EOS
    mask_np = mask.double().cpu().numpy()

    # 2. Scores: one number per response, from the learned reward model on the same token ids, or from
    #    a reward function of the full review (prompt + " " + completion), e.g. the simulated human.
    prompt_texts = prompts if not isinstance(prompts, torch.Tensor) else [state.tokenizer.decode(p) for p in prompts]
    reviews = [p + " " + r for p, r in zip(prompt_texts, gen["responses"])]
    scores = _scores(state, cfg, gen, reviews, reward_fn, reward_model)                        # (B,)

    # 3. Log-probs of the sampled tokens under the rollout policy and the reference, and values, no grad.
    with torch.no_grad(), _autocast(state, cfg):
        if from_sampling:                                       # the sampler's logits of positions ctx-1+t
            logits, values = gen["logits"], value_head(gen["hidden"]).squeeze(-1)          # (B, R, V), (B, R)
        else:
            logits, values = PolicyAndValue(policy, value_head)(query_response, attention_mask, ctx)
        logprobs = response_log_probs(sampling_logits(logits, pad_id, past_end=True), response_ids, 1, T)  # π_old
        ref_logits, _ = response_logits(ref_policy, query_response, attention_mask, ctx)            # (B, R, V)
        ref_logprobs = response_log_probs(sampling_logits(ref_logits, pad_id, past_end=True), response_ids, 1, T)
    logprobs_np = logprobs.double().cpu().numpy() * mask_np    # padding: 0, never used
    ref_logprobs_np = ref_logprobs.double().cpu().numpy() * mask_np
    values_np = values.double().cpu().numpy() * mask_np        # V = 0 after the episode ends
    # Sanity check: log π_old must be the log-probability each token was drawn with (the sampler's own
    # record). An off-by-one position or a forgotten temperature shows here at once, long before any curve.
    drawn = gen["token_logprobs"].double().cpu().numpy()
    logprob_max_dev = float(np.max(np.abs(logprobs_np - drawn) * mask_np))
    t_scored = time.perf_counter()

    # 4. Per-token rewards: −β·(log π − log π_ref) on every real token, the score at the last one. Under
    #    torchrun every process gathers the whole batch here, so whitening and the logged statistics
    #    are those of the whole batch, as in a single process.
    all_rows = [_gather_rows(a) for a in (scores, logprobs_np, ref_logprobs_np, values_np, mask_np)]
    all_scores, all_logprobs, all_ref_logprobs, all_values, all_mask = all_rows
    mine = slice(rank * B, (rank + 1) * B)                      # this process's rows of the whole batch
    kl_coef = float(state.kl_ctl.value)
    rewards = per_token_rewards(all_scores, all_logprobs, all_ref_logprobs, all_mask, kl_coef)   # (B, R)
    non_score_reward = -kl_coef * (all_logprobs - all_ref_logprobs) * all_mask                   # for logging
    if cfg.whiten_rewards:
        # shift_mean=False, as TRL: x/σ + μ(1 − 1/σ), a rescaling plus one constant per real token (a
        # length term; full centring adds −μ/σ instead). book/rlhf/logprobs_values.md weighs the trade.
        rewards = masked_whiten(rewards, all_mask, shift_mean=False)

    # 5. Advantages with GAE over the response tokens; whitened WITH the mean shift.
    advantages, returns = token_gae(rewards * all_mask, all_values, cfg.gamma, cfg.lam)
    advantages = masked_whiten(advantages, all_mask)           # (B, R), 0 on padding

    # 6. PPO epochs over minibatches: clipped policy loss and clipped value loss on real tokens only.
    as_t = lambda a: torch.as_tensor(a[mine], dtype=torch.float32, device=device)  # noqa: E731
    batch = {"query_response": query_response, "attention_mask": attention_mask, "context_length": ctx,
             "mask": mask, "logprobs": as_t(all_logprobs), "values": as_t(all_values),
             "advantages": as_t(advantages), "returns": as_t(returns)}
    t_advantages = time.perf_counter()
    stats = ppo_update(state, cfg, batch, response_log_probs=response_log_probs, masked_mean=masked_mean,
                       rng=rng)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the last optimizer step may still be queued
    t_updated = time.perf_counter()

    # 7. Metrics (TRL's names, over the whole batch) and the KL controller's update.
    k1, _, k3 = kl_estimates(all_logprobs, all_ref_logprobs)
    mean_kl = float(np.mean(np.sum(np.asarray(k1) * all_mask, axis=1)))        # nats per response
    mean_non_score = float(np.mean(non_score_reward.sum(1)))
    n_eos = _all_sum(int((query_response[:, ctx:] == state.tokenizer.eos_token_id).sum().item()), device)
    metrics = {
        "objective/kl": mean_kl,
        "objective/kl_k3": float(np.mean(np.sum(np.asarray(k3) * all_mask, axis=1))),
        "objective/entropy": float(np.mean(np.sum(-all_logprobs, axis=1))),
        "objective/non_score_reward": mean_non_score,
        "objective/rlhf_reward": mean_non_score + float(all_scores.mean()),
        "objective/scores": float(all_scores.mean()),
        "objective/kl_coef": kl_coef,
        **{k: v for k, v in stats.items() if k != "sanity/first_ratio_max_dev"},
        "val/num_eos_tokens": int(n_eos),
        "sanity/first_ratio_max_dev": stats["sanity/first_ratio_max_dev"],
        "sanity/logprob_max_dev": float(np.max(_gather_rows(np.array([logprob_max_dev])))),
        **_run_metrics(state, len(all_scores), start, t_generated, t_scored, t_advantages, t_updated),
    }
    state.kl_ctl.update(mean_kl, len(all_scores))
    state.iteration += 1
    state.history.append(metrics)
    state.last_rollout = {"prompts": prompt_texts, "responses": list(gen["responses"]), "scores": scores,
                          "rewards": rewards[mine], "advantages": advantages[mine], "mask": mask_np,
                          "reviews": reviews, "logprobs": logprobs_np, "ref_logprobs": ref_logprobs_np,
                          "query_response": query_response.cpu(), "context_length": ctx}
    return metrics


def ppo_update(state: RLHFState, cfg: RLHFConfig, batch: dict, *, response_log_probs: Callable,
               masked_mean: Callable, rng: np.random.Generator) -> dict:
    """PPO epochs over one rollout: clipped policy and value losses, one Adam step per minibatch.

    Args:
        batch: this process's rows: "query_response", "attention_mask" (B, ctx + R), "context_length",
            and (B, R) float tensors "mask", "logprobs" (π_old), "values", "advantages", "returns".
    Returns:
        TRL-named statistics averaged over minibatches (and processes), plus
        "sanity/first_ratio_max_dev": max |ratio − 1| on the first minibatch (0 up to rounding).

    Every loss is a sum over the real tokens of a minibatch divided by that minibatch's token count
    over ALL processes (times the world size, which DDP's gradient averaging divides out again): so
    gradient accumulation and torchrun both give exactly the single-process token mean.
    """
    rank, world = distributed()
    model = state.train_model if state.train_model is not None else PolicyAndValue(state.policy, state.value_head)
    params = list(state.policy.parameters()) + list(state.value_head.parameters())
    qr, am, ctx = batch["query_response"], batch["attention_mask"], batch["context_length"]
    mask, T = batch["mask"], cfg.temperature
    pad_id = state.tokenizer.pad_token_id
    targets = logprob_targets(qr, ctx, pad_id, state.tokenizer.eos_token_id)   # (B, 1 + R)
    B = qr.shape[0]
    mb_size = max(1, B // cfg.num_minibatches)
    micro_size = max(1, mb_size // cfg.gradient_accumulation_steps)
    stats = {k: [] for k in ("approxkl", "pg_clipfrac", "pg_loss", "vf_loss", "vf_clipfrac", "entropy", "ratio")}
    first_ratio_max_dev = None
    b_inds = np.arange(B)
    for epoch in range(cfg.num_ppo_epochs):
        rng.shuffle(b_inds)
        for start_i in range(0, B, mb_size):
            mb_inds = b_inds[start_i:start_i + mb_size]
            n_tokens = _all_sum(mask[mb_inds].sum().item(), state.device)            # the whole minibatch's
            state.optimizer.zero_grad(set_to_none=True)
            pg_loss_sum = vf_loss_sum = 0.0
            for micro_start in range(0, len(mb_inds), micro_size):
                mb = torch.as_tensor(mb_inds[micro_start:micro_start + micro_size], device=state.device)
                last_micro = micro_start + micro_size >= len(mb_inds)
                no_sync = model.no_sync() if world > 1 and not last_micro else contextlib.nullcontext()
                mb_mask = mask[mb]                                                     # (mb, R)
                with no_sync:
                    with _autocast(state, cfg):
                        new_logits, vpred = model(qr[mb], am[mb], ctx)                 # (mb, R, V), (mb, R)
                    new_logits = sampling_logits(new_logits, pad_id, past_end=True)    # (mb, R+1, V) float32
                    new_logprobs = response_log_probs(new_logits, targets[mb], 1, T)   # (mb, R), with grad
                    vpred = vpred.float()

                    logratio = (new_logprobs - batch["logprobs"][mb]) * mb_mask
                    ratio = torch.exp(logratio)                                        # (mb, R)
                    mb_adv = batch["advantages"][mb]
                    pg_losses = -mb_adv * ratio
                    pg_losses2 = -mb_adv * torch.clamp(ratio, 1 - cfg.cliprange, 1 + cfg.cliprange)
                    pg_loss = (torch.max(pg_losses, pg_losses2) * mb_mask).sum() / n_tokens

                    mb_values, mb_returns = batch["values"][mb], batch["returns"][mb]
                    vpredclipped = mb_values + torch.clamp(vpred - mb_values, -cfg.cliprange_value, cfg.cliprange_value)
                    vf_losses1 = (vpred - mb_returns) ** 2
                    vf_losses2 = (vpredclipped - mb_returns) ** 2
                    vf_loss = 0.5 * (torch.max(vf_losses1, vf_losses2) * mb_mask).sum() / n_tokens
                    loss = (pg_loss + cfg.vf_coef * vf_loss) * world                   # DDP averages: undo it
                    loss.backward()
                pg_loss_sum += pg_loss.item()
                vf_loss_sum += vf_loss.item()

                # Diagnostics with the student's masked_mean on detached numpy copies.
                m = mb_mask.double().cpu().numpy()
                lr_np = logratio.detach().double().cpu().numpy()
                r_np = np.exp(lr_np)
                if first_ratio_max_dev is None:
                    # Sanity check: nothing has moved yet, so every ratio of the first minibatch is 1.
                    first_ratio_max_dev = float(np.max(np.abs(r_np - 1) * m))
                with torch.no_grad():
                    ent = sampling_entropy(new_logits[:, :-1], T, pad_id)                 # (mb, R)
                stats["approxkl"].append(masked_mean(0.5 * lr_np ** 2, m))           # k2 of old vs new
                stats["pg_clipfrac"].append(masked_mean((pg_losses2 > pg_losses).double().cpu().numpy(), m))
                stats["vf_clipfrac"].append(masked_mean((vf_losses2 > vf_losses1).double().cpu().numpy(), m))
                stats["entropy"].append(masked_mean(ent.double().cpu().numpy(), m))
                stats["ratio"].append(masked_mean(r_np, m))
            stats["pg_loss"].append(pg_loss_sum)
            stats["vf_loss"].append(vf_loss_sum)
            clipped_step(state.optimizer, params, cfg.max_grad_norm)

    # Per-process means of the diagnostics are averaged over processes; the losses are already
    # shares of the whole minibatch's token mean, so their sum over processes is the loss.
    mean = lambda key: _all_sum(np.mean(stats[key]), state.device) / world  # noqa: E731
    return {
        "policy/approxkl_avg": mean("approxkl"),
        "policy/clipfrac_avg": mean("pg_clipfrac"),
        "loss/policy_avg": mean("pg_loss") * world,
        "loss/value_avg": mean("vf_loss") * world,
        "val/clipfrac_avg": mean("vf_clipfrac"),
        "policy/entropy_avg": mean("entropy"),
        "val/ratio": mean("ratio"),
        "val/ratio_var": _all_sum(np.var(stats["ratio"]), state.device) / world,
        "sanity/first_ratio_max_dev": first_ratio_max_dev,
    }


# --------------------------------------------------------------------------------------------------
# Critic-free estimators (chapter 6): RLOO and GRPO on the same rollout, no value head
# --------------------------------------------------------------------------------------------------
def token_log_probs(model: nn.Module, query_response: torch.Tensor, attention_mask: torch.Tensor, ctx: int,
                    targets: torch.Tensor, temperature: float, pad_id: int) -> torch.Tensor:
    """(B, R) log-probabilities of the response tokens under ``model``'s sampling distribution.

    targets: (B, 1 + R) from ``logprob_targets``. Chapter 6's notebook has no chapter-4 answers to pass,
    so the critic-free loop reads log-probs with this plumbing; the PPO loop keeps calling the student's
    ``response_log_probs``.
    """
    logits, _ = response_logits(model, query_response, attention_mask, ctx)           # (B, R, V)
    logp = sampling_log_softmax(logits, temperature, pad_id)                           # (B, R, V)
    return logp.gather(-1, targets[:, 1:, None]).squeeze(-1)                           # (B, R)


def critic_free_update(state: RLHFState, config: RLHFConfig, batch: dict, advantages: torch.Tensor, beta: float,
                       *, grpo_loss: Callable | None = None, rng: np.random.Generator | None = None) -> dict:
    """The update of ``critic_free_iteration`` on this process's rows of a scored rollout.

    batch: "query_response" (B, P+R), "attention_mask" (B, P+R), "context_length" P, "targets" (B, 1+R)
    (``logprob_targets``), "mask" (B, R) float, "old_logprobs" and "ref_logprobs" (B, R) (0 on padding);
    advantages: (B,) this process's rows of the whole batch's advantages. "rloo": one REINFORCE step on
    −(1/B) Σ_i A_i Σ_t log π_θ(y_i,t); "grpo": num_ppo_epochs × num_minibatches steps on the learner's
    ``grpo_loss``. Losses are local means: under torchrun DDP averages them over the processes (equal
    shares). Returns {"loss", "clipfrac", "ratio", "max_dev"}: one value per optimizer step each.
    """
    cfg = config
    qr, am, ctx, targets = batch["query_response"], batch["attention_mask"], batch["context_length"], batch["targets"]
    mask, old_logprobs, ref_logprobs = batch["mask"], batch["old_logprobs"], batch["ref_logprobs"]
    T, pad_id, B = cfg.temperature, state.tokenizer.pad_token_id, qr.shape[0]
    # The value head is in the forward (DDP wants every parameter used) with weight 0.
    model = state.train_model if state.train_model is not None else PolicyAndValue(state.policy, state.value_head)
    params = [p for p in state.policy.parameters()]
    stats = {"loss": [], "clipfrac": [], "ratio": [], "max_dev": []}

    def step(rows: torch.Tensor, loss_of) -> None:
        state.optimizer.zero_grad(set_to_none=True)
        with _autocast(state, cfg):
            logits, vpred = model(qr[rows], am[rows], ctx)                                 # (b, R, V)
        logp = sampling_log_softmax(logits, T, pad_id)                                      # (b, R, V)
        logprobs = logp.gather(-1, targets[rows, 1:, None]).squeeze(-1) * mask[rows]        # (b, R)
        loss = loss_of(rows, logprobs)
        (loss + 0.0 * vpred.float().sum()).backward()   # local means; DDP averages them over processes
        clipped_step(state.optimizer, params, cfg.max_grad_norm)
        m = mask[rows]
        ratio = torch.exp(logprobs.detach() - old_logprobs[rows])
        stats["loss"].append(float(loss.item()))
        stats["ratio"].append(float((ratio * m).sum() / m.sum()))
        stats["clipfrac"].append(float((((ratio - 1).abs() > cfg.cliprange).float() * m).sum() / m.sum()))
        stats["max_dev"].append(float(((logprobs.detach() - old_logprobs[rows]).abs() * m).max()))

    if cfg.algo == "rloo":
        # On-policy, so no ratio and no clip: −mean_i A_i · log π_θ(y_i), over the whole batch.
        step(torch.arange(B, device=qr.device),
             lambda rows, logprobs: -(advantages[rows] * logprobs.sum(1)).mean())
    else:
        rng = rng if rng is not None else np.random.default_rng(cfg.seed)
        mb_size = max(1, B // cfg.num_minibatches)
        b_inds = np.arange(B)
        for _ in range(cfg.num_ppo_epochs):
            rng.shuffle(b_inds)
            for s0 in range(0, B, mb_size):
                step(torch.as_tensor(b_inds[s0:s0 + mb_size], device=qr.device),
                     lambda rows, logprobs: grpo_loss(logprobs, old_logprobs[rows], ref_logprobs[rows],
                                                      advantages[rows], mask[rows], cfg.cliprange, beta,
                                                      cfg.loss_aggregation))
    return stats


def critic_free_iteration(state: RLHFState, config: RLHFConfig, *, rloo_advantages: Callable | None = None,
                          group_advantages: Callable | None = None, grpo_loss: Callable | None = None,
                          reward_fn: Callable | None = None, reward_model: nn.Module | None = None,
                          prompts: list[str] | torch.Tensor | None = None) -> dict:
    """One RLOO or GRPO iteration (``config.algo``): the PPO loop's rollout, one advantage per response.

    Both sample ``group_size`` responses to each of batch_size / group_size prompts (consecutive rows)
    and score each response once. Then:

    * "rloo" (Ahmadian et al. 2024): reward = score − β·Σ_t (log π_old − log π_ref) (the KL in the
      reward, as in PPO), advantages from the learner's ``rloo_advantages(rewards, k)``, and one
      on-policy REINFORCE step on −(1/B) Σ_i A_i · Σ_t log π_θ(y_i,t) (real tokens only).
    * "grpo" (Shao et al. 2024): advantages from the learner's ``group_advantages(scores, G)`` of the raw
      scores, then num_ppo_epochs × num_minibatches Adam steps on the learner's
      ``grpo_loss(log_probs, old_log_probs, ref_log_probs, advantages, mask, cliprange, β,
      loss_aggregation)``: PPO's clipped ratio per token with the k3 KL to π_ref in the loss.

    β is ``state.kl_ctl.value``. ``prompts``: this process's prompts, one per group (batch_size / group_size /
    world_size fresh ones from the text world if None), or a tensor of prompt token ids, one row per group
    (the speed benchmark's random prompts). The value head is not used; under torchrun each process rolls out its
    share of the prompts (whole groups), the advantages are computed on the whole batch, and DDP
    averages the gradients (for GRPO that is the mean of the processes' minibatch aggregates).

    Returns metrics with TRL's names where one exists ("objective/kl", "objective/scores",
    "objective/rlhf_reward", "loss/policy_avg", "policy/clipfrac_avg", "val/ratio", ...), plus
    "sanity/advantage_group_sum" (max |sum of a group's advantages|: 0 for RLOO by construction) and
    "sanity/logprob_max_dev" (the training forward vs the sampler's own record of each token).
    """
    from rlhf_course.textworld import sample_prompts
    from rlhf_course.tiny_lm import generate_responses

    cfg = config
    if cfg.algo == "rloo" and rloo_advantages is None:
        raise ValueError("algo='rloo' needs rloo_advantages=<the learner's function>")
    if cfg.algo == "grpo" and (group_advantages is None or grpo_loss is None):
        raise ValueError("algo='grpo' needs group_advantages= and grpo_loss=<the learner's functions>")
    if cfg.algo not in ("rloo", "grpo"):
        raise ValueError(f"critic_free_iteration runs algo='rloo' or 'grpo', not {cfg.algo!r}")
    start = time.perf_counter()
    device = state.device
    if device.type == "cpu":
        torch.set_num_threads(cfg.torch_threads)
    rank, world = distributed()
    k = cfg.group_size
    n_prompts = cfg.batch_size // k
    if n_prompts % world:
        raise ValueError(f"{n_prompts} prompts per rollout must be a multiple of the {world} processes")
    seed = cfg.seed * 100_003 + state.iteration                 # a different, repeatable draw per iteration
    rng = np.random.default_rng([seed, rank])
    share = n_prompts // world
    if prompts is None:
        prompts = sample_prompts(n_prompts, seed=seed)[rank * share:(rank + 1) * share]
    if len(prompts) != share:
        raise ValueError(f"critic_free_iteration needs {share} prompts per process (one per group of {k}), "
                         f"got {len(prompts)}")
    if isinstance(prompts, torch.Tensor):                       # (N, P) ids -> (N·k, P)
        repeated = prompts.repeat_interleave(k, dim=0)
        prompt_texts = [state.tokenizer.decode(p) for p in repeated]
    else:
        repeated = prompt_texts = [p for p in prompts for _ in range(k)]   # (B,): k consecutive samples
    _apply_lr_schedule(state, cfg)
    policy, tok, T = state.policy, state.tokenizer, cfg.temperature
    pad_id = tok.pad_token_id

    # 1. Rollout: k responses to each prompt from the current policy, with the log-prob of each token.
    with torch.no_grad(), _autocast(state, cfg):
        gen = generate_responses(policy, tok, repeated, max_new_tokens=cfg.response_length, temperature=T,
                                 seed=seed + 7_919 * rank, stop_at_eos=cfg.stop_at_eos,
                                 return_token_logprobs=True)
    t_generated = time.perf_counter()
    qr, am, ctx = gen["query_response"], gen["attention_mask"], gen["context_length"]
    mask = gen["response_mask"].float()                         # (B, R) 1 up to and incl. the first EOS
    targets = logprob_targets(qr, ctx, pad_id, tok.eos_token_id)   # (B, 1 + R)
    B = qr.shape[0]

    # 2. One score per response, and each response's KL to the reference (k1 summed over its tokens).
    reviews = [p + " " + r for p, r in zip(prompt_texts, gen["responses"])]
    scores = _scores(state, cfg, gen, reviews, reward_fn, reward_model)                     # (B,)
    old_logprobs = gen["token_logprobs"].float() * mask         # (B, R) what each token was drawn with
    with torch.no_grad(), _autocast(state, cfg):
        ref_logprobs = token_log_probs(state.ref_policy, qr, am, ctx, targets, T, pad_id).float() * mask
    kl = ((old_logprobs - ref_logprobs) * mask).sum(1).double().cpu().numpy()              # (B,) nats
    t_scored = time.perf_counter()

    # 3. The learner's advantages, one number per response, computed on the whole batch.
    all_scores, all_kl = _gather_rows(scores), _gather_rows(kl)
    beta = float(state.kl_ctl.value)
    if cfg.algo == "rloo":
        all_rewards = all_scores - beta * all_kl                # the KL in the reward (Ahmadian et al. 2024)
        advantages = rloo_advantages(all_rewards.copy(), k)
    else:
        all_rewards = all_scores                                # GRPO: the KL goes into the loss instead
        advantages = group_advantages(all_scores.copy(), k)
    advantages = np.asarray(advantages, dtype=np.float64)
    if advantages.shape != all_rewards.shape:
        raise ValueError(f"the advantages have shape {advantages.shape}, the rewards {all_rewards.shape}")
    mine = slice(rank * B, (rank + 1) * B)
    adv = torch.as_tensor(advantages[mine], dtype=torch.float32, device=device)            # (B,)
    t_advantages = time.perf_counter()

    # 4. Update.
    batch = {"query_response": qr, "attention_mask": am, "context_length": ctx, "targets": targets, "mask": mask,
             "old_logprobs": old_logprobs, "ref_logprobs": ref_logprobs}
    stats = critic_free_update(state, cfg, batch, adv, beta, grpo_loss=grpo_loss, rng=rng)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t_updated = time.perf_counter()

    # 5. Metrics over the whole batch.
    mean = lambda x: _all_sum(float(np.mean(x)), device) / world  # noqa: E731
    n_eos = _all_sum(int((qr[:, ctx:] == tok.eos_token_id).sum().item()), device)
    metrics = {
        "objective/kl": float(all_kl.mean()),
        **({"objective/non_score_reward": float(-beta * all_kl.mean())} if cfg.algo == "rloo" else {}),
        "objective/entropy": float(_gather_rows(-old_logprobs.sum(1).double().cpu().numpy()).mean()),
        "objective/rlhf_reward": float(all_rewards.mean()),   # GRPO: the score alone, its KL is in the loss
        "objective/scores": float(all_scores.mean()),
        "objective/kl_coef": beta,
        "loss/policy_avg": mean(stats["loss"]),
        "policy/clipfrac_avg": mean(stats["clipfrac"]),
        "val/ratio": mean(stats["ratio"]),
        "val/num_eos_tokens": int(n_eos),
        "sanity/advantage_group_sum": float(np.max(np.abs(advantages.reshape(-1, k).sum(1)))),
        "sanity/logprob_max_dev": float(np.max(_gather_rows(np.array([stats["max_dev"][0]])))),
        **_run_metrics(state, len(all_scores), start, t_generated, t_scored, t_advantages, t_updated),
    }
    state.kl_ctl.update(metrics["objective/kl"], len(all_scores))
    state.iteration += 1
    state.history.append(metrics)
    state.last_rollout = {"prompts": prompt_texts, "responses": list(gen["responses"]), "scores": scores,
                          "kl": kl, "rewards": all_rewards[mine], "advantages": advantages[mine],
                          "mask": mask.double().cpu().numpy(), "reviews": reviews}
    return metrics


def rlhf_iteration(state: RLHFState, config: RLHFConfig, **functions) -> dict:
    """One iteration of ``config.algo``: ``ppo_rlhf_iteration`` or ``critic_free_iteration``, with the
    learner's functions (and reward_fn / reward_model) passed through by name."""
    loop = ppo_rlhf_iteration if config.algo == "ppo" else critic_free_iteration
    return loop(state, config, **functions)


def eval_prompts(n: int, seed: int) -> list[str]:
    """The n held-out prompts of a run seeded ``seed`` (never a training rollout's prompt seed)."""
    from rlhf_course.textworld import sample_prompts

    return sample_prompts(n, seed=seed + 9_000)


@torch.no_grad()
def evaluate_samples(policy: nn.Module, ref_policy: nn.Module, tokenizer, prompts: list[str], *,
                     response_length: int, temperature: float, reward_model: nn.Module | None = None,
                     bf16: bool = False, seed: int = 12_345) -> dict:
    """Sample the policy once per prompt and measure what RLHF optimises and what it is judged by.

    Returns means over responses of: "gold" (the simulated human's reward), "proxy" (the learned reward
    model's score; only with ``reward_model``), "kl" (KL(π‖π_ref) of the whole response, exactly: the sum
    over its tokens of the per-token KL between the two temperature-T sampling distributions, so no
    sampling noise from k1), "length" (response tokens), "eos" (fraction that ended by themselves) and
    "distinct" (distinct words / words: repetition, a classic reward hack, lowers it). Also the raw
    per-sample arrays ("per_sample") and the "texts". With fixed prompts and seed, differences between
    evaluations are the policy's (common random numbers).
    """
    from rlhf_course.textworld import gold_reward
    from rlhf_course.tiny_lm import generate_responses

    device = next(policy.parameters()).device
    pad = tokenizer.pad_token_id
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    keys = ("gold", "proxy", "kl", "length", "eos", "distinct") if reward_model is not None else (
        "gold", "kl", "length", "eos", "distinct")
    rows = {k: [] for k in keys}
    texts = []
    for i in range(0, len(prompts), 256):
        batch_prompts = prompts[i:i + 256]
        with autocast:
            gen = generate_responses(policy, tokenizer, batch_prompts, response_length, temperature=temperature,
                                     seed=seed + i, return_logits=True)
            qr, am, ctx = gen["query_response"], gen["attention_mask"], gen["context_length"]
            ref_logits, _ = response_logits(ref_policy, qr, am, ctx)               # (B, R, V)
            if reward_model is not None:
                rows["proxy"] += reward_model_scores(reward_model, qr, am, ctx, tokenizer.eos_token_id).tolist()
        mask = gen["response_mask"]                                                 # (B, R)
        logp = sampling_log_softmax(gen["logits"], temperature, pad)                   # (B, R, V)
        ref_logp = sampling_log_softmax(ref_logits, temperature, pad)                  # float32 copy
        kl_tok = (logp.exp() * (logp - ref_logp)).nan_to_num().sum(-1)              # (B, R) exact per token
        reviews = [p + " " + r for p, r in zip(batch_prompts, gen["responses"])]
        rows["gold"] += gold_reward(reviews).tolist()
        rows["kl"] += (kl_tok * mask).sum(1).double().cpu().tolist()
        rows["length"] += mask.sum(1).cpu().tolist()
        rows["eos"] += (qr[:, ctx:] == tokenizer.eos_token_id).any(1).float().cpu().tolist()
        rows["distinct"] += [len(set(r.split())) / max(1, len(r.split())) for r in gen["responses"]]
        texts += reviews
    out = {k: float(np.mean(v)) for k, v in rows.items()}
    out["per_sample"] = {k: np.asarray(v) for k, v in rows.items()}
    out["texts"] = texts
    return out


def evaluate(state: RLHFState, config: RLHFConfig, n_prompts: int = 128, reward_model: nn.Module | None = None,
             seed: int = 12_345) -> dict:
    """``evaluate_samples`` of the state's policy against its reference on the run's ``n_prompts``
    held-out prompts (``eval_prompts(n_prompts, config.seed)``), at the run's length and temperature."""
    return evaluate_samples(state.policy, state.ref_policy, state.tokenizer, eval_prompts(n_prompts, config.seed),
                            response_length=config.response_length, temperature=config.temperature,
                            reward_model=reward_model, bf16=config.bf16, seed=seed)

# --------------------------------------------------------------------------------------------------
# Checkpoints: everything an uninterrupted run would carry into its next iteration
# --------------------------------------------------------------------------------------------------
CHECKPOINT_FORMAT = "rlhf_course.rlhf_ppo/1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (truncated, corrupt, or not one of ours)."""


def save_checkpoint(state: RLHFState, path) -> Path:
    """Write policy, value head, optimizer, KL controller, iteration and history to ``path``, atomically.

    The reference model is not saved: it is the run's starting point, which the caller rebuilds. The
    rollout and shuffle seeds derive from (seed, iteration), so these are all a resumed run needs to
    take exactly the step an uninterrupted one would.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "policy": state.policy.state_dict(),
        "value_head": state.value_head.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        # plain Python numbers: a learner's controller may hold np.float64, which weights_only loading refuses
        "kl_ctl": {k: float(v) if isinstance(v, float) else int(v) for k, v in vars(state.kl_ctl).items()
                   if isinstance(v, (int, float))},
        "iteration": state.iteration,
        "history": state.history,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)                                       # a crash never leaves half a checkpoint
    return path


def load_checkpoint(state: RLHFState, path) -> RLHFState:
    """Restore what ``save_checkpoint`` wrote into a freshly made state (same model shape); raises
    CheckpointError with the reason if the file is unreadable or not a checkpoint of this loop."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=state.device, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not an rlhf_course PPO checkpoint")
        state.policy.load_state_dict(payload["policy"])
        state.value_head.load_state_dict(payload["value_head"])
        state.optimizer.load_state_dict(payload["optimizer"])
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is unusable: {type(err).__name__}: "
                              f"{(str(err).strip().splitlines() or [''])[0]}") from err
    vars(state.kl_ctl).update(payload["kl_ctl"])
    state.iteration = int(payload["iteration"])
    state.history = list(payload["history"])
    return state


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
