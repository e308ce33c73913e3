"""The capstone's experiments: reward over-optimisation, preference-set size, KL control, best-of-n.

    .venv/bin/python scripts/capstone_experiments.py                        # everything: ≈ 40 min on 2 cores
    .venv/bin/python scripts/capstone_experiments.py --only sweep bon --data-dir /tmp/x   # some experiments only
    .venv/bin/python scripts/capstone_experiments.py --quick --data-dir /tmp/capstone-quick   # smoke test, ≈ 3 min

Everything runs the capstone's own stages (``rlhf_course.capstone``) with the ``cpu`` preset (the tiny GPT-2,
1.1 M parameters): SFT once per seed, preferences on the SFT model's samples and a reward model per (seed,
number of pairs), then PPO runs against that reward model (the *proxy*), judged by the text world's gold
reward on held-out prompts every ``--eval-every`` iterations. SFT models, reward models and finished runs are
cached under ``--scratch``, so an interrupted run continues where it stopped. The cache is keyed by the
settings, not by the code or the answers notebook: after changing either, use a fresh ``--scratch``.
The output files hold only the experiments run, so the book's data need a run without ``--only``.

Experiments (``--only`` picks some):

1. ``sweep``   fixed β ∈ --betas × --seeds, --iterations PPO iterations each: gold, proxy, exact KL,
               length, distinct-word ratio and the reward model's agreement with gold along every run.
2. ``pairs``   reward models from --pairs-sizes preference pairs (held-out accuracy against gold on one
               common set), each optimised at β = --pairs-beta: how the gold peak moves with the data.
3. ``control`` the learner's AdaptiveKLController (target --kl-target nats) from a small and a large β,
               and two broken runs, a 10× learning rate and the KL penalty with the wrong sign, with every
               TRL-named metric per iteration.
4. ``bon``     best-of-n from the SFT policy with the same reward model, n up to 64 (--bon-samples per
               prompt), with the analytic and the empirical KL.
5. ``rm_shift`` a reward model trained on grammar pairs (chapter 3's data) next to the one trained on the
               SFT model's samples, both evaluated on both kinds of held-out pairs, and both re-scoring the
               held-out samples of the SFT policy and of every sweep run's last policy (agreement with gold).
6. ``race``    chapter 6: PPO, RLOO and GRPO (``rlhf_iteration`` with algo=…) against the same reward model,
               --iterations each, and DPO (``rlhf_course.dpo``) on the reward model's own training pairs,
               at the β of RACE_BETAS, every run evaluated like the sweep's. Not in the default --only:
               chapter 6's data are made with
    .venv/bin/python scripts/capstone_experiments.py --only race bon --iterations 100 --data-dir book/beyond_ppo/data

Output in --data-dir (default book/capstone/data/; every file carries the command and the date):
    runs.csv            one row per evaluation of every PPO run
    train_metrics.csv   TRL-named metrics of every PPO iteration of every run (run name, iteration, metrics;
                        the run's settings are in runs.csv)
    dpo_metrics.csv     the race's DPO runs per step: loss, implicit rewards, accuracy, margins, log-probs
    examples.json       the held-out prompts' samples (with gold and proxy) of the SFT policy and of each
                        seed-0 run's last policy
    sft.json            per seed: gold reward of the base and SFT policies, SFT losses, samples
    reward_models.json  per (seed, training set): pairs, held-out accuracy against gold on SFT-sample pairs
                        and on grammar pairs; both reward models' agreement with gold on the policies' samples
    best_of_n.csv       per (seed, n): gold, proxy, analytic and empirical KL
    summary.json        settings, timings and the key numbers (also printed as a table)

The graded functions (sft_loss, RewardModel, the chapter-4 functions, AdaptiveKLController, best_of_n_kl)
come from a notebook, ``rlhf_course.capstone.default_answers()`` unless --answers says otherwise; the race's
chapter-6 functions (rloo_advantages, group_advantages, grpo_loss, dpo_loss) from
``default_answers("beyond_ppo")`` unless --beyond-answers says otherwise.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import csv
import datetime
import hashlib
import json
import math
import multiprocessing as mp
import os
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

TRAIN_KEYS = ["objective/kl", "objective/kl_k3", "objective/entropy", "objective/non_score_reward",
              "objective/rlhf_reward", "objective/scores", "objective/gold_scores", "objective/kl_coef",
              "policy/approxkl_avg", "policy/clipfrac_avg", "policy/entropy_avg", "loss/policy_avg",
              "loss/value_avg", "val/clipfrac_avg", "val/ratio", "val/num_eos_tokens", "seconds"]
"""The per-iteration metrics each run records (TRL's names, plus the rollouts' gold reward)."""
CSV_TRAIN_KEYS = ["objective/kl", "objective/entropy", "objective/rlhf_reward", "objective/scores",
                  "objective/gold_scores", "objective/kl_coef", "policy/approxkl_avg", "policy/clipfrac_avg",
                  "policy/entropy_avg", "val/num_eos_tokens", "seconds"]
"""The ones train_metrics.csv keeps (4 significant digits), to keep the committed file small."""
DPO_TRAIN_KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                  "logps/chosen", "logps/rejected", "seconds"]
"""What a DPO run keeps per step in train_metrics.csv (TRL's DPOTrainer names)."""
EVAL_KEYS = ["gold", "proxy", "kl", "sqrt_kl", "length", "eos", "distinct", "rm_agreement"]
RACE_BETAS = {"ppo": [0.05, 0.2], "rloo": [0.05, 0.2], "grpo": [0.04, 0.2], "dpo": [0.1, 0.5]}
"""β of the race's runs: the KL coefficient in the reward (PPO, RLOO), of the k3 term in the loss (GRPO; 0.04 is
DeepSeekMath's), or of the DPO loss."""
DPO_EPOCHS, DPO_EVAL_EVERY = 2, 16
"""DPO's passes over the reward model's training pairs, and its evaluation interval in steps."""
BEYOND_FUNCTIONS = ["rloo_advantages", "group_advantages", "grpo_loss", "dpo_loss"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--only", nargs="+", default=["sweep", "pairs", "control", "bon", "rm_shift"],
                   choices=["sweep", "pairs", "control", "bon", "rm_shift", "race"], help="experiments to run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the sweep, pairs and bon")
    p.add_argument("--betas", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1, 0.3], help="fixed β of the sweep")
    p.add_argument("--iterations", type=int, default=150, help="PPO iterations per run")
    p.add_argument("--eval-every", type=int, default=10, help="evaluate on the held-out prompts every this many")
    p.add_argument("--pairs", type=int, default=2048, help="preference pairs of the sweep's reward model")
    p.add_argument("--pairs-sizes", type=int, nargs="+", default=[256, 1024, 4096],
                   help="other preference-set sizes (the sweep's --pairs is the fourth)")
    p.add_argument("--pairs-beta", type=float, default=0.02, help="β of the preference-set-size runs")
    p.add_argument("--control-seeds", type=int, nargs="+", default=[0], help="seeds of the control runs")
    p.add_argument("--kl-target", type=float, default=3.0, help="target of the adaptive KL controller, nats")
    p.add_argument("--kl-horizon", type=int, default=320,
                   help="horizon of the adaptive controller, episodes (320 = 10 iterations of 32 prompts)")
    p.add_argument("--adaptive-betas", type=float, nargs="+", default=[0.02, 0.3], help="β₀ of the adaptive runs")
    p.add_argument("--broken-lr", type=float, default=1e-3, help="learning rate of the 'too large a step' run")
    p.add_argument("--bon-n", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64], help="n of best-of-n")
    p.add_argument("--bon-samples", type=int, default=128, help="samples per prompt best-of-n draws from (≥ 2 max n)")
    p.add_argument("--workers", type=int, default=2, help="processes running jobs side by side (1 thread each)")
    p.add_argument("--answers", type=Path, default=None,
                   help="notebook with the graded functions (default: rlhf_course.capstone.default_answers())")
    p.add_argument("--beyond-answers", type=Path, default=None,
                   help="the race's chapter-6 functions (default: default_answers('beyond_ppo'))")
    p.add_argument("--data-dir", type=Path, default=REPO / "book" / "capstone" / "data", help="where results go")
    p.add_argument("--scratch", type=Path, default=None,
                   help="cache of SFT models, reward models and finished runs "
                        "(default: <rlhf_course cache>/capstone_experiments)")
    p.add_argument("--quick", action="store_true", help="tiny settings, to check the script end to end")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.control_seeds, args.betas = args.seeds[:1], args.control_seeds[:1], [0.02, 0.3]
        args.iterations, args.eval_every, args.pairs, args.pairs_sizes = 4, 2, 128, [64]
        args.adaptive_betas, args.bon_n, args.bon_samples = [0.02], [1, 2, 4], 8
    return args


