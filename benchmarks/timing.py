"""The one timing helper the benchmark scripts share."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of ``fn()`` in milliseconds over ``repeats`` runs after ``warmup``, by
    ``clock`` (wall time by default; ``time.thread_time`` for the thread's CPU time, which
    preemption on a shared machine does not inflate)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return 1e3 * statistics.median(times)
