"""Inputs and outputs that are not local paths: object stores, URLs and zip members.

URLs (``s3://``, ``gs://``, ``https://``, any fsspec protocol) are opened with fsspec (the
``[cloud]`` extra: fsspec + s3fs) by whoever reads them - the client for headers when it
plans, the workers for pixels - so workers need no shared disk. Reads are byte ranges:

- headers through a small read-ahead cache (32 KiB blocks), never the whole object;
- pixel regions of uncompressed image HDUs as the byte ranges of the rows they touch;
- regions of tile-compressed HDUs as the table of tile descriptors (read once per process)
  and then only the heap bytes of the tiles the region touches, decoded by the same astropy
  code as local files (`ampoffset_dask.io.sections`), the declared image size checked
  against ``ampoffset.max-decompressed-bytes`` first and every descriptor checked to lie in
  the heap;
- whole-exposure reads (background, detection, writing a corrected copy) download the object
  once to a temporary file.

Byte ranges closer than the merge gap (dask config ``ampoffset.remote.merge-gap``, default
`DEFAULT_MERGE_GAP`) are fetched as one request, and no request is longer than
``ampoffset.remote.max-request`` (`DEFAULT_MAX_REQUEST`); the requests of one read go out
together through fsspec's ``cat_ranges`` (concurrently on asynchronous stores such as s3fs).
Column strips of a row-major image touch every row, so a gap larger than the rest of a row
(16 KiB for a full-size LSST detector) fetches the rows between the strips too: fewer, larger
requests for more bytes. Such reads fetch whole rows (of pixels, or of tiles when the tiles
of a region would be merged anyway), and ranges fetched in few large blocks are kept per
process (bounded, `RANGE_CACHE_BYTES`), so the next strips of the same rows cost no request.

What a process keeps of an object (blocks, layouts, tile tables, its size) is dropped when
its headers are opened again and the store describes another version (size, ETag, version or
time), so an object rewritten in the store between two opens is not read from the bytes of
the old one (the store is asked, not a listing fsspec cached); a rewrite during one read,
between its headers and its pixels, is not detected. Objects compressed whole (``.fits.gz``,
``.fits.bz2``) have no byte ranges to read: they are refused, saying so.

Bytes fetched and requests made are counted per URL and process (`bytes_fetched`,
`requests_made`), so each detector's result can report the fraction of its object it fetched.

Storage options come, in this order of precedence, from the ``storage_options=`` argument,
the run's options (`process(storage_options=...)`, ``--storage-options JSON``: in force for
that run's reads only, `scoped_storage_options`, so another run in the same process or on the
same worker never inherits them), the process default set by `set_storage_options`, and the
standard environment: for S3 ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3`` (endpoint; else
lsst.resources' ``S3_ENDPOINT_URL``, which Butler datastores in a store use),
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_REGION`` (read by botocore). `process` forwards the client's S3 environment, with the
explicit options over it, to the workers as task arguments (workers of a remote cluster do
not share the client's environment; with none of these variables set on the client, workers
use their own). Options are never logged or written anywhere. A URL naming an
lsst.resources S3 profile (``s3://PROFILE@bucket/key``, as Butler datastores may) is read
with the endpoint and keys of ``LSST_RESOURCES_S3_PROFILE_<PROFILE>``
(``https://KEY:SECRET@host:port``), forwarded to the workers likewise.

Zip members (``/repo/x.zip#zip-path=member.fits``, as Butler zip datastores give them) are
extracted once per process into a temporary folder and read as local files; so are members
of an archive in a store (``s3://bucket/x.zip#zip-path=member.fits``), of which only the
zip directory and the member's bytes are fetched, again when the archive is replaced.

Whether an object was replaced (between planning and its task, or since the run a resumed
run continues) is told by its `url_stamp`: size, modification time and the store's ETag or
version (HTTP's ``Last-Modified`` and ``ETag`` included). Patterns (``s3://b/raw/*.fits``,
``**``, ``?``, ``[0-4]``) are expanded by `list_url` with the store's listing.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import contextvars
import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import urllib.parse
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .lru import LRUCache
from .paths import OUTPUT_MARKER, OUTPUT_MARKER_TEXT, is_fits_name

__all__ = [
    "DEFAULT_MAX_REQUEST",
    "DEFAULT_MERGE_GAP",
    "RANGE_CACHE_BYTES",
    "REDACTED",
    "bytes_fetched",
    "clear_caches",
    "environment_options",
    "forget",
    "is_url",
    "list_url",
    "localize",
    "max_request",
    "merge_gap",
    "object_size",
    "printable",
    "put_file",
    "read_url_section",
    "redact",
    "redact_text",
    "requests_made",
    "scoped_storage_options",
    "set_config_source",
    "set_storage_options",
    "storage_options",
]

logger = logging.getLogger(__name__)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ZIP_FRAGMENT = "#zip-path="
#: Leading bytes of files compressed whole (``.fits.gz``, ``.fits.bz2``, a zip archive).
_WRAPPERS = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"PK\x03\x04", "zip"))
_INSTALL = "pip install 'ampoffset-dask[cloud]'"
_HEADER_BLOCK = 32 << 10  # read-ahead block for header parsing
#: Default of `merge_gap` (dask config ``ampoffset.remote.merge-gap``): larger than a
#: detector row and than the bytes between vertically adjacent 128 x 128 compressed tiles, so
#: an edges-only read of a full-size detector makes about a hundred requests, not 10^5.
DEFAULT_MERGE_GAP = 2 << 20
#: Default of `max_request` (dask config ``ampoffset.remote.max-request``).
DEFAULT_MAX_REQUEST = 16 << 20
#: Bytes of fetched ranges kept per process for the next reads of the same rows.
RANGE_CACHE_BYTES = 256 << 20
#: Reads fetched in more requests than this (row by row) are not kept: they are never
#: read again, and thousands of tiny blocks would make every lookup slow.
_CACHE_MAX_BLOCKS = 256

_DEFAULT_OPTIONS: dict[str, Any] = {}
_SCOPED_OPTIONS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "ampoffset_storage_options", default=None)
_LOCK = threading.Lock()
_FETCHED: collections.Counter[str] = collections.Counter()
_REQUESTS: collections.Counter[str] = collections.Counter()
#: Bumped by `forget`: entries of the per-process caches keyed by an older generation of a
#: URL are never used again.
_GENERATION: collections.Counter[str] = collections.Counter()
_SIZES: dict[str, int] = {}
#: What the store said of each object when its headers were last opened (`_identity`): the
#: per-process caches hold bytes of that version only (an object dropped from this bound
#: is forgotten when next opened).
_IDENTITIES: LRUCache[str, tuple[Any, ...]] = LRUCache(max_items=4096)
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


#: What replaces a password (or a user name given alone: a token) in `redact`.
REDACTED = "***"
#: URLs inside free text (an exception's message): up to a space or quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that are not UTF-8 written as ``\\xNN``.

    Python gives such bytes of a POSIX file name as lone surrogates (``"junk\\udcfe.fits"``
    for the bytes ``junk\\xfe.fits``), which no UTF-8 text (a Parquet column, a JSON line,
    a terminal) can hold. The escape is the same every time (a rerun recognises the name)
    and reads as the bytes ``ls`` would show; text that is valid UTF-8 is returned as is.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that stand for no byte (``\\ud800``)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def redact(url: str) -> str:
    """A path or URL as messages and the catalog show it: without credentials, printable.

    - The password of a URL's user information is replaced by `REDACTED`
      (``http://alice:secret@host/f.fits`` -> ``http://alice:***@host/f.fits``): the user
      name tells which account read the object and is no secret. User information without a
      password is replaced whole (``https://***@host/...``): that form usually carries a
      token (a personal access token or API key given as the user name).
    - The query string of an ``http(s)`` URL becomes ``?<signature>``: signed URLs carry
      their credentials there.
    - A ``#fragment`` is kept: it is never sent to a server, so it holds no credentials,
      and here it names things (``#zip-path=member`` of a zip archive; ``#`` may be part of
      an object's key in a store), which would otherwise merge into one name.
    - Bytes of a file name that are not UTF-8 are escaped (`printable`).

    Local paths keep their form (only `printable` applies). The result is stable (the same
    input always gives the same text, so resumed runs find their rows) and redacting it
    again changes nothing.
    """
    text = printable(url)
    m = _SCHEME.match(text)
    if not m:
        return text
    rest = text[m.end():]
    # RFC 3986: the authority ends at the first "/", "?" or "#"; user information is what
    # comes before its last "@" (an unencoded "@" in a password stays in the password)
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        hidden = f"{user}:{REDACTED}" if colon else REDACTED
        rest = f"{hidden}@{host}{rest[end:]}"
    if m.group(1).lower() in ("http", "https") and "?" in rest:
        rest = rest.split("?", 1)[0] + "?<signature>"
    return m.group(0) + rest


def redact_text(text: str) -> str:
    """``text`` (an error message) with every URL in it redacted (`redact`) and its
    undecodable bytes escaped: the messages of the libraries that read stores (fsspec,
    aiohttp, botocore) quote the URL they were given, credentials included."""
    text = printable(text)
    if "://" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        # punctuation ending a sentence is not part of the URL ("...fits?sig=x: no such")
        url = m.group(0).rstrip(":,;.)]}")
        return redact(url) + m.group(0)[len(url):]

    return _URL_IN_TEXT.sub(one, text)


# ------------------------------------------------------------------------------------------
# Storage options and filesystems
# ------------------------------------------------------------------------------------------
def set_storage_options(options: Mapping[str, Any] | None) -> None:
    """Set this process's default storage options (``None``: back to the environment)."""
    _DEFAULT_OPTIONS.clear()
    _DEFAULT_OPTIONS.update(dict(options or {}))


@contextlib.contextmanager
def scoped_storage_options(options: Mapping[str, Any] | None) -> Iterator[None]:
    """Storage options of the reads made in the block by this thread (and the threads it
    starts with a copy of its context): a run's options, over the process default; ``None``
    changes nothing."""
    token = _SCOPED_OPTIONS.set(None if options is None else dict(options))
    try:
        yield
    finally:
        _SCOPED_OPTIONS.reset(token)


def _environment_endpoint(env: Mapping[str, str]) -> str | None:
    """The S3 endpoint the environment names: botocore's variables, else ``S3_ENDPOINT_URL``
    (lsst.resources', which a Butler whose datastore is in that store was opened with)."""
    return (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
            or env.get("S3_ENDPOINT_URL") or None)


def storage_options(url: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fsspec storage options for ``url`` (see the module docstring for precedence).

    For ``s3://PROFILE@bucket/...`` the endpoint and keys are the profile's (`_profile_options`),
    over any others: the profile names the store the object is in.
    """
    out: dict[str, Any] = {}
    if protocol(url) in ("s3", "s3a"):
        endpoint = _environment_endpoint(os.environ)
        if endpoint:
            out["endpoint_url"] = endpoint
        # fail fast on a wrong endpoint instead of botocore's long default retries
        out["config_kwargs"] = {"connect_timeout": 5, "read_timeout": 30,
                                "retries": {"max_attempts": 2}}
    out.update(_DEFAULT_OPTIONS)
    out.update(_SCOPED_OPTIONS.get() or {})
    out.update(dict(options or {}))
    profiles = out.pop(_PROFILES_OPTION, None) or {}
    if protocol(url) in ("http", "https"):
        # a run's options may be its S3 inputs' (`environment_options`): aiohttp, which
        # the http filesystem hands its options to, refuses them ("unexpected keyword")
        for k in ("endpoint_url", "key", "secret", "token", "config_kwargs"):
            out.pop(k, None)
        client = out.get("client_kwargs")
        if isinstance(client, Mapping) and "region_name" in client:
            out["client_kwargs"] = {k: v for k, v in client.items() if k != "region_name"}
    profile = _s3_profile(url)
    if profile is not None:
        for k in ("endpoint_url", "key", "secret", "token", "profile", "anon"):
            out.pop(k, None)
        out.update(_profile_options(url, profile, profiles))
    return out


#: lsst.resources' S3 profiles: ``s3://PROFILE@bucket/key`` is read with the endpoint and
#: keys of this variable + PROFILE (``https://KEY:SECRET@host:port``).
PROFILE_VARIABLE = "LSST_RESOURCES_S3_PROFILE_"
#: Storage option carrying the profiles' variables to workers (`environment_options`);
#: taken out before the options reach fsspec.
_PROFILES_OPTION = "ampoffset_s3_profiles"


def _netloc_and_key(url: str) -> tuple[str, str]:
    """What follows ``url``'s scheme, split at its first ``/``: the bucket or server (with
    any ``user@``) and the key (empty when there is none)."""
    m = _SCHEME.match(url)
    netloc, _, key = (url[m.end():] if m else url).partition("/")
    return netloc, key


def _s3_profile(url: str) -> str | None:
    """The lsst.resources profile an ``s3://PROFILE@bucket/...`` URL names, else None."""
    if protocol(url) not in ("s3", "s3a"):
        return None
    user, at, _ = _netloc_and_key(url)[0].rpartition("@")  # bucket names hold no "@"
    return user if at and user else None


def _profile_options(url: str, profile: str, given: Mapping[str, str]) -> dict[str, Any]:
    """Endpoint and keys of an lsst.resources S3 profile, from ``given`` (forwarded by the
    client) or the ``LSST_RESOURCES_S3_PROFILE_<profile>`` variable.

    Raises
    ------
    InputError
        When the variable is not set or is not ``scheme://[KEY:SECRET@]host[:port]``
        (the message never quotes its value: it holds the secret key).
    """
    name = PROFILE_VARIABLE + profile
    value = given.get(profile) or os.environ.get(name)
    if not value:
        raise InputError(
            f"{redact(url)}: the URL names the S3 profile {profile!r}, whose endpoint and "
            f"keys come from the environment variable {name} (as lsst.resources reads "
            f"them: https://ACCESS_KEY:SECRET_KEY@host:port), which is not set")
    userinfo = value.partition("://")[2].rpartition("@")[0]
    if "/" in userinfo or "?" in userinfo or "#" in userinfo:
        # (AWS secret keys often hold a "/"): the URL would end its host there
        raise InputError(f"{redact(url)}: the keys in {name} hold a '/', '?' or '#', which "
                         "a URL must percent-encode (write '/' as %2F, '?' as %3F, '#' as "
                         "%23)")
    parts = urllib.parse.urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise InputError(f"{redact(url)}: {name} is not a URL like "
                         "https://ACCESS_KEY:SECRET_KEY@host:port")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    out: dict[str, Any] = {"endpoint_url": f"{parts.scheme}://{host}"
                                           + (f":{port}" if port else "") + parts.path}
    if parts.username:
        out["key"] = urllib.parse.unquote(parts.username)
        out["secret"] = urllib.parse.unquote(parts.password or "")
    return out


def environment_options(urls: list[str]) -> dict[str, Any] | None:
    """Storage options for the workers taken from this process's environment (S3 only:
    endpoint, keys, session token, region, and the ``LSST_RESOURCES_S3_PROFILE_*``
    variables of the profiles ``urls`` name), or None when there is nothing to forward.

    Workers of a remote cluster do not share the client's environment; forwarding these as
    task arguments lets them open the same objects. They are never logged or recorded.
    """
    if not any(protocol(u) in ("s3", "s3a") for u in urls):
        return None
    env = os.environ
    out: dict[str, Any] = {}
    profiles = {p: env[PROFILE_VARIABLE + p] for p in {_s3_profile(u) for u in urls} - {None}
                if env.get(PROFILE_VARIABLE + p)}
    if profiles:  # the workers need the profiles' endpoints and keys too
        out[_PROFILES_OPTION] = profiles
    endpoint = _environment_endpoint(env)
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
    """The fsspec filesystem for ``url`` (instances are cached by fsspec).

    Two kinds of URL are given a filesystem that takes them as they are written:

    - ``s3://PROFILE@bucket/key`` (an lsst.resources S3 profile): the store's endpoint and
      keys are the profile's (`storage_options`), the paths its methods get are
      ``s3://bucket/key``;
    - a zip member in a store (``s3://bucket/x.zip#zip-path=member.fits``): the member is
      extracted once per process (and version of the archive) into a temporary file, and
      the filesystem is the local one, the member's URL standing for that file.
    """
    try:
        import fsspec
    except ImportError as exc:
        raise InputError(f"{redact(url)}: reading URLs needs fsspec: {_INSTALL}") from exc
    if _ZIP_FRAGMENT in url:
        local = _remote_zip_member(url, options)
        return _PathMapped(fsspec.filesystem("file"), {url: local}.get)
    proto = protocol(url)
    try:
        fs = fsspec.filesystem(proto, **storage_options(url, options))
    except ImportError as exc:
        raise InputError(f"{redact(url)}: no fsspec implementation of {proto}:// installed "
                         f"({redact_text(str(exc))}): {_INSTALL}") from exc
    except (TypeError, ValueError) as exc:
        raise InputError(f"{redact(url)}: invalid storage options: "
                         f"{redact_text(str(exc))}") from exc
    profile = _s3_profile(url)
    if profile is None:
        return fs
    prefix = url[:url.index("://") + 3] + profile + "@"

    def bare(path: str) -> str | None:
        return f"{protocol(url)}://{path[len(prefix):]}" if path.startswith(prefix) else None

    return _PathMapped(fs, bare)


class _PathMapped:
    """An fsspec filesystem whose methods take paths written otherwise: every string
    argument (or list of strings) that ``mapping`` knows is replaced by what it gives
    (the path the filesystem itself understands); everything else passes through."""

    def __init__(self, fs: Any, mapping: Callable[[str], str | None]) -> None:
        self._fs = fs
        self._mapping = mapping

    def _path(self, value: Any) -> Any:
        if isinstance(value, str):
            mapped = self._mapping(value)
            return value if mapped is None else mapped
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str)
                                                              for v in value):
            return type(value)(self._path(v) for v in value)
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._fs, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return attr(*(self._path(a) for a in args),
                        **{k: self._path(v) for k, v in kwargs.items()})

        return call


class _FetchError(OSError):
    """A failed remote operation that may be transient (retried by the detector task)."""


def _error(url: str, exc: BaseException, what: str) -> InputError | OSError:
    """A clear error for a failed remote operation (InputError for permanent causes).

    The message never holds credentials: the store libraries' messages quote the URL as
    given (``aiohttp``: ``url=URL('http://user:password@...')``), so they are redacted too.
    """
    where = redact(url)
    unreachable = _unreachable(exc)
    if unreachable is not None:
        # before "no such object": fsspec's HTTP reads say FileNotFoundError for a refused
        # connection too, the connection error as its cause
        return InputError(f"{where}: cannot reach the storage endpoint ({what}): "
                          f"{redact_text(str(unreachable))}")
    local = _local_failure(exc)
    if local is not None:
        # the local disk refused (a name too long, no space): asking the store again
        # cannot help, so it is no transient store error
        return InputError(f"{where}: {what} failed on the local disk: {local}")
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{where}: no such object ({what})")
    if isinstance(exc, PermissionError):
        return InputError(f"{where}: access denied ({what}): check the credentials")
    said = redact_text(str(exc))
    text = f"{type(exc).__name__}: {said}"
    if isinstance(exc, OSError):
        return _FetchError(f"{where}: {what} failed: {said}")
    return InputError(f"{where}: {what} failed: {text}")


#: Errors of local files that retrying does not fix.
_LOCAL_ERRNOS = frozenset(getattr(errno, n) for n in (
    "ENAMETOOLONG", "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EISDIR", "ENOTDIR")
    if hasattr(errno, n))


def _local_failure(exc: BaseException) -> str | None:
    """What a local file operation that failed for good says (``[Errno 36] File name too
    long: '/tmp/...'``), when ``exc`` is one; None otherwise (a store's error)."""
    if not isinstance(exc, OSError) or exc.errno not in _LOCAL_ERRNOS:
        return None
    name = exc.filename if isinstance(exc.filename, str) else None
    if name is None or is_url(name) or not os.path.isabs(name):
        return None
    return f"{exc.strerror or exc} ({printable(name)})"


def _unreachable(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain (itself, its causes) that says the store's endpoint
    could not be reached; None if none does."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = f"{type(cur).__name__}: {cur}"
        if any(s in text for s in _UNREACHABLE):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


_UNREACHABLE = ("EndpointConnectionError", "Could not connect", "ConnectionRefused",
                "Cannot connect", "Name or service")

_config_source: Callable[[str], Any] | None = None
_STAMP_WARNED = False


def set_config_source(source: Callable[[str], Any] | None) -> None:
    """Make `merge_gap` and `max_request` ask ``source(key)`` (``"remote.merge-gap"``...: a
    byte count or a string such as ``"1MiB"``, None for the default); the pipeline passes its
    dask config lookup here (this layer imports no dask)."""
    global _config_source
    _config_source = source


def _setting(key: str, default: int) -> int:
    from .sections import parse_bytes

    value = _config_source(key) if _config_source is not None else None
    return default if value is None else max(0, parse_bytes(value))


def merge_gap() -> int:
    """Byte ranges closer than this are fetched as one request (``ampoffset.remote.merge-gap``,
    default `DEFAULT_MERGE_GAP`)."""
    return _setting("remote.merge-gap", DEFAULT_MERGE_GAP)


def max_request() -> int:
    """No request merged from several ranges is longer than this
    (``ampoffset.remote.max-request``, default `DEFAULT_MAX_REQUEST`)."""
    return max(1, _setting("remote.max-request", DEFAULT_MAX_REQUEST))


# ------------------------------------------------------------------------------------------
# Listing, sizes, counters
# ------------------------------------------------------------------------------------------
def list_url(url: str, options: Mapping[str, Any] | None = None,
             exclude: Iterable[str] = ()) -> list[str]:
    """The FITS objects under a URL prefix (``s3://bucket/prefix/``) or matching a pattern
    (``s3://bucket/raw/visit5/*.fits``, ``**``, ``?``, ``[0-4]``; a key holding such
    characters names its object when there is one), or the URL itself.

    As in local folders, prefixes of corrected images are left out: those holding an
    `~ampoffset_dask.io.paths.OUTPUT_MARKER` object (below ``url`` itself) and those in
    ``exclude`` (the current run's outputs).

    Raises
    ------
    InputError
        If nothing is there (no FITS object matches a pattern), or the prefix is (or lies
        inside) one of ``exclude``.
    """
    fs = filesystem(url, options)
    proto = protocol(url)
    if proto in ("http", "https"):
        return [url]
    try:
        fs.invalidate_cache(url)  # a listing cached by an earlier run may be stale
        # a key or prefix holding "[", "?" or "*" names itself when it exists
        if (_ZIP_FRAGMENT not in url and _GLOB.search(_key_of(url))
                and not _is_object(fs, url) and not fs.isdir(url)):
            return _globbed(fs, url, exclude, options)
        if not url.endswith("/") and is_fits_name(url) and _is_object(fs, url):
            # a key may also be the prefix of others: the name of a FITS object is that
            # object (as a file's is), its trailing slash asks for the prefix
            return [url]
        if url.endswith("/") or fs.isdir(url):
            out = _listed_prefix(fs, url, exclude)
            if not out:
                logger.warning("%s: no FITS objects under this prefix", redact(url))
            return out
        if fs.exists(url):
            return [url]
    except FileNotFoundError as exc:  # s3fs says so of a bucket that does not exist
        raise InputError(f"{redact(url)}: no such bucket, object or prefix") from exc
    except InputError:
        raise
    except Exception as exc:
        raise _error(url, exc, "listing") from exc
    raise InputError(f"{redact(url)}: no such object or prefix")


def _listed_prefix(fs: Any, url: str, exclude: Iterable[str], quiet: bool = False
                   ) -> list[str]:
    """The FITS objects under the prefix ``url``, taken as written (no pattern), without
    those below an output marker. A prefix that is (or lies inside) one of ``exclude``
    raises `InputError`, or with ``quiet`` (a prefix a pattern matched) gives nothing."""
    top = url.rstrip("/")
    skip = [str(e).rstrip("/") + "/" for e in exclude]
    inside = next((k for k in skip if (top + "/").startswith(k)), None)
    if inside is not None:  # else every object is left out: "no FITS files found"
        if quiet:
            return []
        raise InputError(
            f"{redact(url)}: the input prefix is (or lies inside) the output images' "
            f"prefix {redact(inside)}, and runs never take inputs from a prefix of "
            "corrected images; write them elsewhere (a prefix inside the inputs, e.g. "
            f"{redact(top)}/corrected/, is fine)")
    found = [_as_url(url, p) for p in sorted(fs.find(top + "/"))]
    skip += [p[:-len(OUTPUT_MARKER)] for p in found
             if p.endswith("/" + OUTPUT_MARKER) and p.rsplit("/", 1)[0] != top]
    return [p for p in found if is_fits_name(p) and not any(p.startswith(k) for k in skip)]


#: What makes a key a pattern (fsspec's glob: ``*``, ``**``, ``?``, ``[0-4]``).
_GLOB = re.compile(r"[*?\[]")


def _key_of(url: str) -> str:
    """The part of ``url`` after its bucket (what a pattern may be in)."""
    return _netloc_and_key(url)[1]


def _as_url(url: str, path: str) -> str:
    """A path fsspec listed (``bucket/key``) as a URL of ``url``'s form (its scheme and
    any profile: ``s3://PROFILE@bucket/key``)."""
    if is_url(path):
        return path
    user = _netloc_and_key(url)[0].rpartition("@")[0]
    return f"{protocol(url)}://" + (f"{user}@" if user else "") + path


def _globbed(fs: Any, url: str, exclude: Iterable[str],
             options: Mapping[str, Any] | None) -> list[str]:
    """The FITS objects matching the pattern ``url`` (`list_url`): the objects it matches
    and those under the prefixes it matches (as a pattern matching local folders walks
    them), without those below an output marker or in ``exclude`` (as a prefix listing
    leaves them out).

    Raises
    ------
    InputError
        When no FITS object matches.
    """
    matched = fs.glob(url, detail=True)
    skip = [str(e).rstrip("/") + "/" for e in exclude]
    found: set[str] = set()
    left_out = 0  # FITS objects matched in the output images' prefix
    for path, info in sorted(matched.items()):
        p = _as_url(url, path)
        if info.get("type") == "directory":  # its objects as listed, not a pattern again
            found.update(_listed_prefix(fs, p, exclude, quiet=True))
        elif is_fits_name(p) and any(p.startswith(k) for k in skip):
            left_out += 1
        elif is_fits_name(p):
            found.add(p)
    # corrected images: below a prefix that holds the output marker (asked once a prefix,
    # from each object's folder up to the pattern's fixed part)
    fixed = url[:_GLOB.search(url).start()].rsplit("/", 1)[0]
    marked: dict[str, bool] = {}

    def is_marked(folder: str) -> bool:
        if folder not in marked:
            marked[folder] = fs.exists(f"{folder}/{OUTPUT_MARKER}")
        return marked[folder]

    out = []
    for p in sorted(found):
        folder = p.rsplit("/", 1)[0]
        while len(folder) > len(fixed) and not is_marked(folder):
            folder = folder.rsplit("/", 1)[0]
        if len(folder) <= len(fixed):
            out.append(p)
    if not out:
        left_out += len(found)
        raise InputError(
            f"{redact(url)}: no FITS object matches this pattern"
            + (f" outside the prefixes of corrected images ({left_out} inside them)"
               if left_out else
               f" ({len(matched)} other object(s) or prefix(es) do)" if matched else ""))
    return out


def _is_object(fs: Any, url: str) -> bool:
    """Whether ``url`` names an object (not only a prefix) in the store."""
    try:
        return fs.info(url).get("type") == "file"
    except FileNotFoundError:
        return False


def mark_output_prefix(url: str, options: Mapping[str, Any] | None = None) -> None:
    """Put an `~ampoffset_dask.io.paths.OUTPUT_MARKER` object under the output prefix
    ``url``: a later run listing a prefix that holds it leaves these images out.

    Raises
    ------
    InputError
        If the store refuses the write (the corrected images could not be written either).
    """
    marker = f"{url.rstrip('/')}/{OUTPUT_MARKER}"
    try:
        fs = filesystem(url, options)
        if not fs.exists(marker):
            fs.pipe(marker, OUTPUT_MARKER_TEXT.encode())
    except InputError:
        raise
    except Exception as exc:
        raise _error(url, exc, "writing the output marker") from exc


Stamp = tuple[int, Any] | tuple[int, Any, str]


def url_stamp(url: str, options: Mapping[str, Any] | None = None) -> Stamp | None:
    """What identifies the version of a remote object, asked of the store now (its cached
    listing dropped first): ``(size, modification time in seconds)``, and a third item, the
    store's tag of the version (ETag, version id, generation) when it gives one (the time
    is then None if the store gives no time). None when the store tells neither a time nor
    a tag (said once per store: replaced objects will not be noticed), or cannot be asked.
    What resume and the tasks compare to notice a replaced object: two stamps are equal
    only when every item is (an ETag changes with the bytes even when the size and the
    time, to the second, stay the same).

    A zip member in a store has its archive's stamp.
    """
    global _STAMP_WARNED
    if _ZIP_FRAGMENT in url:
        return url_stamp(url.split(_ZIP_FRAGMENT, 1)[0], options)
    try:
        fs = filesystem(url, options)
        fs.invalidate_cache(url)
        info = fs.info(url)
    except Exception as exc:  # unreadable now: the run's reads will say why
        # but say it here too (once per process): without a stamp, resume takes the object
        # for unchanged, so a replaced one would not be measured again
        with _LOCK:
            first, _STAMP_WARNED = not _STAMP_WARNED, True
        logger.log(logging.WARNING if first else logging.DEBUG,
                   "%s: cannot ask the store for its size and time (%s: %s); a resumed run "
                   "will not notice if it is replaced", redact(url), type(exc).__name__,
                   redact_text(str(exc)))
        return None
    stamp = _stamp_of(info)
    if stamp is None:
        store = _store_of(url)
        with _LOCK:
            first = store not in _STAMPLESS_STORES
            _STAMPLESS_STORES.add(store)
        logger.log(logging.WARNING if first else logging.DEBUG,
                   "%s: the store gives neither a size with a modification time nor an ETag "
                   "of its objects (%s); a resumed run, or a task of this run, will not "
                   "notice if one is replaced", redact(url),
                   ", ".join(sorted(str(k) for k in info)) or "nothing")
    return stamp


def _stamp_of(info: Mapping[str, Any]) -> Stamp | None:
    """`url_stamp` of what a store's ``info`` says of an object (fsspec's keys: s3fs,
    gcsfs, adlfs, and the HTTP headers of fsspec's HTTP filesystem)."""
    import datetime
    import email.utils

    size = info.get("size")
    if size is None:
        return None
    when = next((info[k] for k in ("LastModified", "last_modified", "Last-Modified", "mtime",
                                   "updated", "created") if info.get(k) is not None), None)
    if isinstance(when, str):
        try:
            when = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            try:  # HTTP's form: "Wed, 02 Dec 2026 03:36:39 GMT"
                when = email.utils.parsedate_to_datetime(when)
            except (TypeError, ValueError, IndexError):
                when = None
    if isinstance(when, datetime.datetime):
        when = when.timestamp()
    when = float(when) if isinstance(when, (int, float)) else None
    # a weak ETag (W/"...") promises no byte identity, and some servers make a new one for
    # every response: only strong tags and version ids tell versions apart
    tag = "|".join(str(info[k]).strip() for k in _TAG_KEYS if info.get(k) not in (None, "")
                   and not str(info[k]).strip().startswith("W/"))
    if tag:
        return int(size), when, tag
    return (int(size), when) if when is not None else None


#: Keys of an object's ``info`` naming its version: a new one for new bytes.
_TAG_KEYS = ("ETag", "etag", "VersionId", "generation", "md5Hash")
#: Stores (`_store_of`) whose objects had no stamp, already warned about.
_STAMPLESS_STORES: set[str] = set()


def _store_of(url: str) -> str:
    """``scheme://host`` (the bucket or server) of a URL, without credentials."""
    return redact(f"{protocol(url)}://{_netloc_and_key(url)[0]}")


def object_size(url: str, options: Mapping[str, Any] | None = None) -> int:
    """Size in bytes of a remote object (cached per process)."""
    with _LOCK:
        if url in _SIZES:
            return _SIZES[url]
    try:
        fs = filesystem(url, options)
        fs.invalidate_cache(url)  # not the size of a listing cached earlier
        size = int(fs.size(url))
    except Exception as exc:
        raise _error(url, exc, "reading its size") from exc
    _count(url, 0)
    with _LOCK:
        _SIZES[url] = size
    return size


def bytes_fetched(url: str) -> int:
    """Bytes fetched for ``url`` by this process so far (headers, ranges, downloads)."""
    with _LOCK:
        return int(_FETCHED[url])


def requests_made(url: str) -> int:
    """Requests this process made for ``url`` so far (header blocks, merged byte ranges,
    downloads, size look-ups)."""
    with _LOCK:
        return int(_REQUESTS[url])


def _count(url: str, n: int, requests: int = 1) -> None:
    with _LOCK:
        _FETCHED[url] += int(n)
        _REQUESTS[url] += int(requests)


# ------------------------------------------------------------------------------------------
# Headers
# ------------------------------------------------------------------------------------------
def _open_counted(url: str, options: Mapping[str, Any] | None = None) -> Any:
    """The object opened for reading through a small read-ahead cache, its fetches counted."""
    fs = filesystem(url, options)
    try:
        # fsspec describes an object from a listing it cached (the size, the ETag its reads
        # then insist on): ask the store, which may hold a newer version since
        fs.invalidate_cache(url)
        fh = fs.open(url, "rb", block_size=_HEADER_BLOCK, cache_type="readahead")
    except Exception as exc:
        raise _error(url, exc, "opening") from exc
    cache = getattr(fh, "cache", None)
    if cache is not None:  # count the bytes and requests of the cache's fetches
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
    return fh


def _identity(fh: Any, size: int) -> tuple[Any, ...] | None:
    """What identifies the version of an opened object: its size and the store's ETag,
    version id or modification time (None when the store tells none of these)."""
    details = getattr(fh, "details", None) or {}
    tags = tuple(str(details[k]) for k in (*_TAG_KEYS, "LastModified", "last_modified",
                                           "Last-Modified", "mtime", "updated")
                 if details.get(k) is not None)
    return (size, *tags) if tags else None


def _check_identity(url: str, identity: tuple[Any, ...] | None) -> None:
    """Forget what this process keeps of ``url`` when the object opened now is not the one
    its caches were filled from (rewritten in the store since), or cannot be told apart."""
    previous = _IDENTITIES.get(url)
    if previous is not None and previous == identity:
        return
    _IDENTITIES.discard(url)
    if identity is not None:
        _IDENTITIES.add(url, identity)
    if previous is not None:
        logger.debug("%s: changed in the store; cached bytes dropped", redact(url))
    # a first open may follow reads of an object whose identity was never known
    forget(url)


def _wrapper(fh: Any) -> str | None:
    """The compression an object is wrapped in whole (``gzip``...), from its first bytes."""
    try:
        fh.seek(0)
        magic = fh.read(4)
    except Exception:  # the caller's error stands
        return None
    return next((name for sig, name in _WRAPPERS if magic.startswith(sig)), None)


def _open_hdul(url: str, fh: Any) -> tuple[Any, int]:
    """``(HDUList, size)`` of an opened object (headers parsed lazily)."""
    from astropy.io import fits

    size = int(fh.size)
    with _LOCK:
        _SIZES[url] = size
    if size == 0:
        raise InputError(f"{redact(url)}: empty object (0 bytes)")
    try:
        hdul = fits.open(fh, mode="readonly", memmap=False, lazy_load_hdus=True)
    except (OSError, ValueError) as exc:
        if isinstance(exc, _FetchError):
            raise
        wrapper = _wrapper(fh)
        if wrapper is not None:
            # the pixels' byte ranges of a stream compressed whole cannot be fetched without
            # fetching (and decompressing) everything before them
            raise InputError(
                f"{redact(url)}: a {wrapper}-wrapped FITS object, which cannot be read from a "
                "store in byte ranges: store it uncompressed or tile-compressed (fpack, "
                ".fits.fz), or copy it to a local disk and run on the copy") from exc
        raise InputError(f"{redact(url)}: not a readable FITS file "
                         f"({redact_text(str(exc))})") from exc
    except (TypeError, EOFError, IndexError) as exc:
        raise _error(url, exc, "reading the FITS headers") from exc
    return hdul, size


@contextlib.contextmanager
def open_url_hdul(url: str, options: Mapping[str, Any] | None = None
                  ) -> Iterator[tuple[Any, int]]:
    """``(HDUList, size)`` of a remote FITS file read through a small read-ahead cache."""
    fh = _open_counted(url, options)
    try:
        # the headers are read afresh: nothing kept from another version may serve the
        # pixel reads that follow (an object rewritten since, reopened in this process)
        _check_identity(url, _identity(fh, int(fh.size)))
        hdul, size = _open_hdul(url, fh)
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
    with _open_object(url) as (hdul, _):
        try:
            remember_url_layouts(url, hdul, [hdu])
        except InputError:
            raise
        except Exception as exc:
            raise _error(url, exc, f"reading the header of HDU {hdu}") from exc
    with _LOCK:
        return _LAYOUTS[(url, hdu)]


# ------------------------------------------------------------------------------------------
# Fetching byte ranges
# ------------------------------------------------------------------------------------------
class _RangeCache:
    """Blocks of remote objects fetched so far, per URL (least recently used URLs dropped
    first, at most ``max_bytes`` in all). A lookup finds, for each range, a block holding it
    whole; blocks may overlap (a missed overlap only costs a new fetch, never wrong bytes)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._urls: collections.OrderedDict[str, tuple[np.ndarray, np.ndarray, list[bytes]]] = (
            collections.OrderedDict())
        self._bytes = 0
        self._lock = threading.Lock()

    def lookup(self, url: str, starts: np.ndarray, ends: np.ndarray
               ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, list[bytes]] | None]:
        """Index of a block holding each range (-1: none), and the blocks looked in."""
        with self._lock:
            entry = self._urls.get(url)
            if entry is not None:
                self._urls.move_to_end(url)
        found = np.full(len(starts), -1, dtype=np.int64)
        if entry is None or not len(starts):
            return found, entry
        bs, be, _ = entry
        i = np.searchsorted(bs, starts, side="right") - 1
        ok = i >= 0
        ok[ok] = be[i[ok]] >= ends[ok]
        found[ok] = i[ok]
        return found, entry

    def add(self, url: str, blocks: list[tuple[int, bytes]]) -> None:
        size = sum(len(b) for _, b in blocks)
        if not blocks or size > self.max_bytes:
            return
        with self._lock:
            old = self._urls.pop(url, None)
            if old is not None:
                kept = sum(len(b) for b in old[2])
                self._bytes -= kept
                if kept + size <= self.max_bytes:  # else only the new blocks stay
                    blocks = [*zip(old[0].tolist(), old[2], strict=True), *blocks]
            blocks = sorted(blocks, key=lambda b: b[0])
            starts = np.array([b[0] for b in blocks], dtype=np.int64)
            ends = starts + np.array([len(b[1]) for b in blocks], dtype=np.int64)
            self._urls[url] = (starts, ends, [b[1] for b in blocks])
            self._bytes += sum(len(b[1]) for b in blocks)
            while self._bytes > self.max_bytes and len(self._urls) > 1:
                _, dropped = self._urls.popitem(last=False)
                self._bytes -= sum(len(b) for b in dropped[2])

    def drop(self, url: str) -> None:
        with self._lock:
            old = self._urls.pop(url, None)
            if old is not None:
                self._bytes -= sum(len(b) for b in old[2])

    def clear(self) -> None:
        with self._lock:
            self._urls.clear()
            self._bytes = 0

    def after_fork(self) -> None:
        self._lock = threading.Lock()


_RANGES = _RangeCache(RANGE_CACHE_BYTES)


def _get_ranges(url: str, starts: list[int], ends: list[int]) -> list[bytes]:
    """The bytes of ``[starts[i], ends[i])``, requested together (one request each)."""
    size = object_size(url)
    if max(ends) > size:
        raise InputError(f"{redact(url)}: truncated or corrupt object: byte {max(ends)} is "
                         f"needed, the object has {size}")
    fs = filesystem(url)
    try:
        blobs = fs.cat_ranges([url] * len(starts), list(starts), list(ends))
    except Exception as exc:
        raise _error(url, exc, "reading byte ranges") from exc
    for b in blobs:
        if isinstance(b, BaseException):
            raise _error(url, b, "reading byte ranges") from b
    _count(url, sum(len(b) for b in blobs), len(blobs))
    for s, e, b in zip(starts, ends, blobs, strict=True):
        if len(b) > e - s:  # not a truncated object: a server that sent all of it
            raise InputError(
                f"{redact(url)}: bytes {s}-{e} requested, {len(b)} received: the server does "
                "not serve byte ranges (HTTP Range requests), which reading parts of an object "
                "needs; serve it from one that does, or copy it to a local disk")
        if len(b) != e - s:
            raise InputError(f"{redact(url)}: truncated object: bytes {s}-{e} requested, "
                             f"{len(b)} received")
    return blobs


def _fetch(url: str, starts: Any, ends: Any) -> tuple[list[tuple[int, bytes]], np.ndarray]:
    """Blocks ``(start, bytes)`` holding every range ``[starts[i], ends[i])``, and for each
    range the index of its block.

    Ranges found in the per-process cache cost nothing; the others, in order, are merged when
    closer than `merge_gap` (up to `max_request` bytes a request) and requested together.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    owner = np.empty(len(starts), dtype=np.int64)
    found, entry = _RANGES.lookup(url, starts, ends)
    blocks: list[tuple[int, bytes]] = []
    hit = found >= 0
    if hit.any():
        used, where = np.unique(found[hit], return_inverse=True)
        blocks = [(int(entry[0][k]), entry[2][k]) for k in used]
        owner[hit] = where
    missing = np.flatnonzero(~hit)
    if not missing.size:
        return blocks, owner
    # in order of start; a range found in the cache ends the group being merged (its bytes
    # are not fetched again)
    order = np.argsort(starts, kind="stable")
    gap, longest = merge_gap(), max_request()
    g_starts: list[int] = []
    g_ends: list[int] = []
    members: list[list[int]] = []
    cs = ce = -1
    for k, s, e, cached in zip(order.tolist(), starts[order].tolist(), ends[order].tolist(),
                               hit[order].tolist(), strict=True):
        if cached:
            if cs >= 0:
                g_starts.append(cs)
                g_ends.append(ce)
                cs = ce = -1
            continue
        if cs >= 0 and s - ce <= gap and max(ce, e) - cs <= longest:
            ce = max(ce, e)
            members[-1].append(k)
        else:
            if cs >= 0:
                g_starts.append(cs)
                g_ends.append(ce)
            cs, ce = s, e
            members.append([k])
    if cs >= 0:
        g_starts.append(cs)
        g_ends.append(ce)
    blobs = _get_ranges(url, g_starts, g_ends)
    new = list(zip(g_starts, blobs, strict=True))
    for i, ks in enumerate(members):
        owner[ks] = len(blocks) + i
    blocks.extend(new)
    if len(new) <= _CACHE_MAX_BLOCKS:
        _RANGES.add(url, new)
    return blocks, owner


# ------------------------------------------------------------------------------------------
# Pixels
# ------------------------------------------------------------------------------------------
def read_url_section(url: str, hdu: int, slices: tuple[slice, slice], *, hdul: Any = None
                     ) -> np.ndarray:
    """One rectangle of an image HDU of a remote FITS file (native byte order, scaled).

    Uncompressed HDUs: the byte ranges of the rows the rectangle touches; tile-compressed
    ones: the heap bytes of the tiles it touches (see the module docstring). ``hdul`` is
    accepted for the signature of `ampoffset_dask.io.sections.read_section` and ignored.
    """
    from .sections import _scaled

    layout = _layout(url, int(hdu))
    if layout is None:
        out = _compressed_section(url, int(hdu), tuple(slices))
        return out if out is not None else _whole_plane(url, int(hdu))[slices]
    height, width = layout.shape
    rows = range(*slices[0].indices(height))
    c0, c1, _ = slices[1].indices(width)
    c1 = max(c0, c1)
    item = layout.disk.itemsize
    out = np.empty((len(rows), c1 - c0), dtype=layout.disk)
    if not len(rows) or c1 == c0:
        return _scaled(out.astype(layout.disk.newbyteorder("=")), layout.disk, layout.bscale,
                       layout.bzero)
    row = width * item
    at = layout.offset + np.arange(rows.start, rows.stop, rows.step, dtype=np.int64) * row
    starts = at + c0 * item  # the pieces of the rows wanted
    ends = starts + (c1 - c0) * item
    if merge_gap() >= row - (c1 - c0) * item:
        # the pieces would be merged with the rest of their rows anyway: fetch whole rows,
        # so that the blocks kept hold whole rows for the next strips of the same rows
        blocks, owner = _fetch(url, at, at + row)
    else:
        blocks, owner = _fetch(url, starts, ends)
    views = [memoryview(b) for _, b in blocks]
    first = [s for s, _ in blocks]
    blob = b"".join(views[o][s - first[o]:e - first[o]]
                    for o, s, e in zip(owner.tolist(), starts.tolist(), ends.tolist(),
                                       strict=True))
    out[:] = np.frombuffer(blob, dtype=layout.disk).reshape(out.shape)
    raw = out.astype(layout.disk.newbyteorder("="))
    return _scaled(raw, layout.disk, layout.bscale, layout.bzero)


class _RemoteFile:
    """A read-only file over a remote object for astropy: reads inside the pinned blocks
    (the tile bytes a decode needs, fetched beforehand in few requests) are served from
    them, any other (headers, the tile table) from the object through the read-ahead cache.
    """

    mode = "rb"

    def __init__(self, url: str, fh: Any) -> None:
        self.name = url
        self._fh = fh
        self.size = int(fh.size)
        self._pos = 0
        self._pinned: list[tuple[int, bytes]] = []
        self._pinned_starts = np.empty(0, dtype=np.int64)

    def read(self, n: int | None = -1) -> bytes:
        pos = self._pos
        end = self.size if n is None or n < 0 else min(self.size, pos + n)
        data = self._from_pinned(pos, end)
        if data is None:
            self._fh.seek(pos)
            data = self._fh.read(end - pos)
        self._pos = pos + len(data)
        return data

    def _from_pinned(self, start: int, end: int) -> bytes | None:
        if not self._pinned:
            return None
        k = int(np.searchsorted(self._pinned_starts, start, side="right")) - 1
        candidates = [k] if k >= 0 else []
        candidates += [i for i in range(len(self._pinned)) if i != k]
        for i in candidates:
            s, data = self._pinned[i]
            if s <= start and end <= s + len(data):
                return data[start - s:end - s]
        return None

    @contextlib.contextmanager
    def pinned(self, blocks: list[tuple[int, bytes]]) -> Iterator[None]:
        self._pinned = sorted(blocks, key=lambda b: b[0])
        self._pinned_starts = np.array([s for s, _ in self._pinned], dtype=np.int64)
        try:
            yield
        finally:
            self._pinned, self._pinned_starts = [], np.empty(0, dtype=np.int64)

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = int(offset) + (0, self._pos, self.size)[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return bool(self._fh.closed)

    def close(self) -> None:
        self._fh.close()


def _close_object(key: tuple[str, int], entry: tuple[Any, _RemoteFile, threading.Lock]) -> None:
    hdul, rf, lock = entry
    with lock:  # after the reader using it is done
        hdul.close()
        rf.close()


#: A few remote objects kept open per process (their parsed headers and tile tables), so
#: the strip reads of one detector parse them once.
_OPEN: Any = None


def _open_objects() -> Any:
    global _OPEN
    if _OPEN is None:
        _OPEN = LRUCache(max_items=4, on_evict=_close_object)
    return _OPEN


@contextlib.contextmanager
def _open_object(url: str) -> Iterator[tuple[Any, _RemoteFile]]:
    """``(HDUList, file)`` of a remote object kept open per process, under its lock."""
    cache = _open_objects()
    with _LOCK:
        key = (url, _GENERATION[url])
    entry = cache.get(key)
    if entry is None:
        rf = _RemoteFile(url, _open_counted(url))
        try:
            hdul, _ = _open_hdul(url, rf)
        except BaseException:
            rf.close()
            raise
        opened = (hdul, rf, threading.Lock())
        entry = cache.add(key, opened)
        if entry is not opened:  # opened meanwhile by another thread
            _close_object(key, opened)
    with entry[2]:
        yield entry[0], entry[1]


_ITEMSIZE = {"B": 1, "I": 2, "J": 4, "K": 8, "E": 4, "D": 8}
_TILE_COLUMNS = ("COMPRESSED_DATA", "GZIP_COMPRESSED_DATA", "UNCOMPRESSED_DATA")


def _tile_ranges(url: str, hdu: int, h: Any, region: tuple[slice, slice]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Byte ranges in the object of the compressed tiles ``region`` touches, every tile
    descriptor checked to point inside the heap and the object."""
    where = redact(url)
    shape = tuple(int(n) for n in h.shape)
    tile = tuple(int(n) for n in h.tile_shape)
    if len(shape) != 2 or len(tile) != 2 or min(tile) < 1:
        raise InputError(f"{where}: HDU {hdu} is not a 2-D tiled image ({shape}, tiles {tile})")
    (r0, r1, _), (c0, c1, _) = (sl.indices(n) for sl, n in zip(region, shape, strict=True))
    if r1 <= r0 or c1 <= c0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    per_row = -(-shape[1] // tile[1])
    ty = np.arange(r0 // tile[0], (r1 - 1) // tile[0] + 1)
    tx = np.arange(c0 // tile[1], (c1 - 1) // tile[1] + 1)
    rows = (ty[:, None] * per_row + tx[None, :]).ravel()
    table = h.compressed_data  # the tile descriptors (read once, without the heap)
    bintable = h._bintable  # astropy keeps the table HDU here; its heap's place in the file
    heap = int(bintable._data_offset) + int(bintable._theap)
    heap_end = (int(bintable._data_offset) + int(bintable.header["NAXIS1"])
                * int(bintable.header["NAXIS2"]) + int(bintable.header.get("PCOUNT", 0)))
    if rows.max() >= len(table):
        raise InputError(f"{where}: HDU {hdu} has {len(table)} tiles, its shape {shape} and "
                         f"tiles {tile} need {rows.max() + 1}: corrupt object")
    starts, ends = [], []
    for name in _TILE_COLUMNS:
        if name not in table.names:
            continue
        m = re.search(r"[PQ]([A-Z])", str(table.columns[name].format))
        if m is None or m.group(1) not in _ITEMSIZE:
            raise InputError(f"{where}: HDU {hdu}: unsupported tile column format "
                             f"{table.columns[name].format}")
        desc = np.asarray(table[name]).reshape(len(table), 2)[rows].astype(np.int64)
        n, off = desc[:, 0], desc[:, 1]
        used = n != 0
        s = heap + off[used]
        e = s + n[used] * _ITEMSIZE[m.group(1)]
        bad = (n[used] < 0) | (off[used] < 0) | (e > heap_end)
        if bad.any():
            k = int(rows[used][np.argmax(bad)])
            raise InputError(f"{where}: HDU {hdu}: tile {k} ({name}) points outside the heap "
                             f"(bytes {int(s[np.argmax(bad)])}-{int(e[np.argmax(bad)])}, heap "
                             f"{heap}-{heap_end}): corrupt object")
        starts.append(s)
        ends.append(e)
    s, e = np.concatenate(starts), np.concatenate(ends)
    order = np.argsort(s, kind="stable")
    return s[order], e[order]


def _compressed_section(url: str, hdu: int, slices: tuple[slice, slice]) -> np.ndarray | None:
    """A region of a tile-compressed HDU: only the heap bytes of the tiles it touches are
    fetched, then decoded like a local file's (`ampoffset_dask.io.sections`). None when the
    HDU is not tile-compressed."""
    from astropy.io import fits

    from .sections import _compressed_section as decode

    where = redact(url)
    with _open_object(url) as (hdul, rf):
        try:
            h = hdul[hdu]
        except (IndexError, KeyError, ValueError, OSError) as exc:
            if isinstance(exc, _FetchError):
                raise
            raise InputError(f"{where}: cannot read HDU {hdu}: "
                             f"{redact_text(str(exc))}") from exc
        if not isinstance(h, fits.CompImageHDU):
            return None

        @contextlib.contextmanager
        def fetched(region: tuple[slice, slice]) -> Iterator[None]:
            starts, ends = _tile_ranges(url, hdu, h, region)
            if len(starts) > 1 and int(np.max(starts[1:] - np.maximum.accumulate(ends)[:-1])
                                       ) <= merge_gap():
                # the tiles would be fetched with all those between them anyway: fetch whole
                # rows of tiles, so that the blocks kept serve the next strips of these rows
                starts, ends = _tile_ranges(url, hdu, h, (region[0], slice(None)))
            blocks = _fetch(url, starts, ends)[0] if len(starts) else []
            with rf.pinned(blocks):
                yield

        try:
            with _LOCK:
                key = (url, _GENERATION[url], rf.size, hdu)
            return decode(where, hdu, h, slices, key=key, fetch=fetched)
        except (InputError, _FetchError):
            raise
        except Exception as exc:
            raise InputError(f"{where}: cannot decompress HDU {hdu} region {slices}: "
                             f"{type(exc).__name__}: {redact_text(str(exc))}") from exc


def _whole_plane(url: str, hdu: int) -> np.ndarray:
    """An image HDU that is neither plain nor tile-compressed (BLANK-masked integers),
    decoded whole once per process."""
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


def forget(url: str) -> None:
    """Drop what this process keeps of ``url`` (fetched blocks, the open object, its size,
    layouts and decoded planes), so that the next reads see the object as it is now: the
    detector task calls it first, so a rewritten object is never read from stale blocks."""
    _RANGES.drop(url)
    with _LOCK:
        _GENERATION[url] += 1
        _SIZES.pop(url, None)
        for cache in (_LAYOUTS, _PLANES):
            for key in [k for k in cache if k[0] == url]:
                del cache[key]


def clear_caches() -> None:
    """Forget this process's fetched ranges, layouts and decoded planes, and close the
    remote objects kept open (the next reads fetch again)."""
    _RANGES.clear()
    if _OPEN is not None:
        _OPEN.clear()
    with _LOCK:
        _LAYOUTS.clear()
        _PLANES.clear()


def _reset_after_fork() -> None:
    """A forked child must not share the parent's open objects or held locks."""
    global _OPEN, _LOCK
    _OPEN = None
    _LOCK = threading.Lock()
    _RANGES.after_fork()
    _IDENTITIES.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


@contextlib.contextmanager
def local_copy(url: str) -> Iterator[Path]:
    """Download ``url`` to a temporary file (deleted on exit) for whole-exposure reads."""
    fs = filesystem(url)
    with tempfile.TemporaryDirectory(prefix="ampoffset-") as tmp:
        path = Path(tmp) / _local_name(url)
        try:
            fs.get_file(url, str(path))
        except Exception as exc:
            raise _error(url, exc, "downloading") from exc
        _count(url, path.stat().st_size)
        yield path


#: The suffixes a local copy keeps (``.fits``, ``.fits.fz``...): readers tell formats by them.
_SUFFIXES = re.compile(r"(?:\.[A-Za-z0-9]{1,8}){1,3}$")


def _local_name(url: str) -> str:
    """A short file name for a local copy of ``url``: ``object`` and the suffixes of the
    object's name (of the member's, for a zip member). An object's key may be longer than
    a file name may be (255 bytes), and it may hold bytes a local file system refuses."""
    name = url.split(_ZIP_FRAGMENT, 1)[1] if _ZIP_FRAGMENT in url else url
    if protocol(url) in ("http", "https"):  # the query is no part of the name
        name = name.split("?", 1)[0]
    m = _SUFFIXES.search(name.rstrip("/").rsplit("/", 1)[-1])
    return "object" + (m.group(0) if m else ".fits")


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


def _uri_path(text: str) -> str:
    """A ``file://`` URI's path (its fragment kept: a zip member); anything else as it is."""
    if not text.startswith("file://"):
        return text
    return urllib.parse.unquote(urllib.parse.urlparse(text).path) + (
        "#" + urllib.parse.unquote(text.split("#", 1)[1]) if "#" in text else "")


def named_file(path: str) -> str:
    """The local file an input names, without reading it: a ``file://`` URI's path, a zip
    member's archive (``archive.zip#zip-path=x.fits``), as `localize` reads them."""
    return _uri_path(str(path)).split(_ZIP_FRAGMENT, 1)[0]


def localize(path: str | os.PathLike) -> str | os.PathLike:
    """A local path for ``file://`` URIs and zip members; anything else unchanged.

    A zip member (``archive.zip#zip-path=member``) is extracted once per process into a
    temporary folder keyed by the archive's path, size and modification time and the
    member's name.
    """
    if not isinstance(path, str):
        return path
    text = _uri_path(path)
    if _ZIP_FRAGMENT not in text:
        return text
    archive, member = text.split(_ZIP_FRAGMENT, 1)
    archive_path = Path(archive)
    try:
        st = archive_path.stat()
    except OSError as exc:
        raise InputError(f"{archive}: no such zip archive ({exc.strerror or exc})") from exc
    # the member's whole name in the key: members of one name in different folders of the
    # archive (a/x.fits, b/x.fits) are different files; the file name keeps its suffix
    digest = hashlib.sha1(
        f"{archive_path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{member}".encode(),
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


#: Zip members of a store extracted by this process: member URL -> (generation of the URL
#: when its archive's stamp was last asked, local file).
_REMOTE_ZIPS: dict[str, tuple[int, str]] = {}


_ZIP_FOLDER: list[str] = []


def _process_zip_folder() -> str:
    """A temporary folder of this process for zip members of archives without a version,
    removed when the process exits."""
    with _LOCK:
        if not _ZIP_FOLDER or not os.path.isdir(_ZIP_FOLDER[0]):
            folder = tempfile.mkdtemp(prefix="ampoffset-zip-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            _ZIP_FOLDER[:] = [folder]
        return _ZIP_FOLDER[0]


def _remote_zip_member(url: str, options: Mapping[str, Any] | None = None) -> str:
    """The local file holding zip member ``url`` (``s3://bucket/x.zip#zip-path=member``)
    of an archive in a store, extracted once per process and version of the archive (its
    `url_stamp`, asked again after `forget`): the archive's central directory and the
    member's bytes are fetched through fsspec, never the whole archive.

    Raises
    ------
    InputError
        When the archive is not there, is no zip archive or has no such member.
    """
    with _LOCK:
        generation = _GENERATION[url]
        known = _REMOTE_ZIPS.get(url)
    if known is not None and known[0] == generation and os.path.exists(known[1]):
        return known[1]
    archive, member = url.split(_ZIP_FRAGMENT, 1)
    where = f"{redact(archive)} (zip member {member!r})"
    if not member:
        raise InputError(f"{where}: no member named after {_ZIP_FRAGMENT}")
    stamp = url_stamp(archive, options)
    if stamp is not None:
        # one folder per member, shared by processes, and in it one per version of the
        # archive: a replaced archive's member is extracted anew, and the versions before
        # it removed (a reader that had one open keeps reading it; one that had only its
        # name finds it gone and extracts the member again)
        folder = Path(tempfile.gettempdir()) / "ampoffset-zip" / hashlib.sha1(
            f"{archive}\0{member}".encode(), usedforsecurity=False).hexdigest()[:16]
        version = hashlib.sha1(repr(stamp).encode(), usedforsecurity=False).hexdigest()[:16]
        target = folder / version / _local_name(url)
        if not target.exists() and folder.is_dir():
            for old in folder.iterdir():
                if old.name != version:
                    shutil.rmtree(old, ignore_errors=True)
    else:
        # its version cannot be told: extracted afresh by each generation into this
        # process's own folder (removed at exit), never one another process left (a
        # container's worker has the same pid every time), the previous one removed
        if known is not None and known[1].startswith(_process_zip_folder()):
            shutil.rmtree(Path(known[1]).parent, ignore_errors=True)
        target = (Path(_process_zip_folder()) / uuid.uuid4().hex[:16] / _local_name(url))
    with _ZIP_LOCK:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fs = filesystem(archive, options)
            try:
                fs.invalidate_cache(archive)
                fh = fs.open(archive, "rb", block_size=1 << 20)
            except Exception as exc:
                raise _error(archive, exc, f"opening the zip archive of member {member!r}"
                             ) from exc
            tmp = target.with_suffix(target.suffix + f".{os.getpid()}.part")
            try:
                with (fh, zipfile.ZipFile(fh) as zf, zf.open(member) as src,
                      open(tmp, "wb") as dst):
                    while chunk := src.read(1 << 20):
                        _count(url, len(chunk))
                        dst.write(chunk)
                os.replace(tmp, target)
            except KeyError as exc:
                raise InputError(f"{where}: no such member in the zip archive") from exc
            except zipfile.BadZipFile as exc:
                raise InputError(f"{where}: not a readable zip archive: {exc}") from exc
            except InputError:
                raise
            except Exception as exc:
                raise _error(archive, exc, f"extracting zip member {member!r}") from exc
            finally:
                tmp.unlink(missing_ok=True)
    with _LOCK:
        _REMOTE_ZIPS[url] = (generation, str(target))
    return str(target)
