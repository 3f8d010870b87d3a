"""FITS readers and writers: LSST exposures and raws, plain images, the project layout.

Every function opens the file inside the call, closes it before returning, hands back native
byte order arrays and raises `InputError` naming the file and the reason.

Layouts understood
------------------
``"exposure"``
    Primary HDU + ``IMAGE``, ``MASK`` (plane bits in ``MP_*`` keywords), ``VARIANCE``
    extensions, possibly tile-compressed and followed by archive tables (LSST's afw layout;
    also what `write_exposure` writes).
``"raw"``
    LSST raw files: one ``SegmentNN`` HDU per amp, assembled with the camera's raw boxes and
    flips (never by DETSEC, see ``docs/cameras.md``).
``"image"``
    Any other file: the first 2-D image HDU. Its amps come from a camera/detector given by the
    caller or from ``DATASEC``-style header keywords; with a camera whose amps carry raw boxes
    (``raw_data_bbox``) the image is assembled and optionally overscan-corrected.
"""

from __future__ import annotations

import bz2
import collections
import dataclasses
import gzip
import io
import logging
import os
import re
import threading
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..cameras import Camera, UnknownDetectorError, canonical_camera_name, get_camera
from ..errors import GeometryError, InputError
from ..geometry import Detector
from ..masks import DEFAULT_MASK_PLANES, plane_bit
from .header_geometry import format_section, geometry_from_header, section_suffixes

__all__ = [
    "AmpSource",
    "ExposureData",
    "FileInfo",
    "LazyPlane",
    "MaskPlanesWarning",
    "amp_sources",
    "close_cached_files",
    "inspect_file",
    "read_exposure",
    "read_section",
    "resolve_detector",
    "write_exposure",
]

