"""What a FITS file holds, from its headers alone: `inspect_file` and `FileInfo`.

The role of each HDU (image, mask, variance, raw amp segments, CCDs of a multi-CCD file,
archive tables), the identity the headers give (camera, detector, visit), the mask planes
(``MP_*`` keywords) and the layout kind (see `ampoffset_dask.io.fits`). No pixel is read:
planning reads every input's headers through here, walking them without astropy where it
can (`ampoffset_dask.io.header_walk`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..cameras import canonical_camera_name, get_camera
from ..errors import AmpOffsetError, GeometryError, InputError
from ..masks import DEFAULT_MASK_PLANES
from .header_geometry import HeaderGeometry, geometry_from_hdus
from .header_walk import CachedHeader, walk_headers
from .mosaic import (
    CCD_KEYS,
    is_ccd_header,
    name_one_ccd,
)
from .sections import (
    _hdu_shape,
    _is_wrapped,
    _open,
    check_image_size,
    data_beyond_end,
    header_shape,
    is_image_header,
    layouts_of,
    plain_layout,
    remember_layouts,
    stream_hdus,
    truncated_error,
    wrapped_content,
)

__all__ = [
    "CCDDATA_MASK_PLANES",
    "UNCERTAINTY_CLASSES",
    "FileInfo",
    "MaskPlanesWarning",
    "inspect_file",
    "mask_planes_from_header",
    "variance_from_uncertainty",
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
    "CCDNUM", "DETPOS", "DET-ID", "VISIT", "EXPNUM", "EXP-ID", "DAYOBS", "SEQNUM", "CONTRLLR",
    "OBSID",
    "DATE-OBS", "MJD-OBS",
    "EXPTIME", "FILTER", "IMGTYPE", "OBSTYPE", "DETSIZE",
    "LSST BUTLER DATAID DETECTOR", "LSST BUTLER DATAID VISIT", "LSST BUTLER DATAID EXPOSURE",
    "LSST BUTLER DATAID INSTRUMENT", "LSST ISR AMPOFFSET PEDESTAL SUBTRACTED",
    # units: nominal gains are not applied to pixels already in electrons
    "BUNIT", "GAINCORR",
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
    visit_problem : str
        Why ``visit`` is None although the header has a visit keyword (``"header keyword
        VISIT = 1.5 is not an integer"``); empty otherwise.
    image_bitpix : int
        ``BITPIX`` of the image HDU's pixels (-32: float32).
    other_hdus : tuple of str
        The extensions besides the image, mask, variance and afw archive HDUs (each named
        ``EXTNAME (HDU k)``, or ``HDU k``): what a corrected exposure written in place would
        not keep.
    detector_id_from : str or None
        The camera whose numbering filled in ``detector_id`` when the header states no id
        (a LATISS raw names ``RXX_S00`` only: its id 0 is LATISS's), else None. Such an id
        means nothing in another camera.
    keywords : dict
        The values of the keywords `inspect_file` was asked for (``keys=``, e.g. the one
        ``--visit KEYWORD`` names), by name in upper case: the image HDU's value, else the
        primary's; a keyword neither has is absent.
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
    duplicate_names: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict,
                                                                     repr=False)
    visit_problem: str = ""
    image_bitpix: int = -32
    other_hdus: tuple[str, ...] = ()
    keywords: dict[str, Any] = dataclasses.field(default_factory=dict)
    detector_id_from: str | None = None


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
            cut = _cut_after(path, hdul, k)
            if cut is not None:
                raise InputError(cut) from None
            return
        except (OSError, ValueError, EOFError, TypeError) as exc:
            cut = _cut_after(path, hdul, k)
            raise InputError(cut or f"{path}: HDU {k} cannot be read ({exc}); truncated "
                             "file?") from exc
        beyond = data_beyond_end(hdu)
        if beyond is not None:
            raise truncated_error(path, beyond)
        yield k, hdu
        k += 1


#: How far past the last HDU astropy read `_cut_after` looks for an ``END`` card.
_LOOK_BLOCKS = 100


def _cut_after(path: Any, hdul: fits.HDUList, k: int) -> str | None:
    """Why HDU ``k`` of a file is missing when the file ends inside it (the message of the
    `InputError`), else None.

    astropy ends the HDU list silently (a warning, which cannot be caught reliably while
    other threads open files) at a header it cannot read, such as one cut short: a raw cut
    inside its 9th segment's header would be read as a raw without its last segments. This
    looks at what follows HDU ``k - 1``: the start of an extension header the file ends in
    (``truncated FITS file (HDU k header)``), or a whole header declaring more data than the
    file holds (``HDU k needs N data bytes, the file has M after its header``). Anything
    else (nothing, padding or garbage after the last HDU, a header with its data) is left
    to astropy.
    """
    from .sections import _FITS_BLOCK, declared_data_bytes

    # (the HDU's own fileinfo: the list's checks whether headers were resized, which
    # formats every card and can raise on one astropy reads but will not write)
    info = hdul[k - 1].fileinfo() if k else None
    fileobj = info.get("file") if info else None
    size = int(getattr(fileobj, "size", 0) or 0)
    end = int(info["datLoc"]) + int(info["datSpan"]) if info else size
    if end >= size:
        return None
    n = min(size - end, _LOOK_BLOCKS * _FITS_BLOCK)
    try:
        if getattr(fileobj, "closed", False) and isinstance(path, Path):
            with open(path, "rb") as fh:  # (astropy closes a file on some of its errors)
                fh.seek(end)
                rest = fh.read(n)
        else:
            where = fileobj.tell()
            try:
                fileobj.seek(end)
                rest = bytes(fileobj.read(n))
            finally:
                fileobj.seek(where)
    except (OSError, ValueError, AttributeError):  # astropy's error stands
        return None
    start = b"XTENSION="
    if not (rest.startswith(start) or start.startswith(rest)):
        return None
    cards = (rest[i:i + 8] for i in range(0, len(rest) - 79, 80))
    at = next((i for i, card in enumerate(cards) if card == b"END     "), None)
    header_bytes = None if at is None else -(-(at + 1) * 80 // _FITS_BLOCK) * _FITS_BLOCK
    if header_bytes is None and size - end > len(rest):
        return None  # no END in the first blocks: not a cut header
    if header_bytes is None or header_bytes > size - end:  # (END, but not its whole block)
        return f"{path}: truncated FITS file (HDU {k} header)"
    try:
        need = declared_data_bytes(fits.Header.fromstring(rest[:header_bytes].decode("ascii")))
    except (ValueError, UnicodeDecodeError, TypeError):
        return None
    have = size - end - header_bytes
    if need > have:
        return (f"{path}: truncated FITS file: HDU {k} needs {need} data bytes, the file has "
                f"{have} after its header")
    return None


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


#: The keywords holding a visit number, first found first used.
_VISIT_KEYS = ("VISIT", "LSST BUTLER DATAID VISIT", "LSST BUTLER DATAID EXPOSURE", "EXPNUM")


def _visit_from(keys: Mapping[str, Any]) -> int | None:
    for key in _VISIT_KEYS:
        v = _as_int(keys.get(key))
        if v is not None:
            return v
    m = re.fullmatch(r"HSCE(\d{8})", str(keys.get("EXP-ID", "")).strip())
    if m:  # HSC exposure id "HSCE<8 digits>": the visit number
        return int(m.group(1))
    day, seq = _day_obs(keys.get("DAYOBS")), _as_int(keys.get("SEQNUM"))
    if day is not None and seq is not None and 0 <= seq < 100000:
        return _lsst_exposure_id(day, seq, _controller(keys))
    return None


def _day_obs(value: Any) -> int | None:
    """An LSST day_obs as the integer YYYYMMDD: given so, or as a date YYYY-MM-DD (an ISO
    time's date)."""
    day = _as_int(value)
    if day is not None or value is None:
        return day
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})(?:T.*)?", str(value).strip())
    return int("".join(m.groups())) if m else None


