"""Runs inside the student's kernel: what each test cell's graded functions were given and returned.

The grader sends this file's source to the kernel before the first cell (``install``), then wraps every
graded test cell in two silent requests: ``begin`` before it and ``end`` after it. ``begin`` puts the
kernel back in the state it started in (IPython's input and AST transformers, exception handlers and
event callbacks, ``sys.excepthook``, the functions of numpy, torch, math, ... as they were before any
student code ran) and wraps each graded function of the notebook so that its top-level calls are
recorded. ``end`` unwraps them and returns the records as JSON: plain data only (numbers, arrays as
lists or summaries, exception names). The grader compares them, outside this kernel, with the records
of the instructor's solution run on the same cells (``autograder.verify``).

Nothing here has to be trusted: the student's code shares this process and can change any of it. What
it can change only lowers its own score: a test cell whose records are missing, malformed or wrong
earns nothing, however the cell itself ended. To forge passing records, code would have to compute the
graded functions' right answers on the grader's inputs.
"""
import functools
import json
import math
import sys

from IPython import get_ipython

MAX_CALLS = 1024        # records kept per graded function per cell (a micro-run calls some thousands of times)
FIRST_CALLS = 16        # ... of which these are kept whatever the cell's budget below
MAX_CELL_ELEMENTS = 2**18   # numbers in the arguments of one cell's records, past its first calls of each
MAX_ELEMENTS = 4096     # arrays up to this size are sent whole, larger ones as a summary
SAMPLES = 256           # evenly spaced elements in a summary
MAX_ITEMS = 64          # items of a list, tuple or dict

_state = {"names": [], "modules": [], "setup": [], "snapshot": None, "wrapped": {}, "records": [], "depth": 0,
          "elements": 0, "counts": {}, "tensor_types": None}


# ------------------------------------------------------------------ encoding values as plain data
def _array(values, shape, dtype: str, kind: str) -> dict:
    """An array as {shape, dtype, data} when small, else {shape, dtype, summary}."""
    import numpy as np

    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    out = {"t": kind, "shape": list(shape), "dtype": dtype}
    if flat.size <= MAX_ELEMENTS:
        out["data"] = flat.tolist()
    else:
        finite = np.where(np.isfinite(flat), flat, 0.0)
        idx = np.linspace(0, flat.size - 1, SAMPLES).astype(np.int64)
        out["summary"] = {"sum": float(finite.sum()), "abs": float(np.abs(finite).sum()),
                          "nonfinite": int((~np.isfinite(flat)).sum()), "samples": flat[idx].tolist()}
    return out


def encode(x, depth: int = 0):
    """Plain JSON-able data for a value: numbers, arrays, tensors, containers; the type name of the rest."""
    if x is None or type(x) in (bool, int, str):
        return x if not isinstance(x, str) else x[:200]
    if type(x) is float:
        return {"t": "f", "v": x} if not math.isfinite(x) else x
    if depth > 4:
        return {"t": "obj", "type": type(x).__name__}
    mod = type(x).__module__ or ""
    if mod.startswith("numpy"):
        import numpy as np

        if isinstance(x, np.ndarray) and x.dtype.kind in "biuf":
            return _array(x, x.shape, str(x.dtype), "array")
        if isinstance(x, np.generic) and x.dtype.kind in "biuf":
            return {"t": "f", "v": float(x)}
    if mod.startswith("torch") and type(x).__name__ in ("Tensor", "Parameter"):
        if type(x) not in _tensor_types():
            # a subclass posing as a tensor (its __module__ and name are its author's to choose): its
            # __torch_function__ can make torch.allclose say anything in the kernel, so it is not a result
            return {"t": "obj", "type": type(x).__name__}
        t = x.detach()
        if not (t.is_floating_point() or t.dtype.is_signed or str(t.dtype) in ("torch.bool", "torch.uint8")):
            return {"t": "obj", "type": "Tensor"}
        out = _array(t.to("cpu").double().numpy(), tuple(t.shape), str(t.dtype), "tensor")
        out["grad"] = bool(x.requires_grad)
        return out
    if type(x) in (list, tuple):
        out = {"t": "list", "items": [encode(v, depth + 1) for v in x[:MAX_ITEMS]], "len": len(x)}
        if type(x) is tuple:
            out["tuple"] = True       # for the grader's replay: `a, b = f(x)` works either way, isinstance not
        return out
    if type(x) is dict:
        items = list(x.items())[:MAX_ITEMS]
        return {"t": "dict", "items": {str(k): encode(v, depth + 1) for k, v in items}, "len": len(x)}
    return {"t": "obj", "type": type(x).__name__}


