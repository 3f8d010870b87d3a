"""Per-strip statistics, computed once per edge strip and shared by every diagnostic.

LSST's estimator needs one number per strip line: its median (the edge profile). The
diagnostics beside it (offset uncertainties, the gain-step diagnosis, the amp levels and
the robust estimator) need a few more statistics of the same lines. `strip_stats` computes
them all in one go, in the layout that makes them cheap: the strip as *lines*, one
contiguous row per position along the interface, holding the pixels across the strip.
`lines_stats` does the same for several strips stacked line after line (`strip_blocks`),
with the same numbers and one set of array operations per stack; each line is sorted
once, which gives its median and its count.

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
    their mean (float64). The per-line sums behind these and the distance moments are float32
    sums in numpy's pairwise order along each line, an order that does not depend on the
    processor, which the compiled kernels repeat bit for bit.
``dist_mean``, ``dist_sxx``, ``dist_sxy``
    Per line, the moments of those pixels against their distance to the amp boundary:
    mean distance, ``sum (d - dist_mean)**2`` and ``sum (d - dist_mean)(v - clip_mean)``;
    the gain diagnosis extrapolates each line to the boundary with them.
``level``
    The line medians of the strip before background subtraction (same mask); equal to
    ``profile`` when there is no background.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from . import kernels

__all__ = [
    "CLIP_SIGMA",
    "MAD_TO_SIGMA",
    "StripBlock",
    "StripStats",
    "exact_median",
    "line_medians",
    "lines_stats",
    "median_variance",
    "strip_blocks",
    "strip_lines",
    "strip_stats",
]

#: Robust standard deviation of a Gaussian from its median absolute deviation.
MAD_TO_SIGMA = 1.482602218505602
#: Pixels per stack of `strip_blocks` (a few strips: the stack's temporaries stay in cache).
_BLOCK_PIXELS = 1 << 19
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
    n = np.asarray(n)
    if (n.dtype.kind in "iu" and n.ndim == 1 and n.shape[0] > 0
            and isinstance(sigma, (float, int, np.floating, np.integer))):
        # Integer counts (lines of a strip, a few distinct values): the variance of each
        # count once, from a table of the same double operations, then looked up.
        top = int(n.max())
        if int(n.min()) >= 0 and top <= 4 * n.shape[0]:
            sd = float(sigma)
            table = sd * sd * math.pi / _median_denominators(top)  # (numpy's x**2 is x*x)
            table[0] = np.nan
            return table.take(n)
    n = n.astype(np.float64, copy=False)
    # The denominator is at least pi - 2 for n >= 0: nothing to divide by zero.
    out = np.asarray(sigma, dtype=np.float64) ** 2 * math.pi / (2.0 * (n - 1.0) + math.pi)
    return np.where(n > 0, out, np.nan)


@functools.lru_cache(maxsize=16)
def _median_denominators(top: int) -> np.ndarray:
    """``2 (n - 1) + pi`` for n = 0 .. top (float64, read-only, cached)."""
    n = np.arange(top + 1, dtype=np.float64)
    out = 2.0 * (n - 1.0) + math.pi
    out.flags.writeable = False
    return out


def strip_lines(strip: np.ndarray, side: int) -> np.ndarray:
    """The strip as C-contiguous float32 lines ``(along, across)``: rows of the strip for
    sides 1/3 (a vertical boundary), columns for sides 0/2. No copy when already so."""
    a = np.asarray(strip, dtype=np.float32)
    if side in (0, 2):
        a = a.T
    return np.ascontiguousarray(a)


class StripBlock(NamedTuple):
    """Edge strips stacked as lines for `lines_stats`: strip ``keys[k]`` (on ``sides[k]``)
    is ``lines[bounds[k]:bounds[k + 1]]``."""

    keys: list
    sides: list
    bounds: list
    lines: np.ndarray


def strip_blocks(shapes: Mapping[Hashable, tuple[int, tuple[int, int]]],
                 max_pixels: int = _BLOCK_PIXELS) -> list[StripBlock]:
    """Uninitialised float32 stacks for strips ``{key: (side, (rows, columns))}``.

    Strips with the same width across and the same distance order (sides 0/1 or 2/3)
    share a stack, in the order given, up to about ``max_pixels`` pixels per stack: small
    strips are processed together, large ones stay small enough for the processor's cache.
    """
    groups: dict[tuple[int, bool], list] = {}
    for key, (side, (h, w)) in shapes.items():
        along, across = (w, h) if side in (0, 2) else (h, w)
        groups.setdefault((across, side in (0, 1)), []).append((key, side, along))
    blocks = []
    for (across, _), items in groups.items():
        start = 0
        while start < len(items):
            stop = start + 1
            size = items[start][2]
            while stop < len(items) and (size + items[stop][2]) * across <= max_pixels:
                size += items[stop][2]
                stop += 1
            chunk = items[start:stop]
            bounds = [0]
            for _, _, along in chunk:
                bounds.append(bounds[-1] + along)
            blocks.append(StripBlock([k for k, _, _ in chunk], [s for _, s, _ in chunk],
                                     bounds, np.empty((bounds[-1], across), dtype=np.float32)))
            start = stop
    return blocks


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
        ``strip`` is NaN for ``level`` (``raw`` itself is not modified). ``level`` is
        ``profile`` when omitted.
    profile : ndarray, optional
        The line medians if already computed (they are recomputed otherwise).

    Returns
    -------
    StripStats
    """
    lines = strip_lines(strip, side)
    raw_lines = None if raw is None else strip_lines(raw, side)
    return lines_stats(lines, [0, lines.shape[0]], [side], inset=inset, raw=raw_lines,
                       profile=profile)[0]


