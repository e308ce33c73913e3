"""The book as readers meet it: landing page, references, notation, glossary, equation labels, key takeaways.

Source-level checks (no build): they read the Markdown pages, `_toc.yml`, `_config.yml`, the bibliography
and the notebooks. The rendered site is checked by tests/test_book.py.
"""
import json
import re
import struct
from pathlib import Path

import pybtex.database
import pytest
import yaml

from autograder.launch import toc_docnames
from conftest import REPO

BOOK = REPO / "book"
TOC = yaml.safe_load((REPO / "_toc.yml").read_text())
CONFIG = yaml.safe_load((REPO / "_config.yml").read_text())
REFERENCE_PAGES = ["book/references", "book/notation", "book/glossary"]

# Chapter pages still being rewritten elsewhere; each entry says what it lacks. Remove the entry once the
# page has it (test_pending_pages_are_still_pending fails then, as a reminder).
PENDING_TAKEAWAYS: dict[str, str] = {}     # page -> why it has no Key takeaways yet
PENDING_TIMINGS: dict[str, str] = {}       # page -> why it still has build-machine timings in prose


# ---------------------------------------------------------------------------------------------- helpers
BOOK_PAGES = [f for f in toc_docnames() if f.startswith("book/")]
CHAPTER_PAGES = [f + ".md" for f in BOOK_PAGES if f != TOC["root"] and f not in REFERENCE_PAGES]


def prose(markdown: str) -> str:
    """The Markdown outside code cells, fenced blocks, front matter and inline code, one line per line."""
    out, fence = [], None
    lines = markdown.splitlines()
    if lines and lines[0] == "---":                                # front matter
        end = lines.index("---", 1)
        lines = [""] * (end + 1) + lines[end + 1:]
    for line in lines:
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            out.append("")
            continue
        if fence is not None:
            if stripped.startswith(fence) and stripped.strip("`~ ") == "":
                fence = None
            out.append("")
            continue
        out.append(re.sub(r"`[^`]*`", "``", line))
    return "\n".join(out)


LABEL_DEFINITIONS = [
    re.compile(r"^\$\$\s*\((eq-[a-z0-9-]+)\)\s*$", re.M),   # $$ ... $$ (eq-label)
    re.compile(r"^\((eq-[a-z0-9-]+)\)=\s*$", re.M),          # (eq-label)=
    re.compile(r"^:label:\s*(eq-[a-z0-9-]+)\s*$", re.M),     # {math} directive option
]
LABEL_CITATION = re.compile(r"\beq-[a-z0-9]+(?:-[a-z0-9]+)*")


def defined_labels(texts) -> set[str]:
    return {m.group(1) for text in texts for pattern in LABEL_DEFINITIONS for m in pattern.finditer(text)}


def cited_labels(texts) -> set[str]:
    return {m.group(0) for text in texts for m in LABEL_CITATION.finditer(text)}


