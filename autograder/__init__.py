"""Instructor tooling for the course: `python -m autograder {release,validate,grade}`.

Thin, tested glue around real nbgrader (0.9): the configuration lives in
``autograder/nbgrader_config.py`` and every path derives from this package's location.
"""
from autograder.course import (
    CONFIG_FILE,
    EXERCISES,
    REPO,
    SOLUTIONS,
    ConfigNotLoaded,
    assignments,
    load_config,
    notebooks,
)

__all__ = ["CONFIG_FILE", "EXERCISES", "REPO", "SOLUTIONS", "ConfigNotLoaded", "assignments",
           "load_config", "notebooks"]