# ---------------------------------------------------------------------------------------------------
# Settings and cache keys
# ---------------------------------------------------------------------------------------------------
def base_config(seed: int, quick: bool, eval_every: int, iterations: int):
    """The capstone's cpu preset for one seed (the quick check shrinks every stage)."""
    from rlhf_course import capstone as cs

    overrides = dict(seed=seed, eval_every=eval_every, ppo_iterations=iterations)
    if quick:
        overrides.update(sft_examples=256, sft_steps=10, pref_eval_pairs=64, rm_steps=10, eval_prompts=16)
    return cs.get_preset("cpu", **overrides)


def key(obj) -> str:
    """A short stable hash of a JSON-able object: the name of a cached stage."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def sft_key(cfg) -> str:
    return f"sft-s{cfg.seed}-" + key([cfg.model, cfg.seed, cfg.sft_examples, cfg.demo_candidates, cfg.sft_steps,
                                      cfg.sft_batch_size, cfg.sft_lr, cfg.eval_prompts])


def rm_key(cfg, source: str) -> str:
    return f"rm-s{cfg.seed}-{source}{cfg.pref_pairs}-" + key([sft_key(cfg), source, cfg.pref_pairs, cfg.pref_eval_pairs,
                                                              cfg.pref_temperature, cfg.annotator_temperature,
                                                              cfg.rm_steps, cfg.rm_batch_size, cfg.rm_lr])


def run_name(spec: dict) -> str:
    parts = [spec["experiment"], f"s{spec['seed']}", f"b{spec['beta']:g}", f"p{spec['pairs']}"]
    if spec.get("algo", "ppo") != "ppo":
        parts.insert(1, spec["algo"])
    if spec["controller"] != "fixed":
        parts.append(f"adaptive{spec['kl_target']:g}-h{spec['kl_horizon']}")
    if spec["lr"] != 1e-4:
        parts.append(f"lr{spec['lr']:g}")
    if spec["broken"]:
        parts.append(spec["broken"])
    return "-".join(parts)


# ---------------------------------------------------------------------------------------------------
# Jobs (each runs in a worker process with one torch thread)
# ---------------------------------------------------------------------------------------------------
def _setup():
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _answers(path):
    from rlhf_course import capstone as cs
    from rlhf_course.answers import load_answers

    return load_answers(path, cs.ANSWERS)


def _load_sft(path: Path):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from rlhf_course.tiny_lm import _quiet_progress_bars

    with _quiet_progress_bars():
        model = GPT2LMHeadModel.from_pretrained(path, local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def _load_rm(answers, sft_model, path: Path):
    import torch

    rm = answers["RewardModel"](copy.deepcopy(sft_model.base_model))
    rm.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return rm.eval().requires_grad_(False)


def sft_job(job: dict) -> dict:
    """SFT for one seed (cached): the model, and gold rewards of base and SFT samples on the eval prompts."""
    _setup()
    from rlhf_course import capstone as cs
    from rlhf_course import textworld as tw

    cfg, out = job["cfg"], Path(job["dir"])
    if (out / "record.json").exists():
        return json.loads((out / "record.json").read_text())
    start = time.perf_counter()
    answers = _answers(job["answers"])
    base, tokenizer, description = cs.load_base_model(cfg, progress=False)
    prompts = cs.eval_prompts(cfg)

    def samples(model):
        texts = cs.sample_texts(model, tokenizer, prompts, cfg, cfg.ppo.temperature, seed=12_345)
        reviews = [p + " " + t for p, t in zip(prompts, texts)]
        return texts, tw.gold_reward(reviews)

    base_texts, base_gold = samples(base)
    sft_model, rec = cs.sft_stage(cfg, base, tokenizer, answers["sft_loss"], progress=False)
    sft_texts, sft_gold = samples(sft_model)
    sft_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {"seed": cfg.seed, "description": description, "gold_base": float(base_gold.mean()),
              "gold_sft": float(sft_gold.mean()), "heldout_loss_before": rec["heldout_loss_before"],
              "heldout_loss_after": rec["heldout_loss_after"], "demo_gold": rec["demo_gold"],
              "losses": rec["losses"], "sft_seconds": rec["seconds"],
              "samples": [{"prompt": p, "base": b, "sft": s, "gold_base": float(gb), "gold_sft": float(gs)}
                          for p, b, s, gb, gs in zip(prompts, base_texts, sft_texts, base_gold, sft_gold)],
              "seconds": time.perf_counter() - start}
    _write_json(out / "record.json", record)
    return record


def rm_job(job: dict) -> dict:
    """One reward model (cached) on the SFT trunk, trained on SFT-sample pairs or on grammar pairs, and its
    accuracy against gold on two common held-out sets: SFT-sample pairs and grammar pairs."""
    _setup()
    import torch

    from rlhf_course import capstone as cs
    from rlhf_course import textworld as tw
    from rlhf_course.reward_data import evaluate

    cfg, out, source = job["cfg"], Path(job["path"]), job["source"]
    record_path = out.with_suffix(".json")
    if record_path.exists():
        return json.loads(record_path.read_text())
    start = time.perf_counter()
    answers = _answers(job["answers"])
    sft_model, tokenizer = _load_sft(Path(job["sft_dir"]))
    train, held, pref_record = cs.preference_stage(cfg, sft_model, tokenizer)
    if source == "grammar":            # chapter 3's data: pairs of grammar reviews, the same annotator
        train = tw.simulate_preferences(cfg.pref_pairs, seed=cfg.seed)
        pref_record = {"pairs": len(train), "train_pairs": len(train),
                       "annotator_accuracy_vs_gold": tw.annotator_accuracy(train)}
    rm, rec = cs.reward_model_stage(cfg, sft_model, tokenizer, answers["RewardModel"], train, held, progress=False)
    torch.save(rm.state_dict(), out)
    # Common held-out sets, the same for every reward model of this seed.
    _, common_sft, _ = cs.preference_stage(replace(cfg, seed=cfg.seed + 500, pref_pairs=0, pref_eval_pairs=1024),
                                           sft_model, tokenizer)
    common_grammar = tw.simulate_preferences(1024, seed=cfg.seed + 500)
    record = {"seed": cfg.seed, "source": source, "pairs": cfg.pref_pairs, "train_pairs": len(train),
              "rm_steps": cfg.rm_steps, "annotator_accuracy_vs_gold": pref_record["annotator_accuracy_vs_gold"],
              "gold_acc_sft_pairs": evaluate(rm, tokenizer, common_sft)["gold_acc"],
              "gold_acc_grammar_pairs": evaluate(rm, tokenizer, common_grammar)["gold_acc"],
              "common_sft_pairs": len(common_sft), "common_grammar_pairs": len(common_grammar),
              "final_loss": float(np.mean(rec["losses"][-20:])), "seconds": time.perf_counter() - start}
    _write_json(record_path, record)
    return record


def pair_agreement(proxy: np.ndarray, gold: np.ndarray) -> float:
    """Over all pairs of samples with different gold reward: the share the proxy orders as gold does."""
    dp, dg = np.subtract.outer(proxy, proxy), np.subtract.outer(gold, gold)
    use = np.triu(dg != 0, 1)
    return float(np.mean(np.sign(dp[use]) == np.sign(dg[use]))) if use.any() else float("nan")


def _job_models(job: dict):
    """A job's graded answers, SFT model, tokenizer and reward model, from the cache its spec names."""
    answers = _answers(job["answers"])
    sft_model, tokenizer = _load_sft(Path(job["sft_dir"]))
    return answers, sft_model, tokenizer, _load_rm(answers, sft_model, Path(job["rm_path"]))


