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
def _smooth(image, k):
    n = k.shape[0]
    r = n // 2
    h, w = image.shape
    oh = h - 2 * r
    ow = w - 2 * r
    out = np.empty((oh, ow), dtype=np.float32)
    ring = np.empty((n, ow), dtype=np.float32)
    acc = np.empty(ow, dtype=np.float32)
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
    return out


def smooth(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """See `ampoffset_dask.algorithm.kernels._numpy.smooth`."""
    k = np.asarray(kernel, dtype=np.float32)
    r = k.shape[0] // 2
    h, w = image.shape
    if h - 2 * r <= 0 or w - 2 * r <= 0:
        return np.empty((max(h - 2 * r, 0), max(w - 2 * r, 0)), dtype=np.float32)
    return _smooth(np.ascontiguousarray(image, dtype=np.float32), k)


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
def _select(a, lo, hi, k):
    """Place the k-th smallest of ``a[lo:hi]`` at ``a[k]`` (smaller left, larger right)."""
    budget = 8 + 4 * int(math.log2(hi - lo + 1))
    while hi - lo > 16:
        budget -= 1
        if budget == 0:
            a[lo:hi].sort()  # pathological pivots: finish exactly by sorting the range
            return
        mid = (lo + hi - 1) // 2
        # Median of three to the end as the pivot.
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi - 1] < a[lo]:
            a[hi - 1], a[lo] = a[lo], a[hi - 1]
        if a[mid] < a[hi - 1]:
            a[mid], a[hi - 1] = a[hi - 1], a[mid]
        pivot = a[hi - 1]
        # Hoare partition of a[lo:hi-1] around pivot (equal values go to both sides).
        i = lo - 1
        j = hi - 1
        while True:
            i += 1
            while a[i] < pivot:
                i += 1
            j -= 1
            while j > lo and a[j] > pivot:
                j -= 1
            if i >= j:
                break
            a[i], a[j] = a[j], a[i]
        a[i], a[hi - 1] = a[hi - 1], a[i]
        if k == i:
            return
        if k < i:
            hi = i
        else:
            lo = i + 1
    # Insertion sort of the small remainder.
    for p in range(lo + 1, hi):
        v = a[p]
        q = p - 1
        while q >= lo and a[q] > v:
            a[q + 1] = a[q]
            q -= 1
        a[q + 1] = v


@njit(**_JIT)
def _min_range(a, lo, hi):
    m = a[lo]
    for p in range(lo + 1, hi):
        if a[p] < m:
            m = a[p]
    return m


@njit(**_JIT)
def _order_stats(a, n, ks):
    """Values of the ascending order statistics ``ks`` (sorted, distinct) of ``a[:n]``."""
    nk = ks.shape[0]
    vals = np.empty(nk, dtype=np.float64)
    # Select from the middle outwards: each selection bounds the ranges of the others.
    lo_bound = np.zeros(nk, dtype=np.int64)
    hi_bound = np.full(nk, n, dtype=np.int64)
    done = np.zeros(nk, dtype=np.bool_)
    order = np.argsort(np.abs(ks - (n - 1) / 2.0))
    for oi in range(nk):
        j = order[oi]
        k = ks[j]
        lo = lo_bound[j]
        hi = hi_bound[j]
        if lo == k and j > 0 and done[j - 1] and ks[j - 1] == k - 1:
            # Next order statistic after a placed one: the minimum of the right part.
            v = _min_range(a, lo, hi)
            # Move it to position k so later selections still see a partitioned array.
            for p in range(lo, hi):
                if a[p] == v:
                    a[p], a[k] = a[k], a[p]
                    break
        else:
            _select(a, lo, hi, k)
        vals[j] = a[k]
        done[j] = True
        for q in range(nk):
            if ks[q] < k and hi_bound[q] > k:
                hi_bound[q] = k
            if ks[q] > k and lo_bound[q] < k + 1:
                lo_bound[q] = k + 1
    return vals


