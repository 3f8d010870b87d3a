"""Inputs and outputs that are not local paths: object stores, URLs and zip members.

URLs (``s3://``, ``gs://``, ``https://``, any fsspec protocol) are opened with fsspec (the
``[cloud]`` extra: fsspec + s3fs) by whoever reads them - the client for headers when it
plans, the workers for pixels - so workers need no shared disk. Reads are byte ranges:

- headers through a small read-ahead cache (32 KiB blocks), never the whole object;
- pixel regions of uncompressed image HDUs as one byte range per image row touched (ranges
  closer than 1 KiB merged, fetched concurrently), so an edges-only run fetches only the amp
  edge strips;
- tile-compressed HDUs through astropy on the remote file, which fetches the compressed
  tiles' table and heap through the same cache (the decoded plane is kept per process, so the
  strips of one detector decode it once);
- whole-exposure reads (background, detection, writing a corrected copy) download the object
  once to a temporary file.

Bytes fetched are counted per URL and process (`bytes_fetched`), so each detector's result
can report the fraction of its object it fetched.

Storage options come, in this order of precedence, from the ``storage_options=`` argument,
the process default set by `set_storage_options` (``--storage-options JSON``), and the
standard environment: for S3 ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3`` (endpoint),
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_REGION`` (read by botocore). `process` forwards the client's S3 environment, with the
explicit options over it, to the workers as task arguments (workers of a remote cluster do
not share the client's environment; with none of these variables set on the client, workers
use their own). Options are never logged or written anywhere.

Zip members (``/repo/x.zip#zip-path=member.fits``, as Butler zip datastores give them) are
extracted once per process into a temporary folder and read as local files.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .paths import is_fits_name

__all__ = [
    "bytes_fetched",
    "environment_options",
    "is_url",
    "list_url",
    "localize",
    "object_size",
    "put_file",
    "read_url_section",
    "set_storage_options",
    "storage_options",
]

logger = logging.getLogger(__name__)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ZIP_FRAGMENT = "#zip-path="
_INSTALL = "pip install 'ampoffset-dask[cloud]'"
_HEADER_BLOCK = 32 << 10  # read-ahead block for header parsing
_MAX_GAP = 1 << 10  # byte ranges closer than this are fetched as one

_DEFAULT_OPTIONS: dict[str, Any] = {}
_LOCK = threading.Lock()
_FETCHED: collections.Counter[str] = collections.Counter()
_SIZES: dict[str, int] = {}
_LAYOUTS: dict[tuple[str, int], Any] = {}
_PLANES: collections.OrderedDict[tuple[str, int], np.ndarray] = collections.OrderedDict()
_PLANES_MAX_BYTES = 256 << 20


# ------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------
def is_url(text: Any) -> bool:
    """True for ``scheme://...`` strings other than ``file://`` (those are local paths)."""
    if not isinstance(text, str):
        return False
    m = _SCHEME.match(text)
    return bool(m) and m.group(1).lower() != "file"


def protocol(url: str) -> str:
    """The URL's scheme, lower case (``s3``, ``gs``, ``https``...)."""
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else "file"


def redact(url: str) -> str:
    """A URL without its query string (signed URLs carry credentials there), for messages."""
    if protocol(url) in ("http", "https") and "?" in url:
        return url.split("?", 1)[0] + "?<signature>"
    return url


# ------------------------------------------------------------------------------------------
# Storage options and filesystems
# ------------------------------------------------------------------------------------------
def set_storage_options(options: Mapping[str, Any] | None) -> None:
    """Set this process's default storage options (``None``: back to the environment)."""
    _DEFAULT_OPTIONS.clear()
    _DEFAULT_OPTIONS.update(dict(options or {}))