#: LSST's camera controller codes (``CONTRLLR``): each one after the first moves the
#: exposure id's day_obs on by 1000 years, so the same day and sequence number from two
#: controllers are two exposures.
_CONTROLLERS = "OCHPQS"


def _controller(keys: Mapping[str, Any]) -> str | None:
    value = keys.get("CONTRLLR")
    text = "" if value is None else str(value).strip().upper()
    return text or None


def _lsst_exposure_id(day: int, seq: int, controller: str | None) -> int | None:
    """LSST's exposure id of a raw: ``day_obs * 100000 + seq_num``, day_obs shifted by
    1000 years per controller (`_CONTROLLERS`) where that controller's counter was its own
    (CCS, "C", until 2023-10-04; "P", "Q" and "S" until 2025-04-17); None for a controller
    code LSST does not know."""
    if controller is not None and ((controller == "C" and day > 20231004)
                                   or (controller in ("P", "Q", "S") and day > 20250417)):
        controller = None
    if controller is None:
        return day * 100000 + seq
    if len(controller) != 1 or controller not in _CONTROLLERS:
        return None
    return (day + 10_000_000 * _CONTROLLERS.index(controller)) * 100000 + seq


def earlier_lsst_visit(visit: int) -> int | None:
    """The visit number versions before the controller was counted gave the LSST raw whose
    visit is now ``visit`` (`_lsst_exposure_id`: its day_obs moved on 1000 years per
    controller index), or None when ``visit`` is no shifted exposure id."""
    shift = visit // (10_000_000 * 100000) - 2  # the controller's index: 20xx days are 2
    if 1 <= shift < len(_CONTROLLERS):
        return visit - shift * 10_000_000 * 100000
    return None


