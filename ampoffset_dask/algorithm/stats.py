"""afw's iterative sigma-clipped statistics (``MEANCLIP``, ``STDEVCLIP``).

The clip keeps ``|v - centre| <= half`` (evaluated in double). That predicate is monotone
in ``v`` on each side of the centre, so on sorted data the kept values form one contiguous
run, found with a binary search plus an exact check of the boundary elements. Each clip
iteration is then a slice sum instead of a pass over every pixel, with the same kept set as
the element-wise loop of the contract.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "IQ_TO_STDEV",
    "clipped_mean_var",
    "clipped_stats",
    "quantiles_selected",
    "quantiles_sorted",
    "sorted_usable",
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


def quantiles_selected(a: np.ndarray) -> tuple[float, float, float]:
    """`quantiles_sorted` of unsorted ``a`` by exact selection (``a`` is permuted in place).

    The same values as sorting first, in time linear in ``len(a)``.
    """
    n = a.shape[0]
    if n <= 1:
        return quantiles_sorted(a)
    idx = [p * (n - 1) for p in (0.5, 0.25, 0.75)]
    ks = sorted({int(i) + d for i in idx for d in (0, 1)})
    v = _order_statistics(a, ks)

    def q(i: float) -> float:
        lo = int(i)
        hi = lo + 1
        return (hi - i) * v[lo] + (i - lo) * v[hi]

    return q(idx[0]), q(idx[1]), q(idx[2])


def _kept_range(s: np.ndarray, center: float, half: float) -> tuple[int, int]:
    """Indices ``[i0, i1)`` of sorted ``s`` with ``abs(s - center) <= half`` (in double).

    The predicate is monotone on each side of the centre, so the kept values are one
    contiguous run around the value nearest the centre; two binary searches over indices
    find its ends with the exact predicate and without converting the array.
    """
    n = s.shape[0]
    if n == 0:
        return 0, 0

    def keep(i: int) -> bool:
        return abs(float(s[i]) - center) <= half

    # The value nearest the centre is kept if anything is; the needle is cast to the
    # array's dtype so the search does not convert the array, and the neighbours of the
    # rounded centre cover the rounding.
    c = s.dtype.type(center)
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


def _centred_sums(v: np.ndarray, center: float, block: int = 1 << 16) -> tuple[float, float]:
    """``sum(v - center)`` and ``sum((v - center)**2)`` in double, in cache-sized blocks.

    numpy's pairwise sums only: a BLAS dot product would make the last bits depend on the
    BLAS build and its thread count, and its thread pool oversubscribes unpinned processes.
    """
    s1 = 0.0
    s2 = 0.0
    sq = np.empty(min(block, v.shape[0]))
    for start in range(0, v.shape[0], block):
        d = v[start:start + block].astype(np.float64)
        d -= center
        s1 += float(np.add.reduce(d))
        t = sq[: d.shape[0]]
        np.multiply(d, d, out=t)
        s2 += float(np.add.reduce(t))
    return s1, s2


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
        m = i1 - i0
        delta = center - self.ref
        return s1 - m * delta, s2 - 2.0 * delta * s1 + m * delta * delta


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
    iqr = q3 - q1
    sums = _RangeSums(s, median) if n >= 16 * _RangeSums.BLOCK else None
    mean = math.nan
    var = math.nan
    for it in range(n_iter):
        if var < 0:
            var = 0.0
        center = median if it == 0 else mean
        half = (n_sigma * IQ_TO_STDEV) * iqr if (it == 0 or n <= 1) else n_sigma * math.sqrt(var)
        if math.isnan(center) or math.isnan(half):
            mean = var = math.nan
            continue
        i0, i1 = _kept_range(s, center, half)
        m = i1 - i0
        if m == 0:
            mean = var = math.nan
            continue
        s1, s2 = sums(i0, i1, center) if sums is not None else _centred_sums(s[i0:i1], center)
        mean_d = s1 / m
        # Unbiased variance; one survivor gives 0 * inf = NaN, as in afw.
        var = (s2 / m - mean_d**2) * (m * m / (m * m - m)) if m > 1 else math.nan
        mean = mean_d + center
    return mean, var


def clipped_stats(
    values: np.ndarray, n_sigma: float = 3.0, n_iter: int = 3
) -> tuple[float, float]:
    """``(MEANCLIP, STDEVCLIP)`` of any array, ignoring non-finite values (NaN-safe).

    Finiteness is tested after a cast to float32, as afw does.
    """
    v = np.asarray(values).ravel()
    if v.dtype != np.float32:
        with np.errstate(over="ignore"):
            finite = np.isfinite(v.astype(np.float32))
        v = v[finite].astype(np.float64)
    else:
        v = v[np.isfinite(v)]
    mean, var = clipped_mean_var(np.sort(v), n_sigma, n_iter)
    return mean, math.sqrt(var) if var >= 0 else math.nan


def sorted_usable(values: np.ndarray, bad: np.ndarray | None) -> np.ndarray:
    """Sorted finite values not flagged ``bad`` (flagged ones are pushed past the end and cut,
    which is cheaper than boolean indexing before the sort)."""
    v = np.array(values, dtype=values.dtype, order="C").ravel()
    drop = ~np.isfinite(v)
    if bad is not None:
        drop |= bad.ravel()
    n_drop = int(np.count_nonzero(drop))
    if n_drop:
        v[drop] = np.inf
    v.sort()
    return v[: v.size - n_drop]
