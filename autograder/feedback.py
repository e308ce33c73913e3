"""Feedback HTML a student can use: named test cells, hidden-test failures marked, no follow-on errors,
formulas rendered offline.

nbgrader's ``generate_feedback`` renders the autograded notebook with its ``feedback`` template. Two
pieces change what the student reads:

- ``FeedbackNotes``, a preprocessor that runs after ``GetGrades`` (which puts each cell's score in its
  metadata) and before ``ClearHiddenTests`` (which removes the hidden tests, so it must come after we
  have read them). It writes ``cell.metadata.feedback`` for the template:

  * ``title``: the test cell's grade_id and the first line of its docstring;
  * ``status``: ``passed``, ``failed`` (a visible test's assertion: the student can rerun it),
    ``hidden`` (an assertion of the hidden tests: its one-line message, never its code),
    ``error`` (raised inside the student's code or a helper: it cannot tell which test called it)
    or ``follow-on`` (see below); and ``message``, the one-line ``Error: message``.

  In a cell with hidden tests every traceback is cut to that one line, whatever the kernel's
  traceback mode, so no line of hidden code can reach the page through a traceback.

- The template ``autograder/templates/rlhf_feedback`` extends nbgrader's ``feedback`` template: it shows
  ``title`` and ``status`` in the table of contents and in each test cell's heading, and replaces
  nbgrader's MathJax 2 from a CDN with the book's own MathJax 3, loaded from ``mathjax/`` beside the
  HTML file (``publish`` puts it there), so formulas render with no network, opened from disk.

Follow-on errors. A cell whose only error is ``NameError: name 'X' is not defined``, where an earlier
cell that raised binds ``X`` at its top level (in the student's version of that cell or in the released
one), failed *only* because that earlier cell did: the name is unbound exactly because its cell stopped
before binding it. Such a cell keeps its score (0: it did fail) but its traceback is replaced by one line
naming the cell to fix first. The same holds for a name that a test cell the student deleted binds in
the released notebook (the capstone's Parts D-E use the models Part C's cell makes): the line says to put
that cell back. Anything else (a NameError for a name no failing cell binds, a wrong value produced by a
function that did run) is the cell's own failure and is shown as it is.
"""
from __future__ import annotations

import ast
import functools
import os
import re
import shutil
from pathlib import Path

import nbformat
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from autograder.course import EXERCISES, PACKAGE, REPO, first_line, is_test_cell, nbgrader_meta

TEMPLATES = PACKAGE / "templates"
TEMPLATE_NAME = "rlhf_feedback"
TEMPLATE_FILE = "feedback_page.html.j2"      # extends nbgrader's feedback/index.html.j2
MATHJAX = REPO / "book" / "_static" / "vendor" / "mathjax"   # the book's copy (scripts/vendor_assets.sh)
MATHJAX_DIR = "mathjax"                                      # beside each feedback HTML file
# nbgrader's ClearHiddenTests markers (its begin/end_test_delimeter defaults): a line holding one is a marker
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
MAX_MESSAGE = 300


def _parse(source: str) -> ast.Module | None:
    """The cell's AST, IPython magics and shell lines blanked; None if it still does not parse."""
    lines = ["" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def docstring_title(source: str) -> str:
    """The first line of a cell's leading string literal ("" if it has none)."""
    tree = _parse(source)
    doc = ast.get_docstring(tree) if tree else None
    return first_line(doc or "")


def bound_names(source: str) -> set[str]:
    """Names a cell binds at its top level (defs, classes, imports, assignments, loop targets)."""
    tree = _parse(source)
    if tree is None:
        return set()
    names: set[str] = set()
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)             # its body binds nothing at the top level
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        todo.extend(n for n in ast.iter_child_nodes(node) if not isinstance(n, ast.Lambda))
    return names