logger = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^SEGMENT(\d+)$", re.IGNORECASE)
_GEOMETRY_KEY = re.compile(r"^(DATASEC|DETSEC|CCDSEC|BIASSEC|AMPNAM)\w*$")
_IDENTITY_KEYS = (
    "INSTRUME", "CAMERA", "TELESCOP", "DETNAME", "DETECTOR", "DETSER", "RAFTBAY", "CCDSLOT",
    "CCDNUM", "DETPOS", "VISIT", "EXPNUM", "DAYOBS", "SEQNUM", "OBSID", "DATE-OBS", "MJD-OBS",
    "EXPTIME", "FILTER", "IMGTYPE", "OBSTYPE", "DETSIZE",
    "LSST BUTLER DATAID DETECTOR", "LSST BUTLER DATAID VISIT", "LSST BUTLER DATAID EXPOSURE",
    "LSST BUTLER DATAID INSTRUMENT",
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
        ``"exposure"``, ``"raw"`` or ``"image"``.
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
        Raw files: ``EXTNAME`` (upper case) -> HDU index of each amp segment.
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


@dataclasses.dataclass
class ExposureData:
    """An exposure read into memory by `read_exposure`.

    ``image`` is float32, ``mask`` int32, ``variance`` float32, all native byte order, in the
    assembled detector frame. Non-finite image pixels have ``NO_DATA`` set in ``mask``.
    """

    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    mask_planes: dict[str, int]
    detector: Detector
    visit: int | None
    info: FileInfo

    def to_exposure(self):
        """An `ampoffset_dask.exposure.Exposure` of the same planes."""
        from ..exposure import Exposure

        return Exposure(self.image, self.mask, self.variance, self.detector, self.mask_planes,
                        dict(self.info.header))


@dataclasses.dataclass(frozen=True)
class AmpSource:
    """Where one amp's pixels come from.

    Boxes are ``(y0, y1, x0, x1)``, 0-based, half-open. ``dest`` is in the detector image,
    ``src`` in HDU ``hdu`` of the file; ``flip_x``/``flip_y`` flip the cut-out before pasting;
    ``overscan`` (same rows as ``src``) is subtracted row by row (median) when given.
    """

    name: str
    dest: tuple[int, int, int, int]
    hdu: int
    src: tuple[int, int, int, int]
    flip_x: bool = False
    flip_y: bool = False
    overscan: tuple[int, int, int, int] | None = None


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


def _open_hdul(path: Path, memmap: bool = True) -> fits.HDUList:
    """Open a FITS file read-only, turning astropy's errors into `InputError`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if _is_wrapped(path):
                # astropy seeks inside the compressed stream for every region it reads, which is
                # very slow; decompress the whole file once into memory instead.
                buffer = _decompress(path)
                hdul = fits.open(io.BytesIO(buffer), mode="readonly", lazy_load_hdus=True)
                hdul._ampoffset_buffer = buffer
            else:
                hdul = fits.open(path, mode="readonly", memmap=memmap, lazy_load_hdus=True)
        except (OSError, ValueError, TypeError, EOFError, IndexError, zlib.error) as exc:
            raise InputError(f"{path}: not a readable FITS file ({exc})") from exc
    for w in caught:
        if "truncated" in str(w.message).lower():
            hdul.close()
            raise InputError(f"{path}: truncated FITS file ({w.message})")
    return hdul


@contextmanager
def _open(path: Path, memmap: bool = True) -> Iterator[fits.HDUList]:
    """`_open_hdul` as a context manager that closes the file."""
    hdul = _open_hdul(path, memmap)
    try:
        yield hdul
    finally:
        hdul.close()


class _OpenFiles:
    """A small per-process cache of open files for region reads that need astropy
    (tile-compressed HDUs, gzip-wrapped files): building a compressed HDU costs far more than
    decompressing a strip of it, so the strip reads of one detector share one open file.

    Entries are keyed by path, size and modification time (a rewritten file is reopened),
    at most `size` files stay open, and each is read under its own lock.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._files: collections.OrderedDict[tuple, tuple[fits.HDUList, threading.Lock]] = (
            collections.OrderedDict())

    @contextmanager
    def hdul(self, path: Path) -> Iterator[fits.HDUList]:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            entry = self._files.get(key)
            if entry is not None:
                self._files.move_to_end(key)
        if entry is None:
            entry = (_open_hdul(path), threading.Lock())
            evicted = []
            with self._lock:
                if key in self._files:  # opened meanwhile by another thread
                    evicted.append(entry)
                    entry = self._files[key]
                else:
                    self._files[key] = entry
                while len(self._files) > self.size:
                    evicted.append(self._files.popitem(last=False)[1])
            for old, lock in evicted:
                with lock:
                    old.close()
        with entry[1]:
            yield entry[0]

    def close_all(self) -> None:
        with self._lock:
            entries = list(self._files.values())
            self._files.clear()
        for hdul, lock in entries:
            with lock:
                hdul.close()


_OPEN_FILES = _OpenFiles()


def close_cached_files() -> None:
    """Close the files kept open by region reads of compressed or gzip-wrapped files."""
    _OPEN_FILES.close_all()


def _reset_after_fork() -> None:
    """A forked child must not share the parent's open files (file offsets) or held locks."""
    global _OPEN_FILES, _BUFFERS_LOCK, _LAYOUTS_LOCK, _BANDS_LOCK
    _OPEN_FILES = _OpenFiles()
    _BUFFERS_LOCK = threading.Lock()
    _LAYOUTS_LOCK = threading.Lock()
    _BANDS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


_BUFFERS: collections.OrderedDict[tuple[str, int, int], bytes] = collections.OrderedDict()
_BUFFERS_LOCK = threading.Lock()
_BUFFERS_MAX_BYTES = 256 << 20  # the newest buffer is always kept


def _decompress(path: Path) -> bytes:
    """Decompressed content of a wrapped file; the last few are kept per process, so that the
    amp reads of one lazily opened ``.fits.gz`` decompress it once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _BUFFERS_LOCK:
        if key in _BUFFERS:
            _BUFFERS.move_to_end(key)
            return _BUFFERS[key]
    data = _decompress_file(path)
    with _BUFFERS_LOCK:
        _BUFFERS[key] = data
        while len(_BUFFERS) > 1 and sum(len(v) for v in _BUFFERS.values()) > _BUFFERS_MAX_BYTES:
            _BUFFERS.popitem(last=False)
    return data


def _decompress_file(path: Path) -> bytes:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as fh:
            return fh.read()
    if magic[:3] == b"BZh":
        with bz2.open(path, "rb") as fh:
            return fh.read()
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if not names:
            raise OSError("empty zip archive")
        return zf.read(names[0])


def _is_image(hdu: Any) -> bool:
    return isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)


def _hdu_shape(hdu: Any) -> tuple[int, ...]:
    h = hdu.header
    n = int(h.get("NAXIS", 0))
    return tuple(int(h.get(f"NAXIS{k}", 0)) for k in range(n, 0, -1))


def _iter_hdus(hdul: fits.HDUList, path: Path) -> Iterator[tuple[int, Any]]:
    k = 0
    while True:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                hdu = hdul[k]
            except IndexError:
                hdu = None
            except (OSError, ValueError, EOFError, TypeError) as exc:
                raise InputError(
                    f"{path}: HDU {k} cannot be read ({exc}); truncated file?"
                ) from exc
        for w in caught:
            if "truncated" in str(w.message).lower():
                raise InputError(f"{path}: truncated FITS file ({w.message})")
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if hdu is None:
            return
        yield k, hdu
        k += 1


def _check_not_truncated(path: Path, hdul: fits.HDUList, indices: list[int]) -> None:
    if _is_wrapped(path):
        return
    size = path.stat().st_size
    for i in indices:
        info = hdul[i].fileinfo()
        if info is None:
            continue
        end = int(info["datLoc"]) + int(info["datSpan"])
        if end > size:
            raise InputError(
                f"{path}: truncated FITS file: HDU {i} needs {end} bytes, the file has {size}"
            )


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


def _header_get(header: fits.Header, key: str) -> Any:
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


def _identity(headers: list[fits.Header]) -> dict[str, Any]:
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
    for key in ("DETECTOR", "LSST BUTLER DATAID DETECTOR", "CCDNUM"):
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


# ------------------------------------------------------------------------------------------
# inspect_file
# ------------------------------------------------------------------------------------------
def inspect_file(path: str | os.PathLike) -> FileInfo:
    """Read the headers of a FITS file (no pixels) and describe it.

    Raises
    ------
    InputError
        For a missing, empty, truncated or non-FITS file, a directory, or a file without a
        usable image, naming the file and the reason.
    """
    path = _check_path(path)
    with _open(path) as hdul:
        images: list[tuple[int, str, tuple[int, ...]]] = []
        segments: dict[str, int] = {}
        segment_shapes: dict[int, tuple[int, int]] = {}
        roles: dict[str, int] = {}
        for k, hdu in _iter_hdus(hdul, path):
            if not _is_image(hdu):
                continue
            shape = _hdu_shape(hdu)
            extname = str(hdu.header.get("EXTNAME", "") or "").strip().upper()
            exttype = str(hdu.header.get("EXTTYPE", "") or "").strip().upper()
            role = exttype if exttype in ("IMAGE", "MASK", "VARIANCE") else extname
            if role in ("IMAGE", "MASK", "VARIANCE") and role not in roles:
                roles[role] = k
            if _SEGMENT.match(extname) and len(shape) == 2:
                segments[extname] = k
                segment_shapes[k] = (shape[0], shape[1])
            if len(shape) == 2:
                images.append((k, extname, shape))
        if not images:
            raise InputError(f"{path}: no 2-D image HDU in the file")
        primary = hdul[0].header
        if roles:
            if "IMAGE" not in roles:
                raise InputError(
                    f"{path}: missing IMAGE extension (found {', '.join(sorted(roles))})"
                )
            kind = "exposure"
            image_hdu = roles["IMAGE"]
        elif segments:
            kind = "raw"
            image_hdu = min(segments.values())
        else:
            kind = "image"
            image_hdu = images[0][0]
        image_header = hdul[image_hdu].header
        shape2 = _hdu_shape(hdul[image_hdu])
        shape = (shape2[0], shape2[1])
        mask_hdu = roles.get("MASK")
        variance_hdu = roles.get("VARIANCE")
        for role, idx in (("MASK", mask_hdu), ("VARIANCE", variance_hdu)):
            if idx is not None and _hdu_shape(hdul[idx]) != shape2:
                raise InputError(
                    f"{path}: {role} extension shape {_hdu_shape(hdul[idx])} differs from the "
                    f"IMAGE shape {shape}"
                )
        planes = (mask_planes_from_header(hdul[mask_hdu].header, path)
                  if mask_hdu is not None else dict(DEFAULT_MASK_PLANES))
        compressed = isinstance(hdul[image_hdu], fits.CompImageHDU)
        used = [i for i in (image_hdu, mask_hdu, variance_hdu) if i is not None]
        used += list(segments.values())
        _check_not_truncated(path, hdul, sorted(set(used)))
        keys = _identity([primary, image_header])
        if kind == "raw":
            detsize = _parse_detsize(keys.get("DETSIZE"))
            if detsize is not None:
                shape = detsize
        for key in image_header:
            if _GEOMETRY_KEY.match(str(key)):
                keys[str(key)] = str(image_header[key]).strip()
    name, det_id = _detector_from(keys)
    return FileInfo(
        path=path, kind=kind, visit=_visit_from(keys), detector=name, detector_id=det_id,
        camera=_camera_from(keys), shape=shape, image_hdu=image_hdu, mask_hdu=mask_hdu,
        variance_hdu=variance_hdu, mask_planes=planes, compressed=compressed, header=keys,
        segments=segments, segment_shapes=segment_shapes,
    )


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


def _guess_camera(info: FileInfo) -> Camera | None:
    """A built-in camera holding a detector of this name and image size, if exactly one."""
    if info.detector is None or info.kind == "raw":
        return None
    from ..cameras import list_cameras

    hits = []
    for name in list_cameras():
        cam = get_camera(name)
        if info.detector in cam and cam[info.detector].shape == info.shape:
            hits.append(cam)
    return hits[0] if len(hits) == 1 else None


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
    cam = _camera_or_none(camera, path)
    if cam is None and info.camera is not None:
        cam = get_camera(info.camera)
    if cam is None:
        cam = _guess_camera(info)
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
            return cam[key]
        except UnknownDetectorError as exc:
            if detector is None and info.detector_id is not None and info.detector is not None:
                try:
                    return cam[info.detector_id]
                except UnknownDetectorError:
                    pass
            raise InputError(f"{path}: unknown detector: {exc}") from exc
    if detector is not None:
        raise InputError(
            f"{path}: detector {detector!r} given without a camera, and the header names no "
            "known camera; pass camera= or a Detector"
        )
    hg = _header_geometry(info)
    if hg is not None:
        return hg.detector
    raise InputError(
        f"{path}: cannot tell the amp layout: no camera given, none recognised in the header "
        "(CAMERA/INSTRUME) and no DATASEC-style keywords; pass camera= and detector=, or a "
        "Detector"
    )


def _header_geometry(info: FileInfo):
    if info.kind == "raw":
        return None
    name = info.detector or info.path.name.split(".")[0]
    try:
        return geometry_from_header(info.header, name, info.shape, info.detector_id)
    except GeometryError as exc:
        raise InputError(f"{info.path}: header amp geometry: {exc}") from exc


def amp_sources(
    info: FileInfo,
    detector: Detector,
    camera: Any = None,
    overscan: bool = False,
) -> tuple[AmpSource, ...]:
    """Where each amp of ``detector`` is read from in the file described by ``info``.

    Exposure files and images already in the detector frame read each amp from the same box
    of the image HDU; raws and untrimmed images are assembled from the camera's raw boxes
    (or the header's ``DATASEC`` keywords), with per-row overscan subtraction if ``overscan``.

    Raises
    ------
    InputError
        If the image does not match the detector or a raw box lies outside its HDU.
    """
    path = info.path
    cam = _camera_or_none(camera, path)
    if cam is None and info.camera is not None:
        cam = get_camera(info.camera)
    if cam is None and info.kind != "raw":
        cam = _guess_camera(info)

    def direct() -> tuple[AmpSource, ...]:
        return tuple(AmpSource(a.name, (a.y0, a.y1, a.x0, a.x1), info.image_hdu,
                               (a.y0, a.y1, a.x0, a.x1)) for a in detector)

    if info.kind == "exposure":
        if info.shape != detector.shape:
            raise InputError(_shape_message(info, detector))
        return direct()
    if info.kind == "raw":
        return _raw_sources(info, detector, cam, overscan)
    # plain image
    if info.shape == detector.shape and not overscan:
        return direct()
    raws = None
    if cam is not None and detector.name in cam:
        try:
            raws = cam.raw_amps(detector.name)
        except InputError:
            raws = None
        if raws is not None and cam[detector.name] != detector:
            raws = None
    if raws is not None:
        out = []
        for amp, raw in zip(detector, raws, strict=True):
            out.append(_source_from_raw(info, amp, raw, info.image_hdu, info.shape, overscan))
        return tuple(out)
    hg = _header_geometry(info)
    if hg is not None and hg.detector.shape == detector.shape and (
        [(a.name, a.x0, a.y0) for a in hg.detector] == [(a.name, a.x0, a.y0) for a in detector]
    ):
        out = []
        for amp, data, over in zip(detector, hg.data_boxes, hg.overscan_boxes, strict=True):
            out.append(AmpSource(amp.name, (amp.y0, amp.y1, amp.x0, amp.x1), info.image_hdu,
                                 data, overscan=over if overscan else None))
        return tuple(out)
    if info.shape == detector.shape:
        return direct()
    raise InputError(_shape_message(info, detector))


def _shape_message(info: FileInfo, detector: Detector) -> str:
    return (f"{info.path}: image shape {info.shape} (height, width) does not match detector "
            f"{detector.name!r} of shape {detector.shape}")


def _source_from_raw(info, amp, raw, hdu, hdu_shape, overscan) -> AmpSource:
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
    if overscan:
        if raw.raw_serial_overscan_bbox is None:
            raise InputError(f"{info.path}: amp {amp.name!r} has no serial overscan box")
        ox, oy, ow, oh = raw.raw_serial_overscan_bbox
        if ox < 0 or oy < 0 or oy + oh > hdu_shape[0] or ox + ow > hdu_shape[1]:
            raise InputError(
                f"{info.path}: amp {amp.name!r}: overscan box x[{ox}:{ox + ow}] "
                f"y[{oy}:{oy + oh}] lies outside HDU {hdu} of shape {hdu_shape}"
            )
        over = (oy, oy + oh, ox, ox + ow)
    return AmpSource(amp.name, (amp.y0, amp.y1, amp.x0, amp.x1), hdu, (y0, y0 + h, x0, x0 + w),
                     raw.flip_x, raw.flip_y, over)


def _raw_sources(info: FileInfo, detector: Detector, cam: Camera | None,
                 overscan: bool) -> tuple[AmpSource, ...]:
    path = info.path
    if cam is None or detector.name not in cam:
        raise InputError(
            f"{path}: raw file of detector {detector.name!r}: assembling raws needs a camera "
            "with raw boxes (pass camera=)"
        )
    raws = cam.raw_amps(detector.name)
    out = []
    for amp, raw in zip(detector, raws, strict=True):
        hdu = info.segments.get((raw.extname or "").upper())
        if hdu is None and raw.hdu is not None and raw.hdu in info.segment_shapes:
            hdu = raw.hdu
        if hdu is None:
            raise InputError(
                f"{path}: detector {detector.name!r}: no raw HDU {raw.extname or raw.hdu} for "
                f"amp {amp.name!r}"
            )
        out.append(_source_from_raw(info, amp, raw, hdu, info.segment_shapes[hdu], overscan))
    return tuple(out)


# ------------------------------------------------------------------------------------------
# Reading pixels
# ------------------------------------------------------------------------------------------
def _native(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.byteorder not in ("=", "|"):
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _is_wrapped(path: Path) -> bool:
    """True for gzip/bzip2/zip-wrapped files (astropy must decompress them as a whole)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        return False
    return magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic[:4] == b"PK\x03\x04"


def read_section(
    path: str | os.PathLike,
    hdu: int,
    slices: tuple[slice, slice],
    *,
    hdul: fits.HDUList | None = None,
) -> np.ndarray:
    """Read one rectangular region of an image HDU (native byte order, scaled values).

    Only that region is read: uncompressed images through a memory map of the HDU's data
    (the data offset is cached per process, so repeated reads parse no header), tile-compressed
    ones by decompressing only the tiles the region touches. Gzip-wrapped files
    (``.fits.gz``) cannot be read in parts: they are decompressed whole (and the last ones
    kept per process).

    Parameters
    ----------
    path : path-like
    hdu : int
        HDU index (0 = primary).
    slices : (slice, slice)
        Rows then columns, steps of 1.
    hdul : HDUList, optional
        An already open `path` (used by callers that read several regions in one go).
    """
    path = Path(path)
    if hdul is None:
        layout = _plain_layout(path, hdu)
        if layout is not None:
            try:
                return _mapped_section(path, layout, tuple(slices))
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot read HDU {hdu} region {slices}: {exc}") from exc
        with _OPEN_FILES.hdul(path) as opened:
            return read_section(path, hdu, slices, hdul=opened)
    try:
        h = hdul[hdu]
        if isinstance(h, fits.CompImageHDU):
            return _compressed_section(path, hdu, h, tuple(slices))
        if "BLANK" in h.header:
            return _native(h.section[tuple(slices)])
        return _plain_section(hdul, h, tuple(slices))
    except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError) as exc:
        raise InputError(f"{path}: cannot read HDU {hdu} region {slices}: {exc}") from exc


#: Decompressed row bands of row-tiled compressed HDUs, per process (LRU, bounded bytes).
_BANDS: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
_BANDS_LOCK = threading.Lock()
_BANDS_MAX_BYTES = 256 << 20


def _compressed_section(path: Path, hdu: int, h: Any, slices: tuple[slice, slice]) -> np.ndarray:
    """Region of a tile-compressed HDU: only the tiles it touches are decompressed.

    With full-width row tiles (LSST's choice) any column subset costs whole rows, so the
    decompressed rows are kept (per process, bounded) and the other strips of the same rows
    are cut from them instead of decompressing the rows again.
    """
    shape = tuple(int(n) for n in h.shape)
    tile = tuple(int(n) for n in (getattr(h, "tile_shape", None) or ()))
    rows, cols = (sl.indices(n) for sl, n in zip(slices, shape, strict=True))
    if len(tile) != 2 or tile[1] < shape[1] or cols[2] != 1 or rows[2] != 1 or (
            cols[1] - cols[0] == shape[1]):
        return _native(h.section[slices])
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, int(hdu))
    r0, r1 = rows[0], max(rows[0], rows[1])
    with _BANDS_LOCK:
        for (k, b0, b1), band in reversed(_BANDS.items()):
            if k == key and b0 <= r0 and r1 <= b1:
                _BANDS.move_to_end((k, b0, b1))
                return band[r0 - b0:r1 - b0, cols[0]:cols[1]].copy()
    band = _native(h.section[r0:r1, :])
    with _BANDS_LOCK:
        _BANDS[(key, r0, r1)] = band
        while len(_BANDS) > 1 and sum(b.nbytes for b in _BANDS.values()) > _BANDS_MAX_BYTES:
            _BANDS.popitem(last=False)
    return band[:, cols[0]:cols[1]].copy()


