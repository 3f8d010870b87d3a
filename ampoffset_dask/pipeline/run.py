"""`process`: measure (and optionally correct) many detectors on a Dask cluster.

One task per (visit, detector), key ``ampoffset-<visit>-<detector>``, submitted with a bounded
number in flight and gathered with `distributed.as_completed`, so the client's memory and the
scheduler's graph stay small whatever the number of inputs. Results stream into the catalog
(`ampoffset_dask.catalog.CatalogWriter`) as they arrive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..catalog import CatalogWriter, DetectorResult
from ..config import AmpOffsetConfig
from ..errors import ConfigError, InputError
from . import _config
from .cluster import ClientHandle, default_in_flight, get_client
from .detector_job import process_file
from .inputs import PlannedTask, discover_inputs, plan_tasks
from .options import RunOptions

__all__ = ["PreparedRun", "RunOptions", "RunSummary", "SubmitItem", "execute", "prepare",
           "process", "stream_tasks"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RunSummary:
    """What a `process` call did.

    Attributes
    ----------
    run_id : str
        The run's id in the catalog's ``runs`` table.
    catalog : Path
        The catalog directory.
    n_inputs : int
        Input files found.
    n_submitted : int
        Tasks sent to the cluster.
    n_skipped : int
        (visit, detector) pairs already in the catalog (resume).
    n_ok, n_flagged, n_failed : int
        Outcomes of this run (planning failures count as failed).
    failed : list of (visit, detector, error)
        Each failed input; ``visit`` is -1 and ``detector`` the file when unknown.
    seconds : float
        Wall time of the call.
    dashboard_link : str or None
        The cluster's dashboard.
    """

    run_id: str
    catalog: Path
    n_inputs: int = 0
    n_submitted: int = 0
    n_skipped: int = 0
    n_ok: int = 0
    n_flagged: int = 0
    n_failed: int = 0
    failed: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    dashboard_link: str | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No detector failed."""
        return self.n_failed == 0

    def counts(self) -> dict[str, int]:
        """The counters, as recorded in the ``runs`` table."""
        return {k: getattr(self, k) for k in ("n_inputs", "n_submitted", "n_skipped", "n_ok",
                                              "n_flagged", "n_failed")}

    def __str__(self) -> str:
        text = (f"run {self.run_id}: {self.n_ok} ok, {self.n_flagged} flagged, "
                f"{self.n_failed} failed, {self.n_skipped} already done, in "
                f"{self.seconds:.1f} s -> {self.catalog}")
        for visit, det, err in self.failed:
            text += f"\n  FAILED visit {visit} {det}: {err}"
        return text


@dataclasses.dataclass
class SubmitItem:
    """One task for `stream_tasks`: a key, positional and keyword arguments, a tag."""

    key: str
    args: tuple = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    tag: Any = None


def stream_tasks(
    client: Any,
    fn: Callable[..., Any],
    items: Iterable[SubmitItem],
    *,
    max_in_flight: int,
    on_error: Callable[[SubmitItem, BaseException], Any] | None = None,
) -> Iterator[tuple[SubmitItem, Any]]:
    """Submit ``fn`` over ``items`` with at most ``max_in_flight`` futures alive.

    Yields ``(item, result)`` in completion order. Each future is released as soon as its
    result has been yielded, so neither the client nor the scheduler holds more than
    ``max_in_flight`` tasks whatever the length of ``items`` (which may be a generator).

    Parameters
    ----------
    client : distributed.Client
        The client.
    fn : callable
        The task function.
    items : iterable of SubmitItem
        Consumed lazily.
    max_in_flight : int
        Bound on submitted-but-not-yet-yielded tasks.
    on_error : callable, optional
        ``on_error(item, exc)`` turns a task's exception (e.g. `KilledWorker`) into a
        result; without it the exception propagates.
    """
    from distributed import as_completed

    iterator = iter(items)
    pending: dict[str, SubmitItem] = {}
    ac = as_completed()

    def submit_next() -> bool:
        for item in iterator:
            fut = client.submit(fn, *item.args, key=item.key, **item.kwargs)
            pending[fut.key] = item
            ac.add(fut)
            return True
        return False

    for _ in range(max(1, int(max_in_flight))):
        if not submit_next():
            break
    for fut in ac:
        item = pending.pop(fut.key)
        try:
            result = fut.result()
        except Exception as exc:
            if on_error is None:
                raise
            result = on_error(item, exc)
        fut.release()
        del fut
        # Refill before yielding so the cluster stays busy while the caller writes.
        submit_next()
        yield item, result


