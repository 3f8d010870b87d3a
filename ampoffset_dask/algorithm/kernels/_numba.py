"""Compiled (numba) versions of the hot loops, bit-identical to the numpy reference.

Every kernel performs the same IEEE operations in the same order as its numpy counterpart
(`ampoffset_dask.algorithm.kernels._numpy`): float32 products and sums stay float32,
``fastmath`` is off so nothing is reassociated or fused into multiply-adds, and the order
statistics come from an exact selection instead of a sort (the same values). Only the
clipped sums may differ from the reference in their last bits (a different summation
order), which moves no pedestal by more than 1e-12 relative.

Compiled on first use and cached on disk (``cache=True``), so a worker process pays the
compilation once per installation and only a cache load afterwards.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

NAME = "numba"

_JIT = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}


# ------------------------------------------------------------------------------------------
# Smoothing: afw's float32 separable convolution with a ring buffer
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _smooth(image, k, out, ring, acc):
    n = k.shape[0]
    h = image.shape[0]
    ow = out.shape[1]
    zero = np.float32(0.0)
    for row in range(h):
        # Horizontal pass of input row `row` into ring slot row % n, terms in order i.
        slot = ring[row % n]
        src = image[row]
        k0 = k[0]
        for x in range(ow):
            slot[x] = src[x] * k0
        for i in range(1, n):
            ki = k[i]
            for x in range(ow):
                slot[x] = slot[x] + src[x + i] * ki
        oy = row - (n - 1)
        if oy < 0:
            continue
        # Vertical pass: input rows oy..oy+n-1 accumulated in ring-slot order 0..n-1.
        for x in range(ow):
            acc[x] = zero
        for s in range(n):
            rr = oy + (s - oy) % n
            ks = k[rr - oy]
            line = ring[s]
            for x in range(ow):
                acc[x] = acc[x] + line[x] * ks
        dst = out[oy]
        for x in range(ow):
            dst[x] = acc[x]


def smooth(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """See `ampoffset_dask.algorithm.kernels._numpy.smooth`."""
    k = np.asarray(kernel, dtype=np.float32)
    r = k.shape[0] // 2
    h, w = image.shape
    if h - 2 * r <= 0 or w - 2 * r <= 0:
        return np.empty((max(h - 2 * r, 0), max(w - 2 * r, 0)), dtype=np.float32)
    n = k.shape[0]
    # Buffers are allocated here, not in compiled code, so tracemalloc sees them.
    out = np.empty((h - 2 * r, w - 2 * r), dtype=np.float32)
    ring = np.empty((n, w - 2 * r), dtype=np.float32)
    acc = np.empty(w - 2 * r, dtype=np.float32)
    _smooth(np.ascontiguousarray(image, dtype=np.float32), k, out, ring, acc)
    return out


# ------------------------------------------------------------------------------------------
# Clipped statistics from an exact selection of the three quartiles
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _gather(values, bad, use_bad, out):
    """Copy finite values not flagged in ``bad`` into ``out``; return how many."""
    h, w = values.shape
    n = 0
    for y in range(h):
        for x in range(w):
            v = values[y, x]
            if math.isfinite(v) and not (use_bad and bad[y, x]):
                out[n] = v
                n += 1
    return n


@njit(**_JIT)
def _clip_sums(a, center, half):
    """Count, sum and sum of squares of ``a - center`` over ``|a - center| <= half``.

    Eight independent lanes (each summed in order, then combined pairwise) keep the loop
    branch-free and let the compiler use SIMD without reassociating any sum.
    """
    n = a.shape[0]
    lanes = 8
    c = np.zeros(lanes, dtype=np.int64)
    s1 = np.zeros(lanes)
    s2 = np.zeros(lanes)
    full = n - n % lanes
    for start in range(0, full, lanes):
        for q in range(lanes):
            d = np.float64(a[start + q]) - center
            keep = abs(d) <= half
            dk = d if keep else 0.0
            c[q] += 1 if keep else 0
            s1[q] += dk
            s2[q] += dk * dk
    for p in range(full, n):
        d = np.float64(a[p]) - center
        if abs(d) <= half:
            c[0] += 1
            s1[0] += d
            s2[0] += d * d
    m = 0
    for q in range(lanes):
        m += c[q]
    t1 = ((s1[0] + s1[1]) + (s1[2] + s1[3])) + ((s1[4] + s1[5]) + (s1[6] + s1[7]))
    t2 = ((s2[0] + s2[1]) + (s2[2] + s2[3])) + ((s2[4] + s2[5]) + (s2[6] + s2[7]))
    return m, t1, t2


@njit(**_JIT)
def _clip_loop(a, median, q1, q3, n_sigma, n_iter, iq_to_stdev):
    """afw's clip iterations (ALGORITHM.md 2.3) on the finite candidates ``a``."""
    n = a.shape[0]
    iqr = q3 - q1
    mean = math.nan
    var = math.nan
    for it in range(n_iter):
        if var < 0:
            var = 0.0
        center = median if it == 0 else mean
        if it == 0 or n <= 1:
            half = (n_sigma * iq_to_stdev) * iqr
        else:
            half = n_sigma * math.sqrt(var) if var >= 0 else math.nan
        if math.isnan(center) or math.isnan(half):
            mean = math.nan
            var = math.nan
            continue
        m, s1, s2 = _clip_sums(a, center, half)
        if m == 0:
            mean = math.nan
            var = math.nan
            continue
        mean_d = s1 / m
        if m > 1:
            var = (s2 / m - mean_d**2) * (m * m / (m * m - m))
        else:
            var = math.nan
        mean = mean_d + center
    return mean, var


