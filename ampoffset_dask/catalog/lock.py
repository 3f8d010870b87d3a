"""The catalog lock: one writer per catalog, across threads, processes and hosts.

Acquisition takes an exclusive `fcntl.flock` on ``CATALOG/.lock`` (the kernel releases it
when the holder dies, so a crashed writer never blocks the next one on the same host) and,
while holding it, writes the owner record ``{"host", "pid", "time"}`` into the file. The
record serves two purposes: the "catalog in use by <host>:<pid> since <time>" message, and a
cross-host check for shared file systems whose locks do not reach other hosts - a record of
another host is treated as alive (only the user can tell it is not). A record of this host
under a flock just taken is stale whatever its pid: the kernel drops a dead holder's flock,
and its pid may since belong to an unrelated process.

Everything that decides is done while holding the flock, so two acquirers can never both
win: there is no window in which a half-written lock can be mistaken for a stale one, and
taking over a stale record (a dead process of this host) is just overwriting it under the
flock. Release removes the file while still holding the flock; an acquirer that locked the
removed file notices (its inode is no longer the path's) and tries again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["CatalogBusyError", "CatalogLock", "owner_alive"]

logger = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: owner records only
    fcntl = None


#: An empty or unreadable lock file younger than this is someone's lock being written.
YOUNG_SECONDS = 30.0


class CatalogBusyError(ConfigError):
    """Another live process is writing the catalog (the message names it)."""


#: `CatalogLock._flock` results (both true): a kernel file lock, or none to be had.
_FLOCKED = "flocked"
_UNLOCKED = "unlocked"


def _this_host(owner: dict[str, Any]) -> bool:
    return owner.get("host") == socket.gethostname()


def owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the owner record names a process that may still be running.

    Another host's process is assumed alive (it cannot be checked from here).
    """
    pid = owner.get("pid")
    if not pid:
        return False
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def _describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "another process (its owner record is being written)"
    when = owner.get("time")
    try:
        since = _dt.datetime.fromtimestamp(float(when), _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        since = "an unknown time"
    return f"{owner.get('host', '?')}:{owner.get('pid', '?')} since {since}"


class CatalogLock:
    """Exclusive write access to one catalog directory.

    Parameters
    ----------
    folder : path-like
        The catalog directory (must exist).

    Examples
    --------
    >>> with CatalogLock(tmp) as lock:
    ...     lock.held
    True
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def read_owner(self) -> dict[str, Any] | None:
        """The owner record in the lock file (None when absent, empty or unreadable)."""
        try:
            data = json.loads(self.path.read_bytes() or b"null")
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _busy(self, owner: dict[str, Any] | None) -> CatalogBusyError:
        if owner and self._mine(owner):
            return CatalogBusyError(
                f"{self.folder}: catalog in use by {_describe(owner)}, this very process: a "
                "run from prepare() or a CatalogWriter still open; close it, or use it in a "
                "'with' block, which closes it")
        return CatalogBusyError(
            f"{self.folder}: catalog in use by {_describe(owner)}; wait for that run to end, "
            f"or remove {self.path} if that process is gone"
        )

    def acquire(self) -> None:
        """Take the lock or raise `CatalogBusyError` at once (never waits)."""
        if self._fd is not None:
            return
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                created = True
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDWR)
                except FileNotFoundError:  # released meanwhile
                    continue
                created = False
            try:
                # A file we just created can be flocked for a moment by an acquirer that
                # opened it, found it empty and young, and is backing off: wait for it.
                tries = 40 if created else 1
                while not (locked := self._flock(fd)):
                    tries -= 1
                    if tries <= 0:
                        raise self._busy(self._holder_record())
                    time.sleep(0.01)
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # released (removed) between our open and our flock
                    os.close(fd)
                    continue
                owner = self._read_fd(fd)
                # With a real flock held, a record of this host is stale whatever its pid
                # says (the kernel drops a dead holder's flock; its pid may since have been
                # given to an unrelated process). Other hosts' locks may not reach here.
                if (owner and owner_alive(owner) and not self._mine(owner)
                        and not (locked is _FLOCKED and _this_host(owner))):
                    raise self._busy(owner)
                if owner is None and not created and self._young(fd):
                    # Empty or unreadable, and recent: a writer (perhaps of a version
                    # without flock) is between creating the file and filling it.
                    raise self._busy(None)
                if owner:
                    logger.info("taking over the stale catalog lock %s (%s)", self.path,
                                _describe(owner))
                me = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(me).encode(), 0)
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            self._fd = fd
            return
        raise self._busy(self.read_owner())  # pragma: no cover - endless churn

    def _holder_record(self, wait: float = 2.0) -> dict[str, Any] | None:
        """The owner record of a flock holder, waiting up to ``wait`` seconds for it: a
        holder that has just created the file writes its record right after its flock, and
        the busy message should name it rather than say the record is being written."""
        deadline = time.monotonic() + wait
        while (owner := self.read_owner()) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return owner

    def _mine(self, owner: dict[str, Any]) -> bool:
        # A record of this very process whose flock is gone: a writer of ours that was
        # dropped without closing. We hold the flock now, so it is stale.
        return owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid()

    @staticmethod
    def _flock(fd: int) -> Any:
        """`_FLOCKED` when the flock is taken, `_UNLOCKED` on a file system without file
        locks (owner records only), False when another process holds it."""
        if fcntl is None:  # pragma: no cover
            return _UNLOCKED
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:  # file systems without flock: owner records only
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            logger.warning("%s: no file locks on this file system (%s); relying on the "
                           "owner record only", exc.filename or "catalog", exc)
            return _UNLOCKED
        return _FLOCKED

    @staticmethod
    def _young(fd: int) -> bool:
        st = os.fstat(fd)
        return time.time() - st.st_mtime < YOUNG_SECONDS

    @staticmethod
    def _read_fd(fd: int) -> dict[str, Any] | None:
        size = os.fstat(fd).st_size
        raw = os.pread(fd, max(size, 0), 0) if size else b""
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def intact(self) -> bool:
        """Whether the file this object holds is still the catalog's ``.lock``: False once
        the folder or the file was removed, moved or replaced (by hand, or by another
        writer that then took a lock of its own)."""
        if self._fd is None:
            return False
        try:
            there = os.stat(self.path)
        except OSError:
            return False
        held = os.fstat(self._fd)
        return (there.st_ino, there.st_dev) == (held.st_ino, held.st_dev)

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held). A lock file that
        is no longer the one held (`intact`) is another writer's: it is left alone."""
        if self._fd is None:
            return
        try:
            if self.intact():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> CatalogLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # the kernel drops the flock with the descriptor anyway
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
