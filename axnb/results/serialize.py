"""JSON-able copies of result contents (numpy scalars and arrays, tuples, Paths, Enums)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from axnb.errors import AxnbError
from axnb.files import write_bytes


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


def save_json(path: str | Path, kind: str, d: Mapping) -> Path:
    """Write a result as JSON tagged with its ``kind`` (inf/NaN as JSON's Infinity/NaN),
    atomically."""
    return write_bytes(Path(path), json.dumps({"kind": kind, **d}, indent=1).encode())


def load_json(path: str | Path, kind: str) -> dict:
    """The dict saved by :func:`save_json` (``kind`` removed); another kind is an error."""
    d = json.loads(Path(path).read_text())
    if d.pop("kind", None) != kind:
        raise AxnbError(f"{path}: not a saved {kind} file")
    return d