@dataclasses.dataclass(frozen=True)
class _PlainLayout:
    """Where an uncompressed image HDU's pixels are in its file."""

    offset: int
    shape: tuple[int, ...]
    disk: np.dtype
    bscale: float
    bzero: float


_LAYOUTS: dict[tuple[str, int, int, int], _PlainLayout | None] = {}
_LAYOUTS_LOCK = threading.Lock()


def _layout_of(h: Any) -> _PlainLayout | None:
    if isinstance(h, fits.CompImageHDU) or "BLANK" in h.header:
        return None
    bitpix = int(h.header["BITPIX"])
    return _PlainLayout(int(h.fileinfo()["datLoc"]), _hdu_shape(h),
                        np.dtype(fits.hdu.image.BITPIX2DTYPE[bitpix]).newbyteorder(">"),
                        float(h.header.get("BSCALE", 1.0)), float(h.header.get("BZERO", 0.0)))


def _plain_layout(path: Path, hdu: int) -> _PlainLayout | None:
    """The layout of an uncompressed HDU of an unwrapped file (cached per process by path,
    size and modification time), or None for compressed/wrapped/BLANK images."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, int(hdu))
    with _LAYOUTS_LOCK:
        if key in _LAYOUTS:
            return _LAYOUTS[key]
    if _is_wrapped(path):
        layout = None
    else:
        with _open(path) as hdul:
            try:
                layout = _layout_of(hdul[hdu])
            except (IndexError, KeyError, OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot read HDU {hdu}: {exc}") from exc
        if layout is not None:
            end = layout.offset + layout.disk.itemsize * int(np.prod(layout.shape))
            if end > st.st_size:
                raise InputError(f"{path}: truncated FITS file: HDU {hdu} needs {end} bytes, "
                                 f"the file has {st.st_size}")
    with _LAYOUTS_LOCK:
        if len(_LAYOUTS) > 4096:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    return layout


def _scaled(raw: np.ndarray, disk: np.dtype, bscale: float, bzero: float) -> np.ndarray:
    if bscale == 1.0 and bzero == 0.0:
        return raw
    if (bscale == 1.0 and disk.kind == "i" and disk.itemsize > 1
            and bzero == float(2 ** (8 * disk.itemsize - 1))):
        unsigned = np.dtype(f"u{disk.itemsize}")
        return (raw.view(unsigned) ^ unsigned.type(2 ** (8 * disk.itemsize - 1))).astype(unsigned)
    return raw * bscale + bzero


def _mapped_section(path: Path, layout: _PlainLayout, slices: tuple[slice, slice]) -> np.ndarray:
    whole = np.memmap(path, dtype=layout.disk, mode="r", offset=layout.offset,
                      shape=layout.shape)
    raw = np.array(whole[slices], dtype=layout.disk.newbyteorder("="))
    del whole
    return _scaled(raw, layout.disk, layout.bscale, layout.bzero)


def _plain_section(hdul: fits.HDUList, h: Any, slices: tuple[slice, slice]) -> np.ndarray:
    """Region of an uncompressed image HDU of an open file (one strided copy)."""
    layout = _layout_of(h)
    buffer = getattr(hdul, "_ampoffset_buffer", None)
    if buffer is None:
        return _mapped_section(Path(hdul.filename()), layout, slices)
    whole = np.frombuffer(buffer, dtype=layout.disk, count=int(np.prod(layout.shape)),
                          offset=layout.offset).reshape(layout.shape)
    raw = np.array(whole[slices], dtype=layout.disk.newbyteorder("="))
    return _scaled(raw, layout.disk, layout.bscale, layout.bzero)


class LazyPlane:
    """A picklable array-like over one plane of a file: ``plane[rows, cols]`` reads only the
    amp regions that the request touches (through `read_section`).

    It holds the path, the amp sources and the output dtype, never an open file, so dask
    graphs built on it pickle to workers. ``dask.array.from_array(plane, chunks=...)`` fuses
    later slicing into the read, so a strip of a chunk reads only the strip.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int], dtype: Any,
                 sources: tuple[AmpSource, ...], fill: float = 0) -> None:
        self.path = str(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.ndim = 2
        self.sources = tuple(sources)
        self.fill = fill

    def __repr__(self) -> str:
        return f"LazyPlane({self.path!r}, shape={self.shape}, dtype={self.dtype})"

    def __reduce__(self):
        return (LazyPlane, (self.path, self.shape, self.dtype.str, self.sources, self.fill))

    def _norm(self, key: Any) -> tuple[tuple[int, int], tuple[int, int], tuple[bool, bool]]:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (2 - len(key))
        bounds, drop = [], []
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, int | np.integer):
                i = int(k) + (n if k < 0 else 0)
                bounds.append((i, i + 1))
                drop.append(True)
            elif isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    raise IndexError("LazyPlane supports only unit-step slices")
                bounds.append((start, max(start, stop)))
                drop.append(False)
            else:
                raise IndexError(f"unsupported index {k!r}")
        return bounds[0], bounds[1], (drop[0], drop[1])

    def __getitem__(self, key: Any) -> np.ndarray:
        (r0, r1), (c0, c1), drop = self._norm(key)
        out = np.full((r1 - r0, c1 - c0), self.fill, dtype=self.dtype)
        hits = [s for s in self.sources if _overlaps(s.dest, r0, r1, c0, c1)]
        if out.size and hits:
            path = Path(self.path)
            if all(_plain_layout(path, s.hdu) is not None for s in hits):
                for s in hits:  # memory-mapped reads, no FITS parsing
                    _paste(path, s, out, r0, r1, c0, c1, None)
            else:
                with _OPEN_FILES.hdul(path) as hdul:
                    for s in hits:
                        _paste(path, s, out, r0, r1, c0, c1, hdul)
        if drop[0]:
            out = out[0]
        if drop[1]:
            out = out[..., 0]
        return out

    def __array__(self, dtype=None, copy=None):
        a = self[:, :]
        return a if dtype is None else a.astype(dtype)


