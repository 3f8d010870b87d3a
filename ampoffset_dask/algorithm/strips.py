"""Per-strip statistics, computed once per edge strip and shared by every diagnostic.

LSST's estimator needs one number per strip line: its median (the edge profile). The
diagnostics beside it (offset uncertainties, the gain-step diagnosis, the amp levels and
the robust estimator) need a few more statistics of the same lines. `strip_stats` computes
them all in one go, in the layout that makes them cheap: the strip as *lines*, one
contiguous row per position along the interface, holding the pixels across the strip.

``profile``
    The float32 line medians, bit-identical to `edge_profile` (LSST's edge profile).
``count``
    Valid (non-NaN) pixels per line.
``sigma``
    The strip's robust pixel scatter about its line medians: ``MAD_TO_SIGMA`` times the
    median of ``|pixel - line median|`` over all valid pixels (no re-centring is needed
    about line medians).
``clip_count``, ``clip_mean``
    Per line, the pixels within ``CLIP_SIGMA * sigma`` of the line median: their number and
    their mean (float64).
``dist_mean``, ``dist_sxx``, ``dist_sxy``
    Per line, the moments of those pixels against their distance to the amp boundary:
    mean distance, ``sum (d - dist_mean)**2`` and ``sum (d - dist_mean)(v - clip_mean)``;
    the gain diagnosis extrapolates each line to the boundary with them.
``level``
    The line medians of the strip before background subtraction (same mask); equal to
    ``profile`` when there is no background.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "CLIP_SIGMA",
    "MAD_TO_SIGMA",
    "StripStats",
    "exact_median",
    "line_medians",
    "median_variance",
    "strip_lines",
    "strip_stats",
]

#: Robust standard deviation of a Gaussian from its median absolute deviation.
MAD_TO_SIGMA = 1.482602218505602
#: Half width, in ``sigma``, of the per-line clip of the clipped line statistics.
CLIP_SIGMA = 3.0


class StripStats(NamedTuple):
    """Statistics of one edge strip (see the module docstring); arrays run along the
    interface, one value per strip line."""

    side: int
    profile: np.ndarray
    count: np.ndarray
    sigma: float
    clip_count: np.ndarray
    clip_mean: np.ndarray
    dist_mean: np.ndarray
    dist_sxx: np.ndarray
    dist_sxy: np.ndarray
    level: np.ndarray

    def profile_variance(self) -> np.ndarray:
        """Variance of each profile value (a median of ``count`` pixels of scatter ``sigma``;
        NaN where the line has no valid pixel)."""
        return median_variance(self.sigma, self.count)


def median_variance(sigma: float | np.ndarray, n: np.ndarray) -> np.ndarray:
    """Variance of the median of ``n`` Gaussian values of scatter ``sigma`` (NaN for n = 0).

    ``sigma**2 * pi / (2 (n - 1) + pi)``: exact for n = 1, ``pi sigma**2 / 2n`` for large n.
    """
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(sigma, dtype=np.float64) ** 2 * math.pi / (2.0 * (n - 1.0) + math.pi)
    return np.where(n > 0, out, np.nan)


def strip_lines(strip: np.ndarray, side: int) -> np.ndarray:
    """The strip as C-contiguous float32 lines ``(along, across)``: rows of the strip for
    sides 1/3 (a vertical boundary), columns for sides 0/2. No copy when already so."""
    a = np.asarray(strip, dtype=np.float32)
    if side in (0, 2):
        a = a.T
    return np.ascontiguousarray(a)


def line_medians(lines: np.ndarray, nan: np.ndarray | None = None,
                 count: np.ndarray | None = None) -> np.ndarray:
    """``numpy.nanmedian`` of each row of a 2-d float array, in the array's dtype.

    Rows without NaN get an exact single-``kth`` selection (numpy's partition with two
    ``kth`` values takes a much slower path); the lower middle value of an even row is
    the maximum of the lower part. Rows with NaN are sorted (NaN last). All-NaN rows give
    NaN; an even count averages the two middle values in the array's dtype, exactly as
    ``numpy.nanmedian`` does.

    Parameters
    ----------
    lines : ndarray (n_lines, n)
        Float data; not modified.
    nan : ndarray of bool, optional
        ``np.isnan(lines)`` if already at hand.
    count : ndarray of int, optional
        Non-NaN values per row if already at hand.
    """
    a = np.asarray(lines)
    dtype = a.dtype.type
    n_lines, n = a.shape
    if n == 0:
        return np.full(n_lines, np.nan, dtype=a.dtype)
    if count is None:
        if nan is None:
            nan = np.isnan(a)
        count = n - np.count_nonzero(nan, axis=1)
    partial = count < n
    n_partial = int(np.count_nonzero(partial))
    if n_partial == 0:
        lo, hi = _middle_values(a.copy())
    else:
        lo = np.empty(n_lines, dtype=a.dtype)
        hi = np.empty(n_lines, dtype=a.dtype)
        if n_partial < n_lines:
            lo[~partial], hi[~partial] = _middle_values(a[~partial])
        s = np.sort(a[partial], axis=1)  # NaNs sort last
        c = count[partial]
        rows = np.arange(n_partial)
        lp = s[rows, np.maximum(c - 1, 0) // 2]
        hp = s[rows, np.minimum(c // 2, n - 1)]
        lo[partial] = np.where(c > 0, lp, dtype(np.nan))
        hi[partial] = np.where(c > 0, hp, dtype(np.nan))
    return ((lo + hi) / dtype(2)).astype(a.dtype, copy=False)


def _middle_values(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper middle values of each row of NaN-free ``a`` (permuted in place)."""
    n = a.shape[1]
    k = n // 2
    a.partition(k, axis=1)
    hi = a[:, k]
    return (hi if n % 2 else a[:, :k].max(axis=1)), hi


