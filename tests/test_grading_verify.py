"""The outside check's pieces, without grading: encoding in the kernel, comparison in the grader, and
the recorder in a real IPython kernel (pristine state restored, calls recorded, records read back)."""
import json

import numpy as np
import pytest
import torch

from autograder import recorder, verify
from autograder.verify import disagreement, same


def rec(name, args, result=None, **extra):
    return {"name": name, "args": recorder.encode([list(args), {}]), "result": recorder.encode(result),
            **extra}


def test_encode_is_plain_json_for_numbers_arrays_tensors_and_containers():
    values = [1, 2.5, float("nan"), True, None, "s", np.float64(3.0), np.arange(6.0).reshape(2, 3),
              torch.ones(2, requires_grad=True), (1, [2, {"k": 3}]), np.zeros(10_000)]
    enc = recorder.encode(values)
    assert json.loads(json.dumps(enc)) == json.loads(json.dumps(enc))       # round-trips as JSON
    items = enc["items"]
    assert items[7] == {"t": "array", "shape": [2, 3], "dtype": "float64", "data": [0, 1, 2, 3, 4, 5]}
    assert items[8]["t"] == "tensor" and items[8]["grad"] is True
    assert "summary" in items[10] and len(items[10]["summary"]["samples"]) == recorder.SAMPLES


def test_objects_that_lie_are_encoded_by_type_not_by_what_they_claim():
    class Liar(float):
        def __eq__(self, other):
            return True

        def __float__(self):
            return 1.05

    class LyingArray(np.ndarray):
        def __eq__(self, other):
            return True

    assert recorder.encode(Liar(0.0)) == {"t": "obj", "type": "Liar"}
    assert not same(recorder.encode(1.05), recorder.encode(Liar(0.0)))
    # an ndarray subclass is still an array: its real values are compared, whatever its __eq__ says
    lying = np.zeros(2).view(LyingArray)
    assert not same(recorder.encode(np.array([1.05, 0.95])), recorder.encode(lying))


@pytest.mark.parametrize("t, s, agree", [
    (1.0, 1.0 + 1e-9, True),
    (1.0, 1.01, False),
    (np.array([1.0, 2.0]), torch.tensor([1.0, 2.0], dtype=torch.float64), True),   # array vs tensor: values count
    (np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0]), False),                      # shapes are strict
    (np.zeros((2, 3)), np.zeros((3, 2)), False),
    ((1.0, 2.0), [1.0, 2.0], True),
    ({"loss": 1.0}, {"loss": 1.0, "extra": 0}, False),
    (float("nan"), float("nan"), True),
    (float("inf"), 1e308, False),
    (np.float64(0.5), 0.5, True),
    (torch.tensor(0.5), 0.5, True),                                                 # 0-d tensor vs float
    (np.arange(10_000.0), np.arange(10_000.0) * (1 + 1e-7), True),                 # summaries, within tolerance
    (np.arange(10_000.0), np.arange(10_000.0)[::-1].copy(), False),
    ("token-mean", "seq-mean", False),
])
def test_same(t, s, agree):
    assert same(recorder.encode(t), recorder.encode(s)) is agree


