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

Pixel regions are read by `ampoffset_dask.io.sections` (re-exported here: `read_section`,
`LazyPlane`, `AmpSource`); files are written by `ampoffset_dask.io.writer.write_exposure`
(re-exported here).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..cameras import Camera, UnknownDetectorError, canonical_camera_name, get_camera
from ..errors import AmpOffsetError, GeometryError, InputError
from ..geometry import Amplifier, Detector, check_overlaps
from ..masks import DEFAULT_MASK_PLANES, plane_bit
from .header_geometry import HeaderGeometry, geometry_from_hdus, geometry_from_header
from .header_walk import CachedHeader, walk_headers
from .mosaic import (
    CCD_KEYS,
    check_hsc_channels,
    flip_box,
    is_ccd_header,
    name_one_ccd,
    raw_image_flip,
    trimmed_detector,
)
from .overscan import IsrSteps, isr_steps, normalize_gain, normalize_overscan
from .sections import (
    AmpSource,
    LazyPlane,
    _hdu_shape,
    _is_wrapped,
    _open,
    _overlaps,
    _read_full,
    check_image_size,
    close_cached_files,
    data_beyond_end,
    decompress_once,
    file_stamp,
    header_shape,
    is_image_header,
    keep_open,
    layouts_of,
    plain_layout,
    read_section,
    remember_layouts,
    stream_hdus,
    truncated_error,
    wrapped_content,
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

_SEGMENT = re.compile(r"^SEGMENT(\d+)$", re.IGNORECASE)
#: Unsuffixed section keywords that make an image HDU look like one amp of a per-amp file.
_AMP_SECTION_KEYS = ("DATASEC", "DETSEC", "CCDSEC")
#: The keywords of a per-amp HDU that `FileInfo.amp_hdus` keeps.
_AMP_HDU_KEYS = ("EXTNAME", "DATASEC", "BIASSEC", "CCDSEC", "DETSEC")
_GEOMETRY_KEY = re.compile(
    r"^((DATASEC|DETSEC|CCDSEC|BIASSEC|AMPNAM)\w*|T_(EF|OS)M[NX]\d\d|LTV[12])$")
_IDENTITY_KEYS = (
    "INSTRUME", "CAMERA", "TELESCOP", "DETNAME", "DETECTOR", "DETSER", "RAFTBAY", "CCDSLOT",
    "CCDNUM", "DETPOS", "DET-ID", "VISIT", "EXPNUM", "EXP-ID", "DAYOBS", "SEQNUM", "OBSID",
    "DATE-OBS", "MJD-OBS",
    "EXPTIME", "FILTER", "IMGTYPE", "OBSTYPE", "DETSIZE",
    "LSST BUTLER DATAID DETECTOR", "LSST BUTLER DATAID VISIT", "LSST BUTLER DATAID EXPOSURE",
    "LSST BUTLER DATAID INSTRUMENT", "LSST ISR AMPOFFSET PEDESTAL SUBTRACTED",
)


class MaskPlanesWarning(UserWarning):
    """The MASK extension carries no ``MP_*`` keywords; afw's default planes are assumed."""


# ------------------------------------------------------------------------------------------
# Data classes
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FileInfo:
    """What `inspect_file` learns from the headers alone.

    Attributes
    ----------
    path : Path
    kind : str
        ``"exposure"``, ``"ccddata"``, ``"raw"`` or ``"image"``.
    visit : int or None
    detector : str or None
        Detector name from the header.
    detector_id : int or None
    camera : str or None
        Built-in camera name (from ``CAMERA``/``INSTRUME``), if recognised.
    shape : (int, int)
        ``(height, width)`` of the image HDU (exposure, image) or ``DETSIZE`` (raw).
    image_hdu, mask_hdu, variance_hdu : int or None
        HDU indices (0 = primary). For raws, ``image_hdu`` is the first segment.
    mask_planes : dict
        Plane -> bit from ``MP_*`` keywords (afw defaults, with a warning, when absent).
    compressed : bool
        The image HDU is tile-compressed.
    header : dict
        Selected identity keys of the primary (and image) header, plus the geometry keys
        (``DATASEC*``...) of the image HDU.
    segments : dict
        Raw files: ``EXTNAME`` (upper case) -> HDU index of each amp segment. Image files of
        several image HDUs (not a multi-CCD file): every image HDU with an ``EXTNAME``, for a
        camera whose amps name their HDU.
    segment_shapes : dict
        HDU index -> ``(height, width)`` of the HDUs of ``segments`` (and of unnamed ones).
    ccd_hdus : tuple of int
        Multi-CCD files (DECam-style: several image HDUs, each naming its CCD with
        ``CCDNUM``/``DETPOS``/``DETNAME``): the HDU of every CCD; empty otherwise.
    amp_hdus : dict
        Generic per-amp files (kind ``"raw"`` without ``SegmentNN`` HDUs): HDU index -> its
        ``EXTNAME`` and section keywords (``DATASEC``, ``BIASSEC``, ``CCDSEC``, ``DETSEC``), in
        amp order; empty otherwise.
    uncertainty : (int, str) or None
        CCDData files: the ``UNCERT`` HDU and the astropy class of what it holds (``UTYPE``:
        ``StdDevUncertainty``...); `read_exposure` turns it into the variance
        (`variance_from_uncertainty`).
    """

    path: Path
    kind: str
    visit: int | None
    detector: str | None
    detector_id: int | None
    camera: str | None
    shape: tuple[int, int]
    image_hdu: int
    mask_hdu: int | None
    variance_hdu: int | None
    mask_planes: dict[str, int]
    compressed: bool
    header: dict[str, Any]
    segments: dict[str, int] = dataclasses.field(default_factory=dict, repr=False)
    segment_shapes: dict[int, tuple[int, int]] = dataclasses.field(default_factory=dict,
                                                                    repr=False)
    ccd_hdus: tuple[int, ...] = ()
    archive_hdus: tuple[int, ...] = ()
    amp_hdus: dict[int, dict[str, str]] = dataclasses.field(default_factory=dict, repr=False)
    uncertainty: tuple[int, str] | None = None


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


# ------------------------------------------------------------------------------------------
# Opening files
# ------------------------------------------------------------------------------------------
def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a FITS file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: empty file (0 bytes)")
    return p


def _is_image(hdu: Any) -> bool:
    return isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)


