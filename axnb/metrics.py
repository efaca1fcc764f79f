"""Similarity metrics between a float tensor x and its quantized counterpart y.

Each is computed per sample on the flattened tensors, in float64, and averaged over samples by
the caller.

- cosine(x, y) = sum(x*y) / (||x|| ||y||); 1 when both are all-zero, 0 when only one is.
"""

from __future__ import annotations

import numpy as np


def cosine(x: np.ndarray, y: np.ndarray) -> float:
    """Cosine similarity of two tensors, flattened.

    Example:
        >>> cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0]))
        0.7071067811865475
    """
    a = np.asarray(x, np.float64).ravel()
    b = np.asarray(y, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))
