"""The book's sources stay readable on a phone and on paper (issue 10, items 5 and 6).

Static checks, no build: every line of code a page shows fits 88 columns; figure code keeps to the
column's width (7 in, 672 CSS px, so text is shown at its own size), to at most two panels side by side
and to fonts of at least 9 pt; the course style makes sharp figures (SVG in notebooks, 2x PNG files);
the page CSS makes wide display math scroll inside its own box. The exercise notebooks' figure code
(solutions/, from which exercises/ is generated) keeps to the same column: a learner reads them on a
laptop or in a phone-sized Colab.
"""
import json
import re
import struct
from pathlib import Path

import matplotlib as mpl
import pytest
import yaml
from markdown_it import MarkdownIt

from conftest import REPO

MAX_COLUMNS = 88
CODE_DIRECTIVES = {"code-cell", "code", "code-block", "sourcecode"}
_MD = MarkdownIt("commonmark")


def code_lines(markdown: str, first_line: int = 1) -> list[tuple[int, str]]:
    """(line number, text) of every line a reader sees as code on a MyST page.

    Code cells (```{code-cell}```, without their `---` YAML header or `:key:` options, which the page
    does not show), plain fenced blocks (```python, ```bash, ...) and indented code. Fences nested in a
    directive (```{note}``` holding a ```python block) count; the directive's prose does not.
    """
    found = []
    for token in _MD.parse(markdown):
        if token.type not in ("fence", "code_block"):
            continue
        start = first_line + token.map[0] + (1 if token.type == "fence" else 0)
        body = token.content.splitlines()
        directive = re.match(r"\{([\w-]+)\}", token.info.strip())
        if directive and directive.group(1) not in CODE_DIRECTIVES:
            found += code_lines(token.content, start)          # an admonition: look inside it
            continue
        skip = 0
        if directive and body and body[0].strip() == "---":    # the cell's YAML header
            skip = next((i for i, line in enumerate(body[1:], 1) if line.strip() == "---"), 0) + 1
        elif directive:                                        # :tags: [...] style options
            while skip < len(body) and body[skip].startswith(":"):
                skip += 1
        found += [(start + i, line) for i, line in enumerate(body) if i >= skip]
    return found


def too_wide(markdown: str, limit: int = MAX_COLUMNS) -> list[str]:
    """'line N (W columns): text' for each code line wider than `limit`."""
    return [f"line {n} ({len(line)} columns): {line.strip()[:70]}"
            for n, line in code_lines(markdown) if len(line.expandtabs()) > limit]


def book_pages() -> list[Path]:
    return sorted(p for p in (REPO / "book").rglob("*.md") if "_static" not in p.parts)


PAGES = book_pages()


def test_the_book_has_pages_with_code():
    assert len(PAGES) > 20
    assert sum(len(code_lines(p.read_text())) for p in PAGES) > 1000


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO / "book")))
def test_code_fits_88_columns(page):
    bad = too_wide(page.read_text())
    if bad:
        pytest.fail(f"{page.relative_to(REPO)}: {len(bad)} code lines wider than {MAX_COLUMNS} columns "
                    "(they scroll sideways on screen and are cut off in print):\n" + "\n".join(bad),
                    pytrace=False)


SYNTHETIC_PAGE = """---
jupytext: {}
---
# A page

Prose may be as long as it likes: """ + "word " * 40 + """

```{code-cell} ipython3
---
tags: [hide-input]
mystnb:
  image:
    alt: \"""" + "a long alt text " * 12 + """\"
---
ok = 1
way_too_long = """ + "1 + " * 30 + """1
```

```{code-cell} ipython3
:tags: [remove-cell]
fine = 2
```

```python
def f(x): ...  """ + "# comment " * 10 + """
```

````{note}
Prose in a note, """ + "long " * 30 + """.
```bash
python -m something """ + "--flag " * 12 + """
```
````
"""


def test_the_width_check_can_fail():
    lines = dict(code_lines(SYNTHETIC_PAGE))
    assert "ok = 1" in lines.values() and "fine = 2" in lines.values()
    assert not any("alt text" in line or "tags:" in line or "Prose" in line for line in lines.values())
    bad = too_wide(SYNTHETIC_PAGE)
    assert len(bad) == 3, bad
    assert "way_too_long" in bad[0] and "def f(x)" in bad[1] and "python -m something" in bad[2]
    # the line number points at the line in the file
    n = int(re.match(r"line (\d+)", bad[0]).group(1))
    assert SYNTHETIC_PAGE.splitlines()[n - 1].startswith("way_too_long")
    assert too_wide("```python\nx = 1\n```\n") == []


