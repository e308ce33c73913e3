"""Plausible mistakes in the RLHF update-rules exercise; each must cost points when graded.

WRONG maps a student name to (answer cell grade_id, text in the solution, replacement, the mistake).
"""
NOTEBOOK = "rlhf_update_rules"
FULL_SCORE = 15.0

W, PG = "rlhf_weight_update", "rlhf_policy_gradient"

WRONG = {
    "w_kl_sign": (W, "policy_log_probs - ref_log_probs", "ref_log_probs - policy_log_probs", "KL reversed"),
    "w_sum": (W, ".mean(axis=0)", ".sum(axis=0)", "sum instead of mean over samples"),
    "w_descent": (W, "return weights + lr * gradient", "return weights - lr * gradient", "descent, not ascent"),
    "w_no_kl": (W, "rewards - beta * kl", "rewards", "KL penalty dropped"),
    "w_in_place": (W, "return weights + lr * gradient", "weights += lr * gradient\n    return weights",
                   "mutates the caller's weights"),
    "w_mean_of_means": (W, "(adjusted_rewards[:, None] * log_prob_grads).mean(axis=0)",
                        "adjusted_rewards.mean() * log_prob_grads.mean(axis=0)", "mean of product ≠ product of means"),
    "pg_identical_branches": (PG, "np.where(clipped, 0.0, -advantages * ratios / n)",
                              "np.where(clipped, -advantages * ratios / n, -advantages * ratios / n)",
                              "the published solution's identical-branch gradient"),
    "pg_sample_std": (PG, "rewards.std()", "rewards.std(ddof=1)", "sample instead of population std"),
    "pg_no_ratio": (PG, "-advantages * ratios / n)", "-advantages / n)", "chain rule through the ratio forgotten"),
    "pg_ascent": (PG, "log_probs - lr * grad", "log_probs + lr * grad", "update adds the loss gradient"),
    "pg_clip_reversed": (PG, "((advantages > 0) & (ratios > 1 + clip_epsilon)) | ((advantages < 0) & (ratios < 1 - clip_epsilon))",
                         "((advantages > 0) & (ratios < 1 - clip_epsilon)) | ((advantages < 0) & (ratios > 1 + clip_epsilon))",
                         "zeroes the gradient on the wrong side of the band"),
    "pg_upper_only": (PG, " | ((advantages < 0) & (ratios < 1 - clip_epsilon))", "", "only the A > 0 side is clipped"),
    "pg_clip_ratio_only": (PG, "((advantages > 0) & (ratios > 1 + clip_epsilon)) | ((advantages < 0) & (ratios < 1 - clip_epsilon))",
                           "(ratios > 1 + clip_epsilon) | (ratios < 1 - clip_epsilon)",
                           "zeroes the gradient whenever the ratio leaves the band, whatever the sign of A"),
    "pg_no_mean": (PG, "-advantages * ratios / n)", "-advantages * ratios)", "gradient of the sum, not the mean"),
    "pg_loss_sign": (PG, "loss = -np.mean(", "loss = np.mean(", "loss sign flipped"),
    "pg_unstandardised": (PG, "(rewards - rewards.mean()) / (rewards.std() + 1e-8)", "rewards - rewards.mean()",
                          "advantages not divided by the std"),
}
