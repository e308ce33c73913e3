"""Plumbing shared by the course notebooks: seeding, plotting and numerical checks.

The algorithms a student writes live in the notebooks, never here.

Text-world chapters: ``rlhf_course.textworld`` (reviews, gold reward, simulated annotators; numpy only,
so its main names are re-exported here) and ``rlhf_course.tiny_lm`` (tokenizer, tiny GPT-2, sampling).
``tiny_lm`` imports torch and transformers, so it is never imported here: ``import rlhf_course`` stays fast.
"""
from rlhf_course.checks import finite_difference_grad
from rlhf_course.plotting import PALETTE, share_limits, show_panels, use_course_style
from rlhf_course.seeding import seed_everything
from rlhf_course.textworld import gold_reward, sample_reviews, simulate_preferences  # numpy only

__all__ = ["finite_difference_grad", "PALETTE", "share_limits", "show_panels", "use_course_style",
           "seed_everything", "gold_reward", "sample_reviews", "simulate_preferences"]
