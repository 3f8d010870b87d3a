"""Compiled (numba) versions of the hot loops, bit-identical to the numpy reference.

Every kernel performs the same IEEE operations in the same order as its numpy counterpart
(`ampoffset_dask.algorithm.kernels._numpy`): float32 products and sums stay float32,
``fastmath`` is off so nothing is reassociated or fused into multiply-adds, and the order
statistics come from an exact selection instead of a sort (the same values). Only the
clipped sums may differ from the reference in their last bits: their two kernels
(`_row_clip_sums`, `_core_sums`) let the compiler reassociate them into SIMD partial sums,
and the sum over the values well inside the clip bounds is taken about a predicted centre
and shifted algebraically, as the reference's value-ordered pieces are (the kept set and
every term are exact), which moves no pedestal by more than 1e-12 relative.

Compiled on first use and cached on disk (``cache=True``), so a worker process pays the
compilation once per installation and only a cache load afterwards; where numba finds no
writable cache folder, each process compiles them, with a warning naming
``NUMBA_CACHE_DIR``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

from ..interp import piecewise
from ..stats import IQ_TO_STDEV
from ..strips import CLIP_SIGMA, MAD_TO_SIGMA  # fixed by the contract: frozen when compiled
from . import _numpy as _reference

NAME = "numba"

logger = logging.getLogger(__name__)



def _cache_probe() -> None:
    """Never called: compiled with ``cache=True`` only to ask numba whether it can cache
    this file's functions."""


def _can_cache() -> bool:
    """Whether numba finds a writable place for this module's compiled kernels (beside
    this file, ``$NUMBA_CACHE_DIR``, or the user's cache folder). Without one, numba
    refuses ``cache=True`` when a function is defined (a read-only container image, an
    unwritable home): the kernels are then compiled in each process, not cached."""
    try:
        njit(cache=True)(_cache_probe)
    except RuntimeError as exc:
        logger.warning("the compiled kernels cannot be cached on disk (%s); each process "
                       "compiles them anew (~20 s): set NUMBA_CACHE_DIR to a writable "
                       "folder to cache them", exc)
        return False
    return True