def _iter_hdus(hdul: fits.HDUList, path: Path) -> Iterator[tuple[int, Any]]:
    k = 0
    while True:
        try:
            hdu = hdul[k]
        except IndexError:
            return
        except (OSError, ValueError, EOFError, TypeError) as exc:
            raise InputError(f"{path}: HDU {k} cannot be read ({exc}); truncated file?") from exc
        beyond = data_beyond_end(hdu)
        if beyond is not None:
            raise truncated_error(path, beyond)
        yield k, hdu
        k += 1


def _check_not_truncated(path: Any, hdul: fits.HDUList, indices: list[int], size: int,
                         local: bool = True) -> None:
    if local and _is_wrapped(path):
        return
    for i in indices:
        beyond = data_beyond_end(hdul[i], size)
        if beyond is not None:
            raise InputError(f"{path}: truncated FITS file: HDU {i} needs {beyond[0]} bytes, "
                             f"the file has {beyond[1]}")


# ------------------------------------------------------------------------------------------
# Header conventions
# ------------------------------------------------------------------------------------------
def _as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return None


def _header_get(header: Mapping[str, Any], key: str) -> Any:
    try:
        if " " in key or len(key) > 8:
            return header.get(f"HIERARCH {key}", header.get(key))
        return header.get(key)
    except (KeyError, ValueError):
        return None


def mask_planes_from_header(header: Mapping[str, Any], path: Path | str = "") -> dict[str, int]:
    """``{plane: bit}`` from ``MP_<plane>`` keywords; afw defaults (with a warning) if none."""
    planes: dict[str, int] = {}
    for key in header:
        key = str(key)
        if key.startswith("MP_"):
            bit = _as_int(header[key])
            if bit is None or not 0 <= bit < 32:
                raise InputError(f"{path}: mask plane keyword {key} = {header[key]!r} is not a "
                                 "bit number 0-31")
            planes[key[3:]] = bit
    if not planes:
        msg = (f"{path}: the MASK extension has no MP_* keywords; assuming afw's default "
               "mask planes")
        warnings.warn(msg, MaskPlanesWarning, stacklevel=3)
        logger.warning(msg)
        planes = dict(DEFAULT_MASK_PLANES)
    return planes


