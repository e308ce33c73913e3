"""The check outside the student's kernel: a test cell's graded calls against the solution's.

Every graded test cell runs twice with the same recorder (``autograder.recorder``): once, before the
class is graded, in the instructor's solution notebook (the *trusted* run), and once in each
submission's kernel. A record is one top-level call of a graded function or method made while the cell
ran: its arguments, its result (or the exception it raised), and for a method the plain-data attributes
of its object afterwards. Here, in the grader's process, which runs no student code, the submission's
records of a cell are compared with the trusted ones:

- every graded function the solution's run of the cell called must have been called, at least as often
  (up to ``recorder.MAX_CALLS``);
- the first call of each must have received the test's inputs (the same arguments as in the trusted
  run; in a property cell, arguments of the same shapes), so a submission cannot choose easy inputs;
- every call whose arguments match the trusted call's must agree with it: the same exception, a
  gradient where the solution's result had one, and, in a cell that grades *values* (worked examples,
  cases by hand), the same values within a tolerance; in a cell that grades a *property* (invariants,
  stability, where a clip acts, a micro-run's outcome: ``property_cells.json``), only results of the
  same shape and kind, since a function with a mistake elsewhere may pass such a cell with other values
  and the notebooks promise that a mistake costs the points of the cells that grade it, not of every
  cell that calls the function. Calls whose inputs differ after the first are skipped: in a training
  micro-run, float rounding of a correct answer moves later inputs.

The calls of a graded ``torch.nn.Module`` (chapter 3's RewardModel: its ``__init__`` and ``forward``)
are compared by structure in every cell: its outputs depend on the random initial weights of the layers
the student chose to build, in the order they built them, so no value of the solution's run is the
student's to match; its calls must still happen, on the test's inputs, with results of the right shape,
and a gradient where the solution's had one.

In a cell compared by structure (a property cell, or one that calls a graded torch module),
``autograder.replay`` then runs the cell's own assertions again in the grader on the submission's
recorded answers, where its records allow it (``plan["replay"]``).

A cell that disagrees, or whose records never came back (the cell was rewritten, skipped, swallowed,
or the kernel died), gets an error output, so nbgrader scores it 0 whatever the kernel said. Cells
whose solution run calls no graded function are scored by the kernel alone; ``outside_share`` says how
many points are checked here, and how.
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import nbformat

from autograder import recorder
from autograder.course import graded_cells, is_answer_cell, nbgrader_meta

FORMAT = 3                    # 2: graded torch modules are recorded too; 3: property cells replayed
RTOL = 1e-3                   # loose on purpose: a forged or wrong value is off by far more than rounding
ATOL = 1e-6
ATOL_SCALE = 1e-4             # plus this fraction of the array's largest magnitude


def cache_dir() -> Path:
    """Where trusted records are kept between runs: never inside what the sandbox can read."""
    return Path(os.environ.get("AUTOGRADER_CACHE") or Path.home() / ".cache" / "autograder").expanduser()


# ------------------------------------------------------------------ what the recorder watches
def _is_module_class(node: ast.ClassDef) -> bool:
    return any("Module" in ast.unparse(base) for base in node.bases)


def _answer_definitions(nb):
    """The top-level ``def``s and classes of a notebook's solution cells, public names only."""
    for cell in nb.cells:
        if not is_answer_cell(cell):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                yield node


def graded_names(nb) -> list[str]:
    """Top-level functions and classes defined in a notebook's solution cells, torch modules included."""
    return list(dict.fromkeys(node.name for node in _answer_definitions(nb)))


def module_classes(nb) -> list[str]:
    """The graded names that are ``torch.nn.Module`` classes: their calls are compared by structure only."""
    return list(dict.fromkeys(node.name for node in _answer_definitions(nb)
                              if isinstance(node, ast.ClassDef) and _is_module_class(node)))


def imported_modules(nb) -> list[str]:
    """Modules the notebook imports (and the test helpers' modules): restored before each test cell."""
    found = {"math"}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    if any(m.split(".")[0] == "numpy" for m in found):
        found.update({"numpy", "numpy.testing", "numpy.linalg", "numpy.random"})
    if any(m.split(".")[0] == "torch" for m in found):
        found.update({"torch", "torch.nn.functional", "torch.testing"})
    return sorted(found)


