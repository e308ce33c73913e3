#!/usr/bin/env bash
# The capstone's GPU check: the `gpu` preset, briefly (≤ 5 minutes on one modern GPU), then ONE JSON line:
# device, iteration time, generated tokens/s, model-FLOP utilisation against the GPU's bf16 peak, peak GPU
# memory, gold reward at the start and end of PPO. Plots land in $OUT (default: gpu-check/).
#
#   bash scripts/gpu_check.sh                 # on a GPU machine
#   bash scripts/gpu_check.sh --device cpu    # the same code at toy size on a CPU (what `make test` runs)
#
# Needs only a `python3` (or $PYTHON) with a CUDA build of torch (>= 2.6), transformers (>= 5.0), tokenizers,
# numpy, matplotlib and tqdm: no pip, no network, none of the course's other packages. The project itself is
# put on PYTHONPATH; nothing it imports on this path needs nbgrader, jupyter or gymnasium.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec "${PYTHON:-python3}" -m rlhf_course.capstone check --out "${OUT:-gpu-check}" "$@"
