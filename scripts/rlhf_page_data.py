"""Chapter 4's graded functions at work, computed once from the reference answers: book/rlhf/data/.

Two pages of chapter 4 show the exercise's functions at work: masked means and whitening
(book/rlhf/logprobs_values.md), the adaptive KL controller and a short PPO-RLHF run
(book/rlhf/ppo_iteration.md). They read what this script writes instead of executing the solution
notebook, so that the book builds, and every page runs, in the student edition
(`python -m autograder export-student`), which has no solutions/. Run from anywhere:

    .venv/bin/python scripts/rlhf_page_data.py       # ≈ 15 s on 2 cores; rewrites the three files

    masked_stats.json   masked_mean of one batch under more and more padding; masked_whiten's statistics
    adaptive_kl.json    the page's toy KL model under a fixed β and under AdaptiveKLController, for every
                        setting of the page's explorer (β₀ × target × horizon)
    ppo_run.json        ten PPO-RLHF iterations on the tiny GPT-2: every logged metric, and six prompts'
                        responses before and after

Each file records ``answers_sha256``, the fingerprint of the solution's answer cells it was made with:
tests/test_edition.py fails when the solution has changed since (rerun this script), and recomputes the
first two files, which take milliseconds, to check them value by value.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))          # run as a script: the course's packages, not an installed copy
from rlhf_course.answers import answer_cells, load_answers  # noqa: E402

NOTEBOOK = REPO / "solutions/rlhf_ppo/rlhf_ppo.ipynb"
OUT = REPO / "book/rlhf/data"
GRADED = ["response_log_probs", "per_token_rewards", "masked_mean", "masked_whiten", "kl_estimates",
          "AdaptiveKLController"]

# The explorer of ppo_iteration.md offers exactly these values (its sliders step through them).
BETA0 = [0.05, 0.15, 0.5]
TARGETS = [3.0, 6.0, 9.0, 12.0]
HORIZONS = [1_000, 2_000, 5_000, 10_000, 20_000, 50_000]
TOY = dict(n_iters=300, batch=512, c=0.6, alpha=0.05, seed=0)
"""The toy KL model: KL relaxes towards c / β with lag alpha and noise (ppo_iteration.md's equation)."""
EVERY = 3
"""Traces keep every 3rd iteration: 100 points draw the same lines, and the file stays ≈ 100 kB."""


def answers_sha256(notebook: Path = NOTEBOOK) -> str:
    """Fingerprint of a notebook's answer cells: what the data depends on, and nothing else."""
    return hashlib.sha256(json.dumps(answer_cells(notebook)).encode()).hexdigest()


def _round(x, digits: int = 4):
    """Floats (also inside lists and dicts) to `digits` significant digits: plenty for a figure or a table."""
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_round(v, digits) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(f"{float(x):.{digits}g}")
    return x.item() if isinstance(x, np.generic) else x


# ------------------------------------------------------------------------------ logprobs_values.md
def masked_stats(fns: dict) -> dict:
    """masked_mean of one (4, 6) batch with 0..24 padded columns appended; masked_whiten's two variants."""
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 0.5, size=(4, 6))                  # (B, T) rewards
    mask = np.ones((4, 6))
    mask[1, 4:] = mask[2, 3:] = 0                          # two shorter responses
    means = []
    for extra in range(25):
        xe = np.concatenate([np.where(mask > 0, x, 0.0), np.zeros((4, extra))], 1)
        me = np.concatenate([mask, np.zeros((4, extra))], 1)
        means.append(fns["masked_mean"](xe, me))
    real = mask > 0
    adv = fns["masked_whiten"](x, mask)
    rew = fns["masked_whiten"](x, mask, shift_mean=False)
    return {"x": x.tolist(), "mask": mask.tolist(), "masked_mean": _round(means, 8),
            "whiten": _round({"advantages_mean": adv[real].mean(), "advantages_std": adv[real].std(),
                              "rewards_mean": rew[real].mean(), "rewards_std": rew[real].std(),
                              "raw_mean": x[real].mean()}, 6)}


