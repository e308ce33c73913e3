"""The capstone: the CPU preset end to end, resume, one-line errors, DDP, the GPU check's CPU path, and
oracles for the plumbing's math (best-of-n weights and KL, FLOP counts, answers from a notebook)."""
import contextlib
import io
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run, wait_background
from ddp_update_worker import tiny_model
from rlhf_course import capstone as cs
from rlhf_course import textworld as tw
from rlhf_course.answers import MissingAnswers, answer_cells, load_answers
from rlhf_course.rlhf_ppo import TRL_METRICS

ANSWERS = Path(os.environ.get("CAPSTONE_TEST_ANSWERS") or cs.default_answers())


def capstone(*args, timeout=900, env=None):
    """`python -m rlhf_course.capstone ARGS --answers <the solution>`; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "rlhf_course.capstone", *map(str, args), "--answers", str(ANSWERS)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def one_line_error(proc, *words):
    assert proc.returncode == 2, f"exit {proc.returncode}, expected 2\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, f"not a one-line error: {err[-2000:]!r}"
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"


# ------------------------------------------------------------------ the CPU preset, end to end
@pytest.fixture(scope="module")
def cpu_run():
    """`--preset cpu --seed 0 --json`, started in the background when the tests were collected (conftest)."""
    folder, output = wait_background("capstone-cpu")
    line = next((x for x in reversed(output.splitlines()) if x.startswith("{")), None)  # stderr shares the log
    assert line is not None, f"no JSON line in the cpu run's output:\n{output[-4000:]}"
    return folder / "run", json.loads(line)


def test_cpu_preset_writes_everything_it_promises(cpu_run):
    out, line = cpu_run
    summary = json.loads((out / "summary.json").read_text())
    for key in ("gold_reward_before", "gold_reward_after", "proxy_reward_before", "proxy_reward_after", "kl_after",
                "seconds", "device", "model"):
        assert key in summary and key in line, key
    metrics = cs.read_metrics(out)
    assert [m["iteration"] for m in metrics] == list(range(1, cs.PRESETS["cpu"].ppo_iterations + 1))
    assert all(not [k for k in TRL_METRICS if k not in m] for m in metrics), "a TRL metric is missing"
    evals = [m for m in metrics if "eval/gold_reward" in m]
    assert evals and evals[-1]["iteration"] == len(metrics) and all("eval/proxy_reward" in m for m in evals)
    for name in ("checkpoint.pt", "training_curves.png", "rewards_vs_kl.png", "reward_model.pt", "sft/sft.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 1000, name


def test_cpu_preset_rlhf_works_and_is_judged_by_gold(cpu_run):
    out, _ = cpu_run
    s = json.loads((out / "summary.json").read_text())
    assert s["gold_reward_before"] > s["gold_reward_base"] + 0.5, "SFT on good demonstrations must raise gold"
    assert s["reward_model"]["eval_gold_acc"] > 0.8, "the reward model must rank held-out SFT samples like gold"
    assert s["proxy_reward_after"] > s["proxy_reward_before"] + 0.3, "PPO must raise the reward it optimises"
    assert s["gold_reward_after"] > s["gold_reward_before"] + 0.2, "PPO must raise the gold reward over SFT"
    assert 0.5 < s["kl_after"] < 20, "the KL penalty must keep the policy near the SFT model"
    bon = s["best_of_n"]["rows"]
    assert [r["n"] for r in bon] == list(cs.PRESETS["cpu"].best_of_n)
    assert all(r["kl_analytic"] == pytest.approx(math.log(r["n"]) - (r["n"] - 1) / r["n"]) for r in bon)
    assert all(r["kl_empirical"] <= r["kl_analytic"] + 1e-9 for r in bon), "ties can only lower best-of-n's KL"
    assert np.all(np.diff([r["proxy"] for r in bon]) > 0), "best-of-n's proxy reward rises with n"


# ------------------------------------------------------------------ resume, errors, nothing lost
@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """A toy-sized run stopped after 2 of 3 PPO iterations and resumed, and the same run uninterrupted
    (from the same saved SFT model and reward model)."""
    root = tmp_path_factory.mktemp("resume")
    common = ("--preset", "check", "--device", "cpu", "--quiet")
    stopped = capstone(*common, "--out", root / "a", "--stop-after", "2")
    assert stopped.returncode == 0 and "stopped after 2" in stopped.stdout, stopped.stderr[-3000:]
    assert len(cs.read_metrics(root / "a")) == 2
    (root / "b").mkdir()
    for name in ("sft", "reward_model.pt", "reward_model.json", "config.json", "eval_sft.json"):
        (shutil.copytree if (root / "a" / name).is_dir() else shutil.copy)(root / "a" / name, root / "b" / name)
    for folder in ("a", "b"):
        proc = capstone(*common, "--out", root / folder, "--resume")
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_resume_takes_the_same_next_iteration(small_runs):
    resumed, uninterrupted = cs.read_metrics(small_runs / "a"), cs.read_metrics(small_runs / "b")
    assert len(resumed) == len(uninterrupted) == 3
    for a, b in zip(resumed, uninterrupted):
        for key, value in a.items():
            if key != "seconds" and not key.startswith("time/") and isinstance(value, float):  # wall times differ
                assert value == pytest.approx(b[key], rel=1e-9, abs=1e-12), (a["iteration"], key)
    assert json.loads((small_runs / "a/summary.json").read_text())["gold_reward_after"] == \
        json.loads((small_runs / "b/summary.json").read_text())["gold_reward_after"]


def cli(*args):
    """`rlhf_course.capstone.main(ARGS)` in this process: its exit code and stderr, as a CompletedProcess.

    The error paths fail in seconds of setup; in a subprocess each would first spend seconds importing torch
    and transformers. torch's thread count, which a run sets, is restored."""
    threads, err = torch.get_num_threads(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cs.main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(args, code, "", err.getvalue())


def test_one_line_errors_with_exit_code_2(small_runs, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    check = ("--preset", "check", "--device", "cpu")
    cases = [
        (("--preset", "huge", "--out", tmp_path / "x", "--answers", ANSWERS), ["unknown preset 'huge'"]),
        ((*check, "--out", tmp_path / "a-file" / "run", "--answers", ANSWERS), ["cannot write to --out"]),
        ((*check, "--out", small_runs / "a", "--answers", ANSWERS), ["--resume"]),
        ((*check, "--out", tmp_path / "y", "--answers", REPO / "exercises/capstone/capstone.ipynb"),
         ["not implemented yet", "sft_loss"]),
    ]
    cases += [  # chapter 6's estimators: their own answers notebook, and a run's settings stay its own
        ((*check, "--algo", "rloo", "--out", tmp_path / "z", "--answers", ANSWERS, "--beyond-answers",
          REPO / "exercises/beyond_ppo/beyond_ppo.ipynb"), ["not implemented yet", "rloo_advantages"]),
        ((*check, "--algo", "grpo", "--out", small_runs / "a", "--resume", "--answers", ANSWERS),
         ["other settings"]),
        # the check preset adapts β: a fixed β is another run's setting
        ((*check, "--kl-control", "fixed", "--out", small_runs / "a", "--resume", "--answers", ANSWERS),
         ["other settings"]),
    ]
    assert cs.get_preset("check", device="cpu").adaptive_kl and not cs.get_preset("cpu").adaptive_kl
    # resuming with an answer changed since the run began: its saved SFT model came from the old sft_loss
    changed = tmp_path / "changed.ipynb"
    nb = json.loads(ANSWERS.read_text())
    cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "sft_loss")
    source = "".join(cell["source"])
    assert "return (nll * weights).sum() / weights.sum()" in source
    cell["source"] = source.replace("return (nll * weights).sum() / weights.sum()",
                                    "return (nll * weights).sum() / weights.sum().clamp(min=1)")
    changed.write_text(json.dumps(nb))
    cases.append(((*check, "--out", small_runs / "a", "--resume", "--answers", changed),
                  ["sft_loss changed since", "start a new --out"]))
    if not torch.cuda.is_available():
        cases.append((("--preset", "gpu", "--out", tmp_path / "x", "--answers", ANSWERS), ["needs a CUDA GPU"]))
    for argv, words in cases:
        one_line_error(cli(*argv), *words)
    # and through the command line itself: `python -m rlhf_course.capstone` exits with main's code
    one_line_error(capstone("--preset", "huge", "--out", tmp_path / "x"), "unknown preset 'huge'")


def test_critic_free_algos_run_the_same_pipeline(small_runs, tmp_path):
    # Stage 4 with each estimator, from the SFT model and reward model small_runs saved (stages 1-3 do not
    # depend on --algo): `--resume` into a folder that holds only those, as after an interrupted run.
    for algo in ("rloo", "grpo"):
        (tmp_path / algo).mkdir()
        shutil.copytree(small_runs / "a" / "sft", tmp_path / algo / "sft")
        for name in ("reward_model.pt", "reward_model.json"):
            shutil.copy(small_runs / "a" / name, tmp_path / algo / name)
    # both at once: each spends seconds importing torch and transformers, and the machine has 2 cores
    procs = {algo: subprocess.Popen([sys.executable, "-m", "rlhf_course.capstone", "--preset", "check", "--device",
                                     "cpu", "--quiet", "--json", "--algo", algo, "--out", str(tmp_path / algo),
                                     "--resume", "--answers", str(ANSWERS)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd=REPO) for algo in ("rloo", "grpo")}
    for algo, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        out = tmp_path / algo
        line = json.loads(stdout.strip().splitlines()[-1])
        assert line["algo"] == algo and json.loads((out / "config.json").read_text())["ppo"]["algo"] == algo
        metrics = cs.read_metrics(out)
        assert len(metrics) == cs.get_preset("check", device="cpu").ppo_iterations
        assert all(m["sanity/advantage_group_sum"] < 1e-6 for m in metrics), algo   # groups sum to 0
        assert metrics[-1]["objective/kl"] > 0 and "eval/gold_reward" in metrics[-1]
        assert (out / "training_curves.png").stat().st_size > 1000
        assert (out / "sft/sft.json").read_bytes() == (small_runs / "a/sft/sft.json").read_bytes(), \
            "the saved SFT stage was taken, not redone"


def test_a_corrupt_checkpoint_is_refused_and_nothing_is_lost(small_runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(small_runs / "a", run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "checkpoint.pt"}
    (run_dir / "checkpoint.pt").write_bytes(b"\x00garbage, as after a full disk")
    one_line_error(cli("--preset", "check", "--device", "cpu", "--out", run_dir, "--resume", "--answers", ANSWERS),
                   "checkpoint", "unusable")
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "checkpoint.pt"}
    assert after == before, "a refused resume must not change what the run had written"


# ------------------------------------------------------------------ DDP: the same update, split differently
def test_ddp_and_gradient_accumulation_give_the_single_process_update(tmp_path):
    # PPO, RLOO and GRPO (chapter 6's critic-free update), each from the same fixed rollout
    worker = REPO / "tests/ddp_update_worker.py"
    run(sys.executable, worker, tmp_path / "single.pt")
    run(sys.executable, worker, tmp_path / "accumulated.pt", "--accumulate", "4")
    # gloo over the loopback interface: the host's name may resolve to an address the sandbox cannot reach
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(worker), str(tmp_path / "ddp.pt")], capture_output=True, text=True, timeout=400,
                         env={**os.environ, "GLOO_SOCKET_IFNAME": "lo"})
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    singles, acc, ddps = (torch.load(tmp_path / f"{n}.pt", weights_only=False) for n in ("single", "accumulated", "ddp"))
    assert set(singles) == set(ddps) == {"ppo", "rloo", "grpo"} and set(acc) == {"ppo"}
    start = tiny_model().state_dict()
    for algo, single in singles.items():
        others = [ddps[algo]] + ([acc[algo]] if algo in acc else [])
        assert single["world"] == 1 and ddps[algo]["world"] == 2
        moved = [k for k, v in single["policy"].items() if v.dtype.is_floating_point]
        for other in others:
            for key in moved:
                assert torch.allclose(single["policy"][key], other["policy"][key], atol=1e-6, rtol=1e-5), (algo, key)
        change = max(float((single["policy"][k] - start[k]).abs().max()) for k in moved)
        assert change > 1e-3, f"{algo}: the update must move the policy for this to mean anything"
    ppo, acc = singles["ppo"], acc["ppo"]
    for key in ("loss/policy_avg", "loss/value_avg"):
        assert acc["stats"][key] == pytest.approx(ppo["stats"][key], rel=1e-5)
        assert ddps["ppo"]["stats"][key] == pytest.approx(ppo["stats"][key], rel=1e-5)
    assert ppo["stats"]["policy/approxkl_avg"] > 0.01
    assert (singles["rloo"]["stats"]["steps"], singles["grpo"]["stats"]["steps"]) == (1, 3), \
        "RLOO takes one step, GRPO one per epoch (one minibatch)"



