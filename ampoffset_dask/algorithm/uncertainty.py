"""Statistical uncertainties of interface offsets and pedestals.

Nothing here changes a measured value: the errors are computed beside LSST's numbers from
the same strips.

Interface offset
    Each edge profile value is the median of the valid strip pixels across the strip. Its
    variance is ``sigma**2 * pi / (2 (n - 1) + pi)`` (exact for n = 1, ``pi sigma**2 / 2n``
    for large n), with ``sigma`` the strip's robust pixel scatter about its profile (MAD of
    the residuals, `StripStats`, shared with the other diagnostics) and ``n`` the valid
    pixels of that line, so masked pixels raise the variance where they are. The offset is
    a mean of the moving-averaged difference, i.e. a linear combination ``sum_j c_j d_j`` of
    the raw differences: the window smoothing's correlation enters through the coefficients
    ``c_j`` (computed exactly for numpy's ``"same"`` convolution with truncated end windows
    and NaN gaps), and the clip enters by keeping only the samples inside the final clip
    band.

Pedestals
    The solve is linear in the interface offsets: ``p = A^+ B o`` with ``A`` the weighted
    Laplacian and ``B`` the weighted incidence map, so ``Cov(p) = M diag(err**2) M^T`` with
    ``M = A^+ B``. ``A^+`` is the minimum-norm inverse, the gauge LSST's ``lstsq`` fixes
    (pedestals sum to zero). Interfaces zeroed by the do-no-harm rules carry no noise.

Background (LSST's estimator with ``doBackground``)
    The background model, fitted with the amp steps still in the image, absorbs part of each
    step: a bias the pixel noise does not carry. `ampoffset_dask.algorithm.background_bias`
    estimates it from the model's (linear) response to the measured pedestal pattern along
    the strips; ``measure_detector`` adds it in quadrature to ``offset_err`` and, propagated
    with its correlations, to the pedestal errors. The values themselves are not changed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from ..geometry import AmpGrid
from .offsets import SmoothedDifference, _window_bounds, finite_run, window_lengths
from .stats import _row_sums, _stack_rows
from .strips import (
    MAD_TO_SIGMA,
    StripStats,
    _median_denominators,
    median_variance,
    strip_stats,
)

__all__ = [
    "MAD_TO_SIGMA",
    "forced_errors",
    "incidence_matrix",
    "interface_offset_error",
    "interface_offset_errors",
    "map_covariance",
    "median_variance",
    "offset_error",
    "pedestal_covariance",
    "pedestal_errors",
    "profile_variance",
    "smoothing_coefficients",
    "solve_covariance",
    "solve_map",
]

def profile_variance(strip: np.ndarray, profile: np.ndarray, side: int) -> np.ndarray:
    """Variance of each value of an edge profile from the strip's own pixels.

    ``StripStats.profile_variance`` of the strip's `strip_stats` about ``profile``.

    Parameters
    ----------
    strip : ndarray, float32
        The NaN-masked edge strip.
    profile : ndarray
        Its median profile (`edge_profile`).
    side : int
        Side of the strip (0/2: profile along x, medians over rows; 1/3: along y).

    Returns
    -------
    ndarray of float64
        One variance per profile value; NaN where the line has no valid pixel.
    """
    return strip_stats(strip, side, profile=profile).profile_variance()


def smoothing_coefficients(valid: np.ndarray, window: int | None,
                           kept: np.ndarray | None = None) -> np.ndarray:
    """Coefficients ``c`` with ``mean(avg[kept]) == sum(c * nan_to_num(diff))``.

    ``avg`` is LSST's NaN-aware moving average of ``diff`` (numpy ``"same"`` convolution of
    length ``window``, truncated at the ends, divided by the count of ``valid`` inputs);
    ``kept`` (default: ``valid``) are the outputs that enter the mean; ``window=None``
    means no smoothing.
    """
    valid = np.asarray(valid, dtype=bool)
    kept = valid if kept is None else np.asarray(kept, dtype=bool) & valid
    m = int(np.count_nonzero(kept))
    if m == 0:
        return np.zeros(valid.shape[0])
    if window is None:
        return kept / float(m)
    n = valid.shape[0]
    if m == n:  # every output kept (so every input valid): the same for every such case
        return _every_coefficients(n, window)[0].copy()
    # Output k averages inputs k - h .. k - h + window - 1 (h = window // 2), so input j
    # feeds outputs j + h - window + 1 .. j + h: a running sum of u over that range.
    every_valid = np.count_nonzero(valid) == n
    if every_valid:  # the counts are the window lengths: their inverses are cached
        u = np.where(kept, _inverse_lengths(n, window), 0.0)
    else:
        cv = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(valid, out=cv[1:])  # integer counts: exact
        lo, hi = _window_bounds(n, window)
        count = cv[hi] - cv[lo]
        u = np.where(kept, 1.0 / np.maximum(count, 1), 0.0)
    cs = np.zeros(n + 1)
    np.cumsum(u, out=cs[1:])
    lo, hi = _feed_bounds(n, window)
    c = (cs[hi] - cs[lo]) / m
    return c if every_valid else np.where(valid, c, 0.0)


@functools.lru_cache(maxsize=32)
def _every_coefficients(n: int, window: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """`smoothing_coefficients` of ``n`` valid inputs, all kept; their squares; whether
    none is zero (read-only, cached: they depend on the interface length alone)."""
    cs = np.zeros(n + 1)
    np.cumsum(_inverse_lengths(n, window), out=cs[1:])
    lo, hi = _feed_bounds(n, window)
    c = (cs[hi] - cs[lo]) / n
    c2 = c * c
    c.flags.writeable = c2.flags.writeable = False
    return c, c2, bool(np.count_nonzero(c) == n)


@functools.lru_cache(maxsize=32)
def _inverse_lengths(n: int, window: int) -> np.ndarray:
    """``1 / max(count, 1)`` of every output when every input is valid (read-only,
    cached)."""
    out = 1.0 / np.maximum(window_lengths(n, window), 1.0)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=32)
def _feed_bounds(n: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Input ``j`` of the moving average feeds outputs ``lo[j]:hi[j]`` (read-only, cached)."""
    j = np.arange(n)
    h = window // 2
    lo = np.minimum(np.maximum(j + h - window + 1, 0), n)
    hi = np.minimum(np.maximum(j + h + 1, 0), n)
    lo.flags.writeable = hi.flags.writeable = False
    return lo, hi