def _overlaps(dest: tuple[int, int, int, int], r0: int, r1: int, c0: int, c1: int) -> bool:
    return max(r0, dest[0]) < min(r1, dest[1]) and max(c0, dest[2]) < min(c1, dest[3])


def _paste(path: Path, s: AmpSource, out: np.ndarray, r0: int, r1: int, c0: int, c1: int,
           hdul: fits.HDUList | None) -> None:
    dy0, dy1, dx0, dx1 = s.dest
    iy0, iy1, ix0, ix1 = max(r0, dy0), min(r1, dy1), max(c0, dx0), min(c1, dx1)
    if iy0 >= iy1 or ix0 >= ix1:
        return
    sy0, _, sx0, _ = s.src
    h, w = dy1 - dy0, dx1 - dx0
    # offsets inside the amp (dest frame) -> offsets in the source box
    ry0, ry1 = iy0 - dy0, iy1 - dy0
    rx0, rx1 = ix0 - dx0, ix1 - dx0
    if s.flip_y:
        ry0, ry1 = h - ry1, h - ry0
    if s.flip_x:
        rx0, rx1 = w - rx1, w - rx0
    rows = (sy0 + ry0, sy0 + ry1)
    cols = (sx0 + rx0, sx0 + rx1)
    if s.overscan is None:
        data = read_section(path, s.hdu, (slice(*rows), slice(*cols)), hdul=hdul)
    else:
        oy0, _, ox0, ox1 = s.overscan
        if oy0 == sy0:  # same rows: one read covering data and overscan columns
            lo, hi = min(cols[0], ox0), max(cols[1], ox1)
            both = read_section(path, s.hdu, (slice(*rows), slice(lo, hi)), hdul=hdul)
            data = both[:, cols[0] - lo:cols[1] - lo]
            over = both[:, ox0 - lo:ox1 - lo]
        else:
            data = read_section(path, s.hdu, (slice(*rows), slice(*cols)), hdul=hdul)
            over = read_section(path, s.hdu, (slice(oy0 + ry0, oy0 + ry1), slice(ox0, ox1)),
                                hdul=hdul)
        level = np.median(over.astype(np.float64), axis=1)
        data = data.astype(np.float64) - level[:, None]
    if s.flip_y:
        data = data[::-1]
    if s.flip_x:
        data = data[:, ::-1]
    out[iy0 - r0:iy1 - r0, ix0 - c0:ix1 - c0] = data


