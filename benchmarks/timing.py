"""The one timing helper of the benchmarks: run a function several times, keep one figure."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], runs: int = 3, stat=statistics.median) -> tuple[float, object]:
    """(``stat`` of the wall times of ``runs`` calls, the last call's result).

    Example:
        >>> t, out = timed(lambda: 2 + 2, runs=2, stat=min)
        >>> out, t >= 0
        (4, True)
    """
    ts, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return stat(ts), out
