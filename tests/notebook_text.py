"""Read the parts of nbgrader notebooks that tests look for: hidden tests and solution bodies."""
import html
import re
from pathlib import Path

import nbformat

BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"


def _regions(source: str, begin: str, end: str) -> list[str]:
    lines, inside, out = source.splitlines(), False, []
    for line in lines:
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            out.append(line)
    return out


def secret_lines(notebook: Path, min_len: int = 16, solutions: bool = True) -> list[str]:
    """Distinctive lines of the hidden tests (and, if `solutions`, the solutions) of a source notebook.

    Short or generic lines (``else:``, ``_checked += 1``) are left out: they could appear anywhere.
    """
    nb = nbformat.read(notebook, as_version=4)
    regions = [(BEGIN_HIDDEN, END_HIDDEN)] + ([(BEGIN_SOLUTION, END_SOLUTION)] if solutions else [])
    out = []
    for cell in nb.cells:
        for begin, end in regions:
            out += [ln.strip() for ln in _regions(cell.source, begin, end)]
    return sorted({ln for ln in out if len(ln) >= min_len and not ln.startswith("#")})


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


def leaked(secrets: list[str], text: str) -> list[str]:
    """The secret lines that occur in `text` (whitespace-normalised)."""
    squash = lambda s: re.sub(r"\s+", " ", s)  # noqa: E731
    text = squash(text)
    return [s for s in secrets if squash(s) in text] + [m for m in (BEGIN_HIDDEN, BEGIN_SOLUTION) if m in text]


def hidden_test_lines(notebook: Path) -> list[str]:
    """Only the hidden tests: a correct student's feedback legitimately shows solution-like code."""
    return secret_lines(notebook, solutions=False)