def _visit_problem(keys: Mapping[str, Any]) -> str:
    """Why a header with a visit keyword gives no visit number (`_visit_from` is None):
    its first such keyword holding something else than an integer; empty if none does."""
    if _visit_from(keys) is not None:
        return ""
    for key in _VISIT_KEYS:
        value = keys.get(key)
        if value is not None and _as_int(value) is None:
            return f"header keyword {key} = {value!r} is not an integer (a visit number)"
    day, seq = keys.get("DAYOBS"), keys.get("SEQNUM")
    if day is not None and _day_obs(day) is None:
        return f"header keyword DAYOBS = {day!r} is not a day (YYYYMMDD or YYYY-MM-DD)"
    if seq is not None and _as_int(seq) is None:
        return f"header keyword SEQNUM = {seq!r} is not an integer (a sequence number)"
    if seq is not None and not 0 <= _as_int(seq) < 100000:
        return (f"header keyword SEQNUM = {seq!r} is outside 0-99999: LSST's exposure id, "
                "the visit number, holds five digits for it")
    if day is not None and seq is not None:
        return (f"header keyword CONTRLLR = {keys.get('CONTRLLR')!r} is not a camera "
                f"controller code LSST knows ({', '.join(_CONTROLLERS)}): its exposure id, "
                "the visit number, is unknown")
    return ""


#: The keys of the warnings `warn_once` gave (each once per process).
_WARNED: set[tuple] = set()


def warn_once(log: logging.Logger, key: tuple, message: str, *args: Any) -> None:
    """``log.warning(message, *args)`` once per ``key`` (a file, and what about it) and
    process: planning and every reader of a file inspect it again."""
    if key in _WARNED:
        return
    if len(_WARNED) > 4096:
        _WARNED.clear()
    _WARNED.add(key)
    log.warning(message, *args)


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


def _walked(path: Path, hdu: int | None, keys: tuple[str, ...] = ()) -> FileInfo | None:
    """`inspect_file` of a plain local file from its walked headers (the keywords
    `_inspect` reads and ``keys``, no HDU objects); None for files astropy must read."""
    walked = walk_headers(path, _INSPECTED | set(keys), _INSPECTED_PREFIXES)
    if walked is None:
        return None
    info = _inspect([_head_of_header(w.index, w.header) for w in walked], None, path,
                    path.stat().st_size, hdu, local=True, asked=keys)
    remember_layouts(path, {i: plain_layout(walked[i].header, walked[i].data_offset)
                            for i in _data_hdus(info)})
    return info


def inspect_file(path: str | os.PathLike, hdu: int | None = None, *,
                 keys: Iterable[str] = ()) -> FileInfo:
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
    keys : iterable of str
        More header keywords to read (``FileInfo.keywords``), by name (a HIERARCH one
        without the ``HIERARCH`` prefix): read with the other headers, not in a second pass
        over the file.

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
        return _inspect_file(path, hdu, tuple(k.upper() for k in keys))
    except AmpOffsetError:
        raise
    except (fits.VerifyError, ValueError) as exc:  # a card astropy refuses (OSError: I/O)
        raise InputError(f"{path}: cannot read the header: {exc}") from exc


def _inspect_file(path: str | os.PathLike, hdu: int | None, keys: tuple[str, ...]
                  ) -> FileInfo:
    from . import remote

    if remote.is_url(os.fspath(path)):
        with remote.open_url_hdul(os.fspath(path)) as (hdul, size):
            info = _inspect(_heads_of_hdul(os.fspath(path), hdul), hdul, os.fspath(path),
                            size, hdu, local=False, asked=keys)
            remote.remember_url_layouts(info.path, hdul, _data_hdus(info))
            return info
    path = _check_path(remote.localize(path))
    if _is_wrapped(path):  # headers streamed; the file is never decompressed whole
        return _inspect(_heads_of_stream(path), None, path, path.stat().st_size, hdu,
                        local=True, asked=keys)
    info = _walked(path, hdu, keys)
    return info if info is not None else _opened(path, hdu, keys)


