"""`CatalogLock` alone: exclusive across threads and processes, stale and young records."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ampoffset_dask.catalog.lock import CatalogBusyError, CatalogLock


def test_acquire_release_and_owner_record(tmp_path):
    lock = CatalogLock(tmp_path)
    with lock:
        assert lock.held
        owner = json.loads((tmp_path / ".lock").read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        assert abs(owner["time"] - time.time()) < 60
        with pytest.raises(CatalogBusyError, match=rf"catalog in use by "
                           rf"{socket.gethostname()}:{os.getpid()} since \d{{4}}-"):
            CatalogLock(tmp_path).acquire()
    assert not lock.held and not (tmp_path / ".lock").exists()
    with CatalogLock(tmp_path) as again:  # free again
        assert again.held


def test_stale_record_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    record = {"host": socket.gethostname(), "pid": int(dead.stdout), "time": 1.0}
    (tmp_path / ".lock").write_text(json.dumps(record))
    with CatalogLock(tmp_path) as lock:
        assert lock.read_owner()["pid"] == os.getpid()


def test_other_host_and_young_empty_records_count_as_alive(tmp_path):
    path = tmp_path / ".lock"
    path.write_text(json.dumps({"host": "elsewhere.example", "pid": 1, "time": 0}))
    with pytest.raises(CatalogBusyError, match=r"in use by elsewhere\.example:1 since 1970"):
        CatalogLock(tmp_path).acquire()
    path.write_text("")  # an empty lock being written right now
    with pytest.raises(CatalogBusyError, match="being written"):
        CatalogLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))  # ... or left empty by a crash an hour ago: stale
    with CatalogLock(tmp_path) as lock:
        assert lock.held
    path.write_bytes(b"\x00garbage")
    os.utime(path, (old, old))
    with CatalogLock(tmp_path) as lock:
        assert lock.held


def test_killed_holder_releases_the_lock(tmp_path):
    code = (f"import os, signal; from ampoffset_dask.catalog.lock import CatalogLock; "
            f"CatalogLock({str(tmp_path)!r}).acquire(); print('held', flush=True); "
            f"os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "held" and proc.returncode == -9
    assert (tmp_path / ".lock").exists()  # the record stays, the flock went with the process
    with CatalogLock(tmp_path) as lock:
        assert lock.held


def test_busy_message_names_a_holder_still_writing_its_record(tmp_path):
    # The holder has created and flocked the file but not yet written its record (the
    # instant two runs start together): the refusal waits for the record and names it.
    import fcntl
    import threading

    path = tmp_path / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    record = {"host": "holder-host", "pid": 4242, "time": time.time()}
    writer = threading.Timer(0.3, lambda: os.pwrite(fd, json.dumps(record).encode(), 0))
    writer.start()
    try:
        with pytest.raises(CatalogBusyError, match=r"catalog in use by holder-host:4242 since"):
            CatalogLock(tmp_path).acquire()
    finally:
        writer.join()
        os.close(fd)


def test_a_record_of_this_host_without_its_flock_is_stale_whatever_its_pid(tmp_path):
    """The pid of a dead holder may be reused by an unrelated live process: the free flock
    says the record is stale, and the lock is taken over."""
    record = {"host": socket.gethostname(), "pid": os.getppid(), "time": 1.0}  # alive
    (tmp_path / ".lock").write_text(json.dumps(record))
    with CatalogLock(tmp_path) as lock:
        assert lock.read_owner()["pid"] == os.getpid()


def test_a_refused_run_leaves_the_winners_lock(tmp_path):
    """A run refused because the catalog it meant to create is busy removes the folder only
    if it is empty, and never the other run's lock (a third run would write beside it)."""
    from ampoffset_dask.pipeline.run import _remove_created

    folder = tmp_path / "cat"
    folder.mkdir()
    with CatalogLock(folder) as winner:
        _remove_created([folder])
        assert (folder / ".lock").exists() and winner.held
        with pytest.raises(CatalogBusyError):
            CatalogLock(folder).acquire()
    assert not folder.exists() or not any(folder.iterdir())
    _remove_created([folder])  # the winner is gone: an empty folder is removed
    assert not folder.exists()
