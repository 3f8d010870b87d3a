"""afw's iterative sigma-clipped statistics (``MEANCLIP``, ``STDEVCLIP``).

The clip keeps ``|v - centre| <= half`` (evaluated in double). That predicate is monotone
in ``v`` on each side of the centre, so on sorted data the kept values form one contiguous
run, found with a binary search plus an exact check of the boundary elements. Each clip
iteration is then a slice sum instead of a pass over every pixel, with the same kept set as
the element-wise loop of the contract (`clipped_mean_var`).

Large unsorted inputs skip the sort (`clipped_mean_var_selected`): the quartiles come from
exact selection, and the same monotonicity makes the kept values of a floating dtype an
interval ``[lo, hi]`` of that dtype, found exactly by checking the predicate on the
neighbours of ``center -/+ half``. The array is then split in place into value-ordered
pieces at those bounds, so each clip iteration only revisits the few values near its
bounds; the kept set and the order statistics are the same, only the sums' order differs.
That order is ``np.partition``'s permutation, which depends on numpy's SIMD dispatch (on
x86-64 the AVX2 and baseline selections permute differently), so the last bits of the
clipped mean and variance of a large input can differ between CPUs; the kept set cannot.

Large 2-D arrays with a mask (background bins, the smoothed image) are read in place
(`clipped_mean_var_usable`): a sample brackets the quartiles' order statistics and predicts
the clip bounds, one pass counts, copies out the few values in the brackets and beyond a
core every clip iteration keeps, and sums the rest once. Same kept sets and order
statistics again; only the sums' order differs.
"""

from __future__ import annotations

import bisect
import itertools
import math
import struct

import numpy as np

from .buffers import ThreadBuffers

__all__ = [
    "IQ_TO_STDEV",
    "clipped_mean_var",
    "clipped_mean_var_rows",
    "clipped_mean_var_selected",
    "clipped_mean_var_usable",
    "clipped_stats",
    "clipped_stats_sorted",
    "quantiles_selected",
    "quantiles_sorted",
    "usable_values",
]

IQ_TO_STDEV = 0.741301109252802


def quantiles_sorted(s: np.ndarray) -> tuple[float, float, float]:
    """afw's floating-point median, lower and upper quartile of ascending ``s``.

    Returns
    -------
    median, q1, q3 : float
        NaN for an empty array.
    """
    n = s.shape[0]
    if n == 0:
        return math.nan, math.nan, math.nan
    if n == 1:
        v = float(s[0])
        return v, v, v

    def q(p: float) -> float:
        idx = p * (n - 1)
        lo = int(idx)
        hi = lo + 1
        return (hi - idx) * float(s[lo]) + (idx - lo) * float(s[hi])

    return q(0.5), q(0.25), q(0.75)


def _order_statistics(a: np.ndarray, ks: list[int]) -> dict[int, float]:
    """Values of the order statistics ``ks`` (ascending, distinct) of ``a``, in place.

    ``a`` is only permuted. numpy's single-``kth`` partition is an exact (SIMD) selection;
    asking it for several ``kth`` at once takes a much slower path, so the statistics are
    placed one at a time, each bounding the ranges of the others, and a statistic right
    after a placed one is the minimum of its range. (An explicit work list, not a recursive
    closure: a closure cycle would keep ``a`` alive until the garbage collector runs.)
    """
    out: dict[int, float] = {}
    # Each item: a[lo:hi] holds exactly the order statistics lo..hi-1 (in any order).
    todo = [(0, a.shape[0], list(ks))]
    while todo:
        lo, hi, wanted = todo.pop()
        if not wanted:
            continue
        if wanted[0] == lo:
            seg = a[lo:hi]
            j = int(np.argmin(seg))
            seg[0], seg[j] = seg[j], seg[0]
            out[lo] = float(a[lo])
            todo.append((lo + 1, hi, wanted[1:]))
            continue
        # Partition at a statistic whose successor, if wanted, is then a range minimum.
        lower = [k for k in wanted if k - 1 not in wanted]
        mid = lower[len(lower) // 2]
        a[lo:hi].partition(mid - lo)
        out[mid] = float(a[mid])
        todo.append((lo, mid, [k for k in wanted if k < mid]))
        todo.append((mid + 1, hi, [k for k in wanted if k > mid]))
    return out


def _quantile_ranks(n: int) -> list[int]:
    """The ascending, distinct order statistics (ranks) the quantiles of ``n > 1`` values use."""
    return sorted({int(p * (n - 1)) + d for p in (0.5, 0.25, 0.75) for d in (0, 1)})


def quantiles_selected(a: np.ndarray) -> tuple[float, float, float]:
    """`quantiles_sorted` of unsorted ``a`` by exact selection (``a`` is permuted in place).

    The same values as sorting first, in time linear in ``len(a)``.
    """
    n = a.shape[0]
    if n <= 1:
        return quantiles_sorted(a)
    return _interpolated_quantiles(n, _order_statistics(a, _quantile_ranks(n)))


def _interpolated_quantiles(n: int, v: dict[int, float]) -> tuple[float, float, float]:
    """`quantiles_sorted` of ``n > 1`` values from their order statistics ``v`` (rank ->
    value, the ranks `_quantile_ranks` names)."""
    def q(p: float) -> float:
        i = p * (n - 1)
        lo = int(i)
        hi = lo + 1
        return (hi - i) * v[lo] + (i - lo) * v[hi]

    return q(0.5), q(0.25), q(0.75)


def _kept_range(s: np.ndarray, center: float, half: float) -> tuple[int, int]:
    """Indices ``[i0, i1)`` of sorted ``s`` with ``abs(s - center) <= half`` (in double).

    The predicate is monotone on each side of the centre, so the kept values are one
    contiguous run. Its ends are searched at ``center -/+ half`` rounded to the array's
    dtype, moved past the few values the rounding misplaces, and accepted when the run's
    ends are kept and their outer neighbours are not (which settles it, the run being
    contiguous). Otherwise (an empty run, or a bound far off) two binary searches over
    indices find the ends with the exact predicate, from the value nearest the centre.
    """
    n = s.shape[0]
    if n == 0:
        return 0, 0

    def keep(i: int) -> bool:
        return abs(float(s[i]) - center) <= half

    dtype = s.dtype.type
    big = _FINITE_MAX.get(dtype)
    if big is not None:
        search = s.searchsorted
        i0 = int(search(dtype(min(max(center - half, -big), big)), "left"))
        i1 = int(search(dtype(min(max(center + half, -big), big)), "right"))
        moved = False
        for _ in range(_STEPS):  # past runs of equal values the rounded bound misplaced
            if i0 > 0 and keep(i0 - 1):
                i0 = int(search(s[i0 - 1], "left"))
            elif i0 < i1 and not keep(i0):
                i0 = int(search(s[i0], "right"))
            else:
                break
            moved = True
        for _ in range(_STEPS):
            if i1 < n and keep(i1):
                i1 = int(search(s[i1], "right"))
            elif i1 > i0 and not keep(i1 - 1):
                i1 = int(search(s[i1 - 1], "left"))
            else:
                break
            moved = True
        # Neither end moved: the loops' first tests already showed both ends kept and
        # their outer neighbours not (when the run is not empty).
        if not moved and i0 < i1:
            return i0, i1
        if (i0 < i1 and keep(i0) and keep(i1 - 1) and (i0 == 0 or not keep(i0 - 1))
                and (i1 == n or not keep(i1))):
            return i0, i1
    # The value nearest the centre is kept if anything is; the needle is cast to the
    # array's dtype so the search does not convert the array, and the neighbours of the
    # rounded centre cover the rounding.
    c = dtype(center)
    left = int(np.searchsorted(s, c, side="left"))
    right = int(np.searchsorted(s, c, side="right"))
    anchor = next((i for i in (left - 1, left, right) if 0 <= i < n and keep(i)), None)
    if anchor is None:
        return 0, 0
    lo, hi = 0, anchor
    while lo < hi:  # first kept index
        mid = (lo + hi) // 2
        if keep(mid):
            hi = mid
        else:
            lo = mid + 1
    i0 = lo
    lo, hi = anchor, n - 1
    while lo < hi:  # last kept index
        mid = (lo + hi + 1) // 2
        if keep(mid):
            lo = mid
        else:
            hi = mid - 1
    return i0, lo + 1


#: Largest finite value of the float dtypes `_kept_range` searches by value.
_FINITE_MAX = {t: float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)}


