"""Raw-file ISR steps the amp-offset algorithm assumes: overscan subtraction and nominal gains.

AmpOffsetTask runs after instrument signature removal: on raw pixels each amp still carries its
own electronic bias (hundreds of ADU), so every amp boundary would exceed the do-no-harm limit.
The readers therefore subtract each amp's serial overscan from files whose pixels come from
raw boxes and, on request, convert ADU to electrons with the camera's nominal gains.

Modes (``overscan=``)
---------------------
``"auto"`` (default)
    ``"per-row"`` for every file whose pixels come from raw boxes that have a serial overscan
    (LSST raw segments, untrimmed images with a camera or header overscan region); nothing for
    assembled (trimmed, post-ISR) files.
``"per-row"``
    Subtract the median of each row of the amp's serial overscan from that row.
``"mean"``
    Subtract one number per amp: the 3-sigma clipped mean of the whole serial overscan.
``"none"``
    Leave the pixels as they are in the file.

Gains (``gain=``): ``None``/``"none"`` keeps ADU; ``"nominal"`` multiplies each amp (after the
overscan subtraction) by the camera's nominal gain (e-/ADU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = [
    "GAIN_MODES",
    "OVERSCAN_MODES",
    "IsrSteps",
    "clipped_mean",
    "isr_header",
    "isr_steps",
    "normalize_gain",
    "normalize_overscan",
    "overscan_levels",
    "subtract_overscan",
]

#: Accepted ``overscan=`` values (``True``/``False`` mean ``"per-row"``/``"none"``).
OVERSCAN_MODES = ("auto", "per-row", "mean", "none")
#: Accepted ``gain=`` values (``None`` means ``"none"``).
GAIN_MODES = ("none", "nominal")


def normalize_overscan(value: Any) -> str:
    """The overscan mode named by ``value`` (``True`` -> ``"per-row"``, ``False``/``None`` ->
    ``"none"``).

    Raises
    ------
    ConfigError
        For anything else than the `OVERSCAN_MODES`.
    """
    if value is True:
        return "per-row"
    if value is False or value is None:
        return "none"
    text = str(value).strip().lower().replace("_", "-")
    if text == "median":
        # LSST's MEDIAN overscan fit is one number per amp, which no mode here computes:
        # taking it for the per-row medians would subtract something else than asked
        raise ConfigError(f"overscan={value!r}: LSST's MEDIAN (one median per amp) is not "
                          "a mode here; use 'per-row' (each row's median, LSST's "
                          "MEDIAN_PER_ROW) or 'mean' (one clipped mean per amp)")
    if text in ("perrow", "row", "median-per-row"):
        text = "per-row"
    if text not in OVERSCAN_MODES:
        raise ConfigError(f"overscan={value!r}: expected one of {', '.join(OVERSCAN_MODES)}")
    return text


def normalize_gain(value: Any) -> str:
    """The gain mode named by ``value`` (``None``/``False`` -> ``"none"``).

    Raises
    ------
    ConfigError
        For anything else than the `GAIN_MODES`.
    """
    if value is None or value is False:
        return "none"
    text = str(value).strip().lower()
    if text not in GAIN_MODES:
        raise ConfigError(f"gain={value!r}: expected one of {', '.join(GAIN_MODES)}")
    return text


def clipped_mean(values: np.ndarray, nsigma: float = 3.0, iterations: int = 3) -> float:
    """Mean of the finite ``values`` after iterative ``nsigma`` clipping around the median."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    for _ in range(iterations):
        center, spread = np.median(v), np.std(v)
        keep = np.abs(v - center) <= nsigma * spread if spread > 0 else np.ones(v.size, bool)
        if keep.all():
            break
        v = v[keep]
    return float(v.mean())


def overscan_levels(overscan: np.ndarray) -> np.ndarray:
    """The per-row overscan levels, float64, shape ``(rows, 1)``: each row's median.

    The numbers of ``np.median(overscan, axis=1)`` (NaN for a row holding NaN), from one
    sort of the rows: numpy's vectorised sort of short rows is several times faster than
    its selection row by row (~30 ms of an LSSTCam raw's read).
    """
    over = np.asarray(overscan, dtype=np.float64)
    n = over.shape[1]
    if over.ndim != 2 or n == 0:
        return np.median(over, axis=1)[:, None]
    srt = np.sort(over, axis=1)  # NaN last
    k = n // 2
    # np.median's mean of the two middle values is their sum halved
    level = srt[:, k].copy() if n % 2 else (srt[:, k - 1] + srt[:, k]) / 2
    level[np.isnan(srt[:, -1])] = np.nan
    return level[:, None]


def subtract_overscan(data: np.ndarray, overscan: np.ndarray, mode: str) -> np.ndarray:
    """``data`` (float64) minus its overscan level.

    Parameters
    ----------
    data : ndarray
        Amp pixels (rows of the overscan for ``"per-row"``).
    overscan : ndarray
        ``"per-row"``: the overscan columns of the same rows; ``"mean"``: the whole serial
        overscan of the amp.
    mode : {"per-row", "mean"}
    """
    over = np.asarray(overscan, dtype=np.float64)
    if mode == "per-row":
        level = overscan_levels(over)
    elif mode == "mean":
        level = clipped_mean(over)
    else:
        raise ValueError(f"no overscan to subtract in mode {mode!r}")
    return np.asarray(data, dtype=np.float64) - level


@dataclasses.dataclass(frozen=True)
class IsrSteps:
    """What was done to the pixels while reading them.

    Attributes
    ----------
    overscan : str
        ``"per-row"``, ``"mean"`` or ``"none"`` (what was applied, never ``"auto"``).
    gain : str
        ``"nominal"`` (pixels in electrons) or ``"none"`` (ADU).
    raw : bool
        The pixels came from raw boxes (a raw or untrimmed file).
    """

    overscan: str = "none"
    gain: str = "none"
    raw: bool = False

    @property
    def units(self) -> str:
        """``"electron"`` after nominal gains, else ``"adu"``."""
        return "electron" if self.gain == "nominal" else "adu"


def isr_steps(sources: Sequence[Any], raw: bool = False) -> IsrSteps:
    """The `IsrSteps` that reading ``sources`` (`AmpSource` objects) applies."""
    modes = {s.overscan_mode for s in sources if s.overscan is not None}
    overscan = modes.pop() if len(modes) == 1 else ("mixed" if modes else "none")
    gain = "nominal" if any(s.gain is not None for s in sources) else "none"
    return IsrSteps(overscan, gain, bool(raw))


def isr_header(steps: IsrSteps) -> dict[str, tuple[Any, str]]:
    """Header cards (value, comment) recording what was done to the pixels before measuring."""
    cards: dict[str, tuple[Any, str]] = {
        "OVERSCAN": (steps.overscan, "serial overscan subtracted (per-row, mean, none)"),
        "GAINCORR": (steps.gain, "nominal gains applied (nominal, none)"),
    }
    if steps.raw or steps.gain == "nominal":  # raw pixels are ADU until gains are applied
        cards["BUNIT"] = (steps.units, "pixel units")
    return cards
