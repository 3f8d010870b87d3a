"""Source detection as AmpOffsetTask runs it: smooth, threshold, grow.

The image is smoothed with a normalised separable Gaussian exactly as afw does it in
float32 (only the "good" box, away from a kernel half-width of the border, is computed),
the threshold is a multiple of the clipped standard deviation of the smoothed image,
and pixels above it are grown by a disk (or a Manhattan diamond) into the DETECTED mask
(ALGORITHM.md section 4).
"""

from __future__ import annotations

import math

import numpy as np

from . import kernels

__all__ = [
    "detection_threshold",
    "drop_faint_footprints",
    "gaussian_kernel",
    "grow",
    "grow_radius",
    "kernel_half_width",
    "smooth",
]


def kernel_half_width(sigma: float, n_sigma_for_kernel: float) -> int:
    """Half width of the smoothing kernel: LSST's odd width ``(int(n*sigma + 0.5)//2)*2 + 1``."""
    width = (int(n_sigma_for_kernel * sigma + 0.5) // 2) * 2 + 1
    return width // 2


def gaussian_kernel(sigma: float, n_sigma_for_kernel: float = 7.0) -> np.ndarray:
    """Normalised 1-D Gaussian weights (float64), sum taken sequentially as afw does.

    The exponentials are the C library's (`math.exp`), as afw's: numpy's vectorised
    ``np.exp`` differs from it in the last bit on some processors (AVX-512), which would
    make the smoothed image depend on the machine.
    """
    r = kernel_half_width(sigma, n_sigma_for_kernel)
    i = np.arange(-r, r + 1, dtype=np.float64)
    k = (1.0 / math.sqrt(2.0 * math.pi) / sigma) * np.array(
        [math.exp(v) for v in -(i * i) / (2.0 * sigma * sigma)], dtype=np.float64)
    total = 0.0
    for v in k:
        total += float(v)
    return k / total


def smooth(image: np.ndarray, kernel: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """afw's separable float32 convolution of ``image``, on the good box only.

    Bit-identical to afw: the horizontal pass accumulates ``img * k_i`` in float32 for
    i = 0..n-1; the vertical pass accumulates the rows of a ring buffer in slot order
    (slot = input row mod n). Runs on the active kernels (`ampoffset_dask.algorithm.kernels`);
    every implementation returns the same bits.

    Parameters
    ----------
    image : ndarray, float32, shape (H, W)
    kernel : ndarray
        Normalised 1-D weights (odd length n = 2r + 1), used as float32.
    out : ndarray, float32, shape (H - 2r, W - 2r), optional
        A buffer the result is written into and returned (C-contiguous, writable);
        default a new array.

    Returns
    -------
    ndarray, float32, shape (H - 2r, W - 2r)
        Element ``[y, x]`` is the smoothed value at image pixel ``(y + r, x + r)``.
    """
    return kernels.active().smooth(image, kernel, out=out)


def detection_threshold(
    smoothed: np.ndarray,
    stats_bad: np.ndarray | None,
    value: float,
    threshold_type: str,
    excluded_out: np.ndarray | None = None,
) -> float:
    """The detection threshold in image units (``includeThresholdMultiplier`` does not
    change it: see `drop_faint_footprints`).

    Parameters
    ----------
    smoothed : ndarray, float32
        The smoothed good box.
    stats_bad : ndarray of bool or None
        Pixels of the full image whose mask has a ``statsMask`` plane; dilated by the
        kernel footprint (the convolved mask) before use.
    value : float
        ``thresholdValue``.
    threshold_type : str
        ``"stdev"`` (``value`` times the clipped standard deviation) or ``"value"``.
    excluded_out : ndarray of bool, optional
        A buffer of ``smoothed``'s shape for the dilated ``stats_bad`` (a reused buffer has
        no fresh pages to fault in).
    """
    if threshold_type == "value":
        return float(value)
    excluded = None
    # (an image smaller than the kernel leaves no smoothed box, and no kernel size to read)
    if stats_bad is not None and smoothed.size and stats_bad.any():
        r = (stats_bad.shape[0] - smoothed.shape[0]) // 2
        excluded = kernels.active().dilate_box(stats_bad, r, out=excluded_out)
    _, var, _ = kernels.active().usable_clipped_mean_var(smoothed, excluded)
    return float(value) * math.sqrt(var) if var >= 0 else math.nan


def drop_faint_footprints(smoothed: np.ndarray, threshold: float, multiplier: float,
                          positive: bool, negative: bool) -> int:
    """Apply ``includeThresholdMultiplier`` as afw's ``FootprintSet`` does: a footprint
    (8-connected pixels at or beyond the threshold, one polarity) is kept only if one of
    its pixels reaches ``multiplier`` times the threshold; the others' pixels are set to NaN
    in ``smoothed`` (in place), so no later step detects them.

    A multiplier of at most 1 keeps every footprint (each pixel of one already reaches
    the threshold), as does a threshold that is not positive.

    Parameters
    ----------
    smoothed : ndarray, float32
        The smoothed good box (modified in place).
    threshold : float
        Pixels ``>= threshold`` (positive) or ``<= -threshold`` (negative) are detected,
        compared in float32 as the detection kernels do.
    multiplier : float
    positive, negative : bool
        The polarities detected.

    Returns
    -------
    int
        The footprints dropped.
    """
    if not (multiplier > 1.0 and threshold > 0.0):
        return 0
    from scipy import ndimage

    t = np.float32(threshold)
    include = threshold * multiplier
    eight = np.ones((3, 3), dtype=bool)
    dropped = 0
    for sign, on in ((1.0, positive), (-1.0, negative)):
        if not on:
            continue
        detected = smoothed >= t if sign > 0 else smoothed <= -t
        labels, n = ndimage.label(detected, structure=eight)
        if n == 0:
            continue
        index = np.arange(1, n + 1)
        # the footprint's brightest pixel (its faintest, for negative polarity), in float64
        extreme = (ndimage.maximum(smoothed, labels, index) if sign > 0
                   else -ndimage.minimum(smoothed, labels, index))
        faint = np.zeros(n + 1, dtype=bool)
        faint[1:] = np.asarray(extreme, dtype=np.float64) < include
        if faint.any():
            smoothed[faint[labels]] = np.float32(np.nan)
            dropped += int(np.count_nonzero(faint))
    return dropped


def grow_radius(n_sigma_to_grow: float, sigma: float) -> int:
    """LSST's ``int(nSigmaToGrow * sigma + 0.5)``."""
    return int(n_sigma_to_grow * sigma + 0.5)


def grow(seeds: np.ndarray, radius: int, isotropic: bool = True) -> np.ndarray:
    """Dilate boolean ``seeds`` by a disk (``dx^2 + dy^2 <= r^2``) or a diamond.

    The disk row half-widths are ``int(sqrt(r^2 - dy^2))`` as afw's ``SpanSet`` builds them;
    the diamond uses ``r - |dy|``. The result is clipped to the array. Runs on the active
    kernels (`ampoffset_dask.algorithm.kernels`); every implementation returns the same
    mask.
    """
    return kernels.active().grow(seeds, radius, isotropic)