def offset_error(
    diff: np.ndarray,
    diff_var: np.ndarray,
    window: int | None,
    offset: float,
    clip_std: float,
    n_sigma: float = 3.0,
) -> float:
    """Standard error of a (smoothed, clipped-mean) interface offset.

    Parameters
    ----------
    diff : ndarray
        Raw edge difference ``edgeA - edgeB`` (NaN where invalid).
    diff_var : ndarray
        Variance of each ``diff`` value.
    window : int or None
        Moving-average length (None: no smoothing).
    offset, clip_std : float
        The clipped mean and clipped standard deviation of the smoothed difference; samples
        outside ``offset +- n_sigma * clip_std`` did not enter the mean.
    n_sigma : float
        The clip's half width in standard deviations.

    Returns
    -------
    float
        NaN when no valid sample exists.
    """
    diff = np.asarray(diff, dtype=np.float64)
    valid = np.isfinite(diff)
    if window is not None:
        total = np.convolve(np.where(valid, diff, 0.0), np.ones(window), "same")
        count = np.convolve(valid.astype(np.float64), np.ones(window), "same")
        avg = total / np.clip(count, 1, None)
    else:
        avg = diff
    return _clipped_mean_error(avg, valid, diff_var, window, offset, clip_std, n_sigma)


def _clipped_mean_error(avg: np.ndarray, valid: np.ndarray | None, diff_var: np.ndarray,
                        window: int | None, offset: float, clip_std: float,
                        n_sigma: float = 3.0, values: np.ndarray | None = None) -> float:
    """`offset_error` given the smoothed difference ``avg`` and the valid raw samples
    (None: ``~isnan(avg)``).

    ``values``, if given, are the valid ``avg`` sorted (`SmoothedDifference.values`): when
    there are as many as samples and both ends lie in the clip band, every sample is kept
    and the coefficients are those of the interface length alone (cached).
    """
    n = avg.shape[0]
    if (values is not None and window is not None and values.shape[0] == n and n > 0
            and avg.dtype == np.float64):
        if _band_keeps_all(values, offset, clip_std, n_sigma):
            _, c2, nonzero = _every_coefficients(n, window)
            if nonzero:
                total = float(np.add.reduce(c2 * np.asarray(diff_var, dtype=np.float64)))
                if math.isfinite(total):  # (else a variance may be NaN: checked below)
                    return math.sqrt(total)
    if valid is None:
        valid = ~np.isnan(avg)
    if not valid.any() or not math.isfinite(offset):
        return math.nan
    kept = valid
    if math.isfinite(clip_std):
        with np.errstate(invalid="ignore"):
            kept = valid & (np.abs(avg - offset) <= n_sigma * clip_std)
        if not kept.any():
            kept = valid
    c = smoothing_coefficients(valid, window, kept)
    var = np.asarray(diff_var, dtype=np.float64)
    used = c != 0
    if used.all():  # (the same values in the same order as the selections below)
        cu, vu = c, var
    else:
        cu, vu = c[used], var[used]
    if not np.isfinite(vu).all():
        return math.nan
    return math.sqrt(float(np.add.reduce(cu * cu * vu)))


