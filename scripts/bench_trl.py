"""Side-by-side speed of TRL 1.12's PPOTrainer and the course's PPO-RLHF trainer, on identical work.

    make bench-trl                                              # builds .venv-trl once (1-4 min), then runs this
    .venv/bin/python scripts/bench_trl.py                       # both shapes, 3 warm-up + 20 timed iterations
    .venv/bin/python scripts/bench_trl.py --shapes tiny --iters 3 --warmup 1       # a quick check (≈ 1 min)
    .venv/bin/python scripts/bench_trl.py --ours-cmd "python /tmp/stub.py bench"   # another "ours" command

Run time on 2 idle cores with the defaults: "tiny" ≈ 3 min; "gpt2-124m" ≈ 30 min (TRL ≈ 18-25 s per iteration as
shipped and without gc.collect, 15 s under bf16 autocast; ours ≈ 7.5 s, 8.7 s without oneDNN, 5.3 s under bf16, each
plus ≈ 0.5 s per iteration for the peak `--paired-peak` measures before it). `--iters 10 --warmup 2`: 20 min.

Each trainer runs in fp32 and under bf16 autocast (TRL: accelerate's; ours: RLHFConfig(bf16=True)); a bf16 row's
MFU is against the bf16 matmul peak. Ours runs once more in fp32 with `--no-onednn`: every product through torch's
default kernels, to show what routing GPT-2 small's products through oneDNN gives (rlhf_course/fast_gpt2.py). The work, the same on both sides: random-init GPT-2 policy, reference and reward model (TRL's value model is a
fourth GPT-2 trunk, ours a value head on the policy trunk); B prompts of exactly P random token ids; R sampled
tokens at temperature 0.7 with no early stop; `ppo_epochs` epochs of one minibatch; 2 CPU threads each.
Every trainer runs in its own subprocess, one after the other: TRL in `.venv-trl` (TRL 1.12 is the last release
with PPO, and its pins must not touch the course's), ours in the course venv. Nothing is downloaded.

Output: the command and versions, a markdown table (median s/iter, tokens/s, model FLOPs per iteration, MFU
against a matmul peak measured in the same run, speed-up against TRL), then one JSON line with everything.
The same file is the TRL worker (`--worker trl`, run by `.venv-trl/bin/python`): it imports torch/TRL only there.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (n_layer, n_embd, n_head, vocab): the course's tiny policy shape and GPT-2 small.
SHAPES = {
    "tiny": dict(n_layer=4, n_embd=128, n_head=4, vocab=2048),
    "gpt2-124m": dict(n_layer=12, n_embd=768, n_head=12, vocab=50257),
}
TRL_VARIANTS = {"trl": "TRL 1.12 as shipped", "trl-nogc": "TRL 1.12 without gc.collect",
                "trl-bf16": "TRL 1.12, bf16 autocast"}
OURS_VARIANTS = {"ours": "ours", "ours-no-onednn": "ours, torch's kernels", "ours-bf16": "ours, bf16 autocast"}
NAMES = TRL_VARIANTS | OURS_VARIANTS


def add_work_arguments(p: argparse.ArgumentParser, batch_help: str, epochs_help: str) -> None:
    """The options both benchmarks share: which shapes, how long, the work of one iteration, the TRL venv."""
    p.add_argument("--shapes", default="tiny,gpt2-124m", help="comma-separated subset of: " + ", ".join(SHAPES))
    p.add_argument("--iters", type=int, default=20, help="timed iterations; the median is reported")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (>= 1: TRL's first is untimeable)")
    p.add_argument("--batch-size", type=int, default=16, help=batch_help)
    p.add_argument("--prompt-length", type=int, default=5, help="P: tokens per prompt (random ids, no padding)")
    p.add_argument("--response-length", type=int, default=16, help="R: tokens per response, never stopped early")
    p.add_argument("--ppo-epochs", type=int, default=4, help=epochs_help)
    p.add_argument("--temperature", type=float, default=0.7, help="TRL's sampling temperature (ours fixes 0.7)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in every process (and OMP_NUM_THREADS)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random models and data")
    p.add_argument("--trl-python", default=str(REPO / ".venv-trl" / "bin" / "python"), help="python of the TRL venv")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per subprocess")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_work_arguments(p, "B: prompts per iteration", "PPO epochs over the batch, one minibatch each")
    p.add_argument("--ours-cmd", default=f"{shlex.quote(sys.executable)} -m rlhf_course.capstone bench",
                   help="command for our side; the shape/work flags are appended; last stdout line is JSON")
    p.add_argument("--skip", default="", help="comma-separated trainers not to run: " + ", ".join(NAMES))
    p.add_argument("--save", type=Path, help="also write the JSON line's object to this file (the book reads "
                   "book/capstone/data/bench_trl.json)")
    # worker mode (internal): run one TRL measurement in this process and print one JSON line
    p.add_argument("--worker", choices=["trl"], help=argparse.SUPPRESS)
    p.add_argument("--no-gc", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.warmup < 1:
        p.error("--warmup must be >= 1: a TRL iteration is timed from the previous iteration's on_step_end")
    return a


# ------------------------------------------------------------------------------------------------------------
# Model FLOPs: counted by the course's own formulas (rlhf_course.capstone), so the two sides are counted alike.
# Imported lazily: the TRL worker runs in .venv-trl, where the course package is not installed.
# ------------------------------------------------------------------------------------------------------------
def trl_flops_per_iter(B, P, R, ppo_epochs, n_layer, n_embd, vocab):
    """One TRL 1.12 PPOTrainer iteration (trl/experimental/ppo/ppo_trainer.py, read in its source):
    - generation by the policy, with output_scores: the rollout log-probs come from these logits, the policy is
      not re-run without grad (`batch_generation`, l. 690);
    - reference policy, full LM forward, logits at all T = P+R positions (`forward(ref_policy, ...)`, l. 711);
    - value model trunk on T positions (`get_reward(unwrapped_value_model, ...)`, l. 729);
    - reward model trunk on T positions (`get_reward(reward_model, ...)`, l. 733);
    - per PPO epoch (one minibatch, one micro-batch): `PolicyAndValueWrapper` runs the value trunk AND the full
      policy LM (logits at all T positions) on B×T tokens (l. 820, wrapper l. 291), then backward (l. 848).
    """
    from rlhf_course.capstone import forward_flops, generation_flops

    T = P + R
    lm = forward_flops(n_layer, n_embd, B * T, B * T, vocab, (T + 1) / 2)  # policy or ref, logits everywhere
    trunk = forward_flops(n_layer, n_embd, B * T, 0, vocab, (T + 1) / 2)  # value or reward model
    gen = generation_flops(n_layer, n_embd, vocab, B, P, R)
    return gen + lm + 2 * trunk + ppo_epochs * 3 * (lm + trunk)  # 3 = forward + backward (2×)


def this_command() -> str:
    """The command line that ran this script, with the interpreter relative to the repository when inside it."""
    python = Path(sys.executable)
    python = python.relative_to(REPO) if python.is_relative_to(REPO) else python
    return shlex.join([str(python), *sys.argv])


def matmul_gflops(threads, bf16=False, kernel="torch"):
    """fp32 (or bf16) 336×768×3072 throughput on `threads` threads (an (B·(P+R))×E @ E×4E MLP matmul of GPT-2
    small at 16×21 tokens): the peak the MFU is measured against, by the same function the capstone's bench uses.
    A bf16 variant is measured against the bf16 peak: on a CPU with AVX512-BF16 or AMX it is 2-3× the fp32 one.
    kernel="onednn": the fp32 product through oneDNN (which our trainer uses for GPT-2 small) instead of torch's
    default `@` (MKL); None where this torch has no usable oneDNN kernel."""
    import torch

    from rlhf_course.capstone import measure_matmul_flops

    torch.set_num_threads(threads)
    try:
        return measure_matmul_flops(torch.device("cpu"), torch.bfloat16 if bf16 else torch.float32,
                                    kernel=kernel) / 1e9
    except ValueError:
        return None


def fp32_peaks(threads):
    """(torch's `@`, oneDNN's or None) fp32 GFLOP/s, and bf16 GFLOP/s, measured now."""
    return matmul_gflops(threads), matmul_gflops(threads, kernel="onednn"), matmul_gflops(threads, bf16=True)


# ------------------------------------------------------------------------------------------------------------
# TRL worker: runs in .venv-trl
# ------------------------------------------------------------------------------------------------------------
def trl_worker(a):
    import resource
    import types
    from importlib.metadata import version

    import torch

    torch.set_num_threads(a.threads)
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedTokenizerFast,
                              TrainerCallback)
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_trainer_module

    shape = SHAPES[a.shape]
    L, E, H, V = shape["n_layer"], shape["n_embd"], shape["n_head"], shape["vocab"]
    B, P, R = a.batch_size, a.prompt_length, a.response_length

    # ppo_trainer.py does `import gc` and calls `gc.collect()` twice per iteration: after the rollout (l. 753)
    # and after on_step_end (l. 919). We rebind the module-global name `gc` of that module only: to a no-op for
    # "without gc.collect", to a timed call of the real one as shipped (to report what the two calls cost).
    # The interpreter's automatic generational gc and every other module keep the real `gc`.
    real_gc = ppo_trainer_module.gc
    assert real_gc.collect is __import__("gc").collect, "TRL no longer imports gc as a module: re-read its source"
    gc_seconds = []

    def timed_collect(generation=2):
        t0 = time.perf_counter()
        n = real_gc.collect(generation)
        gc_seconds.append(time.perf_counter() - t0)
        return n

    ppo_trainer_module.gc = types.SimpleNamespace(collect=(lambda generation=2: 0) if a.no_gc else timed_collect)

    # A word-level tokenizer with exactly V entries: TRL only pads with it and reads pad/eos ids.
    # pad (V-1) != eos (V-2), as TRL requires; prompts avoid both (a pad id in a prompt would be masked out).
    vocab = {f"t{i}": i for i in range(V - 2)} | {"<eos>": V - 2, "<pad>": V - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="t0")
    assert len(tokenizer) == V and tokenizer.pad_token_id != tokenizer.eos_token_id

    # eos_token_id=None in the model config (so in policy.generation_config too): nothing can stop sampling, every
    # row gets exactly R tokens; PPOConfig(stop_token=None) below also sets policy.generation_config.eos_token_id
    # = None (ppo_trainer.py l. 401) and skips truncate_response.
    config = GPT2Config(vocab_size=V, n_positions=P + R, n_embd=E, n_layer=L, n_head=H, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
                        pad_token_id=tokenizer.pad_token_id, num_labels=1)
    torch.manual_seed(a.seed)
    policy = GPT2LMHeadModel(config)
    ref_policy = GPT2LMHeadModel(config)
    ref_policy.load_state_dict(policy.state_dict())  # the reference is the initial policy
    reward_model = GPT2ForSequenceClassification(config)
    value_model = GPT2ForSequenceClassification(config)

    n_iters = a.warmup + a.iters
    g = torch.Generator().manual_seed(a.seed)
    prompts = torch.randint(0, V - 2, (4 * B, P), generator=g)  # (4B, P); the dataloader reshuffles each pass
    dataset = Dataset.from_dict({"input_ids": prompts.tolist()})

    # Count what generate returns, per call: new tokens per row and pad ids in them (HF fills a row that stopped
    # early with pad). On the first call, also resolve TRL's generation config the way generate() merges it with
    # policy.generation_config (transformers 5 fills unset fields from it), to show the eos_token_id it uses.
    gen_log, resolved_eos = [], []
    raw_generate = policy.generate

    def counting_generate(*args, **kwargs):
        out = raw_generate(*args, **kwargs)
        new = out.sequences[:, kwargs["input_ids"].shape[1]:]  # (B, R)
        if not resolved_eos:
            resolved_eos.append(policy._prepare_generation_config(kwargs["generation_config"])[0].eos_token_id)
        is_eos = new == tokenizer.eos_token_id  # (B, R); sampled by chance, ≈ B·R/V per call
        gen_log.append(dict(new_tokens=new.shape[1], scores=len(out.scores), rows=new.shape[0],
                            pad_ids=int((new == tokenizer.pad_token_id).sum()),
                            eos_ids=int(is_eos.sum()), eos_before_last=int(is_eos[:, :-1].sum())))
        return out

    policy.generate = counting_generate

    class StepTimer(TrainerCallback):
        """One stamp per iteration: on_step_end comes after the optimizer steps and logging of each iteration."""

        def __init__(self):
            self.stamps = []

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append(time.perf_counter())
            if len(self.stamps) > 1:
                print(f"  iteration {len(self.stamps)}: {self.stamps[-1] - self.stamps[-2]:.3f} s",
                      file=sys.stderr, flush=True)

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out_dir:
        args = PPOConfig(
            output_dir=out_dir, report_to=[], use_cpu=True, bf16=a.bf16, seed=a.seed,
            per_device_train_batch_size=B, gradient_accumulation_steps=1, num_mini_batches=1,
            local_rollout_forward_batch_size=B, num_ppo_epochs=a.ppo_epochs, response_length=R,
            temperature=a.temperature, stop_token=None, missing_eos_penalty=None,
            total_episodes=n_iters * B,  # exactly n_iters iterations
            num_sample_generations=0, save_strategy="no", logging_steps=n_iters, disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                             reward_model=reward_model, value_model=value_model, train_dataset=dataset,
                             callbacks=[timer])
        assert str(trainer.accelerator.mixed_precision) == ("bf16" if a.bf16 else "no"), \
            f"asked for bf16={a.bf16}, accelerate runs {trainer.accelerator.mixed_precision}"
        trainer.train()

    intervals = [t1 - t0 for t0, t1 in zip(timer.stamps, timer.stamps[1:])]
    timed = intervals[a.warmup - 1:]  # interval i ends iteration i+2; iterations 1..warmup are not timed
    assert len(timed) == a.iters, (len(timer.stamps), a.iters)
    assert all(r["new_tokens"] == R and r["scores"] == R and r["rows"] == B for r in gen_log), gen_log
    s = statistics.median(timed)
    print(json.dumps(dict(
        s_per_iter_median=s, tokens_per_s=B * R / s, s_per_iter=timed, s_per_iter_min=min(timed),
        generate_calls=len(gen_log), new_tokens_per_row=sorted({r["new_tokens"] for r in gen_log}),
        pad_ids_in_responses=sum(r["pad_ids"] for r in gen_log), resolved_eos_token_id=resolved_eos[0],
        # the tokenizer's EOS sampled before the last position and sampling went on past it: no early stop
        eos_ids_in_responses=sum(r["eos_ids"] for r in gen_log),
        eos_ids_sampled_before_last=sum(r["eos_before_last"] for r in gen_log),
        gc_collect_calls=len(gc_seconds), gc_collect_s_per_call_median=statistics.median(gc_seconds or [0.0]),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, gc_collect_patched=a.no_gc,
        bf16=a.bf16, mixed_precision=str(trainer.accelerator.mixed_precision),
        threads=torch.get_num_threads(), torch=torch.__version__, trl=version("trl"),
        transformers=version("transformers"), peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    )))


# ------------------------------------------------------------------------------------------------------------
# Driver: runs in the course venv
# ------------------------------------------------------------------------------------------------------------
def run_json(cmd, env, timeout, log_path):
    """Run cmd, keep its output in log_path, return (parsed last JSON line of stdout, None) or (None, error)."""
    t0, load_before = time.perf_counter(), os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{type(e).__name__}: {e}".splitlines()[0]
    log_path.write_text(f"$ {shlex.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    print(f"  ... {time.perf_counter() - t0:.0f} s, log {log_path}", file=sys.stderr, flush=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode == 0 and lines:
        try:
            result = json.loads(lines[-1])
            if isinstance(result, dict) and "s_per_iter_median" in result:
                # 1-minute load averages: above the thread count, other processes shared the cores
                return result | dict(load_before=load_before, load_after=os.getloadavg()[0]), None
        except json.JSONDecodeError:
            pass
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    why = err[-1] if err else (lines[-1] if lines else "no output")
    return None, f"exit {proc.returncode}: {why.strip()}"


def _gflops(x):
    return "unavailable" if x is None else f"{x:.0f}"


def fmt_row(shape, name, r):
    if "error" in r:
        return f"| {shape} | {name} | failed | | | | | | | | |"
    ratio = lambda key: f"{r[key]:.2f}×" if r.get(key) else "–"
    percent = lambda key: f"{100 * r[key]:.1f} %" if key in r else "–"
    return (f"| {shape} | {name} | {r['s_per_iter_median']:.3f} | {r['tokens_per_s']:.0f} | "
            f"{r['flops_per_iter'] / 1e9:.1f} | {100 * r['mfu']:.1f} % | {percent('mfu_vs_torch_matmul')} | "
            f"{percent('mfu_paired')} | {ratio('speedup_vs_trl')} | "
            f"{ratio('speedup_vs_trl_nogc')} | {ratio('speedup_vs_trl_bf16')} |")


def main(a):
    from importlib.metadata import version

    import torch

    print(f"command: {this_command()}")
    trl_versions = subprocess.run(
        [a.trl_python, "-c", "from importlib.metadata import version as v; "
         "print(' '.join(f'{p} {v(p)}' for p in ('torch', 'trl', 'transformers', 'accelerate')))"],
        capture_output=True, text=True).stdout.strip() or f"unavailable ({a.trl_python} failed)"
    print(f"course venv: torch {torch.__version__}, transformers {version('transformers')}; TRL venv: {trl_versions}")
    print(f"threads: {a.threads} per process (torch.set_num_threads, OMP_NUM_THREADS); trainers run one at a time")
    print(f"work: B={a.batch_size} prompts × P={a.prompt_length} tokens, R={a.response_length} sampled at "
          f"T={a.temperature} (no early stop), {a.ppo_epochs} PPO epochs × 1 minibatch, "
          f"{a.warmup} warm-up + {a.iters} timed iterations, median reported", flush=True)

    peak_before, peak_onednn_before, peak16_before = fp32_peaks(a.threads)
    env = os.environ | dict(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), HF_HUB_OFFLINE="1",
                            HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1",
                            TOKENIZERS_PARALLELISM="false")
    log_dir = Path(tempfile.mkdtemp(prefix="bench_trl_"))
    skip = set(filter(None, a.skip.split(",")))
    B, P, R = a.batch_size, a.prompt_length, a.response_length
    work = ["--batch-size", B, "--prompt-length", P, "--response-length", R, "--ppo-epochs", a.ppo_epochs,
            "--iters", a.iters, "--warmup", a.warmup, "--threads", a.threads]
    raw = []  # (shape, trainer, result-or-error)
    for shape in a.shapes.split(","):
        s = SHAPES[shape]
        for variant in [v for v in TRL_VARIANTS if v not in skip]:
            print(f"[{shape}] {TRL_VARIANTS[variant]} ...", file=sys.stderr, flush=True)
            cmd = [a.trl_python, __file__, "--worker", "trl", "--shape", shape, "--seed", a.seed,
                   "--temperature", a.temperature, *work, *(["--no-gc"] if variant == "trl-nogc" else []),
                   *(["--bf16"] if variant == "trl-bf16" else [])]
            # TRL 1.12's PPOTrainer builds its own Accelerator(gradient_accumulation_steps=...) and so ignores
            # PPOConfig(bf16=True); accelerate reads the precision from this variable instead
            variant_env = env | ({"ACCELERATE_MIXED_PRECISION": "bf16"} if variant == "trl-bf16" else {})
            res, err = run_json(list(map(str, cmd)), variant_env, a.timeout, log_dir / f"{shape}-{variant}.log")
            res = res if res is not None else {"error": err}
            res["flops_per_iter"] = trl_flops_per_iter(B, P, R, a.ppo_epochs, s["n_layer"], s["n_embd"], s["vocab"])
            raw.append((shape, variant, res))
        for variant in [v for v in OURS_VARIANTS if v not in skip]:
            print(f"[{shape}] {OURS_VARIANTS[variant]} ...", file=sys.stderr, flush=True)
            # bf16: the same autocast TRL's bf16=True gives (accelerate's torch.autocast on the CPU); log π_old
            # from the sampler's logits, as TRL's (rollout_logprobs="sampling", our default)
            cmd = [*shlex.split(a.ours_cmd), "--n-layer", s["n_layer"], "--n-embd", s["n_embd"], "--n-head",
                   s["n_head"], "--vocab", s["vocab"], *work[:8], "--minibatches", 1, *work[8:], "--json",
                   *(["--bf16"] if variant == "ours-bf16" else []),
                   *(["--no-onednn"] if variant == "ours-no-onednn" else []),
                   *(["--paired-peak"] if "rlhf_course.capstone" in a.ours_cmd else [])]
            res, err = run_json(list(map(str, cmd)), env, a.timeout, log_dir / f"{shape}-{variant}.log")
            if res is None:
                res = {"error": err}
            elif "flops_per_iter" in res:
                res["flops_source"] = "reported by our trainer"
            if "flops_per_iter" not in res:  # another --ours-cmd: count the course trainer's work
                from rlhf_course.capstone import iteration_flops

                res["flops_source"] = "rlhf_course.capstone.iteration_flops"
                res["flops_per_iter"] = iteration_flops(s["n_layer"], s["n_embd"], s["vocab"], B, P, R, a.ppo_epochs)
            raw.append((shape, variant, res))
    peak_after, peak_onednn_after, peak16_after = fp32_peaks(a.threads)
    peak_torch = max(peak_before, peak_after)  # the machine's best: a busy core lowers it, nothing raises it
    peak_onednn = max(filter(None, (peak_onednn_before, peak_onednn_after)), default=None)
    peak = max(peak_torch, peak_onednn or 0)   # fp32 MFU against the faster kernel: the machine's limit we know
    peak16 = max(peak16_before, peak16_after)

    # Derived columns. tokens/s = B·R sampled tokens per second for every row, whatever a trainer reports itself.
    results = []
    for shape, trainer, r in raw:
        entry = {**SHAPES[shape], **r, "shape": shape, "trainer": trainer}
        entry |= {f"reported_{k}": r[k] for k in ("shape", "trainer") if k in r}  # keep what a trainer says
        if "error" not in r:
            per_iter = r.get("s_per_iter") or r.get("s_per_iter_all")
            if "s_per_iter_min" not in r and isinstance(per_iter, list) and per_iter:
                entry["s_per_iter_min"] = min(per_iter)
            if trainer.startswith("ours") and "tokens_per_s" in r:
                entry["tokens_per_s_reported"] = r["tokens_per_s"]
            entry["tokens_per_s"] = B * R / r["s_per_iter_median"]
            entry["precision"] = "bf16 autocast" if trainer.endswith("bf16") else "fp32"
            entry["mfu"] = r["flops_per_iter"] / r["s_per_iter_median"] / (
                (peak16 if trainer.endswith("bf16") else peak) * 1e9)     # against its own precision's peak
            if not trainer.endswith("bf16"):                               # and against torch's own `@`
                entry["mfu_vs_torch_matmul"] = r["flops_per_iter"] / r["s_per_iter_median"] / (peak_torch * 1e9)
            for key, base in (("speedup_vs_trl", "trl"), ("speedup_vs_trl_nogc", "trl-nogc"),
                              ("speedup_vs_trl_bf16", "trl-bf16")):
                ref = next((x for sh, t, x in raw if sh == shape and t == base and "error" not in x), None)
                entry[key] = ref["s_per_iter_median"] / r["s_per_iter_median"] if ref else None
        results.append(entry)

    print()
    print("| shape | trainer | s/iter (median) | tokens/s | GFLOP/iter | MFU | MFU vs torch's @ | MFU, paired | "
          "ratio vs TRL as shipped | ratio vs TRL without gc.collect | ratio vs TRL bf16 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in results:
        print(fmt_row(e["shape"], NAMES[e["trainer"]], e))
    print()
    print(f"tokens/s = {B}×{R} sampled tokens per second; ratio = TRL's s/iter ÷ this row's (> 1: faster than TRL); "
          f"fp32 MFU against {peak:.0f} GFLOP/s, the faster of two fp32 336×768×3072 products on {a.threads} "
          f"threads: torch's `@` (MKL; {peak_before:.0f} before and {peak_after:.0f} after the trainers), the "
          f"column 'MFU vs torch's @' against it, and oneDNN's ({_gflops(peak_onednn_before)} before, "
          f"{_gflops(peak_onednn_after)} after); bf16 rows against "
          f"{peak16:.0f} GFLOP/s, the same product in bf16 ({peak16_before:.0f} before, {peak16_after:.0f} after). "
          "'MFU, paired' (ours: `bench --paired-peak`): the median over timed iterations of each one's FLOP rate "
          "over the peak of its precision measured right before it, as this machine's speed drifts during a run.")
    for e in results:
        if e["trainer"] == "trl" and e.get("gc_collect_calls"):
            print(f"{e['shape']}: as shipped, TRL's two gc.collect() calls take 2 × "
                  f"{e['gc_collect_s_per_call_median']:.3f} s of each iteration (median call).")
    busy = max((max(e["load_before"], e["load_after"]) for e in results if "load_before" in e), default=0)
    if busy > a.threads + 0.5:
        print(f"note: the machine was busy (1-min load average up to {busy:.1f} with {a.threads} threads per "
              f"trainer, {os.cpu_count()} cores): the medians are noisy; s_per_iter_min in the JSON is the "
              "least-disturbed iteration.")
    for e in results:
        if "error" in e:
            who = TRL_VARIANTS.get(e["trainer"], f"our side ({a.ours_cmd}), {e['trainer']}")
            print(f"FAILED: {e['shape']}: {who} failed: {e['error']}")
        elif "tokens_per_s_reported" in e and abs(e["tokens_per_s_reported"] / e["tokens_per_s"] - 1) > 0.01:
            print(f"note: {e['shape']} ours reports tokens_per_s={e['tokens_per_s_reported']:.0f} "
                  f"(another definition than the table's B·R/s)")
    record = dict(bench="trl-vs-ours", matmul_gflops=peak, matmul_gflops_torch=peak_torch,
                  matmul_gflops_before=peak_before, matmul_gflops_after=peak_after, matmul_gflops_onednn=peak_onednn,
                  matmul_gflops_onednn_before=peak_onednn_before, matmul_gflops_onednn_after=peak_onednn_after,
                  matmul_gflops_bf16=peak16,
                  matmul_gflops_bf16_before=peak16_before, matmul_gflops_bf16_after=peak16_after, threads=a.threads, batch_size=B, prompt_length=P,
                  response_length=R, ppo_epochs=a.ppo_epochs, iters=a.iters, warmup=a.warmup,
                  temperature=a.temperature, torch=torch.__version__, trl_venv=trl_versions,
                  command=this_command(), results=results)
    print(json.dumps(record))
    if a.save:
        a.save.parent.mkdir(parents=True, exist_ok=True)
        a.save.write_text(json.dumps(record, indent=1) + "\n")
        print(f"saved {a.save}", file=sys.stderr)


if __name__ == "__main__":
    args = parse_args()
    trl_worker(args) if args.worker == "trl" else main(args)
