"""A slow, independent reference of the amp-offset numerical contract.

Written from ``../shared/ALGORITHM.md`` alone (not from ``ampoffset_dask.algorithm``), so that
differential tests can compare the package with a second reading of the contract. Every
function cites the section of ALGORITHM.md it implements. Speed is not a goal: loops and
plain numpy are used wherever they make the rule easier to check against the text.

The project decisions listed at the top of ALGORITHM.md are followed:

* ``doWindowSmoothing=False`` uses the double-precision clipped mean (not the uint16 quirk
  of section 7.1);
* unmasked NaN pixels are treated as masked in the edges and in the background statistic;
* an all-masked exposure gives zero pedestals.

Entry point: `reference_run`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "AFW_MASK_PLANES",
    "IQ_TO_STDEV",
    "ContractError",
    "RefInterface",
    "RefResult",
    "amp_grid",
    "background_model",
    "background_stats",
    "bin_geometry",
    "clipped_stats",
    "detect",
    "edge_profile",
    "interface_offset",
    "interpolate_1d",
    "reference_run",
    "smooth_float32",
    "window_average",
]

#: Section 2.1.
IQ_TO_STDEV = 0.741301109252802

#: afw's default mask dictionary (section 1.1).
AFW_MASK_PLANES = {
    "BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5,
    "DETECTED_NEGATIVE": 6, "SUSPECT": 7, "NO_DATA": 8, "VIGNETTED": 9, "STREAK": 10,
}

#: Minimum number of points per interpolation style (section 3.4, step 1).
_MIN_POINTS = {"CONSTANT": 1, "LINEAR": 2, "NATURAL_SPLINE": 3, "CUBIC_SPLINE": 3,
               "AKIMA_SPLINE": 5}


class ContractError(RuntimeError):
    """The contract says LSST raises here (or the case is outside what it defines)."""


# ---------------------------------------------------------------------------------------------
# Section 2: afw MEANCLIP / STDEVCLIP
# ---------------------------------------------------------------------------------------------
def _quantile(s: np.ndarray, p: float) -> float:
    """Quantile of sorted float data (section 2.3, floating-point rule).

    Parameters
    ----------
    s : ndarray of float64
        Sorted ascending, length > 1.
    p : float
        0.25, 0.5 or 0.75.

    Returns
    -------
    float
        ``(hi - idx) * s[lo] + (idx - lo) * s[hi]`` with ``idx = p (n - 1)``.
    """
    idx = p * (len(s) - 1)
    lo = int(idx)
    hi = lo + 1
    with np.errstate(invalid="ignore"):
        return float(np.float64(hi - idx) * s[lo] + np.float64(idx - lo) * s[hi])


def clipped_stats(values: Any, *, nan_safe: bool = True, n_sigma: float = 3.0,
                  n_iter: int = 3, pairwise: bool | None = None) -> tuple[float, float]:
    """afw's iterative clipped mean and variance (section 2).

    Parameters
    ----------
    values : array_like
        The data, already restricted to unmasked pixels (``andMask`` applied by the caller).
    nan_safe : bool
        Section 2.2: keep only values finite after a cast to float32. When False (the
        background statistic, section 3.1) only NaNs are dropped (project decision: unmasked
        NaN pixels are treated as masked); infinities stay candidates, as in afw.
    n_sigma, n_iter : float, int
        ``StatisticsControl`` clip settings (3 and 3 by default, section 2.1).
    pairwise : bool, optional
        Use numpy's pairwise ``sum`` instead of the sequential C++ sums (the "freedom for
        speed" at the top of ALGORITHM.md). None: the setting of the running
        `reference_run` (sequential outside it).

    Returns
    -------
    meanclip, varclip : float
        ``MEANCLIP`` and ``VARIANCECLIP`` (``STDEVCLIP = sqrt(varclip)``); NaN when undefined.
    """
    if pairwise is None:
        pairwise = _PAIRWISE
    vals = np.asarray(values, dtype=np.float64).ravel()
    if nan_safe:
        with np.errstate(over="ignore", invalid="ignore"):
            vals = vals[np.isfinite(vals.astype(np.float32))]
    else:
        vals = vals[~np.isnan(vals)]
    n = len(vals)
    if n == 0:
        return math.nan, math.nan
    s = np.sort(vals)
    if n == 1:
        median = q1 = q3 = float(s[0])
    else:
        median, q1, q3 = _quantile(s, 0.5), _quantile(s, 0.25), _quantile(s, 0.75)
    with np.errstate(invalid="ignore", over="ignore"):
        iqr = np.float64(q3) - np.float64(q1)
    meanclip = np.float64(np.nan)
    varclip = np.float64(np.nan)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for it in range(n_iter):
            if varclip < 0:
                varclip = np.float64(0.0)
            center = np.float64(median) if it == 0 else meanclip
            if it == 0 or n <= 1:
                half = (np.float64(n_sigma) * IQ_TO_STDEV) * iqr
            else:
                half = np.float64(n_sigma) * np.sqrt(varclip)
            if np.isnan(center) or np.isnan(half):
                meanclip = varclip = np.float64(np.nan)
                continue
            keep = np.abs(vals - center) <= half
            d = vals[keep] - center
            m = np.float64(len(d))
            # sequential (left-to-right) double sums, as the C++ loop
            if pairwise:
                s1, s2 = np.sum(d), np.sum(d * d)
            else:
                s1 = np.cumsum(d)[-1] if len(d) else np.float64(0.0)
                s2 = np.cumsum(d * d)[-1] if len(d) else np.float64(0.0)
            mean_d = s1 / m
            var = (s2 / m - mean_d**2) * (m * m / (m * m - m))
            meanclip = mean_d + center
            varclip = var
    return float(meanclip), float(varclip)


def meanclip(values: Any, nan_safe: bool = True) -> float:
    """``MEANCLIP`` of ``values`` (section 2)."""
    return clipped_stats(values, nan_safe=nan_safe)[0]


def stdevclip(values: Any, nan_safe: bool = True) -> float:
    """``STDEVCLIP`` of ``values`` (section 2): ``sqrt(VARIANCECLIP)``."""
    var = clipped_stats(values, nan_safe=nan_safe)[1]
    return math.sqrt(var) if var >= 0 else math.nan


# ---------------------------------------------------------------------------------------------
# Section 1.3: amp grid, associations and sides
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RefGrid:
    """Section 1.3 matrices.

    Attributes
    ----------
    amp_ids : ndarray of int, shape (n_y, n_x)
    associations : ndarray of int, shape (N, N)
        ``A``, the (weighted) graph Laplacian.
    sides : ndarray of int, shape (N, N)
        ``S``, side of j seen from i, -1 elsewhere.
    lengths : tuple of int
        Interface length by side (width, height, width, height).
    """

    amp_ids: np.ndarray
    associations: np.ndarray
    sides: np.ndarray
    lengths: tuple[int, int, int, int]


def amp_grid(boxes: Sequence[tuple[int, int, int, int]], apply_weights: bool) -> RefGrid:
    """Build the amp grid exactly as LSST's ``getAmpAssociations`` (section 1.3).

    Parameters
    ----------
    boxes : sequence of (x0, y0, width, height)
        Amp boxes in detector order.
    apply_weights : bool
        Weight each neighbour by the interface length.

    Returns
    -------
    RefGrid

    Raises
    ------
    ContractError
        Unequal amp sizes (LSST's RuntimeError), or when LSST's centre-ratio index rule does
        not give a one-to-one complete grid (LSST then aliases amps or raises IndexError).
    """
    dims = {(w, h) for _, _, w, h in boxes}
    if len(dims) != 1:
        raise ContractError("All amps should have the same geometry.")
    (width, height), = dims
    # Box2I centre: x0 + (width - 1) / 2 (section 1.3)
    xc = [x0 + (w - 1) / 2 for x0, _, w, _ in boxes]
    yc = [y0 + (h - 1) / 2 for _, y0, _, h in boxes]
    xmin, ymin = min(xc), min(yc)
    if xmin <= 0 or ymin <= 0:
        raise ContractError("amp centre at 0: LSST's index rule divides by zero")
    xi = [math.ceil(x / xmin / 2) - 1 for x in xc]
    yi = [math.ceil(y / ymin / 2) - 1 for y in yc]
    nx, ny = len(set(xi)), len(set(yi))
    amp_ids = np.zeros((ny, nx), dtype=int)
    seen = set()
    for amp_id, (c, r) in enumerate(zip(xi, yi, strict=True)):
        if not (0 <= r < ny and 0 <= c < nx) or (r, c) in seen:
            raise ContractError("LSST's grid index rule fails for this layout")
        seen.add((r, c))
        amp_ids[r, c] = amp_id
    if len(seen) != ny * nx:
        raise ContractError("incomplete grid")
    n = len(boxes)
    lengths = (width, height, width, height)
    assoc = np.zeros((n, n), dtype=int)
    sides = np.full((n, n), -1, dtype=int)
    steps = ((1, 0), (0, 1), (-1, 0), (0, -1))  # side 0: larger y ... side 3: smaller x
    for r in range(ny):
        for c in range(nx):
            i = amp_ids[r, c]
            total = 0
            for side, (dr, dc) in enumerate(steps):
                rr, cc = r + dr, c + dc
                if 0 <= rr < ny and 0 <= cc < nx:
                    j = amp_ids[rr, cc]
                    w = lengths[side] if apply_weights else 1
                    assoc[i, j] = -w
                    sides[i, j] = side
                    total += w
            assoc[i, i] = total
    if assoc.sum() != 0 or not np.array_equal(assoc, assoc.T):
        raise ContractError("association matrix sanity check failed")
    return RefGrid(amp_ids, assoc, sides, lengths)


def _origin_grid(boxes: Sequence[tuple[int, int, int, int]], apply_weights: bool) -> RefGrid:
    """Grid from amp origins (``(x0 - min x0) // width``), for layouts where LSST's rule of
    section 1.3 fails but the amps tile a complete rectangle; same matrices otherwise."""
    width, height = boxes[0][2], boxes[0][3]
    gx0 = min(b[0] for b in boxes)
    gy0 = min(b[1] for b in boxes)
    # fake boxes whose centres satisfy LSST's rule: index i at centre (2 i + 1) / 2 * big
    big = 2 * len(boxes) + 2
    fake = [(((x0 - gx0) // width) * big, ((y0 - gy0) // height) * big, big, big)
            for x0, y0, _, _ in boxes]
    grid = amp_grid(fake, False)
    return _with_lengths(grid, width, height, apply_weights)


def _with_lengths(grid: RefGrid, width: int, height: int, apply_weights: bool) -> RefGrid:
    """Re-weight an unweighted grid with the interface lengths of ``width x height`` amps."""
    lengths = (width, height, width, height)
    assoc = np.zeros_like(grid.associations)
    n = len(assoc)
    for i in range(n):
        for j in range(n):
            if grid.sides[i, j] >= 0:
                assoc[i, j] = -(lengths[grid.sides[i, j]] if apply_weights else 1)
        assoc[i, i] = -assoc[i].sum()
    return RefGrid(grid.amp_ids, assoc, grid.sides, lengths)


# ---------------------------------------------------------------------------------------------
# Section 1.4: edge profiles
# ---------------------------------------------------------------------------------------------
def edge_profile(amp: np.ndarray, side: int, inset: int, width: int) -> np.ndarray:
    """Float32 NaN-median profile of one amp edge strip (section 1.4 table).

    Parameters
    ----------
    amp : ndarray of float32, shape (h, w)
        The amp's pixels, masked pixels already NaN.
    side : int
        0 (larger y), 1 (larger x), 2 (smaller y), 3 (smaller x).
    inset, width : int
        ``ampEdgeInset`` and ``ampEdgeWidth``.

    Returns
    -------
    ndarray of float32
        Length w for sides 0/2, h for sides 1/3; NaN where the whole line is NaN.
    """
    outer = inset + width
    if side == 0:
        strip, axis = amp[-outer:-inset if inset else 0, :], 0  # -outer:-0 is empty
    elif side == 1:
        strip, axis = amp[:, -outer:-inset if inset else 0], 1
    elif side == 2:
        strip, axis = amp[inset:outer, :], 0
    else:
        strip, axis = amp[:, inset:outer], 1
    length = amp.shape[1] if side in (0, 2) else amp.shape[0]
    if strip.size == 0:
        return np.full(length, np.nan, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prof = np.nanmedian(strip, axis=axis)
    assert prof.dtype == np.float32 and prof.shape == (length,)
    return prof


# ---------------------------------------------------------------------------------------------
# Section 1.5: interface offset
# ---------------------------------------------------------------------------------------------
def window_average(diff: np.ndarray, win: int) -> np.ndarray:
    """NaN-aware moving average of section 1.5 (``np.convolve(..., "same")``).

    Parameters
    ----------
    diff : ndarray of float32
    win : int
        Window length, ``int(ampEdgeWindowFrac * len(diff))``.

    Returns
    -------
    ndarray of float64
        NaN where ``diff`` is NaN.

    Raises
    ------
    ContractError
        ``win == 0`` (``np.convolve`` raises in LSST).
    """
    if win < 1:
        raise ContractError("window of 0 samples: np.convolve raises")
    ones = np.ones(win)
    total = np.convolve(np.nan_to_num(diff), ones, "same")
    count = np.convolve(~np.isnan(diff), ones, "same")
    with np.errstate(invalid="ignore", over="ignore"):
        avg = total / np.clip(count, 1, None)
    avg[np.isnan(diff)] = np.nan
    return avg


@dataclasses.dataclass
class RefInterface:
    """One interface (section 1.5): A = lower amp id, B = neighbour on ``side`` of A."""

    a: int
    b: int
    side: int
    id: str
    offset: float
    offset_raw: float
    good_frac: float
    min_frac_fail: bool
    max_offset_fail: bool


def interface_offset(edge_a: np.ndarray, edge_b: np.ndarray, config: Any,
                     zero_unsupported: bool = False) -> tuple:
    """Offset A minus B of one interface with the do-no-harm checks (section 1.5).

    Parameters
    ----------
    edge_a, edge_b : ndarray of float32
        A's profile on side s and B's profile on side (s + 2) % 4.
    config : AmpOffsetConfig
        Reads ``do_window_smoothing``, ``amp_edge_window_frac``, ``amp_edge_min_frac``,
        ``amp_edge_max_offset``.
    zero_unsupported : bool
        Section 1.5 says a NaN offset "can only arise when no finite value exists, where
        goodFrac = 0 already zeroes them", but with ``ampEdgeMinFrac = 0`` the literal rule
        ``goodFrac < ampEdgeMinFrac`` is False and the NaN survives into ``b`` (and then
        ``nan_to_num(lstsq)`` zeroes every pedestal). False follows the literal rule; True
        also zeroes the offset when ``goodFrac == 0``, as the parenthesis intends (what the
        package does). NaN offsets with ``goodFrac > 0`` (degenerate clipping, section 2.3)
        are kept either way.

    Returns
    -------
    offset, original, good_frac, min_frac_fail, max_offset_fail
    """
    if np.all(np.isnan(edge_a)) or np.all(np.isnan(edge_b)):
        # fully masked edge: warning, all zero, minFracFail True
        return 0.0, 0.0, 0.0, True, False
    diff = edge_a - edge_b  # float32, positive when A is brighter
    if config.do_window_smoothing:
        win = int(config.amp_edge_window_frac * len(diff))
        avg = window_average(diff, win)
    else:
        # project decision: double clipped mean of the float32 values (no uint16 quirk)
        avg = diff.copy()
        avg[np.isnan(diff)] = np.nan
    offset = meanclip(avg)
    original = offset
    good_frac = 1 - np.count_nonzero(np.isnan(avg)) / len(avg)
    min_frac_fail = bool(good_frac < config.amp_edge_min_frac)
    max_offset_fail = bool(abs(offset) > config.amp_edge_max_offset)  # NaN: False
    if min_frac_fail or max_offset_fail or (zero_unsupported and good_frac == 0):
        offset = 0.0
    return offset, original, float(good_frac), min_frac_fail, max_offset_fail


# ---------------------------------------------------------------------------------------------
# Section 3: background
# ---------------------------------------------------------------------------------------------
def bin_geometry(length: int, n: int) -> tuple[list[int], list[int], np.ndarray]:
    """Bin origins, sizes and centres along one axis (section 3.2).

    Returns
    -------
    origins, sizes : list of int
    centres : ndarray of float64
    """
    origins, sizes, centres = [], [], []
    orig = 0
    for i in range(n):
        end = min(((i + 1) * length + n // 2) // n, length)
        size = end - orig
        origins.append(orig)
        sizes.append(size)
        centres.append(orig + 0.5 * size - 0.5)
        orig += size
    return origins, sizes, np.array(centres, dtype=np.float64)


def background_stats(image: np.ndarray, bad: np.ndarray, nx: int, ny: int) -> np.ndarray:
    """Per-bin MEANCLIP, NaN-safety off, stored as float32 (section 3.3).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)
    bad : ndarray of bool
        Pixels with an ``ignoredPixelMask`` bit.
    nx, ny : int

    Returns
    -------
    ndarray of float32, shape (ny, nx)
    """
    H, W = image.shape
    ox, sx, _ = bin_geometry(W, nx)
    oy, sy, _ = bin_geometry(H, ny)
    stats = np.empty((ny, nx), dtype=np.float32)
    for r in range(ny):
        for c in range(nx):
            ys = slice(oy[r], oy[r] + sy[r])
            xs = slice(ox[c], ox[c] + sx[c])
            vals = image[ys, xs][~bad[ys, xs]]
            stats[r, c] = meanclip(vals, nan_safe=False)
    return stats


def _max_style(n: int) -> str:
    """afw's ``lookupMaxInterpStyle`` (section 3.4 step 1)."""
    if n > 4:
        return "AKIMA_SPLINE"
    if n >= 3:
        return "CUBIC_SPLINE"
    if n == 2:
        return "LINEAR"
    if n == 1:
        return "CONSTANT"
    raise ContractError("no points")


def _gsl_natural_spline(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """GSL ``cspline`` coefficients b, c, d per interval (section 3.5)."""
    n = len(x)
    h = np.diff(x)
    c = np.zeros(n)
    m = n - 2  # unknowns c_1..c_{n-2}
    diag = np.array([2 * (h[i] + h[i + 1]) for i in range(m)])
    off = np.array([h[i + 1] for i in range(m - 1)])
    rhs = np.array([3 * ((y[i + 2] - y[i + 1]) / h[i + 1] - (y[i + 1] - y[i]) / h[i])
                    for i in range(m)])
    if m == 1:
        c[1] = rhs[0] / diag[0]
    else:
        # symmetric tridiagonal LDL^T elimination (GSL linalg/tridiag.c)
        gamma = np.zeros(m)
        alpha = np.zeros(m)
        z = np.zeros(m)
        alpha[0] = diag[0]
        gamma[0] = off[0] / alpha[0]
        z[0] = rhs[0]
        for i in range(1, m - 1):
            alpha[i] = diag[i] - off[i - 1] * gamma[i - 1]
            gamma[i] = off[i] / alpha[i]
            z[i] = rhs[i] - gamma[i - 1] * z[i - 1]
        alpha[m - 1] = diag[m - 1] - off[m - 2] * gamma[m - 2]
        z[m - 1] = rhs[m - 1] - gamma[m - 2] * z[m - 2]
        sol = z / alpha
        for i in range(m - 2, -1, -1):
            sol[i] = sol[i] - gamma[i] * sol[i + 1]
        c[1:n - 1] = sol
    b = np.empty(n - 1)
    d = np.empty(n - 1)
    for i in range(n - 1):
        b[i] = (y[i + 1] - y[i]) / h[i] - h[i] / 3 * (2 * c[i] + c[i + 1])
        d[i] = (c[i + 1] - c[i]) / (3 * h[i])
    return b, c[:-1].copy(), d


def _gsl_akima(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """GSL non-periodic Akima coefficients b, c, d per interval (section 3.5)."""
    n = len(x)
    sl = {i: (y[i + 1] - y[i]) / (x[i + 1] - x[i]) for i in range(n - 1)}
    sl[-1] = 2 * sl[0] - sl[1]
    sl[-2] = 3 * sl[0] - 2 * sl[1]
    sl[n - 1] = 2 * sl[n - 2] - sl[n - 3]
    sl[n] = 3 * sl[n - 2] - 2 * sl[n - 3]
    b = np.empty(n - 1)
    c = np.empty(n - 1)
    d = np.empty(n - 1)
    for i in range(n - 1):
        h = x[i + 1] - x[i]
        ne = abs(sl[i + 1] - sl[i]) + abs(sl[i - 1] - sl[i - 2])
        if ne == 0.0:
            b[i], c[i], d[i] = sl[i], 0.0, 0.0
            continue
        a = abs(sl[i - 1] - sl[i - 2]) / ne
        b[i] = (1 - a) * sl[i - 1] + a * sl[i]
        ne2 = abs(sl[i + 2] - sl[i + 1]) + abs(sl[i] - sl[i - 1])
        if ne2 == 0.0:
            t = sl[i]
        else:
            a2 = abs(sl[i] - sl[i - 1]) / ne2
            t = (1 - a2) * sl[i] + a2 * sl[i + 1]
        c[i] = (3 * sl[i] - 2 * b[i] - t) / h
        d[i] = (b[i] + t - 2 * sl[i]) / h**2
    return b, c, d


def _afw_constant(xk: np.ndarray, yk: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """afw's CONSTANT interpolation with recentred knots (section 3.5)."""
    if len(xk) == 1:
        return np.full(len(xs), yk[0])
    kx = [1.5 * xk[0] - 0.5 * xk[1]]
    kx += [0.5 * (xk[i] + xk[i + 1]) for i in range(len(xk) - 1)]
    kx += [1.5 * xk[-1] - 0.5 * xk[-2]]
    ky = [yk[0]] + [0.5 * (yk[i] + yk[i + 1]) for i in range(len(yk) - 1)] + [yk[-1]]
    out = np.empty(len(xs))
    for k, x in enumerate(xs):
        if x < kx[0]:
            out[k] = ky[0]
        elif x >= kx[-1]:
            out[k] = ky[-1]
        else:
            j = max(i for i in range(len(kx)) if kx[i] <= x)
            out[k] = ky[j]
    return out


def interpolate_1d(xk: np.ndarray, yk: np.ndarray, style: str, xs: np.ndarray) -> np.ndarray:
    """Evaluate an afw interpolator (GSL inside, quadratic extrapolation outside).

    Sections 3.4 (step 4) and 3.5.

    Parameters
    ----------
    xk, yk : ndarray of float64
        Knots (ascending) and values, no NaN.
    style : str
        ``CONSTANT``, ``LINEAR``, ``NATURAL_SPLINE``, ``CUBIC_SPLINE`` or ``AKIMA_SPLINE``;
        must have enough points.
    xs : ndarray of float64
        Where to evaluate.

    Returns
    -------
    ndarray of float64
    """
    n = len(xk)
    if style == "CONSTANT":
        return _afw_constant(xk, yk, xs)
    if style == "LINEAR":
        h = np.diff(xk)
        b = np.diff(yk) / h
        c = np.zeros(n - 1)
        d = np.zeros(n - 1)
    elif style in ("NATURAL_SPLINE", "CUBIC_SPLINE"):
        b, c, d = _gsl_natural_spline(xk, yk)
    else:
        b, c, d = _gsl_akima(xk, yk)

    def evaluate(x: float) -> tuple[float, float, float]:
        i = max(k for k in range(n - 1) if xk[k] <= x) if x >= xk[0] else 0
        t = x - xk[i]
        value = yk[i] + t * (b[i] + t * (c[i] + t * d[i]))
        d1 = b[i] + t * (2 * c[i] + 3 * d[i] * t)
        d2 = 2 * c[i] + 6 * d[i] * t
        return value, d1, d2

    out = np.empty(len(xs))
    for k, x in enumerate(xs):
        if np.isnan(x):
            out[k] = np.nan
        elif xk[0] <= x <= xk[-1]:
            out[k] = evaluate(x)[0]
        else:
            x0 = xk[0] if x < xk[0] else xk[-1]
            y0 = yk[0] if x < xk[0] else yk[-1]
            _, d1, d2 = evaluate(x0)
            out[k] = y0 + (x - x0) * d1 + 0.5 * (x - x0) ** 2 * d2
    return out


def _interp_with_fallback(xk: np.ndarray, yk: np.ndarray, style: str,
                          xs: np.ndarray) -> np.ndarray:
    """Drop NaN knots; too few points -> ``maxStyle(points)``; none -> NaN (section 3.4)."""
    good = ~np.isnan(yk)
    xk, yk = xk[good], yk[good]
    if len(xk) == 0:
        return np.full(len(xs), np.nan)
    if len(xk) < _MIN_POINTS[style]:
        style = _max_style(len(xk))
    return interpolate_1d(xk, yk, style, xs)


def background_model(stats: np.ndarray, shape: tuple[int, int], algorithm: str,
                     undersample: str = "REDUCE_INTERP_ORDER") -> np.ndarray:
    """The float32 background image of section 3.4.

    Parameters
    ----------
    stats : ndarray of float32, shape (ny, nx)
    shape : (H, W)
    algorithm, undersample : str

    Returns
    -------
    ndarray of float32, shape (H, W)

    Raises
    ------
    ContractError
        ``THROW_EXCEPTION`` with too few bins, or ``INCREASE_NXNYSAMPLE`` with too few bins
        (the contract does not define it).
    """
    H, W = shape
    ny, nx = stats.shape
    _, _, xc = bin_geometry(W, nx)
    _, _, yc = bin_geometry(H, ny)
    style = algorithm
    if nx < _MIN_POINTS[algorithm] or ny < _MIN_POINTS[algorithm]:
        if undersample == "REDUCE_INTERP_ORDER":
            style = _max_style(nx) if nx < ny else _max_style(ny)
        else:
            raise ContractError(f"undersampled background with {undersample}")
    rows = np.arange(H, dtype=np.float64)
    cols = np.arange(W, dtype=np.float64)
    columns = np.empty((H, nx))
    for c in range(nx):
        columns[:, c] = _interp_with_fallback(yc, stats[:, c].astype(np.float64), style, rows)
    model = np.empty((H, W), dtype=np.float32)
    for y in range(H):
        model[y] = _interp_with_fallback(xc, columns[y], style, cols).astype(np.float32)
    return model


# ---------------------------------------------------------------------------------------------
# Section 4: detection
# ---------------------------------------------------------------------------------------------
def gaussian_kernel(sigma: float, n_sigma_for_kernel: float) -> np.ndarray:
    """Normalised 1-D Gaussian weights (section 4 step 2-3), float64."""
    width = (int(sigma * n_sigma_for_kernel + 0.5) // 2) * 2 + 1
    ctr = width // 2
    k = np.array([(1 / math.sqrt(2 * math.pi) / sigma)
                  * math.exp(-((i - ctr) ** 2) / (2 * sigma**2)) for i in range(width)])
    total = 0.0
    for v in k:  # sequential double sum
        total += v
    return k / total


def smooth_float32(image: np.ndarray, k: np.ndarray) -> np.ndarray:
    """afw's float32 separable convolution of the good box (section 4 step 3).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)
    k : ndarray of float64
        Normalised 1-D kernel of odd length K.

    Returns
    -------
    ndarray of float32, shape (H - K + 1, W - K + 1)
        The "middle": output pixel (y, x) of the full image is at ``[y - K//2, x - K//2]``.
    """
    K = len(k)
    H, W = image.shape
    kf = k.astype(np.float32)
    img = image.astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        # horizontal pass: float32 accumulation in kernel order i = 0..K-1
        buf = np.zeros((H, W - K + 1), dtype=np.float32)
        for i in range(K):
            buf = buf + img[:, i:i + W - K + 1] * kf[i]
        # vertical pass: ring buffer of K rows, accumulation in ring-slot order 0..K-1,
        # input row r sits in slot r % K
        out = np.zeros((H - K + 1, W - K + 1), dtype=np.float32)
        top = np.arange(H - K + 1)  # first input row of each output row
        for slot in range(K):
            r = top + (slot - top) % K
            out = out + buf[r] * kf[r - top][:, None]
    return out


def _grow_offsets(n: int, isotropic: bool) -> list[tuple[int, int]]:
    """Stencil of section 4 step 8: disk rows ``int(sqrt(n^2 - dy^2))`` or diamond."""
    offs = []
    for dy in range(-n, n + 1):
        half = int(math.sqrt(n * n - dy * dy)) if isotropic else n - abs(dy)
        offs += [(dy, dx) for dx in range(-half, half + 1)]
    return offs


def _window_any(flag: np.ndarray, half: int) -> np.ndarray:
    """``any`` of ``flag`` over the (2 half + 1)^2 window of each good-box pixel."""
    H, W = flag.shape
    sat = np.zeros((H + 1, W + 1), dtype=np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(flag.astype(np.int64), axis=0), axis=1)
    K = 2 * half + 1
    tot = sat[K:, K:] - sat[:-K, K:] - sat[K:, :-K] + sat[:-K, :-K]
    return tot > 0


def detect(image: np.ndarray, mask: np.ndarray, planes: Mapping[str, int],
           det: Any) -> tuple[np.ndarray, float, int, int]:
    """Source detection as AmpOffsetTask runs it (section 4).

    Parameters
    ----------
    image : ndarray of float32
        After background subtraction; not modified.
    mask : ndarray of int32
    planes : mapping
        Plane name -> bit.
    det : DetectionConfig
        ``threshold_value``, ``threshold_type``, ``threshold_polarity`` (positive),
        ``include_threshold_multiplier`` (1), ``n_sigma_to_grow``, ``isotropic_grow``,
        ``n_sigma_for_kernel``, ``stats_mask``, ``sigma``.

    Returns
    -------
    mask : ndarray of int32
        DETECTED/DETECTED_NEGATIVE cleared, EDGE border and grown DETECTED set.
    threshold : float
    n_detected : int
        Pixels with the DETECTED bit afterwards (grown footprints).
    n_above : int
        Pixels of the good box at or above the threshold (before growing).
    """
    if det.threshold_polarity != "positive":
        raise ContractError("only positive polarity is in the contract")
    if det.include_threshold_multiplier != 1.0:
        raise ContractError("only include multiplier 1 is in the contract")
    H, W = image.shape
    bit = {name: 1 << b for name, b in planes.items()}
    mask = mask.astype(np.int32).copy()
    # step 1: clear DETECTED and DETECTED_NEGATIVE
    mask &= ~np.int32(bit["DETECTED"] | bit["DETECTED_NEGATIVE"])
    # steps 2-3: kernel and float32 smoothing of the good box
    k = gaussian_kernel(det.sigma, det.n_sigma_for_kernel)
    half = len(k) // 2
    if H < len(k) or W < len(k):
        raise ContractError("image smaller than the smoothing kernel")
    middle = smooth_float32(image, k)
    # step 5: threshold from the smoothed image, ignoring the smoothed statsMask planes
    stats_bits = 0
    for name in det.stats_mask:
        stats_bits |= bit.get(name, 0)
    ignore = _window_any((mask & stats_bits) != 0, half)
    if det.threshold_type == "stdev":
        threshold = det.threshold_value * stdevclip(middle[~ignore])
    else:
        threshold = float(det.threshold_value)
    # step 4: EDGE outside the good box
    edge = np.ones((H, W), dtype=bool)
    edge[half:H - half, half:W - half] = False
    mask[edge] |= np.int32(bit["EDGE"])
    # step 6 + 8: footprints grown with the stencil, clipped to the image
    with np.errstate(invalid="ignore"):
        seeds = np.zeros((H, W), dtype=bool)
        seeds[half:H - half, half:W - half] = middle.astype(np.float64) >= threshold
    n_grow = int(det.n_sigma_to_grow * det.sigma + 0.5)
    grown = np.zeros((H, W), dtype=bool)
    ys, xs = np.nonzero(seeds)
    for dy, dx in _grow_offsets(n_grow, det.isotropic_grow):
        yy, xx = ys + dy, xs + dx
        ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        grown[yy[ok], xx[ok]] = True
    mask[grown] |= np.int32(bit["DETECTED"])
    return (mask, float(threshold), int(np.count_nonzero(mask & bit["DETECTED"])),
            int(np.count_nonzero(seeds)))


# ---------------------------------------------------------------------------------------------
# Section 1.2: the whole run
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RefResult:
    """What `reference_run` returns."""

    pedestals: np.ndarray
    interfaces: list[RefInterface]
    background: str
    threshold: float
    n_detected: int
    n_above: int
    all_masked: bool
    image_after_background: np.ndarray | None = None
    mask_after_detection: np.ndarray | None = None


def reference_run(image: Any, mask: Any, detector: Any, config: Any,
                  mask_planes: Mapping[str, int] | None = None, *,
                  inf_as_masked: bool = True, lsst_grid_only: bool = True,
                  zero_unsupported: bool = False, pairwise: bool = False) -> RefResult:
    """``AmpOffsetTask.run`` of section 1.2, steps 1-8.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Read as float32 (section 7.1).
    mask : array_like of int or None
        All zero when None.
    detector : ampoffset_dask.Detector
        Amps in detector order (``name``, ``x0``, ``y0``, ``width``, ``height``).
    config : ampoffset_dask.AmpOffsetConfig
    mask_planes : mapping, optional
        afw's default dictionary when omitted.
    inf_as_masked : bool
        Treat unmasked infinite pixels like unmasked NaN pixels (masked in the edges and the
        background statistic). ALGORITHM.md's project decision names NaN only; the package's
        README extends it to inf. With False, infinities follow LSST (they enter the edge
        medians, ``nan_to_num`` turns them into float32's maximum in the window sum, and the
        background statistic, which is not NaN-safe, sorts them).
    lsst_grid_only : bool
        Raise `ContractError` where LSST's centre-ratio grid rule (section 1.3) fails; with
        False use the grid of the amp origins there (the intended tiling).
    zero_unsupported : bool
        See `interface_offset`.
    pairwise : bool
        Pairwise instead of sequential sums in every clipped statistic (see `clipped_stats`).

    Returns
    -------
    RefResult

    Raises
    ------
    ContractError
        Where LSST raises (geometry, edge width, window of 0, undersampled background...).
    """
    global _PAIRWISE
    previous, _PAIRWISE = _PAIRWISE, pairwise
    try:
        return _run(image, mask, detector, config, mask_planes, inf_as_masked,
                    lsst_grid_only, zero_unsupported)
    finally:
        _PAIRWISE = previous


#: Summation used by `clipped_stats` when its ``pairwise`` argument is None.
_PAIRWISE = False


def _run(image: Any, mask: Any, detector: Any, config: Any,
         mask_planes: Mapping[str, int] | None, inf_as_masked: bool, lsst_grid_only: bool,
         zero_unsupported: bool) -> RefResult:
    """Body of `reference_run`."""
    planes = dict(AFW_MASK_PLANES if mask_planes is None else mask_planes)
    img = np.array(image, dtype=np.float32)  # step 1: float32 deep copy
    H, W = img.shape
    invalid = np.isnan(img) | (np.isinf(img) if inf_as_masked else False)
    if inf_as_masked:
        img[invalid] = np.nan  # NaN is what the edges and the statistic skip
    msk = np.zeros((H, W), np.int32) if mask is None else np.array(mask, dtype=np.int32)
    amps = list(detector.amplifiers)  # step 2: detector order
    boxes = [(a.x0, a.y0, a.width, a.height) for a in amps]
    # step 3: geometry checks
    try:
        grid = amp_grid(boxes, config.apply_weights)
    except ContractError:
        if lsst_grid_only:
            raise
        grid = _origin_grid(boxes, config.apply_weights)
    aw, ah = amps[0].width, amps[0].height
    short = min(aw, ah)
    if config.amp_edge_width >= short - 2 * config.amp_edge_inset:
        raise ContractError("ampEdgeWidth too large for the amp size")
    bit_mask = 0
    for name in config.background.ignored_pixel_mask:
        if name in planes:
            bit_mask |= 1 << planes[name]
    # step 4: background
    status = "off"
    if config.do_background:
        bad = ((msk & bit_mask) != 0) | np.isnan(img)  # NaN pixels count as masked
        if bad.all():
            status = "skipped"  # TooManyMaskedPixelsError caught
        else:
            size = short * config.background_fraction_sample
            nx = int(W // size + 1)
            ny = int(H // size + 1)
            stats = background_stats(img, bad, nx, ny)
            model = background_model(stats, (H, W), config.background.algorithm,
                                     config.background.undersample_style)
            with np.errstate(invalid="ignore", over="ignore"):
                img = img - model
            status = "ok"
    image_after_background = img.copy()
    # step 5: detection
    threshold, n_detected, n_above = math.nan, 0, 0
    if config.do_detection:
        msk, threshold, n_detected, n_above = detect(img, msk, planes, config.detection)
    # step 6: masked pixels -> NaN (unmasked NaN pixels are NaN already)
    img[(msk & bit_mask) != 0] = np.nan
    # step 7: edges, offsets, right-hand side (sections 1.4-1.6)
    n = len(amps)
    A, S = grid.associations, grid.sides
    profiles: dict[tuple[int, int], np.ndarray] = {}

    def profile(i: int, side: int) -> np.ndarray:
        if (i, side) not in profiles:
            a = amps[i]
            profiles[i, side] = edge_profile(img[a.y0:a.y0 + a.height, a.x0:a.x0 + a.width],
                                             side, config.amp_edge_inset, config.amp_edge_width)
        return profiles[i, side]

    b = np.zeros(n)
    offsets: dict[tuple[int, int], float] = {}
    interfaces = []
    for i in range(n):
        for j in np.flatnonzero(A[i] < 0):
            j = int(j)
            side = int(S[i, j])
            w = grid.lengths[side] if config.apply_weights else 1
            if i < j:
                off, raw, frac, mf, xf = interface_offset(
                    profile(i, side), profile(j, (side + 2) % 4), config, zero_unsupported)
                offsets[i, j] = off
                interfaces.append(RefInterface(i, j, side, f"{amps[i].name}-{amps[j].name}",
                                               off, raw, frac, mf, xf))
                o = off
            else:
                o = -offsets[j, i]
            b[i] += w * o
    # step 8: solve
    # unmasked NaN (and, with inf_as_masked, inf) pixels count as masked (project decision)
    all_masked = bool((((msk & bit_mask) != 0) | invalid).all())
    if all_masked:
        pedestals = np.zeros(n)
    else:
        pedestals = np.nan_to_num(np.linalg.lstsq(A, b, rcond=None)[0])
    return RefResult(pedestals, interfaces, status, threshold, n_detected, n_above,
                     all_masked, image_after_background, msk)