# ------------------------------------------------------------------ the GPU check, on a CPU
BLOCKER = """
import importlib.abc, sys
BLOCKED = {"nbgrader", "jupyter", "jupyter_client", "jupyter_core", "ipykernel", "IPython", "nbformat",
           "nbclient", "notebook", "gymnasium", "ipywidgets", "pytest"}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not on the GPU machine")
sys.meta_path.insert(0, Blocker())
"""


def test_gpu_check_runs_on_a_cpu_without_the_course_tooling(tmp_path):
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "check"),
           "PYTHONPATH": str(tmp_path / "blocker")}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--device", "cpu", "--quiet", "--answers", str(ANSWERS)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(proc.stdout.strip().splitlines()) == 1, f"stdout must be the JSON line alone: {proc.stdout[-2000:]}"
    line = json.loads(proc.stdout)
    for key in ("device", "iteration_seconds", "generated_tokens_per_s", "mfu", "peak_memory_gib",
                "gold_reward_start", "gold_reward_end"):
        assert key in line, key
    assert 0 < line["mfu"] < 1.5 and line["iteration_seconds"] > 0 and line["peak_memory_gib"] > 0
    # on a CPU the MFU is against the faster of torch's @ and oneDNN on the same product
    assert line["peak_is"] in ("measured fp32 matmul (336x768x3072, torch's @)",
                               "measured fp32 matmul (336x768x3072, oneDNN)"), line["peak_is"]
    assert all(Path(p).is_file() for p in line["plots"])
    # the gpu preset's β is the learner's AdaptiveKLController: it moves at every iteration
    betas = [m["objective/kl_coef"] for m in cs.read_metrics(tmp_path / "check")]
    assert len(set(betas)) == len(betas) == cs.get_preset("check", device="cpu").ppo_iterations, betas
    # the blocker does block: the check above can go red
    probe = subprocess.run([sys.executable, "-c", "import nbformat"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "not on the GPU machine" in probe.stderr


# ------------------------------------------------------------------ oracles for the plumbing's math
def test_gpu_peaks_take_the_most_specific_name():
    peaks = {name: cs.gpu_peak_flops(name) for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200",
                                                       "NVIDIA H200 NVL", "NVIDIA L40", "NVIDIA L40S", "NVIDIA L4",
                                                       "NVIDIA A100-SXM4-40GB", "Some New GPU")}
    assert peaks == {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H200": 989e12,
                     "NVIDIA H200 NVL": 835e12, "NVIDIA L40": 181e12, "NVIDIA L40S": 362e12, "NVIDIA L4": 121e12,
                     "NVIDIA A100-SXM4-40GB": 312e12, "Some New GPU": None}
    assert not cs.native_bf16(torch.device("cpu"))


def test_best_of_n_weights_match_enumerating_every_subset():
    rng = np.random.default_rng(0)
    for N in (1, 2, 5, 7):
        proxy = rng.normal(size=N)
        for n in range(1, N + 1):
            want = np.zeros(N)
            subsets = list(itertools.combinations(range(N), n))
            for s in subsets:
                want[max(s, key=lambda i: proxy[i])] += 1 / len(subsets)
            assert np.allclose(cs.best_of_n_weights(proxy, n), want)
    with pytest.raises(ValueError):
        cs.best_of_n_weights(np.zeros(3), 4)


def test_best_of_n_empirical_kl_tends_to_the_formula_and_ties_lower_it():
    rng = np.random.default_rng(1)
    proxy = rng.normal(size=4000)
    texts = [f"t{i}" for i in range(4000)]
    for n in (1, 2, 8, 32):
        exact = math.log(n) - (n - 1) / n
        assert cs.best_of_n_empirical_kl(texts, proxy, n) == pytest.approx(exact, abs=0.01), n
        # every outcome drawn twice: a discrete policy with ties has a smaller best-of-n KL
        assert cs.best_of_n_empirical_kl(texts[:2000] * 2, np.concatenate([proxy[:2000]] * 2), n) <= exact + 1e-9


def test_forward_flops_match_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_course.rlhf_ppo import response_logits

    L, E, V, B, ctx, R = 2, 64, 300, 3, 4, 6
    model = GPT2LMHeadModel(GPT2Config(n_layer=L, n_embd=E, n_head=4, vocab_size=V, n_positions=32))
    ids = torch.randint(0, V, (B, ctx + R))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        logits, _ = response_logits(model, ids, torch.ones_like(ids), ctx)
    assert logits.shape == (B, R, V)
    # the trunk on the T - 1 positions before the last (whose logits would predict past the end), the head on
    # the R that predict a response token; the counter charges attention for all (T-1) x (T-1) scores
    T = ctx + R
    want = cs.forward_flops(L, E, B * (T - 1), B * R, V, context=T - 1)
    assert counter.get_total_flops() == pytest.approx(want, rel=0.01)
    # ... which is what the benchmark counts per policy forward (with the causal context, T / 2 on average)
    by_phase = cs.iteration_flops_by_phase(L, E, V, B, ctx, R, ppo_epochs=2)
    assert by_phase["ppo_update"] == pytest.approx(2 * 3 * cs.forward_flops(L, E, B * (T - 1), B * R, V, T / 2))


def test_generation_flops_match_torch_flop_counter_on_the_sampler():
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_course.tiny_lm import generate_responses

    class Tokenizer:  # generate_responses needs ids and a decode, nothing else
        eos_token_id, pad_token_id = 298, 299

        def decode(self, ids, skip_special_tokens=True):
            return ""

    L, E, V, B, P, R = 2, 64, 300, 3, 4, 6
    model = GPT2LMHeadModel(GPT2Config(n_layer=L, n_embd=E, n_head=4, vocab_size=V, n_positions=32))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        generate_responses(model, Tokenizer(), torch.randint(0, 200, (B, P)), max_new_tokens=R, stop_at_eos=False)
    # the counter does not see scaled_dot_product_attention: take out the attention term, summed step by step
    # (prefill token i attends i positions, decode step k attends P + k) rather than by the formula's means
    attention = 2 * 2 * L * E * B * (sum(range(1, P + 1)) + sum(P + k for k in range(1, R)))
    assert counter.get_total_flops() == pytest.approx(cs.generation_flops(L, E, V, B, P, R) - attention, rel=1e-9)


def test_answers_are_taken_from_a_notebook_and_refused_clearly(tmp_path):
    def notebook(*sources):
        cells = [{"cell_type": "code", "metadata": {"nbgrader": {"solution": True, "grade_id": f"c{i}"}},
                  "source": src, "outputs": [], "execution_count": None} for i, src in enumerate(sources)]
        path = tmp_path / f"nb{len(list(tmp_path.iterdir()))}.ipynb"
        path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        return path

    good = notebook("def f(x):\n    ### BEGIN SOLUTION\n    return np.sqrt(x)\n    ### END SOLUTION\n", "g = 2")
    assert load_answers(good, ["f", "g"])["f"](4.0) == 2.0
    assert [gid for gid, _ in answer_cells(good)] == ["c0", "c1"]
    stub = notebook("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n")
    with pytest.raises(MissingAnswers, match="not implemented yet.*f"):
        load_answers(stub, ["f"])
    with pytest.raises(MissingAnswers, match="defined by no answer cell: h"):
        load_answers(good, ["f", "h"])
    with pytest.raises(MissingAnswers, match="raises ZeroDivisionError"):
        load_answers(notebook("x = 1 / 0"), ["x"])
    with pytest.raises(MissingAnswers, match="cannot read"):
        load_answers(tmp_path / "absent.ipynb", ["f"])
    assert set(load_answers(ANSWERS, cs.ANSWERS)) == set(cs.ANSWERS)


def test_answers_fingerprint_sees_code_not_where_it_was_written():
    from rlhf_course.answers import answers_fingerprint

    def run(source, name):
        namespace = {}
        exec(compile(source, "<cell>", "exec"), namespace)
        return answers_fingerprint({name: namespace[name]})[name]

    f = run("def f(x):\n    return x + 1\n", "f")
    assert f == run("\n\n# moved, with a comment\ndef f(x):\n    return x + 1  # one more\n", "f")
    assert f == run('def f(x):\n    """Now documented."""\n    return x + 1\n', "f")
    assert f != run("def f(x):\n    return x + 2\n", "f") != run("def f(x, y=1):\n    return x + 1\n", "f")
    cls = "class K:\n    def __init__(self, a):\n        self.a = a\n    def update(self, x):\n        return x * {}\n"
    assert run(cls.format(2), "K") == run("\n" + cls.format(2), "K") != run(cls.format(3), "K")


def test_answer_cells_run_in_their_notebooks_folder(tmp_path, monkeypatch):
    """The capstone's Part 0 may load chapter 4's answers by a path relative to the notebook (README): the command
    line, run from the course's root, must find them as Jupyter does, and leave the working folder as it was."""
    def notebook(path, source):
        cell = {"cell_type": "code", "metadata": {"nbgrader": {"solution": True, "grade_id": path.stem}},
                "source": source, "outputs": [], "execution_count": None}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        return path

    notebook(tmp_path / "exercises/rlhf_ppo/rlhf_ppo.ipynb", "def masked_mean(x, m):\n    return 7.0\n")
    capstone = notebook(tmp_path / "exercises/capstone/capstone.ipynb",
                        "from rlhf_course.answers import load_answers\n"
                        "globals().update(load_answers('../rlhf_ppo/rlhf_ppo.ipynb', ['masked_mean']))\n")
    for cwd in (tmp_path, tmp_path / "exercises"):
        monkeypatch.chdir(cwd)
        assert load_answers(capstone.relative_to(cwd), ["masked_mean"])["masked_mean"](None, None) == 7.0
        assert Path.cwd() == cwd
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingAnswers, match="cannot read the notebook ../rlhf_ppo/absent.ipynb"):
        load_answers(notebook(tmp_path / "exercises/capstone/broken.ipynb",
                              "from rlhf_course.answers import load_answers\n"
                              "load_answers('../rlhf_ppo/absent.ipynb', ['f'])\n"), ["f"])
    assert Path.cwd() == tmp_path