def test_disagreement_says_which_call_and_never_the_values():
    x = np.array([1.0, 2.0])
    trusted = [rec("f", (x,), x * 2), rec("f", (x + 1,), (x + 1) * 2), rec("g", (3.0,), 9.0)]
    assert disagreement(trusted, [rec("f", (x,), x * 2), rec("f", (x + 1,), (x + 1) * 2),
                                  rec("g", (3.0,), 9.0)]) is None
    wrong = disagreement(trusted, [rec("f", (x,), x * 2), rec("f", (x + 1,), x * 0), rec("g", (3.0,), 9.0)])
    assert wrong == "call 2 of f returned a different value"
    assert "4" not in wrong and "6" not in wrong
    assert "g was called 0 time(s)" in disagreement(trusted, [rec("f", (x,), x * 2), rec("f", (x + 1,), (x + 1) * 2)])
    # easy inputs of its own choosing do not count
    assert "first call of f did not receive the test's inputs" in disagreement(
        trusted, [rec("f", (x * 0,), x * 0), rec("f", (x + 1,), (x + 1) * 2), rec("g", (3.0,), 9.0)])
    # a later call on other inputs (a micro-run that drifted by rounding) is skipped, not failed
    assert disagreement(trusted, [rec("f", (x,), x * 2), rec("f", (x + 5,), x), rec("g", (3.0,), 9.0)]) is None
    assert "could not be read back" in disagreement(trusted, None)
    assert "could not be read back" in disagreement(trusted, [{"no": "name"}])
    assert disagreement([], None) is None          # nothing to check outside: the kernel's own result stands


def test_exceptions_mutation_gradients_and_state():
    raised = {**rec("f", (1,)), "raised": ["ValueError", "Exception", "BaseException", "object"]}
    raised.pop("result")
    assert disagreement([raised], [raised]) is None
    assert "did not raise ValueError" in disagreement([raised], [rec("f", (1,), 0.0)])
    # a property cell compares the kind and shape of results, not their values
    x = np.zeros(3)
    assert disagreement([rec("f", (1,), x)], [rec("f", (1,), x + 1)], values=False) is None
    assert disagreement([rec("f", (x,), x)], [rec("f", (x + 1,), x)], values=False) is None   # inputs that moved
    assert "did not receive the test's inputs" in disagreement([rec("f", (x,), x)], [rec("f", (x[:2],), x)],
                                                               values=False)
    assert "another shape or kind" in disagreement([rec("f", (1,), x)], [rec("f", (1,), np.zeros(4))], values=False)
    assert "another shape or kind" in disagreement([rec("f", (1,), {"a": 1.0})], [rec("f", (1,), 1.0)], values=False)
    assert "did not raise ValueError" in disagreement([raised], [rec("f", (1,), 0.0)], values=False)
    t = torch.ones(2, requires_grad=True) * 2
    assert "without a gradient" in disagreement([rec("f", (1,), t)], [rec("f", (1,), t.detach())])
    # a method that returns None where the student's returns a value: the result is not compared ...
    ok = rec("C.update", (1.0, 2), None, state={"value": recorder.encode(0.5)})
    assert disagreement([ok], [rec("C.update", (1.0, 2), 0.5, state={"value": recorder.encode(0.5),
                                                                      "own": 1})]) is None
    # ... but the documented attribute is
    assert "attributes different" in disagreement([ok], [rec("C.update", (1.0, 2), None,
                                                             state={"value": recorder.encode(0.6)})])
    assert "without the documented attributes" in disagreement([ok], [rec("C.update", (1.0, 2), None,
                                                                          state={"beta": recorder.encode(0.5)})])


def test_a_graded_torch_module_is_compared_by_structure_in_every_cell():
    # its values follow from the random initial weights of the layers its author chose to build
    ids = torch.tensor([[3, 4, 5]])
    trusted = [rec("RewardModel.forward", (ids,), torch.tensor([0.25])), rec("f", (1.0,), 2.0)]
    other_head = [rec("RewardModel.forward", (ids,), torch.tensor([-1.5])), rec("f", (1.0,), 2.0)]
    assert disagreement(trusted, other_head, structure_names=["RewardModel"]) is None
    assert "returned a different value" in disagreement(trusted, other_head)       # the control
    # ... but it must be called, on the test's inputs, with a result of the right shape and a gradient
    assert "another shape or kind" in disagreement(
        trusted, [rec("RewardModel.forward", (ids,), torch.zeros(1, 1)), rec("f", (1.0,), 2.0)],
        structure_names=["RewardModel"])
    assert "did not receive the test's inputs" in disagreement(
        trusted, [rec("RewardModel.forward", (ids[:, :2],), torch.zeros(1)), rec("f", (1.0,), 2.0)],
        structure_names=["RewardModel"])
    assert "RewardModel.forward was called 0 time(s)" in disagreement(trusted, [rec("f", (1.0,), 2.0)],
                                                                      structure_names=["RewardModel"])
    with_grad = [rec("RewardModel.forward", (ids,), torch.ones(1, requires_grad=True) * 2)]
    assert "without a gradient" in disagreement(with_grad, [rec("RewardModel.forward", (ids,), torch.ones(1))],
                                                structure_names=["RewardModel"])
    # the other graded functions of the same cell are still compared by value
    assert "call 1 of f returned a different value" in disagreement(
        trusted, [trusted[0], rec("f", (1.0,), 3.0)], structure_names=["RewardModel"])