_NO_BAD = np.zeros((1, 1), dtype=np.bool_)


def usable_clipped_mean_var(
    values: np.ndarray, bad: np.ndarray | None, n_sigma: float = 3.0, n_iter: int = 3
) -> tuple[float, float, int]:
    """See `ampoffset_dask.algorithm.kernels._numpy.usable_clipped_mean_var`."""
    from ..stats import IQ_TO_STDEV, quantiles_selected

    values = _native(values)
    if values.ndim != 2:
        values = values.reshape(1, -1)
        bad = None if bad is None else np.asarray(bad).reshape(1, -1)
    use_bad = bad is not None
    buf = np.empty(values.size, dtype=values.dtype)
    n = int(_gather(values, bad if use_bad else _NO_BAD, use_bad, buf))
    a = buf[:n]
    # numpy's exact single-kth selection (SIMD) beats a compiled quickselect.
    median, q1, q3 = quantiles_selected(a)
    mean, var = _clip_loop(a, median, q1, q3, float(n_sigma), int(n_iter), IQ_TO_STDEV)
    return float(mean), float(var), n


# ------------------------------------------------------------------------------------------
# Background model: GSL piecewise cubic evaluated per pixel and subtracted in float32
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _subtract_piecewise(image, y, b, c, d, t, seg_start, seg_stop, lo, hi,
                        dxl, d1l, d2l, dxr, d1r, d2r):
    rows, w = image.shape
    nl = y.shape[1] - 1
    for r in range(rows):
        img = image[r]
        for x in range(lo):
            dx = dxl[x]
            v = y[r, 0] + dx * d1l[r] + 0.5 * dx * dx * d2l[r]
            img[x] = img[x] - np.float32(v)
        # One interval at a time: constant coefficients over contiguous columns.
        for i in range(seg_start.shape[0]):
            bi = b[r, i]
            ci = c[r, i]
            di = d[r, i]
            yi = y[r, i]
            for x in range(seg_start[i], seg_stop[i]):
                tt = t[x - lo]
                v = di * tt
                v = v + ci
                v = v * tt
                v = v + bi
                v = v * tt
                v = v + yi
                img[x] = img[x] - np.float32(v)
        for x in range(hi, w):
            dx = dxr[x - hi]
            v = y[r, nl] + dx * d1r[r] + 0.5 * dx * dx * d2r[r]
            img[x] = img[x] - np.float32(v)


