"""Plausible mistakes in the beyond-PPO exercise (DPO, RLOO, GRPO); each must cost points when graded.

WRONG maps a student name to (answer cell grade_id, text in the solution, replacement, the mistake).
"""
NOTEBOOK = "beyond_ppo"
FULL_SCORE = 15.0
FUNCTIONS = ["dpo_loss", "rloo_advantages", "group_advantages", "grpo_loss"]

DPO, RLOO, GROUP, GRPO = FUNCTIONS

WRONG = {
    # dpo_loss
    "dpo_ref_signs_swapped": (DPO, "beta * ((pi_c - ref_c) - (pi_r - ref_r))",
                              "beta * ((pi_c + ref_c) - (pi_r + ref_r))",
                              "the margin with the reference terms' signs swapped: (π_c + ref_c) − (π_r + ref_r)"),
    "dpo_naive_sigmoid": (DPO, "np.logaddexp(0.0, -margins)", "-np.log(1 / (1 + np.exp(-margins)))",
                          "σ computed as 1/(1 + exp(−z)): exp overflows at z = −1000, the loss is inf"),
    "dpo_log1p_exp": (DPO, "np.logaddexp(0.0, -margins)", "np.log1p(np.exp(-margins))",
                      "log1p(exp(−z)): right for small margins, overflows at z = −1000"),
    "dpo_loss_sign": (DPO, "np.logaddexp(0.0, -margins)", "np.logaddexp(0.0, margins)",
                      "−log σ(−z): the loss prefers the rejected response"),
    "dpo_sum": (DPO, "float(np.mean(losses))", "float(np.sum(losses))", "the loss summed over the batch, not averaged"),
    "dpo_rewards_no_beta": (DPO, "= beta * (pi_", "= (pi_", "implicit rewards without β: log π − log π_ref"),
    "dpo_no_beta_in_margin": (DPO, "margins = beta * ((pi_c - ref_c) - (pi_r - ref_r))",
                              "margins = ((pi_c - ref_c) - (pi_r - ref_r))", "β left out of the margin inside σ"),
    # rloo_advantages
    "rloo_includes_self": (RLOO, "(groups.sum(axis=1, keepdims=True) - groups) / (k - 1)",
                           "groups.mean(axis=1, keepdims=True)",
                           "the group mean INCLUDING the sample: every advantage (k − 1)/k too small"),
    "rloo_divide_by_k": (RLOO, "/ (k - 1)", "/ k", "the sum of the other k − 1 rewards divided by k"),
    "rloo_batch_baseline": (RLOO, "(groups.sum(axis=1, keepdims=True) - groups) / (k - 1)",
                            "(groups.sum() - groups) / (groups.size - 1)",
                            "leave-one-out over the whole batch instead of the prompt's group"),
    "rloo_sign": (RLOO, "groups - baseline", "baseline - groups", "baseline minus reward: every sign flipped"),
    "rloo_no_k_check": (RLOO, "if k < 2:", "if k < 1:", "k = 1 accepted: a baseline of 0/0 = NaN, no ValueError"),
    "rloo_in_place": (RLOO, "return (groups - baseline).reshape(-1)",
                      "groups -= baseline\n    return groups.reshape(-1)",
                      "subtracts in place through a view: the caller's rewards change"),
    # group_advantages
    "group_population_std": (GROUP, "ddof=1", "ddof=0", "population std (ddof = 0) instead of Bessel's correction"),
    "group_batch_mean": (GROUP, "mean = groups.mean(axis=1, keepdims=True)", "mean = groups.mean()",
                         "the mean over the whole batch instead of each group's"),
    "group_batch_std": (GROUP, "groups.std(axis=1, ddof=1, keepdims=True)", "groups.std(ddof=1)",
                        "the std over the whole batch instead of each group's"),
    "group_no_eps": (GROUP, "(std + eps)", "std", "no ε: a group of equal rewards gives 0/0 = NaN"),
    "group_eps_in_sqrt": (GROUP, "(std + eps)", "np.sqrt(std ** 2 + eps)", "ε added to the variance under the root"),
    # grpo_loss
    "grpo_k3_reversed": (GRPO, "log_ratio_ref = ref_log_probs - log_probs", "log_ratio_ref = log_probs - ref_log_probs",
                         "k3 with log r = log π − log π_ref: the estimator of KL(π_ref‖π)"),
    "grpo_kl_rewarded": (GRPO, "-surrogate + beta * k3", "-surrogate - beta * k3", "the KL subtracted from the loss"),
    "grpo_ratio_to_ref": (GRPO, "torch.exp(log_probs - old_log_probs)", "torch.exp(log_probs - ref_log_probs)",
                          "the ratio to π_ref instead of to π_old, the policy that sampled"),
    "grpo_padding_counted": (GRPO, "return (per_token * mask).sum() / mask.sum()", "return per_token.mean()",
                             "token-mean over every slot, padding included"),
    "grpo_aggregation_ignored": (GRPO, "((per_token * mask).sum(-1) / mask.sum(-1)).mean()",
                                 "(per_token * mask).sum() / mask.sum()", "sequence-mean computed as token-mean"),
    "grpo_adv_not_broadcast": (GRPO, "adv = advantages[:, None]", "adv = advantages",
                               "advantages (B,) broadcast against the last axis (T) instead of per response"),
    "grpo_ratio_detached": (GRPO, "ratio = torch.exp(log_probs - old_log_probs)",
                            "ratio = torch.exp((log_probs - old_log_probs).detach())",
                            "the ratio detached: right values, no policy gradient through the surrogate"),
}
