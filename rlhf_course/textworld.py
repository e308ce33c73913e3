"""A small, honest text world: restaurant reviews, a gold "human" and simulated annotators.

Everything is deterministic given a seed and needs no download. The pieces:

* a tiny grammar of one-sentence, lowercase reviews, e.g.
  ``"the pasta was wonderful but the waiter was rude ."`` (single spaces, always ends with ``" ."``);
* ``gold_reward(texts)``: the *true* utility of the human we pretend to ask. It is a transparent
  formula (a sentiment lexicon and a length term, below), so a chapter can always measure how far a
  learned reward model, or a policy optimised against it, has drifted from what the human wanted;
* ``simulate_preferences`` / ``simulate_rankings``: noisy annotators who compare responses through
  Bradley–Terry / Plackett–Luce on ``gold / temperature``. ``temperature`` is the stated noise level.

The gold reward of a text (formula, with every constant a module attribute)::

    words  = lowercase alphabetic tokens of the text (re ``[a-z']+``; "." and junk symbols are ignored)
    gold   = sum over DISTINCT words w of LEXICON.get(w, 0)
             - LENGTH_PENALTY * max(0, len(words) - TARGET_WORDS)

A lexicon word counts once however often it is repeated: a human is not three times as pleased by
"wonderful wonderful wonderful". So gold cannot be gamed by repetition, while a reward model fitted to
grammatical reviews may well be (that gap is what reward over-optimisation looks like). Unknown words
score 0 but count toward the length, so junk text from a language model is scored without error.

Calibration (measured, seeds 0–2): at temperature 1 the annotators agree with gold on ≈ 79 % of
untied pairs (``label_agreement(1.0)`` = 0.79; 0.89 at T = 0.5, 0.68 at T = 2; about 5 % of pairs are
gold ties). InstructGPT's labellers agreed with each other ≈ 73 % of the time. Gold rewards of random
reviews have mean ≈ -0.6 and standard deviation ≈ 1.5 (range about -8 to 3).

Prompts and completions. A prompt is the opening of a review up to and including its first verb,
``"the pasta was"`` or ``"overall the soup seemed"``. A completion (a "response") is the rest of the
review and does NOT start with a space: ``prompt + " " + completion`` is a full review, e.g.
``"the pasta was" + " " + "wonderful but the waiter was rude ."``.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

SUBJECTS: tuple[str, ...] = (
    "the pasta", "the soup", "the pizza", "the salad", "the steak", "the bread", "the fish",
    "the dessert", "the coffee", "the wine", "the curry", "the burger", "the waiter", "the service",
    "the staff", "the chef", "the menu", "the room", "the music", "the table", "the price",
)
"""Things a review talks about (each "the" + a singular noun, so every verb below agrees)."""

POSITIVE: dict[str, float] = {
    "wonderful": 1.0, "excellent": 1.0, "delicious": 1.0, "perfect": 1.0, "amazing": 1.0,
    "great": 0.75, "lovely": 0.75, "friendly": 0.75, "fresh": 0.75,
    "good": 0.5, "nice": 0.5, "tasty": 0.5, "pleasant": 0.5, "fine": 0.25, "decent": 0.25,
}
"""Sentiment lexicon, positive half: word -> weight > 0."""

NEGATIVE: dict[str, float] = {
    "awful": -1.0, "terrible": -1.0, "disgusting": -1.0, "horrible": -1.0, "rude": -1.0,
    "bad": -0.75, "stale": -0.75, "dirty": -0.75, "greasy": -0.75,
    "bland": -0.5, "slow": -0.5, "soggy": -0.5, "overpriced": -0.5, "dull": -0.25, "noisy": -0.25,
}
"""Sentiment lexicon, negative half: word -> weight < 0."""

NEUTRAL: tuple[str, ...] = (
    "warm", "late", "ordinary", "small", "large", "quiet", "busy", "simple", "new", "spicy",
    "sweet", "hot", "modern", "traditional", "early",
)
"""Adjectives with no sentiment: they lengthen a review without changing its lexicon score."""

LEXICON: dict[str, float] = {**POSITIVE, **NEGATIVE}
"""Every word with a sentiment weight; all other words weigh 0."""

TARGET_WORDS: int = 12
"""Reviews of up to this many words pay no length penalty."""
LENGTH_PENALTY: float = 0.5
"""Gold reward lost per word beyond TARGET_WORDS (so padding with neutral words costs)."""

OPENERS: tuple[str, ...] = ("honestly", "overall", "i think", "sadly", "luckily")
"""Optional sentiment-free first words of a review (a third of reviews have one)."""
VERBS: tuple[str, ...] = ("was", "seemed")
"""Link verbs; a prompt ends with one of them."""
ADVERBS: tuple[str, ...] = ("very", "really", "quite", "a bit")
"""Sentiment-free intensifiers (the gold reward ignores them, as it ignores everything but the lexicon)."""
CONJUNCTIONS: tuple[str, ...] = ("and", "but", "while")
"""Words joining two clauses."""

_WORD = re.compile(r"[a-z']+")


# --------------------------------------------------------------------------------------------------
# The grammar
# --------------------------------------------------------------------------------------------------
def _adjective(rng: np.random.Generator) -> str:
    """One adjective: positive 45 %, negative 45 %, neutral 10 %."""
    u = rng.random()
    pool = tuple(POSITIVE) if u < 0.45 else tuple(NEGATIVE) if u < 0.9 else NEUTRAL
    return pool[rng.integers(len(pool))]


def _description(rng: np.random.Generator) -> list[str]:
    """What follows a verb: "adj", "adverb adj" or "adj and adj"."""
    u = rng.random()
    if u < 0.5:
        return [_adjective(rng)]
    if u < 0.75:
        return ADVERBS[rng.integers(len(ADVERBS))].split() + [_adjective(rng)]
    return [_adjective(rng), "and", _adjective(rng)]


def _opening(rng: np.random.Generator) -> list[str]:
    """[opener] subject verb — the part of a review a prompt holds."""
    words = OPENERS[rng.integers(len(OPENERS))].split() if rng.random() < 1 / 3 else []
    words += SUBJECTS[rng.integers(len(SUBJECTS))].split()
    words.append(VERBS[rng.integers(len(VERBS))])
    return words


def _continuation(rng: np.random.Generator) -> list[str]:
    """The rest of a review after its first verb: 1–3 clauses in all, then "."."""
    n_clauses = 1 + rng.choice(3, p=[0.35, 0.4, 0.25])
    words = _description(rng)
    for _ in range(n_clauses - 1):
        words.append(CONJUNCTIONS[rng.integers(len(CONJUNCTIONS))])
        words += SUBJECTS[rng.integers(len(SUBJECTS))].split()
        words.append(VERBS[rng.integers(len(VERBS))])
        words += _description(rng)
    words.append(".")
    return words


def _prompt_rng(prompt: str, seed: int) -> np.random.Generator:
    """A generator seeded by (seed, prompt): different prompts get different, repeatable streams."""
    return np.random.default_rng([seed, zlib.crc32(prompt.encode("utf-8"))])


def sample_reviews(n: int, seed: int = 0) -> list[str]:
    """n one-sentence lowercase reviews, e.g. "the pasta was wonderful but the waiter was rude .".

    Words are separated by single spaces and every review ends with " .". Lengths range from 4 to
    22 words (median 11; 31 % are longer than TARGET_WORDS), so the length term of ``gold_reward``
    matters. Deterministic given seed.
    """
    rng = np.random.default_rng(seed)
    return [" ".join(_opening(rng) + _continuation(rng)) for _ in range(n)]


def sample_prompts(n: int, seed: int = 0) -> list[str]:
    """n review openings to complete, e.g. "the pasta was" or "honestly the waiter seemed".

    Each is ``[opener] subject verb`` with no trailing space. Deterministic given seed.
    """
    rng = np.random.default_rng([seed, 1])  # a stream apart from sample_reviews(n, seed)
    return [" ".join(_opening(rng)) for _ in range(n)]


def sample_completions(prompt: str, n: int, seed: int = 0) -> list[str]:
    """n continuations of ``prompt`` from the grammar (responses only, may repeat).

    A completion does NOT start with a space and ends with " .": ``prompt + " " + completion`` is a
    full review. The grammar's continuation does not depend on the prompt's words, but the random
    stream does (seeded by seed and the prompt), so two prompts get different completions.
    """
    rng = _prompt_rng(prompt, seed)
    return [" ".join(_continuation(rng)) for _ in range(n)]


# --------------------------------------------------------------------------------------------------
# The gold "human"
# --------------------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return _WORD.findall(str(text).lower())


def gold_reward(texts: str | Iterable[str]) -> np.ndarray:
    """The human's true utility of each text (see the module docstring for the formula).

    Args:
        texts: a string or an iterable of N strings (full reviews: prompt + " " + response).
    Returns:
        (N,) float64: sum of LEXICON weights over the DISTINCT words of each text
        minus LENGTH_PENALTY * max(0, n_words - TARGET_WORDS). Unknown words score 0.
    """
    if isinstance(texts, str):
        texts = [texts]
    out = []
    for text in texts:
        words = _words(text)
        score = sum(LEXICON.get(w, 0.0) for w in set(words))
        out.append(score - LENGTH_PENALTY * max(0, len(words) - TARGET_WORDS))
    return np.asarray(out, dtype=np.float64)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))  # = 1 / (1 + e^-x), no overflow


@dataclass(frozen=True)
class Preference:
    """One human comparison: for ``prompt``, response ``chosen`` was preferred over ``rejected``.

    ``gold_chosen`` / ``gold_rejected`` are the gold rewards of the full texts; the label is noisy,
    so ``gold_chosen < gold_rejected`` happens (that is the annotator's error rate).
    """
    prompt: str
    chosen: str
    rejected: str
    gold_chosen: float
    gold_rejected: float

    @property
    def chosen_text(self) -> str:
        """The full text a reward model scores: prompt + " " + chosen."""
        return self.prompt + " " + self.chosen

    @property
    def rejected_text(self) -> str:
        """The full text a reward model scores: prompt + " " + rejected."""
        return self.prompt + " " + self.rejected


def _distinct_completions(prompt: str, k: int, rng: np.random.Generator) -> list[str]:
    """k different continuations of prompt (the grammar has millions, so a few redraws suffice)."""
    out: list[str] = []
    while len(out) < k:
        c = " ".join(_continuation(rng))
        if c not in out:
            out.append(c)
    return out


def simulate_preferences(n: int, seed: int = 0, temperature: float = 1.0) -> list[Preference]:
    """n pairwise labels from a Bradley–Terry annotator on the gold reward.

    For each pair: a prompt, two different completions a and b; the annotator prefers a with
    probability sigmoid((gold(a) - gold(b)) / temperature). temperature -> 0 is a perfect annotator,
    temperature -> inf a coin flip. Deterministic given seed.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    rng = np.random.default_rng([seed, 2])
    prompts = sample_prompts(n, seed)
    prefs = []
    for prompt in prompts:
        a, b = _distinct_completions(prompt, 2, rng)
        prefs.append(_bt_label(prompt, a, b, rng.random(), temperature))
    return prefs


def _bt_label(prompt: str, a: str, b: str, u: float, temperature: float) -> Preference:
    """The Bradley–Terry annotator's label for one pair, given its uniform draw u."""
    g_a, g_b = gold_reward([prompt + " " + a, prompt + " " + b])
    diff = g_a - g_b
    if temperature == 0:
        a_wins = diff > 0 or (diff == 0 and u < 0.5)
    else:
        a_wins = u < _sigmoid(diff / temperature)
    if a_wins:
        return Preference(prompt, a, b, float(g_a), float(g_b))
    return Preference(prompt, b, a, float(g_b), float(g_a))


def annotate_pairs(prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str],
                   seed: int = 0, temperature: float = 1.0) -> list[Preference]:
    """The same Bradley–Terry annotator, asked about pairs someone else wrote (e.g. a policy's samples).

    Args:
        prompts, responses_a, responses_b: N prompts and two responses to each (responses do NOT start
            with a space: prompt + " " + response is the full text).
    Returns:
        N Preferences: a is chosen with probability sigmoid((gold(a) - gold(b)) / temperature), one
        uniform draw per pair from a generator seeded by ``seed`` (so the labels are repeatable).
    """
    if not len(prompts) == len(responses_a) == len(responses_b):
        raise ValueError(f"need as many prompts as pairs, got {len(prompts)}, {len(responses_a)}, {len(responses_b)}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    u = np.random.default_rng([seed, 5]).random(len(prompts))
    return [_bt_label(p, a, b, float(ui), temperature) for p, a, b, ui in zip(prompts, responses_a, responses_b, u)]


def sample_demonstrations(prompts: Sequence[str], seed: int = 0, n_candidates: int = 4) -> list[str]:
    """One demonstration per prompt, as a careful human writer would give for supervised fine-tuning.

    The writer drafts ``n_candidates`` continuations from the grammar and hands in the one the gold
    human likes best (first of the best on ties): demonstrations are good reviews, not perfect ones
    (with 4 drafts their gold reward averages about +0.7, against -0.6 for a single draft). Responses
    do not start with a space. Deterministic given seed.
    """
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
    out = []
    for i, prompt in enumerate(prompts):
        drafts = sample_completions(prompt, n_candidates, seed=seed * 1_000_003 + i)
        gold = gold_reward([prompt + " " + d for d in drafts])
        out.append(drafts[int(np.argmax(gold))])
    return out


def simulate_rankings(n: int, k: int = 4, seed: int = 0,
                      temperature: float = 1.0) -> list[tuple[str, list[str]]]:
    """n K-wise rankings from a Plackett–Luce annotator on gold / temperature.

    Returns:
        a list of (prompt, responses) with k different responses ordered best -> worst. The annotator
        picks the best with probability softmax(gold / temperature), then the best of the rest, and
        so on; sampled with the Gumbel-max trick (sort gold / T + Gumbel noise), which is exactly
        Plackett–Luce. Deterministic given seed.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    rng = np.random.default_rng([seed, 3])
    prompts = sample_prompts(n, seed)
    out = []
    for prompt in prompts:
        responses = _distinct_completions(prompt, k, rng)
        gold = gold_reward([prompt + " " + r for r in responses])  # (k,)
        gumbel = rng.gumbel(size=k)
        keys = gold / temperature + gumbel if temperature > 0 else gold + 1e-9 * gumbel
        order = np.argsort(-keys, kind="stable")
        out.append((prompt, [responses[i] for i in order]))
    return out


def annotator_accuracy(prefs: Sequence[Preference]) -> float:
    """Fraction of labels that agree with the gold ordering, ties (equal gold) excluded.

    This is the ceiling of any reward model's accuracy measured against these labels: a model that
    recovered gold exactly would score this, not 100 %.
    """
    decided = [p for p in prefs if p.gold_chosen != p.gold_rejected]
    if not decided:
        return float("nan")
    return float(np.mean([p.gold_chosen > p.gold_rejected for p in decided]))


def label_agreement(temperature: float, n: int = 20_000, seed: int = 0) -> float:
    """Expected fraction of labels agreeing with gold (ties excluded) at this temperature.

    Exact in the annotator's coin, Monte Carlo over n pairs drawn as ``simulate_preferences`` draws
    them: the mean over untied pairs of sigmoid(|gold(a) - gold(b)| / temperature). Less noisy than
    ``annotator_accuracy(simulate_preferences(...))``, which also samples the labels.
    """
    rng = np.random.default_rng([seed, 2])
    prompts = sample_prompts(n, seed)
    diffs = []
    for prompt in prompts:
        a, b = _distinct_completions(prompt, 2, rng)
        g = gold_reward([prompt + " " + a, prompt + " " + b])
        rng.random()  # keep the stream aligned with simulate_preferences
        diffs.append(abs(g[0] - g[1]))
    diffs = np.asarray(diffs)
    diffs = diffs[diffs > 0]
    if temperature == 0:
        return 1.0
    return float(np.mean(_sigmoid(diffs / temperature)))
