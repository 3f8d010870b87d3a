"""Subtracting measured pedestals from an image, with LSST's float semantics.

LSST's ``AmpOffsetTask`` does ``image[amp bbox] -= pedestal`` on a float32 image with a
float64 pedestal; under numpy >= 2 that subtracts in double and rounds once to float32
(ALGORITHM.md section 1.7). Every place that writes corrected pixels calls this function so
they all produce the same bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..geometry import Detector

__all__ = ["apply_pedestals"]


def apply_pedestals(
    image: Any,
    pedestals: Any,
    detector: Detector,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Subtract each amp's pedestal from ``image``: double arithmetic, one rounding to float32.

    Parameters
    ----------
    image : array_like, shape (height, width)
        The detector image (read as float32, as LSST stores it).
    pedestals : array_like of float
        One pedestal per amp, in ``detector`` amp order (positive = amp too bright).
    detector : Detector
        Amp geometry.
    out : ndarray of float, optional
        Write the result here (``out=image`` corrects an image in place, as LSST does); a new
        float32 array when omitted, and ``image`` is left untouched. The subtraction is done
        in double and rounded once to ``out``'s dtype (float32 for LSST images).

    Returns
    -------
    ndarray
        The corrected image (``out`` when given, else a new float32 array).

    Raises
    ------
    ValueError
        When the number of pedestals differs from the number of amps, or a shape or dtype
        does not match.

    Examples
    --------
    >>> import numpy as np
    >>> from ampoffset_dask.geometry import Amplifier, Detector
    >>> det = Detector("D", 4, 2, (Amplifier("A", 0, 0, 2, 2), Amplifier("B", 2, 0, 2, 2)))
    >>> apply_pedestals(np.ones((2, 4), np.float32), [0.25, -0.5], det)
    array([[0.75, 0.75, 1.5 , 1.5 ],
           [0.75, 0.75, 1.5 , 1.5 ]], dtype=float32)
    """
    values = np.asarray(pedestals, dtype=np.float64)
    if values.shape != (len(detector),):
        raise ValueError(f"detector {detector.name!r}: {values.size} pedestals for "
                         f"{len(detector)} amps")
    if out is None:
        out = np.array(image, dtype=np.float32, copy=True)
    else:
        if out.dtype.kind != "f" or out.shape != detector.shape:
            raise ValueError(f"detector {detector.name!r}: out must be a float array of shape "
                             f"{detector.shape}, got {out.dtype} {out.shape}")
        if out is not image:
            out[...] = np.asarray(image, dtype=out.dtype)
    if out.shape != detector.shape:
        raise ValueError(f"detector {detector.name!r}: image shape {out.shape} does not match "
                         f"the detector size {detector.shape} (height, width)")
    for amp, value in zip(detector.amplifiers, values, strict=True):
        if value != 0.0:
            sl = amp.slices
            # float64 operand: numpy computes in double and casts once into the float32 out
            np.subtract(out[sl], value, out=out[sl], casting="same_kind")
    return out