def subtract_model_rows(image: np.ndarray, style: str, knots: np.ndarray,
                        values: np.ndarray) -> None:
    """See `ampoffset_dask.algorithm.kernels._numpy.subtract_model_rows`."""
    from ..interp import piecewise_coefficients
    from . import _numpy

    finite = np.isfinite(values).all()
    if style == "CONSTANT" or not finite or not image.flags.c_contiguous:
        _numpy.subtract_model_rows(image, style, knots, values)
        return
    x = np.asarray(knots, dtype=np.float64)
    y = np.ascontiguousarray(values, dtype=np.float64)
    b, c, d = piecewise_coefficients(style, x, y)
    n = x.shape[0]
    w = image.shape[1]
    xs = np.arange(w, dtype=np.float64)
    lo = int(np.searchsorted(xs, x[0], side="left"))
    hi = int(np.searchsorted(xs, x[-1], side="right"))
    xin = xs[lo:hi]
    idx = np.minimum(np.searchsorted(x, xin, side="right") - 1, n - 2)
    t = xin - x[idx]
    dxl = xs[:lo] - x[0]
    d1l = np.ascontiguousarray(b[:, 0])
    d2l = 2.0 * c[:, 0]
    hl = x[-1] - x[-2]
    bl, cl, dl = b[:, -1], c[:, -1], d[:, -1]
    d1r = bl + hl * (2.0 * cl + 3.0 * dl * hl)
    d2r = 2.0 * cl + 6.0 * dl * hl
    dxr = xs[hi:] - x[-1]
    intervals = np.arange(n - 1)
    seg_start = lo + np.searchsorted(idx, intervals, side="left")
    seg_stop = lo + np.searchsorted(idx, intervals, side="right")
    _subtract_piecewise(image, y, np.ascontiguousarray(b), np.ascontiguousarray(c),
                        np.ascontiguousarray(d), t, seg_start.astype(np.int64),
                        seg_stop.astype(np.int64), lo, hi, dxl, d1l, d2l, dxr, d1r, d2r)


# ------------------------------------------------------------------------------------------
# Fused mask passes
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _bad_pixels(image, mask, bits, use_mask, out):
    h, w = image.shape
    for y in range(h):
        for x in range(w):
            b = not math.isfinite(image[y, x])
            if use_mask and (mask[y, x] & bits) != 0:
                b = True
            out[y, x] = b


_NO_MASK = np.zeros((1, 1), dtype=np.int32)


def _native(a: np.ndarray) -> np.ndarray:
    """``a`` in native byte order (FITS data is big-endian; numba needs native)."""
    a = np.asarray(a)
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def bad_pixels(image: np.ndarray, mask: np.ndarray | None, bits: int) -> np.ndarray:
    """See `ampoffset_dask.algorithm.kernels._numpy.bad_pixels`."""
    out = np.empty(image.shape, dtype=bool)
    use_mask = mask is not None
    m = _native(mask) if use_mask else _NO_MASK
    _bad_pixels(image, m, m.dtype.type(bits), use_mask, out)
    return out


@njit(**_JIT)
def _all_covered(a, b):
    h, w = a.shape
    for y in range(h):
        for x in range(w):
            if not (a[y, x] or b[y, x]):
                return False
    return True


def all_covered(a: np.ndarray, b: np.ndarray) -> bool:
    """See `ampoffset_dask.algorithm.kernels._numpy.all_covered`."""
    return bool(_all_covered(a, b))


@njit(**_JIT)
def _any_bits(mask, bits):
    h, w = mask.shape
    for y in range(h):
        for x in range(w):
            if (mask[y, x] & bits) != 0:
                return True
    return False


def any_bits(mask: np.ndarray, bits: int) -> bool:
    """See `ampoffset_dask.algorithm.kernels._numpy.any_bits`."""
    mask = _native(mask)
    return bool(_any_bits(mask, mask.dtype.type(bits)))


@njit(**_JIT)
def _next_run(row, x):
    """``(start, stop)`` of the first run of set values in ``row[x:]`` (``start == len(row)``
    when there is none)."""
    w = row.shape[0]
    while x < w and not row[x]:
        x += 1
    start = x
    while x < w and row[x]:
        x += 1
    return start, x