_JIT = {"cache": _can_cache(), "nogil": True, "fastmath": False, "error_model": "numpy"}


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` for a kernel that only reads it.

    numba compiles one specialization per argument type, and a read-only array (a FITS
    memory map, a cached or shared image) is another type than a writable one: ~10 s more
    compilation for the statistics alone. Every input the kernels only read is passed
    read-only, so one specialization serves both.
    """
    v = a.view()
    v.flags.writeable = False
    return v


# ------------------------------------------------------------------------------------------
# Smoothing: afw's float32 separable convolution with a ring buffer
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _sweep15(dst, base, rows, offsets, weights, j, first, ow):
    """Terms j..j+14 of `_taps` in one sweep over the row."""
    k0, k1, k2, k3, k4 = weights[j], weights[j + 1], weights[j + 2], weights[j + 3], weights[j + 4]
    k5, k6, k7, k8, k9 = (weights[j + 5], weights[j + 6], weights[j + 7], weights[j + 8],
                          weights[j + 9])
    k10, k11, k12, k13, k14 = (weights[j + 10], weights[j + 11], weights[j + 12],
                               weights[j + 13], weights[j + 14])
    s0 = base[rows[j], offsets[j]:]
    s1 = base[rows[j + 1], offsets[j + 1]:]
    s2 = base[rows[j + 2], offsets[j + 2]:]
    s3 = base[rows[j + 3], offsets[j + 3]:]
    s4 = base[rows[j + 4], offsets[j + 4]:]
    s5 = base[rows[j + 5], offsets[j + 5]:]
    s6 = base[rows[j + 6], offsets[j + 6]:]
    s7 = base[rows[j + 7], offsets[j + 7]:]
    s8 = base[rows[j + 8], offsets[j + 8]:]
    s9 = base[rows[j + 9], offsets[j + 9]:]
    s10 = base[rows[j + 10], offsets[j + 10]:]
    s11 = base[rows[j + 11], offsets[j + 11]:]
    s12 = base[rows[j + 12], offsets[j + 12]:]
    s13 = base[rows[j + 13], offsets[j + 13]:]
    s14 = base[rows[j + 14], offsets[j + 14]:]
    for x in range(ow):
        a = s0[x] * k0 if first else dst[x] + s0[x] * k0
        a = a + s1[x] * k1
        a = a + s2[x] * k2
        a = a + s3[x] * k3
        a = a + s4[x] * k4
        a = a + s5[x] * k5
        a = a + s6[x] * k6
        a = a + s7[x] * k7
        a = a + s8[x] * k8
        a = a + s9[x] * k9
        a = a + s10[x] * k10
        a = a + s11[x] * k11
        a = a + s12[x] * k12
        a = a + s13[x] * k13
        dst[x] = a + s14[x] * k14


@njit(**_JIT)
def _sweep7(dst, base, rows, offsets, weights, j, first, ow):
    """Terms j..j+6 of `_taps` in one sweep over the row."""
    k0, k1, k2, k3 = weights[j], weights[j + 1], weights[j + 2], weights[j + 3]
    k4, k5, k6 = weights[j + 4], weights[j + 5], weights[j + 6]
    s0 = base[rows[j], offsets[j]:]
    s1 = base[rows[j + 1], offsets[j + 1]:]
    s2 = base[rows[j + 2], offsets[j + 2]:]
    s3 = base[rows[j + 3], offsets[j + 3]:]
    s4 = base[rows[j + 4], offsets[j + 4]:]
    s5 = base[rows[j + 5], offsets[j + 5]:]
    s6 = base[rows[j + 6], offsets[j + 6]:]
    for x in range(ow):
        a = s0[x] * k0 if first else dst[x] + s0[x] * k0
        a = a + s1[x] * k1
        a = a + s2[x] * k2
        a = a + s3[x] * k3
        a = a + s4[x] * k4
        a = a + s5[x] * k5
        dst[x] = a + s6[x] * k6


@njit(**_JIT)
def _taps(dst, base, rows, offsets, weights, lo, hi, ow, first):
    """``dst[x] = dst[x] + base[rows[j], x + offsets[j]] * weights[j]`` for j = lo..hi-1 in
    order (with ``first``, term ``lo`` starts the sum instead of adding to ``dst``),
    up to fifteen terms per sweep over the row.

    Each output keeps the float32 operation order of one term at a time; sweeping
    several terms at once only saves loads and stores of ``dst`` (SIMD across x).
    """
    j = lo
    while j < hi:
        left = hi - j
        if left >= 15:
            _sweep15(dst, base, rows, offsets, weights, j, first, ow)
            j += 15
        elif left >= 7:
            _sweep7(dst, base, rows, offsets, weights, j, first, ow)
            j += 7
        else:
            kj = weights[j]
            sj = base[rows[j], offsets[j]:]
            if first:
                for x in range(ow):
                    dst[x] = sj[x] * kj
            else:
                for x in range(ow):
                    dst[x] = dst[x] + sj[x] * kj
            j += 1
        first = False


@njit(**_JIT)
def _smooth(image, k, out, ring, acc):
    n = k.shape[0]
    h = image.shape[0]
    ow = out.shape[1]
    zero = np.float32(0.0)
    hrows = np.zeros(n, dtype=np.int64)
    hoffs = np.arange(n)
    vrows = np.arange(n)
    voffs = np.zeros(n, dtype=np.int64)
    vk = np.empty(n, dtype=np.float32)
    # Computed, not literal, arguments: a literal would compile `_taps` (and its sweeps)
    # once more for each constant.
    start = n - n
    yes = n > 0
    no = n < 0
    for row in range(h):
        # Horizontal pass of input row `row` into ring slot row % n, terms in order i.
        slot = ring[row % n]
        hrows[:] = row
        _taps(slot, image, hrows, hoffs, k, start, n, ow, yes)
        oy = row - (n - 1)
        if oy < 0:
            continue
        # Vertical pass: input rows oy..oy+n-1 accumulated in ring-slot order 0..n-1,
        # from zero as afw's accumulator.
        dst = out[oy]
        for x in range(ow):
            dst[x] = zero
        for s in range(n):
            vk[s] = k[(s - oy) % n]
        _taps(dst, ring, vrows, voffs, vk, start, n, ow, no)


def smooth(image: np.ndarray, kernel: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """See `ampoffset_dask.algorithm.kernels._numpy.smooth`; ``out`` (float32, C-contiguous,
    of the result's shape) receives the result instead of a new array."""
    k = np.asarray(kernel, dtype=np.float32)
    r = k.shape[0] // 2
    h, w = image.shape
    shape = (max(h - 2 * r, 0), max(w - 2 * r, 0))
    _reference.check_smooth_out(out, shape)
    if h - 2 * r <= 0 or w - 2 * r <= 0:
        return np.empty(shape, dtype=np.float32) if out is None else out
    n = k.shape[0]
    # Buffers are allocated here, not in compiled code, so tracemalloc sees them.
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    ring = np.empty((n, w - 2 * r), dtype=np.float32)
    acc = np.empty(w - 2 * r, dtype=np.float32)
    src = np.ascontiguousarray(image, dtype=np.float32)
    if not src.flags.writeable:
        # Its rows and the ring's go through the same helpers: one specialization of them
        # for writable rows (only a read-only input without a background step gets here).
        src = src.copy()
    _smooth(src, k, out, ring, acc)
    return out


# ------------------------------------------------------------------------------------------
# Clipped statistics of a grid of bins (a whole image is one bin): exact quartiles from
# histograms with monotone bins, clip iterations from the values near their bounds (no
# copy of the usable values). Every pass walks the rows of a band of bins across the
# image, so memory is read in order, and one compiled call handles every bin.
# ------------------------------------------------------------------------------------------
_SAMPLE = 512  # values sampled per bin to place its histogram's range
_SAMPLE_ROWS = 16  # rows of a bin the sample is taken from
_N_BINS = 4096  # histogram bins over that range (an L1-sized histogram)
_CHUNK = 512  # bin indices computed (SIMD) per block before they are counted
_RANKS = 6  # order statistics the three quartiles interpolate, at most
_ZONE = 32  # histogram bins copied on either side of a predicted clip bound


@njit(**_JIT)
def _bin_of(v, lo, scale, top):
    """Histogram bin of ``v``: ``(v - lo) * scale`` clamped to ``[0, top]`` (in the values'
    precision; ``lo``, ``scale`` and ``top`` have their type), NaN to 0.

    Rounding is monotone, so ``v1 <= v2`` gives ``bin(v1) <= bin(v2)``: every value of a
    bin is ordered before every value of the next one, whatever ``lo`` and ``scale``.
    """
    zero = top - top
    t = (v - lo) * scale
    t = t if t > zero else zero
    t = t if t < top else top
    return np.uint32(t)


@njit(inline="always", **_JIT)
def _chunk_bins(seg, bseg, use_bad, m, lo, scale, top, spare, idx):
    """``idx[j]``: the bin of ``seg[j]``, or ``spare`` when it is not finite or flagged in
    ``bseg`` (branch-free, so the loop vectorises)."""
    for j in range(m):
        v = seg[j]
        skip = not ((v - v) == 0)  # non-finite
        if use_bad:
            skip = skip | (bseg[j] != 0)
        idx[j] = spare if skip else _bin_of(v, lo, scale, top)


@njit(**_JIT)
def _sample(flat, v0, vstride, bad, b0, bstride, use_bad, h, w, out):
    """Up to ``len(out)`` usable values of the ``h`` by ``w`` bin starting at ``flat[v0]``
    (``bad[b0]``), taken along ``_SAMPLE_ROWS`` evenly spaced rows (a few cache lines each,
    read in order); returns how many."""
    rows = min(h, _SAMPLE_ROWS)
    if rows == 0:
        return 0
    per_row = out.shape[0] // rows
    xstep = max(1, -(-w // per_row))
    n = 0
    for r in range(rows):
        y = (2 * r + 1) * h // (2 * rows)
        for x in range(0, w, xstep):
            v = flat[v0 + y * vstride + x]
            if math.isfinite(v) and not (use_bad and bad[b0 + y * bstride + x]):
                out[n] = v
                n += 1
    return n


@njit(**_JIT)
def _bin_range(sample, ns, n_bins, biggest, typed):
    """``typed[0], typed[1]`` = the histogram's origin and scale (bins per unit) for a bin
    whose sample is ``sample[:ns]``: the sample's 20-80 % range widened to five times its
    width, about -4 to +4 sigma of normal data, so the clip bounds (about 3 sigma) fall
    inside (any choice is exact; a poor one only makes the copied bins larger or the clip
    iterations fall back to passes over the pixels)."""
    lo = 0.0
    span = 0.0
    if ns:
        k1 = np.int64(0.2 * (ns - 1))
        q1 = np.float64(_select(sample, np.int64(0), np.int64(ns), k1))
        q3 = np.float64(_select(sample, k1, np.int64(ns), np.int64(0.8 * (ns - 1))))
        width = q3 - q1
        lo = q1 - 2.0 * width
        span = 5.0 * width
    scale = n_bins / span if (0.0 < span and span < math.inf) else 1.0
    if not (abs(lo) < biggest and scale < biggest):
        lo = 0.0
        scale = 1.0
    typed[0] = lo
    typed[1] = scale


@njit(inline="always", **_JIT)
def _count_row(flat, v0, bad, b0, use_bad, w, lo, scale, top, spare, hist, idx):
    """Add the ``w`` values from ``flat[v0]`` to ``hist`` (`_bin_of`; the last bin counts
    the unusable ones), a SIMD chunk of bin indices at a time."""
    for x0 in range(0, w, _CHUNK):
        m = min(_CHUNK, w - x0)
        seg = flat[v0 + x0:v0 + x0 + m]
        bseg = bad[b0 + x0:b0 + x0 + m] if use_bad else bad[:0]
        _chunk_bins(seg, bseg, use_bad, m, lo, scale, top, spare, idx)
        for k in range(m):
            hist[idx[k]] += 1


@njit(**_JIT)
def _count_band(flat, vstride, bad, bstride, use_bad, xo, xe, ya, yb, los, scales, top, spare,
                hist, idx):
    """The first pass of `_band_stats`: the histograms of the band's bins (`_count_row`;
    compiled apart from `_band_stats`, whose size made its tight loops slower)."""
    hist[:xo.shape[0]] = 0
    for y in range(ya, yb):
        for i in range(xo.shape[0]):
            b0 = y * bstride + xo[i] if use_bad else 0
            _count_row(flat, y * vstride + xo[i], bad, b0, use_bad, xe[i] - xo[i], los[i],
                       scales[i], top, spare, hist[i], idx)


@njit(cache=_JIT["cache"], nogil=True, error_model="numpy", fastmath={"reassoc"})
def _row_clip_sums(seg, bseg, use_bad, center, half):
    """Count, sum and sum of squares of ``v - center`` over ``|v - center| <= half``.

    Only here may the compiler reassociate (``fastmath={"reassoc"}``), so the sums are
    vectorised in an order it chooses: the kept set and every term are exact, the sums
    may differ from the reference in their last bits. Non-finite values are never kept
    (``half`` is at most the largest double).
    """
    a = 0.0
    b = 0.0
    k = 0
    if use_bad:
        for x in range(seg.shape[0]):
            d = np.float64(seg[x]) - center
            keep = (abs(d) <= half) & ~bseg[x]
            e = d if keep else 0.0
            a += e
            b += e * e
            k += 1 if keep else 0
    else:
        for x in range(seg.shape[0]):
            d = np.float64(seg[x]) - center
            keep = abs(d) <= half
            e = d if keep else 0.0
            a += e
            b += e * e
            k += 1 if keep else 0
    return k, a, b


@njit(**_JIT)
def _quartile_ranks(n, ranks):
    """The distinct ascending ranks `_quartiles` interpolates (as
    `ampoffset_dask.algorithm.stats.quantiles_selected`) into ``ranks``; returns how many."""
    # In ascending order: the lower quartile's two ranks, the median's, the upper's.
    nr = 0
    for p in range(3):
        i = (0.25 + 0.25 * p) * (n - 1)
        for c in (min(int(i), n - 1), min(int(i) + 1, n - 1)):
            if nr == 0 or ranks[nr - 1] < c:
                ranks[nr] = c
                nr += 1
    return nr


@njit(**_JIT)
def _quantile(ranks, values, nr, i):
    """afw's interpolated quantile at fractional rank ``i`` from the rank values."""
    lo = int(i)
    hi = lo + 1
    vlo = math.nan
    vhi = math.nan
    for r in range(nr):
        if ranks[r] == lo:
            vlo = values[r]
        if ranks[r] == hi:
            vhi = values[r]
    return (hi - i) * vlo + (i - lo) * vhi


@njit(cache=_JIT["cache"], nogil=True, error_model="numpy", fastmath={"reassoc"})
def _core_sums(seg, idx, m, above, below, ref):
    """Sum and sum of squares of ``v - ref`` over the values of ``seg[:m]`` whose histogram
    bin ``idx`` is strictly between ``above`` and ``below`` (SIMD; only the sums' order is
    the compiler's, as in `_row_clip_sums`; their count comes from the histogram)."""
    a = 0.0
    b = 0.0
    for j in range(m):
        t = idx[j]
        keep = (t > above) & (t < below)
        d = np.float64(seg[j]) - ref
        e = d if keep else 0.0
        a += e
        b += e * e
    return a, b


@njit(inline="always", **_JIT)
def _split_row(flat, v0, bad, b0, use_bad, w, lo, scale, top, spare, slot_of_bin, pos, out,
               idx, l1, u0, ref, core):
    """One row of a bin in the second pass: copy the values of the wanted histogram bins
    (``slot_of_bin``: segment + 1, 0 when not wanted) to ``out[pos[segment]]``, advancing
    ``pos``, and add the core's sums about ``ref`` (bins strictly between ``l1`` and
    ``u0``) to ``core[1:]``."""
    for x0 in range(0, w, _CHUNK):
        m = min(_CHUNK, w - x0)
        seg = flat[v0 + x0:v0 + x0 + m]
        bseg = bad[b0 + x0:b0 + x0 + m] if use_bad else bad[:0]
        _chunk_bins(seg, bseg, use_bad, m, lo, scale, top, spare, idx)
        a, b = _core_sums(seg, idx, m, l1, u0, ref)
        core[1] += a
        core[2] += b
        for j in range(m):
            s = slot_of_bin[idx[j]]
            if s:
                out[pos[s - 1]] = seg[j]
                pos[s - 1] += 1


@njit(**_JIT)
def _bin_pass(flat, vstride, bad, bstride, use_bad, x0, w, ya, yb, center, half):
    """`_row_clip_sums` over rows ``ya..yb-1`` of one bin: the clip pass of the contract."""
    c = 0
    t1 = 0.0
    t2 = 0.0
    for y in range(ya, yb):
        v0 = y * vstride + x0
        b0 = y * bstride + x0 if use_bad else 0
        k, a, b = _row_clip_sums(flat[v0:v0 + w], bad[b0:b0 + w] if use_bad else bad[:0],
                                 use_bad, center, half)
        c += k
        t1 += a
        t2 += b
    return c, t1, t2


@njit(**_JIT)
def _split_band(flat, vstride, bad, bstride, use_bad, xo, xe, ya, yb, los, scales, top, spare,
                counts, slot_of_bin, pos, out, idx, zones, refs, core):
    """The second pass of `_band_stats`: `_split_row` over every row of the band's bins
    (compiled apart from `_band_stats`, whose size made its tight loops slower)."""
    for y in range(ya, yb):
        for i in range(xo.shape[0]):
            if counts[i]:
                b0 = y * bstride + xo[i] if use_bad else 0
                _split_row(flat, y * vstride + xo[i], bad, b0, use_bad, xe[i] - xo[i],
                           los[i], scales[i], top, spare, slot_of_bin[i], pos[i], out, idx,
                           zones[i, 1], zones[i, 2], refs[i], core[i])


@njit(**_JIT)
def _clip_update(it, n, median, iqr, mean, var, n_sigma, iq_to_stdev):
    """Centre and half width of clip iteration ``it`` (ALGORITHM.md 2.3; NaN: none)."""
    if var < 0:
        var = 0.0
    c = median if it == 0 else mean
    if it == 0 or n <= 1:
        hw = (n_sigma * iq_to_stdev) * iqr
    else:
        hw = n_sigma * math.sqrt(var) if var >= 0 else math.nan
    if math.isnan(c) or math.isnan(hw):
        return math.nan, math.nan
    return c, min(hw, 1.7976931348623157e308)


@njit(**_JIT)
def _clip_result(m, s1, s2, center):
    """Mean and unbiased variance of a clip iteration from its count and centred sums."""
    if m == 0:
        return math.nan, math.nan
    mean_d = s1 / m
    var = (s2 / m - mean_d**2) * (m * m / (m * m - m)) if m > 1 else math.nan
    return mean_d + center, var


@njit(**_JIT)
def _predict_zones(hist, n_bins, lo, scale, n, ranks, rank_bins, nr, n_sigma, n_iter,
                   iq_to_stdev, zone):
    """Histogram bins ``(l0, l1, u0, u1, ref)`` around the clip bounds of every iteration,
    predicted from the counts with each value at its bin's centre (``l0 > l1``: no
    prediction). ``ref`` is the predicted median."""
    vals = np.empty(_RANKS)
    for r in range(nr):
        vals[r] = lo + (rank_bins[r] + 0.5) / scale
    if n == 1:
        median = q1 = q3 = vals[0]
    else:
        median = _quantile(ranks, vals, nr, 0.5 * (n - 1))
        q1 = _quantile(ranks, vals, nr, 0.25 * (n - 1))
        q3 = _quantile(ranks, vals, nr, 0.75 * (n - 1))
    mean = math.nan
    var = math.nan
    l0 = n_bins
    l1 = -1
    u0 = n_bins
    u1 = -1
    last = n_bins - 1
    for it in range(n_iter):
        c, hw = _clip_update(it, n, median, q3 - q1, mean, var, n_sigma, iq_to_stdev)
        if math.isnan(c):
            mean = math.nan
            var = math.nan
            continue
        t = (c - hw - lo) * scale
        blo = 0 if not t > 0 else (last if t >= last else int(t))
        t = (c + hw - lo) * scale
        bhi = 0 if not t > 0 else (last if t >= last else int(t))
        l0 = min(l0, blo)
        l1 = max(l1, blo)
        u0 = min(u0, bhi)
        u1 = max(u1, bhi)
        m = 0
        s1 = 0.0
        s2 = 0.0
        for b in range(blo, bhi + 1):
            k = np.int64(hist[b])
            x = lo + (b + 0.5) / scale - c
            m += k
            s1 += k * x
            s2 += k * x * x
        mean, var = _clip_result(m, s1, s2, c)
    if l1 < 0:
        return n_bins, -1, n_bins, -1, median
    l0 = max(l0 - zone, 0)
    l1 = min(l1 + zone, last)
    u0 = max(u0 - zone, 0)
    u1 = min(u1 + zone, last)
    if l1 + 1 >= u0:  # the zones meet: one zone, no core
        return l0, u1, u1 + 1, u1, median
    return l0, l1, u0, u1, median


@njit(**_JIT)
def _band_stats(flat, vstride, bad, bstride, use_bad, xo, xe, ya, yb, n_sigma, n_iter,
                iq_to_stdev, biggest, zone, hist, counts, quartiles, means, variances,
                passes):
    """Usable count, quartiles and clipped mean and variance of each bin of rows
    ``ya..yb-1``, in two passes over the band's rows.

    The first pass builds every bin's histogram (bins monotone in the value). From the
    counts alone the clip bounds of each iteration are predicted to a histogram bin, and
    the second pass copies the values of the histogram bins holding the quartiles' order
    statistics and of two zones of bins around the predicted bounds, while summing the
    core between the zones. Each clip iteration then needs only the zones' values: the
    clip keeps an interval of values, so the core is wholly kept when its extreme values
    are, and nothing beyond the zones is kept when their nearest values are not (checked
    exactly on copied values). Where a check fails, the iteration is a plain pass over
    the bin's pixels (counted in ``passes``); the kept set is the contract's either way.
    """
    nx = xo.shape[0]
    n_bins = hist.shape[1] - 1
    last = n_bins - 1
    spare = np.uint32(n_bins)
    h = yb - ya
    typed = np.empty(3, dtype=flat.dtype)
    typed[2] = last
    top = typed[2]  # bins 0..n_bins-1 for usable values, n_bins for the others
    los = np.empty(nx, dtype=flat.dtype)
    scales = np.empty(nx, dtype=flat.dtype)
    sample = np.empty(_SAMPLE, dtype=flat.dtype)
    idx = np.empty(_CHUNK, dtype=np.uint32)
    for i in range(nx):
        b0 = ya * bstride + xo[i] if use_bad else 0
        ns = _sample(flat, ya * vstride + xo[i], vstride, bad, b0, bstride, use_bad, h,
                     xe[i] - xo[i], sample)
        _bin_range(sample, ns, n_bins, biggest, typed)
        los[i] = typed[0]
        scales[i] = typed[1]
    _count_band(flat, vstride, bad, bstride, use_bad, xo, xe, ya, yb, los, scales, top,
                spare, hist, idx)
    # What the second pass copies: slot 1 the lower zone, 2 the upper zone (when there
    # are zones), then single histogram bins: those of the wanted ranks and the nearest
    # non-empty ones beyond the zones and inside the core.
    ranks = np.empty((nx, _RANKS), dtype=np.int64)
    rank_bins = np.empty(_RANKS, dtype=np.int64)
    n_ranks = np.zeros(nx, dtype=np.int64)
    zones = np.empty((nx, 4), dtype=np.int64)  # l0, l1, u0, u1
    extremes = np.full((nx, 4), -1, dtype=np.int64)  # below, core first, core last, above
    refs = np.zeros(nx)
    n_slots = np.zeros(nx, dtype=np.int64)
    starts = np.empty((nx, 16), dtype=np.int64)
    first_bin = np.empty((nx, 16), dtype=np.int64)  # each slot's lowest histogram bin
    slot_of_bin = np.zeros((nx, n_bins + 1), dtype=np.uint8)
    cum = np.empty(n_bins + 1, dtype=np.int64)
    core = np.zeros((nx, 3))  # the core's count (from the histogram), sums about refs
    total = 0
    for i in range(nx):
        hi_ = hist[i]
        n = h * (xe[i] - xo[i]) - np.int64(hi_[n_bins])
        counts[i] = n
        zones[i, 0] = n_bins
        zones[i, 1] = -1
        zones[i, 2] = n_bins
        zones[i, 3] = -1
        if n == 0:
            continue
        nr = _quartile_ranks(n, ranks[i])
        n_ranks[i] = nr
        cum[0] = 0
        for b in range(n_bins):
            cum[b + 1] = cum[b] + np.int64(hi_[b])
        r = 0
        for b in range(n_bins):
            while r < nr and ranks[i, r] < cum[b + 1]:
                rank_bins[r] = b
                r += 1
        lo_d = np.float64(los[i])
        sc_d = np.float64(scales[i])
        l0, l1, u0, u1, ref = _predict_zones(hi_, n_bins, lo_d, sc_d, n, ranks[i], rank_bins,
                                             nr, n_sigma, n_iter, iq_to_stdev, zone)
        refs[i] = ref
        slots = 0
        if l0 <= l1:
            zones[i, 0] = l0
            zones[i, 1] = l1
            zones[i, 2] = u0
            zones[i, 3] = u1
            for lo_, hi2 in ((l0, l1), (u0, u1)):
                if lo_ > hi2:
                    continue
                starts[i, slots] = total
                first_bin[i, slots] = lo_
                slots += 1
                for b in range(lo_, hi2 + 1):
                    slot_of_bin[i, b] = slots
                total += cum[hi2 + 1] - cum[lo_]
            for b in range(l0 - 1, -1, -1):  # the highest non-empty bin below the zones
                if hi_[b]:
                    extremes[i, 0] = b
                    break
            for b in range(l1 + 1, u0):  # the core's first and last non-empty bins
                if hi_[b]:
                    extremes[i, 1] = b
                    break
            for b in range(u0 - 1, l1, -1):
                if hi_[b]:
                    extremes[i, 2] = b
                    break
            for b in range(u1 + 1, n_bins):  # the lowest non-empty bin above the zones
                if hi_[b]:
                    extremes[i, 3] = b
                    break
        for k in range(nr + 4):
            b = rank_bins[k] if k < nr else extremes[i, k - nr]
            if b >= 0 and slot_of_bin[i, b] == 0:
                starts[i, slots] = total
                first_bin[i, slots] = b
                slots += 1
                slot_of_bin[i, b] = slots
                total += np.int64(hi_[b])
        n_slots[i] = slots
        core[i, 0] = cum[zones[i, 2]] - cum[zones[i, 1] + 1]
        for r in range(nr):
            ranks[i, r] -= cum[first_bin[i, slot_of_bin[i, rank_bins[r]] - 1]]  # in slot
            rank_bins[r] = slot_of_bin[i, rank_bins[r]] - 1
        for r in range(nr):  # ranks[i, r] now: (slot << 40) | rank inside the slot
            ranks[i, r] = (rank_bins[r] << 40) | ranks[i, r]
    out = np.empty(total, dtype=flat.dtype)
    pos = starts.copy()
    _split_band(flat, vstride, bad, bstride, use_bad, xo, xe, ya, yb, los, scales, top, spare,
                counts, slot_of_bin, pos, out, idx, zones, refs, core)
    values = np.empty(_RANKS, dtype=np.float64)
    exact = np.empty(_RANKS, dtype=np.int64)
    for i in range(nx):
        n = counts[i]
        nr = n_ranks[i]
        if n == 0:
            quartiles[i, 0] = math.nan
            quartiles[i, 1] = math.nan
            quartiles[i, 2] = math.nan
            means[i] = math.nan
            variances[i] = math.nan
            continue
        # Ascending ranks: within a slot each selection leaves the values above its rank
        # after it, so the next one searches only those.
        last_slot = -1
        below = 0
        for r in range(nr):
            s = ranks[i, r] >> 40
            k = starts[i, s] + (ranks[i, r] & ((1 << 40) - 1))
            if s != last_slot:
                below = starts[i, s]
                last_slot = s
            values[r] = np.float64(_select(out, below, pos[i, s], k))
            below = k
        _quartile_ranks(n, exact)
        if n == 1:
            median = q1 = q3 = values[0]
        else:
            median = _quantile(exact, values, nr, 0.5 * (n - 1))
            q1 = _quantile(exact, values, nr, 0.25 * (n - 1))
            q3 = _quantile(exact, values, nr, 0.75 * (n - 1))
        quartiles[i, 0] = median
        quartiles[i, 1] = q1
        quartiles[i, 2] = q3
        l1 = zones[i, 1]
        u0 = zones[i, 2]
        # The extreme copied values of the regions beside the zones.
        ext = np.full(4, math.nan)
        for e in range(4):
            b = extremes[i, e]
            if b >= 0:
                s = slot_of_bin[i, b] - 1
                seg = out[starts[i, s]:pos[i, s]]
                want_max = e == 0 or e == 2
                x = np.float64(seg[0])
                for v in seg:
                    fv = np.float64(v)
                    x = max(x, fv) if want_max else min(x, fv)
                ext[e] = x
        has_zones = zones[i, 0] <= l1
        n_zone_slots = 0
        if has_zones:
            n_zone_slots = 1 if u0 > zones[i, 3] else 2
        mean = math.nan
        var = math.nan
        passes[i] = 0
        for it in range(n_iter):
            c, hw = _clip_update(it, n, median, q3 - q1, mean, var, n_sigma, iq_to_stdev)
            if math.isnan(c):
                mean = math.nan
                var = math.nan
                continue
            ok = has_zones
            if ok and extremes[i, 1] >= 0:  # the core: wholly kept?
                ok = abs(ext[1] - c) <= hw and abs(ext[2] - c) <= hw
            if ok and extremes[i, 0] >= 0:  # below the lower zone: nothing kept?
                ok = ext[0] < c and not abs(ext[0] - c) <= hw
            if ok and extremes[i, 3] >= 0:  # above the upper zone: nothing kept?
                ok = ext[3] > c and not abs(ext[3] - c) <= hw
            if ok:
                m = 0
                s1 = 0.0
                s2 = 0.0
                if extremes[i, 1] >= 0:
                    m = np.int64(core[i, 0])
                    delta = c - refs[i]
                    s1 = core[i, 1] - m * delta
                    s2 = core[i, 2] - 2.0 * delta * core[i, 1] + m * delta * delta
                for s in range(n_zone_slots):
                    zone = out[starts[i, s]:pos[i, s]]
                    for z0 in range(0, zone.shape[0], _CHUNK):
                        k, a, b = _row_clip_sums(zone[z0:z0 + _CHUNK], bad[:0], n < 0, c,
                                                 hw)  # (n < 0: no literal specialisation)
                        m += k
                        s1 += a
                        s2 += b
            else:
                m, s1, s2 = _bin_pass(flat, vstride, bad, bstride, use_bad, xo[i],
                                      xe[i] - xo[i], ya, yb, c, hw)
                passes[i] += 1
            mean, var = _clip_result(m, s1, s2, c)
        means[i] = mean
        variances[i] = var


def _flat_rows(a: np.ndarray) -> tuple[np.ndarray, int] | None:
    """A 2-D array with unit inner stride as a read-only 1-D view (`_read_only`) from its
    first to its last element (inside the parent's memory) and its row stride in elements;
    None for other layouts (callers copy those), rows running backwards (``a[::-1]``,
    `numpy.flipud`) included: the kernels step forwards through memory."""
    h, w = a.shape
    it = a.itemsize
    if h == 0 or w == 0:
        return _read_only(a.reshape(-1)), w
    if (h > 1 and (a.strides[0] < 0 or a.strides[0] % it)) or (w > 1 and a.strides[1] != it):
        return None
    stride = a.strides[0] // it if h > 1 else w
    return np.lib.stride_tricks.as_strided(a, shape=((h - 1) * stride + w,), strides=(it,),
                                           writeable=False), stride


_NO_BAD = np.zeros(1, dtype=np.bool_)
_NO_BAD.flags.writeable = False  # the type of the flags `_flat_rows` gives


def binned_clipped_mean_var(
    values: np.ndarray, bad: np.ndarray | None, x_edges, y_edges, n_sigma: float = 3.0,
    n_iter: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """See `ampoffset_dask.algorithm.kernels._numpy.binned_clipped_mean_var`.

    One compiled call per band of bins (`_band_stats`), read in place, two passes over its
    pixels: histograms, then the few histogram bins holding the quartiles'
    order statistics and the values near the predicted clip bounds, with the sums between
    them. The order statistics and the kept sets are exact; only the sums' order differs.
    """
    return _binned(values, bad, x_edges, y_edges, n_sigma, n_iter)[:3]


def _binned(values, bad, x_edges, y_edges, n_sigma=3.0, n_iter=3, zone=_ZONE):
    """`binned_clipped_mean_var` and the number of clip iterations per bin that needed a
    pass over the pixels (the prediction of its bounds missed; ``zone`` is the number of
    histogram bins copied beside each predicted bound)."""
    values = _native(values)
    xe = np.asarray(x_edges, dtype=np.int64)
    ye = np.asarray(y_edges, dtype=np.int64)
    if values.dtype != np.float32:
        # Compiled for the float32 pixels `measure_detector` gives it; any other dtype takes
        # the reference (the same kept sets; its sums are the reference's): compiling the
        # statistics for float64 too would cost every installation ~10 s more.
        means, variances, counts = _reference.binned_clipped_mean_var(
            values, bad, xe, ye, n_sigma, n_iter)
        return means, variances, counts, np.zeros(counts.shape, dtype=np.int64)
    fv = _flat_rows(values)
    if fv is None:
        values = np.ascontiguousarray(values)
        fv = _flat_rows(values)
    use_bad = bad is not None
    fb = (_NO_BAD, 0)
    if use_bad:
        flags = np.asarray(bad, dtype=bool)
        fb = _flat_rows(flags)
        if fb is None:
            fb = _flat_rows(np.ascontiguousarray(flags))
    nx, ny = xe.shape[0] - 1, ye.shape[0] - 1
    means = np.empty((ny, nx))
    variances = np.empty((ny, nx))
    counts = np.zeros((ny, nx), dtype=np.int64)
    passes = np.zeros((ny, nx), dtype=np.int64)
    if nx <= 0 or ny <= 0:
        return means, variances, counts, passes
    hist = np.empty((nx, _N_BINS + 1), dtype=_hist_dtype(values))
    # One compiled call per band of bins: a compiled loop over the bands would cost
    # another ~2 s of compilation (its module re-optimises `_band_stats`) for ~0.1 ms.
    xo, xe1 = xe[:-1].copy(), xe[1:].copy()
    quartiles = np.empty((nx, 3))
    biggest = float(np.finfo(values.dtype).max)
    for j in range(ny):
        _band_stats(fv[0], fv[1], fb[0], fb[1], use_bad, xo, xe1, int(ye[j]), int(ye[j + 1]),
                    float(n_sigma), int(n_iter), IQ_TO_STDEV, biggest, int(zone), hist,
                    counts[j], quartiles, means[j], variances[j], passes[j])
    return means, variances, counts, passes


def _hist_dtype(values: np.ndarray) -> type:
    """Histogram counts: int32 (half the memory traffic) unless a bin could overflow it."""
    return np.int32 if values.size < 2**31 else np.int64


def _quartiles(values: np.ndarray, bad: np.ndarray | None) -> tuple[int, float, float, float]:
    """Usable count, median, q1 and q3 of a 2-D float32 array from `_band_stats` (one bin;
    the types `_binned` passes it)."""
    values = _native(values)
    if values.dtype != np.float32:
        raise TypeError(f"the compiled statistics take float32 values, not {values.dtype}")
    fv = _flat_rows(values) or _flat_rows(np.ascontiguousarray(values))
    fb = (_NO_BAD, 0) if bad is None else (_flat_rows(np.asarray(bad, dtype=bool))
                                           or _flat_rows(np.ascontiguousarray(bad, dtype=bool)))
    h, w = values.shape
    counts = np.zeros(1, dtype=np.int64)
    stats = np.empty((1, 3))
    _band_stats(fv[0], fv[1], fb[0], fb[1], bad is not None, np.zeros(1, np.int64),
                np.full(1, w, np.int64), 0, h, 3.0, 0, 1.0, float(np.finfo(values.dtype).max),
                _ZONE, np.empty((1, _N_BINS + 1), dtype=_hist_dtype(values)), counts, stats,
                np.empty(1), np.empty(1), np.zeros(1, dtype=np.int64))
    return int(counts[0]), *(float(v) for v in stats[0])


def usable_clipped_mean_var(
    values: np.ndarray, bad: np.ndarray | None, n_sigma: float = 3.0, n_iter: int = 3
) -> tuple[float, float, int]:
    """See `ampoffset_dask.algorithm.kernels._numpy.usable_clipped_mean_var`.

    `binned_clipped_mean_var` with one bin: the values are read in place.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        values = values.reshape(1, -1)
        bad = None if bad is None else np.asarray(bad).reshape(1, -1)
    h, w = values.shape
    mean, var, n = binned_clipped_mean_var(values, bad, (0, w), (0, h), n_sigma, n_iter)
    return float(mean[0, 0]), float(var[0, 0]), int(n[0, 0])


# ------------------------------------------------------------------------------------------
# Background model: GSL piecewise cubic evaluated per pixel and subtracted in float32
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _subtract_piecewise(image, dest, y, b, c, d, t, seg_start, seg_stop, lo, hi,
                        dxl, d1l, d2l, dxr, d1r, d2r):
    rows, w = image.shape
    nl = y.shape[1] - 1
    for r in range(rows):
        img = image[r]
        res = dest[r]
        for x in range(lo):
            dx = dxl[x]
            v = y[r, 0] + dx * d1l[r] + 0.5 * dx * dx * d2l[r]
            res[x] = img[x] - np.float32(v)
        # One interval at a time: constant coefficients over contiguous columns.
        for i in range(seg_start.shape[0]):
            bi = b[r, i]
            ci = c[r, i]
            di = d[r, i]
            yi = y[r, i]
            # Slices, not offsets: the compiler then vectorises across columns.
            seg = img[seg_start[i]:seg_stop[i]]
            out = res[seg_start[i]:seg_stop[i]]
            ts = t[seg_start[i] - lo:seg_stop[i] - lo]
            for j in range(seg.shape[0]):
                tt = ts[j]
                v = di * tt
                v = v + ci
                v = v * tt
                v = v + bi
                v = v * tt
                v = v + yi
                out[j] = seg[j] - np.float32(v)
        for x in range(hi, w):
            dx = dxr[x - hi]
            v = y[r, nl] + dx * d1r[r] + 0.5 * dx * dx * d2r[r]
            res[x] = img[x] - np.float32(v)


def subtract_model_rows(image: np.ndarray, style: str, knots: np.ndarray,
                        values: np.ndarray, out: np.ndarray | None = None) -> None:
    """See `ampoffset_dask.algorithm.kernels._numpy.subtract_model_rows`."""
    dest = image if out is None else out
    finite = np.isfinite(values).all()
    if (style == "CONSTANT" or not finite or not image.flags.c_contiguous
            or not dest.flags.c_contiguous or image.dtype != np.float32
            or dest.dtype != np.float32):
        _reference.subtract_model_rows(image, style, knots, values, out=out)
        return
    p = piecewise(style, knots, values, np.arange(image.shape[1], dtype=np.float64))
    _subtract_piecewise(_read_only(image), dest, p.y, np.ascontiguousarray(p.b),
                        np.ascontiguousarray(p.c), np.ascontiguousarray(p.d), p.t,
                        p.starts.astype(np.int64), p.stops.astype(np.int64), p.lo, p.hi, p.dx_left,
                        np.ascontiguousarray(p.d1_left[:, 0]), p.d2_left[:, 0],
                        p.dx_right, p.d1_right[:, 0], p.d2_right[:, 0])


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
_NO_MASK.flags.writeable = False  # the type of the masks `_read_only` gives


def _native(a: np.ndarray) -> np.ndarray:
    """``a`` in native byte order (FITS data is big-endian; numba needs native)."""
    a = np.asarray(a)
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


@njit(**_JIT)
def _prepare(image, mask, bits, det_bits, stats_bits, use_stats, copy, img, bad, stats):
    """One pass: ``img`` = ``image`` (without ``copy``, every row goes to the scratch row
    ``img[0]``), ``bad``, ``stats`` (the mask has ``stats_bits``; without ``use_stats`` every
    row goes to the scratch row ``stats[0]``), and the OR of the mask's ``det_bits`` and
    ``stats_bits`` (branch-free per row: SIMD)."""
    h, w = image.shape
    zero = bits ^ bits  # the mask's integer type
    seen_det = zero
    seen_stats = zero
    for y in range(h):
        src = image[y]
        dst = img[y] if copy else img[0]
        out = bad[y]
        mrow = mask[y]
        srow = stats[y] if use_stats else stats[0]
        od = zero
        os_ = zero
        for x in range(w):
            v = src[x]
            dst[x] = v
            mv = mrow[x]
            out[x] = (not ((v - v) == 0)) | ((mv & bits) != 0)
            hit = mv & stats_bits
            srow[x] = hit != 0
            od |= mv & det_bits
            os_ |= hit
        seen_det |= od
        seen_stats |= os_
    return seen_det != 0, seen_stats != 0


def prepare_pixels(image, mask: np.ndarray | None, bits: int, det_bits: int,
                   stats_bits: int, copy: bool = True, *, bad_out: np.ndarray | None = None,
                   stats_out: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray | None]:
    """See `ampoffset_dask.algorithm.kernels._numpy.prepare_pixels`."""
    if mask is None:  # no mask words to read: the reference's two passes
        return _reference.prepare_pixels(image, None, bits, det_bits, stats_bits, copy,
                                         bad_out=bad_out, stats_out=stats_out)
    src = image if isinstance(image, np.ndarray) and image.ndim == 2 else np.asarray(image)
    if src.dtype != np.float32 or not src.dtype.isnative or not src.flags.c_contiguous:
        # One layout compiled; the converted copy is ours and already the result.
        src = np.array(src, dtype=np.float32, copy=True, order="C")
        copy = False
    img = np.empty(src.shape if copy else (1, src.shape[1]), dtype=np.float32)
    bad = _reference.out_buffer(bad_out, src.shape, bool, "prepare_pixels")
    m = np.ascontiguousarray(_native(mask))
    use_stats = stats_bits != 0
    stats = (_reference.out_buffer(stats_out, src.shape, bool, "prepare_pixels") if use_stats
             else np.empty((1, src.shape[1]), dtype=bool))
    t = m.dtype.type
    any_det, any_stats = _prepare(_read_only(src), _read_only(m), t(bits), t(det_bits),
                                  t(stats_bits), use_stats, copy, img, bad, stats)
    return img if copy else src, bad, bool(any_det), stats if any_stats else None


def bad_pixels(image: np.ndarray, mask: np.ndarray | None, bits: int, *,
               out: np.ndarray | None = None) -> np.ndarray:
    """See `ampoffset_dask.algorithm.kernels._numpy.bad_pixels`."""
    out = _reference.out_buffer(out, image.shape, bool, "bad_pixels")
    use_mask = mask is not None
    m = _native(mask) if use_mask else _NO_MASK
    _bad_pixels(_read_only(_native(image)), _read_only(m), m.dtype.type(bits), use_mask, out)
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
def _any_set(row, x, m):
    """Whether any of ``row[x:x + m]`` (bytes) is set: a maximum, which the compiler
    vectorises ~2x faster than an OR here."""
    seg = row[x:x + m]
    acc = np.uint8(0)
    for j in range(seg.shape[0]):
        v = seg[j]
        acc = v if v > acc else acc
    return acc != 0


@njit(**_JIT)
def _next_run(row, x):
    """``(start, stop)`` of the first run of set values in ``row[x:]`` (``start == len(row)``
    when there is none). Clear stretches are skipped 64 values at a time (masks are
    sparse)."""
    w = row.shape[0]
    while x < w and not row[x]:
        x += 1
        if (x & 63) == 0:
            while x + 64 <= w and not _any_set(row, x, 64):
                x += 64
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
        if not _any_set(row, 0, w):  # one long SIMD reduction per clear row
            continue
        x = 0
        while True:
            start, x = _next_run(row, np.int64(x))
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


def dilate_box(bad: np.ndarray, r: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """See `ampoffset_dask.algorithm.kernels._numpy.dilate_box`."""
    size = 2 * r + 1
    h, w = bad.shape
    out = _reference.out_buffer(out, (max(h - size + 1, 0), max(w - size + 1, 0)), bool,
                                "dilate_box")
    out.fill(False)
    if out.size:
        # As bytes: the compiler vectorises the OR of bytes, not of booleans.
        _dilate_runs(np.ascontiguousarray(bad, dtype=bool).view(np.uint8), size, out)
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
        if not _any_set(row, 0, w):
            continue
        x = 0
        while True:
            start, x = _next_run(row, np.int64(x))
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
    halves = _reference.footprint_halves(radius, isotropic)
    out = np.zeros(seeds.shape, dtype=bool)
    _grow(np.ascontiguousarray(seeds, dtype=bool).view(np.uint8), halves, out)
    return out


# ------------------------------------------------------------------------------------------
# Detection seeds: threshold, count and mark in one pass
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _threshold_seeds(smoothed, hi, lo, positive, negative, mark_positive, mark_negative, r,
                     seeds):
    """Branch-free per row (SIMD): every seed of the good box is written, True or not."""
    oh, ow = smoothed.shape
    n = 0
    any_seed = False
    for y in range(oh):
        src = smoothed[y]
        dst = seeds[y + r, r:r + ow]
        k = 0
        hit = False
        for x in range(ow):
            v = src[x]
            p = (v >= hi) & positive
            q = (v <= lo) & negative
            k += np.int64(p) + np.int64(q)
            mark = (p & mark_positive) | (q & mark_negative)
            dst[x] = mark
            hit |= mark
        n += k
        any_seed |= hit
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


#: The reference's building blocks of `grow_detections` (the two modules expose the same
#: functions); the compiled `grow_detections` does not use them.
count_detected = _reference.count_detected
grow_detected = _reference.grow_detected

_SEED_CHUNK = 64  # columns of the smoothed image per flag of the map of seeds


@njit(inline="always", **_JIT)
def _is_seed(v, hi, lo, positive, negative):
    """Whether smoothed value ``v`` is a seed of the polarities asked for."""
    return ((v >= hi) & positive) | ((v <= lo) & negative)


@njit(**_JIT)
def _count_seeds(smoothed, hi, lo, positive, negative, mark_positive, mark_negative, chunks):
    """`_threshold_seeds`'s count and whether a seed exists, and ``chunks[y, c]``: whether
    ``smoothed[y, 64c:64c + 64]`` holds a seed (no full-size mask written).

    Each chunk counts the values at or above ``hi`` and at or below ``lo`` apart: two
    integer sums of comparisons, which the compiler vectorises (a test per value of the
    polarities asked for did not).
    """
    oh, ow = smoothed.shape
    n = 0
    any_seed = False
    for y in range(oh):
        src = smoothed[y]
        flags = chunks[y]
        for c in range(flags.shape[0]):
            seg = src[c * _SEED_CHUNK:min(ow, (c + 1) * _SEED_CHUNK)]
            above = np.int32(0)
            below = np.int32(0)
            for x in range(seg.shape[0]):
                v = seg[x]
                above += np.int32(v >= hi)
                below += np.int32(v <= lo)
            above = above if positive else 0
            below = below if negative else 0
            n += above + below
            hit = (above > 0 and mark_positive) or (below > 0 and mark_negative)
            flags[c] = hit
            any_seed |= hit
    return n, any_seed


@njit(**_JIT)
def _grow_region(smoothed, hi, lo, positive, negative, r, halves, chunks, y0, y1, x0, x1,
                 out):
    """OR into ``out[y0:y1, x0:x1]`` the seeds (image pixel ``(y, x)`` with
    ``smoothed[y - r, x - r] >= hi``, or ``<= lo``, as ``positive``/``negative`` ask) grown
    by the footprint of row half widths ``halves``.

    Only the chunks of smoothed pixels within the footprint's reach of the region that
    hold a seed (``chunks``, `_count_seeds`) are scanned for runs of seeds; each run
    paints its footprint rows clipped to the region (as `_grow`).
    """
    oh, ow = smoothed.shape
    big = halves.shape[0] // 2  # the footprint's half height and widest half width
    ys, ye = max(y0 - big, r), min(y1 + big, r + oh)
    cs, ce = max(x0 - big, r) - r, min(x1 + big, r + ow) - r  # smoothed columns
    for y in range(ys, ye):
        src = smoothed[y - r]
        flags = chunks[y - r]
        x = cs  # columns before x are scanned
        while x < ce:
            stop = min(ce, (x // _SEED_CHUNK + 1) * _SEED_CHUNK)
            if not flags[x // _SEED_CHUNK]:
                x = stop
                continue
            while x < stop:
                if not _is_seed(src[x], hi, lo, positive, negative):
                    x += 1
                    continue
                start = x
                while x < ce and _is_seed(src[x], hi, lo, positive, negative):
                    x += 1  # a run may go on into the next chunks
                for dy in range(max(-big, y0 - y), min(big, y1 - 1 - y) + 1):
                    half = halves[dy + big]
                    dst = out[y + dy]
                    for xx in range(max(start + r - half, x0), min(x + r + half, x1)):
                        dst[xx] = True


def grow_detections(smoothed: np.ndarray, threshold: float, r: int, positive: bool,
                    negative: bool, mark_positive: bool, mark_negative: bool, radius: int,
                    isotropic: bool, regions, out: np.ndarray) -> tuple[int, bool]:
    """See `ampoffset_dask.algorithm.kernels._numpy.grow_detections`.

    One pass over the smoothed image counts and maps which 64-column chunks of each row
    hold a seed; the regions then read only those chunks.
    """
    if out.dtype != np.bool_ or not out.flags.c_contiguous:
        return _reference.grow_detections(smoothed, threshold, r, positive, negative,
                                          mark_positive, mark_negative, radius, isotropic,
                                          regions, out)
    src = np.ascontiguousarray(smoothed, dtype=np.float32)
    hi, lo = np.float32(threshold), np.float32(-threshold)
    chunks = np.empty((src.shape[0], -(-src.shape[1] // _SEED_CHUNK)), dtype=np.bool_)
    n, any_seed = _count_seeds(src, hi, lo, positive, negative, mark_positive, mark_negative,
                               chunks)
    if not any_seed:
        return int(n), False
    radius = max(int(radius), 0)
    halves = _reference.footprint_halves(radius, isotropic)
    for rows, cols in regions:
        y0, y1, _ = rows.indices(out.shape[0])
        x0, x1, _ = cols.indices(out.shape[1])
        if y0 < y1 and x0 < x1:
            _grow_region(src, hi, lo, positive and mark_positive, negative and mark_negative,
                         r, halves, chunks, y0, y1, x0, x1, out)
    return int(n), True


# ------------------------------------------------------------------------------------------
# Edge strips: the strips read into lines in one pass (`put_lines`), then line medians,
# scatter and clipped line sums (`strips.lines_stats`). The lines
# are sorted by a sorting network run across 64 lines at a time (its 16-wire block sorts
# with the wires in vector registers, then each comparator one vector min/max over the
# lines; only its median part for lines without NaN): faster than numpy's row sort, with no
# sorted copy, and the raw lines' levels take the lines' counts and mask in the same pass
# instead of a second sort of masked lines; the strip's scatter is an exact selection among
# the absolute residuals within a window that a sample of the strip's lines places about
# their median (one pass counts and gathers; the counts prove the middle ranks lie within,
# else every residual is gathered); the clipped sums repeat numpy's pairwise order. The
# network and the pairwise partial sums are written in LLVM IR as 8-wide vector code
# (`_sort16_rows`, `_minmax_rows`, `_lanes8`): the same IEEE operations lane by lane, in
# the same order, that the compiler would not vectorize by itself (or only slowly).
# ------------------------------------------------------------------------------------------
@intrinsic
def _prefetch(typingctx, arr, idx):
    """Ask the processor to start loading the cache line of ``arr.ctypes.data + idx`` items
    (a hint: it never faults, reads nothing back and changes no result)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        i8p = ir.IntType(8).as_pointer()
        # The intrinsic is named after its pointer type: "ptr" (opaque pointers) or "i8*".
        name = "llvm.prefetch.p0" if str(i8p) == "ptr" else "llvm.prefetch.p0i8"
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), name)
        # read, keep in all cache levels, data cache
        builder.call(fn, [builder.bitcast(builder.gep(data, [args[1]]), i8p), i32(0), i32(3),
                          i32(1)])
        return context.get_dummy_value()

    return sig, codegen


#: Rows of a strip read ahead (`_prefetch`) of the one being copied. A strip's rows are
#: short pieces of long image rows, too far apart for the hardware prefetchers: without
#: the hints the copy waits on memory about once per row (~25% of its time).
_AHEAD = 8


@njit(**_JIT)
def _put_lines(dest, src, rs, mask, ms, bits, flip):
    """`put_lines` of an edges-only read in one pass: strip row ``i`` is ``src[i * rs:]``,
    its mask row ``mask[i * ms:]`` (without a mask: one row of zeros, ``ms = 0``); NaN where
    ``mask & bits`` is set or the pixel is not finite. Branch-free rows (a test inside the
    row loop costs ~20%), the rows ``_AHEAD`` further prefetched."""
    h, w = (dest.shape[1], dest.shape[0]) if flip else dest.shape
    nan = np.float32(np.nan)
    row = np.empty(w, dtype=np.float32)
    for i in range(h):
        if i + _AHEAD < h:
            for q in range(0, w + 15, 16):
                _prefetch(src, (i + _AHEAD) * rs + q)
                _prefetch(mask, (i + _AHEAD) * ms + q)
        out = row if flip else dest[i]
        v, mk = src[i * rs:i * rs + w], mask[i * ms:i * ms + w]
        for j in range(w):
            x = v[j]
            out[j] = nan if ((mk[j] & bits) != 0) | (x - x != 0) else x
        if flip:
            for j in range(w):
                dest[j, i] = row[j]


@njit(**_JIT)
def _put_masked(dest, src, rs, bad, bs, extra, es, flip):
    """`put_lines` of the default configuration's read: strip row ``i`` is ``src[i * rs:]``,
    NaN where ``bad[i * bs:]`` or ``extra[i * es:]`` is True (one pass, branch-free rows,
    the rows ``_AHEAD`` further prefetched)."""
    h, w = (dest.shape[1], dest.shape[0]) if flip else dest.shape
    nan = np.float32(np.nan)
    row = np.empty(w, dtype=np.float32)
    for i in range(h):
        if i + _AHEAD < h:
            for q in range(0, w + 63, 64):
                _prefetch(bad, (i + _AHEAD) * bs + q)
                _prefetch(extra, (i + _AHEAD) * es + q)
            for q in range(0, w + 15, 16):
                _prefetch(src, (i + _AHEAD) * rs + q)
        out = row if flip else dest[i]
        v = src[i * rs:i * rs + w]
        b, e = bad[i * bs:i * bs + w], extra[i * es:i * es + w]
        for j in range(w):
            out[j] = nan if b[j] | e[j] else v[j]
        if flip:
            for j in range(w):
                dest[j, i] = row[j]


def _zero_row(w: int) -> np.ndarray:
    """The mask of a read without one: a read-only row of ``w`` int32 zeros, read again
    for every strip row (``ms = 0``; it stays in cache)."""
    return _read_only(np.zeros(w, dtype=np.int32))


def put_lines(dest: np.ndarray, strip: np.ndarray, flip: bool, *,
              mask: np.ndarray | None = None, bits: int = 0, bad: np.ndarray | None = None,
              extra: np.ndarray | None = None, finite: bool = False) -> None:
    """See `ampoffset_dask.algorithm.kernels._numpy.put_lines`.

    Compiled for the reads of edges only (the finiteness test, with or without a mask) and
    for the default configuration's read (both ``bad`` and ``extra``, nothing else): one
    pass over a float32 strip read in place, no temporaries, the rows ahead prefetched. A mask of
    another integer type or byte order is converted to int32 first (the same low 31 bits:
    ``bits`` must fit in them, as the reference's int32 test requires). Plain copies take
    the reference (numpy is as fast there), as do other pixel types and mask combinations.
    """
    use_mask = mask is not None and bits != 0
    if not use_mask and not finite and bad is not None and extra is not None:
        v = np.asarray(strip)
        b = np.asarray(bad)
        e = np.asarray(extra)
        if (v.ndim == 2 and v.dtype == np.float32 and v.dtype.isnative
                and b.dtype == np.bool_ and e.dtype == np.bool_
                and b.shape == v.shape and e.shape == v.shape and _lines_fit(dest, v.shape, flip)):
            src, fb, fe = _flat_rows(v), _flat_rows(b), _flat_rows(e)
            if src is not None and fb is not None and fe is not None:
                _put_masked(dest, src[0], src[1], fb[0], fb[1], fe[0], fe[1], bool(flip))
                return
    if bad is None and extra is None and finite:
        v = np.asarray(strip)
        if v.dtype.kind == "f" and v.dtype.itemsize == 4 and not v.dtype.isnative:
            v = _native(v)
        m = np.asarray(mask) if use_mask else None
        if m is not None and m.dtype.kind in "iu" and m.dtype != np.int32:
            m = m.astype(np.int32)
        if (v.ndim == 2 and v.dtype == np.float32 and 0 <= bits < 1 << 31
                and _lines_fit(dest, v.shape, flip)):
            src = _flat_rows(v)
            flat = (_zero_row(v.shape[1]), 0) if m is None else (
                _flat_rows(m) if m.dtype == np.int32 and m.shape == v.shape else None)
            if src is not None and flat is not None:
                _put_lines(dest, src[0], src[1], flat[0], flat[1], np.int32(bits), bool(flip))
                return
    _reference.put_lines(dest, strip, flip, mask=mask, bits=bits, bad=bad, extra=extra,
                         finite=finite)


def _lines_fit(dest: np.ndarray, shape: tuple[int, int], flip: bool) -> bool:
    """Whether the compiled reads can write a non-empty 2-D strip of ``shape`` into ``dest``
    (float32, C-contiguous, writable, the strip's shape, transposed when ``flip``)."""
    return (dest.dtype == np.float32 and dest.flags.c_contiguous and dest.flags.writeable
            and dest.shape == (shape[::-1] if flip else tuple(shape))
            and shape[0] > 0 and shape[1] > 0)


def _whole(a: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
    """``a`` as a read-only flat view (`_read_only`) when it is a plain C-contiguous
    ndarray of ``shape`` and ``dtype`` (native order), else None."""
    if (type(a) is not np.ndarray or a.shape != shape or a.dtype != dtype
            or not a.flags.c_contiguous):
        return None
    return _read_only(a.reshape(-1))


def put_strips(dests: Sequence[np.ndarray], source: Any, boxes: Sequence[tuple[slice, slice]],
               flips: Sequence[bool], *, mask: Any = None, bits: int = 0,
               bad: np.ndarray | None = None, extra: np.ndarray | None = None,
               finite: bool = False) -> None:
    """See `ampoffset_dask.algorithm.kernels._numpy.put_strips`.

    With a C-contiguous float32 image (and an int32 ``mask``, or bool ``bad`` and
    ``extra``, of its shape) in memory, the compiled reads of `put_lines` run on one flat
    view of each array, the strips found by their offsets: a few microseconds per strip
    instead of ~20 (two strided views and the checks of `put_lines`). Other inputs (lazy
    arrays included) go strip by strip through `put_lines`.
    """
    use_mask = mask is not None and bits != 0
    flats = None
    if bad is None and extra is None and finite and 0 <= bits < 1 << 31:
        shape = np.shape(source)
        flats = [_whole(source, shape, np.float32),
                 _whole(mask, shape, np.int32) if use_mask else 0]
    elif bad is not None and extra is not None and not use_mask and not finite:
        shape = np.shape(source)
        flats = [_whole(source, shape, np.float32), _whole(bad, shape, np.bool_),
                 _whole(extra, shape, np.bool_)]
    fast = flats is not None and all(f is not None for f in flats)
    for dest, box, flip in zip(dests, boxes, flips, strict=True):
        if fast:
            y0, y1, ys = box[0].indices(shape[0])
            x0, x1, xs = box[1].indices(shape[1])
        if not fast or ys != 1 or xs != 1 or not _lines_fit(dest, (y1 - y0, x1 - x0), flip):
            put_lines(dest, np.asarray(source[box]), flip,
                      mask=np.asarray(mask[box]) if use_mask else None, bits=bits,
                      bad=None if bad is None else bad[box],
                      extra=None if extra is None else extra[box], finite=finite)
            continue
        w = shape[1]
        # The strip's rows in each flat array: from its first pixel to its last.
        o = y0 * w + x0
        n = (y1 - y0 - 1) * w + (x1 - x0)
        if len(flats) == 2:
            m = flats[1][o:o + n] if use_mask else _zero_row(x1 - x0)
            _put_lines(dest, flats[0][o:o + n], w, m, w if use_mask else 0, np.int32(bits),
                       bool(flip))
        else:
            _put_masked(dest, flats[0][o:o + n], w, flats[1][o:o + n], w, flats[2][o:o + n],
                        w, bool(flip))


def _network(n: int) -> np.ndarray:
    """Batcher's odd-even merge sorting network for ``n`` wires (any ``n``): comparator
    pairs ``(i, j)``, ``i < j``, in order (543 for 64 wires); cached, read-only."""
    net = _NETWORKS.get(n)
    if net is None:
        pairs = []
        p = 1
        while p < n:
            k = p
            while k >= 1:
                j = k % p
                while j + k < n:
                    for i in range(min(k, n - j - k)):
                        if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                            pairs.append((i + j, i + j + k))
                    j += 2 * k
                k //= 2
            p *= 2
        net = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        net.flags.writeable = False
        _NETWORKS[n] = net
    return net


def _kept(n: int, lowest: int) -> list[int]:
    """Positions in `_network` of the comparators that ranks ``lowest`` to ``n // 2``
    depend on (those wires end with the full network's values), in order."""
    need = set(range(lowest, n // 2 + 1))
    kept = []
    net = _network(n).tolist()
    for q in range(len(net) - 1, -1, -1):
        i, j = net[q]
        if i in need or j in need:
            kept.append(q)
            need.update((i, j))
    return kept[::-1]


def _median_network(n: int, lowest: int | None = None) -> np.ndarray:
    """The comparators of `_network` that ranks ``lowest`` to ``n // 2`` depend on (by
    default only the middle ranks ``(n - 1) // 2`` and ``n // 2``: 445 of 543 for 64
    wires; from rank 0, 494): those wires end with the full network's values. Cached,
    read-only."""
    lowest = (n - 1) // 2 if lowest is None else lowest
    net = _NETWORKS.get((n, lowest))
    if net is None:
        net = np.array(_network(n)[_kept(n, lowest)], dtype=np.int64).reshape(-1, 2)
        net.flags.writeable = False
        _NETWORKS[n, lowest] = net
    return net


def _median_plan(n: int) -> tuple[int, np.ndarray, np.ndarray]:
    """How `_line_medians` sorts ``n`` wires: ``(blocks, low, middle)``. The network
    begins with the sorts of 16-wire blocks (its stages of spans below 16: the comparators
    of `_sort16_rows` on wires ``16 b`` to ``16 b + 15`` of each of the ``blocks`` full
    blocks); ``low`` and ``middle`` are the rest of `_median_network` ``(n, 0)`` and ``(n)``, the
    comparators of those sorts removed. The sorts run whole even where the pruned networks
    leave out some of their comparators: those touch only wires that no later kept
    comparator and no wanted rank reads, so the wanted ranks are the same. Cached."""
    plan = _PLANS.get(n)
    if plan is None:
        full = _network(n).tolist()
        pre = 0  # the leading comparators within one 16-wire block: the spans below 16
        while pre < len(full) and full[pre][0] // 16 == full[pre][1] // 16:
            pre += 1
        blocks = n // 16
        sort16 = _network(16).tolist()
        if any([[i - 16 * b, j - 16 * b] for i, j in full[:pre] if i // 16 == b] != sort16
               for b in range(blocks)):
            blocks = 0  # not Batcher's layout: the whole network from memory
        rest = []
        for lowest in (0, (n - 1) // 2):
            kept = [q for q in _kept(n, lowest) if q >= pre or full[q][0] >= 16 * blocks]
            net = np.array([full[q] for q in kept], dtype=np.int64).reshape(-1, 2)
            net.flags.writeable = False
            rest.append(net)
        plan = _PLANS[n] = (blocks, rest[0], rest[1])
    return plan


_NETWORKS: dict[int | tuple[int, int], np.ndarray] = {}  # n: the network; pruned ones
_PLANS: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # n: `_median_plan`
_NET_LANES = 64  # lines sorted together: the (width, 64) block stays in the L1 cache


#: Batcher's network of 16 wires (`_network` ``(16)``), as `_sort16_rows` applies it.
_SORT16 = tuple((int(i), int(j)) for i, j in _network(16))


@intrinsic
def _sort16_rows(typingctx, x, w0):
    """Sort wires ``w0`` to ``w0 + 15`` (rows of the C-contiguous float32 ``x``,
    ``(wires, _NET_LANES)``) on every lane with Batcher's 63 comparators of 16 wires,
    each ``(u if u < v else v, v if u < v else u)`` as `_minmax_rows` takes it. Per 8
    lanes the 16 wires are loaded once into vector registers and stored once, instead of
    three row stores per comparator. Written in LLVM IR (straight-line vector code): the
    same loop in Python takes the compiler seconds to vectorize."""
    if not (isinstance(x, types.Array) and x.dtype == types.float32 and x.ndim == 2
            and x.layout == "C" and isinstance(w0, types.Integer)):
        return None
    sig = types.void(x, w0)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        vec = ir.VectorType(ir.FloatType(), 8)
        i64 = ir.IntType(64)
        rows = builder.bitcast(data, vec.as_pointer())
        per_row = _NET_LANES // 8
        w = args[1] if args[1].type.width == 64 else builder.sext(args[1], i64)
        base = builder.mul(w, ir.Constant(i64, per_row))
        for k in range(per_row):
            ptrs = [builder.gep(rows, [builder.add(base, ir.Constant(i64, r * per_row + k))])
                    for r in range(16)]
            a = [builder.load(q, align=4) for q in ptrs]
            for i, j in _SORT16:
                less = builder.fcmp_ordered("<", a[i], a[j])
                a[i], a[j] = builder.select(less, a[i], a[j]), builder.select(less, a[j], a[i])
            builder.fence("seq_cst", "singlethread")  # plain stores (see `_minmax_rows`)
            for q, v in zip(ptrs, a, strict=True):
                builder.store(v, q, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _minmax_rows(typingctx, x, i, j):
    """One comparator of the network on all `_NET_LANES` lanes: rows ``i < j`` of the
    C-contiguous float32 ``x`` (``(wires, _NET_LANES)``) become their lane-wise minimum and
    maximum (``u if u < v else v``, ``v if u < v else u``: the first on ties). Written in
    LLVM IR as 8-wide vector loads, compares, selects and stores: two stores per vector,
    where a loop the compiler vectorizes needs a scratch row (it cannot tell the two rows
    apart) and three."""
    if not (isinstance(x, types.Array) and x.dtype == types.float32 and x.ndim == 2
            and x.layout == "C" and isinstance(i, types.Integer)
            and isinstance(j, types.Integer)):
        return None
    sig = types.void(x, i, j)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        vec = ir.VectorType(ir.FloatType(), 8)
        rows = builder.bitcast(data, vec.as_pointer())
        per_row = ir.Constant(ir.IntType(64), _NET_LANES // 8)
        a = builder.mul(builder.sext(args[1], ir.IntType(64)) if args[1].type.width < 64
                        else args[1], per_row)
        b = builder.mul(builder.sext(args[2], ir.IntType(64)) if args[2].type.width < 64
                        else args[2], per_row)
        for k in range(_NET_LANES // 8):
            pa = builder.gep(rows, [builder.add(a, ir.Constant(ir.IntType(64), k))])
            pb = builder.gep(rows, [builder.add(b, ir.Constant(ir.IntType(64), k))])
            u = builder.load(pa, align=4)
            v = builder.load(pb, align=4)
            less = builder.fcmp_ordered("<", u, v)
            # A compiler barrier (no instruction): without it the compiler stores the
            # minimum as a masked store of ``v`` (slow on AMD processors).
            builder.fence("seq_cst", "singlethread")
            builder.store(builder.select(less, u, v), pa, align=4)
            builder.store(builder.select(less, v, u), pb, align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(**_JIT)
def _line_medians(values, under, masked, blocks, net, middle, count, given_count, med):
    """Per line of ``values``: ``count`` (non-NaN values; read instead when
    ``given_count``) and the median of the values, NaN last, at ranks ``(count - 1) // 2``
    and ``count // 2``, as `_numpy._sorted_medians` takes them from numpy's sort (NaN where
    a rank falls on a NaN or ``count`` is 0). ``masked``: values are NaN where ``under`` is.

    The lines are sorted 64 at a time, transposed: NaN becomes +inf (the ranks below the
    count of non-NaN values keep their values). The first ``blocks`` 16-wire blocks are
    sorted in registers (`_sort16_rows`), then each comparator of the network ``net`` (the rest
    of one that leaves wires 0 to ``n // 2`` sorted: no rank read is above;
    `_median_plan`) is a min/max over the 64 lanes (`_minmax_rows`; the lanes past the
    last line of a short group hold stale values no one reads). When every line of the 64
    is full (no NaN, ranks ``(n - 1) // 2`` and ``n // 2``), only the ``middle`` part of
    the network runs."""
    h, n = values.shape
    lanes = _NET_LANES
    inf = np.float32(np.inf)
    nan = np.float32(np.nan)
    two = np.float32(2.0)
    x = np.empty((n, lanes), dtype=np.float32)
    valid = np.empty(lanes, dtype=np.int64)
    for r0 in range(0, h, lanes):
        g = min(lanes, h - r0)
        for li in range(g):
            c = 0
            for i in range(n):
                v = values[r0 + li, i]
                if masked:
                    u = under[r0 + li, i]
                    v = v if u == u else nan
                ok = v == v
                c += ok
                x[i, li] = v if ok else inf
            valid[li] = c
        full = True
        for li in range(g):
            full &= valid[li] == n and (not given_count or count[r0 + li] == n)
        comparators = middle if full else net
        for b in range(blocks):
            _sort16_rows(x, 16 * b)
        for q in range(comparators.shape[0]):
            _minmax_rows(x, comparators[q, 0], comparators[q, 1])
        for li in range(g):
            c = count[r0 + li] if given_count else valid[li]
            count[r0 + li] = c
            lo = (c - 1) // 2
            hi = c // 2
            a = x[lo, li] if lo < valid[li] else nan
            b = x[hi, li] if hi < valid[li] else nan
            med[r0 + li] = nan if c == 0 else (a + b) / two


@njit(**_JIT)
def _select(buf, lo, hi, k):
    """The ``k``-th smallest of NaN-free ``buf[lo:hi]``; afterwards no value before
    ``buf[k]`` is larger than it (three-way partitions, branch-free, about a median of
    three; equal values end a search early)."""
    while hi - lo > 8:
        mid = (lo + hi) >> 1
        a = buf[lo]
        b = buf[mid]
        c = buf[hi - 1]
        if a > b:
            a, b = b, a
        if b > c:
            b = c
        if a > b:
            b = a
        p = b
        s = lo
        for i in range(lo, hi):  # values below p first
            v = buf[i]
            buf[i] = buf[s]
            buf[s] = v
            s += v < p
        if k < s:
            hi = s
            continue
        e = s
        for i in range(s, hi):  # then values equal to p
            v = buf[i]
            buf[i] = buf[e]
            buf[e] = v
            e += v <= p
        if k < e:
            buf[k] = p
            return p
        lo = e
    for i in range(lo + 1, hi):
        v = buf[i]
        j = i - 1
        while j >= lo and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
    return buf[k]


@intrinsic
def _lanes8(typingctx, arr, blocks):
    """Numpy's pairwise float32 sum of ``arr[:8 * blocks]`` (``blocks >= 1``, a C-contiguous
    float32 row): eight partial sums ``r[k] = arr[k] + arr[8 + k] + ...`` in order, one
    8-wide vector add per block (lane by lane the same IEEE additions), then
    ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``. Written in LLVM IR: the
    compiler does not turn the eight scalar chains into vector adds by itself (no
    fast-math: it may not reorder them, and does not see they need no reordering)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.ndim == 1
            and arr.layout == "C" and isinstance(blocks, types.Integer)):
        return None  # strided or other rows: not typed (the loads take 8 adjacent values)
    sig = types.float32(arr, blocks)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        vec = ir.VectorType(ir.FloatType(), 8)
        rows = builder.bitcast(data, vec.as_pointer())
        acc = cgutils.alloca_once(builder, vec)
        builder.store(builder.load(rows, align=4), acc)
        one = ir.Constant(args[1].type, 1)
        with cgutils.for_range(builder, builder.sub(args[1], one)) as loop:
            v = builder.load(builder.gep(rows, [builder.add(loop.index, one)]), align=4)
            builder.store(builder.fadd(builder.load(acc), v), acc)
        r = builder.load(acc)
        e = [builder.extract_element(r, ir.Constant(ir.IntType(32), k)) for k in range(8)]
        add = builder.fadd
        return add(add(add(e[0], e[1]), add(e[2], e[3])), add(add(e[4], e[5]), add(e[6], e[7])))

    return sig, codegen


@njit(inline="always", **_JIT)
def _pairwise2(a, b, n):
    """``a[:n].sum()`` and ``b[:n].sum()`` in float32 for n <= 128 (C-contiguous rows),
    each in the order of numpy's pairwise sum (one block): a plain loop below 8 values,
    else 8 interleaved partial sums combined pairwise (`_lanes8`), then the remainder in
    order."""
    if n < 8:
        ra = np.float32(0.0)
        rb = np.float32(0.0)
        for i in range(n):
            ra += a[i]
            rb += b[i]
        return ra, rb
    stop = n - n % 8
    ra = _lanes8(a, stop // 8)
    rb = _lanes8(b, stop // 8)
    for i in range(stop, n):
        ra += a[i]
        rb += b[i]
    return ra, rb


@njit(**_JIT)
def _pairwise_sums(a, b, n):
    """`_pairwise2`, callable on its own (tests)."""
    return _pairwise2(a, b, n)


_SAMPLE_LINES = 32  # lines of a strip whose residuals place its selection window
_MIN_SAMPLE = 64  # fewer sampled residuals: no window, every residual is selected from
_WINDOW_ERRORS = 4.0  # half-width of the window: standard errors of the sample's median rank
_FINE_BINS = 512  # linear bins over the window that narrow the selection to a few values
_MAX_FINITE = np.float32(np.finfo(np.float32).max)


@intrinsic
def _window_bits(typingctx, buf, c0, lo, hi, top):
    """The residuals ``buf[c0:c0 + 64]`` (C-contiguous float32) against a window: how many
    are below ``lo``, how many are valid (``<= top``), and a bit mask of those within
    ``[lo, hi]`` (bit ``i`` for ``buf[c0 + i]``); NaN compares false. Written in LLVM IR
    as one 64-lane compare per test whose lanes are the mask (a mask register on
    AVX-512), and population counts: from a loop, the compiler builds such a mask lane by
    lane with shifts and ORs, and the counts as vectors of per-position tallies."""
    if not (isinstance(buf, types.Array) and buf.dtype == types.float32 and buf.ndim == 1
            and buf.layout == "C" and isinstance(c0, types.Integer)
            and all(t == types.float32 for t in (lo, hi, top))):
        return None
    sig = types.Tuple((types.int64, types.int64, types.uint64))(buf, c0, lo, hi, top)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        i64 = ir.IntType(64)
        vt = ir.VectorType(ir.FloatType(), 64)
        start = args[1] if args[1].type.width == 64 else builder.sext(args[1], i64)
        v = builder.load(builder.bitcast(builder.gep(data, [start]), vt.as_pointer()),
                         align=4)

        def splat(x):
            one = builder.insert_element(ir.Constant(vt, ir.Undefined), x,
                                         ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, one, ir.Constant(
                ir.VectorType(ir.IntType(32), 64), [0] * 64))

        lo_s = splat(args[2])
        below = builder.bitcast(builder.fcmp_ordered("<", v, lo_s), i64)
        valid = builder.bitcast(builder.fcmp_ordered("<=", v, splat(args[4])), i64)
        inside = builder.bitcast(builder.and_(builder.fcmp_ordered(">=", v, lo_s),
                                              builder.fcmp_ordered("<=", v, splat(args[3]))),
                                 i64)
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64]),
                                               "llvm.ctpop.i64")
        return context.make_tuple(builder, signature.return_type,
                                  [builder.call(ctpop, [below]), builder.call(ctpop, [valid]),
                                   inside])

    return sig, codegen


@njit(**_JIT)
def _window_pass(lines, profile, a, b, lo_v, hi_v, top, absbuf, g):
    """One pass over the residuals ``|line - profile|`` of strip ``a:b``: the number of
    valid ones (``<= top``: not NaN, and finite when ``top`` is the largest float), of those
    below ``lo_v``, and of those within ``[lo_v, hi_v]`` (``hi_v <= top``), which are
    gathered into ``g`` in order. ``absbuf`` holds a line's residuals, then NaN up to a
    multiple of 64: each 64 of them are tested at once (`_window_bits`), and only the set
    bits of the window's mask are visited (the window holds a few of a line's residuals:
    a few stores instead of one per residual)."""
    n = lines.shape[1]
    size = 0
    below = 0
    valid = 0
    one = np.uint64(1)
    for r in range(a, b):
        p = profile[r]
        for i in range(n):
            absbuf[i] = abs(lines[r, i] - p)
        for c0 in range(0, n, 64):
            under, ok, m = _window_bits(absbuf, c0, lo_v, hi_v, top)
            below += under
            valid += ok
            while m != 0:
                g[size] = absbuf[c0 + trailing_zeros(m)]
                size += 1
                m &= m - one
    return below, valid, size


@njit(**_JIT)
def _narrow(g, size, first, k, lo_v, hi_v, slots, fine):
    """Keep in ``g[:size]`` (values within ``[lo_v, hi_v]``, finite) only those in the
    `_FINE_BINS` linear bins holding ranks ``first`` and ``k``; returns how many values
    lay in the bins below (they are smaller than every kept one: the bins are monotone in
    the value) and the number kept."""
    scale = _FINE_BINS / (np.float64(hi_v) - np.float64(lo_v))
    top = _FINE_BINS - 1
    for i in range(size):  # vectorized
        slots[i] = min(np.int32((np.float64(g[i]) - lo_v) * scale), top)
    fine[:] = 0
    for i in range(size):
        fine[slots[i]] += 1
    cum = 0
    bi = 0
    while cum + fine[bi] <= first:
        cum += fine[bi]
        bi += 1
    lo_bin = bi
    off = cum
    while cum + fine[bi] <= k:
        cum += fine[bi]
        bi += 1
    span = np.uint32(bi - lo_bin)
    kept = 0
    for i in range(size):  # in place, branch-free: kept <= i
        g[kept] = g[i]
        kept += np.uint32(slots[i] - lo_bin) <= span
    return off, kept


@njit(**_JIT)
def _strip_sigma(lines, profile, count, a, b, sample, absbuf, g, slots, fine):
    """``MAD_TO_SIGMA`` times the median of ``|line - profile|`` over strip ``a:b``: rank
    ``n_valid // 2`` (and the one below for even ``n_valid``) of the non-NaN residuals
    (NaN when fewer than two, or a rank beyond them), ``n_valid`` the lines' counts, or,
    when a line median is infinite, the number of finite residuals (those only).

    The residuals of `_SAMPLE_LINES` lines spread over the strip place a window about the
    median; one pass counts the residuals below it and gathers those within, and the exact
    selection runs on those (`_narrow` first keeps the few of them near the middle ranks).
    When the middle ranks fall outside the window (the counts say so), a second pass
    gathers every valid residual."""
    n = lines.shape[1]
    n_valid = 0
    has_inf = False
    for r in range(a, b):
        n_valid += count[r]
        has_inf |= math.isinf(profile[r])
    top = _MAX_FINITE if has_inf else np.float32(np.inf)
    rows = b - a
    n_sample = min(_SAMPLE_LINES, rows)
    m = 0
    for j in range(n_sample):
        r = a + j * rows // n_sample
        p = profile[r]
        for i in range(n):
            v = abs(lines[r, i] - p)
            sample[m] = v
            m += v <= top
    lo_v = np.float32(0.0)
    hi_v = top
    if m >= _MIN_SAMPLE:
        mid = m // 2
        half = np.int64(_WINDOW_ERRORS * 0.5 * math.sqrt(m)) + 1
        upper = min(mid + half, m)
        if upper < m:
            hi_v = _select(sample, np.int64(0), m, upper)
        if mid - half > 0:  # the values before `upper` are the smallest
            lo_v = _select(sample, np.int64(0), upper, mid - half)
    below, valid, size = _window_pass(lines, profile, a, b, lo_v, hi_v, top, absbuf, g)
    if has_inf:  # a line of mostly infinities: the finite residuals only
        n_valid = valid
    if n_valid < 2:
        return np.nan
    k = n_valid // 2
    if k >= valid:
        return np.nan
    even = n_valid % 2 == 0
    first = k - 1 if even else k
    if below > first or k >= below + size:  # the window missed: every valid residual
        below, valid, size = _window_pass(lines, profile, a, b, np.float32(0.0), top, top,
                                          absbuf, g)
        hi_v = top
    kk = k - below
    if size > _FINE_BINS and hi_v < np.inf and hi_v > lo_v:
        off, size = _narrow(g, size, first - below, kk, lo_v, hi_v, slots, fine)
        kk -= off
    hi = np.float64(_select(g, np.int64(0), size, kk))
    if not even:
        return MAD_TO_SIGMA * hi
    lo = g[0]
    for i in range(1, kk):
        if g[i] > lo:
            lo = g[i]
    return MAD_TO_SIGMA * (0.5 * (np.float64(lo) + hi))


@njit(**_JIT)
def _strip_stats(lines, bounds, dist, profile, count, sigmas, n_kept, sums):
    n = lines.shape[1]
    zero = np.float32(0.0)
    # A line's residuals, NaN past them up to the 64 that `_window_pass` tests at once.
    absbuf = np.full(-(-n // 64) * 64, np.nan, dtype=np.float32)
    sample = np.empty(_SAMPLE_LINES * n, dtype=np.float32)
    most = 0
    for s in range(bounds.shape[0] - 1):
        most = max(most, bounds[s + 1] - bounds[s])
    g = np.empty(most * n, dtype=np.float32)
    slots = np.empty(most * n, dtype=np.int32)
    fine = np.empty(_FINE_BINS, dtype=np.int64)
    terms = np.empty(n, dtype=np.float32)  # kept residuals, zero elsewhere
    terms_d = np.empty(n, dtype=np.float32)  # times the distances
    # The distance sums are exact in any order (`_numpy._exact_distance_sums`): integers,
    # twice the distances (all of them total < 2**24) and four times their squares (< 2**24),
    # summed with the count (<= 128) as one int64 per pixel, in fields that cannot carry
    # into each other: one reduction along the line instead of three.
    packed = np.empty(n, dtype=np.int64)
    for i in range(n):
        d2 = np.int64(np.float64(dist[i]) * 2.0)
        packed[i] = (np.int64(1) << 48) | (d2 << 24) | (d2 * d2)
    field = (np.int64(1) << 24) - 1
    for s in range(bounds.shape[0] - 1):
        a = bounds[s]
        b = bounds[s + 1]
        sigma = _strip_sigma(lines, profile, count, a, b, sample, absbuf, g, slots, fine)
        sigmas[s] = sigma
        thr = np.float32(CLIP_SIGMA * sigma)
        for r in range(a, b):
            p = profile[r]
            total = 0
            for i in range(n):
                d = lines[r, i] - p
                k = abs(d) <= thr
                t = d if k else zero
                terms[i] = t
                terms_d[i] = t * dist[i]
                total += packed[i] if k else 0
            n_kept[r] = total >> 48
            s_r, s_dr = _pairwise2(terms, terms_d, n)
            sums[0, r] = s_r
            sums[1, r] = ((total >> 24) & field) * 0.5
            sums[2, r] = (total & field) * 0.25
            sums[3, r] = s_dr


def strip_line_stats(lines: np.ndarray, bounds, dist: np.ndarray, raw: np.ndarray | None = None,
                     profile: np.ndarray | None = None) -> tuple:
    """See `ampoffset_dask.algorithm.kernels._numpy.strip_line_stats`."""
    n_lines, n_across = lines.shape
    dist = np.ascontiguousarray(dist, dtype=np.float32)
    # Lines over 128 pixels (numpy halves those sums) or wide enough for their distance sums
    # to round: the numpy reference (LSST's strips are 64 pixels wide).
    if not 0 < n_across <= 128 or not _reference._exact_distance_sums(dist):
        return _reference.strip_line_stats(lines, bounds, dist, raw, profile)
    lines = np.ascontiguousarray(lines, dtype=np.float32)
    # Ranks beyond the middle are never read (NaN sorts as +inf, last): the lower half's
    # part of the network for lines with NaN, the middle's for full ones.
    blocks, net, middle = _median_plan(n_across)
    count = np.empty(n_lines, dtype=np.int64)
    medians = np.empty(n_lines, dtype=np.float32)
    _line_medians(lines, lines, False, blocks, net, middle, count, False, medians)
    prof = medians if profile is None else np.array(profile, dtype=np.float32)
    level = prof
    if raw is not None:  # the raw levels (default configuration): the lines' counts
        level = np.empty(n_lines, dtype=np.float32)
        _line_medians(np.ascontiguousarray(raw, dtype=np.float32), lines, True, blocks, net,
                      middle, count, True, level)
    sigmas = np.empty(len(bounds) - 1)
    n_kept = np.empty(n_lines, dtype=np.int64)
    sums = np.empty((4, n_lines))
    _strip_stats(lines, np.asarray(bounds, dtype=np.int64), dist, prof, count, sigmas, n_kept,
                 sums)
    return count, prof, level, sigmas, n_kept.astype(np.float64), sums[0], sums[1], sums[2], \
        sums[3]
