"""Numerical oracles that tests use to check hand-derived math."""
from typing import Callable

import numpy as np


def finite_difference_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of a scalar function.

    Args:
        f: maps an array shaped like ``x`` to a float.
        x: (...,) point at which to differentiate; not modified.
        eps: step. The error is O(eps²) for smooth f; near a kink of f it is meaningless, so keep
            test points at least a few eps away from kinks.
    Returns:
        (...,) array shaped like ``x``: df/dx.
    """
    x = np.asarray(x, dtype=float)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = eps
        grad[idx] = (float(f(x + step)) - float(f(x - step))) / (2 * eps)
    return grad