_BLOCK = 1 << 18  # bytes per read: swapped and checked while still in the CPU cache


def _read_swapped(path: Path, layout: _PlainLayout, check_finite: bool
                  ) -> tuple[np.ndarray, bool | None]:
    """Read an unscaled uncompressed HDU block by block into a native array, swapping bytes
    (and testing finiteness) while each block is cache-hot."""
    out = np.empty(layout.shape, dtype=layout.disk.newbyteorder("="))
    flat = out.reshape(-1)
    raw = flat.view(np.uint8)
    size = layout.disk.itemsize
    finite = True if check_finite else None
    done = 0  # items swapped so far
    with open(path, "rb", buffering=0) as fh:
        fh.seek(layout.offset)
        pos = 0
        while pos < raw.size:
            n = fh.readinto(memoryview(raw[pos:pos + _BLOCK]))
            if not n:
                raise InputError(f"{path}: truncated FITS file: the image data stop after "
                                 f"{pos} of {raw.size} bytes")
            pos += n
            upto = pos // size
            block = flat[done:upto]
            if size > 1:
                block.byteswap(inplace=True)
            if finite and block.dtype.kind == "f" and not np.isfinite(block).all():
                finite = False
            done = upto
    return out, finite


def _read_full(path: Path, hdu: int, dtype: Any, check_finite: bool = False
               ) -> tuple[np.ndarray, bool | None]:
    """Read a whole image HDU into a new native array of ``dtype``.

    Returns the array and, if ``check_finite``, whether all its values are finite (None when
    not checked).
    """
    layout = _plain_layout(path, hdu)
    if layout is not None and layout.bscale == 1.0 and layout.bzero == 0.0:
        a, finite = _read_swapped(path, layout, check_finite)
    else:
        finite = None
        with _open(path) as hdul:
            try:
                h = hdul[hdu]
                if isinstance(h, fits.CompImageHDU) or "BLANK" in h.header:
                    a = _native(h.data)
                else:
                    a = _plain_section(hdul, h, (slice(None), slice(None)))
            except InputError:
                raise
            except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError) as exc:
                raise InputError(f"{path}: cannot read HDU {hdu}: {exc}") from exc
    if a is None or a.ndim != 2:
        raise InputError(f"{path}: HDU {hdu} holds no 2-D image")
    a = a if a.dtype == np.dtype(dtype) else a.astype(dtype)
    if check_finite and finite is None:
        finite = bool(np.isfinite(a).all()) if a.dtype.kind == "f" else True
    return a, finite


