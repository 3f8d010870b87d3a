"""Kernel dispatch: the numpy reference implementation or compiled numba kernels.

The hot loops of a detector (afw-order smoothing, clipped statistics from order
statistics, GSL background evaluation and subtraction, mask passes, growing detections)
exist twice with the same functions and the same numbers: `._numpy` (the reference, always
available) and `._numba` (optional, ``pip install 'ampoffset-dask[fast]'``). The smoothed
image, the masks and the background-subtracted image are bit-identical between the two.

The choice is ``auto`` (numba when importable), ``numpy`` or ``numba``. It is read from
`set_kernels` if called, otherwise from the ``AMPOFFSET_KERNELS`` environment variable,
otherwise ``auto``. This layer does not read dask's configuration: the pipeline passes the
``ampoffset.kernels`` setting to `set_kernels` on each worker.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from types import ModuleType

__all__ = [
    "CHOICES",
    "ENV_VAR",
    "active",
    "backend_name",
    "get_kernels",
    "numba_available",
    "requested",
    "set_kernels",
    "use_kernels",
    "warm",
]

logger = logging.getLogger(__name__)

ENV_VAR = "AMPOFFSET_KERNELS"
CHOICES = ("auto", "numpy", "numba")
_INSTALL = "pip install 'ampoffset-dask[fast]'"

_choice: str | None = None
_cache: dict[str, ModuleType] = {}


def _check(choice: str) -> str:
    value = str(choice).strip().lower()
    if value not in CHOICES:
        raise ValueError(f"kernels must be one of {', '.join(CHOICES)}, not {choice!r}")
    return value


def numba_available() -> bool:
    """Whether the numba kernels can be imported."""
    try:
        get_kernels("numba")
    except ImportError:
        return False
    return True


def get_kernels(choice: str = "auto") -> ModuleType:
    """The kernel module for ``choice`` (``auto`` falls back to numpy without numba).

    Raises
    ------
    ImportError
        ``numba`` requested but numba is not installed (names the ``pip install``).
    """
    choice = _check(choice)
    if choice in _cache:
        return _cache[choice]
    if choice == "numpy":
        module = importlib.import_module("._numpy", __name__)
    elif choice == "numba":
        try:
            module = importlib.import_module("._numba", __name__)
        except ImportError as exc:
            raise ImportError(f"kernels=numba needs numba: {_INSTALL} ({exc})") from exc
    else:
        try:
            module = get_kernels("numba")
        except ImportError:
            logger.debug("numba not installed: using the numpy kernels")
            module = get_kernels("numpy")
    _cache[choice] = module
    return module


def requested() -> str:
    """The requested choice: `set_kernels`, else ``$AMPOFFSET_KERNELS``, else ``auto``."""
    if _choice is not None:
        return _choice
    env = os.environ.get(ENV_VAR)
    if env:
        try:
            return _check(env)
        except ValueError as exc:
            raise ValueError(f"${ENV_VAR}: {exc}") from None
    return "auto"


def active() -> ModuleType:
    """The kernel module in use (see `requested`)."""
    return get_kernels(requested())


def backend_name() -> str:
    """``"numpy"`` or ``"numba"``: the implementation `active` returns."""
    return active().NAME


def set_kernels(choice: str | None) -> None:
    """Select the kernels for this process (None: back to ``$AMPOFFSET_KERNELS``/auto).

    Raises
    ------
    ValueError
        For an unknown choice.
    ImportError
        For ``numba`` without numba installed.
    """
    global _choice
    if choice is None:
        _choice = None
        return
    value = _check(choice)
    get_kernels(value)  # fail here, not in the middle of a detector
    _choice = value


@contextlib.contextmanager
def use_kernels(choice: str) -> Iterator[ModuleType]:
    """Context manager: run a block with ``choice`` selected, then restore the previous."""
    global _choice
    previous = _choice
    set_kernels(choice)
    try:
        yield active()
    finally:
        _choice = previous


def warm(choice: str = "numba") -> None:
    """Compile the kernels of ``choice`` for the array types a detector job gives them, or
    load them from numba's on-disk cache: by measuring a small synthetic detector in the
    default and the edges-only configurations, with and without a mask, on writable and on
    read-only arrays. An image build runs it once, so that each worker process loads the
    kernels (~0.4 s) instead of compiling them (~20 s).

    Raises
    ------
    ImportError
        ``numba`` without numba installed.
    """
    import numpy as np

    from ...config import AmpOffsetConfig
    from ...geometry import detector_from_boxes
    from ..measure import measure_detector

    width, height = 128, 256  # background bins of more than the 4 pixels they need
    det = detector_from_boxes("warm", 4 * width, 2 * height, [
        (f"C{iy}{ix}", ix * width, iy * height, width, height)
        for iy in range(2) for ix in range(4)])
    sparse = np.random.default_rng(0).normal(1000.0, 5.0, det.shape).astype(np.float32)
    sparse[40:44, 50:54] += 500.0  # a source, so that detection grows something
    # sources everywhere: whether their grown footprints cover the rest is checked too
    crowded = sparse.copy()
    y, x = np.indices(det.shape)
    crowded[(y % 16 < 3) & (x % 16 < 3)] += 500.0
    mask = np.zeros(det.shape, np.int32)
    mask[::17, ::13] = 1
    configs = (AmpOffsetConfig(amp_edge_width=16),
               AmpOffsetConfig(amp_edge_width=16, do_background=False, do_detection=False))
    with use_kernels(choice):
        for writable in (True, False):
            bits = mask.copy()
            bits.flags.writeable = writable
            for image in (sparse, crowded):
                pixels = image.copy()
                pixels.flags.writeable = writable
                for config in configs:
                    for m in (None, bits):
                        measure_detector(pixels, m, det, config)
