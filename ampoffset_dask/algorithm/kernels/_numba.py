"""Compiled (numba) versions of the hot loops, bit-identical to the numpy reference.

Every kernel performs the same IEEE operations in the same order as its numpy counterpart
(`ampoffset_dask.algorithm.kernels._numpy`): float32 products and sums stay float32,
``fastmath`` is off so nothing is reassociated or fused into multiply-adds, and the order
statistics come from an exact selection instead of a sort (the same values). Only the
clipped sums may differ from the reference in their last bits: their one kernel lets the
compiler reassociate them into SIMD partial sums (the kept set and every term are exact),
which moves no pedestal by more than 1e-12 relative.

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
    for row in range(h):
        # Horizontal pass of input row `row` into ring slot row % n, terms in order i.
        slot = ring[row % n]
        hrows[:] = row
        _taps(slot, image, hrows, hoffs, k, 0, n, ow, True)
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
        _taps(dst, ring, vrows, voffs, vk, 0, n, ow, False)


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
# Clipped statistics: exact quartiles from a histogram with monotone bins, then
# SIMD clip passes over the pixels in place (no copy of the usable values)
# ------------------------------------------------------------------------------------------
_SMALL = 1 << 15  # fewer values than this: copy and select (the histogram costs more)
_SAMPLE = 4096  # values sampled to place the histogram's range
_N_BINS = 4096  # histogram bins over that range (an L1-sized histogram)
_CHUNK = 512  # bin indices computed (SIMD) per block before they are counted


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


@njit(**_JIT)
def _sample(flat, vstride, bad, bstride, use_bad, h, w, out):
    """Up to ``len(out)`` usable values from a regular grid of positions; returns how many."""
    step = max(1, int(math.sqrt(h * w / out.shape[0])))
    n = 0
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            v = flat[y * vstride + x]
            if math.isfinite(v) and not (use_bad and bad[y * bstride + x]) and n < out.shape[0]:
                out[n] = v
                n += 1
    return n


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
def _histogram(flat, vstride, bad, bstride, use_bad, h, w, lo, scale, top, hist, idx):
    """Count the usable values per bin (`_bin_of`); the last bin counts the others.

    Bin indices are computed a chunk at a time in a branch-free (SIMD) loop, then counted.
    Returns the number of usable values.
    """
    spare = np.uint32(hist.shape[0] - 1)
    for y in range(h):
        row = flat[y * vstride: y * vstride + w]
        brow = bad[y * bstride: y * bstride + w] if use_bad else bad[:0]
        for x0 in range(0, w, _CHUNK):
            m = min(_CHUNK, w - x0)
            seg = row[x0:x0 + m]
            bseg = brow[x0:x0 + m] if use_bad else brow
            _chunk_bins(seg, bseg, use_bad, m, lo, scale, top, spare, idx)
            for j in range(m):
                hist[idx[j]] += 1
    return h * w - hist[spare]


@njit(**_JIT)
def _gather_bins(flat, vstride, bad, bstride, use_bad, h, w, lo, scale, top, slot_of_bin,
                 starts, out, idx):
    """Copy the usable values of the wanted bins into their segments of ``out``
    (``slot_of_bin`` maps a bin to its segment + 1, 0 when not wanted; the last bin, of
    the unusable values, is never wanted). Bins are computed as in `_histogram`."""
    spare = np.uint32(slot_of_bin.shape[0] - 1)
    pos = starts.copy()
    for y in range(h):
        row = flat[y * vstride: y * vstride + w]
        brow = bad[y * bstride: y * bstride + w] if use_bad else bad[:0]
        for x0 in range(0, w, _CHUNK):
            m = min(_CHUNK, w - x0)
            seg = row[x0:x0 + m]
            bseg = brow[x0:x0 + m] if use_bad else brow
            _chunk_bins(seg, bseg, use_bad, m, lo, scale, top, spare, idx)
            for j in range(m):
                s = slot_of_bin[idx[j]]
                if s:
                    out[pos[s - 1]] = seg[j]
                    pos[s - 1] += 1


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _clip_sums(flat, vstride, bad, bstride, use_bad, h, w, center, half):
    """Count, sum and sum of squares of ``v - center`` over ``|v - center| <= half``.

    Only here may the compiler reassociate (``fastmath={"reassoc"}``), so the sums are
    vectorised in an order it chooses: the kept set and every term are exact, the sums
    may differ from the reference in their last bits. Non-finite values are never kept
    (``half`` is capped at the largest double). Each row is summed on its own first.
    """
    half = min(half, 1.7976931348623157e308)
    c = 0
    t1 = 0.0
    t2 = 0.0
    for y in range(h):
        row = flat[y * vstride: y * vstride + w]
        a = 0.0
        b = 0.0
        k = 0
        if use_bad:
            brow = bad[y * bstride: y * bstride + w]
            for x in range(w):
                d = np.float64(row[x]) - center
                keep = (abs(d) <= half) & ~brow[x]
                e = d if keep else 0.0
                a += e
                b += e * e
                k += 1 if keep else 0
        else:
            for x in range(w):
                d = np.float64(row[x]) - center
                keep = abs(d) <= half
                e = d if keep else 0.0
                a += e
                b += e * e
                k += 1 if keep else 0
        c += k
        t1 += a
        t2 += b
    return c, t1, t2


@njit(**_JIT)
def _clip_loop(flat, vstride, bad, bstride, use_bad, h, w, n, median, q1, q3, n_sigma,
               n_iter, iq_to_stdev):
    """afw's clip iterations (ALGORITHM.md 2.3) on the ``n`` usable values."""
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
        m, s1, s2 = _clip_sums(flat, vstride, bad, bstride, use_bad, h, w, center, half)
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


