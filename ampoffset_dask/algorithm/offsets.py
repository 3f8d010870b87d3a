"""The offset across one interface (LSST ``getInterfaceOffset``)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .stats import _stack_rows, clipped_mean_var_rows, clipped_stats_sorted

__all__ = ["InterfaceOffset", "SmoothedDifference", "interface_offset", "measure_interface",
           "measure_interfaces", "window_counts", "window_length", "window_lengths",
           "window_sums"]


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


@functools.lru_cache(maxsize=32)
def _window_bounds(n: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Output ``k`` of numpy's ``"same"`` convolution with ``window`` ones sums inputs
    ``lo[k]:hi[k]``, i.e. ``k - window // 2 .. k - window // 2 + window - 1`` truncated at
    the ends (read-only arrays, cached: a detector has a few interface lengths)."""
    start = np.arange(n) - window // 2
    lo = np.minimum(np.maximum(start, 0), n)
    hi = np.minimum(np.maximum(start + window, 0), n)
    lo.flags.writeable = hi.flags.writeable = False
    return lo, hi


def _window_sums_rows(v: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``cs[hi] - cs[lo]`` (`_window_bounds`; ``cs`` the row's cumulative sums
    in float64, 0 first, sequential as ``np.cumsum``), C-ordered, and each row's total
    ``cs[n]``.

    The cumulative sums sit between ``window // 2`` zeros and copies of the total, so the
    truncated windows at the ends read those and every window is a difference of two
    contiguous slices (no gather).
    """
    rows, n = v.shape
    h = window // 2
    buf = np.empty((rows, n + 1 + window))
    buf[:, :h + 1] = 0.0
    np.cumsum(v, axis=1, dtype=np.float64, out=buf[:, h + 1:h + n + 1])
    buf[:, h + n + 1:] = buf[:, h + n:h + n + 1]
    return np.subtract(buf[:, window:window + n], buf[:, :n]), buf[:, h + n]


def window_counts(valid: np.ndarray, window: int) -> np.ndarray:
    """``numpy.convolve(valid, numpy.ones(window), "same")`` of a boolean array (float64),
    from integer cumulative sums."""
    n = valid.shape[0]
    if not 1 <= window <= n:
        return np.convolve(valid, np.ones(window), "same")
    if valid.all():
        return window_lengths(n, window).copy()
    cs = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(valid, out=cs[1:])
    lo, hi = _window_bounds(n, window)
    return (cs[hi] - cs[lo]).astype(np.float64)


@functools.lru_cache(maxsize=32)
def window_lengths(n: int, window: int) -> np.ndarray:
    """`window_counts` of ``n`` valid values: each window's length after truncation at
    the ends (float64, read-only, cached)."""
    lo, hi = _window_bounds(n, window)
    out = (hi - lo).astype(np.float64)
    out.flags.writeable = False
    return out


def window_sums(values: np.ndarray, window: int) -> np.ndarray:
    """``numpy.convolve(values, numpy.ones(window), "same")`` of finite float32 values,
    bit for bit, in time independent of ``window``.

    Each window sum is computed exactly when every partial sum of the values is a float64:
    the values are multiples of ``q``, the smallest power of two dividing all of them, and
    the sum of their magnitudes is below ``2**52 q``. The convolution's sums, in whatever
    order its dot products take, then round nothing, and differences of exact cumulative
    sums give the same numbers. Otherwise (values spanning more than 52 bits, or negative
    zeros) numpy's convolution is used.
    """
    v = np.asarray(values)
    n = v.shape[0]
    if v.dtype == np.float32 and 1 <= window <= n and _sums_are_exact(v):
        cs = np.zeros(n + 1)
        np.cumsum(v, dtype=np.float64, out=cs[1:])
        lo, hi = _window_bounds(n, window)
        return cs[hi] - cs[lo]
    return np.convolve(v, np.ones(window), "same")


_SIGN = np.uint32(0x80000000)
_MANTISSA = np.uint32(0x7FFFFF)
_ONE = np.uint32(1)


def _sums_are_exact(v: np.ndarray) -> bool:
    """Whether every sum of float32 values ``v`` (any subset, any order) is exact in float64
    (and no negative zero could decide the sign of a zero sum)."""
    if (v.view(np.uint32) == _SIGN).any():  # a sum of negative zeros may keep its sign or not
        return False
    mag = np.abs(v)
    top = float(mag.max()) * v.shape[0]
    # A non-zero float32 is a multiple of at least 2**-24 times its magnitude (its last
    # mantissa bit): a range of magnitudes below 2**28 / n settles it in a few passes.
    smallest = float(mag.min())
    if smallest == 0.0:  # (else every magnitude is non-zero: no selection needed)
        nonzero = mag[mag > 0]
        if nonzero.shape[0] == 0:  # all zeros
            return True
        smallest = float(nonzero.min())
    if top < smallest * 2.0**28:
        return True
    m = mag.view(np.uint32)
    # Each value's granularity (its lowest set mantissa bit, as a float): the value minus
    # itself with that bit cleared (an exact float32 difference), or the value itself for a
    # power of two (zero mantissa field). q: the smallest, over the non-zero values.
    gran = np.where((m & _MANTISSA) == 0, mag, mag - (m & (m - _ONE)).view(np.float32))
    gran = gran[gran > 0]
    if gran.shape[0] == 0:  # all zeros
        return True
    # Every partial sum is a multiple of q no larger than n * max|v|.
    return top < float(gran.min()) * 2.0**52


class SmoothedDifference(NamedTuple):
    """What `measure_interface` computed on the way to LSST's offset (for its error).

    ``avg`` is the moving-averaged difference ``A - B`` (NaN where the raw difference
    is), ``clip_std`` the clipped standard deviation that goes with ``offset_raw``, and
    ``window`` the moving-average length (None without smoothing). ``values`` are the
    values of ``avg`` the clipped statistics used, sorted (None: not given).
    """

    avg: np.ndarray
    clip_std: float
    window: int | None
    values: np.ndarray | None = None


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
    diff = edge_a - edge_b
    n = diff.shape[0]
    # One test settles the usual case: no NaN and no infinity in the difference.
    if np.count_nonzero(np.isfinite(diff)) == n:
        nan = None
        any_nan = any_inf = False
    else:
        nan = np.isnan(diff)
        n_nan = int(np.count_nonzero(nan))
        any_nan = n_nan > 0  # (an all-NaN profile makes every difference NaN)
        any_inf = n_nan < n - int(np.count_nonzero(np.isfinite(diff)))
        if any_nan and (np.isnan(edge_a).all() or np.isnan(edge_b).all()):
            return InterfaceOffset(interface_id, 0.0, 0.0, 0.0, True, False), None
    win = None
    if window_frac is not None:
        win = window_length(window_frac, n)
        if win < 1:
            raise ValueError(
                f"interface {interface_id}: moving-average window "
                f"int({window_frac} * {n}) is empty"
            )
        # nan_to_num (NaN to zero, infinities to the largest floats) in one pass when
        # the profiles hold no infinity.
        if any_inf:
            clean = np.nan_to_num(diff)
        else:
            clean = np.where(nan, np.float32(0.0), diff) if any_nan else diff
        total = window_sums(clean, win)
        if any_nan or win > n:
            avg = total / np.maximum(window_counts(~nan if any_nan else np.ones(n, bool),
                                                   win), 1.0)
            if any_nan:
                avg[nan] = np.nan
        else:  # every window full of valid values: its truncated length (at least 1)
            avg = total / window_lengths(n, win)
    else:
        avg = diff.copy()
        if any_nan:
            avg[nan] = np.nan
    # Without a NaN or infinite difference every average is a double mean of finite
    # float32 values (a float64 within rounding of the float32 range: finite once cast to
    # float32, as the statistics test), or the difference itself.
    offset_raw, clip_std, values = clipped_stats_sorted(
        avg, finite=not (any_nan or any_inf))
    # Without a NaN difference every average is a number: nothing to count.
    n_nan = int(np.count_nonzero(np.isnan(avg))) if any_nan else 0
    return _offset_result(interface_id, n, n_nan, offset_raw, clip_std, avg, win, values,
                          min_frac, max_offset)


def _offset_result(interface_id: str, n: int, n_nan: int, offset_raw: float,
                   clip_std: float, avg: np.ndarray, win: int | None,
                   values: np.ndarray | None, min_frac: float,
                   max_offset: float) -> tuple[InterfaceOffset, SmoothedDifference]:
    """LSST's do-no-harm checks on the clipped mean of ``n`` smoothed differences
    (``n_nan`` of them NaN), with what `measure_interface` returns beside them."""
    good_frac = 1.0 - float(n_nan) / n
    min_frac_fail = good_frac < min_frac
    max_offset_fail = bool(abs(offset_raw) > max_offset)
    offset = 0.0 if (min_frac_fail or max_offset_fail) else offset_raw
    if math.isnan(offset):
        # No clipped mean: every difference clipped (edges without noise), or no position
        # where both edges have data (ampEdgeMinFrac 0 lets that through). LSST keeps the
        # NaN, and its solve then zeroes every pedestal of the detector; the offset is set
        # to 0 instead, as do-no-harm sets a failed one (README, "Parity with LSST").
        offset = 0.0
    return (InterfaceOffset(interface_id, offset, offset_raw, good_frac, min_frac_fail,
                            max_offset_fail), SmoothedDifference(avg, clip_std, win, values))


def measure_interfaces(
    interface_ids: Sequence[str],
    edges_a: Sequence[np.ndarray],
    edges_b: Sequence[np.ndarray],
    *,
    window_frac: float | None,
    min_frac: float,
    max_offset: float,
) -> list[tuple[InterfaceOffset, SmoothedDifference | None]]:
    """`measure_interface` of several interfaces (the same results, in order).

    Equally long float32 profiles whose differences are finite and have exact window sums
    (`window_sums`; the usual case) share one moving average and one row-wise sort; each
    interface's clipped statistics are its own (`clipped_mean_var_rows`). A difference
    whose NaNs are only a run at either end (lines masked along the detector's border)
    joins those of its window and usable length, cut to its finite run: where the sums are
    exact, the windows cut at the run's ends hold what the NaN-aware windows hold. The
    others go through `measure_interface` itself.
    """
    out: list[tuple[InterfaceOffset, SmoothedDifference | None] | None] = (
        [None] * len(interface_ids))

    def alone(i: int) -> None:
        out[i] = measure_interface(interface_ids[i], edges_a[i], edges_b[i],
                                   window_frac=window_frac, min_frac=min_frac,
                                   max_offset=max_offset)

    groups: dict[int, list[int]] = {}
    for i, (a, b) in enumerate(zip(edges_a, edges_b, strict=True)):
        if (window_frac is not None and a.dtype == np.float32 and b.dtype == np.float32
                and a.ndim == 1 and a.shape == b.shape):
            groups.setdefault(a.shape[0], []).append(i)
        else:
            alone(i)
    # (window, usable length) -> [(interface, its length, start of its finite run, row)]
    batches: dict[tuple[int, int], list[tuple[int, int, int, np.ndarray]]] = {}
    for n, members in groups.items():
        win = window_length(window_frac, n)  # (grouped members have a window)
        if not (len(members) > 1 and 1 <= win <= n):
            for i in members:
                alone(i)
            continue
        diff = _stack_rows([edges_a[i] for i in members])
        diff -= _stack_rows([edges_b[i] for i in members])
        finite = np.isfinite(diff).all(axis=1).tolist()
        for j, i in enumerate(members):
            span = (0, n) if finite[j] else finite_run(diff[j])
            if span is not None and win <= span[1] - span[0]:
                batches.setdefault((win, span[1] - span[0]), []).append(
                    (i, n, span[0], diff[j, span[0]:span[1]]))
            else:
                alone(i)
    for (win, m), batch in batches.items():
        diff = _stack_rows([row for *_, row in batch])
        exact = _rows_sums_are_exact(diff)
        for (i, *_), ok in zip(batch, exact.tolist(), strict=True):
            if not ok:
                alone(i)
        if not exact.all():
            diff = diff[exact]
            batch = [b for b, ok in zip(batch, exact.tolist(), strict=True) if ok]
        if not batch:
            continue
        # Every window sum exact: the same numbers as `window_sums` row by row.
        avg = _window_sums_rows(diff, win)[0]
        avg /= window_lengths(m, win)
        values = np.sort(avg, axis=1)
        clipped = clipped_mean_var_rows(values)
        for j, (i, n, start, _) in enumerate(batch):
            mean, var = clipped[j]
            row = avg[j]
            if m < n:  # the full profile's averages: NaN on the masked lines
                row = np.full(n, np.nan)
                row[start:start + m] = avg[j]
            out[i] = _offset_result(interface_ids[i], n, n - m, mean,
                                    math.sqrt(var) if var >= 0 else math.nan, row, win,
                                    values[j], min_frac, max_offset)
    return out  # type: ignore[return-value]


def finite_run(values: np.ndarray) -> tuple[int, int] | None:
    """``(start, stop)`` when the NaNs of 1-d ``values`` are exactly those outside
    ``start:stop`` and every value inside is finite (a run at least 1 long); else None."""
    idx = np.flatnonzero(~np.isnan(values))
    if idx.shape[0] == 0:
        return None
    start, stop = int(idx[0]), int(idx[-1]) + 1
    if stop - start != idx.shape[0] or not np.isfinite(values[start:stop]).all():
        return None
    return start, stop


def _rows_sums_are_exact(v: np.ndarray) -> np.ndarray:
    """`_sums_are_exact` of each row of float32 ``v``: the common case (no negative zero,
    magnitudes within 2**28 / n of each other) for all rows at once, the others row by
    row."""
    n = v.shape[1]
    negative_zero = (v.view(np.uint32) == _SIGN).any(axis=1)
    mag = np.abs(v)
    smallest = mag.min(axis=1).astype(np.float64)
    quick = mag.max(axis=1).astype(np.float64) * n < smallest * 2.0**28
    quick &= smallest > 0
    quick &= ~negative_zero
    for r in np.flatnonzero(~quick & ~negative_zero).tolist():
        quick[r] = _sums_are_exact(v[r])
    return quick
