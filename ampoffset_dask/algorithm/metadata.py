"""LSST's amp-offset metadata keys, built from a measurement (ALGORITHM.md section 1.7).

One place turns a `DetectorMeasurement` into the ``LSST ISR AMPOFFSET ...`` header keys and
their comments: `AmpOffsetTask.run` sets them on the exposure's metadata, the pipeline and
the FITS writer put them into the primary header of corrected files.
"""

from __future__ import annotations

import math
from typing import Any

from .result import DetectorMeasurement

__all__ = [
    "INTERFACE_KEY",
    "PEDESTAL_KEY",
    "SUBTRACTED_KEY",
    "TASK_PEDESTALS_KEY",
    "header_metadata_comments",
    "lsst_metadata",
    "lsst_metadata_comments",
    "task_metadata",
]

#: Exposure metadata key of the raw offset of interface ``<A-B>``.
INTERFACE_KEY = "LSST ISR AMPOFFSET INTERFACEOFFSET {}"
#: Exposure metadata key of the pedestal of amp ``<amp>``.
PEDESTAL_KEY = "LSST ISR AMPOFFSET PEDESTAL {}"
#: Exposure metadata key saying whether the pedestals were subtracted.
SUBTRACTED_KEY = "LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"
#: Task metadata key holding ``{amp: pedestal}``.
TASK_PEDESTALS_KEY = "AMPOFFSET_PEDESTALS"


def lsst_metadata_comments(
    measurement: DetectorMeasurement, applied: bool
) -> dict[str, tuple[Any, str]]:
    """``{key: (value, comment)}`` of LSST's exposure metadata, in LSST's order.

    Parameters
    ----------
    measurement : DetectorMeasurement
        What `measure_detector` returned.
    applied : bool
        Whether the pedestals were subtracted from the image.

    Returns
    -------
    dict
        Interface offsets (raw, before the do-no-harm checks) first, then one pedestal per
        amp, then the subtracted flag; values are plain Python ``float``/``bool``.
    """
    meta: dict[str, tuple[Any, str]] = {}
    for itf in measurement.interfaces:
        meta[INTERFACE_KEY.format(itf.id)] = (
            float(itf.offset_raw), f"Raw amp interface offset calculated for {itf.id}")
    for name, value in zip(measurement.amp_names, measurement.pedestals, strict=True):
        meta[PEDESTAL_KEY.format(name)] = (
            float(value), f"Pedestal level calculated for amp {name}")
    meta[SUBTRACTED_KEY] = (
        bool(applied),
        "Amp pedestals have been subtracted" if applied
        else "Amp pedestals have not been subtracted",
    )
    return meta


def header_metadata_comments(
    measurement: DetectorMeasurement, applied: bool
) -> dict[str, tuple[Any, str]]:
    """`lsst_metadata_comments` as FITS header cards can hold them.

    FITS has no NaN: the raw offset of an interface without one valid edge sample (NaN,
    left out of the solve) is None, which a FITS header writes as an undefined value (read
    back as None), and its comment says so. Every other value is unchanged.
    """
    return {key: (None, "Raw amp interface offset: none (no valid edge samples)")
            if isinstance(value, float) and not math.isfinite(value) else (value, comment)
            for key, (value, comment) in lsst_metadata_comments(measurement, applied).items()}


def lsst_metadata(measurement: DetectorMeasurement, applied: bool) -> dict[str, Any]:
    """``{key: value}`` of LSST's exposure metadata (see `lsst_metadata_comments`)."""
    return {key: value for key, (value, _) in lsst_metadata_comments(measurement,
                                                                       applied).items()}


def task_metadata(measurement: DetectorMeasurement) -> dict[str, Any]:
    """The task-level metadata LSST records: ``{"AMPOFFSET_PEDESTALS": {amp: pedestal}}``."""
    return {TASK_PEDESTALS_KEY: measurement.pedestal_by_amp}