def _as_config(config: Any) -> AmpOffsetConfig:
    if config is None:
        return AmpOffsetConfig()
    if isinstance(config, AmpOffsetConfig):
        config.validate()
        return config
    if isinstance(config, Mapping):
        return AmpOffsetConfig.from_lsst(config)
    raise ConfigError(f"config must be an AmpOffsetConfig or a mapping, got {type(config)}")


def _output_path(task: PlannedTask, options: RunOptions) -> Path | None:
    """Where the corrected exposure of ``task`` goes (None when nothing is written)."""
    if not options.apply:
        return None
    if options.output_images is None:
        return Path(task.path)  # in place (RunOptions guarantees it was asked for)
    out = options.output_images / str(task.visit) / Path(task.path).name
    if out.resolve() == Path(task.path).resolve():
        raise ConfigError(
            f"output_images={options.output_images} would overwrite the input {task.path}; "
            "choose another folder (or ask for in_place=True, --in-place)"
        )
    return out


def _task_error(item: SubmitItem, exc: BaseException) -> DetectorResult:
    from distributed.scheduler import KilledWorker

    task: PlannedTask = item.tag
    if isinstance(exc, KilledWorker):
        message = f"worker died while processing {task.path} ({exc})"
    else:
        message = f"{type(exc).__name__}: {exc}"
    return DetectorResult.failure(message, visit=task.visit, detector=task.name,
                                  input=task.path,
                                  detector_id=task.detector.id if task.detector else None)


@contextlib.contextmanager
def _performance_report(client: Any, filename: str | os.PathLike | None):
    if filename is None:
        yield
        return
    from distributed import performance_report

    Path(filename).parent.mkdir(parents=True, exist_ok=True)
    with performance_report(filename=str(filename)):
        yield
    logger.info("performance report written to %s", filename)


@contextlib.contextmanager
def _forward_logs(client: Any, enabled: bool):
    if not enabled:
        yield
        return
    name = "ampoffset_dask"
    try:
        client.forward_logging(name, level=logging.INFO)
    except Exception as exc:  # pragma: no cover - old schedulers
        logger.debug("cannot forward worker logs: %s", exc)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            client.unforward_logging(name)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="det",
                desc="ampoffset", dynamic_ncols=True, leave=True)



@dataclasses.dataclass
class PreparedRun:
    """A run discovered, planned and opened in its catalog, ready for `execute`.

    It holds the catalog's lock: use it as a context manager (or call `close`), which
    records how the run ended (``interrupted`` on Ctrl-C, ``failed`` on an error) and
    releases the lock.

    Attributes
    ----------
    catalog : Path
        The catalog directory.
    config : AmpOffsetConfig
        The measurement config.
    options : RunOptions
        The run options.
    writer : CatalogWriter
        The open catalog writer (run started).
    planned : list of PlannedTask
        Every input's plan; those with ``error`` set failed planning.
    failures : list of DetectorResult
        Failed rows of the inputs that could not be planned.
    runnable : list of PlannedTask
        What `execute` submits (resumed pairs left out).
    summary : RunSummary
        Counters so far (``n_inputs``, ``n_skipped``), filled in by `execute`.
    """

    catalog: Path
    config: AmpOffsetConfig
    options: RunOptions
    writer: CatalogWriter
    planned: list[PlannedTask]
    failures: list[DetectorResult]
    runnable: list[PlannedTask]
    summary: RunSummary
    t_start: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def run_id(self) -> str:
        """The run's id in the catalog's ``runs`` table."""
        return self.summary.run_id

    def __enter__(self) -> PreparedRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.writer.__exit__(exc_type, exc, tb)

    def close(self) -> None:
        """Finish the run record (if `execute` did not) and release the catalog lock."""
        self.writer.__exit__(None, None, None)