# ------------------------------------------------------------------------------------------------ figures
COLUMN_WIDTH_IN = 7.0   # the 672-px text column at the browser's 96 px per inch
MIN_FONT_PT = 9.0
FIGSIZE = re.compile(r"figsize=\(\s*([\d.]+)\s*,")
FONTSIZE = re.compile(r"fontsize=([\d.]+)")
SUBPLOTS = re.compile(r"subplots\(\s*\d+\s*,\s*(\d+)|\bncols\s*=\s*(\d+)")


def line_figure_problems(lines, max_columns: int = 2) -> list[str]:
    """For (where, line of code) pairs: figure code the 672-px column would shrink, text below 9 pt, or
    more than ``max_columns`` panels side by side in one image."""
    problems = []
    for where, line in lines:
        for width in FIGSIZE.findall(line):
            if float(width) > COLUMN_WIDTH_IN:
                problems.append(f"{where}: figure {width} in wide, the column holds {COLUMN_WIDTH_IN}")
        for size in FONTSIZE.findall(line):
            if float(size) < MIN_FONT_PT:
                problems.append(f"{where}: fontsize={size} is below {MIN_FONT_PT} pt")
        for cols in filter(None, (c for pair in SUBPLOTS.findall(line) for c in pair)):
            if int(cols) > max_columns:
                problems.append(f"{where}: {cols} panels side by side in one image "
                                + ("(at most 2: stack the rest)" if max_columns > 1 else
                                   "(a phone shrinks them to half its width: draw one figure per panel and "
                                   "show them with rlhf_course.show_panels, which stacks them on a phone)"))
    return problems


def figure_problems(markdown: str) -> list[str]:
    """Figure code on a MyST page that the 672-px column would shrink, with text below 9 pt, or with panels
    side by side in one image (unreadable on a phone: the book uses show_panels for those)."""
    return line_figure_problems(((f"line {n}", line) for n, line in code_lines(markdown)), max_columns=1)


def notebook_figure_problems(notebook: dict) -> list[str]:
    """The same, for the code cells of a notebook (a dict as json.load reads an .ipynb)."""
    lines = []
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        cell_name = f"cell {i}" + (f" ({grade_id})" if grade_id else "")
        lines += [(f"{cell_name} line {n}", line) for n, line in enumerate(source.splitlines(), 1)]
    return line_figure_problems(lines)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO / "book")))
def test_figures_fit_the_column(page):
    problems = figure_problems(page.read_text())
    if problems:
        pytest.fail(f"{page.relative_to(REPO)}:\n" + "\n".join(problems), pytrace=False)


def test_the_figure_check_can_fail():
    page = ("```{code-cell} ipython3\n"
            "fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))\n"
            "ax.legend(fontsize=8.5)\n"
            "fig, ax = plt.subplots(2, 2, figsize=(7, 6))\n"
            "ax.text(0, 0, 's', fontsize=9)\n"
            "```\n"
            "Prose about figsize=(20, 3) is not code.\n")
    problems = figure_problems(page)
    assert len(problems) == 4, problems
    assert "14 in wide" in problems[0] or "14 in wide" in problems[1]
    assert any("3 panels" in p for p in problems) and any("fontsize=8.5" in p for p in problems)
    # on a book page, two panels side by side in one image are too many: show_panels stacks them on a phone
    assert any(p.startswith("line 4: 2 panels") and "show_panels" in p for p in problems)
    assert figure_problems("```python\nfig, axes = plt.subplots(nrows=2, ncols=3)\n```\n")[0].startswith(
        "line 2: 3 panels side by side in one image")
    assert figure_problems("```python\nfig, axes = plt.subplots(3, 1, figsize=(6.4, 7))\n```\n") == []
    # a notebook (read on a laptop) may still put two side by side
    lines = [("l1", "fig, axes = plt.subplots(1, 2, figsize=(7, 3))"), ("l2", "plt.subplots(ncols=3)")]
    assert line_figure_problems(lines) == ["l2: 3 panels side by side in one image (at most 2: stack the rest)"]