def test_outside_share_counts_a_cell_of_module_calls_alone_as_structure():
    import nbformat

    cells = [nbformat.v4.new_code_cell("", metadata={"nbgrader": {"grade": True, "grade_id": gid, "points": pts}})
             for gid, pts in (("rm", 2), ("mixed", 3), ("prop", 4), ("replayed", 6), ("none", 5))]
    nb = nbformat.v4.new_notebook(cells=cells)
    forward, f = rec("RewardModel.forward", (1,), 1.0), rec("f", (1,), 1.0)
    plan = {"cells": {"rm": [forward], "mixed": [forward, f], "prop": [f], "replayed": [f], "none": []},
            "structure_only": ["prop", "replayed"], "structure_names": ["RewardModel"],
            "replay": {"replayed": "assert f(1) == 1.0"}}
    # (by value, replayed, by structure, all points)
    assert verify.outside_share(plan, nb) == (3.0, 6.0, 6.0, 20.0)


def test_every_property_cell_is_a_test_cell_of_its_assignment():
    import nbformat

    from autograder import SOLUTIONS
    from autograder.course import graded_cells

    table = json.loads(verify.PROPERTY_CELLS.read_text())
    for assignment, cells in table.items():
        test_cells = set()
        for path in (SOLUTIONS / assignment).glob("*.ipynb"):
            test_cells |= set(graded_cells(nbformat.read(path, as_version=4)))
        assert set(cells) <= test_cells, f"{assignment}: {sorted(set(cells) - test_cells)} are not test cells"
        assert all(why.strip() for why in cells.values())


def test_what_nbgrader_says_a_cell_is():
    """Test, answer or neither, from a cell's nbgrader metadata, whatever a submission put there."""
    import nbformat

    from autograder.course import graded_cells, is_answer_cell, is_test_cell, nbgrader_meta, test_cell_id

    code, markdown = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    test = code("x = 1", metadata={"nbgrader": {"grade": True, "solution": False, "grade_id": "t", "points": 2}})
    answer = code("x = 1", metadata={"nbgrader": {"grade": True, "solution": True, "grade_id": "a"}})  # autograded
    retyped = markdown("x = 1", metadata={"nbgrader": {"grade": True, "grade_id": "m"}})  # a test made markdown
    plain, malformed = code("x = 1"), code("x = 1", metadata={"nbgrader": [1]})
    assert [is_test_cell(c) for c in (test, answer, retyped, plain, malformed)] == [True, False, False, False, False]
    assert [is_answer_cell(c) for c in (test, answer, retyped, plain, malformed)] == [False, True, False, False, False]
    assert [test_cell_id(c) for c in (test, answer, retyped)] == ["t", None, None]
    assert nbgrader_meta(malformed) == nbgrader_meta(plain) == {} and nbgrader_meta(test)["points"] == 2
    nb = nbformat.v4.new_notebook(cells=[test, answer, retyped, plain, malformed])
    assert graded_cells(nb) == {"t": test, "m": retyped}