def _constant(node: ast.AST) -> bool:
    """A literal, or arithmetic on literals and ``math`` functions of them (``LN2 = math.log(2)``)."""
    try:
        ast.literal_eval(node)
        return True
    except ValueError:
        pass
    if isinstance(node, ast.BinOp):
        return _constant(node.left) and _constant(node.right)
    if isinstance(node, ast.UnaryOp):
        return _constant(node.operand)
    if isinstance(node, ast.Attribute):          # math.pi
        return isinstance(node.value, ast.Name) and node.value.id == "math"
    if isinstance(node, ast.Call):
        return (isinstance(node.func, ast.Attribute) and _constant(node.func) and not node.keywords
                and all(_constant(a) for a in node.args))
    return False


def _defines_only(tree: ast.Module) -> bool:
    """A cell of imports, definitions, asserts and constants: safe and cheap to run again."""
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assert)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and _constant(node.value):
            continue
        return False
    return True


def setup_cells(nb) -> list[str]:
    """The notebook's set-up cells (neither answers nor tests) that only import and define: run again
    before each test cell, they bind `np`, the test helpers, ... to the instructor's objects, whatever a
    student's cell rebound those names to."""
    out = []
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if cell.cell_type != "code" or meta.get("solution") or meta.get("grade"):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        defines = any(isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)) for n in tree.body)
        if defines and _defines_only(tree):       # not a cell of settings alone (PRESET, RUN_FULL: the student's)
            out.append(cell.source)
    return out


def install_expression(names: list[str], modules: list[str], setup: list[str] = ()) -> str:
    """The expression that loads the recorder into a fresh kernel, before any cell runs.

    The grader's requests are user expressions of an empty cell: IPython evaluates those directly, not
    through the input transformers a student's code may have registered, so they cannot be rewritten.
    """
    source = Path(recorder.__file__).read_text(encoding="utf-8")
    code = ("import sys, types\n"
            "module = types.ModuleType('_autograder_recorder')\n"
            "exec(compile(source, 'autograder/recorder.py', 'exec'), module.__dict__)\n"
            "sys.modules[module.__name__] = module\n"
            "module.install(names, modules, setup)\n")
    return (f"__import__('builtins').exec({code!r}, {{'source': {source!r}, 'names': {names!r}, "
            f"'modules': {modules!r}, 'setup': {list(setup)!r}}})")


BEGIN_EXPRESSION = "__import__('_autograder_recorder').begin()"
END_EXPRESSION = "__import__('_autograder_recorder').end()"


# ------------------------------------------------------------------ comparing records
def _scale(enc) -> float:
    if isinstance(enc, dict) and "data" in enc:
        finite = [abs(v) for v in enc["data"] if isinstance(v, (int, float)) and math.isfinite(v)]
        return max(finite, default=0.0)
    if isinstance(enc, dict) and "summary" in enc:
        finite = [abs(v) for v in enc["summary"]["samples"] if math.isfinite(v)]
        return max(finite, default=0.0)
    return abs(enc) if isinstance(enc, (int, float)) and math.isfinite(enc) else 0.0


def _close(t: float, s: float, atol: float) -> bool:
    if not isinstance(s, (int, float)) or isinstance(s, bool) != isinstance(t, bool):
        return False
    if math.isnan(t) or math.isnan(s):
        return math.isnan(t) and math.isnan(s)
    if math.isinf(t) or math.isinf(s):
        return t == s
    return abs(s - t) <= atol + RTOL * abs(t)


def _number(enc):
    """A scalar's value (Python or numpy number, 0-d array or tensor), or None when it is not one."""
    if isinstance(enc, bool):
        return float(enc)
    if isinstance(enc, (int, float)):
        return float(enc)
    if isinstance(enc, dict) and enc.get("t") == "f":
        return float(enc["v"])
    if isinstance(enc, dict) and enc.get("t") in ("array", "tensor") and enc.get("shape") == [] and "data" in enc:
        return float(enc["data"][0])
    return None


