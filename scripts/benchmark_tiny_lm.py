"""Time the tiny LM of the text world: cold build, warm load, offline GPT-2 fallback, sampling.

    .venv/bin/python scripts/benchmark_tiny_lm.py

Builds into a fresh temporary cache (never touches ~/.cache/rlhf_course), so "cold" really is from
nothing. Prints one line per number, then a few samples. Timings depend on what else runs on the CPU.
"""
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import torch

from rlhf_course import textworld as tw
from rlhf_course.tiny_lm import generate_responses, load_tiny_lm, tiny_lm_info


def main():
    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        model, tok = load_tiny_lm(cache_dir=cache, progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        model, tok = load_tiny_lm(cache_dir=cache, progress=False)
        warm = time.perf_counter() - t0
        info = tiny_lm_info(cache)

        # offline fallback, in a fresh process with an empty Hugging Face cache; the tiny LM comes
        # from the cache just built, so the time is the failed GPT-2 lookup plus a warm load
        code = textwrap.dedent("""
            import time
            from rlhf_course.tiny_lm import load_policy
            t0 = time.perf_counter()
            model, tok, desc = load_policy("gpt2")
            print(f"FALLBACK {time.perf_counter() - t0:.2f} {desc}")
        """)
        with tempfile.TemporaryDirectory() as hf_home:
            env = {**os.environ, "HF_HOME": hf_home, "RLHF_COURSE_CACHE": cache}
            env.pop("HF_HUB_OFFLINE", None)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout
        fallback = next(line for line in out.splitlines() if line.startswith("FALLBACK")).split()
        fallback_s = float(fallback[1])

    prompts = tw.sample_prompts(64, seed=1)
    timings = {}
    for threads in (1, torch.get_num_threads()):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        out = generate_responses(model, tok, prompts, max_new_tokens=16, seed=0)
        timings[threads] = time.perf_counter() - t0
    ctx = out["context_length"]
    ended = (out["query_response"][:, ctx:] == tok.eos_token_id).any(-1).float().mean().item()

    print(f"cold build (text world + tokenizer + pretraining): {cold:.1f} s "
          f"(of which build {info['build_seconds']:.1f} s)")
    print(f"warm load: {warm:.2f} s")
    print(f"offline load_policy('gpt2') -> tiny fallback: {fallback_s:.2f} s ({' '.join(fallback[2:])})")
    print(f"parameters: {info['n_params']:,}; training tokens: {info['train_tokens']:,}; "
          f"steps x batch x T: {info['build']['steps']} x {info['build']['batch_size']} x {info['build']['n_positions']}")
    print(f"held-out loss: {info['heldout_loss']:.3f} nats/token; unigram baseline: {info['unigram_loss']:.3f}")
    for threads, seconds in timings.items():
        print(f"generate_responses 64 prompts x 16 tokens, {threads} torch thread(s): {seconds:.2f} s")
    print(f"sampled responses ending with EOS within 16 tokens: {ended:.0%}")
    gold = tw.gold_reward([p + " " + r for p, r in zip(prompts, out["responses"])])
    print(f"mean gold reward of sampled reviews: {gold.mean():.2f}")
    for p, r, g in list(zip(prompts, out["responses"], gold))[:8]:
        print(f"  {g:+.2f}  {p} | {r}")


if __name__ == "__main__":
    main()
