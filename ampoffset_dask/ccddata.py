"""Amp offsets for astropy's `~astropy.nddata.CCDData` (the frames ccdproc produces).

A CCDData carries no amp geometry, so every function takes the `Detector` (or a detector
name/id in a built-in ``camera``). The mask follows CCDData's convention: any non-zero mask
value is a bad pixel (``BAD``); non-finite pixels are ignored as well. Files written by
``CCDData.write`` (data in PRIMARY, ``MASK``, ``UNCERT``) are read by the package's readers
as the ``"ccddata"`` layout, so ``process`` and the CLI run on them with ``--camera`` and
``--detector``-style geometry.

Examples
--------
>>> from ampoffset_dask.ccddata import correct_ccddata          # doctest: +SKIP
>>> corrected = correct_ccddata(ccd, "R22_S11", camera="lsstcam")  # doctest: +SKIP
>>> corrected.header["LSST ISR AMPOFFSET PEDESTAL C10"]          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from .algorithm.measure import measure_detector
from .algorithm.metadata import header_metadata_comments
from .config import AmpOffsetConfig
from .errors import InputError
from .exposure import Exposure
from .geometry import Detector
from .io.file_info import CCDDATA_MASK_PLANES, variance_from_uncertainty

__all__ = ["ccddata_to_exposure", "correct_ccddata", "measure_ccddata"]

logger = logging.getLogger(__name__)


def _detector(detector: Any, camera: Any) -> Detector:
    if isinstance(detector, Detector):
        return detector
    if isinstance(detector, Mapping):
        return Detector.from_dict(detector)
    if camera is None:
        raise InputError(
            f"detector {detector!r} given by name or id: pass camera= (a built-in camera name) "
            "or a Detector"
        )
    from .cameras import get_camera

    return get_camera(camera)[detector]


def ccddata_to_exposure(ccd: Any, detector: Any, *, camera: Any = None) -> Exposure:
    """An `Exposure` holding copies of a CCDData's planes.

    Parameters
    ----------
    ccd : astropy.nddata.CCDData
        The frame, trimmed and assembled in the detector frame.
    detector : Detector, dict, str or int
        Amp geometry, or a detector name/id in ``camera``.
    camera : str or Camera, optional
        Built-in camera for a detector given by name or id.

    Returns
    -------
    Exposure
        ``image`` float32; ``mask`` with ``BAD`` (bit 0) where the CCDData mask is non-zero;
        ``variance`` from a standard-deviation, variance or inverse-variance uncertainty
        (zeros without one); ``metadata`` a copy of the CCDData's header.

    Raises
    ------
    InputError
        If the data are not 2-D or do not match the detector's size.
    """
    det = _detector(detector, camera)
    data = np.asarray(getattr(ccd, "data", ccd))
    if data.ndim != 2 or data.shape != det.shape:
        raise InputError(
            f"CCDData of shape {data.shape} does not match detector {det.name!r} of shape "
            f"{det.shape} (height, width): trim the overscan first"
        )
    bad = np.int32(1 << CCDDATA_MASK_PLANES["BAD"])
    mask = getattr(ccd, "mask", None)
    mask = (np.zeros(data.shape, np.int32) if mask is None
            else np.where(np.asarray(mask) != 0, bad, np.int32(0)))
    return Exposure(np.array(data, dtype=np.float32), mask, _variance(ccd, data.shape), det,
                    dict(CCDDATA_MASK_PLANES), dict(getattr(ccd, "meta", None) or {}))


def _variance(ccd: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    unc = getattr(ccd, "uncertainty", None)
    if unc is None or getattr(unc, "array", None) is None:
        return None
    arr = np.asarray(unc.array, dtype=np.float64)
    if arr.shape != shape:
        return None
    kind = type(unc).__name__
    variance = variance_from_uncertainty(arr, kind)
    if variance is None:
        logger.info("uncertainty of type %s not converted to a variance", kind)
    return variance


def measure_ccddata(
    ccd: Any,
    detector: Any,
    config: AmpOffsetConfig | None = None,
    *,
    camera: Any = None,
) -> Any:
    """Measure the amp pedestals of a CCDData (the input is not modified).

    Parameters
    ----------
    ccd : astropy.nddata.CCDData
        Trimmed, assembled frame (see the ccdproc recipe in ``docs/ccddata.md``).
    detector : Detector, dict, str or int
        Amp geometry, or a detector name/id in ``camera``.
    config : AmpOffsetConfig, optional
        LSST defaults when omitted.
    camera : str or Camera, optional
        Built-in camera for a detector given by name or id.

    Returns
    -------
    DetectorMeasurement
        ``pedestals`` (amp order), ``pedestal_by_amp``, ``interfaces``, ...
    """
    exp = ccddata_to_exposure(ccd, detector, camera=camera)
    return measure_detector(exp.image, exp.mask, exp.detector, config or AmpOffsetConfig(),
                            exp.mask_planes)


#: Cards of the input's header that no longer describe the corrected pixels: checksums of
#: the input's data, and the scaling and type of its stored integers (the result is
#: float32); left in, the written file claims a checksum it does not have.
_STALE = ("CHECKSUM", "DATASUM", "BZERO", "BSCALE", "BLANK", "BITPIX")


def correct_ccddata(
    ccd: Any,
    detector: Any,
    config: AmpOffsetConfig | None = None,
    *,
    camera: Any = None,
) -> Any:
    """A new CCDData with the amp pedestals subtracted (the input is not modified).

    The pedestals are measured and subtracted as LSST's ``AmpOffsetTask.run`` does
    (float32 result), and LSST's metadata keys are added to a copy of the header:
    ``LSST ISR AMPOFFSET PEDESTAL <amp>``, ``LSST ISR AMPOFFSET INTERFACEOFFSET <A-B>`` and
    ``LSST ISR AMPOFFSET PEDESTAL SUBTRACTED``, without the cards that described the
    input's stored data (``CHECKSUM``, ``DATASUM``, ``BZERO``, ``BSCALE``, ``BLANK``,
    ``BITPIX``). Mask, uncertainty, unit and WCS are copied.
    A ``meta`` that a FITS header cannot hold (values such as lists or dicts, which
    CCDData allows) is copied as it is, with the keys added.

    Parameters
    ----------
    ccd : astropy.nddata.CCDData
    detector : Detector, dict, str or int
        Amp geometry, or a detector name/id in ``camera``.
    config : AmpOffsetConfig, optional
        LSST defaults when omitted; ``do_apply_amp_offset`` is forced on.
    camera : str or Camera, optional
        Built-in camera for a detector given by name or id.

    Returns
    -------
    astropy.nddata.CCDData
    """
    from astropy.io import fits
    from astropy.nddata import CCDData

    from .task import AmpOffsetTask

    exp = ccddata_to_exposure(ccd, detector, camera=camera)
    config = dataclasses.replace(config or AmpOffsetConfig(), do_apply_amp_offset=True)
    exp.metadata = {}
    result = AmpOffsetTask(config=config).run(exp)
    meta = getattr(ccd, "meta", None) or {}
    try:
        # copied: built from a Header, a Header shares its cards, and setting the pedestal
        # cards below would rewrite the caller's
        header: Any = (meta.copy() if isinstance(meta, fits.Header)
                       else fits.Header(copy.deepcopy(meta)))
    except (ValueError, TypeError) as exc:
        # CCDData allows any meta; one a FITS header cannot hold (lists, dicts) is copied
        # as it is, with the keys added
        logger.debug("%s: meta kept as a %s (%s)", exp.detector.name, type(meta).__name__,
                     exc)
        header = copy.deepcopy(meta)
        header.update(exp.metadata)
        for key in [k for k in header if str(k).upper() in _STALE]:
            del header[key]
    else:
        for key in _STALE:
            header.remove(key, ignore_missing=True, remove_all=True)
        cards = header_metadata_comments(result.measurement, applied=True)
        for key, (value, comment) in cards.items():
            header[f"HIERARCH {key}"] = (value, comment)
    mask = getattr(ccd, "mask", None)
    unc = getattr(ccd, "uncertainty", None)
    return CCDData(
        exp.image, unit=ccd.unit, meta=header,
        mask=None if mask is None else np.array(mask, copy=True),
        uncertainty=None if unc is None else unc.__class__(
            np.array(unc.array, copy=True), unit=getattr(unc, "unit", None)),
        wcs=getattr(ccd, "wcs", None),
    )