def same(t, s, atol: float | None = None, *, values: bool = True) -> bool:
    """Do two encoded values agree? Lenient on container types (list/tuple, array/tensor, float/numpy
    float), strict on shapes, lengths and keys, and with ``values`` on the values too, within the
    tolerance; values=False compares the structure only: numbers for numbers, arrays of the same shape,
    containers of the same length and keys, objects for objects."""
    if values and atol is None:
        atol = ATOL + ATOL_SCALE * _scale(t)
    tn, sn = _number(t), _number(s)
    if tn is not None or sn is not None:
        return tn is not None and sn is not None and (not values or _close(tn, sn, atol))
    if t is None or isinstance(t, str):
        return t == s
    if not isinstance(t, dict) or not isinstance(s, dict):
        return False
    kind = t.get("t")
    if kind in ("array", "tensor"):
        if s.get("t") not in ("array", "tensor") or s.get("shape") != t.get("shape"):
            return False
        if not values:
            return True
        if "data" in t:
            return "data" in s and len(s["data"]) == len(t["data"]) and \
                all(_close(a, b, atol) for a, b in zip(t["data"], s["data"]))
        ts, ss = t["summary"], s.get("summary") or {}
        return (ss.get("nonfinite") == ts["nonfinite"] and len(ss.get("samples", [])) == len(ts["samples"])
                and all(_close(a, b, atol) for a, b in zip(ts["samples"], ss["samples"]))
                and _close(ts["sum"], ss.get("sum"), atol * max(1, len(ts["samples"])))
                and _close(ts["abs"], ss.get("abs"), atol * max(1, len(ts["samples"]))))
    # each item gets its own tolerance, from its own magnitude
    if kind == "list":
        return s.get("t") == "list" and s.get("len") == t["len"] and \
            all(same(a, b, values=values) for a, b in zip(t["items"], s["items"]))
    if kind == "dict":
        return s.get("t") == "dict" and set(s.get("items", {})) == set(t["items"]) and \
            all(same(v, s["items"][k], values=values) for k, v in t["items"].items())
    return kind == "obj" and s.get("t") == "obj"


def _valid(records) -> bool:
    return isinstance(records, list) and all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                             and "args" in r for r in records)


def _by_name(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["name"], []).append(r)
    return out


def _call_disagrees(t: dict, s: dict, values: bool) -> str | None:
    """Why one student call disagrees with the trusted call on the same inputs (None: it agrees).

    values=False (a cell that grades a property, not the values): the same exception, results of the
    same shape and kind, a gradient where the solution had one; not the values themselves.
    """
    if "raised" in t:
        wanted = t["raised"][0]
        return None if wanted in (s.get("raised") or []) else f"did not raise {wanted}"
    if "raised" in s:
        return f"raised {s['raised'][0]}"
    if t.get("result") is not None and not same(t["result"], s.get("result"), values=values):
        return "returned a different value" if values else "returned a result of another shape or kind"
    res_t, res_s = t.get("result"), s.get("result")
    if isinstance(res_t, dict) and res_t.get("grad") and not (isinstance(res_s, dict) and res_s.get("grad")):
        return "returned a tensor without a gradient"
    common = set(t.get("state") or {}) & set(s.get("state") or {})
    if t.get("state") and not common:
        return "left its object without the documented attributes"
    if any(not same(t["state"][k], s["state"][k], values=values) for k in common):
        return "left its object's attributes different"
    return None


def _by_value(name: str, values: bool, structure_names) -> bool:
    """Are the calls of graded function ``name`` (``RewardModel.forward``: its class's name first)
    compared by value? Not in a cell that grades a property (``values=False``), nor for a graded
    torch module (``structure_names``)."""
    return values and name.split(".", 1)[0] not in structure_names


def disagreement(trusted: list[dict], student, values: bool = True,
                 structure_names: tuple[str, ...] | list[str] = ()) -> str | None:
    """One line on why a cell's student records disagree with the trusted ones; None when they agree.

    ``values=False`` compares the structure of every call; ``structure_names`` (graded torch modules)
    that of their own calls only. Says which graded function and which of its calls, never the values
    (they may be hidden tests'). Whether a call changed its inputs is not compared: the cells that grade
    it do so themselves, and a mutation would otherwise cost the points of every cell that calls it.
    """
    if not trusted:
        return None
    if not _valid(student):
        return "the cell's calls of the graded functions could not be read back from the kernel"
    ours = _by_name(student)
    for name, calls in _by_name(trusted).items():
        by_value = _by_value(name, values, structure_names)
        theirs = ours.get(name, [])
        if len(theirs) < len(calls):
            return (f"{name} was called {len(theirs)} time(s) while the cell ran, where the tests call it "
                    f"{len(calls)} time(s)")
        for i, (t, s) in enumerate(zip(calls, theirs)):
            # In a property cell the inputs may follow from the student's earlier answers (a micro-run
            # trains the model the student's SFT made): only their shape must be the test's.
            if not same(t["args"], s.get("args"), values=by_value):
                if i == 0:
                    return f"the first call of {name} did not receive the test's inputs"
                continue
            why = _call_disagrees(t, s, by_value)
            if why:
                return f"call {i + 1} of {name} {why}"
    return None


