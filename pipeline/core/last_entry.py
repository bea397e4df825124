"""The one cache of the CPU stages: per process, the value made for the last key asked for.

Pairs arrive scene by scene, so consecutive pairs of one scene hit; one entry keeps memory bounded whatever the run's
size. Keys are compared by content, each part of the same type (`bytes` of a scene, never its id: an id is not
trusted to mean equal content); comparing bytes is far cheaper than decoding them. A value that failed to be made
is not kept: a bad scene fails each pair anew.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

V = TypeVar("V")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a is b or (type(a) is type(b) and a == b)


class LastEntry(Generic[V]):
    """One entry, thread-safe, with hit and miss counts (what tests and benchmarks read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: Any = None
        self._value: V | None = None
        self.hits = self.misses = 0

    def get(self, key: Any) -> V | None:
        """The value stored for `key`, or None (a miss)."""
        with self._lock:
            if self._value is not None and _same(self._key, key):
                self.hits += 1
                return self._value
            self.misses += 1
            return None

    def put(self, key: Any, value: V) -> None:
        """Keep `value` for `key` (which must not change afterwards: pass bytes, not a bytearray)."""
        with self._lock:
            self._key, self._value = key, value

    def get_or_make(self, key: Any, make: Callable[[], V]) -> V:
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value

    @contextmanager
    def borrow(self, key: Any, make: Callable[[], V], keep: Callable[[V], bool] = lambda _: True) -> Iterator[V]:
        """Exclusive use of the value for `key`, for a caller that changes it and puts it back as it was. A caller
        that finds it in use (another thread) gets a value of its own; a value `keep` refuses is not kept, nor one
        whose user raised (it may not have been put back)."""
        if not self._lock.acquire(blocking=False):
            yield make()
            return
        try:
            if self._value is not None and _same(self._key, key):
                self.hits += 1
            else:
                self._key = self._value = None  # free the old value before making the new one
                self.misses += 1
                value = make()
                if not keep(value):
                    yield value
                    return
                self._key, self._value = key, value
            try:
                yield self._value
            except BaseException:
                self._key = self._value = None
                raise
        finally:
            self._lock.release()

    def clear(self) -> None:
        """Forget the entry and reset the counts."""
        with self._lock:
            self._key = self._value = None
            self.hits = self.misses = 0