def incidence_matrix(grid: AmpGrid) -> np.ndarray:
    """``B`` with ``b = B @ o`` (``o`` the interface offsets in ``grid.interfaces`` order)."""
    return _incidence(grid.associations, grid.interfaces)


def _incidence(associations: np.ndarray, interfaces: tuple) -> np.ndarray:
    """`incidence_matrix` of a Laplacian and its interfaces."""
    out = np.zeros((associations.shape[0], len(interfaces)))
    for k, itf in enumerate(interfaces):
        w = -float(associations[itf.a, itf.b])
        out[itf.a, k] = w
        out[itf.b, k] = -w
    return out


def solve_map(grid: AmpGrid) -> np.ndarray:
    """``pinv(A) @ B`` of the grid's solve (`incidence_matrix`): pedestals ``M @ o`` from
    the interface offsets ``o``.

    Cached on the grid's contents (a visit has a few detector geometries): read-only, and
    the numbers `pedestal_covariance` forms from the same matrices.
    """
    a = np.asarray(grid.associations, dtype=np.float64)
    return _solve_map(a.tobytes(), a.shape, grid.interfaces)


@functools.lru_cache(maxsize=64)
def _solve_map(buffer: bytes, shape: tuple[int, int], interfaces: tuple) -> np.ndarray:
    a = np.frombuffer(buffer, dtype=np.float64).reshape(shape).copy()
    out = np.linalg.pinv(a) @ _incidence(a, interfaces)
    out.flags.writeable = False
    return out


def map_covariance(m: np.ndarray, offset_errors: np.ndarray) -> np.ndarray:
    """``M diag(e**2) M^T``: `pedestal_covariance` given ``M`` (`solve_map`)."""
    e = np.asarray(offset_errors, dtype=np.float64)
    return (m * e[None, :] ** 2) @ m.T


def pedestal_covariance(associations: np.ndarray, incidence: np.ndarray,
                        offset_errors: np.ndarray) -> np.ndarray:
    """``Cov(p)`` of ``p = pinv(A) @ B @ o`` for independent offsets of the given errors.

    Parameters
    ----------
    associations : ndarray (n_amps, n_amps)
        The (weighted) Laplacian ``A`` used in the solve.
    incidence : ndarray (n_amps, n_interfaces)
        ``B`` of `incidence_matrix` for the same weights.
    offset_errors : ndarray (n_interfaces,)
        Standard errors; 0 for interfaces whose offset was fixed (do-no-harm).

    Returns
    -------
    ndarray (n_amps, n_amps)
    """
    m = np.linalg.pinv(np.asarray(associations, dtype=np.float64)) @ incidence
    return map_covariance(m, offset_errors)


