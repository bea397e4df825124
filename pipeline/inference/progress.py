"""The run's own progress line: pairs done of the total, failures so far, rate and time left."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class Progress:
    """Counts as rows finish, with a log line at most every `interval_s` seconds."""

    total: int
    interval_s: float
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    _last_log: float = field(default_factory=time.monotonic)

    def update(self, statuses: list[str]) -> str | None:
        self.done += len(statuses)
        self.failed += sum(s != "ok" for s in statuses)
        now = time.monotonic()
        if self.done < self.total and now - self._last_log >= self.interval_s:  # the run logs the last line itself
            self._last_log = now
            return self.line()
        return None

    def line(self) -> str:
        """Rate, elapsed and time left all from one reading of the clock."""
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = 100.0 * self.done / self.total if self.total else 100.0
        left = "done"
        if rate > 0 and self.done < self.total:
            left = f"about {_duration((self.total - self.done) / rate)} left"
        return (
            f"progress: {self.done}/{self.total} pairs ({share:.0f}%), {self.failed} failed, "
            f"{rate:.2f} pairs/s, {_duration(elapsed)} elapsed, {left}"
        )
