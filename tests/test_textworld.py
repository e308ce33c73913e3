"""The text world: grammar, gold reward, simulated annotators (numpy only, fast)."""
import subprocess
import sys

import numpy as np
import pytest

from rlhf_course import textworld as tw
from rlhf_course.textworld import (
    LENGTH_PENALTY, NEGATIVE, NEUTRAL, POSITIVE, SUBJECTS, TARGET_WORDS, Preference, annotator_accuracy,
    gold_reward, label_agreement, sample_completions, sample_prompts, sample_reviews,
    simulate_preferences, simulate_rankings,
)

GRAMMAR_WORDS = set(" ".join(SUBJECTS + NEUTRAL + tw.OPENERS + tw.VERBS + tw.ADVERBS + tw.CONJUNCTIONS).split()) \
    | set(POSITIVE) | set(NEGATIVE) | {"."}


def test_lexicon_signs_and_disjointness():
    """Positive weights > 0, negative < 0, and no word is in two lists."""
    assert all(w > 0 for w in POSITIVE.values()) and all(w < 0 for w in NEGATIVE.values())
    assert not (set(POSITIVE) & set(NEGATIVE)) and not (set(NEUTRAL) & set(tw.LEXICON))
    assert 15 <= len(SUBJECTS) <= 25


def test_reviews_are_deterministic_and_well_formed():
    """Same seed -> same reviews; other seed -> others; lowercase, single spaces, ends ' .', grammar words."""
    a, b, c = sample_reviews(200, seed=3), sample_reviews(200, seed=3), sample_reviews(200, seed=4)
    assert a == b and a != c
    for r in a:
        assert r == r.lower() and r.endswith(" .") and "  " not in r and r == r.strip(), r
        assert set(r.split()) <= GRAMMAR_WORDS, r
    n_words = np.array([len(r.split()) - 1 for r in sample_reviews(2000)])
    assert n_words.min() <= 5 and n_words.max() >= 18, "lengths must vary for the length term to matter"
    assert (n_words > TARGET_WORDS).mean() > 0.15, "too few reviews pay the length penalty"


def test_prompts_and_completions_join_into_reviews():
    """prompt + ' ' + completion is a grammatical review; completions have no leading space."""
    prompts = sample_prompts(20, seed=1)
    assert prompts == sample_prompts(20, seed=1)
    for p in prompts:
        assert p.split()[-1] in tw.VERBS and not p.endswith(" ")
        comps = sample_completions(p, 5, seed=2)
        assert comps == sample_completions(p, 5, seed=2)
        for c in comps:
            assert not c.startswith(" ") and c.endswith(" .")
            assert set((p + " " + c).split()) <= GRAMMAR_WORDS
    assert sample_completions(prompts[0], 5) != sample_completions("the soup seemed", 5)


def test_gold_reward_by_hand():
    """Lexicon sum over distinct words, minus LENGTH_PENALTY per word beyond TARGET_WORDS."""
    assert LENGTH_PENALTY == 0.5 and TARGET_WORDS == 12  # the hand values below assume these
    texts = [
        "the pasta was wonderful but the waiter was rude .",  # 1.0 - 1.0, 9 words
        "the soup was good .",                                  # 0.5
        "the soup was warm and quiet .",                        # neutral only
        # 21 words: good (once, repeated) 0.5 + nice 0.5 - 0.5 * (21 - 12)
        "the soup was good and good and the staff seemed very very nice but sadly the bread was warm and quiet .",
        "",                                                     # empty
        "<|endoftext|> ### WONDERFUL!! zzz",                    # junk from an LM: 1.0, 2 words
    ]
    expected = [0.0, 0.5, 0.0, 1.0 - 0.5 * 9, 0.0, 1.0]
    got = gold_reward(texts)
    assert got.dtype == np.float64 and got.shape == (6,)
    np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(gold_reward("the soup was good ."), [0.5])