def exact_median(values: np.ndarray) -> float:
    """Exact median of a 1-d array of finite values, permuting it in place.

    One single-``kth`` selection (plus a maximum for even sizes) instead of
    ``numpy.median``'s two-``kth`` partition; the two middle values are averaged in
    double. NaN for an empty array.
    """
    n = values.shape[0]
    if n == 0:
        return math.nan
    k = n // 2
    values.partition(k)
    hi = float(values[k])
    if n % 2:
        return hi
    return 0.5 * (float(values[:k].max()) + hi)


def _distances(n_across: int, side: int, inset: int) -> np.ndarray:
    """Distance of each pixel across a strip from the amp boundary (pixel centres)."""
    idx = np.arange(n_across, dtype=np.float64)
    # Sides 0/1 are the amp's last rows/columns: the boundary is past the strip's end.
    return (n_across - idx - 0.5 + inset) if side in (0, 1) else (idx + 0.5 + inset)


def strip_stats(
    strip: np.ndarray,
    side: int,
    *,
    inset: int = 0,
    raw: np.ndarray | None = None,
    profile: np.ndarray | None = None,
    overwrite_raw: bool = False,
) -> StripStats:
    """All statistics of one NaN-masked edge strip (see the module docstring).

    Parameters
    ----------
    strip : ndarray
        The strip in detector orientation, NaN where masked (read as float32); the other
        pixels are expected finite, as `measure_detector` reads them.
    side : int
        Side of the amp the strip lies on (0: +y, 1: +x, 2: -y, 3: -x).
    inset : int
        ``ampEdgeInset``: the strip starts this many pixels from the boundary.
    raw : ndarray, optional
        The same strip before background subtraction; its pixels are masked where
        ``strip`` is NaN for ``level``. ``level`` is ``profile`` when omitted.
    profile : ndarray, optional
        The line medians if already computed (they are recomputed otherwise).
    overwrite_raw : bool
        ``raw`` is scratch space: its masked pixels may be set to NaN in place.

    Returns
    -------
    StripStats
    """
    lines = strip_lines(strip, side)
    n_lines, n_across = lines.shape
    nan = np.isnan(lines)
    any_nan = bool(nan.any())
    count = n_across - _row_counts(nan) if any_nan else np.full(n_lines, n_across)
    if profile is None:
        profile = line_medians(lines, nan, count)
    else:
        profile = np.asarray(profile, dtype=np.float32)
    if raw is None:
        level = profile
    else:
        raw_lines = strip_lines(raw, side)
        if any_nan:
            if not overwrite_raw and np.shares_memory(raw_lines, raw):
                raw_lines = raw_lines.copy()
            raw_lines[nan] = np.nan
        level = line_medians(raw_lines, nan, count)

    with np.errstate(invalid="ignore"):  # infinities in a line give NaN residuals
        return _clipped_line_stats(lines, nan, any_nan, count, profile, side, inset, level)


