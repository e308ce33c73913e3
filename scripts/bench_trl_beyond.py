"""Side-by-side speed of TRL 1.12's RLOOTrainer, GRPOTrainer and DPOTrainer and the course's RLOO, GRPO and DPO,
on identical work.

    make bench-trl-beyond                                       # builds .venv-trl once (1-4 min), then runs this
    .venv/bin/python scripts/bench_trl_beyond.py                # both shapes, 3 algorithms, 3 warm-up + 20 timed
    .venv/bin/python scripts/bench_trl_beyond.py --shapes tiny --iters 2 --warmup 1      # a quick check (≈ 2 min)
    .venv/bin/python scripts/bench_trl_beyond.py --algos grpo --shapes gpt2-124m          # one algorithm

The work, the same on both sides, fp32, 2 CPU threads each, one process at a time (TRL in `.venv-trl`, ours with
`python -m rlhf_course.capstone bench --algo ALGO`); nothing is downloaded:

- rloo, grpo: a random-init GPT-2 policy, its copy as the reference, and a same-shape random-init reward model
  (a GPT-2 trunk, one score read at the last token). B = --batch-size responses an iteration: B/K prompts of
  exactly P random token ids, K = --group-size responses each, R tokens sampled at temperature 0.7, never stopped
  early. RLOO: β·KL (k1 summed over the response) in the reward, leave-one-out advantages, one gradient step on
  the whole batch (on-policy: ratio 1, TRL's clip does nothing). GRPO: group-normalised advantages, --ppo-epochs
  clipped steps on the whole batch, β·k3 to the reference in the loss, token-mean. The reward is a model rather
  than a function of the text so that the iteration has RLHF's real cost; TRL can be given one exactly
  (`reward_funcs=` a `GPT2ForSequenceClassification`).
- dpo: B pairs a step, each a prompt of P random ids and a chosen and a rejected response of R random ids + EOS;
  π_ref's log-probs of every pair computed once before the clock starts (TRL: `precompute_ref_log_probs=True`);
  a step = the policy on the 2B sequences, the sigmoid loss with β = 0.1, backward, norm clip 1, Adam(W).
- β and the learning rates are the course's (`rlhf_course.capstone.algo_config`, `rlhf_course.dpo.DPOConfig`),
  passed to TRL; constant learning rate on both sides.

What each trainer does beyond that, by its own design (TRL's read in its source; the lines are cited where the
worker configures it): TRL's RLOO always, and its GRPO with more than one iteration per rollout, run one more
no-grad forward of the policy over the rollout for log π_old (ours reads it from the sampler); TRL decodes the
completions to text and re-tokenises them for the reward model (ours scores the token ids); TRL's training
forwards also compute each token's entropy over the vocabulary for its logs (DPO: also the mean logit and the
argmax accuracy); both DPOs run chosen and rejected as one forward of 2B rows, TRL's at temperature 1 and ours
at 0.7, and ours gets dL/dℓ from 4B calls of the learner's numpy loss; TRL's
optimizer is fused AdamW (weight decay 0), ours Adam; ours runs its unused E → 1 value head in the update
forward (weight 0). Counted as each trainer's cost, not removed. Both sides
compute the LM head only at the R + 1 response positions in RLOO and GRPO, at every position in DPO.

Output: the command and versions, a markdown table (median s/iter, throughput, TRL's s/iter ÷ ours), then one
JSON line with everything (`--save FILE` keeps it). The same file is the TRL worker (`--worker trl`, run by
`.venv-trl/bin/python`): it imports torch/TRL only there.
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

from bench_trl import SHAPES, add_work_arguments, run_json, this_command  # scripts/ is on sys.path: this file's own folder

ALGOS = {"rloo": "RLOO", "grpo": "GRPO", "dpo": "DPO"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_work_arguments(p, "B: responses per iteration (rloo, grpo), pairs (dpo)",
                       "GRPO: clipped steps per rollout (TRL: num_iterations)")
    p.add_argument("--algos", default="rloo,grpo,dpo", help="comma-separated subset of: " + ", ".join(ALGOS))
    p.add_argument("--group-size", type=int, default=4, help="K: responses per prompt (rloo, grpo)")
    p.add_argument("--ours-cmd", default=f"{shlex.quote(sys.executable)} -m rlhf_course.capstone bench",
                   help="command for our side; the algorithm/shape/work flags are appended; last stdout line is JSON")
    p.add_argument("--save", type=Path, help="also write the JSON line's object to this file")
    # worker mode (internal): run one TRL measurement in this process and print one JSON line
    p.add_argument("--worker", choices=["trl"], help=argparse.SUPPRESS)
    p.add_argument("--algo", choices=list(ALGOS), help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--beta", type=float, help=argparse.SUPPRESS)
    p.add_argument("--learning-rate", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.warmup < 1:
        p.error("--warmup must be >= 1: a TRL iteration is timed from the previous iteration's on_step_end")
    if a.batch_size % a.group_size:
        p.error(f"--group-size {a.group_size} must divide --batch-size {a.batch_size}")
    return a


# ------------------------------------------------------------------------------------------------------------
# TRL worker: runs in .venv-trl. Source lines cited are trl 1.12.0's (trl/trainer/*.py).
# ------------------------------------------------------------------------------------------------------------
def trl_worker(a):
    import resource
    from importlib.metadata import version

    import torch

    torch.set_num_threads(a.threads)
    import trl
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedTokenizerFast,
                              TrainerCallback)

    shape = SHAPES[a.shape]
    L, E, H, V = shape["n_layer"], shape["n_embd"], shape["n_head"], shape["vocab"]
    B, P, R, K = a.batch_size, a.prompt_length, a.response_length, a.group_size
    n_iters = a.warmup + a.iters
    # optimizer steps per iteration: GRPO's num_iterations (μ) steps reuse one rollout (grpo_trainer.py l. 1592)
    steps_per_iter = a.ppo_epochs if a.algo == "grpo" else 1

    # A word-level tokenizer with exactly V entries, as bench_trl.py's: pad (V-1) != eos (V-2); text "t17 t4 ..."
    # splits back into the same ids, so TRL's decode and re-encode for the reward model keeps every row's length.
    vocab = {f"t{i}": i for i in range(V - 2)} | {"<eos>": V - 2, "<pad>": V - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="t0")
    assert len(tokenizer) == V and tokenizer.pad_token_id != tokenizer.eos_token_id
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    words = lambda ids: " ".join(f"t{int(i)}" for i in ids)  # noqa: E731

    config = GPT2Config(vocab_size=V, n_positions=P + R + 1, n_embd=E, n_layer=L, n_head=H, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, pad_token_id=pad,
                        num_labels=1)
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)

    # Count what generate returns, per call (rloo, grpo): rows, new tokens, EOS and pad ids among them.
    gen_log = []

    def counting(raw_generate):
        def generate(*args, **kwargs):
            out = raw_generate(*args, **kwargs)
            seq = out.sequences if hasattr(out, "sequences") else out          # (rows, P + R)
            new = seq[:, kwargs["input_ids"].shape[1]:]                         # (rows, R)
            gen_log.append(dict(rows=new.shape[0], new_tokens=new.shape[1], eos_ids=int((new == eos).sum()),
                                pad_ids=int((new == pad).sum())))
            return out
        return generate

    class StepTimer(TrainerCallback):
        """One stamp per optimizer step: on_step_end comes after the step and its logging."""

        def __init__(self):
            self.stamps = []

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append(time.perf_counter())
            if len(self.stamps) % steps_per_iter == 0 and len(self.stamps) > steps_per_iter:
                print(f"  iteration {len(self.stamps) // steps_per_iter}: "
                      f"{self.stamps[-1] - self.stamps[-1 - steps_per_iter]:.3f} s", file=sys.stderr, flush=True)

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        # RLOO and GRPO build their reference model from the policy's path (create_model_from_path(get_config_
        # model_id(model.config)): rloo_trainer.py l. 619, grpo_trainer.py l. 984), so the random-init policy is
        # saved and read back: the reference is then the initial policy, offline.
        GPT2LMHeadModel(config).save_pretrained(f"{tmp}/policy")
        policy = GPT2LMHeadModel.from_pretrained(f"{tmp}/policy")
        common = dict(
            output_dir=f"{tmp}/out", report_to=[], use_cpu=True, seed=a.seed, disable_tqdm=True, save_strategy="no",
            bf16=False,                     # TRL's configs default to bf16=True where fp16 is unset
            gradient_checkpointing=False,   # TRL's default True (trl/trainer/base_config.py l. 61) recomputes the
                                            # forward in the backward; ours does not checkpoint
            per_device_train_batch_size=B, gradient_accumulation_steps=1, max_steps=n_iters * steps_per_iter,
            learning_rate=a.learning_rate, lr_scheduler_type="constant", max_grad_norm=1.0,
            logging_steps=n_iters * steps_per_iter, dataloader_num_workers=0,
        )
        if a.algo == "dpo":
            # Text pairs: DPOTrainer tokenises prompt and prompt + completion (dpo_trainer.py l. 1045) and appends
            # EOS to a completion that lacks it (l. 1032): ours has the EOS too. Each completion = R ids + EOS.
            prompts = torch.randint(0, V - 2, (n_iters * B, P), generator=g)
            side = lambda: [" " + words(r) + " <eos>" for r in torch.randint(0, V - 2, (n_iters * B, R), generator=g)]  # noqa: E731
            dataset = Dataset.from_dict({"prompt": [words(p) for p in prompts], "chosen": side(), "rejected": side()})
            args = trl.DPOConfig(
                **common, beta=a.beta, loss_type=["sigmoid"], max_length=None,
                # π_ref's log-probs of the whole dataset in __init__ (l. 986), by the policy before training
                # (ref_model None: l. 924, l. 1168); each step reads them from the batch (l. 1394)
                precompute_ref_log_probs=True,
            )
            trainer = trl.DPOTrainer(model=policy, args=args, train_dataset=dataset, processing_class=tokenizer,
                                     callbacks=[timer])
            lengths = {(len(x["prompt_ids"]), len(x["chosen_ids"]), len(x["rejected_ids"])) for x in trainer.train_dataset}
            assert lengths == {(P, R + 1, R + 1)}, f"tokenised (prompt, chosen, rejected) lengths {lengths}"
        else:
            policy.generate = counting(policy.generate)
            # The prompts end with a space: the reward model reads `prompt + completion` concatenated without one
            # (grpo_trainer.py l. 1667, rloo_trainer.py l. 1101), re-tokenised (l. 1668 / l. 1102).
            prompts = torch.randint(0, V - 2, (n_iters * B // K, P), generator=g)
            dataset = Dataset.from_dict({"prompt": [words(p) + " " for p in prompts]})
            reward_model = GPT2ForSequenceClassification(config)
            sampling = dict(
                num_generations=K, max_completion_length=R, temperature=a.temperature, beta=a.beta,
                # Neither EOS nor pad is ever drawn: every row gets R real tokens (TRL masks after a sampled EOS,
                # grpo_trainer.py l. 1917, rloo_trainer.py l. 1296); ours never draws pad and does not stop at EOS.
                generation_kwargs={"suppress_tokens": [eos, pad]},   # merged into the GenerationConfig (l. 1136, l. 704)
            )
            if a.algo == "rloo":
                # one step per rollout; β·Σ_t(log π_old − log π_ref) in the reward (rloo_trainer.py l. 1580);
                # leave-one-out advantages, not normalised (normalize_advantages=False, its default); loss = −mean of
                # the sequence-level clipped ratio × A (l. 1739). log π_old: one more policy forward (l. 1503).
                args = trl.RLOOConfig(**common, **sampling, num_iterations=1, normalize_advantages=False)
                Trainer = trl.RLOOTrainer
            else:
                # μ = num_iterations steps per rollout on the whole batch (generation_batch_size = B, one step per
                # generation); group std scaling; PPO's clip ε = 0.2 per token; β·k3 in the loss (l. 3189);
                # "bnpo" = the token-mean over the batch (l. 3247), ours' loss_aggregation="token-mean".
                # With μ > 1 TRL recomputes log π_old with one more policy forward (l. 2661-2664).
                args = trl.GRPOConfig(**common, **sampling, num_iterations=a.ppo_epochs, epsilon=0.2,
                                      scale_rewards="group", loss_type="bnpo")
                Trainer = trl.GRPOTrainer
            assert args.generation_batch_size == B and args.steps_per_generation == 1, args
            trainer = Trainer(model=policy, reward_funcs=reward_model, args=args, train_dataset=dataset,
                              processing_class=tokenizer, reward_processing_classes=tokenizer, callbacks=[timer])
            assert trainer.ref_model is not None, "β > 0 must load the reference model"
        assert str(trainer.accelerator.mixed_precision) == "no", trainer.accelerator.mixed_precision
        trainer.train()

    ends = timer.stamps[steps_per_iter - 1::steps_per_iter]  # the end of each iteration's last step
    intervals = [t1 - t0 for t0, t1 in zip(ends, ends[1:])]
    timed = intervals[a.warmup - 1:]  # interval i ends iteration i+2; iterations 1..warmup are not timed
    assert len(timed) == a.iters, (len(timer.stamps), a.iters)
    if a.algo != "dpo":
        assert len(gen_log) == n_iters, f"{len(gen_log)} generate calls for {n_iters} rollouts: count not hooked?"
        assert all(r["rows"] == B and r["new_tokens"] == R and r["eos_ids"] + r["pad_ids"] == 0 for r in gen_log), \
            gen_log
    s = statistics.median(timed)
    throughput = {"pairs_per_s": B / s} if a.algo == "dpo" else {"tokens_per_s": B * R / s}
    print(json.dumps(dict(
        trainer=f"trl.{type(trainer).__name__}", algo=a.algo, s_per_iter_median=s, **throughput, s_per_iter=timed,
        s_per_iter_min=min(timed), optimizer_steps_per_iter=steps_per_iter, generate_calls=len(gen_log),
        eos_or_pad_sampled=sum(r["eos_ids"] + r["pad_ids"] for r in gen_log), beta=a.beta,
        learning_rate=a.learning_rate, optimizer=str(args.optim), mixed_precision=str(trainer.accelerator.mixed_precision),
        threads=torch.get_num_threads(), torch=torch.__version__, trl=version("trl"),
        transformers=version("transformers"), peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    )))


# ------------------------------------------------------------------------------------------------------------
# Driver: runs in the course venv
# ------------------------------------------------------------------------------------------------------------
def course_settings(algo):
    """(β, learning rate) of the course's side, which the TRL worker is given too."""
    from rlhf_course.capstone import algo_config
    from rlhf_course.dpo import DPOConfig
    from rlhf_course.rlhf_ppo import RLHFConfig

    cfg = DPOConfig() if algo == "dpo" else algo_config(RLHFConfig(), algo)
    return (cfg.beta if algo == "dpo" else cfg.init_kl_coef), cfg.learning_rate


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
    B, P, R, K = a.batch_size, a.prompt_length, a.response_length, a.group_size
    print(f"work: rloo/grpo B={B} responses = {B // K} prompts × K={K}, P={P} tokens, R={R} sampled at "
          f"T={a.temperature} (no early stop), same-shape reward model, GRPO {a.ppo_epochs} steps per rollout; "
          f"dpo B={B} pairs of P={P} + R={R} + EOS tokens, reference log-probs precomputed; fp32; "
          f"{a.warmup} warm-up + {a.iters} timed iterations, median reported", flush=True)

    env = os.environ | dict(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), HF_HUB_OFFLINE="1",
                            HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1",
                            TOKENIZERS_PARALLELISM="false")
    log_dir = Path(tempfile.mkdtemp(prefix="bench_trl_beyond_"))
    work = ["--batch-size", B, "--prompt-length", P, "--response-length", R, "--group-size", K,
            "--ppo-epochs", a.ppo_epochs, "--iters", a.iters, "--warmup", a.warmup, "--threads", a.threads]
    results = []
    for shape in a.shapes.split(","):
        s = SHAPES[shape]
        for algo in a.algos.split(","):
            beta, lr = course_settings(algo)
            print(f"[{shape}] {ALGOS[algo]}: TRL ...", file=sys.stderr, flush=True)
            cmd = [a.trl_python, __file__, "--worker", "trl", "--algo", algo, "--shape", shape, "--seed", a.seed,
                   "--temperature", a.temperature, "--beta", beta, "--learning-rate", lr, *work]
            trl_res, err = run_json(list(map(str, cmd)), env, a.timeout, log_dir / f"{shape}-{algo}-trl.log")
            trl_res = trl_res if trl_res is not None else {"error": err}
            print(f"[{shape}] {ALGOS[algo]}: ours ...", file=sys.stderr, flush=True)
            cmd = [*shlex.split(a.ours_cmd), "--algo", algo, "--n-layer", s["n_layer"], "--n-embd", s["n_embd"],
                   "--n-head", s["n_head"], "--vocab", s["vocab"], *work, "--minibatches", 1, "--json"]
            ours_res, err = run_json(list(map(str, cmd)), env, a.timeout, log_dir / f"{shape}-{algo}-ours.log")
            ours_res = ours_res if ours_res is not None else {"error": err}
            ratio = (trl_res["s_per_iter_median"] / ours_res["s_per_iter_median"]
                     if "error" not in trl_res and "error" not in ours_res else None)
            for side, r in (("trl", trl_res), ("ours", ours_res)):
                results.append({**s, **r, "shape": shape, "algo": algo, "side": side,
                                "trl_s_over_ours_s": ratio if side == "ours" else None} | (
                    {"reported_shape": r["shape"]} if "shape" in r else {}))

    print()
    print("| shape | algorithm | trainer | s/iter (median) | throughput | TRL s/iter ÷ ours |")
    print("|---|---|---|---:|---:|---:|")
    for e in results:
        name = {"trl": f"TRL 1.12 {ALGOS[e['algo']]}Trainer", "ours": "ours"}[e["side"]]
        if "error" in e:
            print(f"| {e['shape']} | {ALGOS[e['algo']]} | {name} | failed | | |")
            continue
        rate = (f"{e['pairs_per_s']:.1f} pairs/s" if e["algo"] == "dpo" else f"{B * R / e['s_per_iter_median']:.0f} tokens/s")
        ratio = f"**{e['trl_s_over_ours_s']:.2f}×**" if e["trl_s_over_ours_s"] else ("–" if e["side"] == "trl" else "")
        print(f"| {e['shape']} | {ALGOS[e['algo']]} | {name} | {e['s_per_iter_median']:.3f} | {rate} | {ratio} |")
    print()
    print(f"tokens/s = {B}×{R} sampled tokens per second; pairs/s = {B} preference pairs per second; "
          "TRL s/iter ÷ ours > 1: ours is faster. An iteration: one rollout and its update(s) (RLOO, GRPO), one "
          "step (DPO).")
    busy = max((max(e["load_before"], e["load_after"]) for e in results if "load_before" in e), default=0)
    if busy > a.threads + 0.5:
        print(f"note: the machine was busy (1-min load average up to {busy:.1f} with {a.threads} threads per "
              f"trainer, {os.cpu_count()} cores): the medians are noisy; s_per_iter_min in the JSON is the "
              "least-disturbed iteration.")
    for e in results:
        per_iter = e.get("s_per_iter") or e.get("s_per_iter_all") or []
        if len(per_iter) > 1 and max(per_iter) > 2 * min(per_iter):
            print(f"note: {e['shape']} {e['algo']} {e['side']}: iterations took {min(per_iter):.3f} to "
                  f"{max(per_iter):.3f} s, more than 2× apart: another process shared the cores; the median is noisy")
    for e in results:
        if "error" in e:
            who = "TRL" if e["side"] == "trl" else f"our side ({a.ours_cmd})"
            print(f"FAILED: {e['shape']} {e['algo']}: {who} failed: {e['error']}")
    for algo in a.algos.split(","):
        beta, lr = course_settings(algo)
        for e in (e for e in results if e["algo"] == algo and "beta" in e):
            if (e["beta"], e["learning_rate"]) != (beta, lr):
                print(f"note: {e['shape']} {algo} {e['side']} ran β={e['beta']}, lr={e['learning_rate']}, "
                      f"not the course's β={beta}, lr={lr}")
    record = dict(bench="trl-vs-ours-beyond", threads=a.threads, batch_size=B, group_size=K, prompt_length=P,
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
