"""The CPU stages' one cache: one entry, keys compared by content and type, failures never kept."""

from __future__ import annotations

import threading

import pytest

from pipeline.core.last_entry import LastEntry


def test_one_entry_keyed_by_content_and_type():
    cache = LastEntry()
    made = []
    assert cache.get_or_make((b"scene", (1, 2)), lambda: made.append(1) or "a") == "a"
    assert cache.get_or_make((b"scene", (1, 2)), lambda: made.append(1) or "b") == "a"  # equal bytes: a hit
    assert cache.get_or_make((b"scene", [1, 2]), lambda: made.append(1) or "c") == "c"  # a list is not the tuple
    assert cache.get_or_make((b"scene", (1, 2)), lambda: made.append(1) or "d") == "d"  # one entry: the first is gone
    assert (cache.hits, cache.misses, len(made)) == (1, 3, 3)
    cache.clear()
    assert cache.get((b"scene", (1, 2))) is None and (cache.hits, cache.misses) == (0, 1)


def test_a_failure_is_not_kept():
    cache = LastEntry()
    with pytest.raises(ValueError):
        cache.get_or_make("bad", lambda: (_ for _ in ()).throw(ValueError("corrupt")))
    assert cache.get_or_make("bad", lambda: "fixed") == "fixed"


def test_borrow_is_exclusive_and_drops_what_it_must_not_keep():
    cache = LastEntry()
    with cache.borrow("k", lambda: ["pixels"]) as value:
        value.append("pasted")
        value.pop()  # put back as it was
    with cache.borrow("k", lambda: ["other"]) as value:
        assert value == ["pixels"] and cache.hits == 1
        seen = []
        other = threading.Thread(target=lambda: seen.append(cache.borrow("k", lambda: ["own copy"]).__enter__()))
        other.start()
        other.join()
        assert seen == [["own copy"]]  # in use: the other thread makes its own
    with pytest.raises(RuntimeError), cache.borrow("k", lambda: ["x"]):
        raise RuntimeError("not put back")
    with cache.borrow("k", lambda: ["decoded again"]) as value:
        assert value == ["decoded again"]
    with cache.borrow("huge", lambda: ["too big"], keep=lambda v: False):
        pass
    assert cache.get("huge") is None
