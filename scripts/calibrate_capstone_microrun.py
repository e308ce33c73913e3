"""Calibrate the capstone's graded micro-runs: what correct and broken SFT losses reach on several seeds.

For each seed, runs exactly what the graded cells of solutions/capstone/capstone.ipynb run (Parts C, D
and E, with the "grade" preset of rlhf_course.capstone): SFT of the tiny GPT-2 with an ``sft_loss``,
preferences on the SFT model's samples, the reference RewardModel, PPO with the reference chapter-4
functions, evaluation against gold, and best-of-n. ``sft_loss`` is the solution's, or the solution with
one plausible mistake; every other function is the solution's. Each broken variant runs WITHOUT the
micro-run's sanity checks, to show whether the thresholds alone would catch it; the column "sanity" says
whether the checks that run first in the graded cell catch it anyway (Part A's tests always do).

Prints one markdown row per (variant, seed) and a summary per variant; a "fails" column names the
graded checks that the run would fail, with the thresholds read from the notebook's test cells.

    .venv/bin/python scripts/calibrate_capstone_microrun.py --seeds 0 1 2 3 4 5 --jobs 2
    .venv/bin/python scripts/calibrate_capstone_microrun.py --preset cpu --variants correct --seeds 0 1 2 --jobs 2
"""
import argparse
import copy
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path


NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions/capstone/capstone.ipynb"
_MASK = "(attention_mask[:, 1:] > 0) & (prompt_mask[:, 1:] == 0)"
_MEAN = "(nll * weights).sum() / weights.sum()"

# name: (text in the reference sft_loss, replacement); None = the reference itself
BROKEN = {
    "off_by_one": ("logits[:, :-1]", "logits[:, 1:]"),
    "prompt_not_masked": (_MASK, "(attention_mask[:, 1:] > 0)"),
    "pad_not_masked": (_MASK, "(prompt_mask[:, 1:] == 0)"),
    "per_row_mean": (_MEAN, "((nll * weights).sum(1) / weights.sum(1)).mean()"),
    "masks_not_shifted": (_MASK, "(attention_mask[:, :-1] > 0) & (prompt_mask[:, :-1] == 0)"),
}
THRESHOLDS = ["SFT_GOLD_GAIN", "RM_THRESHOLD", "PPO_GOLD_GAIN", "KL_BOUND", "BON_GOLD_GAIN", "MICRORUN_SEED"]


def thresholds() -> dict:
    """The constants the graded cells assign (e.g. ``PPO_GOLD_GAIN, KL_BOUND = 0.15, 12.0``)."""
    from rlhf_course.answers import graded_constants

    return graded_constants(NOTEBOOK, THRESHOLDS)


def answers(variant: str) -> dict:
    """Every function the pipeline takes, from the solution notebook; sft_loss mutated for a broken variant."""
    from rlhf_course.answers import PRELUDE, answer_cells
    from rlhf_course.capstone import ANSWERS

    namespace: dict = {}
    exec(PRELUDE, namespace)
    for grade_id, source in answer_cells(NOTEBOOK):
        if grade_id == "sft_loss" and variant != "correct":
            old, new = BROKEN[variant]
            assert old in source, (variant, old)
            source = source.replace(old, new)
        exec(compile(source, grade_id, "exec"), namespace)
    return {name: namespace[name] for name in ANSWERS}


def sanity_checks_pass(sft_loss) -> bool:
    """The sft_loss checks that run first in Part C's graded cell (milliseconds)."""
    import torch

    ids = torch.tensor([[5, 6, 7, 8, 0]])
    prompt, attn = torch.tensor([[1, 1, 0, 0, 0]]), torch.tensor([[1, 1, 1, 1, 0]])
    flat = torch.zeros(1, 5, 10)
    noisy = flat.clone()
    noisy[0, 3:] = 1000 * torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    return all(math.isclose(float(sft_loss(x, ids, prompt, attn)), math.log(10), rel_tol=1e-5) for x in (flat, noisy))


