"""Train PPO on CartPole-v1 to 500k steps on several seeds; write the learning curves the book plots.

The PPO chapter's learning-curve figure reads the CSV this script writes, so the book never retrains.
It uses the reference answers of the exercise (loaded from the solution notebook's answer cells), the
CleanRL defaults of rlhf_course.ppo.PPOConfig, and one process per seed.

    .venv/bin/python scripts/ppo_cartpole_full.py                       # seeds 1 2 3, 500k steps
    .venv/bin/python scripts/ppo_cartpole_full.py --seeds 1 2 3 4 --total-timesteps 200000 --jobs 2

Output: book/ppo/data/cartpole_ppo_curves.csv with columns steps, seed, episodic_return (one row per
finished episode), cartpole_ppo_diagnostics.csv (one row per update: ratio check, approx KL, clip
fraction, entropy, value loss) and cartpole_ppo_runs.csv (one row per seed: seconds, final mean return).
"""
import argparse
import csv
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "solutions/ppo/ppo.ipynb"
OUT = REPO / "book/ppo/data"


def reference_functions(notebook: Path = NOTEBOOK) -> dict:
    """Execute the answer cells of the solution notebook (markers stripped); return their functions."""
    nb = nbformat.read(notebook, as_version=4)
    namespace: dict = {}
    exec("import numpy as np", namespace)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            exec(re.sub(r"\n\s*### (BEGIN|END) SOLUTION", "", cell.source), namespace)
    return {name: namespace[name] for name in ("ppo_clip_loss", "ppo_clip_grad", "compute_gae", "categorical_entropy")}


def run_seed(seed: int, total_timesteps: int):
    from rlhf_course.ppo import PPOConfig, train_ppo

    f = reference_functions()
    record = train_ppo(f["compute_gae"], f["ppo_clip_grad"], PPOConfig(seed=seed, total_timesteps=total_timesteps),
                       categorical_entropy=f["categorical_entropy"], ppo_clip_loss=f["ppo_clip_loss"],
                       progress=False)
    keys = ("global_step", "first_ratio_max_dev", "approx_kl", "clipfrac", "entropy", "v_loss")
    diagnostics = [[u[k] for k in keys] for u in record.updates]
    return (seed, record.episode_steps, record.episode_returns, record.seconds, record.last_returns_mean(20),
            diagnostics)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained in parallel (processes)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_seed, args.seeds, [args.total_timesteps] * len(args.seeds)))
    with open(OUT / "cartpole_ppo_curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["steps", "seed", "episodic_return"])
        for seed, steps, returns, *_ in results:
            writer.writerows((s, seed, f"{r:g}") for s, r in zip(steps, returns))
    with open(OUT / "cartpole_ppo_runs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "total_timesteps", "seconds", "last20_mean_return"])
        for seed, _, _, seconds, final, _ in results:
            writer.writerow([seed, args.total_timesteps, f"{seconds:.0f}", f"{final:.1f}"])
            print(f"seed {seed}: {seconds:.0f} s, mean return of the last 20 episodes {final:.1f}")
    with open(OUT / "cartpole_ppo_diagnostics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "steps", "first_ratio_max_dev", "approx_kl", "clipfrac", "entropy", "v_loss"])
        for seed, *_, diagnostics in results:
            writer.writerows([seed, row[0]] + [f"{x:.4g}" for x in row[1:]] for row in diagnostics)
    print(f"wrote {OUT / 'cartpole_ppo_curves.csv'} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
