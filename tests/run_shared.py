"""Data and processes shared by the test processes of one pytest run (``-n``)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def flocked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_root(tmp_path_factory) -> Path:
    """The folder of this pytest run: the parent of the basetemp of every ``-n`` process."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def once_per_run(tmp_path_factory, name: str, make):
    """``make(folder)`` run once per pytest run, by the first test process that asks for
    ``name``; every process gets the value it returned (pickled), and the files it wrote in
    ``folder``, which are shared: read them, do not change them.

    For session fixtures whose data every ``-n`` process would otherwise make again (a few
    CPU seconds each). The others wait while it is made: on 2 cores the 4 processes are
    CPU-bound, so making it once is what saves time.
    """
    root = run_root(tmp_path_factory)
    folder, value = root / f"once-{name}", root / f"once-{name}.pickle"
    with flocked(root / f"once-{name}.lock"):
        if not value.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a process that failed making it
            folder.mkdir()
            made = pickle.dumps(make(folder))
            value.with_suffix(".tmp").write_bytes(made)
            os.replace(value.with_suffix(".tmp"), value)
        return pickle.loads(value.read_bytes())


@contextlib.contextmanager
def run_wide(tmp_path_factory, name: str,
             start: Callable[[Path], tuple[object, list[int]]]) -> Iterator[object]:
    """Processes shared by the test processes of one pytest run (servers, a cluster).

    The first test process to enter runs ``start(folder)``, which starts them and returns
    ``(value, pids)`` (``value`` JSON-able, e.g. an address); every process entering gets
    ``value`` and registers itself as a user; the last user to leave stops ``pids``
    (`stop_processes`). For session fixtures: each ``-n`` process would otherwise start its
    own (a second or more of CPU each).
    """
    root = run_root(tmp_path_factory) / name
    users = root / "users"
    users.mkdir(parents=True, exist_ok=True)
    state, lock, me = root / "state.json", root / "lock", users / str(os.getpid())
    with flocked(lock):
        if not state.exists():
            value, pids = start(root / "processes")
            state.write_text(json.dumps({"value": value, "pids": pids}))
        me.touch()
        value = json.loads(state.read_text())["value"]
    try:
        yield value
    finally:
        with flocked(lock):
            me.unlink()
            if not any(users.iterdir()):
                stop_processes(json.loads(state.read_text())["pids"])
                state.unlink()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def stop_processes(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM the processes (last first), SIGKILL any still running after ``timeout``;
    works from any process, not only their parent."""
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    t0 = time.monotonic()
    while any(_running(p) for p in pids) and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    for pid in pids:
        if _running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