def evaluation_row(cfg, policy, ref_policy, rm, tokenizer, iteration: int, keep_texts: bool) -> dict:
    """One evaluation of a policy on the held-out prompts: EVAL_KEYS, and the samples if keep_texts."""
    from rlhf_course import capstone as cs

    ev = cs.evaluate_policy(cfg, policy, ref_policy, rm, tokenizer)
    row = {"iteration": iteration, **{k: ev[k] for k in ("gold", "proxy", "kl", "length", "eos", "distinct")}}
    row["sqrt_kl"] = math.sqrt(max(ev["kl"], 0.0))
    row["rm_agreement"] = pair_agreement(ev["per_sample"]["proxy"], ev["per_sample"]["gold"])
    if keep_texts:
        row["samples"] = [{"text": t, "gold": float(g), "proxy": float(p)} for t, g, p in
                          zip(ev["texts"], ev["per_sample"]["gold"], ev["per_sample"]["proxy"])]
    return row


def ppo_job(job: dict) -> dict:
    """One run of the rollout loop (PPO, or the race's RLOO / GRPO: spec["algo"]) against a cached reward
    model, evaluated on the held-out prompts every eval_every."""
    _setup()
    from rlhf_course import capstone as cs
    from rlhf_course import textworld as tw
    from rlhf_course.rlhf_ppo import FixedKLController, make_rlhf_state, rlhf_iteration

    cfg, spec, out = job["cfg"], job["spec"], Path(job["path"])
    if out.exists():
        return json.loads(out.read_text())
    start = time.perf_counter()
    answers, sft_model, tokenizer, rm = _job_models(job)
    algo = spec.get("algo", "ppo")
    ppo = cs.algo_config(cfg.ppo, algo)
    ppo = replace(ppo, init_kl_coef=spec["beta"], learning_rate=spec["lr"], kl_target=spec["kl_target"],
                  kl_horizon=spec["kl_horizon"])
    kl_ctl = (answers["AdaptiveKLController"](spec["beta"], spec["kl_target"], spec["kl_horizon"])
              if spec["controller"] == "adaptive" else FixedKLController(spec["beta"]))
    if algo != "ppo":
        answers.update(_beyond_answers(job["beyond_answers"]))
    fns = {k: answers[k] for k in cs.ALGO_FUNCTIONS[algo]}
    if spec["broken"] == "kl_sign":    # the KL penalty with the wrong sign: moving away is *rewarded*
        per_token_rewards = fns["per_token_rewards"]
        fns["per_token_rewards"] = lambda s, lp, ref, m, kl_coef: per_token_rewards(s, lp, ref, m, -kl_coef)
    state = make_rlhf_state(ppo, kl_ctl, policy=copy.deepcopy(sft_model), tokenizer=tokenizer,
                            description="SFT model")

    def evaluation(iteration: int, keep_texts: bool) -> dict:
        return evaluation_row(cfg, state.policy, state.ref_policy, rm, tokenizer, iteration, keep_texts)

    evals, train = [evaluation(0, keep_texts=True)], []
    for it in range(1, cfg.ppo_iterations + 1):
        m = rlhf_iteration(state, ppo, **fns, reward_model=rm)
        m["objective/gold_scores"] = float(np.mean(tw.gold_reward(state.last_rollout["reviews"])))
        train.append({"iteration": it, **{k: float(m.get(k, math.nan)) for k in TRAIN_KEYS}})  # RLOO, GRPO: no approx KL
        if it % cfg.eval_every == 0 or it == cfg.ppo_iterations:
            evals.append(evaluation(it, keep_texts=it == cfg.ppo_iterations))
        if not all(math.isfinite(m[k]) for k in TRAIN_KEYS if k in m):
            break                       # a broken run may diverge to NaN: keep what it logged
    result = {"spec": spec, "name": job["name"], "evals": evals, "train": train,
              "train_seconds": sum(row["seconds"] for row in train), "seconds": time.perf_counter() - start}
    _write_json(out, result)
    return result


