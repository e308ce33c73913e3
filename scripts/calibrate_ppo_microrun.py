"""Calibrate the PPO exercise's graded micro-run: returns of correct and broken solutions per seed.

For each seed, trains PPO (rlhf_course.ppo, CleanRL CartPole defaults, lr not annealed) for a fixed
step budget with the reference answers of solutions/ppo/ppo.ipynb and with plausible broken versions
of them, and prints a markdown table of the mean return of the last 20 episodes and the run time.
Pick the micro-run's seeds, budget and threshold so that every correct run is far above the threshold
and every broken one far below.

    .venv/bin/python scripts/calibrate_ppo_microrun.py --seeds 1 2 3 4 5 6 7 8 --steps 16384
"""
import argparse
import re

import nbformat
import numpy as np

from rlhf_course.ppo import PPOConfig, train_ppo

NOTEBOOK = "solutions/ppo/ppo.ipynb"

# name: (answer cell, text in the reference solution, replacement)
BROKEN = {
    "gae_no_done_mask": ("compute_gae", "nonterminal = 1.0 - dones[t]", "nonterminal = 1.0"),
    "gae_bootstrap_unmasked": ("compute_gae", "gamma * next_value * nonterminal", "gamma * next_value"),
    "grad_identical_branches": ("ppo_clip_grad", "np.where(clipped, 0.0, -advantages * ratio / len(ratio))",
                                "np.where(clipped, -advantages * ratio / len(ratio), -advantages * ratio / len(ratio))"),
    "grad_sign_flipped": ("ppo_clip_grad", "-advantages * ratio / len(ratio))", "advantages * ratio / len(ratio))"),
}


def functions(mutation=None) -> dict:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    namespace: dict = {"np": np}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            source = re.sub(r"\n\s*### (BEGIN|END) SOLUTION", "", cell.source)
            if mutation and meta["grade_id"] == mutation[0]:
                assert mutation[1] in source, mutation
                source = source.replace(mutation[1], mutation[2])
            exec(source, namespace)
    return namespace


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7, 8])
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--variants", nargs="+", default=["correct", *BROKEN])
    args = parser.parse_args()
    print("| variant | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | min | s/run |")
    print("|---" * (len(args.seeds) + 4) + "|")
    for variant in args.variants:
        f = functions(None if variant == "correct" else BROKEN[variant])
        scores, seconds = [], []
        for seed in args.seeds:
            cfg = PPOConfig(seed=seed, total_timesteps=args.steps, anneal_lr=False)
            record = train_ppo(f["compute_gae"], f["ppo_clip_grad"], cfg, progress=False)
            scores.append(record.last_returns_mean(20))
            seconds.append(record.seconds)
        print(f"| {variant} | " + " | ".join(f"{s:.0f}" for s in scores)
              + f" | {np.mean(scores):.0f} | {np.min(scores):.0f} | {np.mean(seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