def test_the_trusted_runs_are_announced_before_they_start(tmp_path, monkeypatch, capsys):
    """The first `grade` after a solution changed runs each solution notebook, up to a minute each: one
    line says so before the first run, none when every plan is cached."""
    from autograder import grading

    monkeypatch.setenv("AUTOGRADER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(grading, "_TRUSTED", {})
    printed_before = []

    def record(path):
        printed_before.append(capsys.readouterr().err)
        return {"cells": {}}, None

    monkeypatch.setattr(grading, "_record_trusted", record)
    # the solutions as _prepare_outside_check passes them on (_as_graded: unchanged since first graded)
    from autograder.course import SOLUTIONS, notebooks

    solutions = [SOLUTIONS / name / f"{nb}.ipynb" for name in ("ppo", "reward_modeling") for nb in notebooks(name)]
    prepare = dict(config=None, solutions=solutions, course_dir=tmp_path / "course", sandboxed=False, progress=True,
                   jobs=1)
    grading._record_outside_check(**prepare)
    assert printed_before[0] == (f"outside check: running the solutions of {len(printed_before)} notebook(s) once "
                                 f"(cached in {tmp_path / 'cache'}) ...\n")
    assert all(not text for text in printed_before[1:])
    assert capsys.readouterr().err.count(" points, ") == len(printed_before)    # then one line per notebook

    monkeypatch.setattr(verify, "cached_plan", lambda path: {"cells": {}})
    grading._record_outside_check(**prepare)
    assert "outside check" not in capsys.readouterr().err


def test_graded_names_skip_private_helpers_and_know_the_torch_modules():
    import nbformat

    nb = nbformat.v4.new_notebook()
    code = ("def f(x):\n    return x\n\ndef _helper():\n    pass\n\nclass Ctl:\n    pass\n\n"
            "class RewardModel(nn.Module):\n    pass\n")
    nb.cells = [nbformat.v4.new_code_cell(code, metadata={"nbgrader": {"solution": True, "grade_id": "a"}}),
                nbformat.v4.new_code_cell("def g():\n    pass", metadata={"nbgrader": {"grade": True}}),
                nbformat.v4.new_code_cell("import torch\nfrom rlhf_course.checks import x")]
    assert verify.graded_names(nb) == ["f", "Ctl", "RewardModel"]
    assert verify.module_classes(nb) == ["RewardModel"]
    modules = verify.imported_modules(nb)
    assert {"torch", "torch.testing", "rlhf_course.checks", "math"} <= set(modules)


@pytest.fixture(scope="module")
def kernel():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def _run(kc, code, silent=False, expressions=None):
    msg_id = kc.execute(code, silent=silent, user_expressions=expressions or {})
    errors = []
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == msg_id:
            if msg["msg_type"] == "error":
                errors.append(f'{msg["content"]["ename"]}: {msg["content"]["evalue"]}')
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
    reply = kc.get_shell_msg(timeout=60)["content"]
    return reply, errors


def _end(kc):
    import ast

    reply, _ = _run(kc, "", silent=True, expressions={"r": verify.END_EXPRESSION})
    return json.loads(ast.literal_eval(reply["user_expressions"]["r"]["data"]["text/plain"]))


def test_the_recorder_restores_the_kernel_and_records_top_level_calls(kernel):
    kc = kernel
    setup = ["import numpy as np\nimport math"]        # the notebook's own imports, run again before each test
    reply, _ = _run(kc, "", silent=True, expressions={"i": verify.install_expression(["double", "Ctl"],
                                                                                     ["math", "numpy"], setup)})
    assert reply["user_expressions"]["i"]["status"] == "ok", reply
    _run(kc, "import numpy as np, math\n"
             "def double(x):\n    return 2 * x\n"
             "def quad(x):\n    return double(double(x))\n"
             "class Ctl:\n    def __init__(self, v):\n        self.value = v\n"
             "    def update(self, k):\n        self.value *= k\n")
    # a student's cell games the kernel every way it can from inside
    _run(kc, "import sys\n"
             "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])\n"
             "np.allclose = lambda *a, **k: True\nmath.isclose = lambda *a, **k: True\n"
             "sys.excepthook = lambda *a: None\nget_ipython()._showtraceback = lambda *a, **k: None\n"
             "import numpy._core.numeric as deep\ndeep.isclose = lambda *a, **k: np.array([True])\n"
             "class Fake:\n    allclose = staticmethod(lambda *a, **k: True)\nnp = Fake()\n")
    reply, _ = _run(kc, "", silent=True, expressions={"b": verify.BEGIN_EXPRESSION})
    assert reply["user_expressions"]["b"]["status"] == "ok", reply
    reply, errors = _run(kc, "assert not np.allclose([1.0], [2.0]) and not math.isclose(1.0, 2.0)\n"
                             "double(np.array([1.0, 2.0]))\nfor k in range(20):\n    double(k)\n"
                             "for k in range(100):\n    double(np.zeros(4096))\n"
                             "quad(1.0)\nc = Ctl(1.0)\nc.update(3.0)\nassert False, 'shown'")
    # transformers gone, traceback shown, np and its comparisons (down to numpy._core) the real ones again
    assert reply["status"] == "error" and errors == ["AssertionError: shown"], errors
    records = _end(kc)
    names = [r["name"] for r in records]
    # double: its own calls (quad's inner calls are quad's, not recorded), the first FIRST_CALLS whatever
    # their size, then while the arguments past them hold at most MAX_CELL_ELEMENTS numbers (5 small calls,
    # then arrays of 4,096); the class's methods
    assert recorder.FIRST_CALLS < 21
    assert names.count("double") == 21 + (recorder.MAX_CELL_ELEMENTS - 5) // 4096
    assert names.count("Ctl.update") == 1
    assert records[0]["args"]["items"][0]["items"][0]["data"] == [1.0, 2.0]
    assert records[0]["result"]["data"] == [2.0, 4.0]
    update = next(r for r in records if r["name"] == "Ctl.update")
    assert update["state"] == {"value": 3.0} and update["result"] is None
    # after the cell the names are the student's own functions again
    reply, _ = _run(kc, "assert not hasattr(double, '__autograder_original__')")
    assert reply["status"] == "ok"


def test_the_recorder_records_a_torch_module_called_like_one(kernel):
    # nn.Module.__call__ looks `forward` up on the class, where the recorder wraps it: a module called as
    # model(x), inside a training loop or not, is recorded like a function
    kc = kernel
    reply, _ = _run(kc, "", silent=True, expressions={"i": verify.install_expression(["Scorer"], ["torch"])})
    assert reply["user_expressions"]["i"]["status"] == "ok", reply
    _run(kc, "import torch\nfrom torch import nn\n"
             "class Scorer(nn.Module):\n    def __init__(self, n):\n        super().__init__()\n"
             "        self.head = nn.Linear(n, 1)\n"
             "    def forward(self, x):\n        return self.head(x).squeeze(-1)\n")
    _run(kc, "", silent=True, expressions={"b": verify.BEGIN_EXPRESSION})
    reply, errors = _run(kc, "m = Scorer(4)\nm(torch.ones(3, 4)).sum().backward()\n"
                             "with torch.no_grad():\n    m(torch.zeros(2, 4))\n")
    assert reply["status"] == "ok", errors
    records = _end(kc)
    assert [r["name"] for r in records] == ["Scorer.__init__", "Scorer.forward", "Scorer.forward"]
    first, second = records[1]["result"], records[2]["result"]
    assert first["shape"] == [3] and first["grad"] is True and second["shape"] == [2] and second["grad"] is False
    assert records[1]["args"]["items"][0]["items"][0]["shape"] == [3, 4]
    reply, _ = _run(kc, "assert not hasattr(Scorer.forward, '__autograder_original__')")
    assert reply["status"] == "ok"


def test_a_tensor_subclass_that_lies_to_torch_is_not_a_result(kernel):
    # A forward that returns wrong scores as a tensor subclass whose __torch_function__ answers True to
    # torch.allclose passes the cell in the kernel; posing as torch.Tensor (name and __module__), it
    # would pass a comparison of shapes too. Outside, it is no tensor: the cell earns nothing.
    kc = kernel
    cell = ("m = Scorer()\nwith torch.no_grad():\n    s = m(torch.ones(3, 4))\n"
            "assert s.shape == (3,) and torch.allclose(s, torch.full((3,), 7.0))\n")
    honest = ("class Scorer(nn.Module):\n    def forward(self, x):\n        return x.sum(-1) + 3\n")
    cheat = ("class Tensor(torch.Tensor):\n"
             "    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
             "        if func is torch.allclose:\n            return True\n"
             "        return super().__torch_function__(func, types, args, kwargs or {})\n"
             "Tensor.__module__ = 'torch'\n"
             "class Scorer(nn.Module):\n    def forward(self, x):\n"
             "        return (x[:, 0] * 0).as_subclass(Tensor)\n")
    runs = {}
    for name, source in (("honest", honest), ("cheat", cheat)):
        reply, _ = _run(kc, "", silent=True, expressions={"i": verify.install_expression(["Scorer"], ["torch"])})
        assert reply["user_expressions"]["i"]["status"] == "ok", reply
        _run(kc, "import torch\nfrom torch import nn\n" + source)
        _run(kc, "", silent=True, expressions={"b": verify.BEGIN_EXPRESSION})
        reply, errors = _run(kc, cell)
        assert reply["status"] == "ok", (name, errors)            # the kernel believes both
        runs[name] = _end(kc)
    forward = [r for r in runs["cheat"] if r["name"] == "Scorer.forward"]
    assert forward[0]["result"] == {"t": "obj", "type": "Tensor"}
    assert disagreement(runs["honest"], runs["honest"], structure_names=["Scorer"]) is None
    assert "another shape or kind" in disagreement(runs["honest"], runs["cheat"], structure_names=["Scorer"])


def test_set_up_cells_are_the_ones_that_only_import_and_define():
    import nbformat

    sources = {"helpers": "import math\ndef row(p):\n    return p\nLN2 = math.log(2)\nHALF = -1 / 2 * math.pi",
               "settings": "PRESET = 'cpu'",                                  # no definition: the student's
               "work": "import numpy as np\ndata = np.ones(3)",               # runs code: not run again
               "call": "def f():\n    pass\nX = f()",
               "numpy_constant": "import numpy as np\nZ = np.log(2)"}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources.values()])
    assert verify.setup_cells(nb) == [sources["helpers"]]