def dpo_job(job: dict) -> dict:
    """DPO from the SFT model on the reward model's own training pairs (no reward model in training),
    evaluated like the rollout runs every DPO_EVAL_EVERY steps; logs the chosen and rejected log-probs."""
    _setup()
    from rlhf_course import capstone as cs
    from rlhf_course.dpo import DPOConfig, make_dpo_state, train_dpo

    cfg, spec, out = job["cfg"], job["spec"], Path(job["path"])
    if out.exists():
        return json.loads(out.read_text())
    start = time.perf_counter()
    answers, sft_model, tokenizer, rm = _job_models(job)
    dpo_loss = _beyond_answers(job["beyond_answers"])["dpo_loss"]
    train_prefs, _, _ = cs.preference_stage(replace(cfg, pref_pairs=spec["pairs"]), sft_model, tokenizer)
    dcfg = DPOConfig(seed=cfg.seed, beta=spec["beta"], learning_rate=spec["lr"], epochs=DPO_EPOCHS,
                     temperature=cfg.ppo.temperature)
    state = make_dpo_state(dcfg, copy.deepcopy(sft_model), tokenizer)
    evals = [evaluation_row(cfg, state.policy, state.ref_policy, rm, tokenizer, 0, keep_texts=True)]
    train, eval_seconds = [], 0.0

    def callback(st, m):
        nonlocal eval_seconds
        train.append({"iteration": st.step, **m})
        if st.step % DPO_EVAL_EVERY == 0:
            t0 = time.perf_counter()
            evals.append(evaluation_row(cfg, st.policy, st.ref_policy, rm, tokenizer, st.step, keep_texts=False))
            eval_seconds += time.perf_counter() - t0

    t_train = time.perf_counter()
    train_dpo(state, dcfg, train_prefs, dpo_loss=dpo_loss, callback=callback)
    train_seconds = time.perf_counter() - t_train - eval_seconds
    if evals[-1]["iteration"] != state.step:
        evals.append(evaluation_row(cfg, state.policy, state.ref_policy, rm, tokenizer, state.step, keep_texts=True))
    else:
        evals[-1] = evaluation_row(cfg, state.policy, state.ref_policy, rm, tokenizer, state.step, keep_texts=True)
    result = {"spec": spec, "name": job["name"], "evals": evals, "train": train, "pairs_used": len(train_prefs),
              "train_seconds": train_seconds, "seconds": time.perf_counter() - start}
    _write_json(out, result)
    return result