def test_capstone_copies_of_chapter_answers_never_drift():
    """The capstone's Part 0 holds the chapter 3-4 reference answers verbatim: one source, as d2l keeps it."""
    source = REPO / "solutions/capstone/capstone.ipynb"
    pasted = dict(answer_cells(source))["previous_answers"]
    for chapter, names in (("reward_modeling", {"RewardModel"}),
                           ("rlhf_ppo", {"kl_estimates", "per_token_rewards", "AdaptiveKLController", "masked_mean",
                                         "masked_whiten", "response_log_probs"})):
        cells = dict(answer_cells(REPO / f"solutions/{chapter}/{chapter}.ipynb"))
        for name in names:
            assert cells[name].strip() in pasted, f"the capstone's copy of {name} differs from solutions/{chapter}"


def test_text_world_annotator_and_demonstrations():
    prompts = tw.sample_prompts(200, seed=3)
    a = [c[0] for c in (tw.sample_completions(p, 1, seed=1) for p in prompts)]
    b = [c[0] for c in (tw.sample_completions(p, 1, seed=2) for p in prompts)]
    prefs = tw.annotate_pairs(prompts, a, b, seed=0)
    assert prefs == tw.annotate_pairs(prompts, a, b, seed=0) and prefs != tw.annotate_pairs(prompts, a, b, seed=1)
    perfect = tw.annotate_pairs(prompts, a, b, temperature=0)
    assert all(p.gold_chosen >= p.gold_rejected for p in perfect)
    assert 0.65 < tw.annotator_accuracy(prefs) < 0.95
    with pytest.raises(ValueError):
        tw.annotate_pairs(prompts, a, b[:-1])
    demos = tw.sample_demonstrations(prompts[:50], seed=4, n_candidates=4)
    for i, (p, d) in enumerate(zip(prompts[:50], demos)):
        drafts = tw.sample_completions(p, 4, seed=4 * 1_000_003 + i)
        assert d in drafts and tw.gold_reward(p + " " + d)[0] == tw.gold_reward([p + " " + x for x in drafts]).max()