def _identity(headers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for header in headers:
        for key in _IDENTITY_KEYS:
            if key in out:
                continue
            value = _header_get(header, key)
            if value is not None and not isinstance(value, fits.card.Undefined):
                out[key] = value if isinstance(value, int | float | bool) else str(value).strip()
    return out


def _visit_from(keys: Mapping[str, Any]) -> int | None:
    for key in ("VISIT", "LSST BUTLER DATAID VISIT", "LSST BUTLER DATAID EXPOSURE", "EXPNUM"):
        v = _as_int(keys.get(key))
        if v is not None:
            return v
    m = re.fullmatch(r"HSCE(\d{8})", str(keys.get("EXP-ID", "")).strip())
    if m:  # HSC exposure id "HSCE<8 digits>": the visit number
        return int(m.group(1))
    day, seq = _as_int(keys.get("DAYOBS")), _as_int(keys.get("SEQNUM"))
    if day is not None and seq is not None:
        return day * 100000 + seq  # LSST exposure id: day_obs * 100000 + seq_num
    return None


def _detector_from(keys: Mapping[str, Any]) -> tuple[str | None, int | None]:
    name = keys.get("DETNAME")
    if name is None and keys.get("RAFTBAY") and keys.get("CCDSLOT"):
        name = f"{keys['RAFTBAY']}_{keys['CCDSLOT']}"
    if name is None and keys.get("DETPOS"):
        name = keys["DETPOS"]
    det_id = None
    for key in ("DETECTOR", "LSST BUTLER DATAID DETECTOR", "CCDNUM", "DET-ID"):
        det_id = _as_int(keys.get(key))
        if det_id is not None:
            break
    if name is None and isinstance(keys.get("DETECTOR"), str) and det_id is None:
        name = keys["DETECTOR"]
    return (None if name in (None, "") else str(name)), det_id


def _camera_from(keys: Mapping[str, Any]) -> str | None:
    for key in ("CAMERA", "LSST BUTLER DATAID INSTRUMENT", "INSTRUME"):
        value = keys.get(key)
        if value:
            name = canonical_camera_name(str(value))
            if name is not None:
                return name
    return None


def _parse_detsize(text: Any) -> tuple[int, int] | None:
    m = re.match(r"^\s*\[\s*1\s*:\s*(\d+)\s*,\s*1\s*:\s*(\d+)\s*\]\s*$", str(text or ""))
    return (int(m.group(2)), int(m.group(1))) if m else None


#: The mask dictionary of CCDData files: any non-zero MASK value is BAD.
CCDDATA_MASK_PLANES: dict[str, int] = {"BAD": 0}


def _is_ccddata(heads: list[_Head], roles: Mapping[str, int]) -> bool:
    """`CCDData.write`'s layout: the data in a 2-D PRIMARY HDU, a ``MASK`` extension (and
    possibly ``UNCERT``), no ``IMAGE`` extension."""
    if "IMAGE" in roles or "MASK" not in roles or not heads[0].image:
        return False
    return len(heads[0].shape) == 2


# ------------------------------------------------------------------------------------------
# inspect_file
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Head:
    """One HDU as `inspect_file` sees it: its (image-view) header and what it holds."""

    index: int
    header: Mapping[str, Any]
    image: bool
    compressed: bool
    shape: tuple[int, ...]
    bitpix: int


def _heads_of_hdul(path: Any, hdul: fits.HDUList) -> list[_Head]:
    out = []
    for k, hdu in _iter_hdus(hdul, path):
        image = _is_image(hdu)
        compressed = isinstance(hdu, fits.CompImageHDU)
        out.append(_Head(k, CachedHeader(hdu.header), image, compressed,
                         _hdu_shape(hdu) if image else (), int(hdu.header.get("BITPIX", 8))))
    return out


def _heads_of_stream(path: Path) -> list[_Head]:
    """The HDUs of a gzip/bzip2/zip-wrapped file, read by streaming its headers only (from
    its decompressed content instead when that is at hand, or is to be kept for the pixel
    reads of a `decompress_once` block: one decompression serves both)."""
    content = wrapped_content(path)
    return [_head_of_header(k, CachedHeader(header)) for k, (header, _, _)
            in enumerate(stream_hdus(path, keep_data=False, content=content))]


def _head_of_header(k: int, header: CachedHeader) -> _Head:
    """HDU ``k`` from its header as stored in the file (a tile-compressed image's is its
    table's: the image's structure in the ``Z`` keywords)."""
    image = is_image_header(header, k)
    compressed = k > 0 and image and bool(header.get("ZIMAGE", False))
    prefix = "Z" if compressed else ""
    shape = header_shape(header, prefix) if image else ()
    return _Head(k, header, image, compressed, shape, int(header.get(f"{prefix}BITPIX", 8)))


#: The keywords `_inspect` reads besides the structure, and the prefixes of those it
#: finds by pattern (`_GEOMETRY_KEY`, ``MP_*``): the cards a walked header keeps.
_INSPECTED = frozenset({"EXTNAME", "EXTTYPE", "BLANK", "BSCALE", "BZERO", "AR_NAME", "UTYPE",
                        *_IDENTITY_KEYS, *CCD_KEYS})
#: astropy's uncertainty classes `variance_from_uncertainty` converts.
UNCERTAINTY_CLASSES = ("StdDevUncertainty", "VarianceUncertainty", "InverseVariance")


def variance_from_uncertainty(values: Any, kind: str) -> np.ndarray | None:
    """The variance (float64) of an astropy uncertainty's ``values``, by its class name
    ``kind`` (`UNCERTAINTY_CLASSES`: standard deviations squared, variances as they are,
    inverse variances inverted, infinite where not positive); None for another kind.

    The one conversion of CCDData uncertainties, in memory (`ampoffset_dask.ccddata`) and
    from a file's ``UNCERT`` HDU (`read_exposure`).
    """
    arr = np.asarray(values, dtype=np.float64)
    if kind == "StdDevUncertainty":
        return arr**2
    if kind == "VarianceUncertainty":
        return arr
    if kind == "InverseVariance":
        with np.errstate(divide="ignore"):
            return np.where(arr > 0, 1.0 / arr, np.inf)
    return None
_INSPECTED_PREFIXES = ("MP_", "DATASEC", "DETSEC", "CCDSEC", "BIASSEC", "AMPNAM", "T_EFM",
                       "T_OSM", "LTV")


def _walked(path: Path, hdu: int | None) -> FileInfo | None:
    """`inspect_file` of a plain local file from its walked headers (the keywords
    `_inspect` reads, no HDU objects); None for files astropy must read."""
    walked = walk_headers(path, _INSPECTED, _INSPECTED_PREFIXES)
    if walked is None:
        return None
    info = _inspect([_head_of_header(w.index, w.header) for w in walked], None, path,
                    path.stat().st_size, hdu, local=True)
    remember_layouts(path, {i: plain_layout(walked[i].header, walked[i].data_offset)
                            for i in _data_hdus(info)})
    return info


def inspect_file(path: str | os.PathLike, hdu: int | None = None) -> FileInfo:
    """Read the headers of a FITS file (no pixels) and describe it.

    Wrapped files (``.fits.gz``...) are read by streaming the headers only, never holding
    the decompressed file (except inside the readers, `read_exposure` and `open_lazy`,
    whose pixel reads then use the same single decompression, see
    `~ampoffset_dask.io.sections.decompress_once`); a file or tile-compressed HDU declaring
    more than `~ampoffset_dask.io.sections.max_decompressed_bytes` is refused.

    Parameters
    ----------
    path : path-like
    hdu : int, optional
        The image HDU to describe (one CCD of a multi-CCD file, see ``FileInfo.ccd_hdus``);
        default: the file's exposure, raw segments or first image.

    ``path`` may also be a URL (``s3://``, ``gs://``, ``https://``: only the header blocks are
    fetched) or a zip member (``archive.zip#zip-path=member.fits``, as Butler zip datastores
    give them); see `ampoffset_dask.io.remote`.

    Raises
    ------
    InputError
        For a missing, empty, truncated or non-FITS file, a directory, a file without a
        usable image or one too large to decompress, or a header card astropy refuses to
        read, naming the file and the reason.
    """
    try:
        return _inspect_file(path, hdu)
    except AmpOffsetError:
        raise
    except (fits.VerifyError, ValueError) as exc:  # a card astropy refuses (OSError: I/O)
        raise InputError(f"{path}: cannot read the header: {exc}") from exc


def _inspect_file(path: str | os.PathLike, hdu: int | None) -> FileInfo:
    from . import remote

    if remote.is_url(os.fspath(path)):
        with remote.open_url_hdul(os.fspath(path)) as (hdul, size):
            info = _inspect(_heads_of_hdul(os.fspath(path), hdul), hdul, os.fspath(path),
                            size, hdu, local=False)
            remote.remember_url_layouts(info.path, hdul, _data_hdus(info))
            return info
    path = _check_path(remote.localize(path))
    if _is_wrapped(path):  # headers streamed; the file is never decompressed whole
        return _inspect(_heads_of_stream(path), None, path, path.stat().st_size, hdu,
                        local=True)
    info = _walked(path, hdu)
    return info if info is not None else _opened(path, hdu)


def _opened(path: Path, hdu: int | None) -> FileInfo:
    """`inspect_file` of a local unwrapped file through astropy's `~astropy.io.fits.HDUList`
    (the files `_walked` leaves to it)."""
    with _open(path) as hdul:
        return _inspect(_heads_of_hdul(path, hdul), hdul, path, path.stat().st_size, hdu,
                        local=True)


def _data_hdus(info: FileInfo) -> list[int]:
    used = [i for i in (info.image_hdu, info.mask_hdu, info.variance_hdu) if i is not None]
    return sorted(set(used + list(info.segments.values())))


def _inspect(heads: list[_Head], hdul: fits.HDUList | None, path: Any, size: int,
             hdu: int | None, local: bool) -> FileInfo:
    """`inspect_file` from the HDU list of a file of ``size`` bytes (``local``: a file on
    this machine); ``hdul``, when the file is open (not for streamed wrapped files), is
    checked for truncation and its data offsets are remembered for the pixel reads."""
    images: list[tuple[int, str, tuple[int, ...]]] = []
    segments: dict[str, int] = {}
    segment_shapes: dict[int, tuple[int, int]] = {}
    roles: dict[str, int] = {}
    ccds: list[int] = []
    amp_like: list[int] = []
    for h in heads:
        if not h.image:
            continue
        k, shape = h.index, h.shape
        extname = str(h.header.get("EXTNAME", "") or "").strip().upper()
        exttype = str(h.header.get("EXTTYPE", "") or "").strip().upper()
        role = exttype if exttype in ("IMAGE", "MASK", "VARIANCE") else extname
        if role in ("IMAGE", "MASK", "VARIANCE") and role not in roles:
            roles[role] = k
        if _SEGMENT.match(extname) and len(shape) == 2:
            segments[extname] = k
            segment_shapes[k] = (shape[0], shape[1])
        if len(shape) == 2:
            images.append((k, extname, shape))
            if is_ccd_header(h.header):
                ccds.append(k)
            if any(_header_get(h.header, key) is not None for key in _AMP_SECTION_KEYS):
                amp_like.append(k)
    if not images:
        raise InputError(f"{path}: no 2-D image HDU in the file")
    primary = heads[0].header
    ccddata = hdu is None and _is_ccddata(heads, roles)
    # several HDUs naming a CCD make a mosaic, unless they are amp HDUs naming the same CCD
    mosaic = len(images) > 1 and len(ccds) > 1 and not (
        set(ccds) <= set(amp_like) and name_one_ccd([heads[k].header for k in ccds]))
    # one image HDU per amp, not LSST's SegmentNN: read as a raw (never as its first amp)
    per_amp = (hdu is None and not ccddata and not roles and not segments and not mosaic
               and len(amp_like) > 1)
    amp_hdus: dict[int, dict[str, str]] = {}
    if hdu is not None:
        if int(hdu) not in [i[0] for i in images]:
            raise InputError(f"{path}: HDU {hdu} is not a 2-D image HDU of the file")
        kind, image_hdu, roles, segments = "image", int(hdu), {}, {}
    elif ccddata:
        kind = "ccddata"
        image_hdu = 0
    elif roles:
        if "IMAGE" not in roles:
            raise InputError(
                f"{path}: missing IMAGE extension (found {', '.join(sorted(roles))})"
            )
        kind = "exposure"
        image_hdu = roles["IMAGE"]
    elif segments:
        kind = "raw"
        image_hdu = min(segments.values())
    elif per_amp:
        kind = "raw"
        image_hdu = amp_like[0]
        amp_hdus = {k: {key: str(v).strip() for key in _AMP_HDU_KEYS
                        if (v := _header_get(heads[k].header, key)) is not None}
                    for k in amp_like}
        segments = {name.upper(): k for k, keys in amp_hdus.items()
                    if (name := keys.get("EXTNAME"))}
        segment_shapes = {k: (heads[k].shape[0], heads[k].shape[1]) for k in amp_like}
    else:
        kind = "image"
        image_hdu = images[0][0]
        if hdu is None and not mosaic and len(images) > 1:
            # where a camera whose amps name their HDU ("hdu"/"extname") finds them
            segments = {name: k for k, name, _ in images if name}
            segment_shapes = {k: (shape[0], shape[1]) for k, _, shape in images}
    image_header = heads[image_hdu].header
    shape2 = heads[image_hdu].shape
    shape = (shape2[0], shape2[1])
    mask_hdu = roles.get("MASK")
    variance_hdu = None if ccddata else roles.get("VARIANCE")
    for role, idx in (("MASK", mask_hdu), ("VARIANCE", variance_hdu)):
        if idx is not None and heads[idx].shape != shape2:
            raise InputError(
                f"{path}: {role} extension shape {heads[idx].shape} differs from the "
                f"IMAGE shape {shape}"
            )
    uncertainty = _ccddata_uncertainty(heads, shape2, path) if ccddata else None
    if ccddata:
        planes = dict(CCDDATA_MASK_PLANES)
    else:
        planes = (mask_planes_from_header(heads[mask_hdu].header, path)
                  if mask_hdu is not None else dict(DEFAULT_MASK_PLANES))
    compressed = heads[image_hdu].compressed
    ccd_hdus = tuple(ccds) if kind == "image" and mosaic else ()
    used = [i for i in (image_hdu, mask_hdu, variance_hdu) if i is not None]
    used += list(segments.values())
    used = sorted(set(used))
    for i in used:  # before any pixel buffer of that size is allocated
        if heads[i].compressed:
            check_image_size(path, i, heads[i].shape, heads[i].bitpix)
    if hdul is not None:
        _check_not_truncated(path, hdul, used, size, local)
        if local:
            remember_layouts(path, layouts_of(hdul, used))
    keys = _identity([primary, image_header])
    if kind == "raw":
        detsize = _parse_detsize(keys.get("DETSIZE"))
        if detsize is not None:
            shape = detsize
        if amp_hdus:  # the detector the amp HDUs tile, when they do (else refused later)
            try:
                shape = _amp_hdu_geometry(amp_hdus, segment_shapes, "", None).detector.shape
            except GeometryError:
                pass
    for key in image_header:
        if _GEOMETRY_KEY.match(str(key)):
            keys[str(key)] = str(image_header[key]).strip()
    name, det_id = _detector_from(keys)
    camera = _camera_from(keys)
    if camera is not None:
        # complete the identity from the camera: raws carry a name only, some files an id only
        cam = get_camera(camera)
        if name is not None and det_id is None and name in cam:
            det_id = cam[name].id
        elif name is None and det_id is not None and det_id in cam:
            name = cam[det_id].name
        elif name is None and det_id is None and len(cam) == 1:
            name, det_id = cam.detector_names[0], cam.detector_ids[0]
    # afw's persisted Detector (archive tables after the planes of an LSST exposure file)
    archive = tuple(
        h.index for h in heads if not h.image
        and str(h.header.get("EXTTYPE", "") or "").strip().upper() == "ARCHIVE_DATA"
        and str(h.header.get("AR_NAME", "") or "").strip() == "Detector"
    ) if kind == "exposure" else ()
    return FileInfo(
        path=path, kind=kind, visit=_visit_from(keys), detector=name, detector_id=det_id,
        camera=camera, shape=shape, image_hdu=image_hdu, mask_hdu=mask_hdu,
        variance_hdu=variance_hdu, mask_planes=planes, compressed=compressed, header=keys,
        segments=segments, segment_shapes=segment_shapes, ccd_hdus=ccd_hdus,
        archive_hdus=archive, amp_hdus=amp_hdus, uncertainty=uncertainty,
    )


def _ccddata_uncertainty(heads: list[_Head], shape: tuple[int, ...],
                         path: Any) -> tuple[int, str] | None:
    """The ``UNCERT`` HDU of a CCDData file and what it holds, when it can give a variance."""
    for h in heads:
        if not h.image or str(h.header.get("EXTNAME", "") or "").strip().upper() != "UNCERT":
            continue
        utype = str(h.header.get("UTYPE", "") or "").strip()
        kind = utype.rsplit(".", 1)[-1]
        if kind not in UNCERTAINTY_CLASSES or h.shape != shape:
            logger.info("%s: uncertainty %r of shape %s not turned into a variance", path,
                        utype, h.shape)
            return None
        return h.index, kind
    return None


# ------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------
def _coerce_detector(detector: Any, path: Path) -> Detector | None:
    if detector is None or isinstance(detector, Detector):
        return detector
    if isinstance(detector, Mapping):
        try:
            return Detector.from_dict(detector)
        except (GeometryError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: invalid detector description: {exc}") from exc
    return None


def _camera_or_none(camera: Any, path: Path) -> Camera | None:
    if camera is None:
        return None
    try:
        return get_camera(camera)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def _guess_camera(info: FileInfo, report: bool = False) -> Camera | None:
    """A built-in camera holding a detector of this name and image size, if exactly one and
    the header states no other amp layout.

    The guess rests on a name and a size only: a layout the header states per amp
    (``AMPNAM<s>``/``DATASEC<s>``, ``CCDSEC<s>``...; what `write_exposure` records) is the
    file's own account of its amps and wins when the two differ. ``report`` logs that
    (`resolve_detector` does, once per file).
    """
    if info.detector is None or info.kind == "raw":
        return None
    from ..cameras import list_cameras

    hits = []
    for name in list_cameras():
        cam = get_camera(name)
        if info.detector in cam and cam[info.detector].shape == info.shape:
            hits.append(cam)
    if len(hits) != 1:
        return None
    cam = hits[0]
    stated = _stated_geometry(info)
    if stated is not None and stated.per_amp and not _same_layout(stated.detector,
                                                                  cam[info.detector]):
        if report:
            logger.info(
                "%s: the header states its own amp layout (%s), which differs from detector "
                "%r of camera %r (recognised from the detector name and image size only: %s); "
                "using the header's (pass camera= / --camera to use the camera's)",
                info.path, _layout_text(stated.detector), info.detector, cam.name,
                _layout_text(cam[info.detector]))
        return None
    return cam


def _same_layout(a: Detector, b: Detector) -> bool:
    """Same shape, and the same amps (names, boxes) in the same order."""
    return a.shape == b.shape and a.amplifiers == b.amplifiers


def _same_places(a: Detector, b: Detector) -> bool:
    """Same shape, and the same amp names at the same origins in the same order."""
    return a.shape == b.shape and (
        [(amp.name, amp.x0, amp.y0) for amp in a] == [(amp.name, amp.x0, amp.y0) for amp in b])


def _layout_text(detector: Detector, n: int = 2) -> str:
    """The first amps of ``detector`` as ``C10 x[0:509] y[0:2000], ...`` for messages."""
    shown = ", ".join(f"{a.name} x[{a.x0}:{a.x1}] y[{a.y0}:{a.y1}]"
                      for a in detector.amplifiers[:n])
    return shown + (", ..." if len(detector) > n else "")


def resolve_detector(info: FileInfo, camera: Any = None, detector: Any = None) -> Detector:
    """The amp geometry of a file.

    Parameters
    ----------
    info : FileInfo
        From `inspect_file`.
    camera : str or Camera, optional
        Camera to look the detector up in (default: the camera named in the header).
    detector : Detector, dict, str or int, optional
        A `Detector` (or its dict) to use as is, or a detector name/id in the camera
        (default: the detector named in the header).

    Raises
    ------
    InputError
        Naming the file, if no geometry can be found or the detector is unknown.
    """
    path = info.path
    user = _coerce_detector(detector, path)
    if user is not None:
        return user
    if detector is None and info.archive_hdus:
        persisted = persisted_detector(info)
        if persisted is not None:
            return persisted
    cam = _camera_or_none(camera, path)
    named = cam is None and info.camera is not None
    if named:
        cam = get_camera(info.camera)
    if cam is None:
        cam = _guess_camera(info, report=True)
    if cam is not None:
        key: Any = detector
        if key is None:
            key = info.detector if info.detector is not None else info.detector_id
        if key is None and len(cam) == 1:
            key = cam.detector_names[0]
        if key is None:
            raise InputError(
                f"{path}: the header names no detector (DETNAME, DETECTOR, RAFTBAY+CCDSLOT); "
                f"pass detector= (camera {cam.name!r})"
            )
        try:
            found = _fit_to_image(info, cam[key])
        except UnknownDetectorError as exc:
            if detector is None and info.detector_id is not None and info.detector is not None:
                try:
                    return cam[info.detector_id]
                except UnknownDetectorError:
                    pass
            raise InputError(f"{path}: unknown detector: {exc}") from exc
        if named:
            _warn_recorded_layout(info, found, cam)
        return found
    if detector is not None:
        raise InputError(
            f"{path}: detector {detector!r} given without a camera, and the header names no "
            "known camera; pass camera= or a Detector"
        )
    hg = _header_geometry(info)
    if hg is not None:
        return hg.detector
    if info.kind == "image" and len(info.segment_shapes) > 1:
        raise InputError(
            f"{path}: cannot tell the amp layout: {len(info.segment_shapes)} image HDUs and no "
            "camera given, none recognised in the header (CAMERA/INSTRUME) and no DATASEC-style "
            "keywords; if each HDU holds an amp, describe them with a camera whose amps name "
            "their HDU (\"hdu\"/\"extname\", see docs/cameras.md) and pass camera="
        )
    raise InputError(
        f"{path}: cannot tell the amp layout: no camera given, none recognised in the header "
        "(CAMERA/INSTRUME) and no DATASEC-style keywords; pass camera= and detector=, or a "
        "Detector"
    )


def persisted_detector(info: FileInfo) -> Detector | None:
    """The Detector an LSST exposure file carries in its archive tables (what
    ``exposure.getDetector()`` gives LSST's AmpOffsetTask), or None if it carries none.

    The amp rows give each amp's name and box in the assembled image, the detector row its
    name and id. Amps that do not tile the image are reported (a warning) and ignored.
    """
    if not info.archive_hdus:
        return None
    key = (str(info.path), file_stamp(info.path), info.archive_hdus)
    if key in _PERSISTED:
        return _PERSISTED[key]
    amps, name, det_id = None, info.detector, info.detector_id
    try:
        with fits.open(info.path, memmap=False, lazy_load_hdus=True) as hdul:
            for k in info.archive_hdus:
                table = hdul[k].data
                columns = set(table.columns.names)
                if {"name", "bbox_min_x", "bbox_min_y", "bbox_extent_x",
                        "bbox_extent_y"} <= columns and len(table):
                    amps = tuple(Amplifier(_text(r["name"]), int(r["bbox_min_x"]),
                                           int(r["bbox_min_y"]), int(r["bbox_extent_x"]),
                                           int(r["bbox_extent_y"])) for r in table)
                elif {"name", "serial"} <= columns and len(table) == 1:
                    name = _text(table[0]["name"]) or name
                    if "id" in columns:
                        det_id = int(table[0]["id"])
        detector = None
        if amps:
            detector = Detector(name or info.path.name.split(".")[0], info.shape[1],
                                info.shape[0], amps, id=det_id)
            _check_tiling(detector)
    except (OSError, ValueError, KeyError, IndexError, TypeError, GeometryError) as exc:
        logger.warning("%s: the persisted detector in its archive tables is unusable (%s); "
                       "using the camera's", info.path, exc)
        detector = None
    if len(_PERSISTED) > 256:
        _PERSISTED.clear()
    _PERSISTED[key] = detector
    return detector


def _check_tiling(detector: Detector) -> None:
    """`GeometryError` unless the amps cover the detector exactly once."""
    check_overlaps(detector)  # inside the image: `Detector` checks that
    # inside and disjoint: they cover the image exactly when their areas add up to it
    if sum(a.width * a.height for a in detector) != detector.width * detector.height:
        raise GeometryError("the amps do not cover the image")


def _text(value: Any) -> str:
    """A string cell of an archive table (stored as a string or as an array of characters)."""
    if isinstance(value, np.ndarray):
        value = "".join(v.decode() if isinstance(v, bytes) else str(v) for v in value.ravel())
    elif isinstance(value, bytes):
        value = value.decode()
    return str(value).strip()


#: `persisted_detector` per file (path, stamp, tables): planning and the readers ask again.
_PERSISTED: dict[tuple, Detector | None] = {}


def _fit_to_image(info: FileInfo, det: Detector) -> Detector:
    """The camera's detector, cropped to a trimmed image (CP instcal/ooi, ``LTV1/2``)."""
    if info.kind != "image" or info.shape == det.shape:
        return det
    if info.shape[0] <= det.height and info.shape[1] <= det.width:
        cropped = trimmed_detector(det, info.header, info.shape)
        if cropped is not None:
            return cropped
    return det


def _warn_recorded_layout(info: FileInfo, detector: Detector, cam: Camera) -> None:
    """Warn when the amp layout `write_exposure` recorded (``AMPNAM<s>``) differs from the
    detector of the camera the header names, which is used (it names the camera; the
    recorded layout may be a persisted detector's that the file no longer carries)."""
    if not any(str(key).startswith("AMPNAM") for key in info.header):
        return
    stated = _stated_geometry(info)
    if stated is not None and stated.per_amp and not _same_layout(stated.detector, detector):
        logger.warning(
            "%s: the amp layout recorded in the header (AMPNAM/DATASEC: %s) differs from "
            "detector %r of camera %r named by the header (%s); using the camera's (pass "
            "detector= with a Detector to use another layout)", info.path,
            _layout_text(stated.detector), detector.name, cam.name, _layout_text(detector))


def _header_geometry(info: FileInfo) -> HeaderGeometry | None:
    """The amp layout the headers describe (`ampoffset_dask.io.header_geometry`), or None.

    Raises
    ------
    InputError
        Naming the file and keyword when the keywords are malformed or contradict each other,
        and for per-amp HDUs that do not tile a detector (saying how to describe the file).
    """
    name = info.detector or info.path.name.split(".")[0]
    if info.amp_hdus:
        try:
            return _amp_hdu_geometry(info.amp_hdus, info.segment_shapes, name,
                                     info.detector_id)
        except GeometryError as exc:
            names = ", ".join(keys.get("EXTNAME") or f"HDU {k}"
                              for k, keys in info.amp_hdus.items())
            raise InputError(
                f"{info.path}: {len(info.amp_hdus)} image HDUs ({names}) each hold one amp, "
                f"but their sections do not describe one detector: {exc}; describe the file "
                "with a camera whose amps name their HDU (\"hdu\": k or \"extname\", see "
                "docs/cameras.md) and pass camera= (--camera), or read one HDU with hdu="
            ) from exc
    if info.kind == "raw":
        return None
    try:
        return geometry_from_header(info.header, name, info.shape, info.detector_id)
    except GeometryError as exc:
        raise InputError(f"{info.path}: header amp geometry: {exc}") from exc


def _stated_geometry(info: FileInfo) -> HeaderGeometry | None:
    """`_header_geometry`, None when the header has none or an unusable one (the caller
    then keeps the geometry it has from elsewhere)."""
    try:
        return _header_geometry(info)
    except InputError as exc:
        logger.debug("%s", exc)
        return None


def _amp_hdu_geometry(amp_hdus: Mapping[int, Mapping[str, str]],
                      shapes: Mapping[int, tuple[int, int]], name: str,
                      det_id: int | None) -> HeaderGeometry:
    """`geometry_from_hdus` of the per-amp HDUs `_inspect` found."""
    return geometry_from_hdus([(k, keys, shapes[k]) for k, keys in amp_hdus.items()], name,
                              det_id)


def amp_sources(
    info: FileInfo,
    detector: Detector,
    camera: Any = None,
    overscan: bool | str = "auto",
    gain: str | None = None,
) -> tuple[AmpSource, ...]:
    """Where each amp of ``detector`` is read from in the file described by ``info``.

    Exposure files and images already in the detector frame read each amp from the same box
    of the image HDU; raws and untrimmed images are assembled from the camera's raw boxes
    (or the header's ``DATASEC`` keywords), with their serial overscan subtracted as
    ``overscan`` says (`ampoffset_dask.io.overscan`).

    Parameters
    ----------
    info : FileInfo
    detector : Detector
    camera : str or Camera, optional
    overscan : {"auto", "per-row", "mean", "none"} or bool
        ``"auto"``: per-row for pixels read from raw boxes with a serial overscan, nothing
        for assembled files; ``True`` = ``"per-row"``, ``False`` = ``"none"``.
    gain : {None, "none", "nominal"}
        ``"nominal"`` multiplies each amp by the camera's nominal gain (``amp_gain``).

    Raises
    ------
    InputError
        If the image does not match the detector, a raw box lies outside its HDU, a forced
        overscan mode finds no overscan, or nominal gains are asked for but unknown.
    ConfigError
        For an unknown ``overscan`` or ``gain`` value.
    """
    mode = normalize_overscan(overscan)
    gain_mode = normalize_gain(gain)
    path = info.path
    cam = _camera_or_none(camera, path)
    if cam is None and info.camera is not None:
        cam = get_camera(info.camera)
    if cam is None and info.kind != "raw":
        cam = _guess_camera(info)
    sources = _located_sources(info, detector, cam, mode)
    if gain_mode == "nominal":
        gains = _nominal_gains(info, detector, cam)
        sources = tuple(dataclasses.replace(s, gain=g)
                        for s, g in zip(sources, gains, strict=True))
    return sources


def _located_sources(info: FileInfo, detector: Detector, cam: Camera | None,
                     mode: str) -> tuple[AmpSource, ...]:
    path = info.path
    forced = mode in ("per-row", "mean")

    def direct() -> tuple[AmpSource, ...]:
        return _direct(detector, info.image_hdu)

    if info.kind in ("exposure", "ccddata"):
        if info.shape != detector.shape:
            raise InputError(_shape_message(info, detector))
        if forced:
            raise InputError(f"{path}: overscan={mode!r}, but an assembled exposure file has no "
                             "overscan (use overscan='auto' or 'none')")
        return direct()
    if info.kind == "raw":
        return _raw_sources(info, detector, cam, mode)
    # plain image
    if info.shape == detector.shape and not forced:
        hg = _stated_geometry(info)
        if hg is None or hg.trimmed or not _same_places(hg.detector, detector):
            return direct()
        # the header stores the amps elsewhere than at their places (DATASEC<s> != CCDSEC<s>,
        # amps out of detector order): read each from its DATASEC
        return _header_sources(info, detector, hg, mode)
    raws = None
    if cam is not None and detector.name in cam:
        try:
            raws = cam.raw_amps(detector.name)
        except InputError:
            raws = None
        if raws is not None and cam[detector.name] != detector:
            raws = None
    if raws is not None and any(r.extname or r.hdu is not None for r in raws):
        if all(_raw_hdu(info, r) is not None for r in raws):
            return _raw_sources(info, detector, cam, mode)  # the file has the amps' HDUs
        raws = None  # boxes within per-amp HDUs the file lacks: they say nothing of one image
    if raws is not None:
        flip = raw_image_flip(cam, detector)
        out = []
        for amp, raw in zip(detector, raws, strict=True):
            out.append(_source_from_raw(info, amp, raw, info.image_hdu, info.shape, mode, flip))
        if flip is not None:
            check_hsc_channels(info.header, [s.src for s in out], path)
        return _distinct(tuple(out), info, detector)
    hg = _header_geometry(info)
    if hg is not None and _same_places(hg.detector, detector):
        return _header_sources(info, detector, hg, mode)
    if info.shape == detector.shape:
        return direct()
    raise InputError(_shape_message(info, detector))


def _header_sources(info: FileInfo, detector: Detector, hg: HeaderGeometry,
                    mode: str) -> tuple[AmpSource, ...]:
    """Each amp read from its header data box (in its own HDU for per-amp files), placed at
    its place in ``detector``, with the header's overscan as ``mode`` says."""
    if mode in ("per-row", "mean") and any(o is None for o in hg.overscan_boxes):
        raise InputError(f"{info.path}: overscan={mode!r}, but the header gives no BIASSEC "
                         "overscan region for every amp")
    use = mode != "none" and all(o is not None for o in hg.overscan_boxes)
    hdus = hg.hdus or (info.image_hdu,) * len(detector)
    out = []
    for amp, data, over, hdu in zip(detector, hg.data_boxes, hg.overscan_boxes, hdus,
                                    strict=True):
        out.append(AmpSource(amp.name, (amp.y0, amp.y1, amp.x0, amp.x1), hdu, data,
                             overscan=over if use else None, overscan_mode=_applied_mode(mode)))
    return _distinct(tuple(out), info, detector)


def _distinct(sources: tuple[AmpSource, ...], info: FileInfo,
              detector: Detector) -> tuple[AmpSource, ...]:
    """``sources``, once no two amps read overlapping pixels of one HDU (boxes that do
    describe another layout than the file's: every amp would measure the same pixels)."""
    for i, a in enumerate(sources):
        for b in sources[i + 1:]:
            if a.hdu == b.hdu and _overlaps(a.src, *b.src):
                raise InputError(
                    f"{info.path}: the raw boxes of detector {detector.name!r} put amps "
                    f"{a.name!r} and {b.name!r} on overlapping pixels of the {info.shape} image; "
                    "they describe another layout (is it the right detector?)")
    return sources


def _applied_mode(mode: str) -> str:
    return "per-row" if mode == "auto" else mode


def _nominal_gains(info: FileInfo, detector: Detector, cam: Camera | None) -> list[float]:
    """Per-amp nominal gains (e-/ADU) of ``detector`` from the camera description."""
    gains = None
    if cam is not None and detector.name in cam:
        gains = cam.info(detector.name).get("amp_gain")
    if not gains or len(gains) != len(detector):
        where = f"camera {cam.name!r}" if cam is not None else "no camera"
        raise InputError(f"{info.path}: gain='nominal' needs the nominal gains (amp_gain, one "
                         f"per amp) of detector {detector.name!r}; {where} gives none")
    out = [float(g) for g in gains]
    if not all(np.isfinite(g) and g > 0 for g in out):
        raise InputError(f"{info.path}: detector {detector.name!r}: nominal gains {out} are not "
                         "all positive")
    return out


def _shape_message(info: FileInfo, detector: Detector) -> str:
    return (f"{info.path}: image shape {info.shape} (height, width) does not match detector "
            f"{detector.name!r} of shape {detector.shape}")


def _source_from_raw(info, amp, raw, hdu, hdu_shape, mode: str,
                     flip: str | None = None) -> AmpSource:
    """One amp's source from its camera raw boxes; ``flip`` (``"x"``/``"y"``) says the boxes
    are in the frame of the whole raw image flipped left-right/top-bottom (HSC)."""
    if flip is not None:
        over_box = raw.raw_serial_overscan_bbox
        raw = dataclasses.replace(
            raw, raw_data_bbox=flip_box(raw.raw_data_bbox, flip, hdu_shape),
            raw_serial_overscan_bbox=(None if over_box is None
                                      else flip_box(over_box, flip, hdu_shape)),
            flip_x=raw.flip_x != (flip == "x"), flip_y=raw.flip_y != (flip == "y"))
    x0, y0, w, h = raw.raw_data_bbox
    if (w, h) != (amp.width, amp.height):
        raise InputError(
            f"{info.path}: amp {amp.name!r}: raw data box {w}x{h} "
            f"differs from its {amp.width}x{amp.height} bbox"
        )
    if x0 < 0 or y0 < 0 or y0 + h > hdu_shape[0] or x0 + w > hdu_shape[1]:
        raise InputError(
            f"{info.path}: amp {amp.name!r}: raw data box x[{x0}:{x0 + w}] y[{y0}:{y0 + h}] "
            f"lies outside HDU {hdu} of shape {hdu_shape}"
        )
    over = None
    if mode != "none":
        if raw.raw_serial_overscan_bbox is None:
            if mode != "auto":
                raise InputError(f"{info.path}: amp {amp.name!r} has no serial overscan box "
                                 f"(overscan={mode!r})")
        else:
            ox, oy, ow, oh = raw.raw_serial_overscan_bbox
            if ox < 0 or oy < 0 or oy + oh > hdu_shape[0] or ox + ow > hdu_shape[1]:
                raise InputError(
                    f"{info.path}: amp {amp.name!r}: overscan box x[{ox}:{ox + ow}] "
                    f"y[{oy}:{oy + oh}] lies outside HDU {hdu} of shape {hdu_shape}"
                )
            over = (oy, oy + oh, ox, ox + ow)
    return AmpSource(amp.name, (amp.y0, amp.y1, amp.x0, amp.x1), hdu, (y0, y0 + h, x0, x0 + w),
                     raw.flip_x, raw.flip_y, over, _applied_mode(mode))


def _raw_hdu(info: FileInfo, raw: Any) -> int | None:
    """The HDU of the file a camera raw amp names (by ``extname``, else ``hdu``), or None."""
    hdu = info.segments.get((raw.extname or "").upper())
    if hdu is None and raw.hdu is not None and raw.hdu in info.segment_shapes:
        hdu = raw.hdu
    return hdu


def _raw_sources(info: FileInfo, detector: Detector, cam: Camera | None,
                 mode: str) -> tuple[AmpSource, ...]:
    """Per-amp HDUs assembled with the camera's raw boxes, else (generic per-amp files) with
    their header sections."""
    path = info.path
    raws = None
    if cam is not None and detector.name in cam:
        try:
            raws = cam.raw_amps(detector.name)
        except InputError:
            if not info.amp_hdus:
                raise
    if raws is None:
        hg = _header_geometry(info) if info.amp_hdus else None
        if hg is not None and _same_places(hg.detector, detector):
            return _header_sources(info, detector, hg, mode)
        if hg is not None:
            raise InputError(
                f"{path}: detector {detector.name!r} is not the layout of the file's "
                f"{len(info.amp_hdus)} amp HDUs ({_layout_text(hg.detector)}); give a camera "
                "whose amps name their HDU (\"hdu\"/\"extname\", see docs/cameras.md)")
        raise InputError(
            f"{path}: raw file of detector {detector.name!r}: assembling raws needs a camera "
            "with raw boxes (pass camera=)"
        )
    out = []
    for amp, raw in zip(detector, raws, strict=True):
        hdu = _raw_hdu(info, raw)
        if hdu is None and raw.extname is None and raw.hdu is None:
            raise InputError(
                f"{path}: camera {cam.name!r} names no HDU (\"hdu\"/\"extname\") for amp "
                f"{amp.name!r} of detector {detector.name!r}, but this file holds one amp per "
                f"HDU (HDUs {', '.join(map(str, sorted(info.segment_shapes)))})"
            )
        if hdu is None:
            raise InputError(
                f"{path}: detector {detector.name!r}: no raw HDU {raw.extname or raw.hdu} for "
                f"amp {amp.name!r}"
            )
        out.append(_source_from_raw(info, amp, raw, hdu, info.segment_shapes[hdu], mode))
    return tuple(out)


def file_isr(info: FileInfo, detector: Detector, sources: tuple[AmpSource, ...]) -> IsrSteps:
    """What reading ``sources`` does to the pixels of the file (`IsrSteps`)."""
    raw = (info.kind == "raw" or tuple(info.shape) != detector.shape
           or any((s.src, s.flip_x, s.flip_y) != (s.dest, False, False) for s in sources))
    return isr_steps(sources, raw=raw)


def open_sources(
    path: str | os.PathLike, camera: Any = None, detector: Any = None,
    overscan: bool | str = "auto", gain: str | None = None, hdu: int | None = None,
) -> tuple[FileInfo, Detector, tuple[AmpSource, ...]]:
    """Headers, geometry and per-amp pixel sources of a file (what every reader starts from)."""
    info = inspect_file(path, hdu)
    det = resolve_detector(info, camera, detector)
    return info, det, amp_sources(info, det, camera, overscan, gain)


def sources_on_hdu(sources: tuple[AmpSource, ...], hdu: int,
                   gain_power: int = 0) -> tuple[AmpSource, ...]:
    """The same amp boxes read from another HDU, without overscan: the mask
    (``gain_power=0``: no gain) or the variance (``gain_power=2``: scaled by gain squared)."""
    return tuple(dataclasses.replace(
        s, hdu=hdu, overscan=None,
        gain=None if s.gain is None or not gain_power else s.gain ** gain_power,
    ) for s in sources)


def mask_sources(info: FileInfo, sources: tuple[AmpSource, ...]) -> tuple[AmpSource, ...]:
    """The amp boxes of the MASK HDU (CCDData's boolean masks become ``BAD`` bits)."""
    out = sources_on_hdu(sources, info.mask_hdu)
    if info.kind == "ccddata":
        bit = CCDDATA_MASK_PLANES["BAD"]
        out = tuple(dataclasses.replace(s, flag_nonzero=bit) for s in out)
    return out


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
                and sources == _direct(det, info.image_hdu)):
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


def _direct(det: Detector, hdu: int) -> tuple[AmpSource, ...]:
    return tuple(AmpSource(a.name, (a.y0, a.y1, a.x0, a.x1), hdu, (a.y0, a.y1, a.x0, a.x1))
                 for a in det)
