"""The book builds with warnings as errors, publishes no solution, and renders offline."""
import re
from pathlib import Path

import pytest

from autograder import SOLUTIONS, assignments, notebooks
from autograder.launch import toc_docnames
from conftest import REPO, built_book
from notebook_text import hidden_test_lines, leaked, secret_lines


def _toc_pages() -> list[str]:
    """Every page the table of contents lists, as built HTML paths ("book/x.html")."""
    return [f.removesuffix(".md").removesuffix(".ipynb") + ".html" for f in toc_docnames()]


PAGES = _toc_pages()


@pytest.fixture(scope="module")
def html() -> Path:
    """The book built from scratch, warnings as errors, outside the repository's _build/ (conftest
    starts the build in the background when the tests are collected: see built_book)."""
    return built_book()


def test_index_and_every_toc_page_exist(html):
    assert (html / "index.html").exists()
    assert "book/rlhf_update_rules.html" in PAGES and "exercises/rlhf_update_rules/rlhf_update_rules.html" in PAGES
    for page in PAGES:
        assert (html / page).exists(), page


def test_no_solution_or_hidden_test_is_published(html):
    assert not [p for p in html.rglob("*") if "solutions" in p.parts or "autograder" in p.parts or "tests" in p.parts]
    # The rule is in notebook_text.secret_lines: hidden tests appear on no page; solutions appear on no
    # exercise page, while chapters may show the code of the equations they derive.
    sources = [SOLUTIONS / a / f"{nb}.ipynb" for a in assignments() for nb in notebooks(a)]
    secrets = [s for src in sources for s in secret_lines(src)]
    hidden = [s for src in sources for s in hidden_test_lines(src)]
    assert len(hidden) > 20 and len(secrets) > len(hidden)
    for path in html.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".js", ".ipynb", ".md", ".txt", ".json") \
                and "vendor" not in path.parts:
            found = leaked(secrets if "exercises" in path.parts else hidden, path.read_text(errors="replace"))
            assert not found, f"{path.relative_to(html)} publishes solution/hidden-test lines: {found[:3]}"


def test_pages_load_nothing_from_the_network(html):
    # Links (<a href>) may point anywhere; what a page *loads* must come from the book itself.
    loads = re.compile(r'<(?:script|img|iframe)[^>]*\ssrc="([^"]+)"|<link[^>]*\shref="([^"]+)"')
    for page in html.rglob("*.html"):
        for src in (a or b for a, b in loads.findall(page.read_text())):
            assert not re.match(r"(https?:)?//", src), f"{page.relative_to(html)} loads {src}"


def test_vendored_assets_are_served(html):
    vendor = html / "_static" / "vendor"
    for rel in ["mathjax/tex-mml-chtml.js", "mathjax/input/tex/extensions/cancel.js",
                "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff", "requirejs/require.js",
                "html-manager/embed-amd.js", "mathjax/LICENSE", "html-manager/LICENSE"]:
        assert (vendor / rel).is_file(), rel


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("exercises/")])
def test_launch_and_download_buttons_on_notebook_pages(html, page):
    text = (html / page).read_text()
    for host in ("colab.research.google.com", "mybinder.org"):
        assert host in text, f"no {host} launch button"
    # No JupyterHub is configured (launch_buttons.jupyterhub_url is ""): no button leads nowhere.
    assert "/hub/user-redirect/git-pull" not in text, "a JupyterHub button with no hub configured"
    notebook = Path(page).with_suffix(".ipynb")
    assert notebook.name in text and "btn-download-source-button" in text
    assert (html / "_sources" / notebook).exists()


def test_the_book_has_math_to_check(html):
    assert sum((html / p).read_text().count('class="math notranslate nohighlight"') for p in PAGES) > 10


# Rendering in a browser (math typeset, widgets drawn, screenshots, at two widths and in both colour schemes,
# from file:// and a local server) is tests/test_book_browser.py, one Chromium for the whole book.


# A page may point ahead only with a link to where it points: a promise ("comes later", "the capstone")
# without one is a promise of a page that may not exist (jupyter-book -W already fails on a broken link).
PROMISE = re.compile(r"\b(comes? later|later (chapter|page)s?|in a later|will (cover|return to)|coming soon"
                     r"|the capstone)\b", re.I)
LINK = re.compile(r"\]\(|\{(doc|ref|numref)\}`")


def promises_without_a_target(markdown: str, allow_capstone: bool = False) -> list[str]:
    """Sentences of a page's prose (code cells and blocks left out) that promise more without a link."""
    prose = re.sub(r"^(```|~~~).*?^\1", "", markdown, flags=re.M | re.S)
    found = []
    for paragraph in re.split(r"\n\s*\n", prose):
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
            match = PROMISE.search(sentence)
            if match and not LINK.search(sentence) and not (allow_capstone and match[0].lower() == "the capstone"):
                found.append(sentence)
    return found


def test_no_page_promises_what_it_does_not_link():
    bad = {}
    for page in sorted((REPO / "book").rglob("*.md")):
        rel = page.relative_to(REPO)
        found = promises_without_a_target(page.read_text(), allow_capstone=rel.parts[1] == "capstone")
        if found:
            bad[str(rel)] = found
    assert not bad, "a promise without a link (link the page, or drop the promise):\n" + "\n".join(
        f"{page}: {sentence}" for page, found in bad.items() for sentence in found)


def test_the_promise_check_can_fail():
    assert promises_without_a_target("Intro.\n\nDPO comes later. Fine.") == ["DPO comes later."]
    assert promises_without_a_target("As the capstone shows, it works.") == ["As the capstone shows, it works."]
    assert promises_without_a_target("The capstone [repeats it](capstone/index.md).") == []
    assert promises_without_a_target("```python\n# comes later\n```\nText.") == []
    assert promises_without_a_target("In the capstone itself.", allow_capstone=True) == []
