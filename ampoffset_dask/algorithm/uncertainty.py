"""Statistical uncertainties of interface offsets and pedestals.

Nothing here changes a measured value: the errors are computed beside LSST's numbers from
the same strips.

Interface offset
    Each edge profile value is the median of the valid strip pixels across the strip. Its
    variance is ``sigma**2 * pi / (2 (n - 1) + pi)`` (exact for n = 1, ``pi sigma**2 / 2n``
    for large n), with ``sigma`` the strip's robust pixel scatter about its profile (MAD of
    the residuals) and ``n`` the valid pixels of that line, so masked pixels raise the
    variance where they are. The offset is a mean of the moving-averaged difference, i.e. a
    linear combination ``sum_j c_j d_j`` of the raw differences: the window smoothing's
    correlation enters through the coefficients ``c_j`` (computed exactly for numpy's
    ``"same"`` convolution with truncated end windows and NaN gaps), and the clip enters by
    keeping only the samples inside the final clip band.

Pedestals
    The solve is linear in the interface offsets: ``p = A^+ B o`` with ``A`` the weighted
    Laplacian and ``B`` the weighted incidence map, so ``Cov(p) = M diag(err**2) M^T`` with
    ``M = A^+ B``. ``A^+`` is the minimum-norm inverse, the gauge LSST's ``lstsq`` fixes
    (pedestals sum to zero). Interfaces zeroed by the do-no-harm rules carry no noise.
"""

from __future__ import annotations

import math

import numpy as np

from ..geometry import AmpGrid
from .stats import clipped_stats

__all__ = [
    "MAD_TO_SIGMA",
    "incidence_matrix",
    "interface_offset_error",
    "median_variance",
    "offset_error",
    "pedestal_covariance",
    "pedestal_errors",
    "profile_variance",
    "smoothing_coefficients",
]

MAD_TO_SIGMA = 1.482602218505602


def median_variance(sigma: float | np.ndarray, n: np.ndarray) -> np.ndarray:
    """Variance of the median of ``n`` Gaussian values of scatter ``sigma`` (NaN for n = 0)."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(sigma, dtype=np.float64) ** 2 * math.pi / (2.0 * (n - 1.0) + math.pi)
    return np.where(n > 0, out, np.nan)


def profile_variance(strip: np.ndarray, profile: np.ndarray, side: int) -> np.ndarray:
    """Variance of each value of an edge profile from the strip's own pixels.

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
    a = np.asarray(strip, dtype=np.float64)
    if side in (1, 3):
        a = a.T
    # a: (across, along); the profile runs along axis 1.
    resid = a - np.asarray(profile, dtype=np.float64)[None, :]
    n = np.count_nonzero(np.isfinite(resid), axis=0)
    r = resid[np.isfinite(resid)]
    if r.size < 2:
        return np.full(a.shape[1], np.nan)
    # Residuals about a line median: the MAD needs no re-centring.
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(r)))
    return median_variance(sigma, n)


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
    m = int(kept.sum())
    if m == 0:
        return np.zeros(valid.shape[0])
    if window is None:
        return kept / float(m)
    n = valid.shape[0]
    count = np.convolve(valid.astype(np.float64), np.ones(window), "same")
    u = np.where(kept, 1.0 / np.clip(count, 1, None), 0.0)
    # Output k averages inputs k - h .. k - h + window - 1 (h = window // 2), so input j
    # feeds outputs j + h - window + 1 .. j + h: a running sum of u over that range.
    h = window // 2
    cs = np.concatenate(([0.0], np.cumsum(u)))
    j = np.arange(n)
    lo = np.clip(j + h - window + 1, 0, n)
    hi = np.clip(j + h + 1, 0, n)
    return np.where(valid, (cs[hi] - cs[lo]) / m, 0.0)


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
    nan = ~np.isfinite(diff)
    if nan.all() or not math.isfinite(offset):
        return math.nan
    valid = ~nan
    if window is not None:
        total = np.convolve(np.where(nan, 0.0, diff), np.ones(window), "same")
        count = np.convolve(valid.astype(np.float64), np.ones(window), "same")
        avg = total / np.clip(count, 1, None)
    else:
        avg = diff
    kept = valid.copy()
    if math.isfinite(clip_std):
        kept &= np.abs(avg - offset) <= n_sigma * clip_std
    if not kept.any():
        kept = valid
    c = smoothing_coefficients(valid, window, kept)
    var = np.asarray(diff_var, dtype=np.float64)
    used = c != 0
    if not np.isfinite(var[used]).all():
        return math.nan
    return math.sqrt(float(np.sum(c[used] ** 2 * var[used])))


def incidence_matrix(grid: AmpGrid) -> np.ndarray:
    """``B`` with ``b = B @ o`` (``o`` the interface offsets in ``grid.interfaces`` order)."""
    n = grid.associations.shape[0]
    out = np.zeros((n, len(grid.interfaces)))
    for k, itf in enumerate(grid.interfaces):
        w = -float(grid.associations[itf.a, itf.b])
        out[itf.a, k] = w
        out[itf.b, k] = -w
    return out


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
    e = np.asarray(offset_errors, dtype=np.float64)
    return (m * e[None, :] ** 2) @ m.T


def interface_offset_error(
    strip_a: np.ndarray,
    profile_a: np.ndarray,
    side_a: int,
    strip_b: np.ndarray,
    profile_b: np.ndarray,
    window: int | None,
) -> float:
    """Standard error of LSST's offset across one interface, from the two strips.

    Parameters
    ----------
    strip_a, strip_b : ndarray
        NaN-masked edge strips of amps A (on ``side_a``) and B (on the opposite side).
    profile_a, profile_b : ndarray
        Their median profiles.
    side_a : int
        Side of A on which B lies.
    window : int or None
        Moving-average length (None when smoothing is off).

    Returns
    -------
    float
        NaN when no position along the interface is valid.
    """
    diff = np.asarray(profile_a, dtype=np.float64) - np.asarray(profile_b, dtype=np.float64)
    if not np.isfinite(diff).any():
        return math.nan
    var = (profile_variance(strip_a, profile_a, side_a)
           + profile_variance(strip_b, profile_b, (side_a + 2) % 4))
    valid = np.isfinite(diff)
    if window is not None:
        total = np.convolve(np.where(valid, diff, 0.0), np.ones(window), "same")
        count = np.convolve(valid.astype(np.float64), np.ones(window), "same")
        avg = np.where(valid, total / np.clip(count, 1, None), np.nan)
    else:
        avg = diff
    mean, std = clipped_stats(avg)
    return offset_error(diff, var, window, mean, std)


def pedestal_errors(grid: AmpGrid, offset_errors: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Pedestal standard errors of LSST's solve, NaN for amps no used interface constrains.

    Parameters
    ----------
    grid : AmpGrid
        The grid whose (weighted) Laplacian was solved.
    offset_errors : ndarray
        One error per interface of ``grid.interfaces``.
    used : ndarray of bool
        Interfaces whose measured offset entered the solve (not zeroed by do-no-harm).

    Returns
    -------
    ndarray of float64
        One error per amp.
    """
    e = np.where(used, np.asarray(offset_errors, dtype=np.float64), 0.0)
    if not np.isfinite(e).all():
        return np.full(grid.associations.shape[0], np.nan)
    cov = pedestal_covariance(grid.associations, incidence_matrix(grid), e)
    out = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    constrained = np.zeros(out.shape[0], dtype=bool)
    for k, itf in enumerate(grid.interfaces):
        if used[k]:
            constrained[itf.a] = constrained[itf.b] = True
    return np.where(constrained, out, np.nan)
