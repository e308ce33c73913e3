"""The check outside the student's kernel: a test cell's graded calls against the solution's.

Every graded test cell runs twice with the same recorder (``autograder.recorder``): once, before the
class is graded, in the instructor's solution notebook (the *trusted* run), and once in each
submission's kernel. A record is one top-level call of a graded function or method made while the cell
ran: its arguments, its result (or the exception it raised), whether it changed its arguments, and for
a method the plain-data attributes of its object afterwards. Here, in the grader's process, which runs
no student code, the submission's records of a cell are compared with the trusted ones:

- every graded function the solution's run of the cell called must have been called, at least as often
  (up to ``recorder.MAX_CALLS``);
- the first call of each must have received the test's inputs (the same arguments as in the trusted
  run), so a submission cannot choose easy inputs of its own;
- every call whose arguments match the trusted call's must have matched its result: same shape, values
  within a tolerance, the same exception, no change to its inputs where the solution made none, a
  gradient where the solution's result had one. Calls whose inputs differ after the first are skipped:
  in a training micro-run, float rounding of a correct answer moves later inputs.

A cell that disagrees, or whose records never came back (the cell was rewritten, skipped, swallowed,
or the kernel died), gets an error output, so nbgrader scores it 0 whatever the kernel said. Cells
whose solution run calls no recordable graded function (a ``torch.nn.Module`` of the student's, such
as chapter 3's RewardModel, is not recorded: its weights depend on the order its layers were built in)
are scored by the kernel alone; ``outside_share`` says how many points are checked here.
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

FORMAT = 1
RTOL = 1e-3                   # loose on purpose: a forged or wrong value is off by far more than rounding
ATOL = 1e-6
ATOL_SCALE = 1e-4             # plus this fraction of the array's largest magnitude


def cache_dir() -> Path:
    """Where trusted records are kept between runs: never inside what the sandbox can read."""
    return Path(os.environ.get("AUTOGRADER_CACHE") or Path.home() / ".cache" / "autograder").expanduser()


# ------------------------------------------------------------------ what the recorder watches
def _is_module_class(node: ast.ClassDef) -> bool:
    return any("Module" in ast.unparse(base) for base in node.bases)


def graded_names(nb) -> list[str]:
    """Top-level functions and classes defined in a notebook's solution cells (not torch modules)."""
    names = []
    for cell in nb.cells:
        meta = (cell.get("metadata") or {}).get("nbgrader") or {}
        if cell.cell_type != "code" or not meta.get("solution"):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) or (isinstance(node, ast.ClassDef) and not _is_module_class(node)):
                if not node.name.startswith("_") and node.name not in names:
                    names.append(node.name)
    return names


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


def install_expression(names: list[str], modules: list[str]) -> str:
    """The expression that loads the recorder into a fresh kernel, before any cell runs.

    The grader's requests are user expressions of an empty cell: IPython evaluates those directly, not
    through the input transformers a student's code may have registered, so they cannot be rewritten.
    """
    source = Path(recorder.__file__).read_text(encoding="utf-8")
    code = ("import sys, types\n"
            "module = types.ModuleType('_autograder_recorder')\n"
            "exec(compile(source, 'autograder/recorder.py', 'exec'), module.__dict__)\n"
            "sys.modules[module.__name__] = module\n"
            "module.install(names, modules)\n")
    return f"__import__('builtins').exec({code!r}, {{'source': {source!r}, 'names': {names!r}, 'modules': {modules!r}}})"


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


def same(t, s, atol: float | None = None) -> bool:
    """Do two encoded values agree, within the tolerance? Lenient on container types (list/tuple,
    array/tensor, float/numpy float), strict on shapes, lengths and values."""
    if atol is None:
        atol = ATOL + ATOL_SCALE * _scale(t)
    tn, sn = _number(t), _number(s)
    if tn is not None or sn is not None:
        return tn is not None and sn is not None and _close(tn, sn, atol)
    if t is None or isinstance(t, str):
        return t == s
    if not isinstance(t, dict) or not isinstance(s, dict):
        return False
    kind = t.get("t")
    if kind in ("array", "tensor"):
        if s.get("t") not in ("array", "tensor") or s.get("shape") != t.get("shape"):
            return False
        if "data" in t:
            return "data" in s and len(s["data"]) == len(t["data"]) and \
                all(_close(a, b, atol) for a, b in zip(t["data"], s["data"]))
        ts, ss = t["summary"], s.get("summary") or {}
        return (ss.get("nonfinite") == ts["nonfinite"] and len(ss.get("samples", [])) == len(ts["samples"])
                and all(_close(a, b, atol) for a, b in zip(ts["samples"], ss["samples"]))
                and _close(ts["sum"], ss.get("sum"), atol * max(1, len(ts["samples"])))
                and _close(ts["abs"], ss.get("abs"), atol * max(1, len(ts["samples"]))))
    if kind == "list":
        return s.get("t") == "list" and s.get("len") == t["len"] and \
            all(same(a, b) for a, b in zip(t["items"], s["items"]))
    if kind == "dict":
        return s.get("t") == "dict" and set(s.get("items", {})) == set(t["items"]) and \
            all(same(v, s["items"][k]) for k, v in t["items"].items())
    if kind == "obj":
        return s.get("t") == "obj"
    return False