def notebook_texts(folder: Path) -> list[str]:
    texts = []
    for path in sorted(folder.glob("*/*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        texts.append("\n".join("".join(cell["source"]) for cell in cells))
    return texts


def book_texts() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in sorted(BOOK.rglob("*.md")) if "_static" not in p.parts}


CITE_ROLE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")
AUTHOR_YEAR = re.compile(
    r"\b[A-Z][A-Za-z'’-]+(?: et al\.?| (?:and|&) [A-Z][A-Za-z'’-]+)?(?:'s|’s)?,? \(?(?:19|20)\d\d[a-z]?\b"
)


def author_year_citations(markdown: str) -> list[str]:
    """Author–year citations written by hand ("Schulman et al. (2017)", "(Bradley and Terry, 1952)")."""
    text = CITE_ROLE.sub("", prose(markdown))
    return [m.group(0) for m in AUTHOR_YEAR.finditer(text) if not re.match(r"(?:In|Since|By|From|Until|Up) ", m.group(0))]


def last_h2(markdown: str) -> str | None:
    headings = re.findall(r"^## +(.+?)\s*$", prose(markdown), re.M)
    return headings[-1] if headings else None


def first_heading(markdown: str) -> str:
    return re.search(r"^# +(.+?)\s*$", prose(markdown), re.M).group(1)


def repeated_captions(toc: dict) -> list[str]:
    """Part captions that repeat the title of the part's first chapter."""
    bad = []
    for part in toc.get("parts", []):
        caption = part.get("caption", "")
        first = (REPO / (part["chapters"][0]["file"] + ".md"))
        if first.exists():
            title = first_heading(first.read_text())
            if caption.strip().lower() in title.lower() or title.lower() in caption.lower():
                bad.append(f"{caption!r} repeats {title!r}")
    return bad


# ------------------------------------------------------------------------------- equation labels (item 11)
def test_every_equation_label_the_exercises_cite_exists_in_the_book():
    cited = cited_labels(notebook_texts(REPO / "solutions") + notebook_texts(REPO / "exercises"))
    assert len(cited) >= 30, f"expected the notebooks to cite many labels, found {sorted(cited)}"
    defined = defined_labels(book_texts().values())
    missing = sorted(cited - defined)
    assert not missing, f"labels cited in solutions/ or exercises/ but defined on no book page: {missing}"


def test_every_cited_label_is_linked_from_the_notation_page():
    cited = cited_labels(notebook_texts(REPO / "solutions") + notebook_texts(REPO / "exercises"))
    notation = (BOOK / "notation.md").read_text()
    rows = set(re.findall(r"^\| `(eq-[a-z0-9-]+)` \| \{eq\}`\1` \|", notation, re.M))
    missing = sorted(cited - rows)
    assert not missing, f"add a row '| `label` | {{eq}}`label` | ... |' to book/notation.md for: {missing}"
    assert rows <= defined_labels(book_texts().values()), "the notation page links a label no page defines"


def test_the_label_check_can_fail():
    notebook = '"""Clipped loss (eq-ppo-clip) with the ratio of eq-ppo-ratio; see also eq-made-up."""'
    page = "$$\nr = \\exp(\\dots)\n$$ (eq-ppo-ratio)\n\n$$\nL = \\min(\\dots)\n$$ (eq-ppo-clip)\n"
    assert cited_labels([notebook]) == {"eq-ppo-clip", "eq-ppo-ratio", "eq-made-up"}
    assert cited_labels([notebook]) - defined_labels([page]) == {"eq-made-up"}
    assert defined_labels(["(eq-target)=\n", "```{math}\n:label: eq-directive\n"]) == {"eq-target", "eq-directive"}


def test_equation_labels_are_shown_on_the_pages():
    script = (BOOK / "_static" / "eq-labels.js").read_text()
    assert 'div.math[id^="equation-eq-"]' in script and "eqlabel" in script
    assert "eq-labels.js" in CONFIG["sphinx"]["config"]["html_js_files"]


# ------------------------------------------------------------------------------------ citations (item 10)
def test_every_citation_has_an_entry_with_a_link_and_every_entry_is_cited():
    bib = pybtex.database.parse_file(BOOK / "references.bib")
    assert CONFIG["bibtex_bibfiles"] == ["book/references.bib"]
    cited = {key.strip() for text in book_texts().values() for m in CITE_ROLE.finditer(text) for key in m.group(1).split(",")}
    assert len(cited) >= 25
    assert not cited - set(bib.entries), f"cited but not in book/references.bib: {sorted(cited - set(bib.entries))}"
    assert not set(bib.entries) - cited, f"in book/references.bib but cited nowhere: {sorted(set(bib.entries) - cited)}"
    for key, entry in bib.entries.items():
        fields = {name.lower() for name in entry.fields}
        assert fields & {"doi", "url", "eprint", "isbn"}, f"{key}: no DOI, URL, arXiv id or ISBN to follow"
        url = entry.fields.get("url", "")
        assert not url or url.startswith(("https://", "http://")), f"{key}: url {url!r}"
        eprint = entry.fields.get("eprint", "")
        assert not eprint or re.fullmatch(r"\d{4}\.\d{4,5}", eprint), f"{key}: arXiv id {eprint!r}"
        assert not eprint or eprint in url, f"{key}: url should be the arXiv page of {eprint}"
    assert "```{bibliography}" in (BOOK / "references.md").read_text()


def test_no_hand_written_author_year_citation_is_left():
    found = {path: hits for path, text in book_texts().items() if (hits := author_year_citations(text))}
    assert not found, f"write these as {{cite:t}}/{{cite:p}} with an entry in book/references.bib: {found}"


def test_the_citation_check_can_fail():
    text = ("PPO (Schulman et al., 2017) and Gao et al. (2022) agree with Bradley and Terry (1952), "
            "and Williams' REINFORCE (1992) too. In 2017 nothing; {cite:t}`gao2022scaling` is fine.\n"
            "```python\nx = 'Schulman et al. (2017)'  # code is not prose\n```\n")
    assert author_year_citations(text) == ["Schulman et al., 2017", "Gao et al. (2022", "Bradley and Terry (1952",
                                           "REINFORCE (1992"]
    assert author_year_citations("{cite:p}`schulman2017proximal` and chapter 4 (2 pages)") == []


# ------------------------------------------------------------------------- landing and reference pages (9)
def test_landing_references_notation_and_glossary_are_in_the_sidebar():
    files = toc_docnames()
    assert TOC["root"] == "book/intro"
    for page in REFERENCE_PAGES:
        assert page in files, f"{page} is not in _toc.yml"
        assert (REPO / (page + ".md")).exists()
    assert not repeated_captions(TOC), repeated_captions(TOC)


def test_the_caption_check_can_fail(tmp_path):
    toc = {"root": "book/intro", "parts": [{"caption": "Policy gradient",
                                            "chapters": [{"file": "book/policy_gradient/index"}]}]}
    assert repeated_captions(toc) == ["'Policy gradient' repeats 'Policy gradient'"]


def test_the_landing_page_has_what_a_newcomer_needs():
    intro = (BOOK / "intro.md").read_text()
    title = first_heading(intro)
    assert title.strip().lower() != CONFIG["title"].strip().lower(), \
        "the landing page's title equals the book's: the browser tab reads 'X — X'"
    headings = [h.lower() for h in re.findall(r"^## +(.+)$", prose(intro), re.M)]
    for needed in ["who", "what you will be able to do", "prerequisites", "setup", "chapters", "grading", "cite"]:
        assert any(needed in h for h in headings), f"landing page has no section about {needed!r}: {headings}"
    words = len(re.findall(r"\w+", prose(intro)))
    assert words >= 600, f"the landing page has {words} words"
    # A chapter map with hours: one row per chapter, each with a time.
    rows = [line for line in intro.splitlines() if re.match(r"\| \d+\. \[", line)]
    assert len(rows) == 6 and all(re.search(r"\d+ (?:h|min)", row) for row in rows), rows
    for chapter_index in ["policy_gradient/index.md", "ppo/index.md", "reward_modeling/index.md", "rlhf/index.md",
                          "capstone/index.md", "beyond_ppo/index.md"]:
        assert f"]({chapter_index})" in intro
    assert (REPO / "CITATION.cff").exists() and "@misc{" in intro
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors"} <= set(citation)
    assert citation["title"] == CONFIG["title"]


STARS = re.compile(r"[★☆]+")
NUMBER_WORDS = {0: "no", 1: "one", 2: "two", 3: "three"}


def stars_without_words(text: str) -> list[str]:
    """'line N: ★★☆ ...' for each star rating with no words next to it (a screen reader says only
    "black star, black star, white star", or nothing).

    Words are '(2 of 3' right after the stars, or '(difficulty 2 of 3', as in the exercise notebooks,
    or a table's next cell 'two stars of three', as in the landing page's legend; the number must be
    the count of filled stars, and a rating has three stars.
    """
    problems = []
    for match in STARS.finditer(text):
        stars, after = match.group(), text[match.end():match.end() + 60]
        filled = stars.count("★")
        words = re.match(rf"\s*\((?:difficulty )?{filled} of 3\b", after) or \
            re.match(rf"\s*\|\s*{NUMBER_WORDS.get(filled, filled)} stars? of three\b", after)
        if len(stars) != 3 or not words:
            line = text.count("\n", 0, match.start()) + 1
            problems.append(f"line {line}: {stars}{after.splitlines()[0][:30] if after.strip() else ''}")
    return problems


def markdown_of(notebook: Path) -> str:
    """The notebook's markdown cells, one after the other (line numbers count from the first)."""
    cells = json.loads(notebook.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


EXERCISE_NOTEBOOKS = sorted([*(REPO / "solutions").glob("*/*.ipynb"), *(REPO / "exercises").glob("*/*.ipynb")])


def test_star_ratings_have_words_for_screen_readers():
    intro = (BOOK / "intro.md").read_text()
    for stars, word in [("★☆☆", "introductory"), ("★★☆", "intermediate"), ("★★★", "advanced")]:
        row = next((line for line in intro.splitlines() if line.startswith(f"| {stars} |")), "")
        assert word in row, f"the legend has no row '| {stars} | ... {word} ...'"
    problems = {str(page.relative_to(REPO)): stars_without_words(page.read_text()) for page in BOOK.rglob("*.md")}
    assert not any(problems.values()), {page: found for page, found in problems.items() if found}


@pytest.mark.parametrize("notebook", EXERCISE_NOTEBOOKS, ids=lambda p: str(p.relative_to(REPO).parent))
def test_exercise_star_ratings_have_words_for_screen_readers(notebook):
    text = markdown_of(notebook)
    assert STARS.search(text), f"{notebook.relative_to(REPO)} rates no part's difficulty"
    problems = stars_without_words(text)
    assert not problems, \
        f"{notebook.relative_to(REPO)}: write '★★☆ (2 of 3)' (in solutions/, then release): {problems}"


def test_the_star_words_check_can_fail():
    assert stars_without_words("| A | f | ★★☆ (2 of 3) | 10 |\n**Difficulty:** ★☆☆ (1 of 3: part A)") == []
    assert stars_without_words("★★★ (difficulty 3 of 3), | ★☆☆ | one star of three: **introductory** |") == []
    assert stars_without_words("| A | f | ★★☆ | 10 |") == ["line 1: ★★☆ | 10 |"]
    assert stars_without_words("x\n**Difficulty:** ★★☆ (parts A–D)") == ["line 2: ★★☆ (parts A–D)"]
    assert len(stars_without_words("★★☆ (3 of 3)  ★★ (2 of 3)  | ★★☆ | one star of three |")) == 3


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_favicon_description_and_social_card():
    assert CONFIG["html"]["favicon"] == "book/_static/favicon.png"
    assert _png_size(REPO / CONFIG["html"]["favicon"]) == (64, 64)
    assert _png_size(BOOK / "_static" / "social-card.png") == (1200, 630)
    assert len(CONFIG["sphinx"]["config"]["myst_html_meta"]["description"]) >= 80
    front = yaml.safe_load((BOOK / "intro.md").read_text().split("---")[1])
    meta = front["myst"]["html_meta"]
    # Relative to the built landing page, _build/html/book/intro.html (crawlers want an absolute URL:
    # replace it once the site has an address).
    assert meta["property=og:image"] == "../_static/social-card.png"
    assert {"property=og:title", "property=og:description", "name=twitter:card"} <= set(meta)


def test_glossary_terms_point_to_pages_that_exist():
    glossary = (BOOK / "glossary.md").read_text()
    body = glossary.split("```{glossary}")[1].split("```")[0]
    entries = re.findall(r"^(\S[^\n]*)\n  ([^\n]+)$", body, re.M)
    assert len(entries) >= 40, f"only {len(entries)} glossary entries"
    for term, definition in entries:
        links = re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", definition)
        assert "→" in definition and links, f"glossary: {term!r} has no '→ [page](file.md)'"
        for link in links:
            assert (BOOK / link).exists(), f"glossary: {term!r} links to missing {link}"


def test_reference_pages_link_only_to_pages_that_exist():
    for page in ["intro.md", "notation.md", "glossary.md", "references.md"]:
        for link in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", (BOOK / page).read_text()):
            assert (BOOK / link).exists(), f"book/{page} links to missing {link}"


# ------------------------------------------------------------------- key takeaways, print, prose (12, 14)
@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_every_chapter_page_ends_with_key_takeaways(page):
    if page in PENDING_TAKEAWAYS:
        pytest.skip(PENDING_TAKEAWAYS[page])
    text = (REPO / page).read_text()
    assert last_h2(text) == "Key takeaways", f"{page}: the last section is {last_h2(text)!r}, not 'Key takeaways'"
    section = prose(text).split("## Key takeaways", 1)[1]
    bullets = re.findall(r"^[-*] ", section, re.M)
    assert 3 <= len(bullets) <= 6, f"{page}: {len(bullets)} takeaways (3 to 6, short)"


def test_pending_pages_are_still_pending():
    for page in PENDING_TAKEAWAYS:
        assert last_h2((REPO / page).read_text()) != "Key takeaways", \
            f"{page} has its Key takeaways now: remove it from PENDING_TAKEAWAYS"


def test_the_takeaways_check_can_fail():
    assert last_h2("# T\n## Intro\ntext\n## Key takeaways\n- a\n") == "Key takeaways"
    assert last_h2("# T\n## Key takeaways\n- a\n## Appendix\n") == "Appendix"
    assert last_h2("# T\n## Key takeaways\n```python\n## not a heading\n```\n") == "Key takeaways"


def test_printing_drops_the_chrome_and_the_collapsed_code():
    css = (BOOK / "_static" / "print.css").read_text()
    print_rules = css.split("@media print", 1)[1]
    for selector in ["details.hide.above-input", ".bd-sidebar-primary", ".bd-header", ".prev-next-area"]:
        assert selector in print_rules, f"print.css does not hide {selector} when printing"
    assert "print.css" in CONFIG["sphinx"]["config"]["html_css_files"]


TIMING = re.compile(r"build machine|\b\d-core\b|\bit/s\b|on a shared", re.I)


def test_no_build_machine_timings_in_prose():
    found = {path: TIMING.findall(prose(text)) for path, text in book_texts().items()
             if path not in PENDING_TIMINGS and TIMING.search(prose(text))}
    assert not found, f"move these timings to the budget table in README.md: {found}"
    assert TIMING.search(prose("ran in 13.1 s on a shared 2-core CPU")), "the timing check can fail"


def test_one_spelling_of_modelling():
    def american(text: str) -> list[str]:
        # Paths and identifiers (reward_modeling/...) and paper titles cited through {cite} keep theirs.
        text = re.sub(r"\]\([^)]*\)", "]()", prose(text))
        return re.findall(r"(?<![_/\w])[Mm]odeling\b", text)

    assert american("Reward modeling turns [x](../reward_modeling/index.md) `reward_modeling`") == ["modeling"]
    pages = {path: hits for path, text in book_texts().items() if (hits := american(text))}
    assert not pages, f"write 'modelling' (the book's spelling): {pages}"
    captions = [part["caption"] for part in TOC["parts"]]
    assert not any(american(caption) for caption in captions), captions
    readme = (REPO / "README.md").read_text()
    assert not american(readme), "README.md: write 'modelling'"