def _centred_sums(v: np.ndarray, center: float, block: int = 1 << 16) -> tuple[float, float]:
    """``sum(v - center)`` and ``sum((v - center)**2)`` in double, in cache-sized blocks.

    numpy's pairwise sums only: a BLAS dot product would make the last bits depend on the
    BLAS build and its thread count, and its thread pool oversubscribes unpinned processes.
    """
    if v.shape[0] <= block:  # one block, without the loop's bookkeeping
        d = np.subtract(v, center, dtype=np.float64)
        s1 = 0.0 + float(np.add.reduce(d))
        np.multiply(d, d, out=d)
        return s1, 0.0 + float(np.add.reduce(d))
    s1 = 0.0
    s2 = 0.0
    buf = np.empty(min(block, v.shape[0]))
    for start in range(0, v.shape[0], block):
        chunk = v[start:start + block]
        d = buf[: chunk.shape[0]]
        np.subtract(chunk, center, out=d, dtype=np.float64)  # exact cast, then a double op
        s1 += float(np.add.reduce(d))
        np.multiply(d, d, out=d)
        s2 += float(np.add.reduce(d))
    return s1, s2


def _recentred(m: int, s1: float, s2: float, delta: float) -> tuple[float, float]:
    """Sums of ``v - c`` and ``(v - c)**2`` from the sums about ``c - delta`` of ``m``
    values."""
    return s1 - m * delta, s2 - 2.0 * delta * s1 + m * delta * delta