def _beyond_answers(path):
    from rlhf_course.answers import load_answers

    return load_answers(path, BEYOND_FUNCTIONS)


def bon_job(job: dict) -> dict:
    """Best-of-n from the SFT policy with the reward model: gold, proxy, analytic and empirical KL."""
    _setup()
    from rlhf_course import capstone as cs

    out = Path(job["path"])
    if out.exists():
        return json.loads(out.read_text())
    start = time.perf_counter()
    answers, sft_model, tokenizer, rm = _job_models(job)
    cfg = replace(job["cfg"], best_of_n=tuple(job["n"]), best_of_n_samples=job["samples"])
    result = cs.best_of_n_stage(cfg, sft_model, rm, tokenizer, answers["best_of_n_kl"])
    result.update(seed=cfg.seed, seconds=time.perf_counter() - start)
    _write_json(out, result)
    return result


def shift_job(job: dict) -> dict:
    """Both reward models of a seed (SFT-sample pairs, grammar pairs) re-score the held-out samples of the
    SFT policy and of each run's last policy: their pairwise agreement with gold as the policy moves."""
    _setup()
    from rlhf_course.reward_data import score_texts

    answers = _answers(job["answers"])
    sft_model, tokenizer = _load_sft(Path(job["sft_dir"]))
    rms = {source: _load_rm(answers, sft_model, Path(path)) for source, path in job["rm_paths"].items()}
    rows = []
    for path in job["runs"]:
        run = json.loads(Path(path).read_text())
        for ev in (run["evals"][0], run["evals"][-1]):
            if ev["iteration"] == 0 and rows and any(r["iteration"] == 0 for r in rows):
                continue                                      # the SFT policy's samples: once per seed
            texts, gold = [s["text"] for s in ev["samples"]], np.array([s["gold"] for s in ev["samples"]])
            row = {"seed": run["spec"]["seed"], "run": "SFT policy" if ev["iteration"] == 0 else run["name"],
                   "beta": run["spec"]["beta"], "iteration": ev["iteration"], "kl": ev["kl"]}
            for source, rm in rms.items():
                row[f"agreement_{source}_rm"] = pair_agreement(score_texts(rm, tokenizer, texts), gold)
            rows.append(row)
    return {"seed": job["seed"], "rows": rows}


