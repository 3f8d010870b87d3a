"""The opt-in ``"robust"`` pedestal estimator (``AmpOffsetConfig(estimator="robust")``).

LSST's estimator weights interfaces by their length, and its background model, fitted on
the image with the amp steps still in it, absorbs part of every step. The robust estimator
keeps LSST's interface measurement (edge strips, medians, moving average, clipped mean,
same masks and do-no-harm rules) and changes three things:

1. Background re-fit: with ``doBackground``, the detector is measured again on the image
   minus the first pedestals, so that the background no longer sees the steps; the
   interface offsets are the residual offsets plus the first pedestal differences. If the
   background absorbs a fraction F of every step, one pass leaves F**2 of it and raises
   the noise by about (1 + F); iterating to convergence would remove the bias but amplify
   the noise by 1 / (1 - F), so one pass (`BACKGROUND_PASSES`) is used.
2. A more efficient interface statistic (`robust_interface_offset`): clipped line means
   instead of medians, combined over blocks of LSST's window length with an
   inverse-variance mean that clips inconsistent blocks; its error includes the blocks'
   excess scatter. Each interface is then weighted by ``1 / err**2`` instead of its length.
3. Robust down-weighting: iteratively reweighted least squares with Tukey's biweight on
   the leverage-corrected, standardised residuals, so that an interface inconsistent with
   the others (a bright star's halo or a bleed trail along an edge) stops pulling its amps.

Interfaces failing a do-no-harm check enter as LSST enters them: offset 0, with a typical
weight, and are never reweighted. The gauge is LSST's: the pedestals sum to zero.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..config import AmpOffsetConfig
from ..geometry import AmpGrid, Detector
from .offsets import InterfaceOffset, window_length
from .result import DetectorMeasurement
from .strips import StripStats, strip_stats
from .uncertainty import pedestal_covariance

__all__ = ["BACKGROUND_PASSES", "TUKEY_C", "measure_robust", "robust_interface_offset",
           "robust_offset", "robust_solve"]

logger = logging.getLogger(__name__)

#: Re-measurements on the pedestal-corrected image (with ``doBackground``).
BACKGROUND_PASSES = 1
#: Tukey biweight tuning constant (95 % efficiency for Gaussian residuals).
TUKEY_C = 4.685
_IRLS_ITERATIONS = 20


def _line_means(stats: StripStats) -> tuple[np.ndarray, np.ndarray]:
    """Clipped mean of each strip line around its median, and its variance."""
    n = stats.clip_count
    with np.errstate(invalid="ignore", divide="ignore"):
        var = stats.sigma * stats.sigma / n
    mean = stats.clip_mean.copy()
    bad = ~(n > 0)
    mean[bad] = np.nan
    var[bad] = np.nan
    return mean, var


def robust_interface_offset(
    lsst: InterfaceOffset,
    strip_a: np.ndarray,
    edge_a: np.ndarray,
    side_a: int,
    strip_b: np.ndarray,
    edge_b: np.ndarray,
    config: AmpOffsetConfig,
) -> tuple[InterfaceOffset, float]:
    """Offset ``A - B`` from clipped line means and a robust weighted mean of blocks.

    Each position along the interface gets the clipped (3 sigma about the median) mean of
    its strip line on both sides (about 1.6x less variance than a median); the differences
    are averaged in blocks of LSST's window length, and the blocks combined by an
    inverse-variance mean that, starting from the weighted median, iteratively clips blocks
    beyond 3 standard errors (a star halo or bleed-trail wing confined to part of the edge).
    The error is scaled up by the kept blocks' excess scatter (reduced chi-square) when
    there is one. Validity and do-no-harm flags follow LSST's (``good_frac``;
    ``ampEdgeMaxOffset`` applied to the new offset).

    ``edge_a`` and ``edge_b`` are the strips' median profiles (`edge_profile`).

    Returns
    -------
    InterfaceOffset, float
        The new offset record and its standard error.
    """
    return robust_offset(lsst, strip_stats(strip_a, side_a, profile=edge_a),
                         strip_stats(strip_b, (side_a + 2) % 4, profile=edge_b), config)


def robust_offset(lsst: InterfaceOffset, stats_a: StripStats, stats_b: StripStats,
                  config: AmpOffsetConfig) -> tuple[InterfaceOffset, float]:
    """`robust_interface_offset` from the strips' shared statistics (A's strip, then B's).

    The clipped line means are ``StripStats.clip_mean`` (pixels within 3 sigma of the line
    median), with variance ``sigma**2 / clip_count``.
    """
    mean_a, var_a = _line_means(stats_a)
    mean_b, var_b = _line_means(stats_b)
    diff = mean_a - mean_b
    var = var_a + var_b
    ok = np.isfinite(diff) & np.isfinite(var) & (var > 0)
    if not ok.any():
        return lsst, math.nan
    block = max(1, window_length(config.amp_edge_window_frac, diff.shape[0]))
    n_blocks = -(-diff.shape[0] // block)
    idx = np.arange(diff.shape[0]) // block
    w = np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0)
    sw = np.bincount(idx, w, n_blocks)
    swd = np.bincount(idx, w * np.where(ok, diff, 0.0), n_blocks)
    has = sw > 0
    d_b = swd[has] / sw[has]
    e_b = 1.0 / np.sqrt(sw[has])
    # Start from the weighted median (a bump cannot drag it), then clip at 3 standard errors
    # of each block, which the pixel statistics give directly.
    order = np.argsort(d_b)
    cw = np.cumsum(1.0 / e_b[order] ** 2)
    mu = float(d_b[order][np.searchsorted(cw, 0.5 * cw[-1])])
    keep = np.ones(d_b.shape[0], dtype=bool)
    for _ in range(10):
        new = np.abs(d_b - mu) <= 3.0 * e_b
        if not new.any():
            break
        keep = new
        wb = keep / e_b ** 2
        mu_new = float(np.sum(wb * d_b) / np.sum(wb))
        if mu_new == mu:
            break
        mu = mu_new
    wb = keep / e_b ** 2
    mu = float(np.sum(wb * d_b) / np.sum(wb))
    # Excess scatter of the kept blocks (reduced chi-square, never below 1) scales the error.
    k = int(keep.sum())
    chi2 = float(np.sum(wb * (d_b - mu) ** 2)) / (k - 1) if k > 1 else 1.0
    err = math.sqrt(max(chi2, 1.0) / float(np.sum(wb)))
    max_fail = bool(abs(mu) > config.amp_edge_max_offset)
    offset = 0.0 if (lsst.min_frac_fail or max_fail) else mu
    return InterfaceOffset(lsst.interface_id, offset, mu, lsst.good_frac, lsst.min_frac_fail,
                           max_fail), err


@dataclasses.dataclass(frozen=True)
class RobustSolution:
    """Pedestals, their errors and the final weight factor of each interface."""

    pedestals: np.ndarray
    errors: np.ndarray
    factors: np.ndarray


def _unit_incidence(grid: AmpGrid) -> np.ndarray:
    n = grid.associations.shape[0]
    out = np.zeros((n, len(grid.interfaces)))
    for k, itf in enumerate(grid.interfaces):
        out[itf.a, k] = 1.0
        out[itf.b, k] = -1.0
    return out


def robust_solve(grid: AmpGrid, offsets: np.ndarray, errors: np.ndarray,
                 used: np.ndarray) -> RobustSolution:
    """Inverse-variance, Tukey-reweighted least squares for ``p_a - p_b ~= o``.

    Parameters
    ----------
    grid : AmpGrid
        Amp grid (its interfaces define the order of the other arguments).
    offsets, errors : ndarray
        Interface offsets ``A - B`` and their standard errors.
    used : ndarray of bool
        Interfaces that pass the do-no-harm checks; the others enter with offset 0 and
        the median weight of the used ones, and are not reweighted.

    Returns
    -------
    RobustSolution
        Pedestals (summing to zero), their standard errors (NaN for amps no used,
        non-rejected interface constrains) and each interface's final weight factor in
        [0, 1] (1 for the fixed ones).
    """
    b = _unit_incidence(grid)
    o = np.where(used, np.asarray(offsets, dtype=np.float64), 0.0)
    err = np.asarray(errors, dtype=np.float64)
    used = np.asarray(used, dtype=bool) & np.isfinite(err) & (err > 0) & np.isfinite(o)
    n_amps = b.shape[0]
    if not used.any():
        return RobustSolution(np.zeros(n_amps), np.full(n_amps, np.nan),
                              np.ones(len(o)))
    w0 = np.zeros(len(o))
    w0[used] = 1.0 / err[used] ** 2
    w0[~used] = float(np.median(w0[used]))
    o = np.where(used, o, 0.0)
    factors = np.ones(len(o))
    p = np.zeros(n_amps)
    for _ in range(_IRLS_ITERATIONS):
        w = w0 * factors
        lap = (b * w) @ b.T
        lap_inv = np.linalg.pinv(lap)
        p_new = lap_inv @ (b @ (w * o))
        resid = o - b.T @ p_new
        # Leverage of each interface in the weighted fit; residual variance err^2 (1 - h).
        h = w * np.einsum("ik,ij,jk->k", b, lap_inv, b)
        t = resid[used] / (err[used] * np.sqrt(np.clip(1.0 - h[used], 0.05, None)))
        scale = max(1.0, 1.482602218505602 * float(np.median(np.abs(t))))
        u = t / (TUKEY_C * scale)
        new = np.ones(len(o))
        new[used] = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)
        converged = np.allclose(new, factors, atol=1e-4) and np.allclose(p_new, p, atol=1e-9)
        factors, p = new, p_new
        if converged:
            break
    w = w0 * factors
    lap = (b * w) @ b.T
    p = np.linalg.pinv(lap) @ (b @ (w * o))
    noise = np.where(used, err, 0.0)
    cov = pedestal_covariance(lap, b * w, noise)
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    constrained = np.zeros(n_amps, dtype=bool)
    for k, itf in enumerate(grid.interfaces):
        if used[k] and factors[k] > 0:
            constrained[itf.a] = constrained[itf.b] = True
    return RobustSolution(p - p.mean(), np.where(constrained, sd, np.nan), factors)


def _pedestal_image(image: np.ndarray, detector: Detector, pedestals: np.ndarray) -> np.ndarray:
    out = np.array(image, dtype=np.float32, copy=True)
    for amp, p in zip(detector.amplifiers, pedestals, strict=True):
        out[amp.slices] -= np.float32(p)
    return out


def measure_robust(
    image: Any,
    mask: Any,
    detector: Detector,
    config: AmpOffsetConfig,
    mask_planes: Mapping[str, int] | None,
) -> DetectorMeasurement:
    """`measure_detector` with ``estimator="robust"`` (see the module docstring).

    ``offset_raw`` of each interface is the robust estimator's offset (residual plus the
    pedestal difference of the previous pass), ``offset`` the value entered in the solve
    and ``weight`` the final robust weight factor.
    """
    from .measure import measure_detector

    def measure(img: Any) -> DetectorMeasurement:
        return measure_detector(img, mask, detector, config, mask_planes,
                                interface_estimator=robust_offset)

    first = measure(image)
    if first.all_masked:
        return first
    grid = detector.grid(config.apply_weights)
    index = {name: i for i, name in enumerate(detector.amp_names)}
    img = np.asarray(image, dtype=np.float32) if config.do_background else None

    def solve(m: DetectorMeasurement, base: np.ndarray):
        # The offset of the uncorrected image: the corrected one's plus the pedestals taken
        # out; an interface without a valid sample has none (LSST's 0.0), not the latter.
        raw = np.array([i.offset_raw + (base[index[i.amp_a]] - base[index[i.amp_b]]
                                        if i.good_frac > 0 else 0.0)
                        for i in m.interfaces])
        err = np.array([i.offset_err for i in m.interfaces])
        used = np.array([
            i.good_frac >= config.amp_edge_min_frac and math.isfinite(r)
            and abs(r) <= config.amp_edge_max_offset
            for i, r in zip(m.interfaces, raw, strict=True)
        ])
        return raw, err, used, robust_solve(grid, raw, err, used)

    base = np.zeros(len(detector))
    m = first
    raw, _, used, sol = solve(m, base)
    if img is not None:
        for _ in range(BACKGROUND_PASSES):
            base = sol.pedestals
            m = measure(_pedestal_image(img, detector, base))
            raw, _, used, sol = solve(m, base)
    interfaces = tuple(
        dataclasses.replace(
            i, offset_raw=float(r), offset=float(r) if u else 0.0,
            min_frac_fail=bool(i.good_frac < config.amp_edge_min_frac),
            max_offset_fail=bool(abs(r) > config.amp_edge_max_offset),
            weight=float(f),
        )
        for i, r, u, f in zip(m.interfaces, raw, used, sol.factors, strict=True)
    )
    rejected = [i.id for i in interfaces if i.weight == 0.0]
    warnings = list(m.warnings)
    if rejected:
        logger.info("%s: robust estimator rejected interface(s) %s", detector.name,
                    ", ".join(rejected))
        warnings.append(f"robust estimator rejected {', '.join(rejected)}")
    return dataclasses.replace(m, pedestals=sol.pedestals, pedestal_errors=sol.errors,
                               interfaces=interfaces, warnings=tuple(warnings))