def lines_stats(
    lines: np.ndarray,
    bounds: Sequence[int],
    sides: Sequence[int],
    *,
    inset: int = 0,
    raw: np.ndarray | None = None,
    profile: np.ndarray | None = None,
) -> list[StripStats]:
    """`strip_stats` of several strips stacked as lines, in one set of array operations.

    Every line of a stack is processed on its own, so each strip's statistics are exactly
    those of `strip_stats` on that strip alone; stacking only saves the per-strip overhead.

    Parameters
    ----------
    lines : ndarray (n_lines, n_across), float32, C-contiguous
        The strips' lines (`strip_lines`) one strip after the other, NaN where masked.
        Not modified.
    bounds : sequence of int
        Strip ``k`` is ``lines[bounds[k]:bounds[k + 1]]``.
    sides : sequence of int
        Side of each strip; the distances across the lines must be the same for all of
        them (sides 0 and 1, or sides 2 and 3).
    inset : int
        ``ampEdgeInset``.
    raw : ndarray, optional
        The same lines before background subtraction (masked where ``lines`` is NaN for
        ``level``; not modified).
    profile : ndarray, optional
        The line medians if already computed.

    Returns
    -------
    list of StripStats
        One per strip, in order; their arrays are views of stacked arrays.
    """
    near = {s in (0, 1) for s in sides}
    if len(near) > 1:
        raise ValueError(f"sides {list(sides)} mix strips of different distance orders")
    n_across = lines.shape[1]
    dist = _distances(n_across, sides[0] if sides else 0, inset).astype(np.float32)
    # Counts, medians, scatters and the clipped sums: the per-pixel work, in the active
    # kernels (the compiled ones return the numpy reference's numbers bit for bit).
    count, profile, level, sigmas, n, sr, sd, sdd, sdr = kernels.active().strip_line_stats(
        lines, bounds, dist, raw, profile)
    with np.errstate(invalid="ignore", divide="ignore"):
        rm = sr / n
        xm = sd / n
        sxx = sdd - sd * xm
        sxy = sdr - sd * rm
        clip_mean = profile + rm
    usable = n > 0
    if np.count_nonzero(usable) < usable.shape[0]:
        empty = ~usable
        for arr in (clip_mean, xm, sxx, sxy):
            arr[empty] = np.nan
    out = []
    for k, side in enumerate(sides):
        sl = slice(bounds[k], bounds[k + 1])
        out.append(StripStats(side, profile[sl], count[sl], float(sigmas[k]), n[sl],
                              clip_mean[sl], xm[sl], sxx[sl], sxy[sl], level[sl]))
    return out
