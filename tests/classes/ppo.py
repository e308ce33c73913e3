"""Plausible mistakes in the PPO exercise; each must cost points when graded.

WRONG maps a student name to (answer cell grade_id, text in the solution, replacement, the mistake).
"""
NOTEBOOK = "ppo"
FULL_SCORE = 15.0
FUNCTIONS = ["ppo_clip_loss", "ppo_clip_grad", "compute_gae", "categorical_entropy"]

L, G, GAE, H = FUNCTIONS

WRONG = {
    # ppo_clip_loss
    "loss_max": (L, "np.minimum(unclipped, clipped)", "np.maximum(unclipped, clipped)", "max instead of min"),
    "loss_no_minus": (L, "float(-np.mean(", "float(np.mean(", "objective returned instead of the loss"),
    "loss_clip_advantage": (L, "np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * advantages",
                            "ratio * np.clip(advantages, 1 - clip_eps, 1 + clip_eps)", "clips the advantage, not the ratio"),
    "loss_clip_logratio": (L, "np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * advantages",
                           "np.exp(np.clip(log_probs - old_log_probs, -clip_eps, clip_eps)) * advantages",
                           "clips the log-ratio to ±ε"),
    "loss_sum": (L, "float(-np.mean(", "float(-np.sum(", "sum instead of mean"),
    # ppo_clip_grad
    "grad_identical_branches": (G, "np.where(clipped, 0.0, -advantages * ratio / len(ratio))",
                                "np.where(clipped, -advantages * ratio / len(ratio), -advantages * ratio / len(ratio))",
                                "the published identical-branch gradient: never zero"),
    "grad_wrong_side": (G, "((advantages > 0) & (ratio > 1 + clip_eps)) | ((advantages < 0) & (ratio < 1 - clip_eps))",
                        "((advantages > 0) & (ratio < 1 - clip_eps)) | ((advantages < 0) & (ratio > 1 + clip_eps))",
                        "zero on the wrong side of the band"),
    "grad_no_ratio": (G, "-advantages * ratio / len(ratio))", "-advantages / len(ratio))",
                      "chain rule through the ratio forgotten"),
    "grad_no_mean": (G, "-advantages * ratio / len(ratio))", "-advantages * ratio)", "missing 1/N"),
    "grad_sign": (G, "-advantages * ratio / len(ratio))", "advantages * ratio / len(ratio))",
                  "gradient of the objective, not of the loss"),
    "grad_outside_band": (G, "((advantages > 0) & (ratio > 1 + clip_eps)) | ((advantages < 0) & (ratio < 1 - clip_eps))",
                          "(ratio > 1 + clip_eps) | (ratio < 1 - clip_eps)",
                          "zero whenever the ratio leaves the band, whatever the sign of A"),
    # compute_gae
    "gae_bootstrap_unmasked": (GAE, "gamma * next_value * nonterminal", "gamma * next_value",
                               "no (1 - done) mask on the bootstrap"),
    "gae_recursion_unmasked": (GAE, "gamma * lam * nonterminal * lastgaelam", "gamma * lam * lastgaelam",
                               "mask on the bootstrap but not on the accumulation"),
    "gae_no_gamma_in_recursion": (GAE, "gamma * lam * nonterminal * lastgaelam", "lam * nonterminal * lastgaelam",
                                  "γ missing from the recursion"),
    "gae_forward": (GAE, "for t in reversed(range(T)):", "for t in range(T):", "forward instead of backward recursion"),
    "gae_returns_are_advantages": (GAE, "returns = advantages + values", "returns = advantages + 0 * values",
                                   "returns without + values"),
    "gae_next_done": (GAE, "nonterminal = 1.0 - dones[t]", "nonterminal = 1.0 - (dones[t + 1] if t < T - 1 else 0.0)",
                      "CleanRL's dones[t+1] convention applied to this notebook's dones[t] = episode ended at t"),
    "gae_swapped": (GAE, "gamma * lam * nonterminal * lastgaelam", "lam * lam * nonterminal * lastgaelam",
                    "λ in place of γ in the recursion"),
    # categorical_entropy
    "entropy_no_minus": (H, "return -(p * log_p).sum(axis=-1)", "return (p * log_p).sum(axis=-1)",
                         "the blog's missing minus sign"),
    "entropy_unstable": (H, "z = logits - logits.max(axis=-1, keepdims=True)", "z = logits",
                         "no max shift: overflows for large logits"),
    "entropy_log2": (H, "return -(p * log_p).sum(axis=-1)", "return -(p * log_p / np.log(2)).sum(axis=-1)",
                     "bits (log2) instead of nats"),
    "entropy_wrong_axis": (H, "return -(p * log_p).sum(axis=-1)", "return -(p * log_p).sum(axis=0)",
                           "sums over the first axis"),
    "entropy_log_of_probs": (H, "log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))",
                             "log_p = np.log(np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True))",
                             "log of probabilities that underflow to 0 (nan for one-hot logits)"),
}