# -------------------------------------------------------------------------------- ppo_iteration.md
def simulate_kl(beta0: float, controller=None, n_iters=300, batch=512, c=0.6, alpha=0.05, seed=0):
    """The toy KL trace: KL relaxes towards c / β, with lag and noise; β fixed or set by `controller`.

    Returns:
        kls, betas: (n_iters,) lists; betas[n] is the β in force during iteration n.
    """
    rng = np.random.default_rng(seed)
    beta, kl, kls, betas = beta0, 0.0, [], []
    for _ in range(n_iters):
        kl = max(0.0, kl + alpha * (c / beta - kl) + rng.normal(scale=0.03 * (1 + kl)))
        kls.append(kl)
        betas.append(beta)
        if controller is not None:
            controller.update(kl, batch)
            beta = controller.value
    return kls, betas


def adaptive_kl(fns: dict) -> dict:
    """Toy traces under a fixed β (one per β₀) and under the controller (one per β₀ × target × horizon)."""
    fixed = {str(b): _round(simulate_kl(b, **TOY)[0][::EVERY], 3) for b in BETA0}
    adaptive = {}
    for b in BETA0:
        for target in TARGETS:
            for horizon in HORIZONS:
                kls, betas = simulate_kl(b, fns["AdaptiveKLController"](b, target, horizon), **TOY)
                adaptive[f"{b}/{target:g}/{horizon}"] = {"kl": _round(kls[::EVERY], 3),
                                                         "beta": _round(betas[::EVERY])}
    return {"toy": TOY, "every": EVERY, "beta0": BETA0, "target": TARGETS, "horizon": HORIZONS,
            "fixed": fixed, "adaptive": adaptive}


def ppo_run(fns: dict, n_iterations: int = 10) -> dict:
    """Ten PPO-RLHF iterations on the tiny GPT-2 with the reference answers (the page shows the same call)."""
    import torch

    from rlhf_course.rlhf_ppo import RLHFConfig, make_rlhf_state, ppo_rlhf_iteration
    from rlhf_course.textworld import sample_prompts
    from rlhf_course.tiny_lm import generate_responses

    cfg = RLHFConfig(seed=0, batch_size=16, response_length=16)
    controller = fns["AdaptiveKLController"](cfg.init_kl_coef, cfg.kl_target, cfg.kl_horizon)
    state = make_rlhf_state(cfg, controller, policy="tiny")
    graded = {k: fns[k] for k in GRADED if k != "AdaptiveKLController"}
    prompts = sample_prompts(6, seed=123)

    def sample():
        with torch.no_grad():
            out = generate_responses(state.policy, state.tokenizer, prompts, max_new_tokens=cfg.response_length,
                                     temperature=cfg.temperature, seed=7)
        return out["responses"]

    before = sample()
    start = time.perf_counter()
    for _ in range(n_iterations):
        ppo_rlhf_iteration(state, cfg, **graded)
    seconds = time.perf_counter() - start
    model = re.sub(r", /.*\)$", ")", state.description)     # "tiny (1.09 M params)": no local cache path
    return {"iterations": n_iterations, "batch_size": cfg.batch_size, "seconds": round(seconds, 1),
            "model": model, "history": _round(state.history, 6), "prompts": prompts, "before": before,
            "after": sample()}


# ---------------------------------------------------------------------------------------- output
def dumps(obj) -> str:
    """JSON, indented, with every list of plain numbers on one line (a trace is one line, not 300)."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    flat = lambda m: "[" + re.sub(r",\s+", ", ", m.group(1).strip()) + "]"  # noqa: E731
    return re.sub(r"\[([-\d.eE+,\s]*)\]", flat, text) + "\n"


def main() -> int:
    fns = load_answers(NOTEBOOK, GRADED)
    made = {"made_by": "scripts/rlhf_page_data.py", "answers_sha256": answers_sha256()}
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in (("masked_stats", masked_stats), ("adaptive_kl", adaptive_kl), ("ppo_run", ppo_run)):
        start = time.perf_counter()
        (OUT / f"{name}.json").write_text(dumps({**made, **make(fns)}))
        print(f"wrote {(OUT / f'{name}.json').relative_to(REPO)} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