def prepare(
    inputs: Any,
    output: str | os.PathLike,
    *,
    config: AmpOffsetConfig | Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
    scheduler: str = "",
) -> PreparedRun:
    """Discover and plan the inputs, check the outputs, open the run in the catalog.

    Reads only headers, on this machine; no cluster is needed. Everything a user can get
    wrong in the inputs, options or outputs is found here, before anything is computed.

    Parameters
    ----------
    inputs, output, config
        As for `process`.
    options : RunOptions, optional
        Defaults when omitted.
    scheduler : str
        Where the run will execute, recorded in the ``runs`` table until `execute` records
        the scheduler's address.

    Returns
    -------
    PreparedRun
        Holding the catalog lock; pass it to `execute`, inside ``with``.

    Raises
    ------
    InputError, ConfigError
        As for `process`.
    """
    t_start = time.perf_counter()
    _config.load_defaults()
    cfg = _as_config(config)
    opts = options if options is not None else RunOptions()
    timings: dict[str, float] = {}

    items = discover_inputs(inputs)
    if not items:
        raise InputError(f"no FITS files found in {inputs!r}")
    timings["discover"] = time.perf_counter() - t_start
    catalog = Path(output)
    writer = CatalogWriter(catalog)
    try:
        writer.check_config(cfg, new_run=opts.new_run)
        done = writer.finished() if opts.resume and not opts.new_run else set()
        t = time.perf_counter()
        planned = plan_tasks(items, camera=opts.camera)
        timings["plan"] = time.perf_counter() - t
        for task in planned:  # every output path is checked before anything is written
            if not task.error:
                _output_path(task, opts)
        run_id = writer.start_run(config=cfg, inputs=[i.path for i in items],
                                  new_run=opts.new_run, options=opts.to_record(),
                                  scheduler=scheduler or "local")
        summary = RunSummary(run_id=run_id, catalog=catalog, n_inputs=len(items),
                             timings=timings)
        failures = [
            DetectorResult.failure(t.error, visit=t.visit, detector=t.name, input=t.path)
            for t in planned if t.error
        ]
        runnable = [t for t in planned if not t.error and (t.visit, t.name) not in done]
        summary.n_skipped = len(planned) - len(failures) - len(runnable)
        expected: dict[int, list[str]] = {}
        for rec in failures:
            expected.setdefault(rec.visit, []).append(rec.key[1])
        for task in runnable:
            expected.setdefault(task.visit, []).append(task.name)
        for visit, keys in expected.items():
            writer.expect(visit, keys)
    except BaseException as exc:
        writer.__exit__(type(exc), exc, exc.__traceback__)
        raise
    return PreparedRun(catalog=catalog, config=cfg, options=opts, writer=writer,
                       planned=planned, failures=failures, runnable=runnable, summary=summary,
                       t_start=t_start)


def execute(run: PreparedRun, client: Any = None) -> RunSummary:
    """Submit the prepared run's detectors, gather the results and record them.

    Parameters
    ----------
    run : PreparedRun
        From `prepare`.
    client : None, str, Client or cluster
        Where to run: see `~ampoffset_dask.pipeline.cluster.get_client`. Started only when
        something is left to compute; a cluster started here is closed before returning.

    Returns
    -------
    RunSummary

    Raises
    ------
    ClusterError
        When the cluster cannot be started or reached.
    """
    opts, writer, summary = run.options, run.writer, run.summary
    timings = summary.timings
    io_retries = int(opts.retries if opts.retries is not None else _config.get("io-retries", 3))
    io_delay = float(_config.get("io-retry-delay", 0.5))

    def record(result: DetectorResult) -> None:
        writer.add(result)
        if result.status == "failed":
            summary.n_failed += 1
            summary.failed.append((result.visit, result.detector or result.input,
                                   result.error))
        elif result.status == "flagged":
            summary.n_flagged += 1
        else:
            summary.n_ok += 1

    for rec in run.failures:
        record(rec)
    if summary.n_skipped:
        logger.info("resuming: %d detector(s) already in %s", summary.n_skipped, run.catalog)

    if run.runnable:
        submit_items = (
            SubmitItem(
                key=task.key,
                kwargs={
                    "path": task.path,
                    "detector": task.detector,
                    "config": run.config,
                    "visit": task.visit,
                    "camera": None,
                    "output": _output_path(task, opts),
                    "in_place": opts.in_place,
                    "io_retries": io_retries,
                    "io_retry_delay": io_delay,
                },
                tag=task,
            )
            for task in run.runnable
        )
        t = time.perf_counter()
        handle: ClientHandle = get_client(client, n_workers=opts.n_workers)
        timings["cluster"] = time.perf_counter() - t
        try:
            dask_client = handle.client
            summary.dashboard_link = handle.dashboard_link
            writer.annotate_run(scheduler=str(dask_client.scheduler.address))
            limit = int(opts.max_in_flight or default_in_flight(dask_client))
            t = time.perf_counter()
            n_before = len(run.failures) + summary.n_skipped
            bar = _progress(n_before + len(run.runnable), n_before, opts.progress)
            with _forward_logs(dask_client, opts.forward_logs), \
                    _performance_report(dask_client, opts.performance_report), bar:
                for _, result in stream_tasks(dask_client, process_file, submit_items,
                                              max_in_flight=limit, on_error=_task_error):
                    summary.n_submitted += 1
                    record(result)
                    bar.update(1)
                    if summary.n_failed:
                        bar.set_postfix(failed=summary.n_failed, refresh=False)
            timings["compute"] = time.perf_counter() - t
        finally:
            handle.close()
    summary.seconds = time.perf_counter() - run.t_start
    timings["total"] = summary.seconds
    writer.finish_run(summary.counts(), timings=timings)
    logger.info("%s", summary)
    return summary


