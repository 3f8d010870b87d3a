"""Reading pixel regions of FITS image HDUs, and lazy detector planes built from them.

`read_section` reads one rectangle of one HDU: uncompressed images through a memory map of the
HDU's data (the data offset is cached per process, so repeated reads parse no header),
tile-compressed ones by decompressing only the tiles the rectangle touches, gzip-wrapped files
(``.fits.gz``) from one in-memory decompression. `LazyPlane` assembles a detector-frame plane
from per-amp `AmpSource` boxes (with flips and optional per-row overscan subtraction) through
`read_section`; it is picklable and holds no open file, so dask graphs built on it travel to
workers.

Per-process caches (bounded, keyed by path, size and modification time, reset in forked
children): data offsets of uncompressed HDUs, decompressed ``.fits.gz`` contents, decompressed
row bands of row-tiled compressed HDUs, and a few open files for compressed/wrapped reads
(`close_cached_files` closes them).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import os
import threading
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..errors import InputError
from .lru import LRUCache
from .overscan import subtract_overscan

__all__ = ["AmpSource", "LazyPlane", "close_cached_files", "read_section"]


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
        self._files: LRUCache[tuple, tuple[fits.HDUList, threading.Lock]] = LRUCache(
            max_items=size, on_evict=_close_entry)

    @contextmanager
    def hdul(self, path: Path) -> Iterator[fits.HDUList]:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        entry = self._files.get(key)
        if entry is None:
            # astropy refuses to scale (BZERO/BSCALE, e.g. uint16 DECam/HSC raws) compressed
            # or BLANK images of memory-mapped files; these reads go through astropy anyway.
            opened = (_open_hdul(path, memmap=False), threading.Lock())
            entry = self._files.add(key, opened)
            if entry is not opened:  # opened meanwhile by another thread
                _close_entry(key, opened)
        with entry[1]:
            yield entry[0]

    def close_all(self) -> None:
        self._files.clear()


def _close_entry(key: tuple, entry: tuple[fits.HDUList, threading.Lock]) -> None:
    hdul, lock = entry
    with lock:  # after the reader using it is done
        hdul.close()


_OPEN_FILES = _OpenFiles()


def close_cached_files() -> None:
    """Close the files kept open by region reads of compressed or gzip-wrapped files."""
    _OPEN_FILES.close_all()


#: Decompressed contents of wrapped files (``.fits.gz``...), the newest always kept.
_BUFFERS: LRUCache[tuple[str, int, int], bytes] = LRUCache(max_bytes=256 << 20)
#: Decompressed row bands of row-tiled compressed HDUs.
_BANDS: LRUCache[tuple, np.ndarray] = LRUCache(max_bytes=256 << 20, sizeof=lambda b: b.nbytes)
#: Where the pixels of uncompressed HDUs are (None: not a plain HDU).
_LAYOUTS: LRUCache[tuple[str, int, int, int], Any] = LRUCache(max_items=4096)
_MISSING = object()


def _reset_after_fork() -> None:
    """A forked child must not share the parent's open files (file offsets) or held locks."""
    global _OPEN_FILES
    _OPEN_FILES = _OpenFiles()
    for cache in (_BUFFERS, _BANDS, _LAYOUTS):
        cache.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _decompress(path: Path) -> bytes:
    """Decompressed content of a wrapped file; the last few are kept per process, so that the
    amp reads of one lazily opened ``.fits.gz`` decompress it once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    data = _BUFFERS.get(key)
    if data is None:
        data = _BUFFERS.add(key, _decompress_file(path))
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


def _hdu_shape(hdu: Any) -> tuple[int, ...]:
    h = hdu.header
    n = int(h.get("NAXIS", 0))
    return tuple(int(h.get(f"NAXIS{k}", 0)) for k in range(n, 0, -1))


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
    found = _BANDS.find(lambda k: k[0] == key and k[1] <= r0 and r1 <= k[2])
    if found is not None:
        (_, b0, _), band = found
        return band[r0 - b0:r1 - b0, cols[0]:cols[1]].copy()
    band = _BANDS.add((key, r0, r1), _native(h.section[r0:r1, :]))
    return band[:, cols[0]:cols[1]].copy()


@dataclasses.dataclass(frozen=True)
class _PlainLayout:
    """Where an uncompressed image HDU's pixels are in its file."""

    offset: int
    shape: tuple[int, ...]
    disk: np.dtype
    bscale: float
    bzero: float


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


def remember_layouts(path: Path, hdul: fits.HDUList, indices: list[int]) -> None:
    """Record the layouts of already-parsed HDUs of an open file (saves reopening it)."""
    try:
        st = path.stat()
    except OSError:
        return
    base = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    wrapped = getattr(hdul, "_ampoffset_buffer", None) is not None
    found = {i: (None if wrapped else _layout_of(hdul[i])) for i in indices}
    for i, layout in found.items():
        _LAYOUTS.add((*base, int(i)), layout)


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
        if out.size and hits and _is_url(self.path):
            from .remote import read_url_section

            for s in hits:  # byte ranges of the remote object
                _paste(self.path, s, out, r0, r1, c0, c1, None, read=read_url_section)
        elif out.size and hits:
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


def _is_url(path: str) -> bool:
    from .remote import is_url

    return is_url(path)


def _paste(path: Any, s: AmpSource, out: np.ndarray, r0: int, r1: int, c0: int, c1: int,
           hdul: fits.HDUList | None, read: Any = None) -> None:
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
        data = subtract_overscan(data, over, "per-row")
    if s.gain is not None:
        data = np.asarray(data, dtype=np.float64) * s.gain
    if s.flag_nonzero is not None:
        data = np.where(data != 0, np.int32(1 << s.flag_nonzero), np.int32(0))
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
        with _open(path, memmap=False) as hdul:  # scaled compressed images need no memmap
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
