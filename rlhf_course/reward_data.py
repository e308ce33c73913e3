"""Reward-model plumbing for chapter 3: tokenising preference pairs, scoring texts, the training loop.

The graded pieces are NOT here: ``train_reward_model`` receives the student's ``RewardModel`` (any
``nn.Module`` mapping ``(input_ids, attention_mask) -> (B,)`` scores) and a torch loss
``loss_fn(chosen_rewards, rejected_rewards) -> scalar`` as arguments, exactly as ``rlhf_course.ppo``
receives the student's GAE and clip gradient.

Batches for training are RIGHT-padded (the tokenizer's default), batches for evaluation are
LEFT-padded: a reward model that reads the wrong position under one of the two paddings shows it as
a train/held-out gap, not only in a unit test.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


@dataclass
class RMConfig:
    seed: int = 0
    """seeds torch (head init, minibatch order) and the simulated annotators"""
    n_train: int = 1024
    """preference pairs to train on (simulate_preferences(n_train + n_eval, seed), first part)"""
    n_eval: int = 256
    """held-out pairs (the last n_eval of the same draw: new prompts, new responses)"""
    temperature: float = 1.0
    """annotator noise: P(a preferred) = sigmoid((gold_a - gold_b) / temperature)"""
    batch_size: int = 16
    """preference pairs per gradient step (2 * batch_size sequences per forward pass)"""
    steps: int = 80
    """gradient steps (minibatches drawn without replacement, reshuffled every epoch)"""
    learning_rate: float = 1e-3
    """AdamW learning rate, constant"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    eval_every: int = 80
    """evaluate on the held-out pairs every eval_every steps and at the end (each costs ~ 5 steps)"""
    threads: int = 1
    """torch threads: matmuls this small gain little from 2 and lose up to 10x on a busy CPU"""


@dataclass
class RMRecord:
    config: dict
    steps: list = field(default_factory=list)          # step of each training loss
    losses: list = field(default_factory=list)         # minibatch loss at that step
    train_acc: list = field(default_factory=list)      # minibatch accuracy against the labels
    eval_steps: list = field(default_factory=list)
    eval_label_acc: list = field(default_factory=list)  # held-out accuracy against the (noisy) labels
    eval_gold_acc: list = field(default_factory=list)   # held-out accuracy against gold, ties excluded
    seconds: float = 0.0


