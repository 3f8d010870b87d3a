"""Reading pixel regions of FITS image HDUs, and lazy detector planes built from them.

`read_section` reads one rectangle of one HDU: uncompressed images through a memory map of the
HDU's data (the data offset is cached per process, so repeated reads parse no header),
tile-compressed ones by decompressing only the tiles the rectangle touches, gzip-wrapped files
(``.fits.gz``) from one in-memory decompression. `LazyPlane` assembles a detector-frame plane
from per-amp `AmpSource` boxes (with flips and optional per-row overscan subtraction) through
`read_section`; it is picklable and holds no open file, so dask graphs built on it travel to
workers.

Per-process caches (bounded, keyed by file identity: device, inode, size and times; reset in
forked children): data offsets of uncompressed HDUs, decompressed ``.fits.gz`` contents,
decompressed row bands of row-tiled compressed HDUs, and a few open files for
compressed/wrapped reads (`close_cached_files` closes them). Inside a `map_once` block,
region reads keep one memory map per uncompressed HDU.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import os
import re
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..errors import InputError
from ..exposure import register_direct_reader
from .lru import LRUCache
from .overscan import overscan_levels, subtract_overscan

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "AmpSource",
    "LazyPlane",
    "check_image_size",
    "check_stamp",
    "close_cached_files",
    "declared_data_bytes",
    "decompress_once",
    "file_stamp",
    "lazy_plane",
    "map_once",
    "max_decompressed_bytes",
    "read_section",
    "set_decompression_limit_source",
    "stamp_changed",
    "stream_hdus",
]


@dataclasses.dataclass(frozen=True)
class AmpSource:
    """Where one amp's pixels come from.

    Boxes are ``(y0, y1, x0, x1)``, 0-based, half-open. ``dest`` is in the detector image,
    ``src`` in HDU ``hdu`` of the file; ``flip_x``/``flip_y`` flip the cut-out before pasting;
    ``overscan`` (the amp's serial overscan box, same rows as ``src``) is subtracted when given:
    row by row (median) for ``overscan_mode`` ``"per-row"``, its clipped mean for ``"mean"``
    (see `ampoffset_dask.io.overscan`). ``gain``, when given, multiplies the result (ADU ->
    electrons). ``flag_nonzero`` (a bit number) turns the values read into
    ``1 << flag_nonzero`` where they are non-zero and 0 elsewhere (boolean masks such as
    CCDData's).
    """

    name: str
    dest: tuple[int, int, int, int]
    hdu: int
    src: tuple[int, int, int, int]
    flip_x: bool = False
    flip_y: bool = False
    overscan: tuple[int, int, int, int] | None = None
    overscan_mode: str = "per-row"
    gain: float | None = None
    flag_nonzero: int | None = None


def data_beyond_end(hdu: Any, size: int | None = None) -> tuple[int, int] | None:
    """``(end, size)`` when ``hdu``'s data end past the file's ``size`` bytes, else None.

    ``size`` defaults to the size of the file the HDU was read from. This is the check astropy
    makes when it seeks past the end of a file, made here on sizes: its warning cannot be
    caught reliably while other threads open files (``warnings`` state is process-wide, so one
    thread's catcher records another thread's warnings).
    """
    info = hdu.fileinfo()
    if not info:
        return None
    if size is None:  # astropy's file object: no size (0) for some streams
        size = getattr(info.get("file"), "size", None) or None
    end = int(info["datLoc"]) + int(info["datSpan"])
    if size is not None and end > size:
        return end, int(size)
    return None


def truncated_error(path: Any, beyond: tuple[int, int]) -> InputError:
    """The `InputError` of a file whose data end at ``beyond[0]`` past its ``beyond[1]`` bytes."""
    end, size = beyond
    return InputError(f"{path}: truncated FITS file (actual file length ({size}) is smaller "
                      f"than the expected size ({end}))")


def _open_hdul(path: Path, memmap: bool = True) -> fits.HDUList:
    """Open a FITS file read-only, turning astropy's errors into `InputError`."""
    try:
        if _is_wrapped(path):
            # astropy seeks inside the compressed stream for every region it reads, which is
            # very slow; decompress the whole file once into memory instead.
            buffer = _decompress(path)
            hdul = fits.open(io.BytesIO(buffer), mode="readonly", lazy_load_hdus=True)
            hdul._ampoffset_buffer = buffer
        else:
            hdul = fits.open(path, mode="readonly", memmap=memmap, lazy_load_hdus=True)
        beyond = data_beyond_end(hdul[0])
    except (OSError, ValueError, TypeError, EOFError, IndexError, zlib.error) as exc:
        raise InputError(f"{path}: not a readable FITS file ({exc})") from exc
    if beyond is not None:
        hdul.close()
        raise truncated_error(path, beyond)
    return hdul


@contextmanager
def _open(path: Path, memmap: bool = True) -> Iterator[fits.HDUList]:
    """`_open_hdul` as a context manager that closes the file."""
    hdul = _open_hdul(path, memmap)
    try:
        yield hdul
    finally:
        hdul.close()


class _OpenFile:
    """An open file of `_OpenFiles`, read under its lock; ``closed`` once evicted."""

    __slots__ = ("closed", "hdul", "lock")

    def __init__(self, hdul: fits.HDUList) -> None:
        self.hdul = hdul
        self.lock = threading.Lock()
        self.closed = False


class _OpenFiles:
    """A small per-process cache of open files for region reads that need astropy
    (tile-compressed HDUs, gzip-wrapped files): building a compressed HDU costs far more than
    decompressing a strip of it, so the strip reads of one detector share one open file.

    Entries are keyed by path, size and modification time (a rewritten file is reopened),
    at most `size` files stay open, and each is read under its own lock. A file evicted
    between a reader finding it and taking its lock (more threads reading than files kept)
    is closed once its readers are done; the reader that finds it closed opens it again.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._files: LRUCache[tuple, _OpenFile] = LRUCache(max_items=size,
                                                           on_evict=_close_entry)

    @contextmanager
    def hdul(self, path: Path) -> Iterator[fits.HDUList]:
        key = _file_key(path.stat())
        while True:
            entry = self._files.get(key)
            if entry is None:
                # astropy refuses to scale (BZERO/BSCALE, e.g. uint16 DECam/HSC raws)
                # compressed or BLANK images of memory-mapped files; these reads go through
                # astropy anyway.
                opened = _OpenFile(_open_hdul(path, memmap=False))
                entry = self._files.add(key, opened)
                if entry is not opened:  # opened meanwhile by another thread
                    _close_entry(key, opened)
            entry.lock.acquire()
            if not entry.closed:
                break
            entry.lock.release()  # evicted meanwhile: open it again
        try:
            yield entry.hdul
        finally:
            entry.lock.release()

    def close_all(self) -> None:
        self._files.clear()


def _close_entry(key: tuple, entry: _OpenFile) -> None:
    with entry.lock:  # after the reader using it is done
        entry.closed = True
        entry.hdul.close()


_OPEN_FILES = _OpenFiles()


def keep_open(path: Path) -> None:
    """Open ``path`` into the per-process cache of open files that region reads share (a
    wrapped file inside a `decompress_once` block opens from its kept content)."""
    with _OPEN_FILES.hdul(path):
        pass


def close_cached_files() -> None:
    """Close the files kept open by region reads of compressed or gzip-wrapped files."""
    _OPEN_FILES.close_all()


#: Decompressed contents of wrapped files (``.fits.gz``...), the newest always kept.
_BUFFERS: LRUCache[tuple[int, ...], bytes] = LRUCache(max_bytes=256 << 20)
#: Decompressed row bands of row-tiled compressed HDUs.
_BANDS: LRUCache[tuple, np.ndarray] = LRUCache(max_bytes=256 << 20, sizeof=lambda b: b.nbytes)
#: Where the pixels of uncompressed HDUs are (None: not a plain HDU).
_LAYOUTS: LRUCache[tuple[int, ...], Any] = LRUCache(max_items=4096)
_MISSING = object()


def file_stamp(path: Any) -> tuple[int, int] | None:
    """``(size, modification time in ns)`` of a local file, None for a URL or a file that
    cannot be examined: what a reader compares to notice the file changed after opening."""
    if _is_url(os.fspath(path)):
        return None
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns


def check_stamp(path: Any, stamp: tuple[int, Any] | None, since: str = "it was opened",
                remedy: str = "open it again") -> None:
    """Raise `InputError` if local file ``path`` no longer has ``stamp`` (`file_stamp`), or
    object ``path`` of a store no longer has the size and time its store gave
    (`ampoffset_dask.io.remote.url_stamp`; not checked when the store cannot tell now: the
    read that follows says why)."""
    if not stamp_changed(path, stamp):
        return
    if _is_url(os.fspath(path)):
        from .remote import redact

        raise InputError(f"{redact(os.fspath(path))}: the object changed in the store since "
                         f"{since} (its size, time or ETag differ), so the headers read then "
                         f"may not describe its pixels; {remedy}")
    raise InputError(f"{path}: the file changed since {since} (its size or modification "
                     f"time differ), so the headers read then may not describe its "
                     f"pixels; {remedy}")


def stamp_changed(path: Any, stamp: tuple[int, Any] | None) -> bool:
    """Whether local file ``path`` no longer has ``stamp`` (`file_stamp`; a file gone or
    unreadable has changed), or object ``path`` of a store no longer has the size and time
    its store gave (`ampoffset_dask.io.remote.url_stamp`: one request; False when the store
    cannot tell now). False for no ``stamp``: `check_stamp`'s test, for callers that say
    what changed in their own words."""
    if stamp is None:
        return False
    if _is_url(os.fspath(path)):
        from .remote import url_stamp

        now = url_stamp(os.fspath(path))
        return now is not None and now != tuple(stamp)
    return file_stamp(path) != tuple(stamp)


def _file_key(st: os.stat_result) -> tuple[int, ...]:
    """A file's identity in the per-process caches, from its `os.stat`: device, inode, size,
    modification and change times. A rewritten or replaced file gets a new key, and no
    path is resolved (a symlinked or relative path shares its target's entries)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _reset_after_fork() -> None:
    """A forked child must not share the parent's open files (file offsets) or held locks."""
    global _OPEN_FILES
    _OPEN_FILES = _OpenFiles()
    for cache in (_BUFFERS, _BANDS, _LAYOUTS):
        cache.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


#: Default of `max_decompressed_bytes` (the ``ampoffset.max-decompressed-bytes`` dask config).
DEFAULT_MAX_DECOMPRESSED_BYTES = 2 << 30
_limit_source: Callable[[], Any] | None = None


def set_decompression_limit_source(source: Callable[[], Any] | None) -> None:
    """Make `max_decompressed_bytes` ask ``source()`` (bytes, or a string such as
    ``"4GiB"``) for the limit; the pipeline passes its dask config lookup here."""
    global _limit_source
    _limit_source = source


def max_decompressed_bytes() -> int:
    """The most bytes one wrapped file (``.fits.gz``) or one tile-compressed HDU may expand
    to; larger ones are refused with an `InputError` before anything is decompressed."""
    if _limit_source is not None:
        value = _limit_source()
        if value is not None:
            return parse_bytes(value)
    return DEFAULT_MAX_DECOMPRESSED_BYTES


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: Any) -> int:
    """``4294967296``, ``"4GiB"``, ``"500 MB"``, ``"1e9"`` -> bytes (int)."""
    if isinstance(value, int | float | np.integer | np.floating):
        return int(value)
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(value))
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{value!r} is not a byte size such as 4GiB or 500MB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _byte_text(n: int) -> str:
    """``n`` bytes in MiB, or in bytes when that would round to nothing (a tiny limit)."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} byte{'' if n == 1 else 's'}"


def _too_big(path: Path, what: str, size: int, limit: int) -> InputError:
    return InputError(
        f"{path}: {what} would decompress to {_byte_text(size)}, more than the limit of "
        f"{_byte_text(limit)} (dask config ampoffset.max-decompressed-bytes)"
    )


def check_image_size(path: Path, hdu: int, shape: tuple[int, ...], bitpix: int) -> None:
    """Refuse an image HDU whose declared pixels exceed `max_decompressed_bytes` (or whose
    axis lengths are negative) before anything is allocated for it."""
    if any(n < 0 for n in shape):
        raise InputError(f"{path}: HDU {hdu} declares a negative axis length {shape}")
    size = abs(int(bitpix)) // 8 * int(np.prod(shape, dtype=object))
    limit = max_decompressed_bytes()
    if size > limit:
        raise _too_big(path, f"HDU {hdu} ({' x '.join(map(str, shape))} pixels)", size, limit)


_FITS_BLOCK = 2880
_MAX_HEADER_BLOCKS = 10_000  # 28.8 MB of header cards: far more than any real header


def _open_stream(path: Path) -> Any:
    """A binary file object decompressing a gzip/bzip2/zip-wrapped file as it is read."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")
    zf = zipfile.ZipFile(path)
    names = zf.namelist()
    if not names:
        zf.close()
        raise OSError("empty zip archive")
    return zf.open(names[0])


