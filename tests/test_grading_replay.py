"""The replay (``autograder.replay``): a property cell's assertions, run again in the grader on the answers
a submission's kernel recorded. Its pieces without a kernel, then every replayed cell of the course, which
must pass on the solution's records and fail on wrong ones."""
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from autograder import recorder, replay, verify
from autograder.course import assignments, graded_cells, notebooks
from conftest import REPO


def rec(name, args, result=None, **extra):
    return {"name": name, "args": recorder.encode([list(args), {}]), "result": recorder.encode(result), **extra}


@pytest.mark.parametrize("value", [
    1, 2.5, True, None, "text", float("nan"), float("-inf"),
    np.arange(6.0).reshape(2, 3), np.array([1, 2], dtype=np.int64), np.float32([0.1, 0.2]),
    torch.tensor([[0.1, 0.2]], dtype=torch.float32), torch.tensor([True, False]), torch.arange(3),
    (1.0, [2.0, {"k": np.ones(2)}]), {"loss": 0.5, "grads": [np.zeros(3)]},
])
def test_decode_rebuilds_what_the_recorder_encoded(value):
    back = replay.decode(recorder.encode(value))
    assert type(back) is type(value) or (isinstance(value, float) and type(back) is float)
    if isinstance(value, (np.ndarray, torch.Tensor)):
        assert back.dtype == value.dtype and tuple(back.shape) == tuple(value.shape)
        assert np.array_equal(np.asarray(back), np.asarray(value))
    elif isinstance(value, float) and math.isnan(value):
        assert math.isnan(back)
    elif not isinstance(value, (tuple, dict)):
        assert back == value
    else:
        assert verify.same(recorder.encode(value), recorder.encode(back))


def test_a_result_with_a_gradient_comes_back_as_a_tensor_that_requires_one():
    t = torch.ones(2, requires_grad=True) * 3
    back = replay.decode(recorder.encode(t))
    assert back.requires_grad and back.tolist() == [3.0, 3.0]


@pytest.mark.parametrize("enc", [
    recorder.encode(np.zeros(10_000)),                                  # kept as a summary only
    recorder.encode(object()),
    recorder.encode(list(range(recorder.MAX_ITEMS + 1))),
    {"t": "array", "shape": [1], "dtype": "object", "data": [1.0]},     # forged records: no odd dtypes
    {"t": "tensor", "shape": [1], "dtype": "torch.save", "data": [1.0]},
])
def test_decode_refuses_what_was_not_recorded_whole(enc):
    with pytest.raises(replay.Unavailable):
        replay.decode(enc)


CELL = """
_x = np.array([1.0, -2.0])
_y = double(_x)
assert np.allclose(_y, 2 * _x), "double must double"
assert np.allclose(double(_y), 4 * _x)
"""


def test_a_cell_passes_on_right_answers_and_fails_on_wrong_ones():
    x = np.array([1.0, -2.0])
    right = [rec("double", [x], 2 * x), rec("double", [2 * x], 4 * x)]
    setup = ["import numpy as np"]
    assert replay.run(CELL, setup, ["double"], right) is None
    wrong = [rec("double", [x], 2 * x + 0.1), rec("double", [2 * x + 0.1], 4 * x)]
    assert replay.run(CELL, setup, ["double"], wrong) == "AssertionError"       # never the message itself
    # the second call's input follows from the first answer: records of another run cannot answer it
    other = [rec("double", [x], 2 * x), rec("double", [x], 4 * x)]
    assert "call 2 of double had other inputs" in replay.run(CELL, setup, ["double"], other)
    assert "more often than its calls were recorded" in replay.run(CELL, setup, ["double"], right[:1])
    assert replay.run(CELL, setup, ["double"], "not records") is not None


def test_exceptions_come_back_with_their_message_and_the_cell_cannot_swallow_a_failed_replay():
    source = ("try:\n    check(1)\n    raise AssertionError('no error')\nexcept ValueError as e:\n"
              "    assert 'k = 1' in str(e)\n"
              "try:\n    check(2)\nexcept Exception:\n    pass\n")
    raised = {"raised": ["KError", "ValueError", "Exception", "BaseException", "object"], "message": "k = 1 < 2"}
    records = [{"name": "check", "args": recorder.encode([[1], {}]), **raised},
               {"name": "check", "args": recorder.encode([[2], {}]), "result": None}]
    assert replay.run(source, [], ["check"], records) is None
    # a call with inputs the kernel never saw: the test's own `except Exception` does not hide it
    records[1] = {"name": "check", "args": recorder.encode([[3], {}]), "result": None}
    assert "call 2 of check had other inputs" in replay.run(source, [], ["check"], records)
    records[0] = {**records[0], "message": "k is wrong"}
    assert replay.run(source, [], ["check"], records[:1]) is not None


def test_the_replay_leaves_the_graders_process_as_it_was(capsys):
    np.random.seed(5)
    torch.manual_seed(5)
    expected_np, expected_torch = np.random.random(), torch.rand(1).item()
    np.random.seed(5)
    torch.manual_seed(5)
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    source = ("import numpy as np, torch, warnings\nprint('noise')\nnp.random.seed(0); np.random.random()\n"
              "torch.manual_seed(0); torch.set_default_dtype(torch.float64); torch.set_num_threads(1)\n"
              "torch.set_grad_enabled(False)\nnp.ones(1) / 0\nwarnings.warn('w')\n")
    assert replay.run(source, [], [], []) is None
    assert capsys.readouterr().out == ""
    assert (torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled()) == (threads, dtype, True)
    assert (np.random.random(), torch.rand(1).item()) == (expected_np, expected_torch)