def test_a_trusted_run_whose_records_did_not_come_back_is_refused(tmp_path, monkeypatch):
    # a cell whose solution records were lost (the kernel did not answer the grader's request) would
    # otherwise be kept as one that calls no graded function, and go unchecked outside the kernel
    from autograder.course import SOLUTIONS

    monkeypatch.setenv("AUTOGRADER_CACHE", str(tmp_path / "cache"))
    solution = SOLUTIONS / "rlhf_update_rules" / "rlhf_update_rules.ipynb"
    with pytest.raises(RuntimeError, match="test_rlhf_weight_update_values .* did not come back"):
        verify.record_plan(solution, lambda nb, workdir, plan: ({"test_rlhf_weight_update_values": None}, []))
    assert verify.cached_plan(solution) is None                 # nothing cached
    plan = verify.record_plan(solution, lambda nb, workdir, plan: ({"test_rlhf_weight_update_values": []}, []))
    assert plan["cells"] == {"test_rlhf_weight_update_values": []} and plan["replay"] == {}


def test_records_far_larger_than_the_recorder_writes_are_not_parsed(monkeypatch):
    from autograder import kernel

    executor = kernel.VerifiedExecute()
    records = [{"name": "f", "args": [], "result": 1.0}]

    def reply_with(text):
        return lambda code, expressions=None: {"user_expressions": {"r": {"data": {"text/plain": text}}}}

    monkeypatch.setattr(executor, "_request", reply_with(repr(json.dumps(records))))
    assert executor._records() == records
    monkeypatch.setattr(kernel, "MAX_RECORDS_CHARS", 100)
    big = repr(json.dumps(records + [{"name": "f", "args": [0.0] * 100, "result": 1.0}]))
    monkeypatch.setattr(executor, "_request", reply_with(big))
    assert executor._records() is None
    monkeypatch.setattr(executor, "_request", reply_with("not JSON"))
    assert executor._records() is None