def interface_offset_error(stats_a: StripStats, stats_b: StripStats,
                           smoothed: SmoothedDifference | None, offset: float) -> float:
    """Standard error of LSST's offset across one interface, from the two strips.

    Parameters
    ----------
    stats_a, stats_b : StripStats
        Statistics of the edge strips of amps A and B (A's on the side where B lies).
    smoothed : SmoothedDifference or None
        The moving-averaged difference and clip width behind the offset
        (`measure_interface`); None when either profile is all NaN.
    offset : float
        The offset's clipped mean (``offset_raw``).

    Returns
    -------
    float
        NaN when no position along the interface is valid.
    """
    if smoothed is None:
        return math.nan
    var = stats_a.profile_variance() + stats_b.profile_variance()
    return _clipped_mean_error(smoothed.avg, None, var, smoothed.window, offset,
                               smoothed.clip_std, values=smoothed.values)


def interface_offset_errors(pairs: Sequence[tuple[StripStats, StripStats]],
                            smoothed: Sequence[SmoothedDifference | None],
                            offsets: Sequence[float]) -> list[float]:
    """`interface_offset_error` of several interfaces (the same numbers, in order).

    Equally long interfaces that keep every smoothed value (`_clipped_mean_error`'s first
    path: coefficients of the length alone) get their strips' profile variances from one
    set of table operations (`median_variance`'s table per strip, one lookup each) and
    their sums as rows (each row's own pairwise sum). An interface whose smoothed values
    are NaN only in a run at either end (lines masked along the detector's border) and
    keeps every other one joins those of the run's length: its coefficients are zero on
    the NaNs and, on the run, those of the run's length alone (the NaN-aware window
    counts there are the run's truncated windows; the cumulative sums add exact zeros).
    The others go through `interface_offset_error` itself.
    """
    def alone(i: int) -> float:
        return interface_offset_error(*pairs[i], smoothed[i], offsets[i])

    out: list[float | None] = [None] * len(pairs)
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, sm in enumerate(smoothed):
        run = None if sm is None else _kept_run(sm, offsets[i])
        if run is None:
            out[i] = alone(i)
        else:
            groups.setdefault((run[1] - run[0], sm.window), []).append((i, run[0]))
    for (n, window), members in groups.items():
        _, c2, nonzero = _every_coefficients(n, window)
        var = _profile_variances(
            [st if st.count.shape[0] == n else st._replace(count=st.count[s:s + n])
             for i, s in members for st in pairs[i]], n) if (
            nonzero and len(members) > 1) else None
        if var is None:
            for i, _ in members:
                out[i] = alone(i)
            continue
        var = np.add(var[0::2], var[1::2])  # A's strip plus B's, C-ordered rows
        var *= c2
        for (i, _), total in zip(members, _row_sums(var).tolist(), strict=True):
            out[i] = math.sqrt(total) if math.isfinite(total) else alone(i)
    return out  # type: ignore[return-value]


def _profile_variances(strips: list[StripStats], n: int) -> np.ndarray | None:
    """Each strip's ``profile_variance()`` as a row (None unless every strip takes
    `median_variance`'s table path)."""
    if not all(isinstance(st.sigma, float) for st in strips):
        return None
    counts = _stack_rows([st.count for st in strips])
    if counts.dtype.kind not in "iu" or counts.shape[1] != n or n == 0:
        return None
    top = int(counts.max())
    if int(counts.min()) < 0 or top > 4 * n:  # (every strip within the table's limits)
        return None
    sd = np.array([st.sigma for st in strips])
    # The same double operations as `median_variance`'s table (its entries do not depend
    # on the table's length).
    table = (sd * sd * math.pi)[:, None] / _median_denominators(top)
    table[:, 0] = np.nan
    out = np.empty((len(strips), n))
    for r in range(len(strips)):
        table[r].take(counts[r], out=out[r])
    return out