def test_demonstrations_are_encoded_with_the_prompt_masked():
    from rlhf_course.tiny_lm import load_tiny_lm

    _, tok = load_tiny_lm(progress=False)
    prompts, completions = ["the soup was", "honestly the waiter seemed"], ["great .", "rude but the wine was fine ."]
    ids, prompt_mask, attn = cs.encode_demonstrations(tok, prompts, completions)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        assert prompt_mask[i].sum() == len(tok(p)["input_ids"]) and (attn[i] >= prompt_mask[i]).all()
        response = ids[i][(attn[i] == 1) & (prompt_mask[i] == 0)].tolist()
        assert response[-1] == tok.eos_token_id and tok.decode(response[:-1]) == " " + c
    assert (ids[attn == 0] == tok.pad_token_id).all()


def test_evaluation_measures_zero_kl_for_the_reference_itself():
    from rlhf_course.tiny_lm import load_tiny_lm

    answers = load_answers(ANSWERS, ["RewardModel"])
    lm, tok = load_tiny_lm(progress=False)
    rm = answers["RewardModel"](lm.transformer).eval()
    cfg = cs.get_preset("check", device="cpu")
    ev = cs.evaluate_policy(cfg, lm, lm, rm, tok, prompts=tw.sample_prompts(8, seed=0))
    assert ev["kl"] == pytest.approx(0.0, abs=1e-6)
    assert ev["gold"] == pytest.approx(float(tw.gold_reward(ev["texts"]).mean()))
    assert len(ev["per_sample"]["proxy"]) == 8 and 0 < ev["distinct"] <= 1


