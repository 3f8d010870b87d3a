"""The background as AmpOffsetTask fits it: binned clipped means and GSL interpolation.

Bins follow afw's integer rounding, each bin's statistic is ``MEANCLIP`` of its unmasked
finite pixels stored as float32, and the model is interpolated along columns first, then
along rows, and rounded to float32 (ALGORITHM.md section 3).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError
from . import kernels
from .interp import MIN_POINTS, interpolate_rows, max_style

__all__ = [
    "TooManyMaskedPixelsError",
    "background_bins",
    "background_stats",
    "interp_style",
    "model_rows",
    "subtract_background",
]

logger = logging.getLogger(__name__)


class TooManyMaskedPixelsError(RuntimeError):
    """Every pixel carries an ignored mask bit, so no background can be estimated."""


def background_bins(length: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """afw's bin origins, sizes and centres for ``n`` bins over ``length`` pixels."""
    ends = np.minimum((np.arange(1, n + 1) * length + n // 2) // n, length)
    origins = np.concatenate(([0], ends[:-1]))
    sizes = ends - origins
    centres = origins + 0.5 * sizes - 0.5
    return origins, sizes, centres


def interp_style(style: str, undersample_style: str, nx: int, ny: int) -> str:
    """The interpolation style afw uses for an ``nx`` by ``ny`` grid of bins."""
    need = MIN_POINTS[style]
    if nx >= need and ny >= need:
        return style
    if undersample_style == "REDUCE_INTERP_ORDER":
        return max_style(nx) if nx < ny else max_style(ny)
    raise ConfigError(
        f"background: {nx}x{ny} bins are too few for {style} and "
        f"undersampleStyle={undersample_style!r} (use REDUCE_INTERP_ORDER)"
    )


def background_stats(
    image: np.ndarray, bad: np.ndarray | None, nx: int, ny: int
) -> np.ndarray:
    """Per-bin ``MEANCLIP`` of usable pixels as a float32 ``(ny, nx)`` stats image.

    Parameters
    ----------
    image : ndarray, float32
        The image.
    bad : ndarray of bool or None
        True where a pixel carries an ignored mask bit.
    nx, ny : int
        Number of bins along x and y.

    Raises
    ------
    TooManyMaskedPixelsError
        When every pixel is unusable.
    """
    h, w = image.shape
    xo, xs, _ = background_bins(w, nx)
    yo, ys, _ = background_bins(h, ny)
    # Every bin in one call: the compiled kernels then read the image row by row once per
    # pass for all bins.
    means, _, counts = kernels.active().binned_clipped_mean_var(
        image, bad, np.append(xo, xo[-1] + xs[-1]), np.append(yo, yo[-1] + ys[-1]))
    if not (counts > 0).any():
        raise TooManyMaskedPixelsError("All pixels masked. Cannot estimate background.")
    return means.astype(np.float32)


def model_rows(
    stats: np.ndarray,
    shape: tuple[int, int],
    style: str,
    undersample_style: str = "REDUCE_INTERP_ORDER",
    row_block: int = 256,
):
    """Yield ``(row_slice, float32 model rows)`` of the background model, block by block.

    Columns are interpolated first (along y at every row), then each row along x; the
    model is produced in blocks of rows so a full-size detector never holds a float64 copy.
    """
    h, w = shape
    ny, nx = stats.shape
    style = interp_style(style, undersample_style, nx, ny)
    _, _, xc = background_bins(w, nx)
    _, _, yc = background_bins(h, ny)
    columns = interpolate_rows(style, yc, stats.T.astype(np.float64), h).T  # (h, nx)
    for y0 in range(0, h, row_block):
        y1 = min(h, y0 + row_block)
        yield slice(y0, y1), interpolate_rows(style, xc, columns[y0:y1], w, np.float32)


def background_model(
    stats: np.ndarray, shape: tuple[int, int], style: str,
    undersample_style: str = "REDUCE_INTERP_ORDER",
) -> np.ndarray:
    """The full float32 background model image (see `model_rows`)."""
    out = np.empty(shape, dtype=np.float32)
    for rows, block in model_rows(stats, shape, style, undersample_style):
        out[rows] = block
    return out


def subtract_background(
    image: np.ndarray,
    bad: np.ndarray | None,
    short_side: int,
    fraction: float,
    style: str = "AKIMA_SPLINE",
    undersample_style: str = "REDUCE_INTERP_ORDER",
    out: np.ndarray | None = None,
) -> str:
    """Fit AmpOffsetTask's background and subtract it from ``image``, in place or into
    ``out``.

    Parameters
    ----------
    out : ndarray, float32, optional
        Receives ``image`` minus the background (``image`` is then only read); not written
        when the background is skipped. Default: ``image`` itself.

    Returns
    -------
    str
        ``"ok"`` or ``"skipped: <reason>"`` (every pixel masked, as LSST logs and continues).
    """
    h, w = image.shape
    bin_size = short_side * fraction
    nx = int(w // bin_size + 1)
    ny = int(h // bin_size + 1)
    try:
        stats = background_stats(image, bad, nx, ny)
    except TooManyMaskedPixelsError as exc:
        logger.warning("background not subtracted: %s", exc)
        return f"skipped: {exc}"
    style = interp_style(style, undersample_style, nx, ny)
    _, _, xc = background_bins(w, nx)
    _, _, yc = background_bins(h, ny)
    columns = interpolate_rows(style, yc, stats.T.astype(np.float64), h).T  # (h, nx)
    kernels.active().subtract_model_rows(image, style, xc, columns, out=out)
    return "ok"