# The exercise notebooks: solutions/ is their only hand-written copy (exercises/ is generated from it and
# tests/test_notebooks.py checks that the two agree), so its code cells are what a learner's figures are.
SOLUTION_NOTEBOOKS = sorted((REPO / "solutions").glob("*/*.ipynb"))


def test_there_are_exercise_notebooks_with_figures():
    assert len(SOLUTION_NOTEBOOKS) >= 6
    figure_code = [n for n in SOLUTION_NOTEBOOKS if "figsize=" in n.read_text()]
    assert len(figure_code) >= 4, figure_code


@pytest.mark.parametrize("notebook", SOLUTION_NOTEBOOKS, ids=lambda p: p.parent.name)
def test_exercise_notebook_figures_fit_the_column(notebook):
    problems = notebook_figure_problems(json.loads(notebook.read_text()))
    if problems:
        pytest.fail(f"{notebook.relative_to(REPO)} (then run `python -m autograder release`):\n"
                    + "\n".join(problems), pytrace=False)


def test_the_notebook_figure_check_can_fail():
    import nbformat

    cells = [nbformat.v4.new_markdown_cell("Prose about figsize=(20, 3) and subplots(1, 4) is not code."),
             nbformat.v4.new_code_cell("fig, ax = plt.subplots(2, 2, figsize=(7, 6))\nax.legend(fontsize=9)"),
             nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\n"
                                       "fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))\n"
                                       "plt.figure(figsize=(11, 3.6))\n"
                                       "ax.annotate('n', (0, 0), fontsize=8)",
                                       metadata={"nbgrader": {"grade_id": "plot-microrun"}})]
    notebook = json.loads(nbformat.writes(nbformat.v4.new_notebook(cells=cells)))   # sources as lists of lines
    problems = notebook_figure_problems(notebook)
    assert problems == ["cell 2 (plot-microrun) line 2: figure 15 in wide, the column holds 7.0",
                        "cell 2 (plot-microrun) line 2: 4 panels side by side in one image (at most 2: stack the rest)",
                        "cell 2 (plot-microrun) line 3: figure 11 in wide, the column holds 7.0",
                        "cell 2 (plot-microrun) line 4: fontsize=8 is below 9.0 pt"], problems
    notebook["cells"] = notebook["cells"][:2]
    assert notebook_figure_problems(notebook) == []


def style_problems(rc) -> list[str]:
    """What in a matplotlib rc makes the book's figures blurry or too small to read."""
    from matplotlib.font_manager import FontProperties

    problems = []
    with mpl.rc_context(rc):
        for key in ("font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize", "ytick.labelsize",
                    "legend.fontsize"):
            size = FontProperties(size=mpl.rcParams[key]).get_size_in_points()
            if size < MIN_FONT_PT:
                problems.append(f"{key} = {size:g} pt")
        if mpl.rcParams["figure.figsize"][0] > COLUMN_WIDTH_IN:
            problems.append(f"figure.figsize width {mpl.rcParams['figure.figsize'][0]} in")
        dpi = mpl.rcParams["savefig.dpi"]
        if dpi == "figure" or float(dpi) < 200:
            problems.append(f"savefig.dpi = {dpi} (want 2x: 200)")
    return problems


def test_course_style_is_readable_and_sharp():
    from rlhf_course import plotting

    assert plotting.COLUMN_WIDTH_IN == COLUMN_WIDTH_IN and plotting.MIN_FONT_PT == MIN_FONT_PT
    assert style_problems(plotting.COURSE_RC) == []


def test_the_style_check_can_fail():
    bad = {"font.size": 11, "legend.fontsize": "x-small", "figure.figsize": (12, 4), "savefig.dpi": 100,
           "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.titlesize": 11, "axes.labelsize": 11}
    problems = style_problems(bad)
    assert any(p.startswith("legend.fontsize") for p in problems)        # x-small of 11 pt is 7.6 pt
    assert any("figsize" in p for p in problems) and any("savefig.dpi" in p for p in problems)
    assert len(problems) == 3


def figure_formats(outputs) -> set[str]:
    """The image MIME types among a notebook cell's outputs."""
    return {mime for out in outputs for mime in out.get("data", {}) if mime.startswith("image/")}