def _dispatch(job: dict) -> dict:
    return {"sft": sft_job, "rm": rm_job, "ppo": ppo_job, "dpo": dpo_job, "bon": bon_job,
            "shift": shift_job}[job["kind"]](job)


def run_jobs(jobs: list[dict], workers: int, desc: str) -> list[dict]:
    """Run jobs side by side in worker processes (spawned: a clean torch per process); results in order."""
    from tqdm.auto import tqdm

    if not jobs:
        return []
    results: list = [None] * len(jobs)
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_dispatch, job): i for i, job in enumerate(jobs)}
        bar = tqdm(total=len(jobs), desc=desc, unit="job")
        for fut in cf.as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            bar.set_postfix_str(jobs[i].get("name", ""))
            bar.update(1)
        bar.close()
    return results


# ---------------------------------------------------------------------------------------------------
# Output files
# ---------------------------------------------------------------------------------------------------
def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def _write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_jsonable))
    os.replace(tmp, path)


def _round(x, digits=5):
    if isinstance(x, float):
        return float(f"{x:.{digits}g}") if math.isfinite(x) else x
    return x


def write_csv(path: Path, rows: list[dict], header: dict) -> None:
    """A CSV whose first lines are '# key: value' comments (the command and date); read it with
    csv.DictReader(line for line in f if not line.startswith('#'))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0]) if rows else []
    with open(path, "w", newline="") as f:
        for k, v in header.items():
            f.write(f"# {k}: {v}\n")
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _round(v) for k, v in row.items()})


def read_csv_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    from rlhf_course import capstone as cs
    from rlhf_course.dpo import DPOConfig
    from rlhf_course.tiny_lm import default_cache_dir, load_tiny_lm

    command = "python " + " ".join(shlex.quote(a) for a in
                                   [str(Path(sys.argv[0]).resolve().relative_to(REPO))
                                    if Path(sys.argv[0]).resolve().is_relative_to(REPO) else sys.argv[0],
                                    *(sys.argv[1:] if argv is None else argv)])
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    header = {"command": command, "date": date}
    print(f"$ {command}\n{date}", flush=True)
    answers_path = Path(args.answers or cs.default_answers()).resolve()
    _answers(answers_path)                                     # fail now, not inside a worker
    beyond_path = Path(args.beyond_answers or cs.default_answers("beyond_ppo")).resolve()
    if "race" in args.only:
        _beyond_answers(beyond_path)
    scratch = Path(args.scratch or default_cache_dir() / "capstone_experiments")
    scratch.mkdir(parents=True, exist_ok=True)
    load_tiny_lm(progress=False)                               # build the base model once, before the workers
    start = time.perf_counter()
    only = set(args.only)
    seeds = sorted(set(args.seeds) | (set(args.control_seeds) if "control" in only else set()))
    cfgs = {s: base_config(s, args.quick, args.eval_every, args.iterations) for s in seeds}
    common = {"answers": str(answers_path), "beyond_answers": str(beyond_path)}

    # 1. SFT, once per seed
    sft_dirs = {s: scratch / sft_key(cfgs[s]) for s in seeds}
    sft_records = dict(zip(seeds, run_jobs([{"kind": "sft", "cfg": cfgs[s], "dir": str(sft_dirs[s]),
                                             "name": f"SFT seed {s}", **common} for s in seeds],
                                           args.workers, "1/3 SFT")))

    # 2. Reward models, one per (seed, source, pairs)
    rm_specs = {(s, "sft", args.pairs) for s in seeds}
    if "pairs" in only:
        rm_specs |= {(s, "sft", n) for s in args.seeds for n in args.pairs_sizes}
    if "rm_shift" in only:
        rm_specs |= {(s, "grammar", args.pairs) for s in args.seeds}
    rm_specs = sorted(rm_specs, key=lambda t: (-t[2], t))      # largest first: better packing
    rm_cfg = {t: replace(cfgs[t[0]], pref_pairs=t[2]) for t in rm_specs}
    rm_paths = {t: scratch / (rm_key(rm_cfg[t], t[1]) + ".pt") for t in rm_specs}
    rm_records = dict(zip(rm_specs, run_jobs(
        [{"kind": "rm", "cfg": rm_cfg[t], "source": t[1], "path": str(rm_paths[t]), "sft_dir": str(sft_dirs[t[0]]),
          "name": f"RM seed {t[0]} {t[1]} {t[2]}", **common} for t in rm_specs], args.workers, "2/3 reward models")))

    # 3. PPO runs and best-of-n
    def spec(experiment, seed, beta, pairs=args.pairs, controller="fixed", lr=1e-4, broken="", algo="ppo"):
        sp = {"experiment": experiment, "seed": seed, "beta": beta, "pairs": pairs, "controller": controller,
              "lr": lr, "broken": broken, "kl_target": args.kl_target, "kl_horizon": args.kl_horizon}
        return {**sp, "algo": algo} if algo != "ppo" else sp      # a PPO spec keeps its cache key

    specs = []
    if "sweep" in only or "pairs" in only:                    # the pairs experiment's 2048 run is in the sweep
        betas = args.betas if "sweep" in only else [args.pairs_beta]
        specs += [spec("sweep", s, b) for s in args.seeds for b in betas]
    if "pairs" in only:
        specs += [spec("pairs", s, args.pairs_beta, pairs=n) for s in args.seeds for n in args.pairs_sizes]
    if "control" in only:
        specs += [spec("sweep", s, b) for s in args.control_seeds for b in (0.1, args.pairs_beta)]
        specs += [spec("control", s, b, controller="adaptive") for s in args.control_seeds for b in args.adaptive_betas]
        specs += [spec("control", s, 0.1, lr=args.broken_lr, broken="lr_x10") for s in args.control_seeds]
        specs += [spec("control", s, 0.1, broken="kl_sign") for s in args.control_seeds]
    if "race" in only:
        # learning rates: the capstone's --algo settings of the cpu preset (RLOO 3 × PPO's), DPOConfig's for DPO
        race_lr = {a: cs.algo_config(cfgs[args.seeds[0]].ppo, a).learning_rate for a in ("ppo", "rloo", "grpo")}
        race_lr["dpo"] = DPOConfig().learning_rate
        specs += [spec("race", s, b, lr=race_lr[a], algo=a) for a in ("ppo", "rloo", "grpo", "dpo")
                  for s in args.seeds for b in RACE_BETAS[a]]
    unique = {}
    for sp in specs:
        unique.setdefault(run_name(sp), sp)
    jobs = []
    for name, sp in unique.items():
        cfg = cfgs[sp["seed"]]
        t = (sp["seed"], "sft", sp["pairs"])
        jobs.append({"kind": "dpo" if sp.get("algo") == "dpo" else "ppo", "cfg": cfg, "spec": sp, "name": name, "sft_dir": str(sft_dirs[sp["seed"]]),
                     "rm_path": str(rm_paths[t]), "path": str(scratch / "runs" / f"{name}-{key([rm_key(rm_cfg[t], 'sft'), sp, cfg.ppo_iterations, cfg.eval_every, asdict(cfg.ppo)])}.json"),
                     **common})
    if "bon" in only:
        for s in args.seeds:
            t = (s, "sft", args.pairs)
            jobs.append({"kind": "bon", "cfg": cfgs[s], "n": args.bon_n, "samples": args.bon_samples,
                         "name": f"best-of-n seed {s}", "sft_dir": str(sft_dirs[s]), "rm_path": str(rm_paths[t]),
                         "path": str(scratch / "bon" / f"bon-s{s}-{key([rm_key(rm_cfg[t], 'sft'), args.bon_n, args.bon_samples])}.json"),
                         **common})
    results = run_jobs(jobs, args.workers, "3/3 PPO runs and best-of-n")
    runs = [r for j, r in zip(jobs, results) if j["kind"] in ("ppo", "dpo")]
    bons = [r for j, r in zip(jobs, results) if j["kind"] == "bon"]
    shift = []
    if "rm_shift" in only and "sweep" in only:                # both reward models re-score the sweep's samples
        shift_jobs = [{"kind": "shift", "seed": s, "sft_dir": str(sft_dirs[s]), "name": f"rm shift seed {s}",
                       "rm_paths": {src: str(rm_paths[(s, src, args.pairs)]) for src in ("sft", "grammar")},
                       "runs": [j["path"] for j in jobs if j["kind"] == "ppo" and j["spec"]["experiment"] == "sweep"
                                and j["spec"]["seed"] == s], **common} for s in args.seeds]
        shift = [row for r in run_jobs(shift_jobs, args.workers, "reward models on the policies' samples")
                 for row in r["rows"]]

    # Output files
    data = args.data_dir
    data.mkdir(parents=True, exist_ok=True)
    settings = {"preset": "cpu", "seeds": args.seeds, "iterations": args.iterations, "eval_every": args.eval_every,
                "eval_prompts": cfgs[seeds[0]].eval_prompts, "pairs": args.pairs, "pairs_sizes": args.pairs_sizes,
                "pairs_beta": args.pairs_beta, "betas": args.betas, "kl_target": args.kl_target,
                "kl_horizon": args.kl_horizon, "adaptive_betas": args.adaptive_betas, "broken_lr": args.broken_lr,
                "bon_n": args.bon_n, "bon_samples": args.bon_samples, "answers": str(answers_path.relative_to(REPO))
                if answers_path.is_relative_to(REPO) else answers_path.name,
                "cpu_config": json.loads(json.dumps(asdict(cfgs[seeds[0]]), default=_jsonable))}
    if runs:
        eval_rows, train_rows, dpo_rows = [], [], []
        for r in runs:
            sp = r["spec"]
            ident = {"run": r["name"], "experiment": sp["experiment"], "algo": sp.get("algo", "ppo"),
                     "seed": sp["seed"], "pairs": sp["pairs"],
                     "beta": sp["beta"], "controller": sp["controller"], "lr": sp["lr"], "broken": sp["broken"]}
            eval_rows += [{**ident, **{k: ev[k] for k in ["iteration", *EVAL_KEYS]}} for ev in r["evals"]]
            dpo = sp.get("algo") == "dpo"
            (dpo_rows if dpo else train_rows).extend(
                {"run": r["name"], "iteration": row["iteration"],
                 **{k: _round(row.get(k, math.nan), 4) for k in (DPO_TRAIN_KEYS if dpo else CSV_TRAIN_KEYS)}}
                for row in r["train"])
        write_csv(data / "runs.csv", eval_rows, header)
        write_csv(data / "train_metrics.csv", train_rows, header)
        if dpo_rows:
            write_csv(data / "dpo_metrics.csv", dpo_rows, header)
        examples = {"command": command, "date": date, "sft": {}, "runs": {}}
        for r in runs:
            if r["spec"]["seed"] != seeds[0]:
                continue
            examples["sft"] = r["evals"][0]["samples"]
            examples["runs"][r["name"]] = {"iteration": r["evals"][-1]["iteration"], "samples": r["evals"][-1]["samples"]}
        _write_json(data / "examples.json", examples)
    _write_json(data / "sft.json", {"command": command, "date": date, "seeds": {str(s): sft_records[s] for s in seeds}})
    _write_json(data / "reward_models.json", {"command": command, "date": date, "models": list(rm_records.values()),
                                              "on_policy_samples": shift})
    if bons:
        write_csv(data / "best_of_n.csv", [{"seed": b["seed"], "samples_per_prompt": b["samples_per_prompt"],
                                            "prompts": b["prompts"], **row} for b in bons for row in b["rows"]], header)

    # Summary: the table the pages quote
    seconds = time.perf_counter() - start
    table = []

    def mean_over_seeds(values):
        return float(np.mean(values)) if values else float("nan")

    table.append(("base LM (pretrained)", mean_over_seeds([sft_records[s]["gold_base"] for s in args.seeds]),
                  float("nan"), 0.0))
    table.append(("SFT", mean_over_seeds([sft_records[s]["gold_sft"] for s in args.seeds]), float("nan"), 0.0))
    for beta in args.betas:
        finals = [r["evals"][-1] for r in runs if r["spec"]["experiment"] == "sweep" and r["spec"]["beta"] == beta
                  and r["spec"]["seed"] in args.seeds]
        peaks = [max(r["evals"], key=lambda e: e["gold"]) for r in runs if r["spec"]["experiment"] == "sweep"
                 and r["spec"]["beta"] == beta and r["spec"]["seed"] in args.seeds]
        if finals:
            table.append((f"PPO β={beta:g}, last", mean_over_seeds([e["gold"] for e in finals]),
                          mean_over_seeds([e["proxy"] for e in finals]), mean_over_seeds([e["kl"] for e in finals])))
            table.append((f"PPO β={beta:g}, best gold", mean_over_seeds([e["gold"] for e in peaks]),
                          mean_over_seeds([e["proxy"] for e in peaks]), mean_over_seeds([e["kl"] for e in peaks])))
    for r in runs:
        if r["spec"]["experiment"] in ("pairs", "control", "race"):
            e = r["evals"][-1]
            table.append((r["name"], e["gold"], e["proxy"], e["kl"]))
    for n in args.bon_n if bons else []:
        rows = [row for b in bons for row in b["rows"] if row["n"] == n]
        table.append((f"best-of-{n}", mean_over_seeds([r["gold"] for r in rows]),
                      mean_over_seeds([r["proxy"] for r in rows]), mean_over_seeds([r["kl_analytic"] for r in rows])))
    job_seconds = (sum(r["seconds"] for r in sft_records.values()) + sum(r["seconds"] for r in rm_records.values())
                   + sum(r["seconds"] for r in runs) + sum(b["seconds"] for b in bons))
    summary = {"command": command, "date": date, "seconds": seconds, "workers": args.workers,
               "job_seconds": job_seconds, "settings": settings,
               "table": [{"what": w, "gold": g, "proxy": p, "kl": k} for w, g, p, k in table],
               "reward_models": [{k: v for k, v in rec.items()} for rec in rm_records.values()],
               "run_seconds": {r["name"]: r["seconds"] for r in runs},
               "train_seconds": {r["name"]: r["train_seconds"] for r in runs if "train_seconds" in r},
               "bon_seconds": {str(b["seed"]): b["seconds"] for b in bons}}
    _write_json(data / "summary.json", summary)
    print(f"\n{'':34} {'gold':>7} {'proxy':>7} {'KL nats':>8}")
    for w, g, p, k in table:
        print(f"{w:34} {g:+7.2f} {p:+7.2f} {k:8.2f}")
    print("\nreward models (held-out accuracy against gold):")
    for rec in rm_records.values():
        print(f"  seed {rec['seed']} {rec['source']:7} {rec['pairs']:5d} pairs: on SFT-sample pairs "
              f"{rec['gold_acc_sft_pairs']:.3f}, on grammar pairs {rec['gold_acc_grammar_pairs']:.3f}")
    print(f"\n{seconds / 60:.1f} min with {args.workers} workers ({job_seconds / 60:.0f} min of jobs, cached ones "
          f"counted as when they ran); data in {data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
