"""Plausible mistakes in the policy-gradient exercise; each must cost points when graded.

WRONG maps a student name to (answer cell grade_id, text in the solution, replacement, the mistake).
"""
NOTEBOOK = "policy_gradient"
FULL_SCORE = 17.0
FUNCTIONS = ["reward_to_go", "grad_log_softmax", "reinforce_gradient"]

RTG, GLS, RG = "reward_to_go", "grad_log_softmax", "reinforce_gradient"

_RTG_LOOP = """    running = 0.0                                             # G_T = 0: nothing after the end
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running                # eq-pg-rtg-recursion
        returns[t] = running"""

WRONG = {
    # reward_to_go
    "rtg_discount_from_start": (RTG, _RTG_LOOP,
                                "    returns = np.cumsum((gamma ** np.arange(len(rewards)) * rewards)[::-1])[::-1]",
                                "gamma**k from the start of the episode instead of gamma**(k - t)"),
    "rtg_forward_cumsum": (RTG, "reversed(range(len(rewards)))", "range(len(rewards))",
                           "sums the past rewards (loop forwards)"),
    "rtg_excludes_r_t": (RTG, """        running = rewards[t] + gamma * running                # eq-pg-rtg-recursion
        returns[t] = running""", """        returns[t] = running
        running = rewards[t] + gamma * running""", "off by one: G_t leaves out r_t"),
    "rtg_no_gamma": (RTG, "rewards[t] + gamma * running", "rewards[t] + running", "ignores the discount"),
    "rtg_in_place": (RTG, "returns = np.zeros_like(rewards)", "returns = rewards",
                     "writes the returns into the caller's rewards array"),
    "rtg_int_dtype": (RTG, "rewards = np.asarray(rewards, dtype=float)", "rewards = np.asarray(rewards)",
                      "integer rewards give a truncated integer result"),
    # grad_log_softmax
    "gls_sign": (GLS, "grad = -probs\n    grad[action] += 1.0", "grad = probs.copy()\n    grad[action] -= 1.0",
                 "softmax - onehot: the sign is flipped"),
    "gls_unstable": (GLS, "shifted = logits - logits.max()", "shifted = logits",
                     "exp overflows for large logits"),
    "gls_no_softmax": (GLS, "grad = -probs\n", "grad = -logits.copy()\n", "onehot - logits: softmax missing"),
    "gls_log_softmax": (GLS, "grad = -probs\n", "grad = -(shifted - np.log(np.exp(shifted).sum()))\n",
                        "subtracts the log-probabilities instead of the probabilities"),
    "gls_unnormalised": (GLS, "probs = np.exp(shifted) / np.exp(shifted).sum()", "probs = np.exp(shifted)",
                         "exponentials not normalised"),
    # reinforce_gradient
    "rg_sum": (RG, ".mean(axis=0)", ".sum(axis=0)", "sum over samples instead of the mean"),
    "rg_baseline_ignored": (RG, "dtype=float) - baseline", "dtype=float)", "baseline ignored"),
    "rg_baseline_added": (RG, "dtype=float) - baseline", "dtype=float) + baseline", "baseline added, not subtracted"),
    "rg_wrong_axis": (RG, "(weights[:, None] * log_prob_grads).mean(axis=0)",
                      "(log_prob_grads * weights[:, None]).mean(axis=1)",
                      "averages over the parameters instead of the samples"),
    "rg_mean_of_means": (RG, "(weights[:, None] * log_prob_grads).mean(axis=0)",
                         "weights.mean() * log_prob_grads.mean(axis=0)", "mean of product ≠ product of means"),
}
