"""LRUCache: order, bounds, eviction callbacks, and many threads at once."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from ampoffset_dask.io.lru import LRUCache


def test_least_recently_used_goes_first():
    evicted = []
    cache = LRUCache(max_items=3, on_evict=lambda k, v: evicted.append((k, v)))
    for k in "abc":
        cache.add(k, k.upper())
    assert cache.get("a") == "A"  # now the newest
    cache.add("d", "D")
    assert evicted == [("b", "B")] and cache.keys() == ["c", "a", "d"]
    assert cache.get("b", "gone") == "gone" and "b" not in cache
    assert cache.find(lambda k: k in "cz") == ("c", "C")
    assert cache.keys()[-1] == "c" and cache.find(lambda k: k == "z") is None
    cache.clear()
    assert len(cache) == 0 and sorted(evicted) == [("a", "A"), ("b", "B"), ("c", "C"),
                                                   ("d", "D")]


def test_add_keeps_what_another_thread_stored():
    cache = LRUCache(max_items=2)
    first = cache.add("k", [1])
    assert cache.add("k", [2]) is first


def test_byte_bound_keeps_the_newest_even_when_too_big():
    cache = LRUCache(max_bytes=100, sizeof=lambda a: a.nbytes)
    cache.add("a", np.zeros(5))  # 40 bytes
    cache.add("b", np.zeros(5))
    assert cache.nbytes == 80
    cache.add("c", np.zeros(5))
    assert cache.keys() == ["b", "c"] and cache.nbytes == 80
    cache.add("huge", np.zeros(100))
    assert cache.keys() == ["huge"] and cache.nbytes == 800
    with pytest.raises(ValueError, match="max_items"):
        LRUCache(max_items=0)


def test_many_threads_hammering_one_cache():
    """Bounds, byte totals and eviction callbacks stay exact under concurrent use."""
    live = {}
    lock = threading.Lock()
    errors = []

    def evict(key, value):
        with lock:
            if live.pop(id(value), None) is None:
                errors.append(f"{key} evicted twice or never added")

    cache = LRUCache(max_items=16, max_bytes=16 * 8 * 6, sizeof=lambda b: len(b),
                     on_evict=evict)
    start = threading.Barrier(16)

    def worker(seed):
        rng = random.Random(seed)
        start.wait()
        for _ in range(3000):
            key = rng.randrange(40)
            op = rng.random()
            if op < 0.5:
                got = cache.get(key)
                if got is not None and got[:8] != key.to_bytes(8, "little"):
                    errors.append(f"key {key} holds {got!r}")
            elif op < 0.9:
                value = key.to_bytes(8, "little") * rng.randint(1, 6)
                with lock:
                    live[id(value)] = value
                stored = cache.add(key, value)
                if stored is not value:  # ours was not stored: we own it
                    with lock:
                        live.pop(id(value))
            else:
                cache.find(lambda k, key=key: k == key)
            if len(cache) > 16:
                errors.append(f"{len(cache)} entries")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(cache) <= 16
    assert cache.nbytes == sum(len(cache.get(k)) for k in cache.keys()) <= 16 * 8 * 6
    # exactly the stored values are alive: each evicted value was reported exactly once
    assert sorted(live) == sorted(id(cache.get(k)) for k in cache.keys())
    cache.clear()
    assert live == {} and cache.nbytes == 0
