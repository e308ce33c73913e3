"""The outside check's second half: a property cell's own assertions, run again in the grader.

``autograder.verify`` compares a cell's graded calls with the solution's. In a cell that grades a property
(invariants, stability, which inputs raise) it can compare only their structure, since a function with a
mistake elsewhere may pass such a cell with other values; a graded torch module's calls, whose values
follow from its random initial weights, everywhere. Here the cell's instructor-written source runs
again in the grader's process, which runs no student code: the notebook's set-up cells first, then the
test cell, with each graded function replaced by a *replay* that answers every call with the result the
submission's kernel recorded for the same inputs (or raises the exception it raised). The cell's
assertions are then checked on the submission's own answers, outside its kernel: whatever the kernel
said, the cell earns its points only if they hold here too.

A graded class is replaced by a class whose recorded methods answer the same way, each leaving on the
object the plain attributes the submission's object had after that call. A cell can be replayed only if
its graded results are plain data kept whole (no summaries of large arrays, no objects), no assertion
needs their autograd graph or an object's other parts (a module's parameters), and all its inputs
follow from the test's seeds and the graded results (no names from earlier cells). Which cells those
are is found, not declared: ``replayable`` replays each property cell on the solution's own records
when the plan is made, and keeps those that pass. Micro-runs and gradient checks through autograd stay
compared by structure.
"""
from __future__ import annotations

import builtins
import contextlib
import io
import time
import warnings

from autograder import recorder
from autograder.verify import _by_name, _valid, same

MAX_SECONDS = 5.0     # a slower replay of the solution's records is not used: grading replays it per student


class Unavailable(BaseException):
    """The records cannot answer a call of the replay. A BaseException: the test's own ``except Exception``
    (in a cell that checks which inputs raise) must not swallow it."""


def decode(enc):
    """The value ``recorder.encode`` recorded, rebuilt: numbers, arrays, tensors, lists and dicts."""
    if enc is None or isinstance(enc, (bool, int, float, str)):
        return enc
    kind = enc.get("t")
    if kind == "f":
        return float(enc["v"])
    if kind in ("array", "tensor"):
        if "data" not in enc:
            raise Unavailable("an array too large to be recorded whole")
        import numpy as np

        dtype = str(enc.get("dtype")).removeprefix("torch.")
        if kind == "array":
            if np.dtype(dtype).kind not in "biuf":
                raise Unavailable(f"an array of dtype {dtype}")
            return np.asarray(enc["data"], dtype=np.float64).astype(dtype).reshape(enc["shape"])
        import torch

        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise Unavailable(f"a tensor of dtype {dtype}")
        t = torch.tensor(enc["data"], dtype=torch.float64).to(getattr(torch, dtype)).reshape(enc["shape"])
        return t.requires_grad_() if enc.get("grad") and t.is_floating_point() else t
    if kind == "list":
        if enc["len"] != len(enc["items"]):
            raise Unavailable("a list too long to be recorded whole")
        items = [decode(v) for v in enc["items"]]
        return tuple(items) if enc.get("tuple") else items
    if kind == "dict":
        if enc["len"] != len(enc["items"]):
            raise Unavailable("a dict too long to be recorded whole")
        return {k: decode(v) for k, v in enc["items"].items()}
    raise Unavailable(f"a {enc.get('type', 'value')} object")


def _exception(rec: dict) -> BaseException:
    """The built-in exception nearest the recorded one (a ValueError subclass raises as ValueError), with
    the recorded message."""
    mro, message = rec["raised"], rec.get("message")
    message = message if isinstance(message, str) else f"(replayed: the submission raised {mro[0]})"
    for name in mro:
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls(message)
    return RuntimeError(message)


def _answers(name: str, calls: list[dict]):
    """answer(args, kwargs) -> the record of the k-th call of ``name`` at its k-th use: the cell's code is
    deterministic, so on the same answers it makes the same calls in the same order."""
    done = 0

    def answer(args, kwargs) -> dict:
        nonlocal done
        if done >= len(calls):
            raise Unavailable(f"{name} was called more often than its calls were recorded")
        rec, done = calls[done], done + 1
        if not same(rec.get("args"), recorder.encode([list(args), kwargs])):
            # the kernel's run called it otherwise: the answers before this call were not the ones recorded
            raise Unavailable(f"call {done} of {name} had other inputs than in the submission's run")
        return rec

    return answer