def test_gold_reward_random_against_loop():
    """Vectorised-looking gold equals a plain re-implementation on random reviews."""
    for r in sample_reviews(300, seed=7):
        words = r.replace(".", " ").split()
        want = sum(tw.LEXICON.get(w, 0.0) for w in set(words)) - LENGTH_PENALTY * max(0, len(words) - TARGET_WORDS)
        assert gold_reward([r])[0] == pytest.approx(want), r


def test_preferences_deterministic_and_consistent():
    """Same seed -> same labels; chosen != rejected; gold fields equal gold_reward of the full texts."""
    prefs = simulate_preferences(100, seed=5)
    assert prefs == simulate_preferences(100, seed=5) and prefs != simulate_preferences(100, seed=6)
    for p in prefs:
        assert isinstance(p, Preference) and p.chosen != p.rejected
        assert p.chosen_text == p.prompt + " " + p.chosen
        np.testing.assert_allclose(gold_reward([p.chosen_text, p.rejected_text]), [p.gold_chosen, p.gold_rejected])


def test_annotator_agreement_calibration():
    """At T=1 annotators agree with gold on 75–85 % of untied pairs; -> 1 as T -> 0; -> 0.5 as T grows."""
    acc = np.mean([annotator_accuracy(simulate_preferences(1000, seed=s)) for s in range(3)])
    assert 0.75 <= acc <= 0.85, f"agreement {acc:.3f} outside the documented 75–85 %"
    expected = label_agreement(1.0, n=5000)
    assert 0.75 <= expected <= 0.85
    assert abs(acc - expected) < 0.03, "sampled and expected agreement disagree: label noise mis-specified?"
    assert annotator_accuracy(simulate_preferences(500, seed=0, temperature=1e-3)) == 1.0
    assert annotator_accuracy(simulate_preferences(500, seed=0, temperature=0.0)) == 1.0
    far = annotator_accuracy(simulate_preferences(3000, seed=0, temperature=100.0))
    assert abs(far - 0.5) < 0.05, f"T=100 should be a coin flip, got {far:.3f}"
    ladder = [label_agreement(t, n=2000) for t in (0.25, 0.5, 1.0, 2.0, 8.0)]
    assert all(x > y for x, y in zip(ladder, ladder[1:])), ladder


def test_rankings_follow_plackett_luce():
    """Tiny T -> best-to-worst by gold; T=1 -> first place wins with the softmax(gold) probability."""
    for prompt, responses in simulate_rankings(50, k=4, seed=1, temperature=1e-4):
        g = gold_reward([prompt + " " + r for r in responses])
        assert len(responses) == 4 and len(set(responses)) == 4
        assert np.all(np.diff(g) <= 0), (prompt, responses, g)
    assert simulate_rankings(20, seed=2) == simulate_rankings(20, seed=2)
    # Plackett–Luce's first choice is a softmax: compare the mean probability of the observed winner
    # under softmax(gold) with the mean of max-probability outcomes (winner frequency check)
    rankings = simulate_rankings(1500, k=3, seed=3, temperature=1.0)
    p_first, p_expected = [], []
    for prompt, responses in rankings:
        g = gold_reward([prompt + " " + r for r in responses])
        probs = np.exp(g - g.max()) / np.exp(g - g.max()).sum()
        p_first.append(np.argmax(g) == 0)          # the gold-best came first
        p_expected.append(probs.max() if np.sum(g == g.max()) == 1 else np.nan)
    p_first, p_expected = np.array(p_first), np.array(p_expected)
    ok = ~np.isnan(p_expected)
    assert abs(p_first[ok].mean() - p_expected[ok].mean()) < 0.04, (p_first[ok].mean(), p_expected[ok].mean())


def test_import_rlhf_course_stays_light():
    """`import rlhf_course` must not import torch or transformers (chapter 1 notebooks import it)."""
    code = "import sys, rlhf_course; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"], out
