"""Writing exposures in the project's FITS layout, atomically."""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..errors import InputError
from ..geometry import Detector
from ..masks import DEFAULT_MASK_PLANES
from .header_geometry import format_section, section_suffixes
from .paths import shortened

__all__ = ["correction_lock", "write_exposure"]

logger = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None


@contextlib.contextmanager
def correction_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the local file ``path`` (the file it names now) for the
    block: a task reading, measuring and replacing it in place.

    A second in-place correction of the same file (a run of another catalog on the same
    folder) then waits for the first to replace the file, and finds it changed when it
    checks the file against its plan, instead of overwriting the first one's correction
    unnoticed, each catalog recording pixels the file does not hold. The lock is on the
    file, not its path: the replaced file is not locked by anyone. File systems without
    locks (or, on NFS, a file this user may only read), and files that cannot be opened
    (the read that follows reports why), go without.
    """
    fd = None
    # NFS emulates flock with POSIX locks, whose exclusive lock needs a file open for
    # writing: read-write first, read-only for a file the user may not write
    for flags in (os.O_RDWR, os.O_RDONLY):
        try:
            fd = os.open(path, flags)
            break
        except OSError:
            continue
    if fd is None:
        yield
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS,
                                     errno.EBADF, errno.EINVAL):
                    raise
                logger.debug("%s: no file lock for the in-place correction (%s)", path, exc)
        yield
    finally:
        os.close(fd)


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


#: Longest name of a file, in bytes (most file systems).
_NAME_MAX = 255


def partial_stem(name: str) -> str:
    """What the temporary file of output ``name`` is named after (``.<stem>.<id>.tmp``,
    renamed to ``name`` when complete): ``name``, shortened when that temporary name would
    be too long for a file."""
    return shortened(name, _NAME_MAX - 19, "~")  # "." + "." + 12 hex + ".tmp"


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
    image_header: Mapping[str, Any] | None = None,
    mask_header: Mapping[str, Any] | None = None,
    variance_header: Mapping[str, Any] | None = None,
) -> Path:
    """Write an exposure in the project layout, atomically.

    The file holds an empty primary HDU with the identity keys (``header``: e.g. ``INSTRUME``,
    ``CAMERA``, ``DETNAME``, ``DETECTOR``, ``VISIT``) and ``metadata`` (long keys such as
    ``LSST ISR AMPOFFSET PEDESTAL C10`` become HIERARCH cards), then ``IMAGE`` (float32),
    ``MASK`` (int32, ``MP_*`` plane keywords) and ``VARIANCE`` (float32) extensions. It is
    written to a temporary file in the same folder and renamed over ``path``; a file it
    replaces keeps its permissions, and the new one is flushed to the disk first.

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
        Primary-header cards: ``{key: value}`` or ``{key: (value, comment)}``, e.g. the
        LSST amp-offset keys from `ampoffset_dask.algorithm.metadata.header_metadata_comments`
        (a comment too long for its card is shortened, as FITS requires). A value None
        writes no card; ``(None, comment)`` writes a card with an undefined value.
    overwrite : bool
        Replace an existing file (refused otherwise).
    compress : {None, "rice", "gzip"}
        Tile-compress the extensions in 128x128 tiles (RICE quantizes floats with subtractive
        dithering, GZIP is lossless).
    detector : Detector, optional
        Fills ``DETNAME``/``DETECTOR`` when the header lacks them and records the amp boxes as
        ``AMPNAM<s>``/``DATASEC<s>`` keywords in the IMAGE header, so the file describes its
        own geometry.
    image_header : mapping, optional
        Cards for the IMAGE extension (a WCS, ``BUNIT``...), before the amp boxes, which
        replace any of the same name.
    mask_header, variance_header : mapping, optional
        Cards for the MASK (before its ``MP_*`` planes, which replace any of the same name)
        and VARIANCE extensions.

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
            comment = None
            if isinstance(value, tuple):  # (value, comment), as header_metadata_comments gives
                value, comment = value
            elif value is None:
                continue
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(
                    f"{path}: header card {key!r} is {value}, which FITS cannot hold (give "
                    "None for an undefined value; header_metadata_comments does so for LSST's "
                    "keys)")
            primary.header[_card_key(key)] = value if comment is None else (value, comment)
        img_header = _extension_header(image_header)
        if detector is not None:
            for s, amp in zip(section_suffixes(len(detector)), detector, strict=True):
                img_header[_card_key(f"AMPNAM{s}")] = amp.name
                img_header[_card_key(f"DATASEC{s}")] = format_section(amp.y0, amp.y1, amp.x0,
                                                                      amp.x1)
        msk_header = _extension_header(mask_header)
        for plane, bit in sorted(planes.items(), key=lambda kv: kv[1]):
            msk_header[_card_key(f"MP_{plane}")] = int(bit)
        var_header = _extension_header(variance_header)
    hdus = fits.HDUList([
        primary,
        _image_hdu(img, "IMAGE", compress, img_header),
        _image_hdu(msk, "MASK", compress, msk_header),
        _image_hdu(var, "VARIANCE", compress, var_header),
    ])
    tmp = path.with_name(f".{partial_stem(path.name)}.{uuid.uuid4().hex[:12]}.tmp")
    replaces = path.exists()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            hdus.writeto(tmp, output_verify="fix")
        if replaces:
            # A file replaced (in place, the input itself) keeps its permissions (a private
            # 0600 file stays private), and the new bytes reach the disk before the name
            # points at them: after a crash the name holds the old file or the new one,
            # never a truncated one.
            shutil.copymode(path, tmp)
            _fsync(tmp)
        os.replace(tmp, path)
        if replaces:
            _fsync(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.debug("wrote %s", path)
    return path


def _extension_header(cards: Mapping[str, Any] | None) -> fits.Header:
    header = fits.Header()
    for key, value in (cards or {}).items():
        if isinstance(value, np.generic):
            value = value.item()
        header[_card_key(key)] = value
    return header


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