def _band_keeps_all(values: np.ndarray, offset: float, clip_std: float,
                    n_sigma: float) -> bool:
    """Whether the clip band ``offset +- n_sigma * clip_std`` holds every one of the
    sorted, non-empty ``values``: it holds their two ends (the band's predicate in
    double, as `_clipped_mean_error` tests each value; it holds for every value between
    two that satisfy it)."""
    if not (math.isfinite(offset) and math.isfinite(clip_std)):
        return False
    half = n_sigma * clip_std
    return abs(float(values[0]) - offset) <= half and abs(float(values[-1]) - offset) <= half


def _kept_run(smoothed: SmoothedDifference, offset: float,
              n_sigma: float = 3.0) -> tuple[int, int] | None:
    """``(start, stop)`` of the smoothed values when they are all finite there, NaN
    elsewhere, and all kept by the clip (``(0, n)``: `_clipped_mean_error`'s every-value
    path, before its test of the coefficients and of the total); else None."""
    values, avg = smoothed.values, smoothed.avg
    n = avg.shape[0]
    if (values is None or smoothed.window is None or n == 0 or values.shape[0] == 0
            or avg.dtype != np.float64
            or not _band_keeps_all(values, offset, smoothed.clip_std, n_sigma)):
        return None
    if values.shape[0] == n:
        return 0, n
    run = finite_run(avg)
    return run if run is not None and run[1] - run[0] == values.shape[0] else None


def solve_covariance(grid: AmpGrid, offset_errors: np.ndarray, used: np.ndarray,
                     forced: np.ndarray | None = None) -> np.ndarray | None:
    """Covariance of the pedestals of LSST's solve: ``used`` interfaces enter with their
    ``offset_errors``, the ones do-no-harm zeroed with ``forced`` (`forced_errors`; exact
    when None); None when an error that enters is not finite."""
    e = np.where(used, np.asarray(offset_errors, dtype=np.float64),
                 0.0 if forced is None else np.asarray(forced, dtype=np.float64))
    if not np.isfinite(e).all():
        return None
    return map_covariance(solve_map(grid), e)


def pedestal_errors(grid: AmpGrid, offset_errors: np.ndarray, used: np.ndarray,
                    forced: np.ndarray | None = None) -> np.ndarray:
    """Pedestal standard errors of LSST's solve, NaN for amps no used interface constrains.

    Parameters
    ----------
    grid : AmpGrid
        The grid whose (weighted) Laplacian was solved.
    offset_errors : ndarray
        One error per interface of ``grid.interfaces``.
    used : ndarray of bool
        Interfaces whose measured offset entered the solve (not zeroed by do-no-harm).
    forced : ndarray, optional
        Per interface, the error of the 0 that do-no-harm put in place of an offset it
        found too large (`forced_errors`), 0 elsewhere: the solve still ties its amps, so
        their pedestals carry it.

    Returns
    -------
    ndarray of float64
        One error per amp.
    """
    cov = solve_covariance(grid, offset_errors, used, forced)
    if cov is None:
        return np.full(grid.associations.shape[0], np.nan)
    out = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    constrained = np.zeros(out.shape[0], dtype=bool)
    for k, itf in enumerate(grid.interfaces):
        if used[k]:
            constrained[itf.a] = constrained[itf.b] = True
    return np.where(constrained, out, np.nan)


def forced_errors(offset_raw: np.ndarray, offset_errors: np.ndarray, max_offset_fail: np.ndarray,
                  min_frac_fail: np.ndarray) -> np.ndarray:
    """The error of each 0 that do-no-harm put in place of a measured offset beyond
    ``ampEdgeMaxOffset``: the offset itself, with its own error (the interface's true step
    is about that, not 0); 0 for every other interface (used ones, and those without
    enough data, whose offset is unknown)."""
    raw = np.abs(np.asarray(offset_raw, dtype=np.float64))
    err = np.asarray(offset_errors, dtype=np.float64)
    take = np.asarray(max_offset_fail, bool) & ~np.asarray(min_frac_fail, bool) & np.isfinite(raw)
    return np.where(take, np.hypot(raw, np.where(np.isfinite(err), err, 0.0)), 0.0)
