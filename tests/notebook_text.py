"""Read the parts of nbgrader notebooks that tests look for: hidden tests and solution bodies."""
import functools
import html
import io
import re
import tokenize
from pathlib import Path

import nbformat

BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"

# Lines that are Python bookkeeping, not anyone's answer: they occur in any code, so a match proves nothing.
TRIVIAL = re.compile(r"""(super\(\)\.__init__\(\)|for \w+ in range\(\w*\):|(return|pass|continue|break)\b.{0,12})$""")


def without_comments(source: str) -> list[str]:
    """The lines of `source` with trailing ``#`` comments removed.

    Comments are found with the `tokenize` module, so a ``#`` inside a string is kept. Source that does
    not tokenize (IPython magics, a half-written cell) falls back to cutting each line at the first
    `` #`` (space then hash): good enough for the course's cells, which all tokenize.
    """
    lines = source.splitlines()
    cut: dict[int, int] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                cut[tok.start[0] - 1] = tok.start[1]
    except (tokenize.TokenError, SyntaxError):
        cut = {i: ln.index(" #") for i, ln in enumerate(lines) if " #" in ln}
    return [ln[:cut[i]] if i in cut else ln for i, ln in enumerate(lines)]


def _marked(source: str, pairs) -> list[tuple[int, bool]]:
    """(line index, inside one of the begin/end `pairs`) for every line that is not itself a marker."""
    inside, out = False, []
    for i, line in enumerate(source.splitlines()):
        if any(begin in line for begin, _ in pairs):
            inside = True
        elif any(end in line for _, end in pairs):
            inside = False
        else:
            out.append((i, inside))
    return out


def _regions(source: str, begin: str, end: str) -> list[str]:
    """The lines between `begin` and `end` markers, without their trailing comments."""
    code = without_comments(source)
    return [code[i] for i, inside in _marked(source, [(begin, end)]) if inside]


def secret_lines(notebook: Path, min_len: int = 16, solutions: bool = True) -> list[str]:
    """Distinctive lines of the hidden tests (and, if `solutions`, the solutions) of a source notebook.

    Each line is compared without its trailing comment (see `without_comments`): a copy that drops the
    ``# eq-...`` remark is still the same code. Comment-only lines, lines shorter than `min_len`
    characters once stripped, and generic bookkeeping (`TRIVIAL`: ``super().__init__()``,
    ``for t in range(T):``, a short ``return x``) are left out: they could appear anywhere. So is a line
    the source notebook itself shows outside its hidden/solution regions (a hint that spells out
    ``logr = ref_log_probs - log_probs``, a visible test's message): nbgrader releases it on purpose.

    Where each kind must not appear (the rule the tests enforce):

    * hidden-test lines: nowhere a student can read (released exercises, the published book, feedback);
    * solution lines: not in the released exercises, nor on their published pages (``exercises/``).
      Book chapters may show them: a chapter derives each equation and computes it in code, so a line
      such as ``advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-8)`` is teaching
      material there (tests/test_book.py checks chapter pages against `hidden_test_lines` only).
    """
    nb = nbformat.read(notebook, as_version=4)
    regions = [(BEGIN_HIDDEN, END_HIDDEN)] + ([(BEGIN_SOLUTION, END_SOLUTION)] if solutions else [])
    out = []
    for cell in nb.cells:
        for begin, end in regions:
            out += [ln.strip() for ln in _regions(cell.source, begin, end)]
    candidates = {ln for ln in out if len(ln) >= min_len and not ln.startswith("#") and not TRIVIAL.match(ln)}
    # A line the notebook also shows outside every hidden/solution region (a hint in the instructions,
    # a visible test's message) is released on purpose: not a secret. Nor is a line another exercise
    # releases (the capstone's Part 0 holds chapter 4's answer cells whole, docstrings included, and
    # those docstrings are public in chapter 4's exercise).
    public = set(leaked(sorted(candidates), _public_text(nb) + "\n" + _course_public_text(), markers=False))
    return sorted(candidates - public)


@functools.lru_cache(maxsize=1)
def _course_public_text() -> str:
    """What nbgrader releases of every source notebook in solutions/ (see `_public_text`)."""
    solutions = Path(__file__).resolve().parents[1] / "solutions"
    return "\n".join(_public_text(nbformat.read(p, as_version=4)) for p in sorted(solutions.glob("*/*.ipynb")))


def _public_text(nb) -> str:
    """What nbgrader releases of a source notebook: every cell without its hidden/solution regions."""
    kept = []
    for cell in nb.cells:
        lines = cell.source.splitlines()
        kept += [lines[i] for i, inside in _marked(cell.source, [(BEGIN_HIDDEN, END_HIDDEN),
                                                                 (BEGIN_SOLUTION, END_SOLUTION)]) if not inside]
    return "\n".join(kept)


def visible_text(path: Path) -> str:
    """What a person can read in a file: notebook sources and outputs, or HTML with tags removed."""
    raw = Path(path).read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".ipynb":
        nb = nbformat.reads(raw, as_version=4)
        parts = []
        for cell in nb.cells:
            parts.append(cell.source)
            for output in cell.get("outputs", []):
                parts.append(str(output))
        return "\n".join(parts)
    if path.suffix in (".html", ".htm"):
        # Syntax highlighting splits code into <span>s: compare against the text a browser shows.
        return html.unescape(re.sub(r"<[^>]+>", "", raw))
    return raw


def leaked(secrets: list[str], text: str, markers: bool = True) -> list[str]:
    """The secret lines that occur in `text` (whitespace-normalised), and the region markers if `markers`."""
    squash = lambda s: re.sub(r"\s+", " ", s)  # noqa: E731
    text = squash(text)
    found = [s for s in secrets if squash(s) in text]
    return found + ([m for m in (BEGIN_HIDDEN, BEGIN_SOLUTION) if m in text] if markers else [])


def hidden_test_lines(notebook: Path) -> list[str]:
    """Only the hidden tests: a correct student's feedback legitimately shows solution-like code."""
    return secret_lines(notebook, solutions=False)
