"""Where a command's wall time went: seconds per named phase, logged as `seconds.<phase>`.

At a million rows a user should see that training is most of the time, and if it is not,
which phase took the rest (`bench/scale.py` reads these from the run).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Phases"]


class Phases:
    """Seconds per phase; a phase entered twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def metrics(self) -> dict[str, float]:
        return {f"seconds.{name}": seconds for name, seconds in self.seconds.items()}
