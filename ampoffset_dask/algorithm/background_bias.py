"""How much of each amp step LSST's background model absorbs: an error term.

AmpOffsetTask fits its background (bins about the amp size, interpolated) on the image with
the amp steps still in it, so the model follows part of every step and the edge strips
see a smaller step than the pedestals make. The bin statistics are (clipped) means and the
interpolants are linear in the bin values (Akima's weights are invariant to adding any
linear function, so a smooth sky hardly changes them), so the model of the image is the
model of its sky plus the model ``M(P)`` of the piecewise-constant pedestal pattern ``P``.
The offset of interface A-B then lacks

    s(P) = mean of M(P) over A's strip - mean of M(P) over B's strip

(the strip medians, dominated by pixel noise, respond to the model like its mean), and the
pedestals, linear in the offsets, are off by ``-G s(P)`` with ``G = pinv(A) B`` the solve of
`ampoffset_dask.algorithm.uncertainty`. ``P`` is unknown, but the measured pedestals
``p = P - G s(P) + n`` (``n`` the statistical noise, covariance ``C``) determine it:
with ``S`` the Jacobian of ``s``, ``P = T (p - n)`` with ``T = (I - G S)^-1``, so

    p - P = b + T n,    b = p - T p    (the bias estimate).

The pedestal error is therefore ``sqrt(b**2 + diag(T C T^T))``: the estimated bias plus the
noise of the bias-corrected estimate (``T`` is close to the identity on full-size
LSSTCam detectors, whose ``G S`` has eigenvalues up to about 0.2). Each interface's offset
error gets ``|s(P)|`` in quadrature. ``s`` needs the model only on a few dozen positions
along and across each strip, not as an image: one call of `step_response` for ``P`` and its
Jacobian costs a few milliseconds per full-size detector.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ..config import AmpOffsetConfig
from ..geometry import Detector
from .background import background_bins, interp_style
from .edges import strip_slices
from .interp import evaluate
from .uncertainty import solve_covariance, solve_map

__all__ = ["AbsorbedSteps", "absorbed_steps", "pedestal_bin_means", "step_response",
           "with_background_bias"]


def _bin_fractions(origins: np.ndarray, sizes: np.ndarray, lo: np.ndarray,
                   hi: np.ndarray) -> np.ndarray:
    """Fraction of each bin (rows) covered by each interval ``[lo, hi)`` (columns)."""
    start = np.maximum(origins[:, None], lo[None, :])
    stop = np.minimum((origins + sizes)[:, None], hi[None, :])
    return np.clip(stop - start, 0, None) / sizes[:, None]


def pedestal_bin_means(detector: Detector, nx: int, ny: int) -> np.ndarray:
    """``(ny, nx, n_amps)`` weights: a bin's mean of the pattern ``P`` is ``W @ P``.

    Masked pixels are ignored (they change a bin's mean of ``P`` only where a bin mixes
    amps and loses many pixels on one side).
    """
    amps = detector.amplifiers
    xo, xs, _ = background_bins(detector.width, nx)
    yo, ys, _ = background_bins(detector.height, ny)
    fx = _bin_fractions(xo, xs, np.array([a.x0 for a in amps]), np.array([a.x1 for a in amps]))
    fy = _bin_fractions(yo, ys, np.array([a.y0 for a in amps]), np.array([a.y1 for a in amps]))
    return fy[:, None, :] * fx[None, :, :]


def _samples(sl: slice, n: int) -> np.ndarray:
    """``n`` midpoint samples of the pixel range ``sl``: their mean is the range's mean
    of a function as smooth as the background model (bins of hundreds of pixels)."""
    length = sl.stop - sl.start
    if length <= n:
        return np.arange(sl.start, sl.stop, dtype=np.float64)
    return sl.start - 0.5 + (np.arange(n) + 0.5) * (length / n)


@functools.lru_cache(maxsize=64)
def _plan(detector: Detector, bin_size: float, inset: int, width: int, n: int,
          n_across: int):
    """Bins, knots and, per interface orientation, the sample grid and the weights that
    turn the model on that grid into the interfaces' strip-mean differences."""
    h, w = detector.height, detector.width
    nx, ny = int(w // bin_size + 1), int(h // bin_size + 1)
    amps = detector.amplifiers
    lines = {True: [], False: []}
    for k, itf in enumerate(detector.grid().interfaces):
        rows_a, cols_a = strip_slices(amps[itf.a], itf.side, inset, width)
        rows_b, cols_b = strip_slices(amps[itf.b], (itf.side + 2) % 4, inset, width)
        if itf.side in (1, 3):  # vertical interface: strips of columns, lines along y
            along = _samples(rows_a, n)
            lines[True].append((k, along, _samples(cols_a, n_across), along,
                                _samples(cols_b, n_across)))
        else:  # horizontal interface: strips of rows, lines along x
            along = _samples(cols_a, n)
            lines[False].append((k, _samples(rows_a, n_across), along,
                                 _samples(rows_b, n_across), along))
    groups = []
    for group in lines.values():
        if not group:
            continue
        ys = np.unique(np.concatenate([np.concatenate([g[1], g[3]]) for g in group]))
        xs = np.unique(np.concatenate([np.concatenate([g[2], g[4]]) for g in group]))
        # Flat indices into the (ys, xs) grid of A's then B's samples, interface by
        # interface; the strip means are sums over these runs (no BLAS call: its
        # threads cost more than the sums on a busy machine).
        runs, sizes = [], []
        for _, ya, xa, yb, xb in group:
            for yy, xx in ((ya, xa), (yb, xb)):
                idx = (np.searchsorted(ys, yy)[:, None] * xs.size
                       + np.searchsorted(xs, xx)[None, :]).ravel()
                runs.append(idx)
                sizes.append(idx.size)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        groups.append((ys, xs, np.concatenate(runs), starts, np.asarray(sizes, np.float64),
                       np.array([g[0] for g in group])))
    _, _, xc = background_bins(w, nx)
    _, _, yc = background_bins(h, ny)
    return nx, ny, xc, yc, pedestal_bin_means(detector, nx, ny), groups


def step_response(
    detector: Detector,
    pedestals: np.ndarray,
    short_side: int,
    fraction: float,
    inset: int,
    width: int,
    style: str = "AKIMA_SPLINE",
    undersample_style: str = "REDUCE_INTERP_ORDER",
    samples: int = 32,
    samples_across: int = 4,
) -> np.ndarray:
    """Step of the background model of a pedestal pattern across each interface.

    Parameters
    ----------
    detector : Detector
        Amp geometry; interfaces in ``detector.grid().interfaces`` order.
    pedestals : ndarray (n_amps,) or (k, n_amps)
        The pattern ``P`` (one constant per amp), or ``k`` patterns at once.
    short_side, fraction : int, float
        The background bin size is ``short_side * fraction`` (as `subtract_background`).
    inset, width : int
        Edge strips (``ampEdgeInset``, ``ampEdgeWidth``).
    style, undersample_style : str
        The background's interpolation.
    samples : int
        Positions along each interface at which the model is evaluated (it varies on
        the scale of a bin, so a few dozen give the mean along the interface).
    samples_across : int
        Positions across each strip. The strip's line medians are dominated by pixel
        noise, so they respond to the model like its mean across the strip.

    Returns
    -------
    ndarray (n_interfaces,) or (k, n_interfaces)
        ``mean(M(P) on A's strip) - mean(M(P) on B's strip)`` per interface ``A-B``: the
        part of the step ``P_A - P_B`` the background subtraction removes.
    """
    nx, ny, xc, yc, bin_means, groups = _plan(detector, short_side * fraction, inset, width,
                                              samples, samples_across)
    style = interp_style(style, undersample_style, nx, ny)
    pats = np.atleast_2d(np.asarray(pedestals, dtype=np.float64))  # (k, n_amps)
    k = pats.shape[0]
    stats = np.einsum("jia,ka->kji", bin_means, pats)
    out = np.zeros((k, len(detector.grid().interfaces)))
    # Vertical and horizontal interfaces each on the union grid of their samples: columns
    # along y first, then rows along x, as the background model is built.
    for ys, xs, gather, starts, sizes, ids in groups:
        columns = evaluate(style, yc, stats.transpose(0, 2, 1).reshape(k * nx, ny), ys)
        columns = columns.reshape(k, nx, ys.size).transpose(0, 2, 1).reshape(k * ys.size, nx)
        model = evaluate(style, xc, columns, xs).reshape(k, ys.size * xs.size)
        means = np.zeros((k, sizes.size))
        full = sizes > 0  # an empty strip (ampEdgeInset 0 empties one, as in LSST) adds 0
        if full.any():
            means[:, full] = (np.add.reduceat(model[:, gather], starts[full], axis=1)
                              / sizes[full])
        out[:, ids] = means[:, 0::2] - means[:, 1::2]
    return out[0] if np.ndim(pedestals) == 1 else out


class AbsorbedSteps(NamedTuple):
    """What the background absorbed (see `absorbed_steps`).

    Attributes
    ----------
    steps : ndarray (n_interfaces,)
        ``s(P)``: the amount each interface's offset lacks (0 for unused interfaces).
    bias : ndarray (n_amps,)
        ``measured - P``: the bias of the measured pedestals.
    transfer : ndarray (n_amps, n_amps)
        ``(I - G S)^-1`` (``S`` the Jacobian of ``s`` at ``P``): maps the statistical
        noise of the measured pedestals to that of ``P`` and of the bias estimate.
    """

    steps: np.ndarray
    bias: np.ndarray
    transfer: np.ndarray


def absorbed_steps(
    detector: Detector,
    measured: np.ndarray,
    used: np.ndarray,
    short_side: int,
    fraction: float,
    inset: int,
    width: int,
    style: str = "AKIMA_SPLINE",
    undersample_style: str = "REDUCE_INTERP_ORDER",
    apply_weights: bool = True,
    iterations: int = 1,
) -> AbsorbedSteps:
    """The background's absorbed step per interface and the pedestal bias it causes.

    The true pattern ``P`` solves ``measured = P - G s(P)`` with ``G = pinv(A) B`` (only
    ``used`` interfaces enter the solve). ``s`` is linear in ``P`` but for Akima's
    weights, so Newton's method (Jacobian ``S`` by finite differences, all patterns in
    one `step_response` call) converges in one step. ``G S`` is a fraction of
    the identity (eigenvalues up to about 0.2 on full-size LSSTCam detectors, more on
    small amps).

    Parameters
    ----------
    detector : Detector
        Amp geometry.
    measured : ndarray (n_amps,)
        Pedestals of LSST's solve.
    used : ndarray of bool (n_interfaces,)
        Interfaces whose measured offset entered the solve.
    short_side, fraction, inset, width, style, undersample_style
        As `step_response`.
    apply_weights : bool
        Whether the solve weighted the interfaces (``applyWeights``).
    iterations : int
        Newton steps (>= 1; on full-size LSSTCam detectors one step leaves ``measured = P
        - G s(P)`` satisfied to about 1e-4 ADU).

    Returns
    -------
    AbsorbedSteps
    """
    grid = detector.grid(apply_weights)
    gain = solve_map(grid)
    keep = np.asarray(used, dtype=bool)
    measured = np.asarray(measured, dtype=np.float64)
    n = measured.shape[0]
    # ADU. The response is linear but for Akima's weights, which switch where two bin
    # slopes are nearly equal: a small difference can land on such a kink and give a
    # Jacobian that makes (I - G S) nearly singular (pedestal errors of 10-20 ADU for true
    # errors of 0.5 on quarter-size amps with 1e-3; 3-106 ADU for 0.6 on a half-size one
    # with 0.1, the largest eigenvalue of G S 0.99 where its neighbours' visits give 0.55).
    # One ADU, the size of the steps measured, averages over the kinks.
    eps = 1.0

    def response(patterns: np.ndarray) -> np.ndarray:
        out = step_response(detector, patterns, short_side, fraction, inset, width, style,
                            undersample_style)
        out[..., ~keep] = 0.0
        return out

    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    true = measured.copy()
    transfer = np.eye(n)
    steps = np.zeros(keep.shape[0])
    for _ in range(iterations):
        # One call gives s at the current P and its Jacobian (finite differences).
        r = response(np.vstack([true, true + eps * np.eye(n)]))
        jac = (r[1:] - r[0]).T / eps  # (n_interfaces, n_amps)
        system = np.eye(n) - gain @ jac
        cond = np.linalg.cond(system)
        if not cond < _MAX_CONDITION:  # NaN too
            raise np.linalg.LinAlgError(
                f"the background absorbs the steps' changes (condition number {cond:.3g})")
        transfer = np.linalg.inv(system)
        delta = transfer @ (measured + gain @ r[0] - true)
        true = true + delta
        steps = r[0] + jac @ delta
    return AbsorbedSteps(steps, measured - true, transfer)


#: Beyond this condition number of ``I - G S'``, the background absorbs some change of the
#: pedestals whole: the Newton step, and the bias and errors from it, mean nothing (errors
#: of 1e16 ADU on a heavily masked detector). Simulated LSSTCam, HSC and DECam detectors
#: give 12 at most.
_MAX_CONDITION = 1e8


def with_background_bias(
    detector: Detector,
    config: AmpOffsetConfig,
    pedestals: np.ndarray,
    offset_errors: np.ndarray,
    pedestal_errors: np.ndarray,
    used: np.ndarray,
    forced: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Errors of LSST's estimator with the background's absorbed step added.

    Parameters
    ----------
    detector : Detector
        Amp geometry.
    config : AmpOffsetConfig
        The configuration of the measurement (background bins, strips, weights).
    pedestals : ndarray (n_amps,)
        Pedestals of LSST's solve.
    offset_errors : ndarray (n_interfaces,)
        Statistical errors of the interface offsets.
    pedestal_errors : ndarray (n_amps,)
        Statistical errors of the pedestals (NaN where undefined; stays NaN).
    used : ndarray of bool
        Interfaces whose measured offset entered the solve.
    forced : ndarray, optional
        Errors of the zeros do-no-harm put in place of offsets beyond ampEdgeMaxOffset
        (`~ampoffset_dask.algorithm.uncertainty.forced_errors`).

    Returns
    -------
    offset_errors, pedestal_errors : ndarray
        Per interface ``hypot(statistical, |s|)``; per amp ``sqrt(bias**2 + diag(T C
        T^T))`` with ``C`` the statistical covariance of the solve and ``T`` the transfer
        of `absorbed_steps`: the pedestals are off by the estimated bias plus the noise
        of the (bias-corrected) estimate.
    """
    amp = detector.amplifiers[0]
    grid = detector.grid(config.apply_weights)
    used = np.asarray(used, dtype=bool)
    res = absorbed_steps(
        detector, pedestals, used, min(amp.width, amp.height),
        config.background_fraction_sample, config.amp_edge_inset, config.amp_edge_width,
        config.background.algorithm, config.background.undersample_style,
        config.apply_weights,
    )
    ped = np.asarray(pedestal_errors, dtype=np.float64)
    cov = solve_covariance(grid, offset_errors, used, forced)
    if cov is not None:
        noise = np.diag(res.transfer @ cov @ res.transfer.T)
    else:
        noise = np.full(ped.shape, np.nan)
    ped = np.where(np.isfinite(ped), np.sqrt(np.clip(noise, 0.0, None) + res.bias ** 2), np.nan)
    return np.hypot(np.asarray(offset_errors, dtype=np.float64), res.steps), ped