def read_exposure(
    path: str | os.PathLike,
    camera: Any = None,
    detector: Any = None,
    *,
    overscan: bool = False,
) -> ExposureData:
    """Read a whole exposure, raw or image file into memory, in the detector frame.

    Parameters
    ----------
    path : path-like
    camera : str or Camera, optional
        Camera for the geometry (default: from the header).
    detector : Detector, dict, str or int, optional
        Geometry, or a detector name/id in the camera (default: from the header).
    overscan : bool
        Raws and untrimmed images: subtract each amp's serial overscan, row by row (median).

    Returns
    -------
    ExposureData
        ``image`` float32, ``mask`` int32 (non-finite pixels flagged ``NO_DATA``),
        ``variance`` float32 (zeros if the file has none).

    Raises
    ------
    InputError
        Naming the file and the reason.
    """
    info = inspect_file(path)
    det = resolve_detector(info, camera, detector)
    sources = amp_sources(info, det, camera, overscan)
    planes = dict(info.mask_planes)
    finite: bool | None = None
    if info.kind == "exposure":
        image, finite = _read_full(info.path, info.image_hdu, np.float32, check_finite=True)
        mask = (_read_full(info.path, info.mask_hdu, np.int32)[0]
                if info.mask_hdu is not None else np.zeros(det.shape, np.int32))
        variance = (_read_full(info.path, info.variance_hdu, np.float32)[0]
                    if info.variance_hdu is not None else np.zeros(det.shape, np.float32))
    else:
        if info.kind == "image" and sources == _direct(det, info.image_hdu):
            image, finite = _read_full(info.path, info.image_hdu, np.float32, check_finite=True)
        else:
            image = LazyPlane(info.path, det.shape, np.float32, sources)[:, :]
        mask = np.zeros(det.shape, np.int32)
        variance = np.zeros(det.shape, np.float32)
    if finite is None:
        finite = bool(np.isfinite(image).all())
    if not finite:
        bad = ~np.isfinite(image)
        planes, bit = plane_bit("NO_DATA", planes)
        mask[bad] |= np.int32(1 << bit)
        logger.info("%s: %d non-finite pixels flagged NO_DATA", info.path, int(bad.sum()))
    return ExposureData(image, mask, variance, planes, det, info.visit, info)


