"""Data and processes shared by the test processes of one pytest run (``-n``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import shutil
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
