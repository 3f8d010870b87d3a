"""Run the ``ampoffset-dask`` command in this process (fast) or through its installed entry
point in a subprocess (where the process itself is tested: signals, working directory,
concurrent runs, exit on a lost scheduler)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from ampoffset_dask.cli import main


def entry_point() -> str:
    """The installed ``ampoffset-dask`` console script of this interpreter."""
    exe = shutil.which("ampoffset-dask", path=str(Path(sys.executable).parent))
    exe = exe or shutil.which("ampoffset-dask")
    assert exe, "the ampoffset-dask console script is not installed"
    return exe


def cli(*args) -> subprocess.CompletedProcess:
    """``ampoffset-dask ARGS`` run in this process by `main`, stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None) * 2
    return subprocess.CompletedProcess(["ampoffset-dask", *args], code, out.getvalue(),
                                       err.getvalue())


def cli_subprocess(*args, env: dict | None = None, cwd=None,
                   timeout: float = 300) -> subprocess.CompletedProcess:
    """``ampoffset-dask ARGS`` through the installed console script, this interpreter's bin
    folder first on ``PATH``."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run([entry_point(), *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout, check=False)
