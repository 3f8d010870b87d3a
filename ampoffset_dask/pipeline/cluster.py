"""Turn a scheduler spec into a dask `~distributed.Client`.

Accepted specs
--------------
``None`` or ``"local"``
    A `~distributed.LocalCluster` sized to the machine: one single-threaded worker process
    per core (fewer if memory is short), each with an explicit memory limit, glibc's
    default malloc tuning (``ampoffset.local.glibc-malloc-defaults``) and dask's monitoring
    at intervals that cost little CPU (``ampoffset.local.light-monitoring``). Closed by
    `ClientHandle.close`. ``"local:N"`` asks for N workers.
``"tcp://host:port"``, ``"tls://host:port"`` (also ``ucx://``, ``ws://``, ``wss://``)
    A running scheduler. TLS settings come from ``security=`` or from dask's configuration
    (``distributed.comm.tls.ca-file``, ``.client.cert``, ``.client.key``).
a path to a scheduler file (JSON written by ``dask scheduler --scheduler-file``)
    A running scheduler found through the file.
a `~distributed.Client`, or a cluster object (``LocalCluster``, ``KubeCluster``...)
    Used as is; never closed by `ClientHandle.close`.
``"gateway"`` or ``"gateway:<https address>"``
    A new cluster from dask-gateway (extra ``ampoffset-dask[gateway]``).
``"slurm"``, ``"pbs"``, ``"sge"``, ``"lsf"``, ``"htcondor"``, ``"moab"``, ``"oar"`` (``":N"``)
    A dask-jobqueue cluster configured by the ``jobqueue.<name>`` dask config (extra
    ``ampoffset-dask[jobqueue]``), scaled to N workers (default ``ampoffset.cluster.workers``)
``"kubernetes"`` or ``"kubernetes:<name>"`` (``":N"`` workers suffix allowed)
    A dask-kubernetes operator cluster (extra ``ampoffset-dask[kubernetes]``), named
    ``ampoffset`` by default. A running cluster of that name is connected to and shared: it
    keeps its size, and N only ever scales it up (a log line says when it was left larger).
    A cluster created here gets N workers, else ``ampoffset.cluster.workers`` (or adapts up
    to ``ampoffset.cluster.adaptive-maximum``), else the replicas of
    ``kubernetes.custom-cluster-spec``, else one worker.

Gateway and jobqueue clusters are always new: N workers, else ``ampoffset.cluster.workers``,
else adaptive up to ``ampoffset.cluster.adaptive-maximum``, else one worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ClusterError, ConfigError
from . import _config

__all__ = ["ClientHandle", "check_spec", "configure_dask_logging", "get_client",
           "local_cluster_size"]

logger = logging.getLogger(__name__)

_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss|inproc)://", re.IGNORECASE)
_JOBQUEUE = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "moab": "MoabCluster",
    "oar": "OARCluster",
}


@dataclasses.dataclass
class ClientHandle:
    """A client and whatever must be closed with it.

    Use as a context manager or call `close`. Unpacks as ``client, close = handle``.

    Attributes
    ----------
    client : distributed.Client
        The connected client.
    cluster : object or None
        The cluster this module started (None when connecting to an existing one).
    owned : bool
        Whether `close` closes the client (and the cluster).
    """

    client: Any
    cluster: Any = None
    owned: bool = True

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard URL, when the scheduler serves one."""
        return _dashboard(self.client)

    def close(self) -> None:
        """Close the client and cluster if this handle started them."""
        if not self.owned:
            return
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self):
        return iter((self.client, self.close))


def _dashboard(client: Any) -> str | None:
    """The client's dashboard link; None when the scheduler serves none."""
    try:
        info = client.scheduler_info()
        if "dashboard" not in info.get("services", {}):
            return None
        return client.dashboard_link
    except Exception:  # pragma: no cover - scheduler gone
        return None


def _parse_bytes(value: Any) -> int:
    from dask.utils import parse_bytes

    return int(parse_bytes(value)) if isinstance(value, str) else int(value)