def _tensor_types() -> tuple:
    """torch's own tensor classes, as ``install`` found them (before any student code ran)."""
    if _state["tensor_types"] is None:
        import torch

        _state["tensor_types"] = (torch.Tensor, torch.nn.Parameter)
    return _state["tensor_types"]


def _state_of(obj) -> dict:
    """The plain-data attributes of a graded class's instance (numbers and arrays only)."""
    out = {}
    for key, value in list(getattr(obj, "__dict__", {}).items())[:MAX_ITEMS]:
        if not key.startswith("_"):
            enc = encode(value)
            if not (isinstance(enc, dict) and enc.get("t") == "obj"):
                out[key] = enc
    return out


# ------------------------------------------------------------------ recording calls
def _size(enc) -> int:
    """How many numbers an encoded value holds."""
    if isinstance(enc, dict):
        if "data" in enc:
            return len(enc["data"])
        if "summary" in enc:
            return len(enc["summary"]["samples"])
        return sum(_size(v) for v in (enc.get("items") or {}).values()) if enc.get("t") == "dict" else \
            sum(_size(v) for v in enc.get("items") or [])
    return 1


def _record(name: str, args, kwargs, call, self=None):
    """Call `call()`, recording its inputs and its result or exception.

    The first FIRST_CALLS calls of each graded function in a cell are kept; later ones up to MAX_CALLS while
    the arguments kept so far hold at most MAX_CELL_ELEMENTS numbers. The budget counts arguments only: they
    are the test's, so a solution's run and a student's stop keeping records at the same call.
    """
    s = _state
    kept = s["counts"].get(name, 0)
    if s["depth"] > 0 or kept >= MAX_CALLS or (kept >= FIRST_CALLS and s["elements"] > MAX_CELL_ELEMENTS):
        return call()          # nested calls belong to the call that made them; enough calls kept
    encoded = encode([list(args), kwargs])
    if kept >= FIRST_CALLS:
        s["elements"] += _size(encoded)
        if s["elements"] > MAX_CELL_ELEMENTS:     # the budget is spent: no later call past its first is kept
            return call()
    rec = {"name": name, "args": encoded}
    s["counts"][name] = kept + 1
    s["depth"] += 1
    try:
        result = call()
    except BaseException as exc:
        rec["raised"] = [c.__name__ for c in type(exc).__mro__]
        try:
            rec["message"] = str(exc)[:500]       # tests check what the message says (the value given)
        except Exception:
            rec["message"] = ""
        raise
    else:
        rec["result"] = encode(result)
        return result
    finally:
        s["depth"] -= 1
        if self is not None:
            rec["state"] = _state_of(self)
        s["records"].append(rec)


def _wrap_function(name: str, fn):
    @functools.wraps(fn)
    def recorded(*args, **kwargs):
        return _record(name, args, kwargs, lambda: fn(*args, **kwargs))
    recorded.__autograder_original__ = fn
    return recorded


def _wrap_method(name: str, fn):
    @functools.wraps(fn)
    def recorded(self, *args, **kwargs):
        return _record(name, args, kwargs, lambda: fn(self, *args, **kwargs), self=self)
    recorded.__autograder_original__ = fn
    return recorded


def _wrap(ns: dict, names: list[str]) -> None:
    """Wrap the graded names of the user namespace: functions by name, classes' own methods in place."""
    wrapped = _state["wrapped"] = {}
    for name in names:
        obj = ns.get(name)
        if isinstance(obj, type):
            for attr, fn in list(vars(obj).items()):
                if callable(fn) and not isinstance(fn, type) and (attr == "__init__" or not attr.startswith("_")):
                    setattr(obj, attr, _wrap_method(f"{name}.{attr}", fn))
                    wrapped[(name, attr)] = (obj, fn)
        elif callable(obj):
            ns[name] = _wrap_function(name, obj)
            wrapped[(name, None)] = (ns, obj)


def _unwrap() -> None:
    for (name, attr), (owner, original) in _state["wrapped"].items():
        if attr is None:
            if getattr(owner.get(name), "__autograder_original__", None) is original:
                owner[name] = original
        elif getattr(vars(owner).get(attr), "__autograder_original__", None) is original:
            setattr(owner, attr, original)
    _state["wrapped"] = {}


