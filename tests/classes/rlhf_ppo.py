"""Plausible mistakes in the RLHF-with-PPO exercise; each must cost points when graded.

WRONG maps a student name to (answer cell grade_id, text in the solution, replacement, the mistake).
"""
NOTEBOOK = "rlhf_ppo"
FULL_SCORE = 16.0
FUNCTIONS = ["kl_estimates", "per_token_rewards", "AdaptiveKLController", "masked_mean", "masked_whiten",
             "response_log_probs"]

KL, REW, CTL, MEAN, WHITEN, LOGP = FUNCTIONS

WRONG = {
    # kl_estimates
    "kl_k1_sign": (KL, "k1 = -logr", "k1 = logr", "k1 with the sign of log r: minus the KL on average"),
    "kl_k3_inverse_ratio": (KL, "k3 = (np.exp(logr) - 1) - logr", "k3 = (np.exp(-logr) - 1) + logr",
                            "k3 with e^{-log r} = π/π_ref: the estimator of the other KL direction"),
    "kl_k2_no_half": (KL, "k2 = 0.5 * logr ** 2", "k2 = logr ** 2", "k2 without the ½"),
    "kl_logr_reversed": (KL, "logr = ref_log_probs - log_probs", "logr = log_probs - ref_log_probs",
                         "log r = log π − log π_ref, the reverse of the definition"),
    "kl_k3_no_minus_one": (KL, "k3 = (np.exp(logr) - 1) - logr", "k3 = np.exp(logr) - logr",
                           "k3 without the −1 (off by one everywhere)"),
    # per_token_rewards
    "rew_kl_on_padding": (REW, "np.where(mask > 0, -kl_coef * kl, 0.0)", "-kl_coef * kl",
                          "KL penalty charged on padded positions too"),
    "rew_score_at_minus_one": (REW, "rewards[np.arange(len(last)), last] += scores", "rewards[:, -1] += scores",
                               "score at the last column instead of the last real token"),
    "rew_score_everywhere": (REW, "rewards[np.arange(len(last)), last] += scores",
                             "rewards += scores[:, None] * mask", "score added on every real token"),
    "rew_plus_kl": (REW, "np.where(mask > 0, -kl_coef * kl, 0.0)", "np.where(mask > 0, kl_coef * kl, 0.0)",
                    "+β·KL: rewards drifting away from the reference"),
    "rew_mask_multiply": (REW, "np.where(mask > 0, -kl_coef * kl, 0.0)", "-kl_coef * kl * mask",
                          "padding removed by multiplying with the mask: NaN/inf padding gives NaN (nan · 0)"),
    "rew_score_overwrites": (REW, "rewards[np.arange(len(last)), last] += scores",
                             "rewards[np.arange(len(last)), last] = scores",
                             "the score replaces the last token's KL penalty instead of adding to it"),
    # AdaptiveKLController
    "ctl_unclipped": (CTL, "np.clip(current_kl / self.target - 1, -0.2, 0.2)", "(current_kl / self.target - 1)",
                      "proportional error not clipped"),
    "ctl_additive": (CTL, "self.value *= mult", "self.value += proportional_error * n_steps / self.horizon",
                     "additive instead of multiplicative update"),
    "ctl_ignores_n_steps": (CTL, "proportional_error * n_steps / self.horizon", "proportional_error / self.horizon",
                            "update does not scale with n_steps"),
    "ctl_clip_01": (CTL, "-0.2, 0.2)", "-0.1, 0.1)", "error clipped at ±0.1 instead of ±0.2"),
    "ctl_sign": (CTL, "np.clip(current_kl / self.target - 1, -0.2, 0.2)",
                 "np.clip(1 - current_kl / self.target, -0.2, 0.2)", "lowers β when the KL is above target"),
    # masked_mean
    "mean_all_entries": (MEAN, "float(np.sum(np.where(mask > 0, x, 0.0)) / np.sum(mask))", "float(np.mean(x))",
                         "mean over all entries, padding included"),
    "mean_divide_by_size": (MEAN, "/ np.sum(mask))", "/ mask.size)", "masked sum divided by the number of entries"),
    "mean_sum": (MEAN, "float(np.sum(np.where(mask > 0, x, 0.0)) / np.sum(mask))",
                 "float(np.sum(np.where(mask > 0, x, 0.0)))", "masked sum, not mean"),
    "mean_mask_multiply": (MEAN, "np.sum(np.where(mask > 0, x, 0.0))", "np.sum(x * mask)",
                           "padding removed by multiplying with the mask: NaN/inf padding gives NaN"),
    "mean_per_row": (MEAN, "/ np.sum(mask))", "/ mask.shape[0])", "sum per sequence averaged over rows"),
    # masked_whiten
    "whiten_sample_var": (WHITEN, "var = masked_mean((x - mean) ** 2, mask)",
                          "var = masked_mean((x - mean) ** 2, mask) * np.sum(mask) / (np.sum(mask) - 1)",
                          "sample variance (ddof = 1) instead of the population variance"),
    "whiten_stats_over_padding": (WHITEN, "mean = masked_mean(x, mask)", "mean = float(np.mean(x))",
                                  "mean taken over the padding too"),
    "whiten_no_add_back": (WHITEN, "whitened += mean", "pass", "shift_mean=False does not add the mean back"),
    "whiten_no_zero_pads": (WHITEN, "return np.where(mask > 0, whitened, 0.0)", "return whitened",
                            "padded positions not zeroed"),
    "whiten_std_no_sqrt": (WHITEN, "np.sqrt(var + 1e-8)", "(var + 1e-8)", "divides by the variance, not the std"),
    # response_log_probs
    "logp_off_by_one": (LOGP, "logits[:, context_length - 1 : -1] / temperature",
                        "logits[:, context_length:] / temperature", "logits of position ctx + t used for token t"),
    "logp_no_temperature": (LOGP, "logits[:, context_length - 1 : -1] / temperature",
                            "logits[:, context_length - 1 : -1]", "temperature ignored"),
    "logp_no_log_softmax": (LOGP, "torch.log_softmax(logits, dim=-1)", "logits", "raw logits gathered, never normalised"),
    "logp_wrong_tokens": (LOGP, "response.unsqueeze(-1)", "input_ids[:, context_length - 1 : -1].unsqueeze(-1)",
                          "gathers the previous token instead of the response token"),
    "logp_softmax_log": (LOGP, "torch.log_softmax(logits, dim=-1)", "torch.softmax(logits, dim=-1).log()",
                         "log of softmax: NaN gradients where a probability is 0 (the pad's −inf logit)"),
    "logp_temperature_after": (LOGP, "logits = logits[:, context_length - 1 : -1] / temperature                # (B, R, V): token t predicted at ctx-1+t\n    log_probs = torch.log_softmax(logits, dim=-1)",
                               "logits = logits[:, context_length - 1 : -1]\n    log_probs = torch.log_softmax(logits, dim=-1) / temperature",
                               "temperature applied after log_softmax"),
    "logp_times_temperature": (LOGP, "/ temperature", "* temperature", "logits multiplied by the temperature"),
}