def test_a_graded_class_answers_from_its_methods_records_and_keeps_their_attributes():
    source = ("c = Ctl(1.0)\nc.update(3.0)\nassert c.value == 3.0\n"
              "m = Scorer(2).eval()\nassert np.allclose(m(np.ones(2)), [0.5])\n")
    records = [{"name": "Ctl.__init__", "args": recorder.encode([[1.0], {}]), "result": None,
                "state": {"value": 1.0}},
               {"name": "Ctl.update", "args": recorder.encode([[3.0], {}]), "result": None, "state": {"value": 3.0}},
               rec("Scorer.__init__", [2]),
               rec("Scorer.forward", [np.ones(2)], np.array([0.5]))]       # model(x) reaches forward
    names = ["Ctl", "Scorer"]
    assert replay.run(source, ["import numpy as np"], names, records) is None
    records[1] = {**records[1], "state": {"value": 2.0}}
    assert replay.run(source, ["import numpy as np"], names, records) is not None


def test_only_cells_whose_replay_passes_on_the_solutions_records_are_replayed():
    x = np.array([1.0, -2.0])
    trusted = {"ok": [rec("double", [x], 2 * x), rec("double", [2 * x], 4 * x)],
               "needs_an_earlier_cell": [rec("double", [x], 2 * x)],
               "a_module's_parameters": [rec("Ctl.__init__", [1.0])],
               "no_calls": []}
    cells = {"ok": CELL, "needs_an_earlier_cell": "assert np.allclose(double(data), 2 * data)",
             "a_module's_parameters": "assert len(list(Ctl(1.0).parameters())) == 2", "no_calls": "assert True"}
    assert replay.replayable(cells, ["import numpy as np"], ["double", "Ctl"], trusted) == ["ok"]


# ------------------------------------------------------------------ the course's own cells
def _shift(enc, offset: float):
    """A wrong answer of the same shape: 1.5 x + offset in every number."""
    if isinstance(enc, bool) or not isinstance(enc, (int, float, dict)):
        return enc
    if isinstance(enc, (int, float)):
        return 1.5 * enc + offset
    if "data" in enc:
        return {**enc, "data": [1.5 * v + offset for v in enc["data"]]}
    if enc.get("t") == "f":
        return {**enc, "v": 1.5 * enc["v"] + offset}
    if enc.get("t") == "list":
        return {**enc, "items": [_shift(v, offset) for v in enc["items"]]}
    if enc.get("t") == "dict":
        return {**enc, "items": {k: _shift(v, offset) for k, v in enc["items"].items()}}
    return enc


def _wrong(records):
    """The solution's records with every answer wrong: values moved (results, and an object's attributes
    after a method call), each call by another offset (so answers that must agree, as a padded and an
    unpadded batch's scores must, do not), and no exception where one was raised."""
    out = []
    for k, r in enumerate(records):
        offset = 0.37 * (k + 1)
        r = {key: v for key, v in r.items() if key not in ("raised", "message")}
        if r.get("state"):
            r["state"] = {key: _shift(v, offset) for key, v in r["state"].items()}
        out.append({**r, "result": _shift(r.get("result"), offset)})
    return out


def _plans() -> dict[str, tuple[dict, object]]:
    """Each notebook's plan (recorded by the grading tests before this module runs, or here)."""
    from autograder import grading
    from autograder.course import load_config

    paths = [REPO / "solutions" / a / f"{nb}.ipynb" for a in assignments() for nb in notebooks(a)]
    if any(verify.cached_plan(p) is None for p in paths):
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="replay-plans-"))
        config = grading._configure(load_config(), tmp, tmp / "gradebook.db", None, sandboxed=False)
        grading._prepare_outside_check(config, assignments(), tmp, False, False, 2)
    return {f"{p.parent.name}/{p.stem}": (verify.cached_plan(p), nbformat.read(p, as_version=4)) for p in paths}


def test_every_replayed_cell_of_the_course_passes_on_the_solution_and_fails_on_wrong_answers():
    for name, (plan, nb) in _plans().items():
        assert plan["replay"], f"{name}: no property cell is replayed"
        module_cells = {gid for gid, records in plan["cells"].items()
                        if any(r["name"].split(".")[0] in plan["structure_names"] for r in records or [])}
        assert set(plan["replay"]) <= set(plan["structure_only"]) | module_cells, name
        cells = graded_cells(nb)
        for grade_id, source in plan["replay"].items():
            assert source == cells[grade_id].source, (name, grade_id)
            records = plan["cells"][grade_id]
            assert replay.run(source, plan["setup"], plan["names"], records) is None, (name, grade_id)
            assert replay.run(source, plan["setup"], plan["names"], _wrong(records)) is not None, (name, grade_id)
        values, replayed, structure, total = verify.outside_share(plan, nb)
        assert replayed == sum(float(cells[g].metadata["nbgrader"]["points"]) for g in plan["replay"])
        assert values + replayed + structure <= total