def _flat_rows(a: np.ndarray) -> tuple[np.ndarray, int] | None:
    """A 2-D array with unit inner stride as a 1-D view from its first to its last element
    (inside the parent's memory) and its row stride in elements; None for other layouts."""
    h, w = a.shape
    it = a.itemsize
    if h == 0 or w == 0:
        return a.reshape(-1), w
    if (h > 1 and a.strides[0] % it) or (w > 1 and a.strides[1] != it):
        return None
    stride = a.strides[0] // it if h > 1 else w
    return np.lib.stride_tricks.as_strided(a, shape=((h - 1) * stride + w,), strides=(it,)), stride


def _order_statistics(fv, fb, use_bad, h, w, ranks_of):
    """Usable-value count and the values of the ranks ``ranks_of(n)`` (exact, as a sort).

    A histogram over the range a sample suggests locates the bins holding the wanted ranks;
    only those bins are copied and sorted. A poor guess only makes those bins larger.
    """
    flat, vstride = fv
    bad, bstride = fb
    buf = np.empty(_SAMPLE, dtype=flat.dtype)
    sample = np.sort(buf[:_sample(flat, vstride, bad, bstride, use_bad, h, w, buf)])
    if sample.shape[0]:
        q1, q3 = (float(sample[int(p * (sample.shape[0] - 1))]) for p in (0.2, 0.8))
        width = q3 - q1
        lo = q1 - 0.5 * width
        span = 2.0 * width
    else:
        lo, span = 0.0, 0.0
    n_bins = _N_BINS
    kind = flat.dtype.type
    scale = n_bins / span if 0.0 < span < math.inf else 1.0
    biggest = float(np.finfo(kind).max)
    if not (abs(lo) < biggest and scale < biggest):
        lo, scale = 0.0, 1.0
    lo, scale = kind(lo), kind(scale)
    top = kind(n_bins - 1)  # bins 0..n_bins-1 for usable values, n_bins for the others
    hist = np.zeros(n_bins + 1, dtype=np.int32 if h * w < 2**31 else np.int64)
    idx = np.empty(_CHUNK, dtype=np.uint32)
    n = int(_histogram(flat, vstride, bad, bstride, use_bad, h, w, lo, scale, top, hist,
                       idx))
    if n == 0:
        return 0, {}
    ks = ranks_of(n)
    cum = np.cumsum(hist[:n_bins])
    bins = np.searchsorted(cum, ks, side="right").tolist()  # rank k's bin: first cum > k
    wanted = sorted(set(bins))
    sizes = hist[wanted]
    starts = np.zeros(len(wanted), dtype=np.int64)
    starts[1:] = np.cumsum(sizes)[:-1]
    slot_of_bin = np.zeros(n_bins + 1, dtype=np.uint8)
    slot_of_bin[wanted] = np.arange(1, len(wanted) + 1)
    out = np.empty(int(sizes.sum()), dtype=flat.dtype)
    _gather_bins(flat, vstride, bad, bstride, use_bad, h, w, lo, scale, top, slot_of_bin,
                 starts, out, idx)
    values = {}
    for i, b in enumerate(wanted):
        seg = np.sort(out[starts[i]:starts[i] + sizes[i]])
        before = int(cum[b] - hist[b])
        for k, kb in zip(ks, bins, strict=True):
            if kb == b:
                values[k] = float(seg[k - before])
    return n, values


_NO_BAD = np.zeros((1, 1), dtype=np.bool_)


