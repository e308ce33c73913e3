"""Calibrate the graded bandit micro-run of the policy-gradient exercise.

Runs the notebook's own micro-run (its read-only setup cell) with the reference solution's functions
and with broken ones, over many seeds, and prints the best arm's probability after MICRO_STEPS steps.
The graded test requires >= MICRO_THRESHOLD on seeds 0..9 (0..4 visible, 5..9 hidden); this table
shows the margin.

    .venv/bin/python scripts/calibrate_bandit_microrun.py [--seeds 20]

The solution functions are taken from the answer cells of solutions/policy_gradient/policy_gradient.ipynb
(with the ### BEGIN/END SOLUTION lines stripped), so the table always describes the current notebook.
"""
import argparse
import time
from pathlib import Path

import nbformat
import numpy as np

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions/policy_gradient/policy_gradient.ipynb"


def load_cells(names):
    """Execute the named cells (by nbgrader grade_id) of the solution notebook in one namespace."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in nb.cells}
    namespace = {}
    for name in names:
        source = "\n".join(ln for ln in by_id[name].splitlines()
                           if "### BEGIN SOLUTION" not in ln and "### END SOLUTION" not in ln)
        exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


def broken_variants(ns):
    """name -> (grad_log_softmax, reinforce_gradient) with one deliberate mistake (or none)."""
    gls, rg = ns["grad_log_softmax"], ns["reinforce_gradient"]

    def gls_sign(logits, action):                 # softmax - onehot
        return -gls(logits, action)

    def gls_no_softmax(logits, action):           # onehot - logits
        grad = -np.array(logits, dtype=float)
        grad[action] += 1.0
        return grad

    def rg_baseline_added(g, G, b=0.0):
        return rg(g, G, -np.asarray(b))

    def rg_sum(g, G, b=0.0):
        return len(G) * rg(g, G, b)

    def rg_mean_of_means(g, G, b=0.0):
        return (np.asarray(G) - b).mean() * np.asarray(g).mean(axis=0)

    return {
        "reference solution": (gls, rg),
        "score sign flipped": (gls_sign, rg),
        "score missing softmax": (gls_no_softmax, rg),
        "baseline added": (gls, rg_baseline_added),
        "sum instead of mean": (gls, rg_sum),
        "mean of means": (gls, rg_mean_of_means),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (the graded test uses 0..9); N >= 10")
    args = parser.parse_args()
    ns = load_cells(["imports", "reward_to_go", "grad_log_softmax", "reinforce_gradient", "microrun_setup"])
    steps, threshold = ns["MICRO_STEPS"], ns["MICRO_THRESHOLD"]
    print(f"bandit means {ns['BANDIT_MEANS']}, std 1, {steps} steps x {ns['MICRO_BATCH']} pulls, "
          f"lr {ns['MICRO_LR']}, threshold {threshold}; graded seeds 0..9\n")
    print(f"{'variant':<24}{'sanity':>8}{'min':>8}{'median':>8}{'max':>8}{'graded 0..9 min':>17}"
          f"{'pass':>6}{'s/run':>8}")
    variants = broken_variants(ns)
    for name, (gls, rg) in variants.items():
        ns["grad_log_softmax"], ns["reinforce_gradient"] = gls, rg   # the setup cell looks them up here
        try:
            ns["sanity_check_pg_functions"]()
            sanity = "ok"
        except AssertionError:
            sanity = "FAIL"
        start = time.perf_counter()
        final = np.array([ns["train_bandit_reinforce"](seed)[-1] for seed in range(args.seeds)])
        per_run = (time.perf_counter() - start) / args.seeds
        graded = final[:10].min()
        passes = sanity == "ok" and graded >= threshold
        print(f"{name:<24}{sanity:>8}{final.min():>8.3f}{np.median(final):>8.3f}{final.max():>8.3f}"
              f"{graded:>17.3f}{'yes' if passes else 'no':>6}{per_run:>8.3f}")
    # With the batch-mean baseline, sum_i (G_i - b) = 0, so any score of the form e_a - c (c the same for
    # every sample: softmax, or the logits) gives the same update: only the sanity check can catch it.
    print("\n'missing softmax' trains exactly like the reference (batch-mean baseline cancels the subtracted"
          " vector); the sanity check is what fails it.")
    print("\nper-seed, reference solution:")
    ns["grad_log_softmax"], ns["reinforce_gradient"] = variants["reference solution"]
    print(" ".join(f"{s}:{ns['train_bandit_reinforce'](s)[-1]:.3f}" for s in range(args.seeds)))


if __name__ == "__main__":
    main()