def _direct(det: Detector, hdu: int) -> tuple[AmpSource, ...]:
    return tuple(AmpSource(a.name, (a.y0, a.y1, a.x0, a.x1), hdu, (a.y0, a.y1, a.x0, a.x1))
                 for a in det)


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------
_COMPRESSION = {"rice": "RICE_1", "rice_1": "RICE_1", "gzip": "GZIP_2", "gzip_1": "GZIP_1",
                "gzip_2": "GZIP_2"}


_TILE = 128


def _card_key(key: str) -> str:
    key = str(key)
    if len(key) > 8 or " " in key or not re.fullmatch(r"[A-Z0-9_-]*", key):
        return f"HIERARCH {key}"
    return key


def _image_hdu(data: np.ndarray, name: str, compress: str | None, header: fits.Header):
    if compress is None:
        hdu = fits.ImageHDU(data, header=header, name=name)
    else:
        ctype = _COMPRESSION.get(str(compress).lower())
        if ctype is None:
            raise InputError(f"unknown compression {compress!r}; use 'rice' or 'gzip'")
        kwargs: dict[str, Any] = {}
        if data.dtype.kind == "f":
            if ctype.startswith("GZIP"):
                kwargs["quantize_level"] = 0.0  # lossless for floats
            else:
                kwargs.update(quantize_level=16.0, quantize_method=1, dither_seed=1)
        # square tiles: an edge strip decompresses only the tiles along it (full-row tiles
        # would decompress every row for a vertical strip)
        tile = (min(data.shape[0], _TILE), min(data.shape[1], _TILE))
        hdu = fits.CompImageHDU(data, header=header, name=name, compression_type=ctype,
                                tile_shape=tile, **kwargs)
    hdu.header["EXTTYPE"] = name
    return hdu


