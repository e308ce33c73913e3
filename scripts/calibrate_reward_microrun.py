"""Calibrate the reward-modeling exercise's graded micro-run: held-out accuracy of correct and broken models.

For each seed, trains a reward model (rlhf_course.reward_data.train_reward_model, the tiny pre-trained
LM as backbone) with the reference RewardModel of solutions/reward_modeling/reward_modeling.ipynb and
with plausible broken versions of it, and prints a markdown table of the held-out pairwise accuracy
against the gold ordering (the graded number) and the run time. Each broken variant is trained WITHOUT
the micro-run's sanity checks, to show whether the accuracy threshold alone would catch it; the column
"sanity" says whether the checks that run first in the graded cell catch it anyway.

"mse_01_labels" is document 3's recipe: the correct RewardModel trained with MSE to 1 (chosen) and
0 (rejected) instead of the Bradley–Terry loss.

    .venv/bin/python scripts/calibrate_reward_microrun.py --seeds 0 1 2 3 4 5
"""
import argparse
import copy
import re

import nbformat
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rlhf_course.reward_data import RMConfig, encode, train_reward_model
from rlhf_course.textworld import annotator_accuracy, simulate_preferences
from rlhf_course.tiny_lm import load_tiny_lm

NOTEBOOK = "solutions/reward_modeling/reward_modeling.ipynb"
ANSWER = "return self.head(hidden[torch.arange(B, device=input_ids.device), last]).squeeze(-1)"

# name: (text in the reference RewardModel, replacement); None = the reference itself
BROKEN = {
    "last_position": (ANSWER, "return self.head(hidden[:, -1]).squeeze(-1)"),
    "mean_pool_with_pads": (ANSWER, "return self.head(hidden.mean(dim=1)).squeeze(-1)"),
    "first_token": (ANSWER, "return self.head(hidden[:, 0]).squeeze(-1)"),
    "mask_sum_index": ("last = (attention_mask * torch.arange(T, device=input_ids.device)).argmax(-1)",
                       "last = attention_mask.sum(-1) - 1"),
    "no_position_ids": ("attention_mask=attention_mask,\n                               position_ids=position_ids)",
                        "attention_mask=attention_mask)"),
}


def bt_loss_torch(chosen_rewards, rejected_rewards):
    return F.softplus(rejected_rewards - chosen_rewards).mean()


def mse_01_loss(chosen_rewards, rejected_rewards):
    """Document 3's reward model: regress chosen -> 1 and rejected -> 0."""
    return 0.5 * ((chosen_rewards - 1.0) ** 2).mean() + 0.5 * (rejected_rewards ** 2).mean()


def reward_model_class(mutation=None):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "RewardModel")
    source = re.sub(r"\n\s*### (BEGIN|END) SOLUTION", "", cell.source)
    if mutation:
        assert mutation[0] in source, mutation
        source = source.replace(*mutation)
    namespace = {"torch": torch, "nn": nn}
    exec(source, namespace)
    return namespace["RewardModel"]


def sanity_checks_pass(RewardModel, lm, tokenizer) -> bool:
    """The padding checks that run first in the graded cell (milliseconds)."""
    rm = RewardModel(copy.deepcopy(lm.transformer)).eval()
    texts = ["the soup was wonderful .", "honestly the waiter seemed rude but the pasta was great ."]
    with torch.no_grad():
        right, left = rm(*encode(tokenizer, texts, "right")), rm(*encode(tokenizer, texts, "left"))
        alone = torch.cat([rm(*encode(tokenizer, [t], "right")) for t in texts])
    return right.shape == (2,) and torch.allclose(right, alone, atol=1e-4) and torch.allclose(left, alone, atol=1e-4)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--steps", type=int, default=RMConfig.steps)
    parser.add_argument("--variants", nargs="+", default=["correct", "mse_01_labels", *BROKEN])
    args = parser.parse_args()
    lm, tokenizer = load_tiny_lm(progress=False)
    print("| variant | sanity | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | min | s/run |")
    print("|---" * (len(args.seeds) + 5) + "|")
    ceilings = []
    for variant in args.variants:
        RewardModel = reward_model_class(BROKEN.get(variant))
        loss_fn = mse_01_loss if variant == "mse_01_labels" else bt_loss_torch
        sanity = sanity_checks_pass(RewardModel, lm, tokenizer)
        accs, seconds = [], []
        for seed in args.seeds:
            cfg = RMConfig(seed=seed, steps=args.steps)
            prefs = simulate_preferences(cfg.n_train + cfg.n_eval, seed=seed, temperature=cfg.temperature)
            if variant == args.variants[0]:
                ceilings.append(annotator_accuracy(prefs[cfg.n_train:]))
            torch.manual_seed(seed)
            rm = RewardModel(copy.deepcopy(lm.transformer))
            record = train_reward_model(rm, tokenizer, prefs[:cfg.n_train], loss_fn, cfg,
                                        eval_prefs=prefs[cfg.n_train:], progress=False)
            accs.append(record.eval_gold_acc[-1])
            seconds.append(record.seconds)
        print(f"| {variant} | {'pass' if sanity else 'FAIL'} | " + " | ".join(f"{a:.3f}" for a in accs)
              + f" | {np.mean(accs):.3f} | {np.min(accs):.3f} | {np.mean(seconds):.1f} |", flush=True)
    print("| annotators vs gold (held-out labels) | | " + " | ".join(f"{a:.3f}" for a in ceilings)
          + f" | {np.mean(ceilings):.3f} | {np.min(ceilings):.3f} | |")


if __name__ == "__main__":
    main()