def _clipped_line_stats(lines: np.ndarray, nan: np.ndarray, any_nan: bool,
                        count: np.ndarray, profile: np.ndarray, side: int, inset: int,
                        level: np.ndarray) -> StripStats:
    """The scatter and clipped-line parts of `strip_stats`."""
    n_across = lines.shape[1]
    resid = lines - profile[:, None]  # NaN where masked (or the line is empty)
    absr = np.abs(resid)
    if np.isinf(profile).any():  # a line of mostly infinities: only finite residuals
        valid = absr[np.isfinite(absr)]
        sigma = MAD_TO_SIGMA * exact_median(valid) if valid.shape[0] >= 2 else math.nan
    else:
        sigma = MAD_TO_SIGMA * _median_ignoring_nan(absr, int(count.sum()))
    # The clip compares in float32 (NaN compares False: masked pixels are never kept).
    keep = absr <= np.float32(CLIP_SIGMA * sigma)
    dist = _distances(n_across, side, inset).astype(np.float32)
    # Sums over the kept pixels, in float32 (the residual sums lose ~1e-7 of the noise),
    # as einsum row sums (several times faster than ufunc reductions along short rows).
    # Distances are multiples of 1/2, so their sums are exact in any order for strips up to
    # ~150 pixels wide (LSST's default: 64), as are the counts.
    kf = keep.astype(np.float32)
    rk = np.where(keep, resid, np.float32(0.0))
    n = np.einsum("ij->i", kf).astype(np.float64)
    sd = np.einsum("ij,j->i", kf, dist).astype(np.float64)
    sdd = np.einsum("ij,j->i", kf, dist * dist).astype(np.float64)
    sr = np.einsum("ij->i", rk).astype(np.float64)
    sdr = np.einsum("ij,j->i", rk, dist).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rm = sr / n
        xm = sd / n
        sxx = sdd - sd * xm
        sxy = sdr - sd * rm
        clip_mean = profile + rm
    empty = ~(n > 0)
    for arr in (clip_mean, xm, sxx, sxy):
        arr[empty] = np.nan
    return StripStats(side, profile, count, float(sigma), n, clip_mean, xm, sxx, sxy, level)


def _row_counts(mask: np.ndarray) -> np.ndarray:
    """True values per row of a 2-d boolean array (an einsum of float32 ones, exact below
    2**24 per row: several times faster than count_nonzero along short rows)."""
    return np.einsum("ij->i", mask.astype(np.float32)).astype(np.int64)


def _median_ignoring_nan(a: np.ndarray, n_valid: int) -> float:
    """Exact median of the non-NaN values of ``a`` (exactly ``n_valid`` of them; ``a`` is
    not modified).

    NaN orders after every number in numpy's partition, so the selection runs on a plain
    copy and the NaNs stay beyond the wanted ranks. NaN for fewer than two values.
    """
    if n_valid < 2:
        return math.nan
    buf = a.ravel().copy()
    k = n_valid // 2
    buf.partition(k)
    hi = float(buf[k])
    if n_valid % 2 == 0:
        hi = 0.5 * (float(buf[:k].max()) + hi)
    return hi