def write_exposure(
    path: str | os.PathLike,
    image: Any,
    mask: Any = None,
    variance: Any = None,
    *,
    mask_planes: Mapping[str, int] | None = None,
    header: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    compress: str | None = None,
    detector: Detector | None = None,
) -> Path:
    """Write an exposure in the project layout, atomically.

    The file holds an empty primary HDU with the identity keys (``header``: e.g. ``INSTRUME``,
    ``CAMERA``, ``DETNAME``, ``DETECTOR``, ``VISIT``) and ``metadata`` (long keys such as
    ``LSST ISR AMPOFFSET PEDESTAL C10`` become HIERARCH cards), then ``IMAGE`` (float32),
    ``MASK`` (int32, ``MP_*`` plane keywords) and ``VARIANCE`` (float32) extensions. It is
    written to a temporary file in the same folder and renamed over ``path``.

    Parameters
    ----------
    path : path-like
    image : array_like, 2-D
    mask : array_like of int, optional
        Zeros when omitted.
    variance : array_like, optional
        Zeros when omitted.
    mask_planes : mapping, optional
        Plane -> bit; afw's defaults when omitted.
    header, metadata : mapping, optional
        Primary-header cards.
    overwrite : bool
        Replace an existing file (refused otherwise).
    compress : {None, "rice", "gzip"}
        Tile-compress the extensions in 128x128 tiles (RICE quantizes floats with subtractive
        dithering, GZIP is lossless).
    detector : Detector, optional
        Fills ``DETNAME``/``DETECTOR`` when the header lacks them and records the amp boxes as
        ``AMPNAM<s>``/``DATASEC<s>`` keywords in the IMAGE header, so the file describes its
        own geometry.

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    InputError
        If the target exists (without ``overwrite``), is a directory, or the planes disagree;
        nothing is written then.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file name to write")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: exists; refusing to overwrite it (pass overwrite=True)")
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    img = np.asarray(image)
    if img.ndim != 2:
        raise InputError(f"{path}: image must be 2-D, got shape {img.shape}")
    img = np.ascontiguousarray(img, dtype=np.float32)
    msk = (np.zeros(img.shape, np.int32) if mask is None
           else np.ascontiguousarray(mask, dtype=np.int32))
    var = (np.zeros(img.shape, np.float32) if variance is None
           else np.ascontiguousarray(variance, dtype=np.float32))
    for name, plane in (("mask", msk), ("variance", var)):
        if plane.shape != img.shape:
            raise InputError(f"{path}: {name} shape {plane.shape} differs from the image shape "
                             f"{img.shape}")
    if detector is not None and detector.shape != img.shape:
        raise InputError(f"{path}: image shape {img.shape} does not match detector "
                         f"{detector.name!r} of shape {detector.shape}")
    planes = dict(DEFAULT_MASK_PLANES if mask_planes is None else mask_planes)

    primary = fits.PrimaryHDU()
    cards: dict[str, Any] = dict(header or {})
    if detector is not None:
        cards.setdefault("DETNAME", detector.name)
        if detector.id is not None:
            cards.setdefault("DETECTOR", detector.id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        for key, value in list(cards.items()) + list((metadata or {}).items()):
            if value is None:
                continue
            if isinstance(value, np.generic):
                value = value.item()
            primary.header[_card_key(key)] = value
        img_header = fits.Header()
        if detector is not None:
            for s, amp in zip(section_suffixes(len(detector)), detector, strict=True):
                img_header[_card_key(f"AMPNAM{s}")] = amp.name
                img_header[_card_key(f"DATASEC{s}")] = format_section(amp.y0, amp.y1, amp.x0,
                                                                      amp.x1)
        mask_header = fits.Header()
        for plane, bit in sorted(planes.items(), key=lambda kv: kv[1]):
            mask_header[_card_key(f"MP_{plane}")] = int(bit)
    hdus = fits.HDUList([
        primary,
        _image_hdu(img, "IMAGE", compress, img_header),
        _image_hdu(msk, "MASK", compress, mask_header),
        _image_hdu(var, "VARIANCE", compress, fits.Header()),
    ])
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            hdus.writeto(tmp, output_verify="fix")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.debug("wrote %s", path)
    return path
