"""Edge strips and their median profiles (LSST ``getAmpEdges``)."""

from __future__ import annotations

import numpy as np

from ..geometry import Amplifier
from .strips import line_medians, strip_lines

__all__ = ["INSET_ZERO", "edge_profile", "nanmedian_float32", "nanmedian_lines",
           "strip_slices"]

#: What ``ampEdgeInset = 0`` does (`strip_slices`), for the messages that name it as a cause.
INSET_ZERO = ("ampEdgeInset=0 leaves LSST's edge strips on the amps' +x and +y sides empty "
              "(slice -ampEdgeWidth:-0)")


def strip_slices(amp: Amplifier, side: int, inset: int, width: int) -> tuple[slice, slice]:
    """Detector-frame ``(rows, columns)`` of an amp's edge strip on ``side``.

    Mirrors LSST's Python slices on the amp array, including the empty strip that
    ``inset = 0`` gives on sides 0 and 1 (``-outer:-0``).
    """
    outer = inset + width

    def tail(start: int, n: int) -> slice:
        # Python's a[-outer:-inset] on an axis of length n, as absolute indices.
        lo = max(n - outer, 0)
        hi = n - inset if inset > 0 else 0
        return slice(start + lo, start + max(hi, lo))

    def head(start: int, n: int) -> slice:
        return slice(start + min(inset, n), start + min(outer, n))

    rows = slice(amp.y0, amp.y1)
    cols = slice(amp.x0, amp.x1)
    if side == 0:
        return tail(amp.y0, amp.height), cols
    if side == 1:
        return rows, tail(amp.x0, amp.width)
    if side == 2:
        return head(amp.y0, amp.height), cols
    if side == 3:
        return rows, head(amp.x0, amp.width)
    raise ValueError(f"side must be 0..3, got {side}")


def nanmedian_lines(strip: np.ndarray, axis: int) -> np.ndarray:
    """``numpy.nanmedian`` of a 2-d float array along ``axis``, without its slow paths.

    numpy sends NaN-holding arrays with short lines through masked arrays, which costs far
    more than the selection (or, for lines with NaN, the sort) of a few dozen values per
    line done by `line_medians`. The result has the input's float dtype; all-NaN lines give
    NaN; an even count averages the two middle values in that dtype, exactly as
    ``numpy.nanmedian`` does.
    """
    a = np.moveaxis(np.asarray(strip), axis, -1)
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    return line_medians(a)


def nanmedian_float32(strip: np.ndarray, axis: int) -> np.ndarray:
    """`nanmedian_lines` of ``strip`` as float32 (the precision of LSST's edge profiles)."""
    return nanmedian_lines(np.asarray(strip, dtype=np.float32), axis)


def edge_profile(strip: np.ndarray, side: int) -> np.ndarray:
    """Median profile of a strip along the interface (rows for sides 0/2, columns for 1/3)."""
    return line_medians(strip_lines(strip, side))
