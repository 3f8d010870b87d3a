"""Calls run at the same instant in processes forked from one script that has done its
imports once (one import instead of one per process; no threads run yet when it forks).

A test writes a script that imports what the calls need, then `run_forked`; it runs the
script with `script_env` (this folder importable) in a temporary working directory.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)


def script_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with this folder first on ``PYTHONPATH``."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH")) if p)
    return env


def run_forked(calls: dict[str, Callable[[], int]], *, ready: bool = False) -> None:
    """Run each call in its own forked process, with its stdout and stderr in ``NAME.out``
    and ``NAME.err`` of the working directory; its exit code is what it returns (a
    ``SystemExit``'s code; 1 and the traceback in ``NAME.err`` for any other exception).
    With ``ready``, print ``ready`` once every process is forked; then print, as JSON,
    ``{name: [pid, exit code]}`` when all have ended."""
    children = {}
    for name, call in calls.items():
        pid = os.fork()
        if pid == 0:
            code = 1
            with open(f"{name}.out", "w") as out, open(f"{name}.err", "w") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                try:
                    code = call()
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 2
                except BaseException:
                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
            os._exit(code)
        children[name] = pid
    if ready:
        print("ready", flush=True)
    print(json.dumps({name: [pid, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])]
                      for name, pid in children.items()}), flush=True)
