"""nbgrader configuration for the course (nbgrader 0.9).

Paths derive from this file's location, so `python -m autograder ...` and plain `nbgrader ...` run
from this folder behave the same from any working directory. The instructor CLI overrides `root`,
`submitted`, `autograded`, `feedback` and `db_url` for a grading run (see autograder/cli.py).
"""
import os

import nbgrader
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import ClearHiddenTests, GetGrades

from autograder.feedback import TEMPLATE_FILE, TEMPLATE_NAME, TEMPLATES, FeedbackNotes

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

c.CourseDirectory.course_id = "rlhf-course"  # also the CLI's proof that this file was loaded
c.CourseDirectory.root = REPO
c.CourseDirectory.source_directory = "solutions"   # hand-written notebooks with solutions + hidden tests
c.CourseDirectory.release_directory = "exercises"  # generated student notebooks, committed
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(REPO, "autograder", "course", "gradebook.db")

# Per-cell time limit while autograding. The ExecutePreprocessor.timeout key is ignored by nbgrader.
# The longest graded cell, the capstone's reward-model micro-run (SFT, preferences, reward model), takes
# about 20 s on an idle core and ran past 60 s on a slower machine with 3 processes per 2 cores: the
# limit leaves 5x room, so a slow or busy grading machine does not take points from correct work.
c.Execute.timeout = 120
# Minimal tracebacks: a failing hidden test shows its exception and message, never its source lines.
# (The in-memory history file is ipykernel's default for nbgrader; keep it when overriding. The
# kernel's own start-up warnings would only clutter the instructor's progress bar.)
c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:", "--InteractiveShell.xmode=Minimal",
                             "--IPKernelApp.log_level=ERROR"]

# Feedback must not contain hidden tests: nbgrader's default feedback shows every cell as graded.
# FeedbackNotes (autograder/feedback.py) names each test cell and says where it failed: after GetGrades
# (the scores), before ClearHiddenTests (it reads the hidden tests to tell their failures apart).
c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, FeedbackNotes, ClearHiddenTests]
# Our feedback template (autograder/templates/rlhf_feedback) extends nbgrader's: names and results in the
# headings, MathJax from beside the HTML instead of a CDN. nbgrader fills in its own template folder only
# when these are unset, so its folder is listed here too. Student outputs are sanitised: no script of a
# student's HTML output runs when the student (or you) open the page.
c.HTMLExporter.template_name = TEMPLATE_NAME
c.HTMLExporter.template_file = TEMPLATE_FILE
c.HTMLExporter.extra_template_basedirs = [str(TEMPLATES), os.path.join(os.path.dirname(nbgrader.__file__),
                                                                       "server_extensions", "formgrader", "templates")]
c.HTMLExporter.sanitize_html = True

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
