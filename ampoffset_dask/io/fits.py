"""FITS readers and writers: LSST exposures and raws, plain images, the project layout.

Every function opens the file inside the call, closes it before returning, hands back native
byte order arrays and raises `InputError` naming the file and the reason.

Layouts understood
------------------
``"exposure"``
    Primary HDU + ``IMAGE``, ``MASK`` (plane bits in ``MP_*`` keywords), ``VARIANCE``
    extensions, possibly tile-compressed and followed by archive tables (LSST's afw layout;
    also what `write_exposure` writes).
``"ccddata"``
    Files written by astropy's ``CCDData.write``: the data in the PRIMARY HDU, a ``MASK``
    extension (any non-zero value is read as ``BAD``) and possibly ``UNCERT`` (not read).
    They carry no amp geometry: give a camera and detector.
``"raw"``
    LSST raw files: one ``SegmentNN`` HDU per amp, assembled with the camera's raw boxes and
    flips (never by DETSEC, see ``docs/cameras.md``). Also any other file with one image HDU
    per amp (several image HDUs with their own ``DATASEC``/``DETSEC``/``CCDSEC``, whatever
    their ``EXTNAME``): assembled by a camera whose amps name their HDU (``"hdu"`` or
    ``"extname"``), else by those sections when they tile a detector, else refused.
``"image"``
    Any other file: the first 2-D image HDU. Its amps come from a camera/detector given by the
    caller or from ``DATASEC``-style header keywords; with a camera whose amps carry raw boxes
    (``raw_data_bbox``) the image is assembled and optionally overscan-corrected (from other
    HDUs of the file when the camera's amps name them).

A layout the header states per amp (``AMPNAM<s>``/``DATASEC<s>``, ``CCDSEC<s>``...) wins
over a built-in camera recognised only from the detector name and image size; a camera or
detector the caller gives, the camera the header names and a persisted afw Detector win over
the header (see `resolve_detector`).

What a file holds is read from its headers by `ampoffset_dask.io.file_info`
(`inspect_file`, `FileInfo`), where each amp is read from is decided by
`ampoffset_dask.io.layout` (`resolve_detector`, `amp_sources`), pixel regions are read by
`ampoffset_dask.io.sections` (`read_section`, `LazyPlane`, `AmpSource`) and files are
written by `ampoffset_dask.io.writer.write_exposure`; all are re-exported here.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import Detector
from ..masks import plane_bit
from .file_info import (
    FileInfo,
    MaskPlanesWarning,
    inspect_file,
    variance_from_uncertainty,
)
from .layout import (
    amp_sources,
    direct_sources,
    file_isr,
    mask_sources,
    open_sources,
    resolve_detector,
    sources_on_hdu,
)
from .overscan import IsrSteps
from .sections import (
    AmpSource,
    LazyPlane,
    _is_wrapped,
    _read_full,
    close_cached_files,
    decompress_once,
    file_stamp,
    keep_open,
    read_section,
)
from .writer import write_exposure

__all__ = [
    "AmpSource",
    "ExposureData",
    "FileInfo",
    "LazyExposure",
    "LazyPlane",
    "MaskPlanesWarning",
    "amp_sources",
    "close_cached_files",
    "file_isr",
    "inspect_file",
    "open_lazy",
    "read_exposure",
    "read_section",
    "resolve_detector",
    "variance_from_uncertainty",
    "write_exposure",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ExposureData:
    """An opened exposure file: planes in the assembled detector frame, geometry, identity.

    `read_exposure` fills it with numpy arrays (``image`` float32, ``mask`` int32, ``variance``
    float32 or None if not read, native byte order; non-finite image pixels have ``NO_DATA`` set
    in ``mask``). `open_lazy` fills it with `LazyPlane` objects, which behave like read-only 2-D
    arrays for slicing and ``numpy.asarray`` (a full read) without dask: slicing one reads only
    the slice, so ``measure_detector(data)`` with background and detection off reads only the
    amp edge strips. Lazy files without a MASK (VARIANCE) extension have ``mask`` (``variance``)
    None. Picklable (lazy planes hold paths and boxes only). ``metadata`` receives what
    ``AmpOffsetTask.run`` records (LSST's ``LSST ISR AMPOFFSET ...`` keys, the mark of a
    correction among them); pass it to `write_exposure` (``metadata=``) with the image.
    """

    image: np.ndarray | LazyPlane
    mask: np.ndarray | LazyPlane | None
    variance: np.ndarray | LazyPlane | None
    mask_planes: dict[str, int]
    detector: Detector
    visit: int | None
    info: FileInfo
    isr: IsrSteps = dataclasses.field(default_factory=IsrSteps)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def lazy(self) -> bool:
        """The planes are read on demand (made by `open_lazy`)."""
        return isinstance(self.image, LazyPlane)

    def to_exposure(self):
        """An `ampoffset_dask.exposure.Exposure` of the same planes (a full read if lazy)."""
        from ..exposure import Exposure

        return Exposure(self.image, self.mask, self.variance, self.detector, self.mask_planes,
                        {**self.info.header, **self.metadata})


#: Former name of the lazily filled `ExposureData` (what `open_lazy` returns).
LazyExposure = ExposureData



def read_exposure(
    path: str | os.PathLike,
    camera: Any = None,
    detector: Any = None,
    *,
    overscan: bool | str = "auto",
    gain: str | None = None,
    hdu: int | None = None,
    variance: bool = True,
) -> ExposureData:
    """Read a whole exposure, raw or image file into memory, in the detector frame.

    Parameters
    ----------
    path : path-like
    camera : str or Camera, optional
        Camera for the geometry (default: from the header).
    detector : Detector, dict, str or int, optional
        Geometry, or a detector name/id in the camera (default: from the header).
    overscan : {"auto", "per-row", "mean", "none"} or bool
        Serial overscan subtraction (`ampoffset_dask.io.overscan`): ``"auto"`` subtracts it,
        row by row (median), from raws and untrimmed images and leaves assembled files alone;
        ``True`` = ``"per-row"``, ``False`` = ``"none"``.
    gain : {None, "none", "nominal"}
        ``"nominal"``: multiply each amp by the camera's nominal gain (ADU -> electrons).
    hdu : int, optional
        Read this image HDU: one CCD of a multi-CCD file (``inspect_file(path).ccd_hdus``).
    variance : bool
        Read the VARIANCE plane. False skips it (``variance`` is None): measuring never
        needs it, and decompressing it is a third of the read time of compressed files.

    Returns
    -------
    ExposureData
        ``image`` float32, ``mask`` int32 (non-finite pixels flagged ``NO_DATA``),
        ``variance`` float32 (zeros if the file has none; None with ``variance=False``).

    Raises
    ------
    InputError
        Naming the file and the reason.
    """
    from . import remote

    if remote.is_url(os.fspath(path)):  # whole-exposure read: fetch the object once
        url = os.fspath(path)
        with remote.local_copy(url) as local:
            data = read_exposure(local, camera, detector, overscan=overscan, gain=gain, hdu=hdu)
        data.info = dataclasses.replace(data.info, path=url)
        return data
    with decompress_once():  # a .fits.gz: its headers and planes from one decompression
        return _read_local(path, camera, detector, overscan, gain, hdu, variance)


def _read_local(path: Any, camera: Any, detector: Any, overscan: bool | str, gain: str | None,
                hdu: int | None, variance: bool) -> ExposureData:
    """`read_exposure` of a file on this machine."""
    info, det, sources = open_sources(path, camera, detector, overscan, gain, hdu)
    planes = dict(info.mask_planes)
    want_variance, variance = variance, None
    finite: bool | None = None
    if info.kind in ("exposure", "ccddata"):
        image, finite = _read_full(info.path, info.image_hdu, np.float32, check_finite=True)
        if info.kind == "ccddata":
            mask = LazyPlane(info.path, det.shape, np.int32, mask_sources(info, sources))[:, :]
        else:
            mask = (_read_full(info.path, info.mask_hdu, np.int32)[0]
                    if info.mask_hdu is not None else np.zeros(det.shape, np.int32))
        if want_variance and info.uncertainty is not None:
            hdu, kind = info.uncertainty
            variance = variance_from_uncertainty(
                _read_full(info.path, hdu, np.float64)[0], kind).astype(np.float32)
        elif want_variance:
            variance = (_read_full(info.path, info.variance_hdu, np.float32)[0]
                        if info.variance_hdu is not None else np.zeros(det.shape, np.float32))
        if any(s.gain is not None for s in sources):
            image, variance = _times_gain(image, variance, det, sources)
    else:
        # one read of the whole HDU only when it is the detector image (an untrimmed one
        # is cut to its amps' boxes below, as `open_lazy` reads it)
        if (info.kind == "image" and info.shape == det.shape
                and sources == direct_sources(det, info.image_hdu)):
            image, finite = _read_full(info.path, info.image_hdu, np.float32, check_finite=True)
        else:
            image = LazyPlane(info.path, det.shape, np.float32, sources)[:, :]
        mask = np.zeros(det.shape, np.int32)
        variance = np.zeros(det.shape, np.float32) if want_variance else None
    if finite is None:
        finite = bool(np.isfinite(image).all())
    if not finite:
        bad = ~np.isfinite(image)
        planes, bit = plane_bit("NO_DATA", planes)
        mask[bad] |= np.int32(1 << bit)
        logger.info("%s: %d non-finite pixels flagged NO_DATA", info.path, int(bad.sum()))
    return ExposureData(image, mask, variance, planes, det, info.visit, info,
                        file_isr(info, det, sources))


def _times_gain(image: np.ndarray, variance: np.ndarray | None, det: Detector,
                sources: tuple[AmpSource, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    for amp, s in zip(det, sources, strict=True):
        image[amp.slices] *= np.float32(s.gain)
        if variance is not None:
            variance[amp.slices] *= np.float32(s.gain) ** 2
    return image, variance


def open_lazy(
    path: str | os.PathLike,
    camera: Any = None,
    detector: Any = None,
    *,
    overscan: bool | str = "auto",
    gain: str | None = None,
    hdu: int | None = None,
) -> ExposureData:
    """Open a file for region reads (headers only, like `open_exposure` but without dask).

    Parameters are those of `read_exposure`. Returns an `ExposureData` whose planes are
    `LazyPlane` objects. Files without a MASK (VARIANCE) extension get ``mask``
    (``variance``) None. Non-finite image pixels are not flagged in the mask (the algorithm
    treats them as masked).

    Raises
    ------
    InputError
        Naming the file and the reason.
    """
    stamp = file_stamp(path)  # before the headers: a change while reading them shows too
    with decompress_once():
        info, det, sources = open_sources(path, camera, detector, overscan, gain, hdu)
        if isinstance(info.path, Path) and _is_wrapped(info.path):
            keep_open(info.path)  # the region reads share the content decompressed now
    on = functools.partial(sources_on_hdu, sources)

    image = LazyPlane(info.path, det.shape, np.float32, sources, stamp=stamp)
    mask = (LazyPlane(info.path, det.shape, np.int32, mask_sources(info, sources), stamp=stamp)
            if info.mask_hdu is not None else None)
    variance = (LazyPlane(info.path, det.shape, np.float32, on(info.variance_hdu, 2),
                          stamp=stamp)
                if info.variance_hdu is not None else None)
    return ExposureData(image, mask, variance, dict(info.mask_planes), det, info.visit, info,
                        file_isr(info, det, sources))