def test_the_outside_check_records_the_solution_against_the_gradebooks_tests(tmp_path, monkeypatch):
    """An assignment graded before keeps the test cells it was first graded with; when solutions/ has changed
    since, the solution must be recorded against those stored cells (what the kernels run), or every correct
    submission's calls differ from the record (a hidden assertion added, one call more)."""
    import nbformat
    import nbgrader.api

    from autograder import SOLUTIONS
    from autograder.course import graded_cells
    from autograder.grading import _as_graded

    solution = SOLUTIONS / "rlhf_ppo" / "rlhf_ppo.ipynb"
    cells = {gid: c.source for gid, c in graded_cells(nbformat.read(solution, as_version=4)).items()}
    changed_id = next(iter(cells))
    stored = dict(cells, **{changed_id: cells[changed_id] + "\nassert True  # as first graded\n"})

    class Gradebook:                       # the gradebook's stored source cells, and nothing else
        def __init__(self, url):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def find_source_cell(self, grade_id, notebook, assignment):
            assert (notebook, assignment) == ("rlhf_ppo", "rlhf_ppo")
            if grade_id not in current:
                raise nbgrader.api.MissingEntry()
            return type("Cell", (), {"source": current[grade_id]})

    monkeypatch.setattr(nbgrader.api, "Gradebook", Gradebook)
    current = cells
    assert _as_graded("sqlite://", solution, tmp_path) == solution          # nothing changed: the solution
    current = stored
    graded = _as_graded("sqlite://", solution, tmp_path)
    assert graded.parent.name == "rlhf_ppo" and graded.name == solution.name and graded != solution
    got = {gid: c.source for gid, c in graded_cells(nbformat.read(graded, as_version=4)).items()}
    assert got == stored
    assert sorted(p.name for p in graded.parent.iterdir()) == sorted(p.name for p in solution.parent.iterdir())
    assert solution.read_bytes() != graded.read_bytes()


def test_a_solution_failing_the_outside_check_says_why(monkeypatch):
    """The solution ran in the sandbox alone (where, say, the course's package cannot be imported): the error
    names each failing cell with its error, not only the cells."""
    from autograder import grading
    from autograder.course import SOLUTIONS, test_cell_id

    class FailingKernel:
        records: dict = {}

        def preprocess(self, nb, resources):
            first = next(c for c in nb.cells if test_cell_id(c))
            first.outputs = [{"output_type": "error", "ename": "ModuleNotFoundError",
                              "evalue": "No module named 'rlhf_course'\nmore", "traceback": []}]

    monkeypatch.setattr(grading, "_executor", lambda config, sandboxed: FailingKernel())
    monkeypatch.setattr(grading, "_TRUSTED", {"config": type("C", (), {"Execute": type("E", (), {"timeout": 5})}),
                                              "sandboxed": False})
    plan, error = grading._record_trusted(SOLUTIONS / "rlhf_update_rules" / "rlhf_update_rules.ipynb")
    assert plan is None and "(ModuleNotFoundError: No module named 'rlhf_course')" in error, error
