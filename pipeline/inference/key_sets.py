"""Sets of pair identities (PAIR_KEY) in 16 bytes a pair, for runs too large to hold the ids themselves.

A key is the 128-bit BLAKE2b digest of its three ids, so two different pairs share a digest with probability about
n^2 / 2^129 (negligible for any catalogue); the ids may hold any characters, a separator cannot collide with them.
pyarrow has no hash kernel and no anti-join on a set it cannot hold, hence this one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from pipeline.inference.metadata_row import PAIR_KEY

DIGEST = np.dtype("S16")


def digests(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """One digest per row of `table`'s PAIR_KEY columns."""
    columns = [table.column(name).to_pylist() for name in PAIR_KEY]
    out = np.empty(table.num_rows, DIGEST)
    for i, key in enumerate(zip(*columns, strict=True)):
        h = hashlib.blake2b(digest_size=16)
        for part in key:
            encoded = part.encode("utf-8")
            h.update(len(encoded).to_bytes(8, "little"))  # length-prefixed: ("ab", "c") is not ("a", "bc")
            h.update(encoded)
        out[i] = h.digest()
    return out


class KeySet:
    """A sorted array of distinct digests: membership of a table's rows by binary search."""

    def __init__(self, sorted_digests: np.ndarray) -> None:
        self.digests = sorted_digests

    @classmethod
    def of(cls, tables: Iterable[pa.Table | pa.RecordBatch]) -> KeySet:
        parts = [digests(t) for t in tables]
        return cls(np.unique(np.concatenate(parts)) if parts else np.empty(0, DIGEST))

    def __len__(self) -> int:
        return len(self.digests)

    def contains(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """Per row of `table`: is its PAIR_KEY in the set."""
        if not len(self.digests) or not table.num_rows:
            return np.zeros(table.num_rows, np.bool_)
        wanted = digests(table)
        at = np.searchsorted(self.digests, wanted).clip(max=len(self.digests) - 1)
        return self.digests[at] == wanted

    def without(self, table: pa.Table) -> pa.Table:
        """`table` less the rows whose PAIR_KEY is in the set."""
        return table.filter(pa.array(np.logical_not(self.contains(table)))) if len(self) else table


def repeated(parts: Iterable[np.ndarray]) -> np.ndarray:
    """The digests that occur more than once across `parts` (sorted, distinct)."""
    found = [p for p in parts if len(p)]
    if not found:
        return np.empty(0, DIGEST)
    values, counts = np.unique(np.concatenate(found), return_counts=True)
    return values[counts > 1]