def process(
    inputs: Any,
    output: str | os.PathLike,
    *,
    config: AmpOffsetConfig | Mapping[str, Any] | None = None,
    client: Any = None,
    options: RunOptions | None = None,
    **option_values: Any,
) -> RunSummary:
    """Measure the amp offsets of many detectors on a Dask cluster into a catalog.

    `prepare` (discover, plan, check outputs, open the run) then `execute` (submit, gather,
    record).

    Parameters
    ----------
    inputs : path, glob, folder, manifest or list of them
        See `~ampoffset_dask.pipeline.inputs.discover_inputs`. Visit and detector come from
        the headers or from the manifest; an input without them is a failed row.
    output : path-like
        Catalog directory (see `ampoffset_dask.catalog`).
    config : AmpOffsetConfig or mapping, optional
        Measurement config; LSST names accepted in a mapping. LSST defaults when omitted.
    client : None, str, Client or cluster
        Where to run: see `~ampoffset_dask.pipeline.cluster.get_client`. A cluster started
        here is closed before returning; a given Client is left open.
    options : RunOptions, optional
        The run options as one object.
    **option_values
        Any `RunOptions` field by name (``apply``, ``output_images``, ``in_place``,
        ``resume``, ``new_run``, ``max_in_flight``, ``retries``, ``progress``,
        ``performance_report``, ``forward_logs``, ``n_workers``, ``camera``, ...); they
        replace the fields of ``options``. Worker deaths are retried by the scheduler
        (``distributed.scheduler.allowed-failures``) and end as a failed row ("worker died").

    Returns
    -------
    RunSummary

    Raises
    ------
    InputError
        When nothing matches ``inputs`` or two inputs are the same (visit, detector).
    ConfigError
        For an invalid config or option, or a catalog of another config without
        ``new_run``.
    ClusterError
        When the cluster cannot be started or reached (a `ConfigError`).
    TypeError
        For a keyword that is not a `RunOptions` field.

    Examples
    --------
    >>> from ampoffset_dask import process, read_catalog
    >>> from ampoffset_dask.simulate import simulate_focal_plane
    >>> sim = simulate_focal_plane(tmp / "sim", "lsstcam", detectors=["R22_S11"],
    ...                            scale=0.05, seed=1)
    >>> summary = process(tmp / "sim", tmp / "catalog", client=client, progress=False)
    >>> summary.n_ok, summary.n_failed
    (1, 0)
    >>> len(read_catalog(tmp / "catalog", "pedestals"))
    16
    """
    opts = RunOptions.from_kwargs(options, **option_values)
    spec = client if isinstance(client, (str, type(None))) else type(client).__name__
    with prepare(inputs, output, config=config, options=opts,
                 scheduler=str(spec or "local")) as run:
        return execute(run, client)