# ------------------------------------------------------------------ where did a test cell fail?
def _split_hidden(source: str) -> tuple[set[int], bool]:
    """(1-based numbers of the lines inside hidden-test regions, whether the cell has any)."""
    hidden, inside, found = set(), False, False
    for number, line in enumerate(source.splitlines(), start=1):
        if BEGIN_HIDDEN in line:
            inside = found = True
        elif END_HIDDEN in line:
            inside = False
        elif inside:
            hidden.add(number)
    return hidden, found


ANYTHING = ("", "")    # the pieces of a message that can be any text


def _pieces(node) -> tuple[str, ...]:
    """The messages an expression can produce, as its literal pieces: any text may stand between two
    consecutive pieces, where a value is formatted in (f-strings, ``+``, ``%``, ``.format``); one piece
    means exactly that text; ``ANYTHING`` for an expression that is not a string template."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if isinstance(node, ast.JoinedStr):
        pieces = [""]
        for value in node.values:
            if isinstance(value, ast.Constant):
                pieces[-1] += str(value.value)
            else:
                pieces.append("")
        return tuple(pieces)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _pieces(node.left), _pieces(node.right)
        return (*left[:-1], left[-1] + right[0], *right[1:])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant):
        return tuple(re.split(r"%[-#0 +]*\d*(?:\.\d+)?[sdrfgexc]", str(node.left.value)))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant)):
        return tuple(re.split(r"\{[^{}]*\}", str(node.func.value.value)))
    return ANYTHING


def _fits(pieces: tuple[str, ...], text: str) -> bool:
    """Whether `text` is pieces[0] + … + pieces[1] + … + pieces[-1] (… any text).

    Matched piece by piece, leftmost first, in time linear in the text: the message is the student's
    to choose, and a regular expression with several wildcards could be made to backtrack for hours.
    """
    if len(pieces) == 1:
        return text == pieces[0]
    first, *middle, last = pieces
    if len(text) < len(first) + len(last) or not (text.startswith(first) and text.endswith(last)):
        return False
    position, end = len(first), len(text) - len(last)
    for piece in middle:
        found = text.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def _raised(tree: ast.Module) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, exception name, message pieces) of every ``assert`` and ``raise X(...)`` of a cell."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            out.append((node.lineno, "AssertionError", _pieces(node.msg) if node.msg else ("",)))
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            out.append((node.lineno, name, _pieces(node.exc.args[0]) if node.exc.args else ("",)))
    return out


def failure_origin(source: str, ename: str, evalue: str) -> str:
    """Which part of a test cell raised ``ename: evalue``: "hidden", "visible" or "" (unknown).

    With minimal tracebacks the error carries no line number, so it is matched against the messages
    the cell's own ``assert``/``raise`` statements can produce, split by where they stand. An error that
    only a hidden statement can produce is a hidden-test failure; one a visible statement can produce is
    a visible one. An error no statement of the cell produces (raised in the student's function or a
    helper) or one both parts can produce is "": which test met it is not known.
    """
    tree = _parse(source)
    if tree is None:
        return ""
    hidden_lines, _ = _split_hidden(source)
    parts = set()
    for line, name, pieces in _raised(tree):
        informative = len(pieces) == 1 or "".join(pieces)        # a bare wildcard fits every message
        if name == ename and informative and _fits(pieces, evalue or ""):
            parts.add("hidden" if line in hidden_lines else "visible")
    return parts.pop() if len(parts) == 1 else ""


# ------------------------------------------------------------------ the preprocessor
def _error(cell):
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    return errors[-1] if errors else None


def _one_line(error) -> str:
    """``Error: message`` (``Error`` alone when it has no message), first line, at most MAX_MESSAGE long."""
    ename, evalue = error.get("ename"), first_line(str(error.get("evalue") or ""))
    return (f"{ename}: {evalue}" if evalue else str(ename))[:MAX_MESSAGE]


def _unbound_name(error) -> str | None:
    """X of ``NameError: name 'X' is not defined``, else None."""
    if error is None or error.get("ename") != "NameError":
        return None
    match = re.fullmatch(r"name '(\w+)' is not defined", str(error.get("evalue", "")).strip())
    return match.group(1) if match else None


def _released_cells(resources: dict) -> dict:
    """grade_id -> cell of the released notebook this one was graded against ({} if none)."""
    info = resources.get("nbgrader", {})
    path = EXERCISES / str(info.get("assignment")) / f"{info.get('notebook')}.ipynb"
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return {}
    return {grade_id: c for c in nb.cells if (grade_id := nbgrader_meta(c).get("grade_id"))}


class FeedbackNotes(Preprocessor):
    """Name each test cell, say where it failed, and quiet follow-on errors (see the module docstring).

    Goes in ``GenerateFeedback.preprocessors`` after ``GetGrades`` and before ``ClearHiddenTests``.
    """

    enabled = Bool(True)          # nbconvert's preprocessors are off unless enabled


    def preprocess(self, nb, resources):
        cells = _released_cells(resources)
        released = {grade_id: c.source for grade_id, c in cells.items()}
        present = {nbgrader_meta(c).get("grade_id") for c in nb.cells}
        # (cell label, names it binds, why it did not bind them): latest last; deleted test cells first
        failed: list[tuple[str, set[str], str]] = [
            (grade_id, bound_names(c.source), "was deleted from your notebook: put it back from the released one")
            for grade_id, c in cells.items() if grade_id not in present and is_test_cell(c)]
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            error, meta = _error(cell), nbgrader_meta(cell)
            label = meta.get("grade_id") or f"cell {index + 1}"
            cause = self._cause(error, failed)
            if cause:
                cell.outputs = [o for o in cell.outputs if o.get("output_type") != "error"]
            if is_test_cell(cell):
                cell.metadata["feedback"] = self._test_note(cell, error, cause)
            elif cause:
                cell.metadata["feedback"] = {"status": "follow-on", "message": cause}
            if _split_hidden(cell.source)[1]:
                for output in cell.outputs:      # never a hidden line in a traceback, whatever the xmode
                    if output.get("output_type") == "error":
                        output["traceback"] = [_one_line(output)]
            if error is not None:
                names = bound_names(cell.source) | bound_names(released.get(meta.get("grade_id"), ""))
                failed.append((label, names, f"failed ({cause or _one_line(error)}): fix it first"))
        return nb, resources

    @staticmethod
    def _cause(error, failed) -> str:
        """The one-line reason a cell's error only follows from an earlier failure ("" if it does not)."""
        name = _unbound_name(error)
        for label, names, why in reversed(failed):
            if name and name in names:
                return (f"not run to the end: it uses {name}, which the cell {label} above should define, "
                        f"but that cell {why}")
        return ""

    @staticmethod
    def _test_note(cell, error, cause: str) -> dict:
        meta = nbgrader_meta(cell)
        note = {"title": docstring_title(cell.source), "status": "passed", "message": ""}
        score, points = meta.get("score"), meta.get("points")
        if score is not None and points is not None and float(score) >= float(points):
            return note
        if cause:
            note.update(status="follow-on", message=cause)
        elif error is None:
            note.update(status="error", message="no test reported a result (scored 0)")
        else:
            origin = failure_origin(cell.source, error.get("ename", ""), str(error.get("evalue", "")))
            note.update(status={"hidden": "hidden", "visible": "failed"}.get(origin, "error"),
                        message=_one_line(error))
        return note


