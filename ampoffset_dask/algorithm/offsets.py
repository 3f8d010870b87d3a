"""The offset across one interface (LSST ``getInterfaceOffset``)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .stats import clipped_stats

__all__ = ["InterfaceOffset", "SmoothedDifference", "interface_offset", "measure_interface",
           "window_length"]


class InterfaceOffset(NamedTuple):
    """The six values of LSST's ``getInterfaceOffset``, in its order.

    ``offset_raw`` is LSST's ``originalOffset``: the clipped mean before the do-no-harm
    checks (the name used for it everywhere in this package).
    """

    interface_id: str
    offset: float
    offset_raw: float
    good_frac: float
    min_frac_fail: bool
    max_offset_fail: bool


def window_length(frac: float, length: int) -> int:
    """``int(ampEdgeWindowFrac * length)``."""
    return int(frac * length)


class SmoothedDifference(NamedTuple):
    """What `measure_interface` computed on the way to LSST's offset (for its error).

    ``avg`` is the moving-averaged difference ``A - B`` (NaN where the raw difference
    is), ``clip_std`` the clipped standard deviation that goes with ``offset_raw``, and
    ``window`` the moving-average length (None without smoothing).
    """

    avg: np.ndarray
    clip_std: float
    window: int | None


def interface_offset(
    interface_id: str,
    edge_a: np.ndarray,
    edge_b: np.ndarray,
    *,
    window_frac: float | None,
    min_frac: float,
    max_offset: float,
) -> InterfaceOffset:
    """Robust offset ``A - B`` between two float32 edge profiles, with do-no-harm checks.

    Parameters
    ----------
    interface_id : str
        ``"A-B"``.
    edge_a, edge_b : ndarray, float32
        Profiles along the shared boundary.
    window_frac : float or None
        ``ampEdgeWindowFrac`` for the NaN-aware moving average; None disables smoothing.
    min_frac : float
        ``ampEdgeMinFrac``.
    max_offset : float
        ``ampEdgeMaxOffset``.
    """
    return measure_interface(interface_id, edge_a, edge_b, window_frac=window_frac,
                             min_frac=min_frac, max_offset=max_offset)[0]


def measure_interface(
    interface_id: str,
    edge_a: np.ndarray,
    edge_b: np.ndarray,
    *,
    window_frac: float | None,
    min_frac: float,
    max_offset: float,
) -> tuple[InterfaceOffset, SmoothedDifference | None]:
    """`interface_offset` and the smoothed difference behind it (None when either
    profile is all NaN)."""
    edge_a = np.asarray(edge_a, dtype=np.float32)
    edge_b = np.asarray(edge_b, dtype=np.float32)
    if np.isnan(edge_a).all() or np.isnan(edge_b).all():
        return InterfaceOffset(interface_id, 0.0, 0.0, 0.0, True, False), None
    diff = edge_a - edge_b
    nan = np.isnan(diff)
    win = None
    if window_frac is not None:
        win = window_length(window_frac, diff.shape[0])
        if win < 1:
            raise ValueError(
                f"interface {interface_id}: moving-average window "
                f"int({window_frac} * {diff.shape[0]}) is empty"
            )
        ones = np.ones(win)
        total = np.convolve(np.nan_to_num(diff), ones, "same")
        count = np.convolve(~nan, ones, "same")
        avg = total / np.clip(count, 1, None)
    else:
        avg = diff.copy()
    avg[nan] = np.nan
    offset_raw, clip_std = clipped_stats(avg)
    good_frac = 1.0 - float(np.count_nonzero(np.isnan(avg))) / avg.shape[0]
    min_frac_fail = good_frac < min_frac
    max_offset_fail = bool(abs(offset_raw) > max_offset)
    offset = 0.0 if (min_frac_fail or max_offset_fail) else offset_raw
    if math.isnan(offset):
        offset = 0.0 if good_frac == 0 else offset
    return (InterfaceOffset(interface_id, offset, offset_raw, good_frac, min_frac_fail,
                            max_offset_fail), SmoothedDifference(avg, clip_std, win))
