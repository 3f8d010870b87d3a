"""A focal-plane simulator: realistic post-ISR exposures with known amp pedestals.

`simulate_detector` makes one detector in memory; `simulate_focal_plane` writes one file per
(visit, detector) of a built-in camera in the project's FITS layout, plus ``truth.parquet``
with the injected pedestals, so that ``ampoffset-dask run DIR`` can be checked against truth.

What is simulated, in ADU (image = signal + noise + pedestal):

- sky: a smooth level that varies over the focal plane and between visits (about 1200 ADU
  by default), with linear gradients and a radial term;
- stars: Moffat point-spread function, power-law fluxes, drawn on small stamps; a few are
  bright enough to saturate, with bleed trails along their columns (mask ``SAT``);
- photon noise (``signal / gain``) and read noise (``(read_noise / gain) ** 2``), drawn in
  float32; the variance plane holds the same model;
- cosmic rays: short straight tracks (mask ``CR``); bad columns, hot or dead (mask ``BAD``);
- per-amp pedestals: zero-mean, normally distributed (1.5 ADU by default), truncated so that
  no interface step exceeds the default do-no-harm limit (``ampEdgeMaxOffset`` = 5 ADU).

Every random number comes from a `numpy.random.Generator` seeded with ``(seed, visit,
detector id)``, so a detector's pixels do not depend on which other detectors are simulated
or on the order in which they are made.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import ConfigError, InputError
from .geometry import Amplifier, Detector
from .masks import DEFAULT_MASK_PLANES

__all__ = [
    "FocalPlaneSky",
    "SimulatedDetector",
    "SimulationResult",
    "scale_detector",
    "select_detectors",
    "sequence_truth",
    "simulate_detector",
    "simulate_focal_plane",
    "simulated_file_name",
]

logger = logging.getLogger(__name__)

#: Pixels of a full-size LSSTCam detector; object densities below are per this area.
_REFERENCE_AREA = 4096 * 4004
#: Smallest amp side `scale_detector` produces: the default config needs
#: ``ampEdgeWidth < short side - 2 * ampEdgeInset`` (64 < 80 - 10).
MIN_AMP_SIZE = 80

SkyFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


class SimulatedDetector(NamedTuple):
    """One simulated detector (unpacks as ``image, mask, variance, pedestals``).

    Attributes
    ----------
    image : ndarray of float32, shape (height, width)
    mask : ndarray of int32
        ``BAD``, ``SAT`` and ``CR`` bits set (bits from ``mask_planes``).
    variance : ndarray of float32
    pedestals : ndarray of float64
        Injected pedestals in the detector's amp order (zero mean).
    """

    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    pedestals: np.ndarray


@dataclasses.dataclass(frozen=True)
class SimulationResult:
    """What `simulate_focal_plane` wrote.

    Attributes
    ----------
    paths : list of Path
        One FITS file per (visit, detector), in visit then detector order.
    truth : pandas.DataFrame
        Columns ``visit, detector, amp, pedestal``: the injected pedestals (each detector's
        pedestals have zero mean, as the algorithm's least-squares solution does).
    truth_path : Path
        ``out_dir / "truth.parquet"``.
    """

    paths: list[Path]
    truth: Any
    truth_path: Path


@dataclasses.dataclass(frozen=True)
class FocalPlaneSky:
    """A smooth sky over the focal plane: ``level * (1 + gx*u + gy*v + curvature*(u²+v²))``.

    ``u, v`` are focal-plane coordinates (mm) divided by ``radius_mm``.

    Attributes
    ----------
    level : float
        Sky at the focal-plane centre (ADU).
    gx, gy : float
        Fractional change from the centre to ``radius_mm`` along x and y.
    curvature : float
        Fractional radial term (negative: darker towards the edge, like vignetting).
    radius_mm : float
        Normalisation radius.
    """

    level: float
    gx: float = 0.0
    gy: float = 0.0
    curvature: float = 0.0
    radius_mm: float = 320.0

    @classmethod
    def for_visit(cls, seed: int, visit: int, sky: float = 1200.0,
                  radius_mm: float = 320.0) -> FocalPlaneSky:
        """Draw a visit's sky: level within +-30 % of ``sky``, gradients of a few per cent."""
        rng = np.random.default_rng([int(seed), int(visit), 0x5C1])
        return cls(
            level=float(sky * rng.uniform(0.7, 1.3)),
            gx=float(rng.normal(0.0, 0.04)),
            gy=float(rng.normal(0.0, 0.04)),
            curvature=float(-rng.uniform(0.0, 0.06)),
            radius_mm=radius_mm,
        )

    def __call__(self, u_mm: np.ndarray, v_mm: np.ndarray) -> np.ndarray:
        u = np.asarray(u_mm, dtype=np.float32) / np.float32(self.radius_mm)
        v = np.asarray(v_mm, dtype=np.float32) / np.float32(self.radius_mm)
        out = np.float32(self.gx) * u + np.float32(self.gy) * v
        out = out + np.float32(self.curvature) * (u * u + v * v)
        out += np.float32(1.0)
        out *= np.float32(self.level)
        return out

    def on_detector(self, corners_mm: Sequence[Sequence[float]], width: int,
                    height: int) -> SkyFunction:
        """The sky as a function of detector pixel ``(y, x)`` for a detector whose outer
        corners (lower-left, lower-right, upper-right, upper-left, in mm) are given.

        The mapping is affine, so a shrunk detector (see `scale_detector`) keeps its place.
        """
        c = np.asarray(corners_mm, dtype=np.float64)[:, :2] / self.radius_mm
        # Normalised focal-plane coordinates are affine in the pixel centre (x', y'):
        # U = pu + qu x' + ru y', V = pv + qv x' + rv y'. The sky polynomial then splits into
        # a row term, a column term and one cross term, evaluated on 1-D vectors.
        (pu, pv), (qu, qv), (ru, rv) = c[0], (c[1] - c[0]) / width, (c[3] - c[0]) / height
        g, gy, k = self.gx, self.gy, self.curvature
        const = 1.0 + g * pu + gy * pv + k * (pu * pu + pv * pv)
        ax1 = g * qu + gy * qv + 2.0 * k * (pu * qu + pv * qv)
        ax2 = k * (qu * qu + qv * qv)
        ay1 = g * ru + gy * rv + 2.0 * k * (pu * ru + pv * rv)
        ay2 = k * (ru * ru + rv * rv)
        axy = 2.0 * k * (qu * ru + qv * rv)
        level = self.level

        def sky(y: np.ndarray, x: np.ndarray) -> np.ndarray:
            xs = np.asarray(x, dtype=np.float64) + 0.5
            ys = np.asarray(y, dtype=np.float64) + 0.5
            fx = (level * (const + xs * (ax1 + ax2 * xs))).astype(np.float32)
            fy = (level * ys * (ay1 + ay2 * ys)).astype(np.float32)
            out = fx + fy
            if axy != 0.0:
                out += (level * axy * ys).astype(np.float32) * xs.astype(np.float32)
            return out

        return sky


# -- geometry ------------------------------------------------------------
def scale_detector(detector: Detector, scale: float, min_amp_size: int = MIN_AMP_SIZE) -> Detector:
    """Shrink (or grow) a detector, keeping its amp names, order and grid layout.

    Each amp's width and height are multiplied by ``scale``, rounded, and kept at least
    ``min_amp_size`` so that the default configuration still runs on it.

    Parameters
    ----------
    detector : Detector
        A detector whose amps tile a rectangular grid of equal amps.
    scale : float
        Size factor (> 0); 1 returns ``detector`` unchanged.
    min_amp_size : int
        Smallest amp side in pixels.

    Returns
    -------
    Detector
    """
    if not scale > 0:
        raise InputError(f"scale must be > 0, got {scale!r}")
    if scale == 1.0:
        return detector
    amp0 = detector.amplifiers[0]
    width = max(min_amp_size, round(amp0.width * scale))
    height = max(min_amp_size, round(amp0.height * scale))
    grid = detector.grid()
    gx0 = min(a.x0 for a in detector.amplifiers)
    gy0 = min(a.y0 for a in detector.amplifiers)
    amps = []
    for amp in detector.amplifiers:
        col = (amp.x0 - gx0) // amp0.width
        row = (amp.y0 - gy0) // amp0.height
        amps.append(Amplifier(amp.name, col * width, row * height, width, height))
    ny, nx = grid.amp_ids.shape
    return Detector(detector.name, nx * width, ny * height, tuple(amps), detector.id)


# -- one detector ------------------------------------------------------------
def _per_amp(value: float | Sequence[float], n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise InputError(f"{name}: expected one value or {n} (one per amp), got {arr.shape}")
    return arr


def _count(rng: np.random.Generator, value: int | None, density: float, area: int,
           minimum: int) -> int:
    if value is not None:
        return int(value)
    return max(minimum, int(rng.poisson(density * area / _REFERENCE_AREA)))


def _moffat_alpha(fwhm: float, beta: float) -> float:
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def _add_stars(signal: np.ndarray, rng: np.random.Generator | None, fluxes: np.ndarray,
               fwhm: float, beta: float, positions: np.ndarray | None = None,
               max_radius: float = 150.0) -> None:
    """Add Moffat stars of total ``fluxes`` (ADU), each on its own stamp, at random
    positions (drawn from ``rng``) or at ``positions`` (``(n, 2)`` array of x, y)."""
    h, w = signal.shape
    alpha = _moffat_alpha(fwhm, beta)
    norm = (beta - 1.0) / (math.pi * alpha * alpha)
    if positions is None:
        xs = rng.uniform(0.0, w, size=fluxes.size)
        ys = rng.uniform(0.0, h, size=fluxes.size)
    else:
        xs, ys = np.asarray(positions, dtype=np.float64).reshape(-1, 2).T
    for flux, xc, yc in zip(fluxes, xs, ys, strict=True):
        peak = flux * norm
        # Radius where the profile drops to ~0.2 ADU.
        radius = alpha * math.sqrt(max((peak / 0.2) ** (1.0 / beta) - 1.0, 1.0))
        r = int(min(max(radius, 3.0), max_radius))
        ix, iy = int(xc), int(yc)
        x0, x1 = max(ix - r, 0), min(ix + r + 1, w)
        y0, y1 = max(iy - r, 0), min(iy + r + 1, h)
        dx = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - xc)) ** 2
        dy = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - yc)) ** 2
        rr = (dy[:, None] + dx[None, :]) * np.float32(1.0 / (alpha * alpha))
        rr += np.float32(1.0)
        signal[y0:y1, x0:x1] += np.float32(peak) * _inverse_power(rr, beta)


