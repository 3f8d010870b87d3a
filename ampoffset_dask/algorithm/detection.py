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

from .stats import clipped_mean_var, sorted_usable

__all__ = [
    "detection_threshold",
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
    """Normalised 1-D Gaussian weights (float64), sum taken sequentially as afw does."""
    r = kernel_half_width(sigma, n_sigma_for_kernel)
    i = np.arange(-r, r + 1, dtype=np.float64)
    k = (1.0 / math.sqrt(2.0 * math.pi) / sigma) * np.exp(-(i * i) / (2.0 * sigma * sigma))
    total = 0.0
    for v in k:
        total += float(v)
    return k / total


def smooth(image: np.ndarray, kernel: np.ndarray, row_block: int = 16,
           groups: int = 8) -> np.ndarray:
    """afw's separable float32 convolution of ``image``, on the good box only.

    Bit-identical to afw: the horizontal pass accumulates ``img * k_i`` in float32 for
    i = 0..n-1; the vertical pass accumulates the rows of a ring buffer in slot order
    (slot = input row mod n), so the summation order depends on the output row's residue.
    Both passes run on cache-sized blocks; the vertical one handles ``groups`` blocks of n
    output rows per step, where each slot reads at most two distinct input rows per block.

    Parameters
    ----------
    image : ndarray, float32, shape (H, W)
    kernel : ndarray
        Normalised 1-D weights (odd length n = 2r + 1), used as float32.

    Returns
    -------
    ndarray, float32, shape (H - 2r, W - 2r)
        Element ``[y, x]`` is the smoothed value at image pixel ``(y + r, x + r)``.
    """
    k = np.asarray(kernel, dtype=np.float32)
    n = k.shape[0]
    r = n // 2
    h, w = image.shape
    oh, ow = h - 2 * r, w - 2 * r
    if oh <= 0 or ow <= 0:
        return np.empty((max(oh, 0), max(ow, 0)), dtype=np.float32)
    image = np.asarray(image, dtype=np.float32)
    span = n * groups
    # Rows past the image stay zero; they only feed output rows that are discarded.
    buf = np.zeros((max(h, -(-oh // span) * span + 2 * n), ow), dtype=np.float32)
    # Horizontal pass on the flattened rows: contiguous 1-D operations are twice as fast as
    # 2-D slices; the last 2r outputs of each row mix two rows and are dropped.
    flat = np.ascontiguousarray(image).ravel()
    tmp = np.empty(row_block * w, dtype=np.float32)
    acc = np.empty(row_block * w, dtype=np.float32)
    for a in range(0, h, row_block):
        b = min(h, a + row_block)
        length = (b - a) * w - 2 * r
        x = flat[a * w : b * w]
        t = tmp[:length]
        sm = acc[:length]
        np.multiply(x[0:length], k[0], out=sm)
        for i in range(1, n):
            np.multiply(x[i:i + length], k[i], out=t)
            sm += t
        buf[a:b] = acc[: (b - a) * w].reshape(b - a, w)[:, :ow]
    out = np.empty((oh, ow), dtype=np.float32)
    q = np.arange(n)
    block = np.empty((span, ow), dtype=np.float32)
    for a in range(0, oh, span):
        m = min(groups, -(-(oh - a) // n))
        acc = block[: m * n].reshape(m, n, ow)
        acc[:] = 0
        for s in range(n):
            # Output row a + j*n + q reads input row a + j*n + q + off[q] in slot s.
            off = (s - (a + q)) % n
            src_rows = q + off
            for base in np.unique(src_rows):
                sel = np.flatnonzero(src_rows == base)
                lo, hi = int(sel[0]), int(sel[-1]) + 1
                src = buf[a + base : a + base + n * (m - 1) + 1 : n]
                acc[:, lo:hi, :] += src[:, None, :] * k[off[lo:hi]][None, :, None]
        valid = min(m * n, oh - a)
        out[a:a + valid] = block[:valid]
    return out


def _or_window(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """OR over windows of ``size`` consecutive elements along ``axis`` (valid part only).

    Windows are doubled (1, 2, 4, ...) and the last step overlaps, so a 15-wide window
    costs four ORs of the array instead of fourteen.
    """
    a = np.moveaxis(a, axis, 0)
    width = 1
    cur = a
    while width * 2 <= size:
        cur = cur[:-width] | cur[width:]
        width *= 2
    if width < size:
        cur = cur[: a.shape[0] - size + 1] | cur[size - width : size - width + a.shape[0]
                                                 - size + 1]
    return np.moveaxis(cur, 0, axis)


def _dilate_box(bad: np.ndarray, r: int) -> np.ndarray:
    """OR of ``bad`` over a ``(2r+1)^2`` square, kept where the square fits (the good box)."""
    return _or_window(_or_window(bad, 2 * r + 1, 1), 2 * r + 1, 0)


def detection_threshold(
    smoothed: np.ndarray,
    stats_bad: np.ndarray | None,
    value: float,
    threshold_type: str,
    multiplier: float = 1.0,
) -> float:
    """The detection threshold in image units.

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
    multiplier : float
        ``includeThresholdMultiplier``.
    """
    if threshold_type == "value":
        return float(value) * multiplier
    excluded = None
    if stats_bad is not None and stats_bad.any():
        r = (stats_bad.shape[0] - smoothed.shape[0]) // 2
        excluded = _dilate_box(stats_bad, r)
    _, var = clipped_mean_var(sorted_usable(smoothed, excluded))
    return float(value) * math.sqrt(var) * multiplier if var >= 0 else math.nan


def grow_radius(n_sigma_to_grow: float, sigma: float) -> int:
    """LSST's ``int(nSigmaToGrow * sigma + 0.5)``."""
    return int(n_sigma_to_grow * sigma + 0.5)


def grow(seeds: np.ndarray, radius: int, isotropic: bool = True) -> np.ndarray:
    """Dilate boolean ``seeds`` by a disk (``dx^2 + dy^2 <= r^2``) or a diamond.

    The disk row half-widths are ``int(sqrt(r^2 - dy^2))`` as afw's ``SpanSet`` builds them;
    the diamond uses ``r - |dy|``. The result is clipped to the array.
    """
    if radius <= 0 or not seeds.any():
        return seeds.copy()
    h = seeds.shape[0]
    # Horizontal dilations of every half width 0..radius, built incrementally.
    horiz = [seeds]
    cur = seeds
    for _ in range(radius):
        nxt = cur.copy()
        nxt[:, 1:] |= cur[:, :-1]
        nxt[:, :-1] |= cur[:, 1:]
        horiz.append(nxt)
        cur = nxt
    out = np.zeros_like(seeds)
    for dy in range(-radius, radius + 1):
        half = int(math.sqrt(radius * radius - dy * dy)) if isotropic else radius - abs(dy)
        src = horiz[half]
        if dy >= 0:
            out[dy:] |= src[: h - dy]
        else:
            out[:dy] |= src[-dy:]
    return out