def local_cluster_size(
    n_workers: int | None = None, memory_limit: str | int | None = None
) -> tuple[int, int]:
    """``(workers, memory limit per worker in bytes)`` for a local cluster on this machine.

    One single-threaded worker per usable core; fewer if ``workers x limit`` would exceed
    90% of the machine's available memory. The limit defaults to
    ``ampoffset.local.memory-limit-per-worker`` (2 GiB).
    """
    import psutil

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    limit = _parse_bytes(memory_limit or _config.get("local.memory-limit-per-worker", "2GiB"))
    available = int(psutil.virtual_memory().available * 0.9)
    if n_workers is None:
        n_workers = max(1, min(cores, available // max(limit, 1)))
        if n_workers * limit > available:
            limit = max(_config.MIN_WORKER_MEMORY, available // n_workers)
    return int(n_workers), int(limit)


#: Dask's polling in the clusters `get_client` starts (``ampoffset.local.light-monitoring``).
#: The defaults (statistical profiler every 10 ms, event-loop tick every 20 ms, memory
#: monitor every 100 ms, system monitor every 500 ms) cost ~15% of a core with two idle
#: workers, and the scheduler and nannies run in the client's process: on a small machine
#: that CPU is taken from the detectors. Slower polling keeps every safeguard (the nanny
#: still kills a worker over its memory limit, a blocked event loop is still reported). The
#: system monitor (psutil reads of CPU, memory, network and disk counters for the dashboard's
#: plots and the heartbeats' metrics) runs in the scheduler, every nanny and every worker:
#: every 10 s it costs 2-3 ms of CPU per second less in the client's process than every 2 s.
LIGHT_MONITORING = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "10s",
    "distributed.worker.memory.monitor-interval": "200ms",
}


#: Seconds between the local cluster object's pushes of its name and type to the scheduler
#: (dask's default 1 s; only cluster discovery shows them), with ``light-monitoring``.
LIGHT_SYNC_INTERVAL = 10


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM for the block: one that arrives meanwhile is handled (by the
    handler in place before, e.g. raising `KeyboardInterrupt`) when the block ends.

    Python runs signal handlers in the main thread whichever thread the signal reached, so
    the handlers are swapped, not the threads' signal masks. Other threads: nothing to do
    (Python raises no `KeyboardInterrupt` there).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for sig in dict.fromkeys(caught):
            handler = previous[sig]
            if callable(handler):
                handler(sig, None)
            elif handler in (signal.SIG_DFL, None):
                signal.raise_signal(sig)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this (main) thread for the block; one that arrives meanwhile is
    delivered when it ends. The threads started meanwhile, the local cluster's among them,
    keep it blocked, and so do the worker processes they spawn: a Ctrl-C at the terminal
    (which signals every process of its group) then never interrupts a worker half-way
    through its start-up, which printed a ``KeyboardInterrupt`` traceback per worker."""
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "pthread_sigmask")):
        yield
        return
    from multiprocessing import resource_tracker

    # Started later, the tracker would unblock SIGINT in the thread that starts it (the
    # standard library blocks it there while it spawns the tracker, then unblocks it).
    resource_tracker.ensure_running()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if signal.SIGINT not in before:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _local(n_workers: int | None, memory_limit: Any, *, profile: bool = False,
           **kwargs: Any) -> ClientHandle:
    import dask.config
    from distributed import Client, LocalCluster

    workers, limit = local_cluster_size(n_workers, memory_limit)
    threads = int(kwargs.pop("threads_per_worker", _config.get("local.threads-per-worker", 1)))
    # Loopback only: ":0" would serve the dashboard (and its /eval-like tooling) on every
    # interface while the printed link says 127.0.0.1.
    kwargs.setdefault("dashboard_address", "127.0.0.1:0")
    kwargs.setdefault("host", "127.0.0.1")
    overrides = {}
    if _config.get("local.glibc-malloc-defaults", True):
        # distributed sets MALLOC_TRIM_THRESHOLD_ in its workers, which also freezes glibc's
        # mmap threshold: every large numpy temporary then costs fresh page faults (~30%
        # more time per detector here). Unset it for the workers we start.
        overrides["distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"] = None
    if _config.get("local.light-monitoring", True):
        overrides.update(LIGHT_MONITORING)
        kwargs.setdefault("scheduler_sync_interval", LIGHT_SYNC_INTERVAL)
        if profile:  # a performance report shows the workers' profile
            overrides["distributed.worker.profile.enabled"] = True
    # Ctrl-C reaches the workers too (one terminal process group); they leave it to us.
    kwargs.setdefault("preload", [*(dask.config.get("distributed.worker.preload", None) or []),
                                  "ampoffset_dask.pipeline._local_worker"])
    cluster = None
    try:
        # Ctrl-C or SIGTERM while the cluster starts is handled once it has started (and
        # is then closed): interrupted half-way, dask's exit hook fails to close it and
        # prints a traceback after the command's one-line message
        with dask.config.set(overrides), signals_held(), _sigint_blocked():
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                memory_limit=limit,
                **kwargs,
            )
    except (OSError, RuntimeError, TimeoutError) as exc:
        raise ClusterError(f"could not start a local Dask cluster: {exc}") from exc
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    client = Client(cluster)
    logger.info(
        "started a local Dask cluster: %d worker process(es) x %d thread(s), %.1f GiB each; "
        "dashboard: %s", workers, threads, limit / 2**30,
        _dashboard(client) or "none (pip install bokeh for the dashboard)",
    )
    return ClientHandle(client, cluster, owned=True)


def _missing_extra(spec: str, package: str, extra: str) -> ClusterError:
    return ClusterError(
        f"scheduler {spec!r} needs the {package} package; install it with "
        f"pip install 'ampoffset-dask[{extra}]'"
    )


def _split_count(rest: str) -> tuple[str, int | None]:
    """``"name:8"`` -> ("name", 8); ``"8"`` -> ("", 8); ``"name"`` -> ("name", None)."""
    head, _, tail = rest.rpartition(":")
    if tail.isdigit():
        return head, int(tail)
    return rest, None


def _workers(spec: str, n: int | None, form: str) -> int | None:
    """``n`` checked: a cluster of no workers would leave the run waiting for ever."""
    if n is not None and n < 1:
        raise ClusterError(f"scheduler {spec!r}: a cluster needs at least one worker; use "
                           f"{form}")
    return n


def check_n_workers(spec: Any, n_workers: int | None) -> None:
    """Refuse ``n_workers`` beside a spec it does not size.

    It sizes a local cluster started here (``spec`` None or ``"local"``): beside another
    spec it was ignored (``local:N`` took N, an address its own workers) while a run
    recorded it as used.

    Raises
    ------
    ConfigError
        Naming both.
    """
    if n_workers is not None and not (
            spec is None or (isinstance(spec, str) and spec.strip().lower() == "local")):
        raise ConfigError(
            f"n_workers={n_workers} sizes a local cluster started here, not {spec!r}: give "
            "the size in the spec (local:N, slurm:N, ...) or drop n_workers")


def check_spec(spec: Any) -> None:
    """Check the form of a scheduler spec without starting or contacting anything (the
    worker count of ``local:N``, ``slurm:N``, ``gateway:N``, ``kubernetes:NAME:N``), so
    that a mistyped spec is reported before a run opens its catalog.

    Raises
    ------
    ClusterError
        For a worker count that is not a positive integer.
    """
    if not isinstance(spec, str):
        return
    text = spec.strip()
    lower = text.lower()
    kind, _, rest = lower.partition(":")
    if kind == "local":
        if rest and not rest.isdigit():
            raise ClusterError(f"scheduler {text!r}: use local or local:N (N workers)")
        _workers(text, int(rest) if rest else None, "local or local:N (N >= 1)")
    elif kind in _JOBQUEUE:
        if rest and not rest.isdigit():
            raise ClusterError(f"scheduler {text!r}: use {kind} or {kind}:N (N workers)")
        _workers(text, int(rest) if rest else None, f"{kind} or {kind}:N (N >= 1)")
    elif kind == "gateway" and "://" not in rest:
        _workers(text, _split_count(rest)[1], "gateway or gateway:N (N >= 1)")
    elif kind in ("kubernetes", "k8s"):
        _workers(text, _split_count(rest)[1], f"{kind}[:NAME][:N] (N >= 1)")


def _scale(cluster: Any, n: int | None, spec: str, *, keep: str | None = None) -> None:
    """Size a cluster started here: ``n`` workers, else ``ampoffset.cluster.workers``, else
    adaptive up to ``ampoffset.cluster.adaptive-maximum``; else the size it started with
    when ``keep`` says what that is, else one worker (with a warning)."""
    n = n if n is not None else _config.get("cluster.workers", None)
    adaptive = _config.get("cluster.adaptive-maximum", None)
    name = type(cluster).__name__
    if n is not None:
        cluster.scale(int(n))
        logger.info("scheduler %r: asked %s for %d worker(s)", spec, name, int(n))
    elif adaptive:
        cluster.adapt(minimum=0, maximum=int(adaptive))
        logger.info("scheduler %r: %s adapts between 0 and %d worker(s)", spec, name,
                    int(adaptive))
    elif keep is not None:
        logger.info("scheduler %r: %s keeps %s", spec, name, keep)
    else:
        cluster.scale(1)
        logger.warning("scheduler %r: no worker count given; asked %s for 1 worker (add "
                       "':N' to the spec or set ampoffset.cluster.workers)", spec, name)


def _scale_shared(cluster: Any, n: int | None, spec: str) -> None:
    """Size a running cluster shared with others (one this run does not delete at its end):
    ``n`` (else ``ampoffset.cluster.workers``) only ever scales it up. Scaling it down, or
    handing it to an adaptive scaler that may go down to 0, would take workers from the
    other users' computations."""
    n = n if n is not None else _config.get("cluster.workers", None)
    current = getattr(cluster, "n_workers", None)  # the running cluster's replicas
    name = getattr(cluster, "name", None) or type(cluster).__name__
    if _config.get("cluster.adaptive-maximum", None):
        logger.warning("scheduler %r: ampoffset.cluster.adaptive-maximum is not applied to "
                       "the running cluster %r (shared: its size is left to its owner)",
                       spec, name)
    if n is None:
        logger.info("scheduler %r: connected to the running cluster %r; kept its %s "
                    "worker(s) (':N' scales it up to N)", spec, name,
                    "current" if current is None else current)
    elif current is None or int(n) > int(current):
        cluster.scale(int(n))
        logger.warning("scheduler %r: scaled the running cluster %r up from %s to %d "
                       "worker(s); it stays at that size after this run", spec, name,
                       "its current size" if current is None else current, int(n))
    elif int(n) < int(current):
        logger.warning("scheduler %r: left the running cluster %r at its %d worker(s), more "
                       "than the %d asked for (a running cluster is never scaled down)",
                       spec, name, int(current), int(n))


def _connect(cluster: Any, spec: str) -> ClientHandle:
    from distributed import Client

    client = Client(cluster)
    # Neutral: the cluster may be a running one connected to (see _scale_shared).
    logger.info("client of %s for %r; dashboard: %s", type(cluster).__name__, spec,
                _dashboard(client))
    return ClientHandle(client, cluster, owned=True)


def _gateway(spec: str) -> ClientHandle:
    try:
        from dask_gateway import Gateway
    except ImportError:
        raise _missing_extra(spec, "dask-gateway", "gateway") from None
    rest = spec.split(":", 1)[1] if ":" in spec else ""
    address, n = (rest, None) if "://" in rest else _split_count(rest)
    if not address.strip("/"):  # "gateway://": no address given, the configured one
        address = ""
    try:
        gateway = Gateway(address or None)
        cluster = gateway.new_cluster()
    except (ValueError, OSError) as exc:
        raise ClusterError(
            f"scheduler {spec!r}: cannot start a dask-gateway cluster ({exc}); give the address "
            "as 'gateway:https://HOST/...' or set gateway.address in the dask config"
        ) from exc
    _scale(cluster, n, spec)
    return _connect(cluster, spec)


def _jobqueue(spec: str, kind: str, n: int | None) -> ClientHandle:
    try:
        import dask_jobqueue
    except ImportError:
        raise _missing_extra(spec, "dask-jobqueue", "jobqueue") from None
    try:
        cluster = getattr(dask_jobqueue, _JOBQUEUE[kind])()
    except (ValueError, TypeError) as exc:
        raise ClusterError(
            f"scheduler {spec!r}: dask-jobqueue cannot build a {_JOBQUEUE[kind]} from the dask "
            f"config ({exc}); set at least jobqueue.{kind}.cores and jobqueue.{kind}.memory "
            "(see deploy/ and the dask-jobqueue documentation)"
        ) from exc
    _scale(cluster, n, spec)
    return _connect(cluster, spec)


def _kubernetes(spec: str) -> ClientHandle:
    """A dask-kubernetes operator cluster: created, or connected to when it already runs.

    dask-kubernetes deletes at `close` a cluster it created, not one it connected to
    (``shutdown_on_close``, unless the ``kubernetes.shutdown-on-close`` config says
    otherwise): a cluster that outlives this run is shared, and is only ever scaled up
    (`_scale_shared`). One created here from ``kubernetes.custom-cluster-spec`` keeps the
    spec's replicas unless a worker count is given.
    """
    import dask.config

    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError:
        raise _missing_extra(spec, "dask-kubernetes", "kubernetes") from None
    rest = spec.split(":", 1)[1] if ":" in spec else ""
    name, n = _split_count(rest)
    try:
        cluster = KubeCluster(name=name or "ampoffset")
    except Exception as exc:  # kubernetes client errors have no common base class
        raise ClusterError(
            f"scheduler {spec!r}: cannot start a Kubernetes Dask cluster ({exc}); check the "
            "kubeconfig and that the dask-kubernetes operator is installed (see deploy/)"
        ) from exc
    # Not known (a cluster object that does not say): shared, never scaled down.
    if getattr(cluster, "shutdown_on_close", None) is not True:
        _scale_shared(cluster, n, spec)
        return _connect(cluster, spec)
    custom = dask.config.get("kubernetes.custom-cluster-spec", None) is not None
    _scale(cluster, n, spec,
           keep="the replicas of kubernetes.custom-cluster-spec" if custom else None)
    return _connect(cluster, spec)


def _address(spec: str, security: Any) -> ClientHandle:
    from distributed import Client
    from distributed.security import Security

    if spec.lower().startswith(("tls://", "wss://")):
        security = security if security is not None else Security()
        if not getattr(security, "tls_client_cert", None) and not getattr(
                security, "tls_ca_file", None):
            raise ClusterError(
                f"scheduler {spec!r} uses TLS but no certificates are configured; set "
                "distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and "
                "distributed.comm.tls.client.key in the dask config (or the "
                "DASK_DISTRIBUTED__COMM__TLS__CA_FILE ... environment variables), or pass "
                "security=distributed.security.Security(...)"
            )
    try:
        client = Client(spec, security=security, timeout=_config.get("connect-timeout", "30s"))
    except OSError as exc:
        raise ClusterError(f"cannot connect to the Dask scheduler at {spec}: {exc}") from exc
    logger.info("connected to the Dask scheduler at %s; dashboard: %s", spec,
                _dashboard(client))
    return ClientHandle(client, None, owned=True)


def _scheduler_file(path: Path, security: Any) -> ClientHandle:
    from distributed import Client

    try:
        client = Client(scheduler_file=str(path), security=security,
                        timeout=_config.get("connect-timeout", "30s"))
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot connect to the Dask scheduler of {path}: {exc}") from exc
    logger.info("connected to the Dask scheduler of %s (%s); dashboard: %s", path,
                client.scheduler.address, _dashboard(client))
    return ClientHandle(client, None, owned=True)


def get_client(
    spec: Any = None,
    *,
    n_workers: int | None = None,
    memory_limit: str | int | None = None,
    security: Any = None,
    profile: bool = False,
    **cluster_kwargs: Any,
) -> ClientHandle:
    """Connect to (or start) the Dask cluster that ``spec`` describes.

    Parameters
    ----------
    spec : None, str, path, Client or cluster
        See the module docstring for the accepted forms.
    n_workers : int, optional
        Worker processes of a local cluster started here (``spec`` None or ``"local"``;
        default: one per core, memory permitting); refused with another spec.
    memory_limit : str or int, optional
        Per-worker memory limit of a local cluster (``"2GiB"``).
    security : distributed.security.Security, optional
        TLS settings for ``tls://`` addresses and scheduler files (default: dask config).
    profile : bool
        Keep dask's statistical profiler on in the workers of a local cluster (for a
        performance report) when ``ampoffset.local.light-monitoring`` turns it off.
    **cluster_kwargs
        Passed to `~distributed.LocalCluster`.

    Returns
    -------
    ClientHandle
        ``with get_client(spec) as client: ...`` closes what was started; so does
        ``handle.close()``. ``client, close = get_client(spec)`` also works.

    Raises
    ------
    ClusterError
        For an unknown spec, an unreachable scheduler, TLS without certificates or a
        missing optional extra (the message names the pip extra).
    """
    _config.load_defaults()
    from distributed import Client

    if isinstance(spec, ClientHandle):
        return ClientHandle(spec.client, None, owned=False)
    check_n_workers(spec, n_workers)
    if isinstance(spec, Client):
        return ClientHandle(spec, None, owned=False)
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        if hasattr(spec, "scheduler_address"):  # a cluster object
            return ClientHandle(Client(spec), None, owned=True)
        raise ClusterError(f"cannot make a Dask client from {type(spec).__name__} {spec!r}")
    _workers("local", n_workers, "n_workers >= 1")
    if spec is None:
        return _local(n_workers, memory_limit, profile=profile, **cluster_kwargs)
    text = os.fspath(spec).strip()
    lower = text.lower()
    check_spec(text)
    if lower == "local" or lower.startswith("local:"):
        _, n = _split_count(text.split(":", 1)[1] if ":" in text else "")
        return _local(n if n is not None else n_workers, memory_limit, profile=profile,
                      **cluster_kwargs)
    if _ADDRESS.match(text):
        return _address(text, security)
    if lower == "gateway" or lower.startswith("gateway:"):
        return _gateway(text)
    kind, _, count = lower.partition(":")
    if kind in _JOBQUEUE:
        return _jobqueue(text, kind, int(count) if count else None)
    if kind in ("kubernetes", "k8s"):
        return _kubernetes(text)
    path = Path(text).expanduser()
    if path.is_file():
        return _scheduler_file(path, security)
    if re.match(r"^[\w.-]+:\d+$", text):  # host:port without a protocol
        return _address(f"tcp://{text}", security)
    raise ClusterError(
        f"scheduler {text!r} is neither 'local', a tcp:// or tls:// address, an existing "
        "scheduler file, 'gateway[:ADDRESS]', a jobqueue name (" + ", ".join(_JOBQUEUE)
        + ") nor 'kubernetes[:NAME]'"
    )


def cluster_threads(client: Any) -> int:
    """Total worker threads the scheduler knows of right now (0 when none)."""
    try:
        return int(sum(client.nthreads().values()))
    except Exception:  # pragma: no cover - scheduler gone
        return 0


def default_in_flight(client: Any) -> int:
    """``ampoffset.in-flight-per-thread`` x the cluster's threads (at least 8)."""
    per = int(_config.get("in-flight-per-thread", 4))
    return max(8, per * cluster_threads(client), math.ceil(per * 2))


def configure_dask_logging() -> None:
    """Import distributed, which sets up its loggers (levels and handlers of their own,
    ``distributed.client`` among them) when first imported: a caller that quietens them
    must do so afterwards."""
    import distributed  # noqa: F401