def microrun(variant: str, seed: int, preset: str = "grade") -> dict:
    """Parts C, D and E of the notebook, for one sft_loss variant and one seed (on the notebook's "grade"
    preset, or another: "cpu" runs the learner's full CPU pipeline's stages with the same checks)."""
    import torch

    from rlhf_course.capstone import (best_of_n_stage, eval_prompts, evaluate_policy, get_preset, load_base_model,
                                      preference_stage, reward_model_stage, sample_texts, sft_stage)
    from rlhf_course.rlhf_ppo import FixedKLController, make_rlhf_state, ppo_rlhf_iteration
    from rlhf_course.textworld import gold_reward

    A = answers(variant)
    wall, cpu = time.perf_counter(), time.process_time()
    seconds = {}

    def lap(name):
        nonlocal wall, cpu
        seconds[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        wall, cpu = time.perf_counter(), time.process_time()

    # Part C
    cfg = get_preset(preset, seed=seed)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    base, tokenizer, _ = load_base_model(cfg, progress=False)

    def mean_gold(model):
        prompts = eval_prompts(cfg)
        texts = sample_texts(model, tokenizer, prompts, cfg, cfg.ppo.temperature, seed=12_345)
        return float(gold_reward([p + " " + t for p, t in zip(prompts, texts)]).mean())

    gold_base = mean_gold(base)
    sft, sft_record = sft_stage(cfg, base, tokenizer, A["sft_loss"], progress=False)
    gold_sft = mean_gold(sft)
    lap("C")
    # Part D: the reward model
    train_prefs, eval_prefs, pref_record = preference_stage(cfg, sft, tokenizer)
    rm, rm_record = reward_model_stage(cfg, sft, tokenizer, A["RewardModel"], train_prefs, eval_prefs, progress=False)
    lap("D1")
    # Part D: PPO
    kl_ctl = (A["AdaptiveKLController"](cfg.ppo.init_kl_coef, cfg.ppo.kl_target, cfg.ppo.kl_horizon)
              if cfg.adaptive_kl else FixedKLController(cfg.ppo.init_kl_coef))
    state = make_rlhf_state(cfg.ppo, kl_ctl, policy=copy.deepcopy(sft), tokenizer=tokenizer)
    fns = {k: A[k] for k in ("response_log_probs", "per_token_rewards", "masked_mean", "masked_whiten",
                             "kl_estimates")}
    eval_sft = evaluate_policy(cfg, state.policy, state.ref_policy, rm, tokenizer)
    for _ in range(cfg.ppo_iterations):
        ppo_rlhf_iteration(state, cfg.ppo, **fns, reward_model=rm)
    eval_ppo = evaluate_policy(cfg, state.policy, state.ref_policy, rm, tokenizer)
    lap("D2")
    # Part E
    bon = best_of_n_stage(cfg, sft, rm, tokenizer, A["best_of_n_kl"])
    rows = {r["n"]: r for r in bon["rows"]}
    lap("E")
    return {"variant": variant, "seed": seed, "sanity": sanity_checks_pass(A["sft_loss"]),
            "held_before": sft_record["heldout_loss_before"], "held_after": sft_record["heldout_loss_after"],
            "gold_base": gold_base, "gold_sft": gold_sft, "annotators": pref_record["annotator_accuracy_vs_gold"],
            "rm_acc": rm_record["eval_gold_acc"], "ppo_gain": eval_ppo["gold"] - eval_sft["gold"],
            "gold_ppo": eval_ppo["gold"], "kl": eval_ppo["kl"], "bon_gain": rows[4]["gold"] - rows[1]["gold"],
            "bon_kl_ok": all(r["kl_empirical"] <= r["kl_analytic"] + 1e-9 for r in bon["rows"]),
            "seconds": seconds}


def fails(r: dict, t: dict) -> list[str]:
    """The graded checks this run would fail (sanity checks aside)."""
    out = []
    if not r["held_after"] < r["held_before"] or not r["gold_sft"] - r["gold_base"] > t["SFT_GOLD_GAIN"]:
        out.append("C")
    if not r["rm_acc"] > t["RM_THRESHOLD"]:
        out.append("D-rm")
    if not (r["ppo_gain"] > t["PPO_GOLD_GAIN"] and r["kl"] < t["KL_BOUND"]):
        out.append("D-ppo")
    if not (r["bon_gain"] > t["BON_GOLD_GAIN"] and r["bon_kl_ok"]):
        out.append("E")
    return out


def _run(task):
    return microrun(*task)


def print_tables(results: list[dict], t: dict) -> None:
    """One markdown row per run, then one summary row per variant."""
    print("| sft_loss | seed | sanity | SFT held-out loss | gold base → SFT | annot. vs gold | RM acc vs gold "
          "| PPO gold gain | KL after PPO | best-of-4 gain | s (C/D1/D2/E, CPU) | fails |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        s = r["seconds"]
        print(f"| {r['variant']} | {r['seed']} | {'pass' if r['sanity'] else 'FAIL'} | {r['held_before']:.3f} → "
              f"{r['held_after']:.3f} | {r['gold_base']:+.2f} → {r['gold_sft']:+.2f} | {r['annotators']:.3f} | "
              f"{r['rm_acc']:.3f} | {r['ppo_gain']:+.2f} | {r['kl']:.2f} | {r['bon_gain']:+.2f} | "
              + "/".join(f"{s[k][1]:.0f}" for k in ("C", "D1", "D2", "E")) + f" | {' '.join(fails(r, t)) or '—'} |")
    print("\n| sft_loss | sanity | SFT gold gain | RM acc | PPO gold gain | KL | best-of-4 gain | CPU s (max) "
          "| wall s (max) | runs failing a graded check |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v in dict.fromkeys(r["variant"] for r in results):
        rs = [r for r in results if r["variant"] == v]

        def span(key, fmt="+.2f"):
            vals = [r[key] for r in rs] if key != "sft_gain" else [r["gold_sft"] - r["gold_base"] for r in rs]
            return f"{min(vals):{fmt}} – {max(vals):{fmt}}"

        cpu = max(sum(x[1] for x in r["seconds"].values()) for r in rs)
        wall = max(sum(x[0] for x in r["seconds"].values()) for r in rs)
        failing = sum(bool(fails(r, t)) for r in rs)
        sanity = "pass" if all(r["sanity"] for r in rs) else "FAIL"
        print(f"| {v} | {sanity} | {span('sft_gain')} | {span('rm_acc', '.3f')} | {span('ppo_gain')} | "
              f"{span('kl', '.2f')} | {span('bon_gain')} | {cpu:.0f} | {wall:.0f} | {failing}/{len(rs)} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--variants", nargs="+", default=["correct", *BROKEN])
    parser.add_argument("--preset", default="grade", help="capstone preset (default: the graded cells' \"grade\"; "
                        "\"cpu\": the full CPU run's sizes, about 2.5 min per seed)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (one torch thread each)")
    parser.add_argument("--json", type=Path, default=None, help="also write every row to this file")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="print the tables of earlier runs (their --json files) against today's thresholds")
    args = parser.parse_args()
    t = thresholds()
    print(f"thresholds (from {NOTEBOOK.name}): C gold gain > {t['SFT_GOLD_GAIN']}, D accuracy > {t['RM_THRESHOLD']}, "
          f"D PPO gold gain > {t['PPO_GOLD_GAIN']} and KL < {t['KL_BOUND']}, E best-of-4 gold gain > "
          f"{t['BON_GOLD_GAIN']}; graded seed {t['MICRORUN_SEED']}\n")
    if args.from_json:
        print_tables([r for path in args.from_json for r in json.loads(path.read_text())], t)
        return
    tasks = [(v, s, args.preset) for v in args.variants for s in args.seeds]
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