def _read_exactly(fh: Any, n: int) -> bytearray:
    """``n`` bytes of ``fh`` (fewer at the end of the stream), read in place into one buffer
    (joining 1 MiB chunks would copy a whole data unit once more)."""
    buf = bytearray(n)
    got = 0
    with memoryview(buf) as view:
        while got < n:
            k = fh.readinto(view[got:min(n, got + (1 << 20))])
            if not k:
                break
            got += k
    if got < n:
        del buf[got:]
    return buf


def _skip(fh: Any, n: int) -> int:
    """Read and drop ``n`` bytes (1 MiB at a time); the number actually skipped."""
    done = 0
    while done < n:
        chunk = fh.read(min(n - done, 1 << 20))
        if not chunk:
            break
        done += len(chunk)
    return done


def _has_end(block: bytes) -> bool:
    return any(block[i:i + 8] == b"END     " for i in range(0, len(block), 80))


def declared_data_bytes(header: Any) -> int:
    """Bytes of the data unit a FITS header declares, padded to whole 2880-byte blocks."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    dims = [int(header.get(f"NAXIS{k}", 0)) for k in range(1, naxis + 1)]
    if any(n < 0 for n in dims):
        raise ValueError(f"negative axis length in NAXISn = {dims}")
    if header.get("GROUPS") and dims[0] == 0:  # random groups
        dims = dims[1:]
    n = int(np.prod(dims, dtype=object))
    size = abs(int(header.get("BITPIX", 8))) // 8 * int(header.get("GCOUNT", 1)) * (
        int(header.get("PCOUNT", 0)) + n)
    return -(-size // _FITS_BLOCK) * _FITS_BLOCK


def is_image_header(header: Any, index: int) -> bool:
    """True for the primary HDU, ``IMAGE`` extensions and tile-compressed images."""
    xtension = str(header.get("XTENSION", "") or "").strip().upper()
    return index == 0 or xtension == "IMAGE" or (
        xtension == "BINTABLE" and bool(header.get("ZIMAGE", False)))


def stream_hdus(path: Path, *, keep_data: bool | Callable[[Any, int], bool],
                content: bytes | None = None) -> Iterator[tuple[fits.Header, bytes, bytes]]:
    """Walk the HDUs of a wrapped (``.fits.gz``...) file while decompressing it.

    Yields ``(header, header bytes, data bytes)`` per HDU; data is ``b""`` unless
    ``keep_data`` (True, or ``keep_data(header, index)`` for that HDU).
    Only header blocks and the data sizes the headers declare are decompressed, and the
    declared total is checked against `max_decompressed_bytes` before each data unit is
    read, so a small file expanding to gigabytes (a "gzip bomb") costs neither memory nor
    time. Anything after the last complete HDU that is not an extension header (padding,
    garbage) is read only to reach the end of the stream, where gzip and zip check their
    CRC, within the limit. ``content``, when given, is the file's already decompressed
    content (from `_decompress`): it is walked instead, and nothing is decompressed.

    Raises
    ------
    InputError
        For a stream that is not FITS, is truncated, or declares more than the limit.
    """
    limit = max_decompressed_bytes()
    total = 0
    index = 0
    try:
        with (_open_stream(path) if content is None else io.BytesIO(content)) as fh:
            while True:
                block = _read_exactly(fh, _FITS_BLOCK)
                if index == 0 and not block.startswith(b"SIMPLE  ="):
                    raise InputError(f"{path}: not a FITS file (no SIMPLE card at the start)")
                if index == 0 and len(block) < _FITS_BLOCK:
                    raise InputError(f"{path}: truncated FITS file (primary header)")
                if len(block) < _FITS_BLOCK and block.startswith(b"XTENSION="):
                    # the stream ends inside the next HDU's header: not padding
                    raise InputError(f"{path}: truncated FITS file (HDU {index} header)")
                if len(block) < _FITS_BLOCK or (index and not block.startswith(b"XTENSION=")):
                    # Padding or garbage after the last HDU: read to the end all the same,
                    # where gzip and zip check the content's CRC (a damaged stream can decode
                    # to garbage without an error until then).
                    if _skip(fh, limit - total + 1) > limit - total:
                        raise InputError(
                            f"{path}: the file decompresses to more than the limit of "
                            f"{limit / 2**20:.1f} MiB after its last HDU (dask config "
                            "ampoffset.max-decompressed-bytes)")
                    return
                blocks = [block]
                while not _has_end(block):
                    if len(blocks) >= _MAX_HEADER_BLOCKS or (
                            total + len(blocks) * _FITS_BLOCK > limit):
                        raise InputError(f"{path}: HDU {index} has no END card in its first "
                                         f"{len(blocks) * _FITS_BLOCK} header bytes")
                    block = _read_exactly(fh, _FITS_BLOCK)
                    if len(block) < _FITS_BLOCK:
                        raise InputError(f"{path}: truncated FITS file (HDU {index} header)")
                    blocks.append(block)
                raw = b"".join(blocks)
                try:
                    header = fits.Header.fromstring(raw.decode("ascii"))
                    size = declared_data_bytes(header)
                except (ValueError, UnicodeDecodeError, TypeError) as exc:
                    raise InputError(f"{path}: HDU {index} has an unreadable header ({exc})"
                                     ) from exc
                total += len(raw) + size
                if total > limit:
                    raise _too_big(path, "the file", total, limit)
                if keep_data is True or (callable(keep_data) and keep_data(header, index)):
                    data = _read_exactly(fh, size)
                    got = len(data)
                else:
                    data, got = b"", _skip(fh, size)
                if got < size:
                    raise InputError(f"{path}: truncated FITS file: HDU {index} needs {size} "
                                     f"data bytes, the stream ends after {got}")
                yield header, raw, data
                index += 1
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot decompress ({exc})") from exc


@contextmanager
def _thread_block(local: threading.local) -> Iterator[None]:
    """``local.kept`` is a dict from the start of the outermost such block in this thread
    to its end (nested blocks share it), None outside."""
    outer = getattr(local, "kept", None)
    if outer is None:
        local.kept = {}
    try:
        yield
    finally:
        if outer is None:
            local.kept = None


_KEPT = threading.local()


@contextmanager
def decompress_once() -> Iterator[None]:
    """Within this block (in this thread), every wrapped file (``.fits.gz``...) is
    decompressed at most once: its content is kept until the block ends, for the header walk
    of `~ampoffset_dask.io.fits.inspect_file` and every pixel read after it.

    The readers of a whole detector (`~ampoffset_dask.io.fits.read_exposure`,
    `~ampoffset_dask.io.fits.open_lazy`) run inside one. What is kept is what `_decompress`
    returns: never more than `max_decompressed_bytes`.
    """
    with _thread_block(_KEPT):
        yield


_MAPPED = threading.local()


@contextmanager
def map_once() -> Iterator[None]:
    """Within this block (in this thread), each uncompressed HDU that regions are read from
    is memory-mapped once, and its mapping kept until the block ends.

    Without it every region read maps and unmaps its HDU: the pages a strip crosses are
    faulted in again for each strip, which costs more than copying the strip. The
    edges-only measurement of a detector (~90 strip reads of image and mask) runs inside
    one. A file replaced (renamed over) during a block is read as it was when first mapped.
    """
    with _thread_block(_MAPPED):
        yield


def _mapping(path: Path, hdu: int, layout: _PlainLayout) -> np.ndarray:
    """The HDU's pixels memory-mapped: the block's mapping inside `map_once`, else a new one."""
    maps = getattr(_MAPPED, "kept", None)
    if maps is None:
        return _map(path, layout)
    key = (str(path), int(hdu), layout.offset)
    whole = maps.get(key)
    if whole is None:
        whole = maps[key] = _map(path, layout)
    return whole


def _buffer_key(path: Path) -> tuple[int, ...]:
    return _file_key(path.stat())


def decompressed_if_at_hand(path: Path) -> bytes | None:
    """The decompressed content of wrapped file ``path`` if this process already holds it
    (kept by `decompress_once` or cached), else None; never decompresses anything."""
    return _at_hand(_buffer_key(path))


def _at_hand(key: tuple[int, ...]) -> bytes | None:
    kept = getattr(_KEPT, "kept", None)
    data = kept.get(key) if kept is not None else None
    return data if data is not None else _BUFFERS.get(key)


def wrapped_content(path: Path) -> bytes | None:
    """The decompressed content of wrapped file ``path`` for a header walk: the one this
    process holds, or, inside a `decompress_once` block, decompressed now (and kept for the
    pixel reads that follow); None otherwise (the caller streams the headers)."""
    if getattr(_KEPT, "kept", None) is not None:
        return _decompress(path)
    return decompressed_if_at_hand(path)


def _decompress(path: Path) -> bytes:
    """Decompressed FITS content of a wrapped file (only the HDUs its headers declare, within
    `max_decompressed_bytes`). The last few small ones are kept per process, so that the amp
    reads of one lazily opened ``.fits.gz`` decompress it once; one larger than the cache's
    budget is never cached, but is kept while a `decompress_once` block lasts."""
    key = _buffer_key(path)
    data = _at_hand(key)
    if data is None:
        data = _decompress_file(path)
        if len(data) <= min(_BUFFERS.max_bytes or 0, max_decompressed_bytes()):
            _BUFFERS.add(key, data)
    kept = getattr(_KEPT, "kept", None)
    if kept is not None:
        kept[key] = data
    return data


def _decompress_file(path: Path) -> bytes:
    """The FITS content of a wrapped file, image HDUs whole; the data units of other HDUs
    (afw's archive tables, which no reader here uses) are skipped while streaming and their
    headers declare them empty, so HDU numbers stay those of the file."""
    parts: list[bytes] = []
    for index, (header, raw, data) in enumerate(stream_hdus(path, keep_data=is_image_header)):
        if not is_image_header(header, index) and declared_data_bytes(header):
            header = header.copy()
            header[f"NAXIS{int(header['NAXIS'])}"] = 0
            if "PCOUNT" in header:
                header["PCOUNT"] = 0
            header.remove("THEAP", ignore_missing=True)
            raw = header.tostring().encode("ascii")
        parts.append(raw)
        parts.append(data)
    return b"".join(parts)


def _hdu_shape(hdu: Any) -> tuple[int, ...]:
    return header_shape(hdu.header)


def header_shape(header: Any, prefix: str = "") -> tuple[int, ...]:
    """The array shape (numpy order) a header's ``NAXIS`` keywords declare (``prefix="Z"``:
    the image of a tile-compressed HDU's table header)."""
    n = int(header.get(f"{prefix}NAXIS", 0))
    return tuple(int(header.get(f"{prefix}NAXIS{k}", 0)) for k in range(n, 0, -1))


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
    out: np.ndarray | None = None,
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
    out : ndarray, optional
        Receives the region (its shape; values cast as an assignment casts them) and is
        returned: an uncompressed image's pixels are then copied once, file to ``out``.
    """
    path = Path(path)
    slices = tuple(slices)
    if hdul is None:
        layout = _plain_layout(path, hdu)
        if layout is not None:
            try:
                return _section(_mapping(path, hdu, layout), layout, slices, out)
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot read HDU {hdu} region {slices}: {exc}") from exc
        with _OPEN_FILES.hdul(path) as opened:
            return read_section(path, hdu, slices, hdul=opened, out=out)
    compressed = False
    try:
        h = hdul[hdu]
        compressed = isinstance(h, fits.CompImageHDU)
        if compressed:
            region = _compressed_section(path, hdu, h, slices)
        elif "BLANK" in h.header:
            region = _native(h.section[slices])
        else:
            return _plain_section(hdul, h, slices, out)
        if out is None:
            return region
        out[...] = region
        return out
    except InputError:
        raise
    except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError) as exc:
        raise InputError(f"{path}: cannot read HDU {hdu} region {slices}: {exc}") from exc
    except Exception as exc:
        if not compressed:
            raise
        raise _tile_error(path, hdu, exc) from exc


def _tile_error(path: Any, hdu: int, exc: BaseException) -> InputError:
    """A tile of a tile-compressed HDU that does not decode (astropy's codecs raise their
    own exception types, e.g. ``CfitsioException``): a damaged file, named with its HDU."""
    return InputError(f"{path}: HDU {hdu}: cannot decompress its tiles "
                      f"({str(exc) or type(exc).__name__})")


def _compressed_section(path: Path | str, hdu: int, h: Any, slices: tuple[slice, slice], *,
                        key: tuple | None = None,
                        fetch: Callable[[tuple[slice, slice]], Any] | None = None
                        ) -> np.ndarray:
    """Region of a tile-compressed HDU: only the tiles it touches are decompressed.

    With full-width row tiles (LSST's choice) any column subset costs whole rows, so the
    decompressed rows are kept (per process, bounded) and the other strips of the same rows
    are cut from them instead of decompressing the rows again. Remote objects pass ``key``
    (their identity in that cache) and ``fetch``: ``fetch(region)`` is a context manager
    inside which the compressed bytes of ``region``'s tiles are at hand.
    """
    shape = tuple(int(n) for n in h.shape)
    check_image_size(path, hdu, shape, int(h.header.get("BITPIX", 32)))
    tile = tuple(int(n) for n in (getattr(h, "tile_shape", None) or ()))
    rows, cols = (sl.indices(n) for sl, n in zip(slices, shape, strict=True))
    if len(tile) != 2 or tile[1] < shape[1] or cols[2] != 1 or rows[2] != 1 or (
            cols[1] - cols[0] == shape[1]):
        return _decoded(h, slices, fetch)
    if key is None:
        key = (*_file_key(Path(path).stat()), int(hdu))
    r0, r1 = rows[0], max(rows[0], rows[1])
    found = _BANDS.find(lambda k: k[0] == key and k[1] <= r0 and r1 <= k[2])
    if found is not None:
        (_, b0, _), band = found
        return band[r0 - b0:r1 - b0, cols[0]:cols[1]].copy()
    band = _BANDS.add((key, r0, r1), _decoded(h, (slice(r0, r1), slice(None)), fetch))
    return band[:, cols[0]:cols[1]].copy()


def _decoded(h: Any, region: tuple[slice, slice], fetch: Any) -> np.ndarray:
    """``h.section[region]`` (astropy decodes only the tiles the region touches).

    A local region of at least 3/4 of the HDU is cut from a decode of the whole HDU: astropy
    reads the whole heap at once then, but looks each tile's bytes up through the headers
    otherwise, which makes the 2002 data rows of a row-tiled LSST raw segment (2048 tiles)
    about 3x slower to decode than all its rows. (With large tiles the decoding itself
    dominates, hence only for most of the HDU.)
    """
    if fetch is None:
        shape = tuple(int(n) for n in h.shape)
        if len(shape) == len(region) == 2:
            rows, cols = (len(range(*sl.indices(n))) for sl, n in zip(region, shape,
                                                                          strict=True))
            if 4 * rows * cols >= 3 * shape[0] * shape[1]:
                whole = _native(h.section[:, :])
                return whole if rows * cols == whole.size else whole[region].copy()
        return _native(h.section[region])
    with fetch(region):
        return _native(h.section[region])


@dataclasses.dataclass(frozen=True)
class _PlainLayout:
    """Where an uncompressed image HDU's pixels are in its file."""

    offset: int
    shape: tuple[int, ...]
    disk: np.dtype
    bscale: float
    bzero: float


def _layout_of(h: Any) -> _PlainLayout | None:
    if isinstance(h, fits.CompImageHDU):
        return None
    return plain_layout(h.header, int(h.fileinfo()["datLoc"]))


def plain_layout(header: Any, offset: int) -> _PlainLayout | None:
    """The layout of an uncompressed image HDU whose data start at byte ``offset`` of its
    file, from its header; None with ``BLANK`` (those reads go through astropy)."""
    if "BLANK" in header:
        return None
    return _PlainLayout(offset, header_shape(header),
                        np.dtype(fits.hdu.image.BITPIX2DTYPE[int(header["BITPIX"])])
                        .newbyteorder(">"),
                        float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0)))


