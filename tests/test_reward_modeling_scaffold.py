"""Unit tests of rlhf_course.reward_data, the reward-model plumbing (with a reference reward model)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Model

from rlhf_course.reward_data import RMConfig, encode, evaluate, pairwise_accuracy, score_texts, train_reward_model
from rlhf_course.textworld import Preference, sample_reviews, simulate_preferences
from rlhf_course.tiny_lm import tiny_gpt2_config, train_tokenizer


class ReferenceRewardModel(torch.nn.Module):
    """Last real token + position ids, written differently from the exercise's solution."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone, self.head = backbone, torch.nn.Linear(backbone.config.n_embd, 1)

    def forward(self, input_ids, attention_mask):
        pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos).last_hidden_state
        last = attention_mask.shape[1] - 1 - attention_mask.flip(-1).argmax(-1)
        return self.head(hidden[torch.arange(len(last)), last]).squeeze(-1)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(sample_reviews(2000, seed=5), vocab_size=300)


def small_rm(tokenizer, seed=0):
    torch.manual_seed(seed)
    config = tiny_gpt2_config(len(tokenizer), n_layer=2, n_embd=32, n_head=2, n_positions=64)
    return ReferenceRewardModel(GPT2Model(config))


def test_encode_pads_on_the_requested_side(tokenizer):
    texts = ["the soup was good .", "honestly the waiter seemed very rude and the pasta was bland ."]
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    for side in ("right", "left"):
        ids, mask = encode(tokenizer, texts, side)
        assert ids.shape == mask.shape == (2, max(lengths))
        assert mask.sum(1).tolist() == lengths
        row = ids[0][mask[0].bool()].tolist()
        assert row == tokenizer(texts[0])["input_ids"], "the real tokens must be kept in order"
        assert (ids[mask == 0] == tokenizer.pad_token_id).all()
        first_real = mask[0].argmax().item()
        assert first_real == (0 if side == "right" else max(lengths) - lengths[0])
    with pytest.raises(ValueError):
        encode(tokenizer, texts, "middle")


def test_pairwise_accuracy_counts_ties_as_half():
    assert pairwise_accuracy([1.0, 2.0, 0.0, 5.0], [0.0, 3.0, 0.0, 4.0]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_scores_do_not_depend_on_padding_side_or_batch(tokenizer):
    rm = small_rm(tokenizer)
    texts = [p.chosen_text for p in simulate_preferences(7, seed=2)]
    left = score_texts(rm, tokenizer, texts, "left", batch_size=3)
    right = score_texts(rm, tokenizer, texts, "right", batch_size=7)
    alone = np.array([score_texts(rm, tokenizer, [t])[0] for t in texts])
    assert left.shape == (7,)
    assert np.allclose(left, right, atol=1e-5) and np.allclose(left, alone, atol=1e-5)
    assert rm.training, "score_texts must restore the module's train/eval mode"


def test_evaluate_excludes_gold_ties(tokenizer):
    rm = small_rm(tokenizer)
    prefs = [Preference("the soup was", "good .", "bad .", 0.5, -0.75),
             Preference("the soup was", "fine .", "decent .", 0.25, 0.25)]          # a gold tie
    result = evaluate(rm, tokenizer, prefs)
    right = result["chosen_scores"][0] > result["rejected_scores"][0]
    assert result["gold_acc"] == float(right), "the gold tie must not count"
    assert result["label_acc"] == pytest.approx(pairwise_accuracy(result["chosen_scores"], result["rejected_scores"]))


def test_training_starts_at_log2_learns_and_restores_threads(tokenizer):
    prefs = simulate_preferences(400, seed=3, temperature=0.25)
    rm = small_rm(tokenizer, seed=1)
    torch.nn.init.zeros_(rm.head.weight)   # equal rewards: the first loss is exactly log 2
    torch.nn.init.zeros_(rm.head.bias)
    threads = torch.get_num_threads()
    cfg = RMConfig(seed=1, n_train=300, n_eval=100, steps=60, batch_size=16, learning_rate=3e-3, eval_every=30)

    def bt(chosen, rejected):
        return F.softplus(rejected - chosen).mean()

    record = train_reward_model(rm, tokenizer, prefs[:300], bt, cfg, eval_prefs=prefs[300:], progress=False)
    assert torch.get_num_threads() == threads
    assert record.losses[0] == pytest.approx(np.log(2), abs=1e-6)
    assert len(record.losses) == 60 and record.eval_steps == [30, 60]
    assert np.mean(record.losses[-15:]) < np.log(2) - 0.005, "the loss must fall below log 2"
    assert 0.0 <= record.eval_gold_acc[-1] <= 1.0 and record.seconds > 0
