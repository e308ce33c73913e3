"""Instructor tooling for the course: `python -m autograder {release,validate,grade}`.

Thin, tested glue around real nbgrader (0.9): the configuration lives in
``autograder/nbgrader_config.py`` and every path derives from this package's location.
"""
import sys

# nbformat imports jsonschema, whose format checkers import rfc3987_syntax when it is installed (it comes
# with jupyter-events): building that package's grammar costs about 1.3 s in every process, for IRI
# formats that no notebook schema uses. Marked absent, jsonschema leaves those two checkers out.
sys.modules.setdefault("rfc3987_syntax", None)

from autograder.course import (  # noqa: E402 (after the line above, which must come before nbformat)
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