def _valid(records) -> bool:
    return isinstance(records, list) and all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                             and "args" in r for r in records)


def _by_name(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["name"], []).append(r)
    return out


def _call_disagrees(t: dict, s: dict) -> str | None:
    """Why one student call disagrees with the trusted call on the same inputs (None: it agrees)."""
    if "raised" in t:
        wanted = t["raised"][0]
        return None if wanted in (s.get("raised") or []) else f"did not raise {wanted}"
    if "raised" in s:
        return f"raised {s['raised'][0]}"
    if t.get("result") is not None and not same(t["result"], s.get("result")):
        return "returned a different value"
    res_t, res_s = t.get("result"), s.get("result")
    if isinstance(res_t, dict) and res_t.get("grad") and not (isinstance(res_s, dict) and res_s.get("grad")):
        return "returned a tensor without a gradient"
    if t.get("mutated") is False and s.get("mutated") is not False:
        return "changed its inputs"
    common = set(t.get("state") or {}) & set(s.get("state") or {})
    if t.get("state") and not common:
        return "left its object without the documented attributes"
    if any(not same(t["state"][k], s["state"][k]) for k in common):
        return "left its object's attributes different"
    return None


def disagreement(trusted: list[dict], student) -> str | None:
    """One line on why a cell's student records disagree with the trusted ones; None when they agree.

    Says which graded function and which of its calls, never the values (they may be hidden tests').
    """
    if not trusted:
        return None
    if not _valid(student):
        return "the cell's calls of the graded functions could not be read back from the kernel"
    ours = _by_name(student)
    for name, calls in _by_name(trusted).items():
        theirs = ours.get(name, [])
        if len(theirs) < len(calls):
            return (f"{name} was called {len(theirs)} time(s) while the cell ran, where the tests call it "
                    f"{len(calls)} time(s)")
        for i, (t, s) in enumerate(zip(calls, theirs)):
            if not same(t["args"], s.get("args")):
                if i == 0:
                    return f"the first call of {name} did not receive the test's inputs"
                continue
            why = _call_disagrees(t, s)
            if why:
                return f"call {i + 1} of {name} {why}"
    return None


# ------------------------------------------------------------------ the trusted run
def plan_key(solution: Path) -> str:
    h = hashlib.sha256(f"format {FORMAT}\n".encode())
    h.update(Path(recorder.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    h.update(Path(solution).read_bytes())
    return h.hexdigest()[:24]


def outside_share(plan: dict, nb) -> tuple[float, float]:
    """(points checked outside the kernel, all points) of a notebook's test cells."""
    checked = total = 0.0
    for cell in nb.cells:
        meta = (cell.get("metadata") or {}).get("nbgrader") or {}
        if meta.get("grade") and not meta.get("solution"):
            total += float(meta.get("points", 0))
            if plan["cells"].get(meta.get("grade_id")):
                checked += float(meta.get("points", 0))
    return checked, total


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
    plan = {"names": graded_names(nb), "modules": imported_modules(nb), "cells": {}}
    with tempfile.TemporaryDirectory(prefix="autograder-trusted-") as tmp:
        workdir = Path(tmp) / solution.parent.name
        shutil.copytree(solution.parent, workdir)
        records, failed = run_notebook(nb, workdir, plan)
    if failed:
        raise RuntimeError(f"the solution {solution.parent.name}/{solution.name} fails its own test cell(s) "
                           f"{', '.join(failed)} when run for the outside check")
    plan["cells"] = records
    cached = _cache_file(solution)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    tmp_file.write_text(json.dumps(plan), encoding="utf-8")
    os.replace(tmp_file, cached)
    return plan
