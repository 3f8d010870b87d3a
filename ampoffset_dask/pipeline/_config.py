"""Package defaults in dask's configuration system, under the ``ampoffset`` key.

The defaults live in ``ampoffset_dask/ampoffset.yaml``; users override them the usual dask
ways (``~/.config/dask/*.yaml``, ``DASK_AMPOFFSET__IN_FLIGHT_PER_THREAD=8``,
``dask.config.set({"ampoffset.io-retries": 5})``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import dask.config
import yaml

__all__ = ["apply_kernels", "check_kernels", "get", "load_defaults"]

_DEFAULTS = Path(__file__).resolve().parents[1] / "ampoffset.yaml"
_loaded = False


def load_defaults() -> None:
    """Register ``ampoffset.yaml`` as dask config defaults (idempotent)."""
    global _loaded
    if _loaded:
        return
    with open(_DEFAULTS) as f:
        defaults = yaml.safe_load(f) or {}
    dask.config.update_defaults(defaults)
    # The I/O layer imports no dask: hand it the lookups of its limits.
    from ..io.remote import set_config_source
    from ..io.sections import set_decompression_limit_source

    set_decompression_limit_source(lambda: get("max-decompressed-bytes"))
    set_config_source(get)
    _loaded = True


def get(key: str, default: Any = None) -> Any:
    """``dask.config.get("ampoffset." + key)`` after loading the defaults."""
    load_defaults()
    return dask.config.get(f"ampoffset.{key}", default)


def apply_kernels() -> str:
    """Hand ``ampoffset.kernels`` to the algorithm layer in this (worker) process.

    ``auto`` leaves the choice as this process has it (`~ampoffset_dask.algorithm.kernels.
    set_kernels` or ``use_kernels`` in a notebook whose graphs run in its threads, else
    ``$AMPOFFSET_KERNELS``, else numba when installed); ``numpy`` or ``numba`` selects it.
    Returns the implementation in use.

    Raises
    ------
    ConfigError
        For an unknown value, or ``numba`` without numba installed, naming this process
        (a worker's environment may differ from the client's, which `check_kernels` read).
    """
    from ..algorithm import kernels
    from ..errors import ConfigError

    choice = get("kernels", "auto")
    try:
        if choice is not None and str(choice).strip().lower() != "auto":
            kernels.set_kernels(choice)
        return kernels.backend_name()
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"the kernels setting of process {os.getpid()} on "
                          f"{socket.gethostname()} (its $AMPOFFSET_KERNELS or "
                          f"ampoffset.kernels; a worker's environment may differ from the "
                          f"client's): {exc}") from None


def check_kernels() -> None:
    """Refuse an unknown ``ampoffset.kernels`` setting or ``$AMPOFFSET_KERNELS`` before a run
    starts (each worker would otherwise fail every detector with it).

    Whether numba is installed is the workers' affair: it is not checked here.

    Raises
    ------
    ConfigError
        Naming the setting and the choices.
    """
    from ..algorithm import kernels
    from ..errors import ConfigError

    choice = get("kernels", "auto")
    if choice is not None and str(choice).strip().lower() not in kernels.CHOICES:
        raise ConfigError(f"ampoffset.kernels={choice!r} (dask config, or "
                          f"$DASK_AMPOFFSET__KERNELS) must be one of "
                          f"{', '.join(kernels.CHOICES)}")
    try:
        kernels.requested()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


#: The numeric settings a run reads, each with its kind and smallest value: checked up front
#: (`check_settings`), since a worker or the run's tail would otherwise fail on them as an
#: internal error after the catalog was opened.
#: Smallest memory limit of a local cluster's worker.
MIN_WORKER_MEMORY = 256 * 2**20

_NUMBERS: dict[str, tuple[str, float]] = {
    "in-flight-per-thread": ("int", 1),
    "io-retries": ("int", 0),
    "io-retry-delay": ("float", 0.0),
    "catalog.flush-interval": ("float", 0.0),
    "local.threads-per-worker": ("int", 1),
    # a byte size: the local cluster sizes its workers by it (no "auto", fraction or none);
    # below the floor local_cluster_size keeps, a nanny restarts its worker without end
    "local.memory-limit-per-worker": ("bytes", MIN_WORKER_MEMORY),
    "max-decompressed-bytes": ("bytes", 1),
    "remote.merge-gap": ("bytes", 0),
    "remote.max-request": ("bytes", 1),
    "connect-timeout": ("seconds", 0.0),
    "worker-watch-interval": ("seconds", 0.05),  # a thread polls at this pace
}

#: Of `_NUMBERS`, the settings that may not be left unset (null): their code has no fallback.
_REQUIRED = frozenset({"local.memory-limit-per-worker"})


def check_settings() -> None:
    """Refuse an invalid ``ampoffset.*`` setting (dask config, ``$DASK_AMPOFFSET__...``) before
    a run starts: the kernels (`check_kernels`) and the numeric settings.

    Raises
    ------
    ConfigError
        Naming the setting, its value and what it must be.
    """
    from dask.utils import format_bytes, parse_bytes, parse_timedelta

    from ..errors import ConfigError

    check_kernels()
    for key, (kind, least) in _NUMBERS.items():
        value = get(key, None)
        if value is None and key not in _REQUIRED:
            continue
        try:
            if isinstance(value, bool) or value is None:
                raise ValueError("a bool" if value is not None else "unset")
            if kind == "int":
                number: float = int(str(value).strip()) if isinstance(value, str) else value
                if not isinstance(number, int):
                    raise ValueError("not an integer")
            elif kind == "float":
                number = float(value)
            elif kind == "bytes":
                number = parse_bytes(value)
            else:
                number = parse_timedelta(value, default="seconds")
            ok = number >= least and number == number and number != float("inf")
        except (TypeError, ValueError, KeyError) as exc:  # dask: an unknown unit is KeyError
            ok, why = False, str(exc).strip("'\"")
        else:
            why = ""
        if not ok:
            env = "DASK_AMPOFFSET__" + key.upper().replace(".", "__").replace("-", "_")
            what = {"int": "an integer", "float": "a number", "bytes": "a size such as 2MiB",
                    "seconds": "a duration such as 30s"}[kind]
            floor = format_bytes(least) if kind == "bytes" and least > 1 else least
            raise ConfigError(f"ampoffset.{key}={value!r} (dask config, or ${env}) must be "
                              f"{what} >= {floor}" + (f" ({why})" if why else ""))