@njit(**_JIT)
def _clip_sums(a, n, center, half):
    """Count, sum and sum of squares of ``a[:n] - center`` over ``|a - center| <= half``."""
    m = 0
    s1 = 0.0
    s2 = 0.0
    block = 4096
    for start in range(0, n, block):
        stop = min(n, start + block)
        b1 = 0.0
        b2 = 0.0
        for p in range(start, stop):
            d = np.float64(a[p]) - center
            if abs(d) <= half:
                m += 1
                b1 += d
                b2 += d * d
        s1 += b1
        s2 += b2
    return m, s1, s2


@njit(**_JIT)
def _clipped_from_buffer(a, n, n_sigma, n_iter, iq_to_stdev):
    if n == 0:
        return math.nan, math.nan
    if n == 1:
        median = np.float64(a[0])
        q1 = median
        q3 = median
    else:
        idx = np.empty(3)
        idx[0] = 0.5 * (n - 1)
        idx[1] = 0.25 * (n - 1)
        idx[2] = 0.75 * (n - 1)
        need = np.empty(6, dtype=np.int64)
        for j in range(3):
            need[2 * j] = int(idx[j])
            need[2 * j + 1] = int(idx[j]) + 1
        ks = np.unique(need)
        vals = _order_stats(a, n, ks)
        q = np.empty(3)
        for j in range(3):
            lo = int(idx[j])
            hi = lo + 1
            vlo = vals[np.searchsorted(ks, lo)]
            vhi = vals[np.searchsorted(ks, hi)]
            q[j] = (hi - idx[j]) * vlo + (idx[j] - lo) * vhi
        median, q1, q3 = q[0], q[1], q[2]
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
        m, s1, s2 = _clip_sums(a, n, center, half)
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


@njit(**_JIT)
def _usable_clipped(values, bad, use_bad, n_sigma, n_iter, iq_to_stdev):
    buf = np.empty(values.size, dtype=values.dtype)
    n = _gather(values, bad, use_bad, buf)
    mean, var = _clipped_from_buffer(buf, n, n_sigma, n_iter, iq_to_stdev)
    return mean, var, n


_NO_BAD = np.zeros((1, 1), dtype=np.bool_)


def usable_clipped_mean_var(
    values: np.ndarray, bad: np.ndarray | None, n_sigma: float = 3.0, n_iter: int = 3
) -> tuple[float, float, int]:
    """See `ampoffset_dask.algorithm.kernels._numpy.usable_clipped_mean_var`."""
    from ..stats import IQ_TO_STDEV

    values = _native(values)
    if values.ndim != 2:
        values = values.reshape(1, -1)
        bad = None if bad is None else np.asarray(bad).reshape(1, -1)
    use_bad = bad is not None
    mean, var, n = _usable_clipped(values, bad if use_bad else _NO_BAD, use_bad,
                                   float(n_sigma), int(n_iter), IQ_TO_STDEV)
    return float(mean), float(var), int(n)


# ------------------------------------------------------------------------------------------
# Background model: GSL piecewise cubic evaluated per pixel and subtracted in float32
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _subtract_piecewise(image, y, b, c, d, idx, t, lo, hi, dxl, d1l, d2l, dxr, d1r, d2r):
    rows, w = image.shape
    for r in range(rows):
        img = image[r]
        for x in range(lo):
            dx = dxl[x]
            v = y[r, 0] + dx * d1l[r] + 0.5 * dx * dx * d2l[r]
            img[x] = img[x] - np.float32(v)
        for x in range(lo, hi):
            i = idx[x - lo]
            tt = t[x - lo]
            v = d[r, i] * tt
            v = v + c[r, i]
            v = v * tt
            v = v + b[r, i]
            v = v * tt
            v = v + y[r, i]
            img[x] = img[x] - np.float32(v)
        nl = y.shape[1] - 1
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
    _subtract_piecewise(image, y, np.ascontiguousarray(b), np.ascontiguousarray(c),
                        np.ascontiguousarray(d), idx.astype(np.int64), t, lo, hi,
                        dxl, d1l, d2l, dxr, d1r, d2r)


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
