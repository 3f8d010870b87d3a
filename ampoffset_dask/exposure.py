"""A minimal in-memory exposure: image, mask, variance, detector, metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError
from .geometry import Detector
from .masks import DEFAULT_MASK_PLANES

__all__ = ["Exposure"]


class Exposure:
    """An exposure as AmpOffsetTask needs it, without the LSST stack.

    Parameters
    ----------
    image : array_like, shape (height, width)
        Pixel values; stored as float32 (LSST's ``ImageF``).
    mask : array_like of int, optional
        Mask bits; int32, zeros when omitted.
    variance : array_like, optional
        Variance plane; float32, zeros when omitted.
    detector : Detector
        Geometry of the detector.
    mask_planes : mapping, optional
        Plane name -> bit; afw's default dictionary when omitted.
    metadata : mapping, optional
        Header-like metadata; a new dict when omitted. ``AmpOffsetTask.run`` writes LSST's
        ``LSST ISR AMPOFFSET ...`` keys here.
    """

    def __init__(
        self,
        image: Any,
        mask: Any = None,
        variance: Any = None,
        detector: Detector | None = None,
        mask_planes: Mapping[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if detector is None:
            raise InputError("Exposure needs a detector (geometry of the amplifiers)")
        image = np.asarray(image)
        if image.ndim != 2:
            raise InputError(f"detector {detector.name!r}: image must be 2-D, got {image.shape}")
        if image.shape != detector.shape:
            raise InputError(
                f"detector {detector.name!r}: image shape {image.shape} does not match the "
                f"detector size {detector.shape} (height, width)"
            )
        self.image = np.ascontiguousarray(image, dtype=np.float32)
        self.mask = (
            np.zeros(image.shape, np.int32)
            if mask is None
            else np.ascontiguousarray(mask, dtype=np.int32)
        )
        self.variance = (
            np.zeros(image.shape, np.float32)
            if variance is None
            else np.ascontiguousarray(variance, dtype=np.float32)
        )
        for name, plane in (("mask", self.mask), ("variance", self.variance)):
            if plane.shape != image.shape:
                raise InputError(
                    f"detector {detector.name!r}: {name} shape {plane.shape} differs from the "
                    f"image shape {image.shape}"
                )
        self.detector = detector
        self.mask_planes = dict(DEFAULT_MASK_PLANES if mask_planes is None else mask_planes)
        self.metadata = {} if metadata is None else metadata

    def getDetector(self) -> Detector:
        """LSST-style accessor."""
        return self.detector

    def getMetadata(self) -> dict[str, Any]:
        """LSST-style accessor."""
        return self.metadata

    def __repr__(self) -> str:
        return f"Exposure(detector={self.detector.name!r}, shape={self.image.shape})"