class _RangeSums:
    """Sums of ``v - c`` and ``(v - c)**2`` over index ranges of a large sorted array.

    One pass stores per-block moments about a reference value; a range is then the
    difference of two prefix sums plus its two partial blocks, shifted to the centre ``c``
    algebraically. This replaces one full pass per clip iteration by one pass in all.
    """

    BLOCK = 4096

    def __init__(self, s: np.ndarray, ref: float) -> None:
        self.s = s
        self.ref = ref
        nb = s.shape[0] // self.BLOCK
        m1 = np.empty(nb)
        m2 = np.empty(nb)
        step = 64
        for b0 in range(0, nb, step):
            b1 = min(nb, b0 + step)
            d = s[b0 * self.BLOCK:b1 * self.BLOCK].astype(np.float64).reshape(b1 - b0, -1)
            d -= ref
            m1[b0:b1] = d.sum(axis=1)
            d *= d
            m2[b0:b1] = d.sum(axis=1)
        self.p1 = np.concatenate(([0.0], np.cumsum(m1)))
        self.p2 = np.concatenate(([0.0], np.cumsum(m2)))

    def __call__(self, i0: int, i1: int, center: float) -> tuple[float, float]:
        bs = self.BLOCK
        b0 = -(-i0 // bs)
        b1 = i1 // bs
        if b1 <= b0:
            return _centred_sums(self.s[i0:i1], center)
        h1, h2 = _centred_sums(self.s[i0:b0 * bs], self.ref)
        t1, t2 = _centred_sums(self.s[b1 * bs:i1], self.ref)
        s1 = float(self.p1[b1] - self.p1[b0]) + h1 + t1
        s2 = float(self.p2[b1] - self.p2[b0]) + h2 + t2
        return _recentred(i1 - i0, s1, s2, center - self.ref)


def clipped_mean_var(
    s: np.ndarray, n_sigma: float = 3.0, n_iter: int = 3
) -> tuple[float, float]:
    """afw ``MEANCLIP`` and ``VARIANCECLIP`` of sorted, finite candidates ``s``.

    Parameters
    ----------
    s : ndarray
        Candidate values sorted ascending (float32 or float64), NaNs already removed.
    n_sigma : float
        Clip half-width in (IQR-based, then clipped) standard deviations.
    n_iter : int
        Number of clip iterations.

    Returns
    -------
    mean, variance : float
        NaN when no value survives (or for an empty input).
    """
    n = s.shape[0]
    median, q1, q3 = quantiles_sorted(s)
    sums = _RangeSums(s, median) if n >= 16 * _RangeSums.BLOCK else None

    def clip_sums(center: float, half: float) -> tuple[int, float, float]:
        i0, i1 = _kept_range(s, center, half)
        if i1 == i0:
            return 0, math.nan, math.nan
        s1, s2 = sums(i0, i1, center) if sums is not None else _centred_sums(s[i0:i1], center)
        return i1 - i0, s1, s2

    return _clip_iterations(n, median, q3 - q1, clip_sums, n_sigma, n_iter)


def _clip_iterations(n: int, median: float, iqr: float, clip_sums, n_sigma: float,
                     n_iter: int) -> tuple[float, float]:
    """afw's clip iterations (ALGORITHM.md 2.3) given ``clip_sums(center, half) -> (m, s1,
    s2)``: how many of the ``n`` values have ``|v - center| <= half``, and the sums of their
    ``v - center`` and its square."""
    mean = math.nan
    var = math.nan
    for it in range(n_iter):
        center, half = _clip_band(it, n, median, iqr, mean, var, n_sigma)
        if math.isnan(center) or math.isnan(half):
            mean = var = math.nan
            continue
        mean, var = _clip_moments(*clip_sums(center, half), center)
    return mean, var


def _clip_band(it: int, n: int, median: float, iqr: float, mean: float, var: float,
               n_sigma: float) -> tuple[float, float]:
    """Centre and half-width of clip iteration ``it`` after the previous one's ``mean``
    and ``var`` (`_clip_iterations`)."""
    if var < 0:
        var = 0.0
    center = median if it == 0 else mean
    half = (n_sigma * IQ_TO_STDEV) * iqr if (it == 0 or n <= 1) else n_sigma * math.sqrt(var)
    return center, half


def _clip_moments(m: int, s1: float, s2: float, center: float) -> tuple[float, float]:
    """Mean and unbiased variance of ``m`` kept values from their sums about ``center``
    (NaN for none)."""
    if m == 0:
        return math.nan, math.nan
    mean_d = s1 / m
    # Unbiased variance; one survivor gives 0 * inf = NaN, as in afw.
    var = (s2 / m - mean_d**2) * (m * m / (m * m - m)) if m > 1 else math.nan
    return mean_d + center, var


def _row_sums(a: np.ndarray) -> np.ndarray:
    """Each row's sum, exactly `np.add.reduce` of the row as a 1-d array: numpy sums
    pairwise along the contiguous axis only (a row-strided array, such as ``a[:, idx]``,
    would be summed column by column)."""
    if a.strides[-1] != a.itemsize:
        a = np.ascontiguousarray(a)
    return np.add.reduce(a, axis=-1)


def _stack_rows(arrays: list[np.ndarray]) -> np.ndarray:
    """Equally long 1-d arrays as the rows of a new C-ordered 2-d array (`np.stack`'s
    result, without its per-array Python work)."""
    return np.concatenate(arrays).reshape(len(arrays), -1)


def clipped_mean_var_rows(s: np.ndarray, n_sigma: float = 3.0,
                          n_iter: int = 3) -> list[tuple[float, float]]:
    """`clipped_mean_var` of each row of ``s`` (rows sorted ascending, finite), the same
    numbers.

    The rows' quantiles come from one set of column operations. In each clip iteration,
    the rows whose two ends are inside the band keep every value (the kept values are
    contiguous) and get their sums from row sums (each row's own pairwise sums); the
    others are clipped one by one.
    """
    rows, n = s.shape
    if s.dtype != np.float64 or n < 2 or n >= 16 * _RangeSums.BLOCK:
        return [clipped_mean_var(row, n_sigma, n_iter) for row in s]
    quantiles = []
    for p in (0.5, 0.25, 0.75):  # `quantiles_sorted`'s interpolation, per row
        idx = p * (n - 1)
        lo = int(idx)
        hi = lo + 1
        quantiles.append(((hi - idx) * s[:, lo] + (idx - lo) * s[:, hi]).tolist())
    median = quantiles[0]
    iqr = [b - a for a, b in zip(quantiles[1], quantiles[2], strict=True)]
    mean = [math.nan] * rows
    var = [math.nan] * rows
    first, last = s[:, 0], s[:, -1]
    for it in range(n_iter):
        bands = [_clip_band(it, n, median[r], iqr[r], mean[r], var[r], n_sigma)
                 for r in range(rows)]
        center = np.array([c for c, _ in bands])
        half = np.array([h for _, h in bands])
        with np.errstate(invalid="ignore"):
            every = np.abs(first - center) <= half
            every &= np.abs(last - center) <= half
        full = np.flatnonzero(every)
        sums = {}
        if 2 * full.shape[0] >= rows:  # (every row: cheaper than selecting most of them)
            d = s - center[:, None]
            s1 = _row_sums(d).tolist()
            np.multiply(d, d, out=d)
            s2 = _row_sums(d).tolist()
            sums = {r: (s1[r], s2[r]) for r in full.tolist()}
        elif full.shape[0]:
            d = s[full] - center[full, None]
            s1 = _row_sums(d).tolist()
            np.multiply(d, d, out=d)
            sums = dict(zip(full.tolist(), zip(s1, _row_sums(d).tolist(), strict=True),
                            strict=True))
        for r, (c, h) in enumerate(bands):
            if math.isnan(c) or math.isnan(h):
                mean[r] = var[r] = math.nan
                continue
            if r in sums:
                s1, s2 = sums[r]
                m, s1, s2 = n, 0.0 + s1, 0.0 + s2
            else:
                i0, i1 = _kept_range(s[r], c, h)
                if i1 == i0:
                    m, s1, s2 = 0, math.nan, math.nan
                else:
                    m = i1 - i0
                    s1, s2 = _centred_sums(s[r, i0:i1], c)
            mean[r], var[r] = _clip_moments(m, s1, s2, c)
    return list(zip(mean, var, strict=True))


# ------------------------------------------------------------------------------------------
# The same statistics without sorting: exact selection, then value-ordered pieces
# ------------------------------------------------------------------------------------------
_SELECT_MIN = 4096  # below this, sorting costs less than the bookkeeping of pieces
_STEPS = 4  # neighbours tried around a rounded clip bound before bisecting


def _float_key(x, dtype: type) -> int:
    """An integer that orders the values of a floating ``dtype`` (both zeros give 0)."""
    bits = np.dtype(dtype).itemsize * 8
    i = int(np.array(x, dtype=dtype).view(f"i{bits // 8}"))
    return i if i >= 0 else -(i & ((1 << (bits - 1)) - 1))


def _from_key(k: int, dtype: type):
    """Inverse of `_float_key`."""
    bits = np.dtype(dtype).itemsize * 8
    u = k if k >= 0 else (-k) | (1 << (bits - 1))
    return np.array(u, dtype=f"u{bits // 8}").view(dtype)[()]


_F32 = struct.Struct("<f")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_FAR = object()  # `_kept_interval_near`: a bound is not within a few values of its guess


def _round32(x: float) -> float:
    """``x`` rounded to float32 (to nearest, as numpy casts), as a Python float;
    OverflowError beyond float32's range."""
    return _F32.unpack(_F32.pack(x))[0]


def _step32(x: float, sign: int) -> float:
    """The float32 next to float32 ``x`` towards ``sign * inf`` (``x`` finite)."""
    i = _I32.unpack(_F32.pack(x))[0]
    k = (i if i >= 0 else -(i & 0x7FFFFFFF)) + sign  # ordered integer key, both zeros 0
    return _F32.unpack(_U32.pack(k if k >= 0 else (-k) | 0x80000000))[0]


def _step64(x: float, sign: int) -> float:
    return math.nextafter(x, sign * math.inf)


def _kept_interval_near(dtype: type, center: float, half: float):
    """`_kept_interval` for float32/float64 when each bound lies within `_STEPS` values
    of ``center -/+ half`` rounded to the dtype (the usual case), in Python floats (a
    float32 is exact in a double); `_FAR` when it does not (or for another dtype), and
    the caller searches with numpy scalars instead. The same predicate on the same
    values, so the same interval."""
    if dtype is np.float32:
        rnd, step = _round32, _step32
    elif dtype is np.float64:
        rnd, step = float, _step64
    else:
        return _FAR
    try:
        c, g_lo, g_hi = rnd(center), rnd(center - half), rnd(center + half)
    except OverflowError:
        return _FAR
    if not (math.isfinite(c) and math.isfinite(g_lo) and math.isfinite(g_hi)):
        return _FAR

    def keep(x: float) -> bool:
        return abs(x - center) <= half

    # The values nearest the centre on each side; kept if anything is.
    a_lo, a_hi = (c, c if c == center else step(c, 1)) if c <= center else (step(c, -1), c)
    keep_lo, keep_hi = keep(a_lo), keep(a_hi)
    if not (keep_lo or keep_hi):
        return ()
    if not (keep_lo and keep_hi and g_lo < a_lo and a_hi < g_hi):
        return _FAR

    def edge(x: float, sign: int):
        # The last kept value from the centre outwards (``sign``), searched from ``x``.
        if keep(x):
            for _ in range(_STEPS):
                nxt = step(x, sign)
                if not keep(nxt):  # (an infinity is never kept)
                    return x
                x = nxt
            return None
        for _ in range(_STEPS):
            x = step(x, -sign)
            if keep(x):
                return x
        return None

    lo, hi = edge(g_lo, -1), edge(g_hi, 1)
    if lo is None or hi is None:
        return _FAR
    return dtype(lo), dtype(hi)


def _kept_interval(dtype: type, center: float, half: float):
    """The clip's kept values of a floating ``dtype`` as an interval of that dtype.

    The clip keeps ``abs(float(x) - center) <= half``, which is monotone in ``x`` on each
    side of the centre, so the kept finite values of ``dtype`` are exactly those in
    ``[lo, hi]``. Each bound is usually within a value or two of ``center -/+ half``
    rounded to ``dtype``; otherwise it is bisected on the ordered bit patterns.

    Returns
    -------
    (lo, hi) of ``dtype``, ``()`` when no finite value is kept, or None for a centre
    outside the dtype's range (the caller then clips element by element).
    """
    near = _kept_interval_near(dtype, center, half)
    return _kept_interval_searched(dtype, center, half) if near is _FAR else near


def _kept_interval_searched(dtype: type, center: float, half: float):
    """`_kept_interval` with numpy scalars of ``dtype``, from anywhere: a few values
    around each guess, then a gallop and bisection on the ordered bit patterns."""
    def keep(x) -> bool:
        return abs(float(x) - center) <= half

    big = np.finfo(dtype).max
    with np.errstate(over="ignore", invalid="ignore"):
        c = dtype(center)
        guess_lo = dtype(max(center - half, -float(big)))
        guess_hi = dtype(min(center + half, float(big)))
    if not np.isfinite(c):
        return None
    down, up = dtype(-np.inf), dtype(np.inf)
    # The representable values nearest the centre on each side; kept if anything is.
    if float(c) <= center:
        a_lo, a_hi = c, (c if float(c) == center else np.nextafter(c, up))
    else:
        a_lo, a_hi = np.nextafter(c, down), c
    keep_lo, keep_hi = keep(a_lo), keep(a_hi)
    if not (keep_lo or keep_hi):
        return ()

    def edge(anchor, guess, sign):
        # The last kept value going from ``anchor`` in direction ``sign`` (-1 down, +1 up).
        outward, inward = (down, up) if sign < 0 else (up, down)
        x = min(guess, anchor) if sign < 0 else max(guess, anchor)
        if keep(x):
            for _ in range(_STEPS):
                nxt = np.nextafter(x, outward)
                if not (np.isfinite(nxt) and keep(nxt)):
                    return x
                x = nxt
            inside = _float_key(x, dtype)
            limit = _float_key(sign * big, dtype)
            step = 1
            while True:  # gallop outward to a value that is not kept
                k = inside + sign * step
                if sign * (k - limit) >= 0:
                    if keep(_from_key(limit, dtype)):
                        return _from_key(limit, dtype)
                    outside = limit
                    break
                if not keep(_from_key(k, dtype)):
                    outside = k
                    break
                inside = k
                step *= 2
        else:
            for _ in range(_STEPS):
                x = np.nextafter(x, inward)
                if keep(x):
                    return x
            inside, outside = _float_key(anchor, dtype), _float_key(x, dtype)
        while abs(outside - inside) > 1:  # bisect: ``inside`` kept, ``outside`` not
            mid = (inside + outside) // 2
            if keep(_from_key(mid, dtype)):
                inside = mid
            else:
                outside = mid
        return _from_key(inside, dtype)

    with np.errstate(over="ignore"):  # stepping past the largest finite value
        lo = edge(a_lo, guess_lo, -1) if keep_lo else a_hi
        hi = edge(a_hi, guess_hi, 1) if keep_hi else a_lo
    return lo, hi


class _Pieces:
    """Value-ordered pieces of a permuted array, with cached sums about ``ref``.

    Each piece is a slice ``a[start:stop]`` with bounds ``lo <= v <= hi`` on its values
    (None: unbounded) and every value of a piece is <= every value of the next piece. A
    piece the clip keeps whole contributes its cached sums; one it cuts is split in place
    by one exact selection at the clip bound, so later iterations only revisit the small
    pieces near the bounds. A piece split off a piece with known sums gets its sums from
    its siblings, so each value is summed about once. The bounds are held as Python floats
    (exact for float16/32/64 values), so the per-piece bookkeeping avoids numpy scalars.
    """

    def __init__(self, a: np.ndarray, ranks: list[int], ref: float) -> None:
        self.a = a
        self.ref = ref
        self.dtype = a.dtype.type
        n = a.shape[0]
        # [start, stop, lo, hi, sums or None]
        pieces: list[list] = []
        prev, lo = 0, None
        values = a[ranks].tolist()
        for k, v in zip(ranks, values, strict=True):
            if k > prev:
                pieces.append([prev, k, lo, v, None])
            pieces.append([k, k + 1, v, v, None])
            prev, lo = k + 1, v
        if prev < n:
            pieces.append([prev, n, lo, None, None])
        self.pieces = pieces
        self.below: np.ndarray | None = None

    def _sums(self, piece: list) -> tuple[int, float, float]:
        if piece[4] is None:
            if piece[1] - piece[0] == 1:  # the pivots: plain double arithmetic
                d = 0.0 + (float(self.a[piece[0]]) - self.ref)
                piece[4] = (1, d, 0.0 + d * d)
            else:
                v = self.a[piece[0]:piece[1]]
                piece[4] = (v.shape[0], *_centred_sums(v, self.ref))
        return piece[4]

    def _split(self, piece: list, t, t_below: float) -> list[list]:
        """Split ``piece`` into values ``< t`` and ``>= t`` (one or two pieces);
        ``t_below`` is the value of the dtype just below ``t``."""
        start, stop, lo, hi, sums = piece
        ft = float(t)
        v = self.a[start:stop]
        if self.below is None:  # one mask buffer for every split (no fresh pages each)
            self.below = np.empty(self.a.shape[0], dtype=bool)
        below = np.less(v, t, out=self.below[:stop - start])
        c = int(np.count_nonzero(below))
        if c == 0:
            return [[start, stop, ft if lo is None or ft > lo else lo, hi, sums]]
        if c == stop - start:
            return [[start, stop, lo, t_below if hi is None or t_below < hi else hi, sums]]
        # Swap the values on the wrong side of position c (usually a few near the bound):
        # cheaper than a selection, and only the pieces' contents matter, not their order.
        wrong_right = np.flatnonzero(below[c:])
        wrong_right += c
        wrong_left = np.flatnonzero(np.logical_not(below[:c], out=below[:c]))
        v[wrong_right], v[wrong_left] = v[wrong_left], v[wrong_right]
        left = [start, start + c, lo, t_below, None]
        right = [start + c, stop, ft, hi, None]
        if sums is not None:
            small, big = (left, right) if c <= stop - start - c else (right, left)
            m, s1, s2 = self._sums(small)
            big[4] = (sums[0] - m, sums[1] - s1, sums[2] - s2)
        return [left, right]

    def clip_sums(self, center: float, half: float) -> tuple[int, float, float]:
        """Count and sums of ``v - center``, ``(v - center)**2`` over the kept values."""
        interval = _kept_interval(self.dtype, center, half)
        if interval:
            t_lo, t_hi = interval
            f_lo, f_hi = float(t_lo), float(t_hi)
            with np.errstate(over="ignore"):  # the bounds may be the largest finite values
                lo_below = float(np.nextafter(t_lo, self.dtype(-np.inf)))
                above = np.nextafter(t_hi, self.dtype(np.inf))
        m, s1, s2 = 0, 0.0, 0.0
        delta = center - self.ref
        out: list[list] = []
        for piece in self.pieces:
            lo, hi = piece[2], piece[3]
            if (lo is not None and hi is not None and abs(lo - center) <= half
                    and abs(hi - center) <= half):
                parts = [(piece, True)]
            elif ((hi is not None and hi < center and not abs(hi - center) <= half)
                  or (lo is not None and lo > center and not abs(lo - center) <= half)
                  or interval == ()):
                parts = [(piece, False)]
            elif interval is None:
                parts = [(piece, None)]
            else:
                split = [piece]
                if lo is None or lo < f_lo:
                    split = self._split(piece, t_lo, lo_below)
                last = split[-1]
                if last[3] is None or last[3] > f_hi:
                    split[-1:] = self._split(last, above, f_hi)  # f_hi: below `above`
                # After the splits every piece lies wholly inside or outside [t_lo, t_hi].
                parts = [(p, p[2] is not None and p[3] is not None and f_lo <= p[2]
                          and p[3] <= f_hi) for p in split]
            for p, kept in parts:
                out.append(p)
                if kept is None:  # element-wise clip of this piece
                    d = self.a[p[0]:p[1]].astype(np.float64) - center
                    d = d[np.abs(d) <= half]
                    m += d.shape[0]
                    s1 += float(np.add.reduce(d))
                    s2 += float(np.add.reduce(d * d))
                    continue
                if kept and p[1] > p[0]:
                    pm, p1, p2 = self._sums(p)
                    q1, q2 = _recentred(pm, p1, p2, delta)
                    m += pm
                    s1 += q1
                    s2 += q2
        self.pieces = out
        return m, s1, s2


def clipped_mean_var_selected(
    a: np.ndarray, n_sigma: float = 3.0, n_iter: int = 3
) -> tuple[float, float]:
    """`clipped_mean_var` of unsorted, finite candidates ``a`` (permuted in place).

    The quartiles come from exact selection (`quantiles_selected`), and each clip
    iteration sums only what the pieces around its bounds do not already hold
    (`_Pieces`): the same kept values and order statistics as sorting first, in time
    linear in ``len(a)``; the sums differ from the sorted path's only in their order.
    """
    n = a.shape[0]
    if n < _SELECT_MIN or not np.issubdtype(a.dtype, np.floating):
        a.sort()
        return clipped_mean_var(a, n_sigma, n_iter)
    median, q1, q3 = quantiles_selected(a)
    pieces = _Pieces(a, _quantile_ranks(n), median)
    return _clip_iterations(n, median, q3 - q1, pieces.clip_sums, n_sigma, n_iter)


def usable_values(values: np.ndarray, bad: np.ndarray | None,
                  row_block: int = 64) -> np.ndarray:
    """A new 1-D array of the finite values of ``values`` not flagged ``bad`` (row-major)."""
    v = np.asarray(values)
    if v.ndim != 2 or v.size < (1 << 20):
        keep = np.isfinite(v)
        if bad is not None:
            np.greater(keep, bad, out=keep)  # finite and not bad
        if np.count_nonzero(keep) == keep.size:
            return v.ravel().copy() if v.flags.c_contiguous else v.flatten()
        return v[keep]
    # Large images: row blocks, so the only full-size allocation is the result.
    out = np.empty(v.size, dtype=v.dtype)
    keep = np.empty((min(row_block, v.shape[0]), v.shape[1]), dtype=bool)
    n = 0
    for y0 in range(0, v.shape[0], row_block):
        y1 = min(v.shape[0], y0 + row_block)
        kb = keep[: y1 - y0]
        np.isfinite(v[y0:y1], out=kb)
        if bad is not None:
            np.greater(kb, bad[y0:y1], out=kb)
        c = int(np.count_nonzero(kb))
        if c == kb.size:
            out[n:n + c].reshape(kb.shape)[...] = v[y0:y1]
        elif c:
            out[n:n + c] = v[y0:y1][kb]
        n += c
    return out[:n]


def clipped_stats(
    values: np.ndarray, n_sigma: float = 3.0, n_iter: int = 3
) -> tuple[float, float]:
    """``(MEANCLIP, STDEVCLIP)`` of any array, ignoring non-finite values (NaN-safe).

    Finiteness is tested after a cast to float32, as afw does.
    """
    return clipped_stats_sorted(values, n_sigma, n_iter)[:2]


def clipped_stats_sorted(
    values: np.ndarray, n_sigma: float = 3.0, n_iter: int = 3, *, finite: bool = False
) -> tuple[float, float, np.ndarray]:
    """`clipped_stats` and the sorted values it used (finite after a cast to float32).

    ``finite=True`` asserts that every value is finite after that cast (a float64 mean of
    finite float32 values is), skipping the test.
    """
    v = np.asarray(values).ravel()
    if not finite:
        if v.dtype != np.float32:
            with np.errstate(over="ignore"):
                ok = np.isfinite(v.astype(np.float32))
        else:
            ok = np.isfinite(v)
        if np.count_nonzero(ok) < v.shape[0]:  # (else the values themselves: sorted below)
            v = v[ok]
    if v.dtype != np.float32:
        v = v.astype(np.float64, copy=False)
    s = np.sort(v)
    mean, var = clipped_mean_var(s, n_sigma, n_iter)
    return mean, math.sqrt(var) if var >= 0 else math.nan, s


# ------------------------------------------------------------------------------------------
# Large arrays read in place: order statistics bracketed from a sample, then one pass
# ------------------------------------------------------------------------------------------
_BRACKET_MIN = 1 << 15  # below this, copying the usable values out costs less
_MARGIN = 3.0  # bracket half-width in binomial standard deviations of a sample rank
_CORE = 0.85  # the core (summed once) spans this fraction of the predicted clip half-width
_BLOCK = 1 << 17  # values per block of a pass (cache-sized)
_CANCEL = 64.0  # largest ratio of the outer values' squares to the core's, for a difference
#: The sample is 1/2**_SAMPLE_SHIFT of the values, at most _SAMPLE_MAX of them. The
#: brackets narrow as one over the sample's square root, and every value in them costs
#: time to copy out, split and select, against the gathering and sorting of each sampled
#: value. Timed on the README machine (AVX-512, where numpy sorts fast): a background bin
#: (226 kpx) is cheapest with 1/32 (1/16 cost 20 % more, 1/64 6 % more), the 16 Mpx
#: smoothed image with 1/128 (1/64 and 1/256 within 2 %).
_SAMPLE_SHIFT = 5
_SAMPLE_MAX = 1 << 17
#: A sample from this size on (the smoothed image's) has its order statistics selected
#: (`_select_ranks`); a smaller one (a background bin's, ~7,000 values) is sorted, which
#: costs less than the selection's bookkeeping.
_SAMPLE_SELECT_MIN = 1 << 15
#: `_select_ranks` sorts a subsample of at least this many values (at most eight times
#: as many, 1/64 of the values between); numpy sorts up to about 512 values several times
#: faster per value than larger arrays.
_SUBSAMPLE = 512


def _sample_bracket(m: int, p: float) -> tuple[int, int]:
    """Positions ``j0 <= j1`` of a sorted sample of ``m`` values that bracket the whole's
    quantile ``p`` (its rank in the sample widened by `_MARGIN` binomial standard
    deviations and two values, within the sample): a rank outside them is rare, and
    only costs a wider selection."""
    j = p * (m - 1)
    margin = _MARGIN * math.sqrt(m * p * (1.0 - p)) + 2.0
    return max(math.floor(j - margin), 0), min(math.ceil(j + margin), m - 1)


#: The block buffers of `_Bracketed`'s pass, reused by one thread from call to call: a
#: background bin is only about two blocks, so fresh buffers (about 2 MB) would cost more
#: in page faults when first written than the pass's arithmetic on them.
_PASS_BUFFERS = ThreadBuffers()


#: The values `_Bracketed._pass` copied out, gathered, and its masks over them: reused by
#: one thread (up to 8 MB; larger ones are allocated for the one call).
_COPIED_BUFFERS = ThreadBuffers(keep_max=1 << 23)
_COPIED_MIN = 1 << 16  # values: fewer (a background bin's) take fresh arrays, as cheap


def _pass_buffers(dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """This thread's uninitialised buffers for a block of `_BLOCK` values: a copy of the
    values (``dtype``), two boolean masks and a float64 block."""
    view = _PASS_BUFFERS.view
    return (view("values", (_BLOCK,), dtype), view("mask", (_BLOCK,), bool),
            view("mask2", (_BLOCK,), bool), view("float64", (_BLOCK,), np.float64))


def _slices(shape: tuple[int, int]) -> list[tuple[slice, slice]]:
    """Cache-sized blocks of a 2-D array of ``shape``, row-major."""
    h, w = shape
    if w >= _BLOCK:
        return [(slice(y, y + 1), slice(x0, x0 + _BLOCK)) for y in range(h)
                for x0 in range(0, w, _BLOCK)]
    rows = max(1, _BLOCK // max(w, 1))
    return [(slice(y0, y0 + rows), slice(None)) for y0 in range(0, h, rows)]


def _blocks(v: np.ndarray, bad: np.ndarray | None):
    """``(values, usable or None, count)`` for cache-sized blocks of 2-D ``v`` (row-major):
    ``values`` a contiguous copy of the block (the compares run twice as fast on it as on
    a strided view; the buffer is reused, so each block is consumed before the next),
    ``usable`` (finite and not bad) None when every value of the block is usable."""
    buf = fbuf = None
    for sl in _slices(v.shape):
        vb = v[sl]
        if buf is None:
            buf, fbuf = np.empty(vb.size, v.dtype), np.empty(vb.size, bool)
        x = buf[:vb.size].reshape(vb.shape)
        x[...] = vb
        fin = np.isfinite(x, out=fbuf[:vb.size].reshape(vb.shape))
        if bad is not None:
            np.greater(fin, bad[sl], out=fin)  # finite and not bad
        c = int(np.count_nonzero(fin))
        yield x, (None if c == vb.size else fin), c


def _sample(v: np.ndarray, bad: np.ndarray | None, size: int) -> np.ndarray:
    """About ``size`` usable values of 2-D ``v`` on a regular grid (1-D, unsorted)."""
    h, w = v.shape
    ry = min(h, max(1, round(math.sqrt(size * h / w))))
    sy = max(1, h // ry)
    sx = max(1, w * -(-h // sy) // size)
    s = np.ascontiguousarray(v[::sy, ::sx])  # (selecting from a strided view is slower)
    keep = np.isfinite(s)
    if bad is not None:
        np.greater(keep, bad[::sy, ::sx], out=keep)
    return s[keep]


#: The next larger value of float32/float64 ``x`` as a Python float (`_select_ranks`).
_STEP_UP = {np.float32: lambda x: _step32(x, 1), np.float64: lambda x: _step64(x, 1)}


def _select_ranks(a: np.ndarray, ks: list[int]) -> dict[int, float] | None:
    """Values of the order statistics ``ks`` (ascending, distinct) of 1-D ``a`` from a
    few percent of its values, or None; ``a`` is not modified.

    A sorted subsample (every ``step``-th value) places bounds around each run of nearby
    ranks (`_sample_bracket`); the values between them are copied out and selected
    among, their ranks shifted by the count below. Two compares, a count and a copy cost
    a fraction of a selection among all the values (numpy's sort and partition are
    several times slower per value above a few hundred values). None (the caller then
    selects among all the values, as before) for a small or non-float array, a rank out
    of range or a bound that misses its ranks, and when a value found is zero: a
    selection among all the values may leave the other zero there (``-0.0 == 0.0``).
    """
    n = a.shape[0]
    up = _STEP_UP.get(a.dtype.type)
    if up is None or n < 2 * _SUBSAMPLE or ks[0] < 0 or ks[-1] >= n:
        return None  # (a rank out of range: the caller's selection reports it)
    step = max(1, n // min(max(_SUBSAMPLE, n >> 6), 8 * _SUBSAMPLE))
    z = np.sort(a[::step])
    m = z.shape[0]
    runs: list[list] = []  # [j0, j1, ranks]: subsample positions bracketing the ranks
    for k in ks:
        j0, j1 = _sample_bracket(m, (k + 0.5) / n)
        if runs and j0 <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], j1)
            runs[-1][2].append(k)
        else:
            runs.append([j0, j1, [k]])
    out: dict[int, float] = {}
    for j0, j1, wanted in runs:
        # Python floats of the dtype's values: compared exactly in the dtype.
        lo = float(z[j0]) if j0 > 0 else -math.inf
        hi = up(float(z[j1])) if j1 < m - 1 else math.inf
        inside = np.less(a, lo)
        below = int(np.count_nonzero(inside))
        np.greater_equal(a, lo, out=inside)
        np.logical_and(inside, np.less(a, hi), out=inside)
        vals = a.compress(inside)
        if below > wanted[0] or wanted[-1] - below >= vals.shape[0]:
            return None
        got = _order_statistics(vals, [k - below for k in wanted])
        if 0.0 in got.values():
            return None
        out.update({k: got[k - below] for k in wanted})
    return out


class _Bracketed:
    """Clipped statistics of a large 2-D array from one pass over it in place.

    A sample's order statistics predict where the quartiles' lie (a bracket of values
    around each) and the clip bounds (a core of values every clip iteration should keep
    whole). One pass then, per cache-sized block: counts the values below each cut (a
    compare and a count), copies out the values in the brackets and outside the core (one
    `np.compress` of a mask built by XOR of the nested "below" masks) and sums the core
    about ``ref`` (every value less those outside the core, or, when their squares are too
    large for that difference, the core by itself while the block is in cache). The order
    statistics are selected exactly among their bracket's values (ranks shifted by the
    counts below), and each clip iteration sums the core (shifted algebraically) and the
    kept values outside it. Unusable values are replaced by
    ``ref``, a value of the core outside every bracket: each counts below the cuts above
    it (subtracted again) and adds zero to the sums. A rank outside its bracket, or a clip
    bound inside the core, costs another pass; the results are exact either way, the sums
    differing from a sorted pass only in their order.

    ``ok`` is False when the sample does not separate the brackets and the core (ties, no
    spread); the caller then copies the usable values out instead.
    """

    def __init__(self, v: np.ndarray, bad: np.ndarray | None, s: np.ndarray,
                 n_sigma: float) -> None:
        self.v, self.bad = v, bad
        t = self.dtype = v.dtype.type
        inf = t(np.inf)
        m = s.shape[0]
        ends = [_sample_bracket(m, p) for p in (0.25, 0.5, 0.75)]
        # The sample's quantiles and brackets' ends: a large sample's few order statistics
        # are selected (`_select_ranks`), a small one is sorted.
        stats = (_select_ranks(s, sorted({*_quantile_ranks(m), *itertools.chain(*ends)}))
                 if m >= _SAMPLE_SELECT_MIN else None)
        if stats is None:
            s = np.sort(s)
            med, q1, q3 = quantiles_sorted(s)
            ends = [(s[j0], s[j1]) for j0, j1 in ends]
        else:
            med, q1, q3 = _interpolated_quantiles(m, stats)
            ends = [(t(stats[j0]), t(stats[j1])) for j0, j1 in ends]
        cuts = []
        half = (n_sigma * IQ_TO_STDEV) * (q3 - q1) * _CORE
        with np.errstate(over="ignore", invalid="ignore"):
            cuts.append(t(med - half))
            for first, last in ends:
                cuts.append(first)
                cuts.append(np.nextafter(last, inf))
            cuts.append(t(med + half))
        # Brackets [cuts[1], cuts[2]), [cuts[3], cuts[4]), [cuts[5], cuts[6]); core
        # [cuts[0], cuts[7]) minus nothing; outer: below cuts[0] or from cuts[7] on.
        self.cuts = cuts
        self.ok = bool(np.all(np.isfinite(cuts)) and all(
            a < b for a, b in itertools.pairwise(cuts)))
        if not self.ok:
            return
        # The fill value: in the core, in no bracket (the brackets are half-open).
        self.ref = cuts[4]
        self.fref = float(self.ref)
        self.passes = 0  # passes over the values (1 when the predictions hold)
        self._pass()

    def _pass(self) -> None:
        self.passes += 1
        cuts, ref = self.cuts, self.ref
        below_base = [0, 0, 0]  # values below cuts[1], cuts[3], cuts[5]
        parts: list[np.ndarray] = []
        outer: list[np.ndarray] = []
        n = filled = low = 0  # filled: unusable values scanned as ``ref``
        c1 = c2 = 0.0  # sums of v - ref and its square over the core
        v, bad = self.v, self.bad
        bufs = _pass_buffers(v.dtype)
        # (A float64 square may overflow: such a block's core is summed by itself.)
        with np.errstate(over="ignore", invalid="ignore"):
            for sl in _slices(v.shape):
                vb = v[sl]
                size = vb.size
                bb = None
                if bad is not None:
                    bb = bad[sl]
                    if not bb.flags.c_contiguous:  # (a bin of an image: count and select
                        bb = bufs[2][:size].reshape(vb.shape)  # from a contiguous copy)
                        bb[...] = bad[sl]
                dropped = 0 if bb is None else int(np.count_nonzero(bb))
                if dropped == size:
                    continue  # (never scanned, so in none of the counts)
                copy = bufs[0][:size].reshape(vb.shape)
                if dropped or not vb.flags.c_contiguous:
                    # A contiguous copy (the compares run twice as fast on it than on a
                    # strided view) whose bad values become ``ref``.
                    x = copy
                    x[...] = vb
                    if dropped:
                        np.copyto(x, ref, where=bb)
                else:
                    x = vb  # read in place: nothing to replace
                got = self._scan(x.reshape(-1), bufs)
                # Non-finite values show in the sums (finite squares of float32 cannot
                # overflow; float64 ones can, and then nothing is replaced).
                if not math.isfinite(got[3]):
                    usable = np.isfinite(x)
                    nonfinite = size - int(np.count_nonzero(usable))
                    if nonfinite:
                        dropped += nonfinite
                        if x is not copy:
                            copy[...] = x
                            x = copy
                        np.copyto(x, ref, where=np.logical_not(usable))
                        got = self._scan(x.reshape(-1), bufs)
                n += size - dropped
                filled += dropped
                for i in range(3):
                    below_base[i] += got[0][i]
                part = got[1]
                parts.append(part)
                below = part < cuts[0]
                low += int(np.count_nonzero(below))
                o = np.compress(np.logical_or(below, part >= cuts[7], out=below), part)
                outer.append(o)
                # The core's sums: the block's sums less its outer values', unless the
                # difference would lose digits (heavy tails); then the core by itself,
                # while the block is still in cache.
                o1, o2 = _centred_sums(o, self.fref)
                if math.isfinite(got[3]) and o2 <= _CANCEL * max(got[3] - o2, 0.0):
                    c1 += got[2] - o1
                    c2 += got[3] - o2
                else:
                    a1, a2 = self._block_core_sums(x.reshape(-1), bufs)
                    c1 += a1
                    c2 += a2
        self.n = n
        self.outer = np.concatenate(outer) if outer else np.empty(0, self.dtype)
        # A smoothed image's copied values are megabytes: gathered, with the masks that
        # split them, in reused buffers (fresh ones would be pages to fault in every time).
        total = sum(part.shape[0] for part in parts)
        big = total >= _COPIED_MIN
        view = _COPIED_BUFFERS.view
        e = (np.concatenate(parts, out=view("copied", (total,), self.dtype) if big else None)
             if parts else np.empty(0, self.dtype))
        inside, upper = ((view("inside", (total,), bool), view("upper", (total,), bool))
                         if big else (np.empty(total, bool), np.empty(total, bool)))
        self.inside = [e.compress(np.logical_and(np.greater_equal(e, cuts[i], out=inside),
                                                 np.less(e, cuts[i + 1], out=upper),
                                                 out=inside))
                       for i in (1, 3, 5)]
        # Values below each cut; the fill values (``ref`` = cuts[4]) count below cuts[5].
        base = [*below_base[:2], below_base[2] - filled]
        counts = [low]
        for b, a in zip(base, self.inside, strict=True):
            counts += [b, b + a.shape[0]]
        self.counts = [*counts, n - (self.outer.shape[0] - low)]
        self.core_sums = (n - self.outer.shape[0], c1, c2)

    def _scan(self, xb: np.ndarray, bufs) -> tuple[list[int], np.ndarray, float, float]:
        """One block of the pass: the counts below cuts[1], cuts[3], cuts[5], the values
        copied out, and the sums of ``v - ref`` and its square (under the pass's
        ``errstate``: a float64 square may overflow)."""
        n = xb.shape[0]
        keep, below, d = bufs[1][:n], bufs[2][:n], bufs[3][:n]
        # XOR of the nested "below" masks: alternate intervals between the cuts, i.e. the
        # core without the brackets; starting from "not below cuts[0]" gives its
        # complement, what is copied out.
        np.greater_equal(xb, self.cuts[0], out=keep)
        counts = []
        for k, cut in enumerate(self.cuts[1:], 1):
            np.less(xb, cut, out=below)
            if k in (1, 3, 5):  # the brackets' lower cuts
                counts.append(int(np.count_nonzero(below)))
            np.not_equal(keep, below, out=keep)
        part = xb.compress(keep)
        # Sums over every value; the block's values outside the core are subtracted
        # later (or, when that would lose digits, the core is summed by itself).
        np.subtract(xb, self.fref, out=d, dtype=np.float64)
        s1 = float(np.add.reduce(d))
        np.multiply(d, d, out=d)
        return counts, part, s1, float(np.add.reduce(d))

    def _block_core_sums(self, xb: np.ndarray, bufs) -> tuple[float, float]:
        """Sums of ``v - ref`` and its square over a block's core values (``cuts[0] <=
        v < cuts[7]``; the unusable ones are ``ref`` already and add zero)."""
        cuts = self.cuts
        core, below, d = (b[:xb.shape[0]] for b in bufs[1:])
        np.greater_equal(xb, cuts[0], out=core)
        np.less(xb, cuts[7], out=below)
        np.logical_and(core, below, out=core)
        np.subtract(xb, self.fref, out=d, dtype=np.float64)
        np.copyto(d, 0.0, where=np.logical_not(core, out=below))  # before any square
        s1 = float(np.add.reduce(d))
        np.multiply(d, d, out=d)
        return s1, float(np.add.reduce(d))

    def _extract(self, lo, hi) -> np.ndarray:
        """Another pass: the usable values ``lo <= v < hi``."""
        self.passes += 1
        parts = []
        for x, usable, c in _blocks(self.v, self.bad):
            if c:
                m = np.logical_and(x >= lo, x < hi)
                if usable is not None:
                    m &= usable
                parts.append(np.compress(m.reshape(-1), x.reshape(-1)))
        return np.concatenate(parts) if parts else np.empty(0, self.dtype)

    def order_statistics(self, ks: list[int]) -> dict[int, float]:
        """Exact values of the order statistics ``ks`` (ascending, distinct)."""
        counts, cuts, t = self.counts, self.cuts, self.dtype
        out: dict[int, float] = {}
        groups: dict[tuple[int | None, int | None], list[int]] = {}
        for k in ks:
            # The tightest cuts around rank k: values >= cuts[lo] and < cuts[hi] (the
            # counts below the ascending cuts are ascending).
            j = bisect.bisect_right(counts, k)
            lo, hi = (j - 1 if j else None), (j if j < len(counts) else None)
            groups.setdefault((lo, hi), []).append(k)
        for (lo, hi), wanted in groups.items():
            if lo is not None and hi == lo + 1 and lo in (1, 3, 5):
                a = self.inside[lo // 2]
            else:  # outside its bracket
                a = self._extract(t(-np.inf) if lo is None else cuts[lo],
                                  t(np.inf) if hi is None else cuts[hi])
            base = 0 if lo is None else counts[lo]
            ranks = [k - base for k in wanted]
            got = _select_ranks(a, ranks)
            if got is None:
                got = _order_statistics(a, ranks)
            out.update({k: got[k - base] for k in wanted})
        return out

    def clip_sums(self, center: float, half: float) -> tuple[int, float, float]:
        """Count and sums of ``v - center``, ``(v - center)**2`` over the kept values."""
        interval = _kept_interval(self.dtype, center, half)
        if interval == ():
            return 0, 0.0, 0.0
        if interval is not None:
            t_lo, t_hi = interval
            lo, hi = self.cuts[0], self.cuts[7]
            if t_lo <= lo and np.nextafter(hi, lo) <= t_hi:  # the whole core is kept
                o = self.outer
                sel = np.compress(np.logical_and(o >= t_lo, o <= t_hi), o)
                m, s1, s2 = self.core_sums
                s1, s2 = _recentred(m, s1, s2, center - float(self.ref))
                o1, o2 = _centred_sums(sel, center)
                return m + sel.shape[0], s1 + o1, s2 + o2
        # A bound inside the core (or a centre beyond the dtype): another pass.
        self.passes += 1
        m, s1, s2 = 0, 0.0, 0.0
        for x, usable, c in _blocks(self.v, self.bad):
            if not c:
                continue
            with np.errstate(invalid="ignore"):
                d = np.subtract(x, center, dtype=np.float64)
                kept = np.abs(d) <= half
            if usable is not None:
                kept &= usable
            k = int(np.count_nonzero(kept))
            if k:
                d = d[kept]
                m += k
                s1 += float(np.add.reduce(d))
                s2 += float(np.add.reduce(d * d))
        return m, s1, s2


def clipped_mean_var_usable(
    values: np.ndarray, bad: np.ndarray | None, n_sigma: float = 3.0, n_iter: int = 3
) -> tuple[float, float, int]:
    """`clipped_mean_var` of the finite values of ``values`` not flagged ``bad``.

    Large float32/float64 arrays are read in place (`_Bracketed`): no copy of the usable
    values and no selection over all of them; small or degenerate ones (no spread, heavy
    ties, mostly unusable) are copied out (`usable_values`, `clipped_mean_var_selected`).
    Either way the count, the kept sets and the order statistics are exact.

    Returns
    -------
    mean, variance : float
        NaN when nothing survives.
    n : int
        Number of usable values.
    """
    v = np.asarray(values)
    if v.ndim != 2:
        v = v.reshape(1, -1)
        bad = None if bad is None else np.asarray(bad).reshape(1, -1)
    if v.size >= _BRACKET_MIN and v.dtype.type in (np.float32, np.float64):
        s = _sample(v, bad, min(max(v.size >> _SAMPLE_SHIFT, 2048), _SAMPLE_MAX))
        if s.shape[0] >= 1024:  # else mostly unusable: the copy is small
            b = _Bracketed(v, bad, s, n_sigma)
            if b.ok and b.n >= _SELECT_MIN:
                n = b.n
                stats = b.order_statistics(_quantile_ranks(n))

                def q(p: float) -> float:
                    i = p * (n - 1)
                    lo = int(i)
                    return (lo + 1 - i) * stats[lo] + (i - lo) * stats[lo + 1]

                median, q1, q3 = q(0.5), q(0.25), q(0.75)
                return (*_clip_iterations(n, median, q3 - q1, b.clip_sums, n_sigma,
                                          n_iter), n)
    u = usable_values(v, bad)
    return (*clipped_mean_var_selected(u, n_sigma, n_iter), u.shape[0])