@njit(**_JIT)
def _dilate_runs(bad, size, out):
    """OR of ``bad`` over ``size``-square windows (valid part): each run of set pixels in a
    row paints the output rows and columns whose window contains it (masks are sparse)."""
    h, w = bad.shape
    oh, ow = out.shape
    for y in range(h):
        row = bad[y]
        x = 0
        while True:
            start, x = _next_run(row, x)
            if start == w:
                break
            # Window (y', x') holds bad[y, start:x] for y' in y-size+1..y and
            # x' in start-size+1..x-1.
            c0 = max(start - size + 1, 0)
            c1 = min(x, ow)
            if c0 >= c1:
                continue
            for yy in range(max(y - size + 1, 0), min(y + 1, oh)):
                dst = out[yy]
                for xx in range(c0, c1):
                    dst[xx] = True


def dilate_box(bad: np.ndarray, r: int) -> np.ndarray:
    """See `ampoffset_dask.algorithm.kernels._numpy.dilate_box`."""
    size = 2 * r + 1
    h, w = bad.shape
    out = np.zeros((max(h - size + 1, 0), max(w - size + 1, 0)), dtype=bool)
    if out.size:
        _dilate_runs(np.ascontiguousarray(bad, dtype=bool), size, out)
    return out


@njit(**_JIT)
def _mask_hits(mask, bits, out):
    h, w = mask.shape
    for y in range(h):
        for x in range(w):
            out[y, x] = (mask[y, x] & bits) != 0


def mask_hits(mask: np.ndarray, bits: int) -> np.ndarray:
    """See `ampoffset_dask.algorithm.kernels._numpy.mask_hits`."""
    mask = _native(mask)
    out = np.empty(mask.shape, dtype=bool)
    _mask_hits(mask, mask.dtype.type(bits), out)
    return out


# ------------------------------------------------------------------------------------------
# Growing detections: paint each run of seeds in a row with the footprint's row spans
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _grow(seeds, halves, out):
    h, w = seeds.shape
    r = halves.shape[0] // 2
    for y in range(h):
        row = seeds[y]
        x = 0
        while True:
            start, x = _next_run(row, x)
            if start == w:
                break
            # Seeds start..x-1: every footprint row spans the run widened by its half width.
            for dy in range(-r, r + 1):
                yy = y + dy
                if yy < 0 or yy >= h:
                    continue
                half = halves[dy + r]
                dst = out[yy]
                for xx in range(max(start - half, 0), min(x + half, w)):
                    dst[xx] = True


def grow(seeds: np.ndarray, radius: int, isotropic: bool = True) -> np.ndarray:
    """See `ampoffset_dask.algorithm.kernels._numpy.grow`."""
    if radius <= 0 or not seeds.any():
        return seeds.copy()
    halves = np.array([int(math.sqrt(radius * radius - dy * dy)) if isotropic
                       else radius - abs(dy) for dy in range(-radius, radius + 1)],
                      dtype=np.int64)
    out = np.zeros(seeds.shape, dtype=bool)
    _grow(np.ascontiguousarray(seeds, dtype=bool), halves, out)
    return out


# ------------------------------------------------------------------------------------------
# Detection seeds: threshold, count and mark in one pass
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _threshold_seeds(smoothed, hi, lo, positive, negative, mark_positive, mark_negative, r,
                     seeds):
    oh, ow = smoothed.shape
    n = 0
    any_seed = False
    for y in range(oh):
        src = smoothed[y]
        dst = seeds[y + r]
        for x in range(ow):
            v = src[x]
            p = positive and v >= hi
            q = negative and v <= lo
            n += (1 if p else 0) + (1 if q else 0)
            if (p and mark_positive) or (q and mark_negative):
                dst[x + r] = True
                any_seed = True
    return n, any_seed


def threshold_seeds(smoothed: np.ndarray, threshold: float, shape: tuple[int, int], r: int,
                    positive: bool, negative: bool, mark_positive: bool,
                    mark_negative: bool) -> tuple[np.ndarray, int, bool]:
    """See `ampoffset_dask.algorithm.kernels._numpy.threshold_seeds`."""
    seeds = np.zeros(shape, dtype=bool)
    # float32 comparisons, as numpy compares a float32 array with a Python float
    n, any_seed = _threshold_seeds(
        np.ascontiguousarray(smoothed, dtype=np.float32), np.float32(threshold),
        np.float32(-threshold), positive, negative, mark_positive, mark_negative, r, seeds)
    return seeds, int(n), bool(any_seed)