def _outcome(rec: dict):
    if "raised" in rec:
        raise _exception(rec)
    return decode(rec.get("result"))


def _replay_of(name: str, calls: list[dict]):
    """A stand-in for graded function ``name`` that answers from its recorded ``calls``."""
    answer = _answers(name, calls)

    def replayed(*args, **kwargs):
        return _outcome(answer(args, kwargs))

    replayed.__name__ = name
    return replayed


def _class_replay_of(name: str, by_name: dict[str, list[dict]]) -> type:
    """A stand-in for graded class ``name``: each recorded method (``__init__``, ``update``, ``forward``,
    which ``model(x)`` reaches as for a torch module) answers from its records, and leaves on the object
    the plain attributes the submission's object had after that call."""
    def method(attr: str, answer):
        def replayed(self, *args, **kwargs):
            rec = answer(args, kwargs)
            state = rec.get("state")
            for key, value in (state.items() if isinstance(state, dict) else ()):
                setattr(self, key, decode(value))
            return _outcome(rec)
        replayed.__name__ = attr
        return replayed

    prefix = name + "."
    body = {key[len(prefix):]: method(key[len(prefix):], _answers(key, calls))
            for key, calls in by_name.items() if key.startswith(prefix)}
    if "forward" in body:                   # a torch module: model(x), and its mode switches (dropout's,
        body["__call__"] = body["forward"]  # which the recorded forward calls already ran in)
        body.setdefault("eval", lambda self: self)
        body.setdefault("train", lambda self, mode=True: self)
    return type(name, (), body)


@contextlib.contextmanager
def _quiet_and_restored():
    """Run test code without its output, and leave the random generators, torch's settings and numpy's
    error handling as they were: the replay shares the grader's process."""
    import numpy as np

    saved_np = np.random.get_state()
    torch = None
    try:
        import torch
        saved = (torch.random.get_rng_state(), torch.get_default_dtype(), torch.get_num_threads(),
                 torch.is_grad_enabled())
    except ImportError:
        pass
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        np.random.set_state(saved_np)
        if torch is not None:
            torch.random.set_rng_state(saved[0])
            torch.set_default_dtype(saved[1])
            torch.set_num_threads(saved[2])
            torch.set_grad_enabled(saved[3])


def run(source: str, setup: list[str], names: list[str], records) -> str | None:
    """Replay one test cell on a submission's records: None when its assertions hold, else why not: the
    exception's type only ("AssertionError": a hidden test's message may hold its values), or the call
    the records could not answer."""
    by_name = _by_name(records) if _valid(records) else {}
    ns: dict = {"__name__": "__replay__"}
    with _quiet_and_restored():
        for cell in setup:
            exec(compile(cell, "<the notebook's set-up cell>", "exec"), ns)
        for name in names:
            if any(key.startswith(name + ".") for key in by_name):
                ns[name] = _class_replay_of(name, by_name)
            else:
                ns[name] = _replay_of(name, by_name.get(name, []))
        try:
            exec(compile(source, "<the test cell, replayed>", "exec"), ns)
        except Unavailable as exc:
            return f"the replay could not go on: {exc}"
        except Exception as exc:          # noqa: BLE001 -- any failure of the test's code fails the cell
            return type(exc).__name__
    return None


def replayable(cells: dict[str, str], setup: list[str], names: list[str], trusted: dict) -> list[str]:
    """The grade ids of ``cells`` (grade id -> source) whose replay on the solution's own records passes,
    quickly: the cells a submission's records are replayed for."""
    out = []
    for grade_id, source in cells.items():
        start = time.perf_counter()
        try:
            ok = run(source, setup, names, trusted.get(grade_id) or []) is None
        except Exception:                  # noqa: BLE001 -- a set-up cell that does not run here
            ok = False
        if ok and trusted.get(grade_id) and time.perf_counter() - start <= MAX_SECONDS:
            out.append(grade_id)
    return out
