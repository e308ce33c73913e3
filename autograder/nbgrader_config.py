"""nbgrader configuration for the course (nbgrader 0.9).

Paths derive from this file's location, so `python -m autograder ...` and plain `nbgrader ...` run
from this folder behave the same from any working directory. The instructor CLI overrides `root`,
`submitted`, `autograded`, `feedback` and `db_url` for a grading run (see autograder/cli.py).
"""
import os

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import ClearHiddenTests, GetGrades

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

c.CourseDirectory.course_id = "rlhf-course"  # also the CLI's proof that this file was loaded
c.CourseDirectory.root = REPO
c.CourseDirectory.source_directory = "solutions"   # hand-written notebooks with solutions + hidden tests
c.CourseDirectory.release_directory = "exercises"  # generated student notebooks, committed
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(REPO, "autograder", "course", "gradebook.db")

# Per-cell time limit while autograding. The ExecutePreprocessor.timeout key is ignored by nbgrader.
c.Execute.timeout = 60  # twice the longest graded micro-run on 2 busy cores (reward model: 12-25 s)
# Minimal tracebacks: a failing hidden test shows its exception and message, never its source lines.
# (The in-memory history file is ipykernel's default for nbgrader; keep it when overriding. The
# kernel's own start-up warnings would only clutter the instructor's progress bar.)
c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:", "--InteractiveShell.xmode=Minimal",
                             "--IPKernelApp.log_level=ERROR"]

# Feedback must not contain hidden tests: nbgrader's default feedback shows every cell as graded.
c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, ClearHiddenTests]

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
