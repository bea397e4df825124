"""CPU time per step of the CPU stages, measured by the stages themselves as they run: what the benchmarks report
(`benchmarks/cpu_stages.py`), with no function replaced from outside."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STEPS = ("decode", "mask", "collage", "paste_back", "encode")


@dataclass
class StepTimes:
    """Process CPU seconds (all threads) per step, added up over the pairs it is passed to."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if name not in self.seconds:
            raise KeyError(f"unknown step {name!r} (one of {', '.join(STEPS)})")
        start = time.process_time()
        try:
            yield
        finally:
            self.seconds[name] += time.process_time() - start