def _opened(path: Path, hdu: int | None, keys: tuple[str, ...] = ()) -> FileInfo:
    """`inspect_file` of a local unwrapped file through astropy's `~astropy.io.fits.HDUList`
    (the files `_walked` leaves to it)."""
    with _open(path) as hdul:
        return _inspect(_heads_of_hdul(path, hdul), hdul, path, path.stat().st_size, hdu,
                        local=True, asked=keys)


def _data_hdus(info: FileInfo) -> list[int]:
    used = [i for i in (info.image_hdu, info.mask_hdu, info.variance_hdu) if i is not None]
    return sorted(set(used + list(info.segments.values())))


def _inspect(heads: list[_Head], hdul: fits.HDUList | None, path: Any, size: int,
             hdu: int | None, local: bool, asked: tuple[str, ...] = ()) -> FileInfo:
    """`inspect_file` from the HDU list of a file of ``size`` bytes (``local``: a file on
    this machine); ``hdul``, when the file is open (not for streamed wrapped files), is
    checked for truncation and its data offsets are remembered for the pixel reads.
    ``asked``: the keywords `FileInfo.keywords` holds."""
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
    named: dict[str, list[int]] = {}  # the image HDUs of each EXTNAME (one, unless damaged)
    for k, extname, _ in images:
        if extname:
            named.setdefault(extname, []).append(k)
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
    if len(shape2) != 2:  # an IMAGE extension holding a cube: it named the wrong shape
        raise InputError(f"{path}: the image HDU {image_hdu} is {len(shape2)}-D (shape "
                         f"{shape2}); a detector image is 2-D")
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
    id_from = None
    if camera is not None:
        # complete the identity from the camera: raws carry a name only, some files an id only
        cam = get_camera(camera)
        if name is not None and det_id is None and name in cam:
            det_id, id_from = cam[name].id, camera
        elif name is None and det_id is not None and det_id in cam:
            name = cam[det_id].name
        elif name is None and det_id is None and len(cam) == 1:
            name, det_id = cam.detector_names[0], cam.detector_ids[0]
            id_from = camera
        elif (name is not None and det_id is not None and name in cam
              and cam[name].id != det_id):
            # DETNAME/DETPOS and DETECTOR/CCDNUM name two detectors: the name is used (as
            # before), with its own id, said once per file (the row held one detector's
            # name beside another's id, without a word)
            other = cam[det_id].name if det_id in cam else "no detector"
            warn_once(logger, (str(path), "identity"),
                      "%s: the header names detector %s (id %s) and detector id %s (%s of "
                      "camera %s); measured as %s", path, name, cam[name].id, det_id, other,
                      cam.name, name)
            det_id = cam[name].id
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
        duplicate_names={n: tuple(ks) for n, ks in named.items() if len(ks) > 1},
        visit_problem=_visit_problem(keys),
        image_bitpix=heads[image_hdu].bitpix,
        other_hdus=tuple(_hdu_name(h) for h in heads[1:] if h.index not in
                         {image_hdu, mask_hdu, variance_hdu, *archive}),
        keywords=_keywords(asked, (image_header, primary)),
        detector_id_from=id_from,
    )


def _keywords(keys: Iterable[str], headers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{key: value}`` of each of ``keys`` in the first of ``headers`` holding it (a card
    without a value holds `~astropy.io.fits.card.Undefined`: the caller says it is no
    number)."""
    out: dict[str, Any] = {}
    for key in keys:
        for header in headers:
            value = _header_get(header, key)
            if value is not None:
                out[key] = value
                break
    return out


def _hdu_name(head: _Head) -> str:
    extname = str(head.header.get("EXTNAME", "") or "").strip()
    return f"{extname} (HDU {head.index})" if extname else f"HDU {head.index}"


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


def _amp_hdu_geometry(amp_hdus: Mapping[int, Mapping[str, str]],
                      shapes: Mapping[int, tuple[int, int]], name: str,
                      det_id: int | None) -> HeaderGeometry:
    """`geometry_from_hdus` of the per-amp HDUs `_inspect` found."""
    return geometry_from_hdus([(k, keys, shapes[k]) for k, keys in amp_hdus.items()], name,
                              det_id)


def header_identity(path: str | os.PathLike) -> tuple[int | None, str | None]:
    """The visit and detector name the primary header of a local file gives, read alone
    (``(None, None)`` when it cannot be read): the identity of a file `inspect_file` refuses
    (truncated pixels, a damaged extension), so that its failed row names them."""
    try:
        header = fits.getheader(os.fspath(path), 0)
    except Exception:  # the caller reports the file's own error
        return None, None
    keys = _identity([header])
    return _visit_from(keys), _detector_from(keys)[0]