def usable_clipped_mean_var(
    values: np.ndarray, bad: np.ndarray | None, n_sigma: float = 3.0, n_iter: int = 3
) -> tuple[float, float, int]:
    """See `ampoffset_dask.algorithm.kernels._numpy.usable_clipped_mean_var`.

    Large inputs are read in place: a histogram (bins monotone in the value, over a range
    placed from a sample) locates the bins of the quartiles' order statistics, only those
    bins are copied and sorted (the values are exact), and each clip iteration is one SIMD
    pass over the pixels. Small inputs: the usable values are copied and selected.
    """
    from ..stats import IQ_TO_STDEV, quantiles_selected

    values = _native(values)
    if values.ndim != 2:
        values = values.reshape(1, -1)
        bad = None if bad is None else np.asarray(bad).reshape(1, -1)
    use_bad = bad is not None
    h, w = values.shape
    fv = _flat_rows(values) if values.size >= _SMALL else None
    fb = _flat_rows(np.asarray(bad, dtype=bool)) if use_bad and fv is not None else (
        _NO_BAD.reshape(-1), 0)
    if fv is None or fb is None:
        # Small input (or a layout without unit inner stride): copy the usable values.
        buf = np.empty(values.size, dtype=values.dtype)
        n = int(_gather(values, bad if use_bad else _NO_BAD, use_bad, buf))
        a = buf[:n]
        median, q1, q3 = quantiles_selected(a)
        fv, fb, use_bad, h, w = (a, n), (_NO_BAD.reshape(-1), 0), False, 1, n
    else:
        n, median, q1, q3 = _quartiles(fv, fb, use_bad, h, w)
    mean, var = _clip_loop(fv[0], fv[1], fb[0], fb[1], use_bad, h, w, n, median, q1, q3,
                           float(n_sigma), int(n_iter), IQ_TO_STDEV)
    return float(mean), float(var), n


def _quartile_ranks(n: int) -> list[int]:
    """Ranks whose values `_quartiles` interpolates (as `stats.quantiles_selected`)."""
    idx = [p * (n - 1) for p in (0.5, 0.25, 0.75)]
    return sorted({min(int(i) + d, n - 1) for i in idx for d in (0, 1)})


def _quartiles(fv, fb, use_bad, h, w):
    """Count and `ampoffset_dask.algorithm.stats.quantiles_sorted` of the usable values."""
    n, v = _order_statistics(fv, fb, use_bad, h, w, _quartile_ranks)
    if n == 0:
        return 0, math.nan, math.nan, math.nan
    if n == 1:
        return 1, v[0], v[0], v[0]

    def q(i: float) -> float:
        lo = int(i)
        hi = lo + 1
        return (hi - i) * v[lo] + (i - lo) * v[hi]

    return n, q(0.5 * (n - 1)), q(0.25 * (n - 1)), q(0.75 * (n - 1))


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
            # Slices, not offsets: the compiler then vectorises across columns.
            seg = img[seg_start[i]:seg_stop[i]]
            ts = t[seg_start[i] - lo:seg_stop[i] - lo]
            for j in range(seg.shape[0]):
                tt = ts[j]
                v = di * tt
                v = v + ci
                v = v * tt
                v = v + bi
                v = v * tt
                v = v + yi
                seg[j] = seg[j] - np.float32(v)
        for x in range(hi, w):
            dx = dxr[x - hi]
            v = y[r, nl] + dx * d1r[r] + 0.5 * dx * dx * d2r[r]
            img[x] = img[x] - np.float32(v)


def subtract_model_rows(image: np.ndarray, style: str, knots: np.ndarray,
                        values: np.ndarray) -> None:
    """See `ampoffset_dask.algorithm.kernels._numpy.subtract_model_rows`."""
    from ..interp import piecewise
    from . import _numpy

    finite = np.isfinite(values).all()
    if style == "CONSTANT" or not finite or not image.flags.c_contiguous:
        _numpy.subtract_model_rows(image, style, knots, values)
        return
    p = piecewise(style, knots, values, np.arange(image.shape[1], dtype=np.float64))
    _subtract_piecewise(image, p.y, np.ascontiguousarray(p.b), np.ascontiguousarray(p.c),
                        np.ascontiguousarray(p.d), p.t, p.starts.astype(np.int64),
                        p.stops.astype(np.int64), p.lo, p.hi, p.dx_left,
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
def _any_set(row, x, m):
    """Whether any of ``row[x:x + m]`` is set (an OR reduction the compiler vectorises)."""
    acc = np.uint8(0)
    for j in range(m):
        acc |= np.uint8(row[x + j])
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