# ------------------------------------------------------------------ making and handing out the files
def generate(api, assignment: str, student: str) -> dict:
    """nbgrader's ``generate_feedback`` for one student, with the course's feedback template.

    ``NbGraderAPI.generate_feedback`` forces ``HTMLExporter.template_name = "feedback"``, nbgrader's own
    template (MathJax from a CDN, "Test cell" headings); this is the same call, keeping the template that
    ``nbgrader_config.py`` names. Returns nbgrader's result dict (success, log, error).
    """
    from nbgrader.converters import GenerateFeedback
    from nbgrader.utils import capture_log, temp_attrs

    with temp_attrs(api.coursedir, assignment_id=assignment, student_id=student):
        app = GenerateFeedback(coursedir=api.coursedir, parent=api)
        app.force = True
        return capture_log(app)


def publish(src: Path, dst: Path) -> None:
    """Copy one student's feedback folder (``src``, nbgrader's) to ``dst``, with MathJax beside the HTML.

    MathJax (≈ 2 MB) is hard-linked from the book's vendored copy where the file system allows it, so a
    class costs no extra disk; elsewhere it is copied.
    """
    if Path(src).resolve() != Path(dst).resolve():     # --feedback-dir may be nbgrader's own folder
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
    if MATHJAX.is_dir() and not (dst / MATHJAX_DIR).exists():
        shutil.copytree(MATHJAX, dst / MATHJAX_DIR, copy_function=_link_or_copy)


