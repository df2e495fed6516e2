"""Timing calls on a shared machine: blocks of calls, interleaved rounds, medians.

Load on a shared machine drifts slowly, so calls that are compared are timed in turn within
each round, and a call too short for the clock is timed as a block of about 2 ms.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

import numpy as np

Call = Callable[[], object]
Key = TypeVar("Key", bound=Hashable)

__all__ = ["Call", "block_size", "interleaved_ms", "time_block", "time_calls"]


def time_calls(call: Call, min_repeats: int, max_repeats: int, max_seconds: float) -> list[int]:
    """Nanoseconds per call, until `max_repeats`, or `max_seconds` once `min_repeats` are in."""
    budget_ns = max_seconds * 1e9
    samples: list[int] = []
    start = time.perf_counter_ns()
    while len(samples) < max_repeats:
        before = time.perf_counter_ns()
        call()
        after = time.perf_counter_ns()
        samples.append(after - before)
        if len(samples) >= min_repeats and after - start >= budget_ns:
            break
    return samples


def time_block(call: Call, calls: int) -> int:
    """Nanoseconds for `calls` calls in a row."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        call()
    return time.perf_counter_ns() - start


def block_size(single_ns: float) -> int:
    """Calls per block for a call of `single_ns`."""
    # A block of ~2 ms is long next to the clock's and the loop's overhead, and short next to
    # the drift of the machine's load, so both blocks of a round see the same load.
    return max(1, min(math.ceil(2e6 / max(single_ns, 1.0)), 1000))


def interleaved_ms(
    calls: Mapping[Key, Call], *, min_rounds: int = 3, max_rounds: int = 200, max_seconds: float
) -> dict[Key, float]:
    """Median milliseconds per call of each of `calls`, timed in turn within every round.

    Each call is warmed up twice, or once when that call took over 0.1 s (the faster warm-up
    sets its block size); rounds alternate direction so that none always runs on a warmer
    cache, and stop after `min_rounds` once `max_seconds` is spent. The floors are small on
    purpose: a 2.3M-parameter FT-Transformer takes 0.5 s a call at 1,024 rows, so each round of
    it costs seconds.
    """
    blocks = {key: block_size(min(time_calls(call, 1, 2, 0.1))) for key, call in calls.items()}
    samples: dict[Key, list[float]] = {key: [] for key in calls}
    order = list(calls)
    start = time.perf_counter()
    for i in range(max_rounds):
        for key in order if i % 2 == 0 else reversed(order):
            samples[key].append(time_block(calls[key], blocks[key]) / blocks[key] / 1e6)
        if i + 1 >= min_rounds and time.perf_counter() - start >= max_seconds:
            break
    return {key: float(np.median(values)) for key, values in samples.items()}
