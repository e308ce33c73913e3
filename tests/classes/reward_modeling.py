"""Plausible mistakes in the reward-modeling exercise; each must cost points when graded.

WRONG maps a student name to (answer cell grade_id, text in the solution, replacement, the mistake).
"""
NOTEBOOK = "reward_modeling"
FULL_SCORE = 15.0
FUNCTIONS = ["bradley_terry_loss", "kwise_ranking_loss", "RewardModel"]

BT, KW, RM = FUNCTIONS

WRONG = {
    # bradley_terry_loss
    "bt_log_likelihood": (BT, "return float(np.mean(np.logaddexp(0.0, -margin)))",
                          "return float(-np.mean(np.logaddexp(0.0, -margin)))",
                          "returns log σ (the log-likelihood), not the loss −log σ"),
    "bt_sigmoid_not_log": (BT, "return float(np.mean(np.logaddexp(0.0, -margin)))",
                           "return float(np.mean(1.0 - 1.0 / (1.0 + np.exp(-margin))))",
                           "1 − σ(margin) instead of −log σ(margin)"),
    "bt_unstable": (BT, "return float(np.mean(np.logaddexp(0.0, -margin)))",
                    "return float(np.mean(-np.log(1.0 / (1.0 + np.exp(-margin)))))",
                    "−log(1/(1+e^−m)): inf for a margin of −1000"),
    "bt_sum": (BT, "return float(np.mean(np.logaddexp(0.0, -margin)))",
               "return float(np.sum(np.logaddexp(0.0, -margin)))", "sum instead of mean"),
    "bt_swapped": (BT, "margin = chosen - rejected", "margin = rejected - chosen", "chosen and rejected swapped"),
    "bt_log2": (BT, "return float(np.mean(np.logaddexp(0.0, -margin)))",
                "return float(np.mean(np.logaddexp2(0.0, -margin)))", "base-2 softplus (bits, wrong gradient)"),
    # kwise_ranking_loss
    "kwise_adjacent_pairs": (KW, "better, worse = np.triu_indices(K, k=1)",
                             "better, worse = np.arange(K - 1), np.arange(1, K)",
                             "only adjacent pairs (1≻2, 2≻3, …), not all C(K,2)"),
    "kwise_reversed": (KW, "margins = rewards[:, better] - rewards[:, worse]",
                       "margins = rewards[:, worse] - rewards[:, better]", "rows read worst → best"),
    "kwise_first_pair_only": (KW, "better, worse = np.triu_indices(K, k=1)",
                              "better, worse = np.array([0]), np.array([1])", "only the top pair of each row"),
    "kwise_both_orders": (KW, "better, worse = np.triu_indices(K, k=1)",
                          "better, worse = np.nonzero(~np.eye(K, dtype=bool))", "each pair counted in both orders"),
    "kwise_best_vs_rest": (KW, "better, worse = np.triu_indices(K, k=1)",
                           "better, worse = np.zeros(K - 1, dtype=int), np.arange(1, K)", "only the best vs each other"),
    "kwise_sum_over_pairs": (KW, "return float(np.mean(np.logaddexp(0.0, -margins)))",
                             "return float(np.mean(np.logaddexp(0.0, -margins).sum(axis=1)))",
                             "sums the pairs of a row instead of averaging them"),
    # RewardModel
    "rm_last_position": (RM, "return self.head(hidden[torch.arange(B, device=input_ids.device), last]).squeeze(-1)",
                         "return self.head(hidden[:, -1]).squeeze(-1)",
                         "reads position −1 whatever the padding (a pad under right padding)"),
    "rm_mask_sum_index": (RM, "last = (attention_mask * torch.arange(T, device=input_ids.device)).argmax(-1)",
                          "last = attention_mask.sum(-1) - 1",
                          "index sum(mask) − 1: right padding only"),
    "rm_no_position_ids": (RM, "attention_mask=attention_mask,\n                               position_ids=position_ids)",
                           "attention_mask=attention_mask)",
                           "no position ids: positions count the left pads"),
    "rm_mean_pool": (RM, "return self.head(hidden[torch.arange(B, device=input_ids.device), last]).squeeze(-1)",
                     "return self.head(hidden.mean(dim=1)).squeeze(-1)", "mean-pools over every position, pads included"),
    "rm_first_token": (RM, "return self.head(hidden[torch.arange(B, device=input_ids.device), last]).squeeze(-1)",
                       "return self.head(hidden[:, 0]).squeeze(-1)", "reads the first position"),
    "rm_no_attention_mask": (RM, "hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,",
                             "hidden = self.backbone(input_ids=input_ids,",
                             "no attention mask: real tokens attend to the left pads"),
    "rm_no_squeeze": (RM, "last]).squeeze(-1)", "last])", "returns (B, 1) instead of (B,)"),
}