def _plain_layout(path: Path, hdu: int) -> _PlainLayout | None:
    """The layout of an uncompressed HDU of an unwrapped file (cached per process by path,
    size and modification time), or None for compressed/wrapped/BLANK images."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = (*_file_key(st), int(hdu))
    cached = _LAYOUTS.get(key, _MISSING)
    if cached is not _MISSING:
        return cached
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
    _LAYOUTS.add(key, layout)
    return layout


def remember_layouts(path: Path, layouts: dict[int, _PlainLayout | None]) -> None:
    """Record the layouts of HDUs whose headers were just read (saves reopening the file):
    ``{hdu: layout}``, None for those read through astropy."""
    try:
        st = path.stat()
    except OSError:
        return
    base = _file_key(st)
    for i, layout in layouts.items():
        _LAYOUTS.add((*base, int(i)), layout)


def layouts_of(hdul: fits.HDUList, indices: list[int]) -> dict[int, _PlainLayout | None]:
    """`remember_layouts`' argument for HDUs of an open file."""
    wrapped = getattr(hdul, "_ampoffset_buffer", None) is not None
    return {i: (None if wrapped else _layout_of(hdul[i])) for i in indices}


def _scaled(raw: np.ndarray, disk: np.dtype, bscale: float, bzero: float) -> np.ndarray:
    if bscale == 1.0 and bzero == 0.0:
        return raw
    if (bscale == 1.0 and disk.kind == "i" and disk.itemsize > 1
            and bzero == float(2 ** (8 * disk.itemsize - 1))):
        unsigned = np.dtype(f"u{disk.itemsize}")
        return (raw.view(unsigned) ^ unsigned.type(2 ** (8 * disk.itemsize - 1))).astype(unsigned)
    return raw * bscale + bzero


