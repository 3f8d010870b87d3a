"""Finding input files: the FITS file-name suffixes and the one folder walker.

`open_visit` and `process` both find their inputs here, so a folder means the same files to
both. The walker reports, instead of silently skipping, every FITS-named entry that is not a
readable regular file (a dangling symlink, a symlink loop, a directory named ``x.fits``, a
FIFO), and it skips folders that hold corrected images written by this package (marked by
`OUTPUT_MARKER`), so a run never picks up the outputs of an earlier run as inputs.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "FITS_SUFFIXES",
    "OUTPUT_MARKER",
    "OUTPUT_MARKER_TEXT",
    "FoundPath",
    "entry_problem",
    "file_name",
    "fits_stem",
    "is_fits_name",
    "mark_output_folder",
    "on_network_filesystem",
    "walk_fits",
]

#: File-name endings of FITS files (lower case; compressed forms included).
FITS_SUFFIXES: tuple[str, ...] = (
    ".fits", ".fit", ".fts",
    ".fits.gz", ".fit.gz", ".fts.gz",
    ".fits.bz2", ".fit.bz2",
    ".fits.fz", ".fit.fz", ".fz",
)

#: Name of the empty file that marks a folder of corrected images written by this package.
OUTPUT_MARKER = ".ampoffset-outputs"
#: What the marker file says.
OUTPUT_MARKER_TEXT = "corrected images written by ampoffset-dask; never read as inputs\n"

NOT_REGULAR = "not a regular file"


@dataclasses.dataclass(frozen=True)
class FoundPath:
    """One FITS-named entry found by `walk_fits`.

    Attributes
    ----------
    path : str
        The path as found (symlinks not resolved).
    problem : str
        Empty for a readable regular file (or a symlink to one); otherwise why it cannot be
        an input (``"not a regular file (dangling symlink)"``...).
    """

    path: str
    problem: str = ""


def is_fits_name(name: str | os.PathLike) -> bool:
    """True when the file name ends with one of `FITS_SUFFIXES` (case-insensitive)."""
    return os.fspath(name).lower().endswith(FITS_SUFFIXES)


def file_name(path: str) -> str:
    """The last component of a path or URL, without a URL's query string (a signed URL's
    credentials)."""
    return str(path).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def fits_stem(name: str) -> tuple[str, str]:
    """Split a FITS file name into ``(stem, suffix)`` with the longest matching suffix.

    ``"a.fits.gz"`` -> ``("a", ".fits.gz")``; a name without a FITS suffix -> ``(stem, "")``
    where the stem drops nothing.
    """
    lower = name.lower()
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: len(name) - len(suffix)], name[len(name) - len(suffix):]
    return name, ""


def mark_output_folder(folder: str | os.PathLike) -> None:
    """Create ``folder`` (and parents) and mark it as holding corrected images.

    `walk_fits` never descends into a marked folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / OUTPUT_MARKER
    if not marker.exists():
        marker.write_text(OUTPUT_MARKER_TEXT)


def entry_problem(path: str | os.PathLike) -> str:
    """Empty if ``path`` is a regular file (following symlinks), else why it is not."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"{NOT_REGULAR} (dangling symlink)"
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{NOT_REGULAR} (symlink loop)"
        return f"{NOT_REGULAR} ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return ""
    if stat.S_ISDIR(st.st_mode):
        return f"{NOT_REGULAR} (a directory)"
    return f"{NOT_REGULAR} (a {_kind(st.st_mode)})"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def walk_fits(
    folder: str | os.PathLike,
    *,
    recursive: bool = True,
    exclude: Iterable[str | os.PathLike] = (),
) -> list[FoundPath]:
    """Every FITS-named entry under ``folder``, sorted by path.

    Parameters
    ----------
    folder : path-like
    recursive : bool
        Descend into sub-folders (symlinked folders too, each real folder once).
    exclude : iterable of path-like
        Folders not to enter (e.g. the output folders of the current run). Sub-folders
        that contain `OUTPUT_MARKER` are not entered (``folder`` itself always is: a user
        may ask for a folder of corrected images by name).

    Returns
    -------
    list of FoundPath
        Regular files (and symlinks to them) with an empty ``problem``; FITS-named entries
        that are not regular files with the reason.
    """
    root = Path(folder)
    skip = {os.path.realpath(p) for p in exclude}
    seen: set[str] = set()
    found: list[FoundPath] = []
    stack = [root]
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if real in seen or real in skip or (current != root and
                                             os.path.exists(os.path.join(current,
                                                                         OUTPUT_MARKER))):
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            fits_named = is_fits_name(entry.name)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir and recursive:
                stack.append(Path(entry.path))
            if not fits_named:
                continue
            found.append(FoundPath(entry.path, entry_problem(entry.path)))
    return sorted(found, key=lambda f: f.path)


#: File system types whose reads wait on a network (and FUSE ones: ``fuse.s3fs``...).
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
    "panfs", "afs", "9p", "wekafs", "cvmfs", "fuse", "fuseblk",
})


def _mounts(mountinfo: str) -> list[tuple[str, str]]:
    """``(mount point, file system type)`` of each line of ``/proc/self/mountinfo`` text,
    longest mount point first."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        out.append((point, right.split()[0]))
    return sorted(out, key=lambda m: len(m[0]), reverse=True)


def on_network_filesystem(paths: Iterable[str | os.PathLike],
                          mountinfo: str | None = None) -> list[bool | None]:
    """For each path, whether its file system is a network (or FUSE) one; None where that is
    unknown (not Linux, no mount found).

    Parameters
    ----------
    paths : iterable of path-like
    mountinfo : str, optional
        The text of ``/proc/self/mountinfo`` (read when omitted).
    """
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return [None for _ in paths]
    mounts = _mounts(mountinfo)
    out: list[bool | None] = []
    for path in paths:
        real = os.path.realpath(path)
        kind = next((fs for point, fs in mounts
                     if real == point or real.startswith(point.rstrip("/") + "/")), None)
        out.append(None if kind is None
                   else kind in NETWORK_FILESYSTEMS or kind.startswith("fuse."))
    return out


def shortened(name: str, max_bytes: int, sep: str = "-") -> str:
    """``name``, or when longer than ``max_bytes`` bytes (UTF-8; a file name holds 255),
    its start, ``sep`` and a digest of the whole, ``max_bytes`` long at most: the same on
    every call, and two long names differing only at their end stay two names."""
    raw = name.encode("utf-8", "surrogateescape")  # (undecodable bytes of a file name)
    if len(raw) <= max_bytes:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:16]
    head = raw[:max_bytes - len(digest) - len(sep)].decode("utf-8", "ignore")
    return f"{head}{sep}{digest}"
