"""A small thread-safe least-recently-used cache (the per-process caches of region reads)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["LRUCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """A mapping bounded by entry count and/or total size that drops its least recently used
    entries first; every method is safe to call from many threads at once.

    Parameters
    ----------
    max_items : int, optional
        At most this many entries.
    max_bytes : int, optional
        At most this total ``sizeof(value)`` (the newest entry is always kept, even alone
        larger than the bound).
    sizeof : callable, optional
        Size of a value in bytes (for ``max_bytes``; ``len`` when omitted).
    on_evict : callable, optional
        ``on_evict(key, value)`` for every entry dropped by the bounds or by `clear`; called
        outside the cache's lock, so it may block (e.g. to close a file another thread is
        still reading under its own lock).

    Examples
    --------
    >>> cache = LRUCache(max_items=2)
    >>> cache.add("a", 1), cache.add("b", 2), cache.get("a"), cache.add("c", 3)
    (1, 2, 1, 3)
    >>> cache.get("b") is None, cache.keys()
    (True, ['a', 'c'])
    """

    def __init__(
        self,
        max_items: int | None = None,
        max_bytes: int | None = None,
        *,
        sizeof: Callable[[V], int] | None = None,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._sizeof = sizeof if sizeof is not None else len
        self._on_evict = on_evict
        self._data: collections.OrderedDict[K, V] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: K, default: Any = None) -> V | Any:
        """The value of ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            try:
                value = self._data[key]
            except KeyError:
                return default
            self._data.move_to_end(key)
            return value

    def find(self, match: Callable[[K], bool]) -> tuple[K, V] | None:
        """The most recently used ``(key, value)`` whose key satisfies ``match`` (which must
        be quick: it runs under the lock), or None."""
        with self._lock:
            for key in reversed(self._data):
                if match(key):
                    self._data.move_to_end(key)
                    return key, self._data[key]
        return None

    def add(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` unless another thread stored one meanwhile.

        Returns
        -------
        The stored value: ``value``, or the one already there (the caller then owns
        ``value`` and disposes of it).
        """
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            self._data[key] = value
            if self.max_bytes is not None:
                self._bytes += self._sizeof(value)
            evicted = self._shrink()
        self._evicted(evicted)
        return value

    def discard(self, key: K) -> V | None:
        """Remove ``key`` and return its value (None if absent); ``on_evict`` is not called:
        the caller now owns the value."""
        with self._lock:
            if key not in self._data:
                return None
            value = self._data.pop(key)
            if self.max_bytes is not None:
                self._bytes -= self._sizeof(value)
            return value

    def _shrink(self) -> list[tuple[K, V]]:
        evicted = []
        while len(self._data) > 1 and (
                (self.max_items is not None and len(self._data) > self.max_items)
                or (self.max_bytes is not None and self._bytes > self.max_bytes)):
            key, value = self._data.popitem(last=False)
            if self.max_bytes is not None:
                self._bytes -= self._sizeof(value)
            evicted.append((key, value))
        return evicted

    def _evicted(self, evicted: list[tuple[K, V]]) -> None:
        if self._on_evict is not None:
            for key, value in evicted:
                self._on_evict(key, value)

    def clear(self) -> None:
        """Drop every entry (``on_evict`` is called for each)."""
        with self._lock:
            evicted = list(self._data.items())
            self._data.clear()
            self._bytes = 0
        self._evicted(evicted)

    def after_fork(self) -> None:
        """In a forked child: a new lock (the parent's may have been held at the fork)."""
        self._lock = threading.Lock()

    def keys(self) -> list[K]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._data)

    @property
    def nbytes(self) -> int:
        """Total size of the values (tracked only with ``max_bytes``)."""
        with self._lock:  # never the transient total of an `add` being bounded
            return self._bytes

    def __len__(self) -> int:
        with self._lock:  # never the one entry too many of an `add` being bounded
            return len(self._data)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data
