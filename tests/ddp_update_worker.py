"""One update of each trainer on a fixed rollout, alone or under torchrun; saves the updated weights (rank 0).

    python tests/ddp_update_worker.py OUT.pt [--accumulate K]                  # one process
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_update_worker.py OUT.pt

Used by tests/test_capstone.py: the update must not depend on how the batch is split (processes,
gradient-accumulation steps) beyond float rounding. Saved: {"ppo": ..., "rloo": ..., "grpo": ...}, one
{"policy", "value_head", "stats", "world"} each (PPO alone with --accumulate: the critic-free loop refuses
gradient accumulation). GRPO's loss here is the sequence-mean, one minibatch: a mean over responses, which
equal shares of the batch keep the same under DDP's averaging (a token-mean is not: README).
"""
import os
import sys
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from transformers import GPT2Config, GPT2LMHeadModel

# the scaffold tests' reference functions (tests/ is this script's folder, so on sys.path)
from test_beyond_ppo_scaffold import ref_grpo_loss
from test_rlhf_ppo_scaffold import ref_masked_mean, ref_response_log_probs

from rlhf_course.rlhf_ppo import (FixedKLController, RLHFConfig, critic_free_update, distributed, logprob_targets,
                                  make_rlhf_state, ppo_update)


ALGOS = ("ppo", "rloo", "grpo")


class IdTokenizer:
    pad_token_id, eos_token_id = 31, 30


def fixed_rollout(B=8, ctx=3, R=5, V=32):
    """A deterministic batch: random prompts and responses, ragged response masks, random targets."""
    g = torch.Generator().manual_seed(0)
    qr = torch.randint(0, 30, (B, ctx + R), generator=g)
    lengths = torch.randint(1, R + 1, (B,), generator=g)
    mask = (torch.arange(R)[None] < lengths[:, None]).float()                  # (B, R)
    attention_mask = torch.cat([torch.ones(B, ctx, dtype=torch.long), mask.long()], 1)
    rand = lambda: torch.randn(B, R, generator=g) * mask                        # noqa: E731
    return {"query_response": qr, "attention_mask": attention_mask, "context_length": ctx, "mask": mask,
            "logprobs": -torch.rand(B, R, generator=g) * 3 * mask, "values": rand(), "advantages": rand(),
            "returns": rand(), "ref_logprobs": -torch.rand(B, R, generator=g) * 3 * mask,
            "response_advantages": torch.randn(B, generator=g)}


def tiny_model() -> GPT2LMHeadModel:
    """The worker's GPT-2 before any update: the same weights every time."""
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=30, eos_token_id=30,
                                      pad_token_id=31))


def update_once(accumulate: int, algo: str = "ppo") -> dict:
    """Build the model, run one update of `algo` on this process's share of the fixed rollout, return results."""
    rank, world = distributed()
    lm = tiny_model()
    if algo == "ppo":
        cfg = RLHFConfig(batch_size=8, num_minibatches=1, num_ppo_epochs=3, gradient_accumulation_steps=accumulate,
                         learning_rate=1e-2)
    else:
        cfg = RLHFConfig(batch_size=8, num_minibatches=1, num_ppo_epochs=3, learning_rate=1e-2, algo=algo,
                         group_size=4, loss_aggregation="sequence-mean", max_grad_norm=1e6)
    state = make_rlhf_state(cfg, FixedKLController(0.1), policy=lm, tokenizer=IdTokenizer())
    if algo != "ppo":
        # Adam's steps and a clipped gradient norm hide a loss that is 2x too large (its local SUM where
        # DDP averages means); plain SGD without clipping moves the weights in proportion to the gradient.
        state.optimizer = torch.optim.SGD(lm.parameters(), lr=0.5)
    batch = fixed_rollout()
    share = 8 // world
    mine = {k: (v[rank * share:(rank + 1) * share] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    if algo == "ppo":
        stats = ppo_update(state, cfg, mine, response_log_probs=ref_response_log_probs, masked_mean=ref_masked_mean,
                           rng=np.random.default_rng(0))
    else:
        rows = {"query_response": mine["query_response"], "attention_mask": mine["attention_mask"],
                "context_length": mine["context_length"], "mask": mine["mask"], "old_logprobs": mine["logprobs"],
                "ref_logprobs": mine["ref_logprobs"],
                "targets": logprob_targets(mine["query_response"], mine["context_length"], 31, 30)}
        raw = critic_free_update(state, cfg, rows, mine["response_advantages"], 0.1, grpo_loss=ref_grpo_loss,
                                 rng=np.random.default_rng(0))
        stats = {"loss/policy_avg": float(np.mean(raw["loss"])), "steps": len(raw["loss"])}
    return {"policy": state.policy.state_dict(), "value_head": state.value_head.state_dict(), "stats": stats,
            "world": world}


def main(out, accumulate=1):
    import faulthandler

    faulthandler.dump_traceback_later(200, exit=True)   # a hang prints where it is and fails, never blocks
    if "RANK" in os.environ:
        dist.init_process_group("gloo", timeout=timedelta(seconds=120))   # fail, never hang
    # each returns after its DDP wrapper is gone: a reducer must not outlive the group
    result = {algo: update_once(accumulate, algo) for algo in (("ppo",) if accumulate > 1 else ALGOS)}
    if distributed()[0] == 0:
        torch.save(result, out)
    if distributed()[1] > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--accumulate" else 1)