def test_notebook_figures_are_svg():
    # In a real kernel, as the book's build runs its pages: the course style switches the inline
    # backend to SVG whether it is called before or after pyplot is imported.
    import nbclient
    import nbformat

    cells = ["from rlhf_course import use_course_style\nuse_course_style()\n"
             "import matplotlib.pyplot as plt\nplt.plot([0, 1]); plt.show()",
             "plt.figure(figsize=(7, 3)); plt.plot([1, 0]); plt.show()"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    for cell in nb.cells:
        assert figure_formats(cell.outputs) == {"image/svg+xml"}, cell.outputs
    svg = next(o for o in nb.cells[1].outputs if "data" in o)["data"]["image/svg+xml"]
    width_pt = float(re.search(r'<svg[^>]*\swidth="([\d.]+)pt"', svg).group(1))
    assert width_pt <= COLUMN_WIDTH_IN * 72 + 1      # shown at its own size in the 672-px column
    assert "<dc:date>" not in svg                    # the same figure, the same bytes, every build


def test_the_svg_check_can_fail():
    png_output = {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}}
    assert figure_formats([png_output]) == {"image/png"} != {"image/svg+xml"}


def _png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_capstone_plots_are_2x_and_column_wide(tmp_path):
    """plot_run's PNGs (from a tiny fake run folder): 200 dpi, at most 7 in wide, two panels a row."""
    from rlhf_course.capstone import plot_run

    metrics = [{"iteration": i, "objective/scores": 0.1 * i, "objective/gold_scores": 0.05 * i,
                "objective/kl": 0.2 * i, "objective/kl_coef": 0.1, "policy/approxkl_avg": 0.01,
                "policy/clipfrac_avg": 0.02} for i in range(1, 6)]
    metrics[-1].update({"eval/gold_reward": 1.2, "eval/proxy_reward": 2.1, "eval/sqrt_kl": 1.0})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics))
    (tmp_path / "eval_sft.json").write_text(json.dumps(
        {"eval/gold_reward": 1.0, "eval/proxy_reward": 2.0, "eval/sqrt_kl": 0.0}))
    (tmp_path / "summary.json").write_text(json.dumps({"preset": "test", "seed": 0, "best_of_n": {
        "rows": [{"kl_analytic": k, "proxy": 2 + k, "gold": 1 + k / 2} for k in (0.0, 0.5, 1.0)]}}))
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["training_curves.png", "rewards_vs_kl.png"]
    for path in paths:
        width, height = _png_size(path)
        assert 1000 <= width <= COLUMN_WIDTH_IN * 200, f"{path.name}: {width} px wide"
    # six panels, two a row: taller than wide
    assert _png_size(paths[0])[1] > _png_size(paths[0])[0]


# ---------------------------------------------------------------------------------------------- page CSS
def css_problems(config: dict, static: Path) -> list[str]:
    """Whether the page CSS that keeps wide display math in its own scroll box is wired in and present."""
    files = (config.get("sphinx", {}).get("config", {}) or {}).get("html_css_files", []) or []
    if "readable.css" not in files:
        return ["readable.css is not in sphinx.config.html_css_files"]
    css = static / "readable.css"
    if not css.is_file():
        return [f"{css} is missing"]
    text = re.sub(r"/\*.*?\*/", "", css.read_text(), flags=re.S)
    rule = re.search(r"mjx-container[^{]*\{[^}]*overflow-x:\s*auto", text)
    return [] if rule else ["no overflow-x: auto rule for display math (mjx-container)"]


def test_wide_math_scrolls_in_its_own_box():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert css_problems(config, REPO / "book" / "_static") == []


def test_the_css_check_can_fail(tmp_path):
    assert css_problems({"sphinx": {"config": {"html_css_files": ["print.css"]}}}, tmp_path)
    config = {"sphinx": {"config": {"html_css_files": ["readable.css"]}}}
    assert css_problems(config, tmp_path) == [f"{tmp_path / 'readable.css'} is missing"]
    (tmp_path / "readable.css").write_text("/* mjx-container { overflow-x: auto } */ div.math { color: red }")
    assert css_problems(config, tmp_path) == ["no overflow-x: auto rule for display math (mjx-container)"]