def encode(tokenizer, texts: Sequence[str], padding_side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise and pad a list of texts on the requested side.

    Returns:
        input_ids (B, T) long, attention_mask (B, T) long with 1 on real tokens, 0 on padding.
    """
    ids = [tokenizer(t)["input_ids"] for t in texts]
    T = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(ids), T), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for i, x in enumerate(ids):
        if padding_side == "right":
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        elif padding_side == "left":
            input_ids[i, T - len(x):] = torch.tensor(x)
            mask[i, T - len(x):] = 1
        else:
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    return input_ids, mask


@torch.no_grad()
def score_texts(rm: torch.nn.Module, tokenizer, texts: Sequence[str], padding_side: str = "left",
                batch_size: int = 256) -> np.ndarray:
    """(N,) reward-model scores of texts, in eval mode, batch by batch."""
    was_training = rm.training
    rm.eval()
    device = next(rm.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        ids, mask = encode(tokenizer, texts[i: i + batch_size], padding_side)
        out.append(rm(ids.to(device), mask.to(device)).float().reshape(-1).cpu().numpy())
    rm.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def pairwise_accuracy(chosen_scores, rejected_scores) -> float:
    """Fraction of pairs with score(chosen) > score(rejected) (ties count as half)."""
    c, r = np.asarray(chosen_scores, float), np.asarray(rejected_scores, float)
    return float(np.mean((c > r) + 0.5 * (c == r)))


def evaluate(rm: torch.nn.Module, tokenizer, prefs, padding_side: str = "left") -> dict:
    """Held-out accuracy of a reward model against the labels and against gold (gold ties excluded)."""
    sc = score_texts(rm, tokenizer, [p.chosen_text for p in prefs], padding_side)
    sr = score_texts(rm, tokenizer, [p.rejected_text for p in prefs], padding_side)
    gc = np.array([p.gold_chosen for p in prefs])
    gr = np.array([p.gold_rejected for p in prefs])
    untied = gc != gr
    gold_acc = np.mean((sc > sr)[untied] == (gc > gr)[untied])
    return {"label_acc": pairwise_accuracy(sc, sr), "gold_acc": float(gold_acc),
            "chosen_scores": sc, "rejected_scores": sr}


def train_reward_model(rm: torch.nn.Module, tokenizer, train_prefs, loss_fn: Callable, cfg: RMConfig,
                       eval_prefs=None, progress: bool = True) -> RMRecord:
    """Train ``rm`` on preference pairs with ``loss_fn(chosen_rewards, rejected_rewards)``.

    Args:
        rm: maps (input_ids (B, T), attention_mask (B, T)) to rewards (B,).
        train_prefs, eval_prefs: lists of textworld.Preference.
        loss_fn: torch loss of two (B,) reward tensors, e.g. softplus(r_rejected - r_chosen).mean().
    Returns:
        an RMRecord with the training curve and held-out accuracies (left-padded evaluation).
    """
    start = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        record = _train(rm, tokenizer, train_prefs, loss_fn, cfg, eval_prefs, progress)
    finally:
        torch.set_num_threads(old_threads)
    record.seconds = time.perf_counter() - start
    return record


def _train(rm, tokenizer, train_prefs, loss_fn, cfg, eval_prefs, progress) -> RMRecord:
    torch.manual_seed(cfg.seed)
    record = RMRecord(config=asdict(cfg))
    # 1. Tokenise once: chosen and rejected of pair i are rows i of two right-padded tensors.
    n = len(train_prefs)
    all_ids, all_mask = encode(tokenizer, [p.chosen_text for p in train_prefs]
                               + [p.rejected_text for p in train_prefs], "right")          # (2n, T)
    device = next(rm.parameters()).device                  # the model's device: CPU, or a GPU
    all_ids, all_mask = all_ids.to(device), all_mask.to(device)
    c_ids, r_ids, c_mask, r_mask = all_ids[:n], all_ids[n:], all_mask[:n], all_mask[n:]
    optimizer = torch.optim.AdamW(rm.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    order = torch.randperm(n)
    cursor = 0
    rm.train()
    bar = tqdm(range(1, cfg.steps + 1), desc=f"reward model seed {cfg.seed}", disable=not progress, leave=False)
    for step in bar:
        # 2. A minibatch of pairs, without replacement within an epoch.
        if cursor + cfg.batch_size > n:
            order, cursor = torch.randperm(n), 0
        idx = order[cursor: cursor + cfg.batch_size].to(device)
        cursor += cfg.batch_size
        # 3. One forward pass over chosen and rejected together (2B rows), trimmed to the longest row.
        T = int(max(c_mask[idx].sum(1).max(), r_mask[idx].sum(1).max()))
        ids = torch.cat([c_ids[idx, :T], r_ids[idx, :T]])            # (2B, T)
        mask = torch.cat([c_mask[idx, :T], r_mask[idx, :T]])         # (2B, T)
        rewards = rm(ids, mask)                                      # (2B,)
        chosen_rewards, rejected_rewards = rewards[: len(idx)], rewards[len(idx):]
        loss = loss_fn(chosen_rewards, rejected_rewards)
        # 4. Step.
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record.steps.append(step)
        record.losses.append(loss.item())
        record.train_acc.append((chosen_rewards > rejected_rewards).float().mean().item())
        # 5. Held-out accuracy now and then (left padding: the other side from training).
        if eval_prefs is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            result = evaluate(rm, tokenizer, eval_prefs, "left")
            record.eval_steps.append(step)
            record.eval_label_acc.append(result["label_acc"])
            record.eval_gold_acc.append(result["gold_acc"])
            bar.set_postfix(loss=f"{loss.item():.3f}", gold_acc=f"{result['gold_acc']:.3f}")
    return record