# MathJax 3.2.2's tex-svg-full.js (every TeX extension, glyphs as SVG paths: no font or other file to
# fetch), gzipped by scripts/vendor_assets.sh; LICENSE beside it.
MATHJAX_INLINE = PACKAGE / "vendor" / "mathjax-svg" / "tex-svg-full.js.gz"
# the template's <script id="MathJax-script" async src="mathjax/tex-mml-chtml.js">, as nbconvert writes it out
_MATHJAX_TAG = re.compile(r'<script\b(?=[^>]*\bid="MathJax-script")'
                          rf'(?=[^>]*\bsrc="{MATHJAX_DIR}/tex-mml-chtml\.js")[^>]*>\s*</script>')
_INLINE_ID = "mathjax-inline"
# Unzips the page's copy of MathJax with the browser's own DecompressionStream (Chrome 80, Firefox 113,
# Safari 16.4) and runs it; window.MathJax (set just before) configures it as for the folder's copy.
_INLINE_LOADER = """<script>
(function () {
  var data = atob(document.getElementById('%s').textContent.replace(/\\s+/g, ''));
  var bytes = new Uint8Array(data.length);
  for (var i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i);
  var unzipped = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
  new Response(unzipped).text().then(function (code) {
    var script = document.createElement('script');
    script.id = 'MathJax-script';
    script.textContent = code;
    document.head.appendChild(script);
  });
})();
</script>""" % _INLINE_ID


@functools.lru_cache(maxsize=1)
def _inline_payload() -> str:
    """MATHJAX_INLINE as base64 lines, read and encoded once for all the pages of a run."""
    import base64

    payload = base64.b64encode(MATHJAX_INLINE.read_bytes()).decode("ascii")
    return "\n".join(payload[i:i + 120] for i in range(0, len(payload), 120))


def inline_mathjax(page: str) -> str:
    """A feedback page that carries MathJax itself (≈ 0.95 MB more), instead of loading it from the
    ``mathjax/`` folder beside it: for nbgrader's ``release_feedback``, which hands out the .html alone.

    Idempotent; raises ValueError for a page that is not one of this course's feedback pages.
    """
    if f'id="{_INLINE_ID}"' in page:
        return page
    tag = _MATHJAX_TAG.search(page)
    if tag is None:
        raise ValueError("not a feedback page of the course's template (no MathJax script to replace)")
    data = f'<script type="application/gzip" id="{_INLINE_ID}">\n{_inline_payload()}\n</script>'
    inline = f"{data}\n{_INLINE_LOADER}"
    return page[:tag.start()] + inline + page[tag.end():]


def inline_mathjax_in(folder: Path) -> tuple[int, int]:
    """Make every feedback page under ``folder`` (nbgrader's ``feedback/``, which ``release_feedback``
    reads) carry MathJax; returns (pages changed, pages already so)."""
    changed = already = 0
    for page in sorted(Path(folder).rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        try:
            new = inline_mathjax(text)
        except ValueError as exc:
            raise ValueError(f"{page}: {exc}") from None
        if new == text:
            already += 1
            continue
        tmp = page.with_name(f".{page.name}.tmp")
        tmp.write_text(new, encoding="utf-8")
        os.replace(tmp, page)                      # a page is whole before and after, never half written
        changed += 1
    return changed, already


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:                    # another file system, or links not allowed: a plain copy
        shutil.copy2(src, dst)