# ------------------------------------------------------------------ the kernel as it started
def _objects_to_keep(modules: list[str]) -> list:
    """Modules and classes whose attributes test cells rely on, and IPython's own machinery."""
    import builtins
    import importlib

    objs = [builtins, math, sys]
    for name in modules:
        try:
            objs.append(importlib.import_module(name))
        except Exception:
            pass
    # and every submodule already loaded under them: np.allclose calls numpy._core.numeric.isclose, and a
    # patch there would reach the tests through the restored np.allclose
    roots = {m.split(".")[0] for m in modules} - {"builtins", "sys"}
    loaded = [m for name, m in list(sys.modules.items())
              if name.split(".")[0] in roots and m is not None and m not in objs]
    objs += loaded
    for obj in list(objs):
        if getattr(obj, "__name__", "") == "torch" and hasattr(obj, "Tensor"):
            objs.append(obj.Tensor)
    ip = get_ipython()
    objs += [c for c in type(ip).__mro__ if c is not object]
    kernel = getattr(ip, "kernel", None)
    if kernel is not None:
        objs += [c for c in type(kernel).__mro__ if c is not object]
    return objs


def _snapshot(modules: list[str]) -> dict:
    ip = get_ipython()
    mgr = ip.input_transformer_manager
    volatile = {"last_value", "last_type", "last_traceback", "last_exc", "stdout", "stderr", "displayhook",
                "excepthook", "ps1", "ps2", "argv", "path", "modules", "path_importer_cache", "meta_path"}
    keep = _objects_to_keep(modules)
    return {
        # functions and classes only: data attributes (flags, caches) may legitimately change as cells run
        "attrs": [(o, {k: v for k, v in _vars(o).items() if callable(v) and not (o is sys and k in volatile)})
                  for o in keep],
        "modules": {name: m for name, m in sys.modules.items() if m in keep},
        # IPython's shell and the kernel: their methods, which code can replace on the instance itself
        "instances": [(obj, {k: v for k, v in vars(obj).items() if callable(v)})
                      for obj in (ip, getattr(ip, "kernel", None)) if obj is not None],
        "lists": [(lst, list(lst)) for lst in (ip.input_transformers_cleanup, ip.input_transformers_post,
                                               ip.ast_transformers, mgr.cleanup_transforms, mgr.line_transforms,
                                               mgr.token_transformers)],
        "events": {k: list(v) for k, v in ip.events.callbacks.items()},
        "excepthook": sys.excepthook, "custom_exceptions": ip.custom_exceptions, "CustomTB": ip.CustomTB,
    }


def _vars(obj) -> dict:
    try:
        return dict(vars(obj))
    except TypeError:          # an object without a __dict__ in sys.modules
        return {}


def _restore() -> None:
    """Put back everything ``_snapshot`` saw: transformers, hooks, handlers, module functions, and the
    names the notebook's own set-up cells bind (imports, test helpers), run again."""
    snap = _state["snapshot"]
    ip = get_ipython()
    sys.modules.update(snap["modules"])
    for obj, saved in snap["attrs"]:
        current = _vars(obj)
        for key, value in saved.items():
            if current.get(key, _MISSING) is not value:
                try:
                    setattr(obj, key, value)
                except (AttributeError, TypeError):
                    pass
    for obj, methods in snap["instances"]:
        for key, value in list(vars(obj).items()):
            if callable(value) and methods.get(key, _MISSING) is not value:
                if key in methods:
                    setattr(obj, key, methods[key])
                else:                          # a method replaced on the instance: the class's again
                    delattr(obj, key)
    for lst, saved in snap["lists"]:
        lst[:] = saved
    for key, saved in snap["events"].items():
        ip.events.callbacks[key][:] = saved
    sys.excepthook = snap["excepthook"]
    ip.custom_exceptions, ip.CustomTB = snap["custom_exceptions"], snap["CustomTB"]
    for source in _state["setup"]:
        exec(compile(source, "<the notebook's set-up cell>", "exec"), ip.user_ns)


_MISSING = object()


# ------------------------------------------------------------------ the grader's three requests
def install(names: list[str], modules: list[str], setup: list[str] = ()) -> None:
    """Before the first cell: remember the graded names, the set-up cells (imports and helper definitions,
    run again before each test cell) and the kernel's pristine state."""
    _state.update(names=list(names), modules=list(modules), setup=list(setup), snapshot=_snapshot(modules),
                  records=[])
    if any(m.split(".")[0] == "torch" for m in modules):
        _tensor_types()


def begin() -> None:
    """Before a test cell: pristine state, graded functions wrapped, no records."""
    _unwrap()
    _restore()
    _state["records"], _state["depth"], _state["elements"], _state["counts"] = [], 0, 0, {}
    _wrap(get_ipython().user_ns, _state["names"])


def end() -> str:
    """After a test cell: unwrap; the cell's records as JSON."""
    _unwrap()
    records, _state["records"] = _state["records"], []
    return json.dumps(records)