def _inverse_power(rr: np.ndarray, beta: float) -> np.ndarray:
    """``rr ** -beta`` (float32), the same bits on every machine for the half-integer
    ``beta`` the profiles use: products and a square root, each correctly rounded.

    numpy's ``power`` runs vectorised library code on some processors (AVX-512) whose
    last bits differ from the scalar code's, so the simulated images, and every number
    measured on them, would depend on the machine.
    """
    twice = 2.0 * beta
    if twice != int(twice) or not 0.0 < beta <= 64.0:
        return rr ** np.float32(-beta)  # (other exponents: numpy's, machine-dependent)
    n = int(beta)
    p = np.sqrt(rr) if twice % 2 else np.ones_like(rr)
    for _ in range(n):
        p *= rr
    return np.float32(1.0) / p


def _bleed(signal: np.ndarray, limit: float) -> np.ndarray:
    """Spread charge above ``limit`` up and down the columns of ``signal`` (one amp, in place);
    return the mask of saturated pixels."""
    h = signal.shape[0]
    sat = np.zeros(signal.shape, dtype=bool)
    over = signal > limit
    if not over.any():
        return sat
    for c in np.flatnonzero(over.any(axis=0)):
        column = signal[:, c]
        rows = np.flatnonzero(column > limit)
        # Treat each contiguous run of saturated rows as one core.
        for run in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1):
            lo, hi = int(run[0]), int(run[-1]) + 1
            excess = float((column[lo:hi] - limit).sum())
            extra = int(excess / limit / 2.0)
            lo2, hi2 = max(lo - extra, 0), min(hi + extra, h)
            np.maximum(column[lo2:hi2], np.float32(limit), out=column[lo2:hi2])
            sat[lo2:hi2, c] = True
    return sat