def test_matmul_peak_is_measured_with_either_kernel():
    """measure_matmul_flops times torch's product or oneDNN's (the one GPT-2 small's products take)."""
    small = dict(shape=(32, 64, 48), reps=3, warmup_s=0.01)
    assert cs.measure_matmul_flops(torch.device("cpu"), **small) > 0
    if cs.fast_gpt2.onednn_kernel() is not None:
        assert cs.measure_matmul_flops(torch.device("cpu"), kernel="onednn", **small) > 0
    with pytest.raises(ValueError, match="kernel must be"):
        cs.measure_matmul_flops(torch.device("cpu"), kernel="mkl", **small)
    with pytest.raises(ValueError, match="float32 on a CPU"):
        cs.measure_matmul_flops(torch.device("cpu"), torch.bfloat16, kernel="onednn", **small)


def test_cpu_matmul_peak_takes_the_faster_kernel(monkeypatch):
    """fp32: the faster of torch's product and oneDNN's, named; bf16: torch's bf16 product; no oneDNN: torch's."""
    speeds = {("torch", torch.float32): 150e9, ("onednn", torch.float32): 190e9, ("torch", torch.bfloat16): 350e9}
    monkeypatch.setattr(cs, "measure_matmul_flops",
                        lambda device, dtype=torch.float32, kernel="torch", **kw: speeds[kernel, dtype])
    monkeypatch.setattr(cs.fast_gpt2, "onednn_kernel", lambda: object())
    assert cs.cpu_matmul_peak() == (190e9, "measured fp32 matmul (336x768x3072, oneDNN)")
    speeds["torch", torch.float32] = 200e9
    assert cs.cpu_matmul_peak() == (200e9, "measured fp32 matmul (336x768x3072, torch's @)")
    assert cs.cpu_matmul_peak(bf16=True) == (350e9, "measured bf16 matmul (336x768x3072, torch's @)")
    monkeypatch.setattr(cs.fast_gpt2, "onednn_kernel", lambda: None)
    speeds["torch", torch.float32] = 100e9
    assert cs.cpu_matmul_peak() == (100e9, "measured fp32 matmul (336x768x3072, torch's @)")


