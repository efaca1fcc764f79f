"""JSON-able copies of result contents (numpy scalars and arrays, tuples, Paths, Enums)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def plain(x: Any) -> Any:
    """JSON-able copy: numpy scalars/arrays, tuples, Paths and Enums to plain Python.

    Example:
        >>> plain({"a": (np.float32(0.5), Path("x"))})
        {'a': [0.5, 'x']}
    """
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [plain(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, np.generic):
        return x.item()
    return str(x) if isinstance(x, Path) or hasattr(x, "value") else x
