"""Sphinx extension (loaded from _config.yml, `sphinx: local_extensions`): launch buttons that launch, and
widgets that do not pretend.

- Every chapter page `book/.../x.md` has a generated `x.ipynb` next to it (`python -m autograder notebooks`),
  which sphinx-book-theme's Binder and Colab buttons open instead of the Markdown. Those notebooks are not
  pages of their own: they are excluded here.
- After the theme has made a page's launch buttons, each URL is checked against the repository's files
  (autograder/launch.py, `launch_target_problem`): a button that would open a Markdown file, a file that does
  not exist, another repository or a placeholder hub is a warning, so a `-W` build fails.
- Notebooks executed by the build run with RLHF_COURSE_STATIC_BOOK=1 in their environment: the explorers
  (rlhf_course/explorer.py) then disable their controls and say that the page shows a static preview,
  since a page without a kernel cannot redraw the figure when a slider moves.
"""
import os
import re

from sphinx.util import logging

from autograder.launch import launch_target_problem, repository
from rlhf_course.explorer import STATIC_BOOK_ENV

LOGGER = logging.getLogger(__name__)


def _exclude_generated_notebooks(app, config):
    # book/ppo/clipping.ipynb and book/ppo/clipping.md would both be the document "book/ppo/clipping".
    config.exclude_patterns = list(config.exclude_patterns) + ["book/**.ipynb"]


def _launch_urls(buttons):
    for button in buttons:
        if button.get("type") == "group":
            yield from _launch_urls(button.get("buttons", []))
        elif button.get("type") == "link" and button.get("text") in ("Binder", "Colab", "JupyterHub", "Deepnote",
                                                                      "JupyterLite"):
            yield button["url"]


def _check_launch_buttons(app, pagename, templatename, context, doctree):
    groups = [b for b in context.get("header_buttons", []) if b.get("label") == "launch-buttons"]
    for url in _launch_urls(groups):
        problem = launch_target_problem(url, repo=repository())
        if problem:
            LOGGER.warning(f"launch button of {pagename}: {problem} (chapter pages: run "
                           f"`python -m autograder notebooks`; the URLs come from _config.yml's repository.url)",
                           type="course", subtype="launch", location=pagename)


def _check_hub(app, config):
    hub = ((config.html_theme_options or {}).get("launch_buttons") or {}).get("jupyterhub_url") or ""
    if hub and re.search(r"example\.(com|org|net|edu)", hub):
        LOGGER.warning(f"launch_buttons.jupyterhub_url is the placeholder {hub!r}: set it to your hub, or to \"\" "
                       f"to hide the JupyterHub button", type="course", subtype="launch")


def setup(app):
    # Set at load time, before myst-nb starts any kernel: kernels inherit the build's environment.
    os.environ[STATIC_BOOK_ENV] = "1"
    repository()    # fails early, with the reason, if repository.url is not a GitHub repository
    app.connect("config-inited", _exclude_generated_notebooks)
    app.connect("config-inited", _check_hub)
    # sphinx-book-theme adds the launch buttons at priority 501.
    app.connect("html-page-context", _check_launch_buttons, priority=502)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