def test_bench_prints_one_json_line_per_trainer():
    """PPO (fp32 and bf16 autocast), RLOO, GRPO and DPO, each `capstone bench ... --json` on a toy shape."""
    tiny = ["--n-layer", 2, "--n-embd", 64, "--n-head", 2, "--vocab", 300, "--warmup", 1, "--threads", 1, "--json"]
    runs = {"ppo": ["--iters", 2, "--paired-peak"], "ppo-bf16": ["--iters", 1, "--bf16", "--no-onednn", "--paired-peak"],
            "rloo": ["--iters", 1, "--algo", "rloo"], "grpo": ["--iters", 1, "--algo", "grpo"],
            "dpo": ["--iters", 1, "--algo", "dpo"], "dpo-paired": ["--iters", 1, "--algo", "dpo", "--paired-peak"]}
    # all at once, one thread each: each spends seconds importing torch and transformers
    procs = {name: subprocess.Popen([sys.executable, "-m", "rlhf_course.capstone", "bench", *map(str, tiny + extra),
                                     "--answers", str(ANSWERS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, cwd=REPO) for name, extra in runs.items()}
    lines = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        if name == "dpo-paired":
            assert proc.returncode == 2 and "--paired-peak is not available with --algo dpo" in stderr, stderr[-3000:]
            continue
        assert proc.returncode == 0, f"{name}: {stderr[-3000:]}"
        out = stdout.strip().splitlines()
        assert len(out) == 1, f"{name}: one JSON line expected on stdout, got {stdout[-2000:]!r}"
        lines[name] = json.loads(out[0])
        assert lines[name]["s_per_iter_median"] > 0, lines[name]
    ppo = lines["ppo"]
    assert len(ppo["s_per_iter_all"]) == 2 and ppo["tokens_per_s"] > 0 and ppo["precision"] == "fp32"
    assert ppo["flops_per_iter"] == pytest.approx(cs.iteration_flops(2, 64, 300, 16, 5, 16, 4))
    assert set(ppo["phases"]) == {"generation", "scores_and_logprobs", "advantages", "ppo_update"}
    assert sum(p["flops"] for p in ppo["phases"].values()) == pytest.approx(ppo["flops_per_iter"])
    assert all(p["s_median"] > 0 for p in ppo["phases"].values())
    # --paired-peak: a peak of the run's precision before each timed iteration, and the median of the ratios
    for name, dtype in (("ppo", "fp32"), ("ppo-bf16", "bf16")):
        run = lines[name]
        assert len(run["paired_peak_gflops"]) == len(run["s_per_iter_all"]) and min(run["paired_peak_gflops"]) > 0
        assert run["paired_peak_is"].startswith(f"measured {dtype} matmul"), run["paired_peak_is"]
        assert run["mfu_paired"] == pytest.approx(np.median([run["flops_per_iter"] / t / (p * 1e9) for t, p in
                                                             zip(run["s_per_iter_all"], run["paired_peak_gflops"])]))
    assert "mfu_paired" not in lines["rloo"]
    assert lines["ppo-bf16"]["precision"] == "bf16 autocast"
    assert ppo["onednn"] == (cs.fast_gpt2.onednn_kernel() is not None) and not lines["ppo-bf16"]["onednn"]
    for algo in ("rloo", "grpo", "dpo"):
        assert lines[algo]["algo"] == algo and len(lines[algo]["s_per_iter_all"]) == 1, lines[algo]
    # the critic-free loop's work: RLOO one update pass, GRPO 4 (--ppo-epochs), as the FLOP count says
    for algo, epochs in (("rloo", 1), ("grpo", 4)):
        assert lines[algo]["flops_per_iter"] == pytest.approx(cs.iteration_flops(2, 64, 300, 16, 5, 16, epochs))
        assert lines[algo]["shape"]["group_size"] == 4 and lines[algo]["tokens_per_s"] > 0
    assert (lines["rloo"]["beta"], lines["grpo"]["beta"], lines["dpo"]["beta"]) == (0.05, 0.04, 0.1), \
        "β is the capstone's --algo setting (RLOO 0.05, GRPO 0.04) and DPOConfig's 0.1: the TRL side is given the same"
    assert lines["dpo"]["pairs_per_s"] == pytest.approx(16 / lines["dpo"]["s_per_iter_median"])
