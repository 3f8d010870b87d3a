"""Per-thread buffers for the large temporaries of a detector's measurement.

A fresh array of a few megabytes costs page faults when first written, often as much as
the arithmetic done on it; an intermediate that every detector needs again is better kept.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

__all__ = ["ThreadBuffers"]


class ThreadBuffers(threading.local):
    """Named byte buffers of one thread, each kept at the largest size asked of it and
    handed out as an uninitialised view of the shape and dtype wanted.

    Only temporaries go here, never anything returned: a view stays valid until its
    name is asked for again on the same thread. Detectors of two sizes in turn (ITL and
    e2v) share the larger one's pages.

    Parameters
    ----------
    keep_max : int, optional
        Views of more bytes than this are fresh arrays, not kept.
    min_bytes : int
        Smallest buffer kept (small requests then reuse one buffer as they grow).
    """

    def __init__(self, keep_max: int | None = None, min_bytes: int = 0) -> None:
        self.keep_max = keep_max
        self.min_bytes = min_bytes
        self.buffers: dict[Any, np.ndarray] = {}

    def view(self, name: Any, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """This thread's C-contiguous ``shape``/``dtype`` array in buffer ``name``."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if self.keep_max is not None and nbytes > self.keep_max:
            return np.empty(shape, dtype=dtype)
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < nbytes:
            self.buffers.pop(name, None)  # free the old one first
            buf = self.buffers[name] = np.empty(max(nbytes, self.min_bytes), dtype=np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)
