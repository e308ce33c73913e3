"""One call that makes a notebook's randomness repeatable."""
import os
import random

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy's legacy global state and (if installed) PyTorch.

    Returns a fresh ``np.random.Generator`` seeded with ``seed``: prefer passing it around over the
    global state, as in ``rng = seed_everything(0); x = rng.normal(size=3)``.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import torch
    except ImportError:  # torch is optional for the numpy-only chapters
        pass
    else:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)