def storage_options(url: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fsspec storage options for ``url`` (see the module docstring for precedence)."""
    out: dict[str, Any] = {}
    if protocol(url) in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            out["endpoint_url"] = endpoint
        # fail fast on a wrong endpoint instead of botocore's long default retries
        out["config_kwargs"] = {"connect_timeout": 5, "read_timeout": 30,
                                "retries": {"max_attempts": 2}}
    out.update(_DEFAULT_OPTIONS)
    out.update(dict(options or {}))
    return out


def environment_options(urls: list[str]) -> dict[str, Any] | None:
    """Storage options for the workers taken from this process's environment (S3 only:
    endpoint, keys, session token, region), or None when there is nothing to forward.

    Workers of a remote cluster do not share the client's environment; forwarding these as
    task arguments lets them open the same objects. They are never logged or recorded.
    """
    if not any(protocol(u) in ("s3", "s3a") for u in urls):
        return None
    env = os.environ
    out: dict[str, Any] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        out["endpoint_url"] = endpoint
    for key, name in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"),
                      ("token", "AWS_SESSION_TOKEN")):
        if env.get(name):
            out[key] = env[name]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        out["client_kwargs"] = {"region_name": region}
    return out or None


def filesystem(url: str, options: Mapping[str, Any] | None = None) -> Any:
    """The fsspec filesystem for ``url`` (instances are cached by fsspec)."""
    try:
        import fsspec
    except ImportError as exc:
        raise InputError(f"{redact(url)}: reading URLs needs fsspec: {_INSTALL}") from exc
    proto = protocol(url)
    try:
        return fsspec.filesystem(proto, **storage_options(url, options))
    except ImportError as exc:
        raise InputError(f"{redact(url)}: no fsspec implementation of {proto}:// installed "
                         f"({exc}): {_INSTALL}") from exc
    except (TypeError, ValueError) as exc:
        raise InputError(f"{redact(url)}: invalid storage options: {exc}") from exc


def _error(url: str, exc: BaseException, what: str) -> InputError | OSError:
    """A clear error for a failed remote operation (InputError for permanent causes)."""
    where = redact(url)
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{where}: no such object ({what})")
    if isinstance(exc, PermissionError):
        return InputError(f"{where}: access denied ({what}): check the credentials")
    text = f"{type(exc).__name__}: {exc}"
    if any(s in text for s in ("EndpointConnectionError", "Could not connect",
                               "ConnectionRefused", "Cannot connect", "Name or service")):
        return InputError(f"{where}: cannot reach the storage endpoint ({what}): {exc}")
    if isinstance(exc, OSError):
        return OSError(f"{where}: {what} failed: {exc}")
    return InputError(f"{where}: {what} failed: {text}")


# ------------------------------------------------------------------------------------------
# Listing, sizes, counters
# ------------------------------------------------------------------------------------------
def list_url(url: str, options: Mapping[str, Any] | None = None) -> list[str]:
    """The FITS objects under a URL prefix (``s3://bucket/prefix/``), or the URL itself.

    Raises
    ------
    InputError
        If nothing is there.
    """
    fs = filesystem(url, options)
    proto = protocol(url)
    if proto in ("http", "https"):
        return [url]
    try:
        if url.endswith("/") or fs.isdir(url):
            found = sorted(fs.find(url))
            out = [p if is_url(p) else f"{proto}://{p}" for p in found
                   if is_fits_name(p)]
            if not out:
                logger.warning("%s: no FITS objects under this prefix", redact(url))
            return out
        if fs.exists(url):
            return [url]
    except Exception as exc:
        raise _error(url, exc, "listing") from exc
    raise InputError(f"{redact(url)}: no such object or prefix")


def object_size(url: str, options: Mapping[str, Any] | None = None) -> int:
    """Size in bytes of a remote object (cached per process)."""
    with _LOCK:
        if url in _SIZES:
            return _SIZES[url]
    try:
        size = int(filesystem(url, options).size(url))
    except Exception as exc:
        raise _error(url, exc, "reading its size") from exc
    with _LOCK:
        _SIZES[url] = size
    return size


def bytes_fetched(url: str) -> int:
    """Bytes fetched for ``url`` by this process so far (headers, ranges, downloads)."""
    with _LOCK:
        return int(_FETCHED[url])


def _count(url: str, n: int) -> None:
    with _LOCK:
        _FETCHED[url] += int(n)


# ------------------------------------------------------------------------------------------
# Headers
# ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def open_url_hdul(url: str, options: Mapping[str, Any] | None = None
                  ) -> Iterator[tuple[Any, int]]:
    """``(HDUList, size)`` of a remote FITS file read through a small read-ahead cache."""
    from astropy.io import fits

    fs = filesystem(url, options)
    try:
        fh = fs.open(url, "rb", block_size=_HEADER_BLOCK, cache_type="readahead")
    except Exception as exc:
        raise _error(url, exc, "opening") from exc
    cache = getattr(fh, "cache", None)
    if cache is not None:  # count the header bytes fetched
        fetch = cache.fetcher

        def counted(start: int, end: int) -> bytes:
            data = fetch(start, end)
            _count(url, len(data))
            return data

        cache.fetcher = counted
    else:  # file objects without a block cache (in-memory stores): count what is read
        read = fh.read

        def counted_read(*args: Any) -> bytes:
            data = read(*args)
            _count(url, len(data))
            return data

        fh.read = counted_read
    try:
        size = int(fh.size)
        with _LOCK:
            _SIZES[url] = size
        if size == 0:
            raise InputError(f"{redact(url)}: empty object (0 bytes)")
        try:
            hdul = fits.open(fh, mode="readonly", memmap=False, lazy_load_hdus=True)
        except (OSError, ValueError, TypeError, EOFError, IndexError) as exc:
            raise _error(url, exc, "reading the FITS headers") if not isinstance(
                exc, OSError | ValueError) else InputError(
                f"{redact(url)}: not a readable FITS file ({exc})") from exc
        try:
            yield hdul, size
        finally:
            hdul.close()
    except InputError:
        raise
    except Exception as exc:
        raise _error(url, exc, "reading the FITS headers") from exc
    finally:
        fh.close()


def remember_url_layouts(url: str, hdul: Any, indices: list[int]) -> None:
    """Record where the pixels of uncompressed HDUs are (so strips are plain byte ranges)."""
    from .sections import _layout_of

    found = {}
    for i in indices:
        found[(url, int(i))] = _layout_of(hdul[i])
    with _LOCK:
        if len(_LAYOUTS) > 4096:
            _LAYOUTS.clear()
        _LAYOUTS.update(found)


def _layout(url: str, hdu: int) -> Any:
    with _LOCK:
        if (url, hdu) in _LAYOUTS:
            return _LAYOUTS[(url, hdu)]
    with open_url_hdul(url) as (hdul, _):
        remember_url_layouts(url, hdul, [hdu])
    with _LOCK:
        return _LAYOUTS[(url, hdu)]


# ------------------------------------------------------------------------------------------
# Pixels
# ------------------------------------------------------------------------------------------
def read_url_section(url: str, hdu: int, slices: tuple[slice, slice], *, hdul: Any = None
                     ) -> np.ndarray:
    """One rectangle of an image HDU of a remote FITS file (native byte order, scaled).

    Uncompressed HDUs: one byte range per row (nearby ranges merged), fetched concurrently.
    Compressed ones: the plane decoded once per process through astropy on the remote file.
    ``hdul`` is accepted for the signature of `ampoffset_dask.io.sections.read_section` and
    ignored.
    """
    from .sections import _scaled

    layout = _layout(url, int(hdu))
    if layout is None:
        return _compressed_plane(url, int(hdu))[slices]
    height, width = layout.shape
    rows = range(*slices[0].indices(height))
    c0, c1, _ = slices[1].indices(width)
    c1 = max(c0, c1)
    item = layout.disk.itemsize
    out = np.empty((len(rows), c1 - c0), dtype=layout.disk)
    if not len(rows) or c1 == c0:
        return _scaled(out.astype(layout.disk.newbyteorder("=")), layout.disk, layout.bscale,
                       layout.bzero)
    if c0 == 0 and c1 == width:  # whole rows: one contiguous range
        starts = [layout.offset + rows[0] * width * item]
        ends = [layout.offset + (rows[-1] + 1) * width * item]
    else:
        starts = [layout.offset + (r * width + c0) * item for r in rows]
        ends = [s + (c1 - c0) * item for s in starts]
    blob = _fetch_ranges(url, starts, ends)
    flat = np.frombuffer(blob, dtype=layout.disk)
    out[:] = flat.reshape(out.shape)
    raw = out.astype(layout.disk.newbyteorder("="))
    return _scaled(raw, layout.disk, layout.bscale, layout.bzero)


def _fetch_ranges(url: str, starts: list[int], ends: list[int]) -> bytes:
    """The concatenated bytes of ``[starts[i], ends[i])`` (sorted, non-overlapping)."""
    from fsspec.utils import merge_offset_ranges

    fs = filesystem(url)
    paths, m_starts, m_ends = merge_offset_ranges([url] * len(starts), list(starts),
                                                  list(ends), max_gap=_MAX_GAP, sort=False)
    try:
        blobs = fs.cat_ranges(paths, m_starts, m_ends)
    except Exception as exc:
        raise _error(url, exc, "reading byte ranges") from exc
    for b in blobs:
        if isinstance(b, BaseException):
            raise _error(url, b, "reading byte ranges") from b
    _count(url, sum(len(b) for b in blobs))
    if len(blobs) == len(starts):
        return b"".join(blobs)
    parts = []
    k = 0
    for s, e in zip(starts, ends, strict=True):
        while not (m_starts[k] <= s and e <= m_ends[k]):
            k += 1
        parts.append(blobs[k][s - m_starts[k]:e - m_starts[k]])
    return b"".join(parts)


def _compressed_plane(url: str, hdu: int) -> np.ndarray:
    from .sections import _native

    key = (url, hdu)
    with _LOCK:
        if key in _PLANES:
            _PLANES.move_to_end(key)
            return _PLANES[key]
    with open_url_hdul(url) as (hdul, _):
        try:
            plane = _native(hdul[hdu].data)
        except Exception as exc:
            raise _error(url, exc, f"decoding HDU {hdu}") from exc
    with _LOCK:
        _PLANES[key] = plane
        while len(_PLANES) > 1 and sum(p.nbytes for p in _PLANES.values()) > _PLANES_MAX_BYTES:
            _PLANES.popitem(last=False)
    return plane


@contextlib.contextmanager
def local_copy(url: str) -> Iterator[Path]:
    """Download ``url`` to a temporary file (deleted on exit) for whole-exposure reads."""
    fs = filesystem(url)
    name = Path(urllib.parse.urlparse(url).path).name or "object.fits"
    with tempfile.TemporaryDirectory(prefix="ampoffset-") as tmp:
        path = Path(tmp) / name
        try:
            fs.get_file(url, str(path))
        except Exception as exc:
            raise _error(url, exc, "downloading") from exc
        _count(url, path.stat().st_size)
        yield path


def put_file(local: str | os.PathLike, url: str) -> str:
    """Upload a finished local file to ``url`` as one object (readers never see a partial
    object: an object store makes an upload visible only once it is complete)."""
    fs = filesystem(url)
    try:
        data = Path(local).read_bytes()
        fs.pipe_file(url, data)
    except Exception as exc:
        raise _error(url, exc, "writing") from exc
    return url


# ------------------------------------------------------------------------------------------
# Local forms: file:// URIs and zip members
# ------------------------------------------------------------------------------------------
_ZIP_LOCK = threading.Lock()


def localize(path: str | os.PathLike) -> str | os.PathLike:
    """A local path for ``file://`` URIs and zip members; anything else unchanged.

    A zip member (``archive.zip#zip-path=member``) is extracted once per process into a
    temporary folder keyed by the archive's path, size and modification time.
    """
    if not isinstance(path, str):
        return path
    text = path
    if text.startswith("file://"):
        text = urllib.parse.unquote(urllib.parse.urlparse(text).path) + (
            "#" + urllib.parse.unquote(text.split("#", 1)[1]) if "#" in text else "")
    if _ZIP_FRAGMENT not in text:
        return text
    archive, member = text.split(_ZIP_FRAGMENT, 1)
    archive_path = Path(archive)
    try:
        st = archive_path.stat()
    except OSError as exc:
        raise InputError(f"{archive}: no such zip archive ({exc.strerror or exc})") from exc
    digest = hashlib.sha1(f"{archive_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode(),
                          usedforsecurity=False).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / "ampoffset-zip" / digest / Path(member).name
    with _ZIP_LOCK:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zipfile.ZipFile(archive_path) as zf, zf.open(member) as src:
                    tmp = target.with_suffix(target.suffix + f".{os.getpid()}.part")
                    with open(tmp, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                    os.replace(tmp, target)
            except KeyError as exc:
                raise InputError(f"{archive}: no member {member!r} in the zip archive") from exc
            except (OSError, zipfile.BadZipFile) as exc:
                raise InputError(f"{archive}: cannot read zip member {member!r}: {exc}") from exc
    return str(target)