def _map(path: Path, layout: _PlainLayout) -> np.ndarray:
    """The pixels of an uncompressed HDU, memory-mapped (read-only, disk byte order)."""
    return np.memmap(path, dtype=layout.disk, mode="r", offset=layout.offset,
                     shape=layout.shape)


def _section(whole: np.ndarray, layout: _PlainLayout, slices: tuple[slice, slice],
             out: np.ndarray | None = None) -> np.ndarray:
    """A region of an HDU's pixels (`_map`, or the pixels of a decompressed file) in native
    byte order, scaled; written into ``out`` if given (see `read_section`)."""
    if out is not None and layout.bscale == 1.0 and layout.bzero == 0.0:
        np.copyto(out, whole[slices], casting="unsafe")  # swapped and cast in one copy
        return out
    raw = np.array(whole[slices], dtype=layout.disk.newbyteorder("="))
    region = _scaled(raw, layout.disk, layout.bscale, layout.bzero)
    if out is None:
        return region
    out[...] = region
    return out


def _plain_section(hdul: fits.HDUList, h: Any, slices: tuple[slice, slice],
                   out: np.ndarray | None = None) -> np.ndarray:
    """Region of an uncompressed image HDU of an open file (one strided copy)."""
    layout = _layout_of(h)
    buffer = getattr(hdul, "_ampoffset_buffer", None)
    if buffer is None:
        return _section(_map(Path(hdul.filename()), layout), layout, slices, out)
    whole = np.frombuffer(buffer, dtype=layout.disk, count=int(np.prod(layout.shape)),
                          offset=layout.offset).reshape(layout.shape)
    return _section(whole, layout, slices, out)


