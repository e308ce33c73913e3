"""How much of one benchmark iteration is spent inside matrix products: the floor of any CPU speed-up
that leaves the products alone (book/capstone/scaling_up.md, "Reading the tables").

    .venv/bin/python scripts/product_floor.py                  # GPT-2 small, 2 warm-up + 5 timed iterations (≈ 1 min)

Runs `python -m rlhf_course.capstone bench` in this process with a wall-clock timer around every product
kernel call: oneDNN's (`fast_gpt2.onednn_kernel`: all of GPT-2 small's weight products, forward and
backward, decoding steps included) and torch's `@` (the LM head's weight gradient, through MKL). The
products inside attention (`scaled_dot_product_attention`) count as the rest. GPT-2 small only: the tiny
model's products run inside transformers' Conv1D and autograd's C++ backward, out of a timer's reach. The timers cost a few
microseconds per call against 0.5-270 ms calls. Prints the bench's own summary line, one line per timed
iteration and one JSON line.
"""
import argparse
import json
import statistics
import sys
import time

import torch

import rlhf_course.capstone as capstone
from rlhf_course import fast_gpt2

GPT2_SMALL = ["--n-layer", "12", "--n-embd", "768", "--n-head", "12", "--vocab", "50257"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()

    in_products = [0.0]

    def timed(product):
        def call(*a, **k):
            t0 = time.perf_counter()
            out = product(*a, **k)
            in_products[0] += time.perf_counter() - t0
            return out
        return call

    kernel = fast_gpt2.onednn_kernel()
    if kernel is None:
        print("error: torch's oneDNN linear kernel is not available here, so GPT-2 small's products run inside "
              "autograd's C++ code, out of this script's reach", file=sys.stderr)
        return 2
    timed_kernel = timed(kernel)
    fast_gpt2.onednn_kernel = lambda: timed_kernel      # callers look the kernel up at each call
    torch.Tensor.__matmul__ = timed(torch.Tensor.__matmul__)

    rows, iteration = [], capstone.rlhf_iteration

    def timed_iteration(*a, **k):
        in_products[0] = 0.0
        t0 = time.perf_counter()
        metrics = iteration(*a, **k)
        rows.append((time.perf_counter() - t0, in_products[0]))
        return metrics

    capstone.rlhf_iteration = timed_iteration
    argv = ["bench", *GPT2_SMALL, "--iters", str(args.iters), "--warmup", str(args.warmup),
            "--threads", "2"]
    rc = capstone.main(argv)
    if rc:
        return rc
    timed_rows = rows[args.warmup:]
    for total, products in timed_rows:
        print(f"iteration {total:.2f} s: products {products:.2f} s, the rest {total - products:.2f} s", file=sys.stderr)
    median = lambda xs: statistics.median(xs)  # noqa: E731
    print(json.dumps({"shape": "gpt2-124m",
                      "s_per_iter_median": median([t for t, _ in timed_rows]),
                      "products_s_median": median([p for _, p in timed_rows]),
                      "rest_s_median": median([t - p for t, p in timed_rows]),
                      "command": "python scripts/product_floor.py " + " ".join(sys.argv[1:])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
