"""Graded answers taken from a notebook, for code that needs a learner's functions outside it.

The helper package never contains a graded answer. Whatever needs one at work (the capstone's command
line, a book page that runs a graded function) executes the answer cells of a notebook in a fresh
namespace and takes the names it needs from there: the learner's own filled-in exercise, or, in the
instructor's copy of the course, the solution notebook. Only ``json`` reads the notebook (no nbformat),
so this also works on a machine without Jupyter, such as the GPU check's.

    answers = load_answers("exercises/capstone/capstone.ipynb", ["sft_loss", "masked_mean"])
    answers["sft_loss"](logits, input_ids, prompt_mask, attention_mask)
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PRELUDE = ("import copy\nimport math\nimport numpy as np\nimport torch\nimport torch.nn as nn\n"
           "import torch.nn.functional as F\n")
"""What every answer cell may take for granted (each exercise imports these in its first cell)."""

_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$", re.MULTILINE)
_UNSOLVED = "raise NotImplementedError()"


class MissingAnswers(RuntimeError):
    """A notebook does not (yet) define the graded functions asked for."""


def answer_cells(notebook) -> list[tuple[str, str]]:
    """(grade_id, source) of every answer cell (nbgrader ``solution: true``), in notebook order."""
    path = Path(notebook)
    try:
        nb = json.loads(path.read_text())
        cells = nb["cells"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MissingAnswers(f"cannot read the notebook {path}: {type(err).__name__}: {err}") from err
    out = []
    for cell in cells:
        meta = (cell.get("metadata") or {}).get("nbgrader") or {}
        if cell.get("cell_type") == "code" and meta.get("solution"):
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            out.append((str(meta.get("grade_id", "?")), _MARKERS.sub("", source)))
    return out


def load_answers(notebook, names: list[str]) -> dict:
    """Execute a notebook's answer cells and return {name: object} for each of ``names``.

    Raises MissingAnswers naming what is wrong: a name no answer cell defines, a name whose cell is
    still the released stub (``raise NotImplementedError()``), or an answer cell that raises.

    The cells run in the notebook's own folder, as Jupyter runs them: a cell that loads the answers of
    another notebook by a relative path (the capstone's Part 0 may) finds it from any working folder.
    """
    path = Path(notebook)
    namespace: dict = {"__name__": f"answers_of_{path.stem}"}
    exec(PRELUDE, namespace)
    unsolved, stub_cells = set(), []
    cells = answer_cells(path)
    here = os.getcwd()
    os.chdir(path.resolve().parent)
    try:
        for grade_id, source in cells:
            before = set(namespace)
            try:
                exec(compile(source, f"{path.name}:{grade_id}", "exec"), namespace)
            except NotImplementedError:
                if _UNSOLVED not in source:
                    raise MissingAnswers(f"{path}: answer cell {grade_id!r} raises NotImplementedError") from None
                stub_cells.append(grade_id)          # a released stub that raises at top level defines nothing
                continue
            except Exception as err:
                raise MissingAnswers(f"{path}: answer cell {grade_id!r} raises {type(err).__name__}: {err}") from err
            if _UNSOLVED in source:
                unsolved |= set(namespace) - before | {grade_id}
    finally:
        os.chdir(here)
    missing = [n for n in names if n not in namespace]
    stubs = [n for n in names if n in unsolved]
    if missing or stubs:
        what = []
        if stubs:
            what.append("not implemented yet (still `raise NotImplementedError()`): " + ", ".join(stubs))
        if missing:
            what.append("defined by no answer cell: " + ", ".join(missing))
        if stub_cells:
            what.append("answer cells still the released stub: " + ", ".join(stub_cells))
        raise MissingAnswers(f"{path}: " + "; ".join(what))
    return {n: namespace[n] for n in names}


def _code_key(code: types.CodeType, skip_docstring: bool = False) -> tuple:
    """What a code object computes, without where it was written: bytecode, constants (nested code
    included), names. Moving a function or editing a comment or (``skip_docstring``: the first constant,
    where CPython keeps a function's docstring, or None without one) its docstring leaves it unchanged;
    editing the body does not."""
    consts = code.co_consts[1:] if skip_docstring else code.co_consts
    consts = tuple(_code_key(c) if isinstance(c, types.CodeType) else repr(c) for c in consts)
    return code.co_code, consts, code.co_names, code.co_varnames


def _describe(obj) -> str:
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        return repr(tuple(_describe(f) for f in (obj.fget, obj.fset, obj.fdel) if f is not None))
    if isinstance(obj, types.FunctionType):
        consts = obj.__code__.co_consts
        docstring_first = bool(consts) and consts[0] == obj.__doc__
        return repr((_code_key(obj.__code__, docstring_first), repr(obj.__defaults__), repr(obj.__kwdefaults__)))
    if isinstance(obj, type):
        members = sorted((k, _describe(v)) for k, v in vars(obj).items()
                         if not (k.startswith("__") and k.endswith("__")) or k == "__init__")
        return repr((obj.__name__, [b.__name__ for b in obj.__bases__], members))
    return repr(obj)


def answers_fingerprint(answers: dict) -> dict:
    """{name: short hash of what it computes} for graded functions and classes (``_code_key``): the capstone
    stores it with a run, so that resuming with changed answers is refused instead of reusing stages the
    old ones made. Functions that an answer calls but that are not among ``answers`` are not covered; the
    hash of the same code differs between Python versions."""
    return {name: hashlib.sha256(_describe(obj).encode()).hexdigest()[:16] for name, obj in sorted(answers.items())}


def graded_constants(notebook: str | Path, names: list[str]) -> dict:
    """The constants a notebook's graded cells assign (``PPO_GOLD_GAIN, KL_BOUND = 0.15, 12.0``), hidden
    tests included: the calibration scripts report their runs against the very bands the notebook grades."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    found = {}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or not cell["metadata"].get("nbgrader", {}).get("grade"):
            continue
        source = re.sub(r"### (BEGIN|END) HIDDEN TESTS", "", "".join(cell["source"]))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
                targets = [target] if isinstance(target, ast.Name) else getattr(target, "elts", [])
                values = [value] if isinstance(target, ast.Name) else getattr(value, "elts", [])
                for n, v in zip(targets, values):
                    if isinstance(n, ast.Name) and n.id in names and isinstance(v, ast.Constant):
                        found[n.id] = v.value
    missing = set(names) - set(found)
    assert not missing, f"constants not found in the graded cells of {notebook}: {sorted(missing)}"
    return found
