"""Calibrate the beyond-PPO exercise's graded RLOO micro-run: what correct and broken rloo_advantages reach.

For each seed, runs exactly what Part E's graded cell of solutions/beyond_ppo/beyond_ppo.ipynb runs:
``RLHFConfig(algo="rloo", seed=seed, ...)`` through ``critic_free_iteration`` (30 iterations of 16 prompts ×
k = 4 from the pretrained tiny GPT-2, one torch thread), evaluated on the held-out prompts before and after, with the solution's ``rloo_advantages`` or the
solution with one plausible mistake. Each broken variant runs WITHOUT the cell's sanity checks, to show
whether the thresholds alone would catch it; the column "sanity" says whether the checks that run first in
the graded cell catch it anyway (Part B's own tests always do).

Prints one markdown row per (variant, seed) and a summary per variant; "fails" names the graded checks the
run would fail, with the thresholds read from the notebook's test cell.

    .venv/bin/python scripts/calibrate_beyond_ppo_microrun.py --seeds 0 1 2 3 4 5 6 7
    .venv/bin/python scripts/calibrate_beyond_ppo_microrun.py --variants includes_self sign --seeds 0 1 2 3 4 --jobs 2
"""
import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions/beyond_ppo/beyond_ppo.ipynb"
_LOO = "(groups.sum(axis=1, keepdims=True) - groups) / (k - 1)"

# name: (text in the reference rloo_advantages, replacement)
BROKEN = {
    "includes_self": (_LOO, "groups.mean(axis=1, keepdims=True)"),
    "divide_by_k": ("/ (k - 1)", "/ k"),
    "batch_baseline": (_LOO, "(groups.sum() - groups) / (groups.size - 1)"),
    "sign": ("groups - baseline", "baseline - groups"),
}
THRESHOLDS = ["MICRORUN_SEED", "RLOO_GOLD_GAIN", "KL_BOUND", "ITERATIONS"]


def thresholds() -> dict:
    """The constants the graded cells assign (``MICRORUN_SEED, RLOO_GOLD_GAIN, KL_BOUND = 0, 0.8, 10.0``)."""
    from rlhf_course.answers import graded_constants

    return graded_constants(NOTEBOOK, THRESHOLDS)


def rloo_advantages(variant: str):
    """The solution's rloo_advantages, mutated for a broken variant."""
    from rlhf_course.answers import PRELUDE, answer_cells

    namespace: dict = {}
    exec(PRELUDE, namespace)
    source = dict(answer_cells(NOTEBOOK))["rloo_advantages"]
    if variant != "correct":
        old, new = BROKEN[variant]
        assert old in source, (variant, old)
        source = source.replace(old, new)
    exec(compile(source, "rloo_advantages", "exec"), namespace)
    return namespace["rloo_advantages"]


def sanity_checks_pass(fn) -> bool:
    """The rloo_advantages checks that run first in Part E's graded cell (milliseconds)."""
    return (np.allclose(fn(np.array([1.0, 3.0, 0.0, 4.0, 8.0, 0.0]), 3), [-0.5, 2.5, -2.0, 0.0, 6.0, -6.0])
            and np.allclose(fn(np.array([2.0, 5.0, 0.0, 1.0]), 2), [-3.0, 3.0, -1.0, 1.0]))


def microrun(variant: str, seed: int) -> dict:
    """Part E's graded run for one rloo_advantages variant and one seed."""
    from rlhf_course.rlhf_ppo import RLHFConfig, critic_free_iteration, evaluate, make_rlhf_state

    fn = rloo_advantages(variant)
    wall, cpu = time.perf_counter(), time.process_time()
    cfg = RLHFConfig(algo="rloo", seed=seed, batch_size=64, group_size=4, learning_rate=3e-4, init_kl_coef=0.05)
    state = make_rlhf_state(cfg)
    before = evaluate(state, cfg)
    metrics = [critic_free_iteration(state, cfg, rloo_advantages=fn) for _ in range(thresholds()["ITERATIONS"])]
    after = evaluate(state, cfg)
    return {"variant": variant, "seed": seed, "sanity": sanity_checks_pass(fn), "gold_before": before["gold"],
            "gold_after": after["gold"], "gain": after["gold"] - before["gold"], "kl": after["kl"],
            "length": after["length"], "group_sum": max(m["sanity/advantage_group_sum"] for m in metrics),
            "logprob_dev": max(m["sanity/logprob_max_dev"] for m in metrics),
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def fails(r: dict, t: dict) -> list[str]:
    """The graded checks this run would fail (sanity checks aside)."""
    out = []
    if not r["group_sum"] < 1e-6:
        out.append("group sums")
    if not r["gain"] > t["RLOO_GOLD_GAIN"]:
        out.append("gold gain")
    if not r["kl"] < t["KL_BOUND"]:
        out.append("KL")
    return out


def _run(task):
    return microrun(*task)


def print_tables(results: list[dict], t: dict) -> None:
    print("| rloo_advantages | seed | sanity | gold before → after | gold gain | KL after | length "
          "| max group sum | wall s | fails |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['seed']} | {'pass' if r['sanity'] else 'FAIL'} | {r['gold_before']:+.2f} → "
              f"{r['gold_after']:+.2f} | {r['gain']:+.2f} | {r['kl']:.2f} | {r['length']:.1f} | {r['group_sum']:.1e} | "
              f"{r['wall_s']:.1f} | {' '.join(fails(r, t)) or '—'} |")
    print("\n| rloo_advantages | sanity | gold gain | KL | wall s (max) | runs failing a graded check |")
    print("|---|---|---|---|---|---|")
    for v in dict.fromkeys(r["variant"] for r in results):
        rs = [r for r in results if r["variant"] == v]
        gains, kls = [r["gain"] for r in rs], [r["kl"] for r in rs]
        sanity = "pass" if all(r["sanity"] for r in rs) else "FAIL"
        print(f"| {v} | {sanity} | {min(gains):+.2f} – {max(gains):+.2f} | {min(kls):.2f} – {max(kls):.2f} | "
              f"{max(r['wall_s'] for r in rs):.0f} | {sum(bool(fails(r, t)) for r in rs)}/{len(rs)} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5, 6, 7])
    parser.add_argument("--variants", nargs="+", default=["correct", *BROKEN])
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (one torch thread each)")
    parser.add_argument("--json", type=Path, default=None, help="also write every row to this file")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="print the tables of earlier runs (their --json files) against today's thresholds")
    args = parser.parse_args()
    t = thresholds()
    print(f"thresholds (from {NOTEBOOK.name}): gold gain > {t['RLOO_GOLD_GAIN']}, KL < {t['KL_BOUND']}, every "
          f"group's advantages summing to 0; graded seed {t['MICRORUN_SEED']}\n")
    if args.from_json:
        print_tables([r for path in args.from_json for r in json.loads(path.read_text())], t)
        return
    tasks = [(v, s) for v in args.variants for s in args.seeds]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_run, tasks))
    else:
        results = [_run(task) for task in tasks]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print_tables(results, t)


if __name__ == "__main__":
    main()