class LazyPlane:
    """A picklable array-like over one plane of a file: ``plane[rows, cols]`` reads only the
    amp regions that the request touches (through `read_section`).

    It holds the path, the amp sources and the output dtype, never an open file, so dask
    graphs built on it pickle to workers. ``dask.array.from_array(plane, chunks=...)`` fuses
    later slicing into the read, so a strip of a chunk reads only the strip.

    With ``stamp`` (`file_stamp` of a local file when its headers were read), every read
    first checks the file still has it: a file rewritten since would otherwise be cut with
    the amp boxes of its old headers.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int], dtype: Any,
                 sources: tuple[AmpSource, ...], fill: float = 0,
                 stamp: tuple[int, int] | None = None) -> None:
        self.path = str(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.ndim = 2
        self.sources = tuple(sources)
        self.fill = fill
        self.stamp = None if stamp is None else (int(stamp[0]), int(stamp[1]))

    def __repr__(self) -> str:
        return f"LazyPlane({self.path!r}, shape={self.shape}, dtype={self.dtype})"

    def __reduce__(self):
        return (LazyPlane, (self.path, self.shape, self.dtype.str, self.sources, self.fill,
                            self.stamp))

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
        hits = [s for s in self.sources if _overlaps(s.dest, r0, r1, c0, c1)]
        if len(hits) == 1 and _covers(hits[0].dest, r0, r1, c0, c1):
            out = np.empty((r1 - r0, c1 - c0), dtype=self.dtype)  # one amp fills it
        else:
            out = np.full((r1 - r0, c1 - c0), self.fill, dtype=self.dtype)
        if out.size and hits and _is_url(self.path):
            from .remote import read_url_section

            for s in hits:  # byte ranges of the remote object
                _paste(self.path, s, out, r0, r1, c0, c1, None, read=read_url_section)
        elif out.size and hits:
            path = Path(self.path)
            check_stamp(path, self.stamp)
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


#: Start of the dask names of `~ampoffset_dask.open_exposure`'s planes.
PLANE_NAME_PREFIX = "ampoffset-"


def lazy_plane(array: Any) -> LazyPlane | None:
    """The `LazyPlane` under a plane of `~ampoffset_dask.open_exposure`, if ``array`` is
    that plane unchanged.

    Reading regions from the plane itself skips dask's per-computation cost (~1.5 ms), which
    dominates when a measurement reads ~90 edge strips one by one. It is registered with
    `~ampoffset_dask.exposure.register_direct_reader` wherever this module is imported (as
    it is wherever a LazyPlane is unpickled), so `measure_detector`, `AmpOffsetTask.run` and
    `measure_visit` read untouched Datasets this way. "Unchanged" is dask's own contract: the
    array still carries the name `open_exposure` gave it, and equal names mean equal
    values; any operation on it (arithmetic, slicing, a new chunking) renames it.

    Parameters
    ----------
    array : dask array, xarray.DataArray or anything else

    Returns
    -------
    LazyPlane or None
        None for anything but an untouched `open_exposure` plane.
    """
    data = getattr(array, "data", array)  # a DataArray's dask array
    graph, name = getattr(data, "__dask_graph__", None), getattr(data, "name", None)
    if graph is None or not isinstance(name, str) or not name.startswith(PLANE_NAME_PREFIX):
        return None
    plane = graph().get(f"original-{name}")  # where dask.array.from_array keeps the plane
    if (isinstance(plane, LazyPlane) and plane.shape == data.shape
            and plane.dtype == data.dtype):
        return plane
    return None


register_direct_reader(lazy_plane)


def _overlaps(dest: tuple[int, int, int, int], r0: int, r1: int, c0: int, c1: int) -> bool:
    return max(r0, dest[0]) < min(r1, dest[1]) and max(c0, dest[2]) < min(c1, dest[3])


def _covers(dest: tuple[int, int, int, int], r0: int, r1: int, c0: int, c1: int) -> bool:
    return dest[0] <= r0 and r1 <= dest[1] and dest[2] <= c0 and c1 <= dest[3]


def _is_url(path: str) -> bool:
    from .remote import is_url

    return is_url(path)


def _paste(path: Any, s: AmpSource, out: np.ndarray, r0: int, r1: int, c0: int, c1: int,
           hdul: fits.HDUList | None, read: Any = None) -> None:
    # Straight from the file into the plane when nothing is done to the pixels on the way.
    direct = (read is None and s.overscan is None and s.gain is None
              and s.flag_nonzero is None)
    read = read_section if read is None else read
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
    dest = out[iy0 - r0:iy1 - r0, ix0 - c0:ix1 - c0]
    if direct:
        read(path, s.hdu, (slice(*rows), slice(*cols)), hdul=hdul,
             out=dest[::-1 if s.flip_y else 1, ::-1 if s.flip_x else 1])
        return
    level = None  # the per-row overscan levels, subtracted while pasting
    if s.overscan is None:
        data = read(path, s.hdu, (slice(*rows), slice(*cols)), hdul=hdul)
    elif s.overscan_mode == "mean":  # one level from the whole overscan, whatever rows are read
        oy0, oy1, ox0, ox1 = s.overscan
        data = read(path, s.hdu, (slice(*rows), slice(*cols)), hdul=hdul)
        over = read(path, s.hdu, (slice(oy0, oy1), slice(ox0, ox1)), hdul=hdul)
        data = subtract_overscan(data, over, "mean")
    else:
        oy0, _, ox0, ox1 = s.overscan
        if oy0 == sy0:  # same rows: one read covering data and overscan columns
            lo, hi = min(cols[0], ox0), max(cols[1], ox1)
            both = read(path, s.hdu, (slice(*rows), slice(lo, hi)), hdul=hdul)
            data = both[:, cols[0] - lo:cols[1] - lo]
            over = both[:, ox0 - lo:ox1 - lo]
        else:
            data = read(path, s.hdu, (slice(*rows), slice(*cols)), hdul=hdul)
            over = read(path, s.hdu, (slice(oy0 + ry0, oy0 + ry1), slice(ox0, ox1)),
                                hdul=hdul)
        if s.gain is None and s.flag_nonzero is None:
            level = overscan_levels(over)
        else:
            data = subtract_overscan(data, over, "per-row")
    if s.gain is not None:
        # as the whole-image read does (and afw's float image times a gain): the pixels
        # rounded to float32 first, then a float32 product
        data = np.asarray(data, dtype=np.float32) * np.float32(s.gain)
    if s.flag_nonzero is not None:
        data = np.where(data != 0, np.int32(1 << s.flag_nonzero), np.int32(0))
    if s.flip_y:
        data = data[::-1]
        level = None if level is None else level[::-1]
    if s.flip_x:
        data = data[:, ::-1]
    if level is None:
        dest[...] = data
    else:
        # In float64, then rounded into the plane: the numbers of subtract_overscan and an
        # assignment, without the float64 amp in between.
        np.subtract(data, level, out=dest, dtype=np.float64, casting="unsafe")


_BLOCK = 1 << 18  # bytes per read: swapped and checked while still in the CPU cache


def _read_swapped(path: Path, layout: _PlainLayout, check_finite: bool
                  ) -> tuple[np.ndarray, bool | None]:
    """Read an unscaled uncompressed HDU block by block into a native array (and test
    finiteness while each block is cache-hot).

    Multi-byte pixels are read into a cache-sized scratch block and swapped into place by
    numpy's byte-order cast between unsigned integers of their size: a vectorised copy
    that moves the bits unchanged (NaN payloads included), ~5x faster than swapping the
    block in place.
    """
    out = np.empty(layout.shape, dtype=layout.disk.newbyteorder("="))
    flat = out.reshape(-1)
    size = layout.disk.itemsize
    finite = True if check_finite else None
    with open(path, "rb", buffering=0) as fh:
        fh.seek(layout.offset)
        if size == 1:
            _read_into(fh, flat.view(np.uint8), path)
        else:
            word = np.dtype(f"u{size}")
            words = flat.view(word)
            scratch = np.empty(_BLOCK, dtype=np.uint8)
            step = _BLOCK // size
            for start in range(0, words.shape[0], step):
                dest = words[start:start + step]
                block = scratch[:dest.shape[0] * size]
                _read_into(fh, block, path, start * size, flat.nbytes)
                np.copyto(dest, block.view(word.newbyteorder(">")))
                if finite and out.dtype.kind == "f" and not np.isfinite(
                        flat[start:start + step]).all():
                    finite = False
    return out, finite


def _read_into(fh: Any, buf: np.ndarray, path: Path, done: int = 0, total: int | None = None
               ) -> None:
    """Fill ``buf`` from ``fh``; the file ending first is a truncated image."""
    view = memoryview(buf).cast("B")
    pos = 0
    while pos < len(view):
        n = fh.readinto(view[pos:])
        if not n:
            total = len(view) if total is None else total
            raise InputError(f"{path}: truncated FITS file: the image data stop after "
                             f"{done + pos} of {total} bytes")
        pos += n


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
        with _open(path, memmap=False) as hdul:  # scaled compressed images need no memmap
            compressed = False
            try:
                h = hdul[hdu]
                compressed = isinstance(h, fits.CompImageHDU)
                if compressed:
                    check_image_size(path, hdu, tuple(int(n) for n in h.shape),
                                     int(h.header.get("BITPIX", 32)))
                if compressed or "BLANK" in h.header:
                    a = _native(h.data)
                else:
                    a = _plain_section(hdul, h, (slice(None), slice(None)))
            except InputError:
                raise
            except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError) as exc:
                raise InputError(f"{path}: cannot read HDU {hdu}: {exc}") from exc
            except Exception as exc:
                if not compressed:
                    raise
                raise _tile_error(path, hdu, exc) from exc
    if a is None or a.ndim != 2:
        raise InputError(f"{path}: HDU {hdu} holds no 2-D image")
    a = a if a.dtype == np.dtype(dtype) else a.astype(dtype)
    if check_finite and finite is None:
        finite = bool(np.isfinite(a).all()) if a.dtype.kind == "f" else True
    return a, finite