# ------------------------------------------------------------------ which cells compare values
PROPERTY_CELLS = Path(__file__).with_name("property_cells.json")
"""Test cells that grade a property of a function (where the clip acts, padding invariance, a micro-run's
outcome) rather than its values: the outside check compares only the structure of their calls there."""


def property_cells(assignment: str) -> dict[str, str]:
    """grade_id -> why, for one assignment's cells compared by structure only."""
    table = json.loads(PROPERTY_CELLS.read_text(encoding="utf-8"))
    return {gid: why for gid, why in table.get(assignment, {}).items()}


# ------------------------------------------------------------------ the trusted run
def plan_key(solution: Path) -> str:
    h = hashlib.sha256(f"format {FORMAT}\n".encode())
    h.update(Path(recorder.__file__).read_bytes())
    h.update(Path(__file__).with_name("replay.py").read_bytes())
    h.update(Path(solution).read_bytes())
    h.update(PROPERTY_CELLS.read_bytes())
    return h.hexdigest()[:24]


def outside_share(plan: dict, nb) -> tuple[float, float, float, float]:
    """(points whose values are checked outside the kernel, points whose assertions are replayed there,
    points whose calls' structure alone is, all points) of a notebook's test cells."""
    values = replayed = structure = total = 0.0
    for grade_id, cell in graded_cells(nb).items():
        points = float(nbgrader_meta(cell).get("points", 0))
        total += points
        records = plan["cells"].get(grade_id)
        if records:
            values_cell = grade_id not in plan.get("structure_only", [])
            if any(_by_value(r["name"], values_cell, plan.get("structure_names", [])) for r in records):
                values += points
            elif grade_id in plan.get("replay", {}):
                replayed += points
            else:
                structure += points
    return values, replayed, structure, total


def _cache_file(solution: Path) -> Path:
    return cache_dir() / f"{solution.parent.name}-{solution.stem}-{plan_key(solution)}.json"


def cached_plan(solution: Path) -> dict | None:
    """The plan recorded before for this version of the solution notebook, if any."""
    try:
        return json.loads(_cache_file(Path(solution)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def record_plan(solution: Path, run_notebook) -> dict:
    """The recorder's plan for one solution notebook: graded names, modules, and each test cell's
    trusted records, from running it with ``run_notebook(nb, workdir, plan) -> (records, failed)``
    in a copy of its folder; saved in the cache."""
    solution = Path(solution)
    nb = nbformat.read(solution, as_version=4)
    plan = {"names": graded_names(nb), "modules": imported_modules(nb), "setup": setup_cells(nb), "cells": {},
            "structure_only": sorted(property_cells(solution.parent.name)),
            "structure_names": module_classes(nb)}
    with tempfile.TemporaryDirectory(prefix="autograder-trusted-") as tmp:
        workdir = Path(tmp) / solution.parent.name
        shutil.copytree(solution.parent, workdir)
        records, failed = run_notebook(nb, workdir, plan)
    if failed:
        raise RuntimeError(f"the solution {solution.parent.name}/{solution.name} fails its own test cell(s) "
                           f"{', '.join(failed)} when run for the outside check")
    lost = [gid for gid, cell_records in records.items() if cell_records is None]
    if lost:       # kept as "no graded calls", these cells would go unchecked outside the kernel
        raise RuntimeError(f"the records of test cell(s) {', '.join(lost)} of the solution "
                           f"{solution.parent.name}/{solution.name} did not come back from its kernel")
    plan["cells"] = records
    # the cells compared by structure (property cells, and those of a graded torch module) whose
    # assertions can run again in the grader on a submission's records
    from autograder import replay

    def by_structure(gid: str) -> bool:
        return gid in plan["structure_only"] or any(
            not _by_value(r["name"], True, plan["structure_names"]) for r in records.get(gid) or [])

    sources = {gid: cell.source for gid, cell in graded_cells(nb).items() if by_structure(gid)}
    plan["replay"] = {gid: sources[gid] for gid in replay.replayable(sources, plan["setup"], plan["names"],
                                                                        records)}
    cached = _cache_file(solution)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    tmp_file.write_text(json.dumps(plan), encoding="utf-8")
    os.replace(tmp_file, cached)
    return plan
