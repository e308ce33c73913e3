"""Plausible mistakes in the capstone exercise; each must cost points when graded.

WRONG maps a student name to (answer cell grade_id, text in the solution, replacement, the mistake).
Chapters 3-4's answers (the "previous_answers" cell) are graded in their own chapters, not here.
"""
NOTEBOOK = "capstone"
FULL_SCORE = 15.0
FUNCTIONS = ["sft_loss", "best_of_n_kl"]

SFT, BON = FUNCTIONS
_MASK = "(attention_mask[:, 1:] > 0) & (prompt_mask[:, 1:] == 0)"
_MEAN = "(nll * weights).sum() / weights.sum()"
_FORMULA = "math.log(n) - (n - 1) / n"

WRONG = {
    # sft_loss
    "sft_off_by_one": (SFT, "logits[:, :-1]", "logits[:, 1:]",
                       "logits of position t scored against token t (the model reads the token it predicts)"),
    "sft_prompt_not_masked": (SFT, _MASK, "(attention_mask[:, 1:] > 0)", "the prompt's tokens are trained on too"),
    "sft_pad_not_masked": (SFT, _MASK, "(prompt_mask[:, 1:] == 0)", "pad targets trained on, pads in the mean"),
    "sft_masks_not_shifted": (SFT, _MASK, "(attention_mask[:, :-1] > 0) & (prompt_mask[:, :-1] == 0)",
                              "masks of the inputs, not of the targets: first response token dropped, "
                              "token after EOS trained"),
    "sft_per_row_mean": (SFT, _MEAN, "((nll * weights).sum(1) / weights.sum(1)).mean()",
                         "mean of per-row means instead of one token mean"),
    "sft_sum": (SFT, _MEAN, "(nll * weights).sum()", "sum over tokens, not mean"),
    "sft_no_log_softmax": (SFT, "torch.log_softmax(logits[:, :-1], dim=-1)", "logits[:, :-1]",
                           "raw logits gathered, never normalised"),
    # best_of_n_kl
    "bon_log_n_only": (BON, _FORMULA, "math.log(n)", "log n without the −(n − 1)/n"),
    "bon_ratio_only": (BON, _FORMULA, "(n - 1) / n", "(n − 1)/n without the log n"),
    "bon_sign": (BON, _FORMULA, "(n - 1) / n - math.log(n)", "the two terms swapped: a negative KL"),
    "bon_inverted_ratio": (BON, _FORMULA, "math.log(n) - n / (n - 1)", "log n − n/(n − 1)"),
    "bon_log2": (BON, _FORMULA, "math.log2(n) - (n - 1) / n", "log base 2 (bits) instead of nats"),
    "bon_no_integer_check": (BON, "if n != int(n) or n < 1:", "if n < 1:", "non-integer n accepted"),
}