def simulate_detector(
    detector: Detector,
    *,
    seed: int | Sequence[int],
    sky: float | SkyFunction = 1200.0,
    sky_gradient: float = 0.03,
    gain: float | Sequence[float] = 1.7,
    read_noise: float | Sequence[float] = 6.0,
    saturation: float | Sequence[float] = 100_000.0,
    psf_fwhm: float = 3.5,
    psf_beta: float = 3.5,
    n_stars: int | None = None,
    n_saturated: int | None = None,
    n_cosmic_rays: int | None = None,
    n_bad_columns: int | None = None,
    pedestal_sigma: float = 1.5,
    pedestal_limit: float = 2.4,
    pedestals: Sequence[float] | None = None,
    mask_planes: dict[str, int] | None = None,
    bright_stars: Sequence[Sequence[float]] | None = None,
    bright_star_beta: float = 2.0,
    gain_errors: float | Sequence[float] | None = None,
) -> SimulatedDetector:
    """Simulate one post-ISR detector image with per-amp pedestals.

    Parameters
    ----------
    detector : Detector
        Geometry (any size; see `scale_detector`).
    seed : int or sequence of int
        Seed of the `numpy.random.Generator` (``simulate_focal_plane`` uses
        ``(seed, visit, detector id)``).
    sky : float or callable
        Sky level in ADU, or ``sky(y, x) -> ndarray`` evaluated on a column of row indices
        (shape (h, 1)) and a row of column indices (shape (1, w)) that broadcasts to the image.
    sky_gradient : float
        With a float ``sky``: standard deviation of the random fractional linear gradient
        across the detector along each axis.
    gain, read_noise, saturation : float or sequence of float
        Per amp (amp order) or one value: e-/ADU, e-, ADU.
    psf_fwhm, psf_beta : float
        Moffat profile of the stars (pixels).
    n_stars, n_saturated, n_cosmic_rays, n_bad_columns : int, optional
        Object counts; by default drawn from densities of a typical 15 s LSSTCam exposure
        (about 1500 stars, 2 saturated stars, 300 cosmic rays and 2 bad columns per
        16 Mpixel), at least one saturated star and one bad column.
    pedestal_sigma : float
        Standard deviation of the injected per-amp pedestals (ADU).
    pedestal_limit : float
        Pedestals are drawn within +-``pedestal_limit`` before their mean is removed, so no
        interface step exceeds ``2 * pedestal_limit`` (below the 5 ADU do-no-harm limit).
    pedestals : sequence of float, optional
        Inject exactly these pedestals (amp order) instead of random ones.
    mask_planes : dict, optional
        Plane name -> bit (afw's default dictionary when omitted).
    bright_stars : sequence of (x, y, flux), optional
        Extra stars at fixed detector positions (pixels) with total fluxes in ADU, drawn
        with broad wings (Moffat ``bright_star_beta``, stamps up to 600 pixels in radius)
        like the halo of a bright star; they saturate and bleed like the others. They use
        no random numbers, so the rest of the image is unchanged by adding them.
    bright_star_beta : float
        Moffat exponent of the bright stars' profile (smaller: broader wings).
    gain_errors : float or sequence of float, optional
        Fractional gain-calibration error per amp (amp order): the amp's signal and noise
        are multiplied by ``1 + error`` before the pedestal is added, so its step to a
        neighbour grows with the flux (a multiplicative, not additive, offset).

    Returns
    -------
    SimulatedDetector
        ``(image, mask, variance, pedestals)``.
    """
    if not pedestal_limit > 0 or not pedestal_sigma >= 0:
        raise ConfigError(f"pedestal_sigma must be >= 0 and pedestal_limit > 0, got "
                          f"{pedestal_sigma!r} and {pedestal_limit!r}")
    rng = np.random.default_rng(seed)
    planes = DEFAULT_MASK_PLANES if mask_planes is None else mask_planes
    bad_bit = np.int32(1 << planes["BAD"])
    sat_bit = np.int32(1 << planes["SAT"])
    cr_bit = np.int32(1 << planes["CR"])
    h, w = detector.shape
    n_amps = len(detector)
    gains = _per_amp(gain, n_amps, "gain")
    noises = _per_amp(read_noise, n_amps, "read_noise")
    sats = _per_amp(saturation, n_amps, "saturation")
    area = h * w

    # Pedestals first, so that they do not depend on the object counts.
    if pedestals is None:
        peds = rng.normal(0.0, pedestal_sigma, n_amps)
        bad = np.abs(peds) > pedestal_limit
        while bad.any():
            peds[bad] = rng.normal(0.0, pedestal_sigma, int(bad.sum()))
            bad = np.abs(peds) > pedestal_limit
        peds -= peds.mean()
    else:
        peds = _per_amp(pedestals, n_amps, "pedestals").copy()

    # Sky (float32, smooth).
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    if callable(sky):
        value = np.asarray(sky(ys, xs), dtype=np.float32)
        if value.shape == (h, w) and value.flags.writeable and value.flags.c_contiguous:
            signal = value
        else:
            signal = np.empty((h, w), dtype=np.float32)
            signal[...] = value
    else:
        gx, gy = rng.normal(0.0, sky_gradient, 2)
        fx = np.float32(sky) * (np.float32(1.0) + np.float32(gx) * (xs / np.float32(w) - 0.5))
        fy = np.float32(1.0) + np.float32(gy) * (ys / np.float32(h) - 0.5)
        signal = (fy * fx).astype(np.float32, copy=False)
    del ys, xs

    # Stars: power-law fluxes (N(>F) ~ 1/F) between 300 and 3e5 ADU, plus saturated ones.
    n_star = _count(rng, n_stars, 1500.0, area, 10)
    fmin, fmax = 300.0, 3.0e5
    u = rng.uniform(0.0, 1.0, n_star)
    fluxes = fmin / (1.0 - u * (1.0 - fmin / fmax))
    n_sat = _count(rng, n_saturated, 2.0, area, 1)
    alpha = _moffat_alpha(psf_fwhm, psf_beta)
    sat_flux = float(sats.max()) * math.pi * alpha * alpha / (psf_beta - 1.0)
    fluxes = np.concatenate([fluxes, sat_flux * rng.uniform(1.5, 20.0, n_sat)])
    _add_stars(signal, rng, fluxes, psf_fwhm, psf_beta)
    if bright_stars:
        bright = np.asarray(bright_stars, dtype=np.float64).reshape(-1, 3)
        _add_stars(signal, None, bright[:, 2], psf_fwhm, bright_star_beta,
                   positions=bright[:, :2], max_radius=600.0)

    # Bleed trails of saturated stars, then variance and noise, amp by amp (float32).
    saturated = np.zeros((h, w), dtype=bool)
    variance = np.maximum(signal, np.float32(0.0))
    for i, amp in enumerate(detector.amplifiers):
        sl = amp.slices
        saturated[sl] = _bleed(signal[sl], float(sats[i]))
        np.maximum(signal[sl], np.float32(0.0), out=variance[sl])
        variance[sl] *= np.float32(1.0 / gains[i])
        variance[sl] += np.float32((noises[i] / gains[i]) ** 2)
    image = rng.standard_normal((h, w), dtype=np.float32)
    image *= np.sqrt(variance)
    image += signal
    del signal

    mask = np.zeros((h, w), dtype=np.int32)

    # Cosmic rays: straight tracks of 1-12 pixels, 300-3000 ADU per pixel.
    n_cr = _count(rng, n_cosmic_rays, 300.0, area, 1)
    if n_cr:
        length = rng.integers(1, 13, n_cr)
        angle = rng.uniform(0.0, math.pi, n_cr)
        x0 = rng.uniform(0.0, w, n_cr)
        y0 = rng.uniform(0.0, h, n_cr)
        energy = rng.uniform(300.0, 3000.0, n_cr)
        steps = np.arange(12)
        use = steps[None, :] < length[:, None]
        # The C library's cos and sin: numpy's vectorised ones differ in the last bit on
        # some processors, which can move a track by a pixel.
        cos = np.array([math.cos(a) for a in angle])
        sin = np.array([math.sin(a) for a in angle])
        cx = (x0[:, None] + cos[:, None] * steps[None, :])[use].astype(int)
        cy = (y0[:, None] + sin[:, None] * steps[None, :])[use].astype(int)
        de = np.broadcast_to(energy[:, None], use.shape)[use]
        ok = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
        cx, cy, de = cx[ok], cy[ok], de[ok]
        np.add.at(image, (cy, cx), de.astype(np.float32))
        mask[cy, cx] |= cr_bit

    # Saturation: the readout clips at the amp's limit.
    for i, amp in enumerate(detector.amplifiers):
        sl = amp.slices
        limit = np.float32(sats[i])
        np.minimum(image[sl], limit, out=image[sl])
        saturated[sl] |= image[sl] >= limit
    mask[saturated] |= sat_bit

    # Bad columns: part of an amp's column, hot (+ a few hundred ADU) or dead (~10 % response).
    n_bad = _count(rng, n_bad_columns, 2.0, area, 1)
    for _ in range(n_bad):
        amp = detector.amplifiers[int(rng.integers(n_amps))]
        col = amp.x0 + int(rng.integers(amp.width))
        start = amp.y0 + int(rng.integers(0, amp.height // 2))
        stop = amp.y1 if rng.uniform() < 0.5 else start + int(rng.integers(1, amp.height // 2 + 1))
        if rng.uniform() < 0.5:
            image[start:stop, col] += np.float32(rng.uniform(200.0, 2000.0))
        else:
            image[start:stop, col] *= np.float32(0.1)
        mask[start:stop, col] |= bad_bit

    if gain_errors is not None:
        for amp, e in zip(detector.amplifiers, _per_amp(gain_errors, n_amps, "gain_errors"),
                          strict=True):
            if e:
                image[amp.slices] *= np.float32(1.0 + e)

    # Pedestals (electronic offsets: after the noise).
    for i, amp in enumerate(detector.amplifiers):
        image[amp.slices] += np.float32(peds[i])

    return SimulatedDetector(image, mask, variance, peds.astype(np.float64))


# -- a focal plane ------------------------------------------------------------
def select_detectors(camera: Any, detectors: Iterable[str | int] | str | None = None,
                     rafts: Iterable[str] | str | None = None) -> list[str]:
    """Names of the chosen detectors of ``camera``, in camera order.

    Parameters
    ----------
    camera : Camera
    detectors : str or iterable, optional
        Detector names or ids (a comma-separated string is accepted).
    rafts : str or iterable, optional
        Raft names (``R22``); every detector whose name starts with ``<raft>_``.
        With neither, every science detector of the camera.

    Raises
    ------
    InputError
        For an unknown detector or a raft with no detector, naming it.
    """
    names = list(camera.detector_names)
    if isinstance(detectors, str):
        detectors = [d for d in detectors.split(",") if d.strip()]
    if isinstance(rafts, str):
        rafts = [r for r in rafts.split(",") if r.strip()]
    if not detectors and not rafts:
        chosen = [n for n in names if _info(camera, n).get("type", "SCIENCE") == "SCIENCE"]
        return chosen or names
    wanted: set[str] = set()
    for d in detectors or ():
        key: str | int = d.strip() if isinstance(d, str) else int(d)
        if isinstance(key, str) and key.isdigit():
            key = int(key)
        try:
            wanted.add(camera[key].name)
        except (KeyError, IndexError, InputError, ValueError) as exc:
            raise InputError(f"camera {camera.name!r} has no detector {key!r}") from exc
    for r in rafts or ():
        raft = r.strip()
        members = [n for n in names if n.split("_")[0].upper() == raft.upper()]
        if not members:
            raise InputError(f"camera {camera.name!r} has no raft {raft!r}")
        wanted.update(members)
    return [n for n in names if n in wanted]


def _info(camera: Any, name: str) -> dict[str, Any]:
    try:
        return dict(camera.info(name))
    except (AttributeError, KeyError):
        return {}


def simulated_file_name(camera_name: str, visit: int, detector: str) -> str:
    """File name used by `simulate_focal_plane`: ``<camera>_<visit:06d>_<detector>.fits``."""
    return f"{camera_name.lower()}_{int(visit):06d}_{detector}.fits"


def _visit_list(visits: int | Sequence[int]) -> list[int]:
    if isinstance(visits, int | np.integer):
        if visits < 1:
            raise InputError(f"visits must be >= 1, got {visits}")
        return list(range(1, int(visits) + 1))
    out = [int(v) for v in visits]
    if not out:
        raise InputError("no visits given")
    return out


def _simulate_one(path: str, camera_name: str, instrument: str, detector: Detector,
                  info: dict[str, Any], visit: int, seed: int, scale: float,
                  sky: FocalPlaneSky, overwrite: bool,
                  options: dict[str, Any]) -> tuple[str, list[str], list[float]]:
    """Simulate and write one (visit, detector); returns (path, amp names, pedestals)."""
    from .io.fits import write_exposure

    det_id = detector.id if detector.id is not None else 0
    kwargs: dict[str, Any] = dict(options)
    corners = info.get("corners_mm")
    if corners is not None:
        kwargs["sky"] = sky.on_detector(corners, detector.width, detector.height)
    else:
        kwargs.setdefault("sky", sky.level)
    for key, field in (("gain", "amp_gain"), ("read_noise", "amp_read_noise"),
                       ("saturation", "amp_saturation")):
        values = info.get(field)
        if values is not None and len(values) == len(detector) and key not in options:
            kwargs[key] = [float(v) for v in values]
    sim = simulate_detector(detector, seed=[int(seed), int(visit), int(det_id)], **kwargs)
    header: dict[str, Any] = {
        "DETNAME": detector.name,
        "DETECTOR": int(det_id),
        "VISIT": int(visit),
        "SIMULATD": True,
        "SIMCAM": camera_name,
        "SIMSEED": int(seed),
        "SIMSCALE": float(scale),
    }
    if scale == 1.0:
        # Full-size detectors are looked up in the camera; shrunk ones are described by the
        # per-amp AMPNAM/DATASEC keywords that write_exposure records from ``detector``.
        header = {"INSTRUME": instrument, "CAMERA": camera_name, **header}
    write_exposure(path, sim.image, sim.mask, sim.variance, mask_planes=dict(DEFAULT_MASK_PLANES),
                   header=header, overwrite=overwrite, detector=detector)
    return path, list(detector.amp_names), [float(p) for p in sim.pedestals]


def simulate_focal_plane(
    out_dir: str | os.PathLike[str],
    camera: Any = "lsstcam",
    detectors: Iterable[str | int] | str | None = None,
    rafts: Iterable[str] | str | None = None,
    visits: int | Sequence[int] = 1,
    scale: float = 1.0,
    seed: int = 0,
    *,
    sky: float = 1200.0,
    overwrite: bool = False,
    executor: Any = None,
    sequence: bool = False,
    sky_range: tuple[float, float] = (300.0, 2000.0),
    **options: Any,
) -> SimulationResult:
    """Write simulated exposures of a camera's detectors and a truth table.

    Parameters
    ----------
    out_dir : path
        Output folder (created if missing).
    camera : str or Camera
        A built-in camera name (``"lsstcam"``) or a `Camera`.
    detectors, rafts : optional
        Which detectors (see `select_detectors`); all science detectors by default.
    visits : int or sequence of int
        Number of visits (numbered 1..N) or the visit numbers.
    scale : float
        Detector size factor (`scale_detector`); amp names and layout are kept.
    seed : int
        Base seed; detector ``d`` of visit ``v`` uses ``(seed, v, d's id)``.
    sky : float
        Typical sky level in ADU; each visit's level and gradients over the focal plane are
        drawn around it (`FocalPlaneSky.for_visit`).
    overwrite : bool
        Replace existing files (otherwise an existing file is an `InputError`).
    executor : optional
        Anything with ``submit(fn, *args)`` returning futures with ``result()`` (a
        `concurrent.futures` executor or a ``distributed.Client``) to simulate detectors in
        parallel; serial when omitted.
    sequence : bool
        Camera-health sequence (`sequence_truth`): each amp keeps a persistent offset with
        a slow drift and occasional jumps, a few amps have a gain error, and each visit's
        sky level is drawn log-uniformly in ``sky_range``. The truth table then also has
        ``offset`` (before the per-visit mean is removed), ``jump``, ``gain_error`` and
        ``sky`` columns.
    sky_range : (float, float)
        Sky levels of a sequence (ADU).
    **options
        Passed to `simulate_detector` (e.g. ``pedestal_sigma``, ``n_stars``).

    Returns
    -------
    SimulationResult
        The written paths and the truth table (also written to ``out_dir/truth.parquet``).
    """
    import pandas as pd

    from .cameras import get_camera

    cam = get_camera(camera) if isinstance(camera, str) else camera
    names = select_detectors(cam, detectors, rafts)
    visit_ids = _visit_list(visits)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    camera_name = str(getattr(cam, "name", camera)).lower()
    instrument = str(getattr(cam, "instrument", None) or getattr(cam, "name", camera))
    radius = _focal_plane_radius(cam, names)

    seq: dict[str, SequenceTruth] = {}
    if sequence:
        for name in names:
            det_id = cam[name].id if cam[name].id is not None else 0
            seq[name] = sequence_truth(len(visit_ids), len(cam[name]),
                                       [int(seed), int(det_id), 0x5E0])
    jobs, paths, extra_rows = [], [], []
    for k, visit in enumerate(visit_ids):
        level = sky
        if sequence:
            u = np.random.default_rng([int(seed), int(visit), 0x5E1]).uniform()
            level = float(sky_range[0] * (sky_range[1] / sky_range[0]) ** u)
        fp_sky = FocalPlaneSky.for_visit(seed, visit, level, radius)
        for name in names:
            det = scale_detector(cam[name], scale)
            job_options = dict(options)
            if sequence:
                truth_d = seq[name]
                offs = truth_d.offsets[k]
                job_options["pedestals"] = offs - offs.mean()
                job_options["gain_errors"] = truth_d.gain_errors
                extra_rows.extend(zip(offs, truth_d.jumps[k], truth_d.gain_errors,
                                      [fp_sky.level] * len(offs), strict=True))
            path = out / simulated_file_name(camera_name, visit, name)
            if path.exists() and not overwrite:
                raise InputError(f"{path}: already exists (replace it with --overwrite, or "
                                 "overwrite=True in Python)")
            # Absolute paths: with an executor the files are written by other processes.
            paths.append(path)
            jobs.append((str(path.absolute()), camera_name, instrument, det, _info(cam, name),
                         visit, int(seed), float(scale), fp_sky, overwrite, job_options))
    logger.info("simulating %d exposure(s) of %d detector(s) into %s", len(jobs), len(names), out)

    if executor is None:
        results = [_simulate_one(*job) for job in jobs]
    else:
        futures = [executor.submit(_simulate_one, *job) for job in jobs]
        results = [f.result() for f in futures]

    rows = []
    for job, (_path, amps, peds) in zip(jobs, results, strict=True):
        visit, det = job[5], job[3]
        rows.extend((visit, det.name, amp, ped) for amp, ped in zip(amps, peds, strict=True))
    truth = pd.DataFrame(rows, columns=["visit", "detector", "amp", "pedestal"])
    truth["visit"] = truth["visit"].astype("int64")
    if sequence:
        extra = pd.DataFrame(extra_rows, columns=["offset", "jump", "gain_error", "sky"])
        truth = pd.concat([truth, extra], axis=1)
    truth_path = out / "truth.parquet"
    tmp = truth_path.with_name(f".{truth_path.name}.tmp{os.getpid()}")
    truth.to_parquet(tmp, index=False)
    os.replace(tmp, truth_path)
    return SimulationResult(paths, truth, truth_path)


@dataclasses.dataclass(frozen=True)
class SequenceTruth:
    """What a sequence injects into one detector over its visits (amp order in columns).

    Attributes
    ----------
    offsets : ndarray (n_visits, n_amps)
        Additive amp offsets (persistent level + slow drift + jumps), before the
        per-visit mean is removed.
    jumps : ndarray of bool (n_visits, n_amps)
        True at the first visit of a new level.
    gain_errors : ndarray (n_amps,)
        Fractional gain error of each amp (0 for most).
    """

    offsets: np.ndarray
    jumps: np.ndarray
    gain_errors: np.ndarray


def sequence_truth(n_visits: int, n_amps: int, seed: Sequence[int], *,
                   offset_sigma: float = 0.7, drift_sigma: float = 0.005,
                   jump_rate: float = 0.01, jump_size: tuple[float, float] = (3.0, 4.0),
                   gain_error_rate: float = 0.08,
                   gain_error_size: tuple[float, float] = (0.001, 0.002),
                   quiet: int = 8) -> SequenceTruth:
    """Draw a camera-health sequence for one detector.

    Each amp has a persistent offset (normal, ``offset_sigma``) and a slow linear drift
    (``drift_sigma`` ADU per visit); with probability ``jump_rate`` per visit its level
    jumps by ``+-jump_size`` ADU (never in the first ``quiet`` visits nor within ``quiet``
    visits of its previous jump, so that each new level is established); with probability
    ``gain_error_rate`` an amp has a gain error of ``+-gain_error_size`` (no amp has both a
    jump and a gain error).
    """
    rng = np.random.default_rng(list(seed))
    base = rng.normal(0.0, offset_sigma, n_amps)
    drift = rng.normal(0.0, drift_sigma, n_amps)
    gain = np.where(rng.uniform(size=n_amps) < gain_error_rate,
                    rng.choice([-1.0, 1.0], n_amps) * rng.uniform(*gain_error_size, n_amps),
                    0.0)
    t = np.arange(n_visits, dtype=np.float64)
    offsets = base[None, :] + drift[None, :] * t[:, None]
    jumps = np.zeros((n_visits, n_amps), dtype=bool)
    for a in range(n_amps):
        if gain[a]:
            continue
        last = -quiet
        level = 0.0
        for v in range(n_visits):
            if v >= quiet and v - last >= quiet and v <= n_visits - 3 \
                    and rng.uniform() < jump_rate:
                level += float(rng.choice([-1.0, 1.0]) * rng.uniform(*jump_size))
                jumps[v, a] = True
                last = v
            offsets[v, a] += level
    return SequenceTruth(offsets, jumps, gain)


def _focal_plane_radius(camera: Any, names: Sequence[str]) -> float:
    radius = 0.0
    for name in camera.detector_names:
        corners = _info(camera, name).get("corners_mm")
        if corners is not None:
            c = np.asarray(corners, dtype=float)[:, :2]
            radius = max(radius, float(np.hypot(c[:, 0], c[:, 1]).max()))
    return radius or 320.0
