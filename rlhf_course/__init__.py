"""Plumbing shared by the course notebooks: seeding, plotting and numerical checks.

The algorithms a student writes live in the notebooks, never here.
"""
from rlhf_course.checks import finite_difference_grad
from rlhf_course.plotting import PALETTE, use_course_style
from rlhf_course.seeding import seed_everything

__all__ = ["finite_difference_grad", "PALETTE", "use_course_style", "seed_everything"]
