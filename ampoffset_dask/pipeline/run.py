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
from .inputs import PlannedTask, discover_inputs, plan_tasks
from .tasks import process_file

__all__ = ["RunSummary", "SubmitItem", "process", "stream_tasks"]

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


def _output_path(task: PlannedTask, output_images: Path | None, in_place: bool) -> Path | None:
    if output_images is None:
        return Path(task.path) if in_place else None
    out = output_images / str(task.visit) / Path(task.path).name
    if not in_place and out.resolve() == Path(task.path).resolve():
        raise ConfigError(
            f"output_images={output_images} would overwrite the input {task.path}; choose "
            "another folder (or ask for in_place=True)"
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


def _check_bokeh() -> None:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        raise ConfigError(
            "performance_report needs bokeh (the Dask dashboard's plotting library): "
            "pip install bokeh"
        ) from None


@contextlib.contextmanager
def _performance_report(client: Any, filename: str | os.PathLike | None):
    if filename is None:
        yield
        return
    _check_bokeh()
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


def process(
    inputs: Any,
    output: str | os.PathLike,
    *,
    camera: Any = None,
    config: AmpOffsetConfig | Mapping[str, Any] | None = None,
    client: Any = None,
    apply: bool = False,
    output_images: str | os.PathLike | None = None,
    in_place: bool = False,
    resume: bool = True,
    new_run: bool = False,
    max_in_flight: int | None = None,
    retries: int | None = None,
    progress: bool = True,
    performance_report: str | os.PathLike | None = None,
    forward_logs: bool = True,
    n_workers: int | None = None,
) -> RunSummary:
    """Measure the amp offsets of many detectors on a Dask cluster into a catalog.

    Parameters
    ----------
    inputs : path, glob, folder, manifest or list of them
        See `~ampoffset_dask.pipeline.inputs.discover_inputs`. Visit and detector come from
        the headers or from the manifest; an input without them is a failed row.
    output : path-like
        Catalog directory (see `ampoffset_dask.catalog`).
    camera : str or Camera, optional
        Camera whose geometry to use (default: from the headers).
    config : AmpOffsetConfig or mapping, optional
        Measurement config; LSST names accepted in a mapping. LSST defaults when omitted.
    client : None, str, Client or cluster
        Where to run: see `~ampoffset_dask.pipeline.cluster.get_client`. A cluster started
        here is closed before returning; a given Client is left open.
    apply : bool
        Write corrected exposures (pedestals subtracted, LSST metadata keys set).
    output_images : path-like, optional
        Folder for corrected exposures (``<folder>/<visit>/<input file name>``); implies
        ``apply``.
    in_place : bool
        With ``apply`` and no ``output_images``, overwrite the inputs.
    resume : bool
        Skip (visit, detector) pairs the catalog already holds with status ok or flagged.
    new_run : bool
        Accept a config different from the catalog's; recompute everything given and replace
        the earlier rows of those detectors.
    max_in_flight : int, optional
        Bound on tasks submitted but not yet gathered (default
        ``ampoffset.in-flight-per-thread`` x the cluster's threads).
    retries : int, optional
        Retries of transient I/O errors inside each task (default ``ampoffset.io-retries``).
        Worker deaths are retried by the scheduler (``distributed.scheduler.allowed-failures``)
        and end as a failed row ("worker died").
    progress : bool
        Show a progress bar (tqdm) advanced as tasks complete.
    performance_report : path-like, optional
        Write Dask's HTML performance report here (needs bokeh).
    forward_logs : bool
        Forward the workers' ``ampoffset_dask`` log records to this process.
    n_workers : int, optional
        Workers of the local cluster started when ``client`` is None.

    Returns
    -------
    RunSummary

    Raises
    ------
    InputError
        When nothing matches ``inputs`` or two inputs are the same (visit, detector).
    ConfigError
        For an invalid config, a catalog of another config without ``new_run``, or an
        unusable ``client`` spec.
    """
    t_start = time.perf_counter()
    _config.load_defaults()
    cfg = _as_config(config)
    if output_images is not None:
        apply = True
    if performance_report is not None:
        _check_bokeh()
    if apply and output_images is None and not in_place:
        raise ConfigError("apply=True needs output_images=FOLDER (or in_place=True to "
                          "overwrite the inputs)")
    out_images = Path(output_images) if output_images is not None else None
    io_retries = int(retries if retries is not None else _config.get("io-retries", 3))
    io_delay = float(_config.get("io-retry-delay", 0.5))
    timings: dict[str, float] = {}

    items = discover_inputs(inputs)
    if not items:
        raise InputError(f"no FITS files found in {inputs!r}")
    timings["discover"] = time.perf_counter() - t_start
    catalog = Path(output)
    options = {"camera": getattr(camera, "name", camera), "apply": apply,
               "output_images": str(out_images) if out_images else None,
               "in_place": in_place, "resume": resume, "new_run": new_run}
    spec = client if isinstance(client, (str, type(None))) else type(client).__name__

    with CatalogWriter(catalog) as writer:
        writer.check_config(cfg, new_run=new_run)
        done = writer.finished() if resume and not new_run else set()
        t = time.perf_counter()
        planned = plan_tasks(items, camera=camera)
        timings["plan"] = time.perf_counter() - t
        if apply:  # every output path is checked before anything is written
            for task in planned:
                if not task.error:
                    _output_path(task, out_images, in_place)
        run_id = writer.start_run(config=cfg, inputs=[i.path for i in items], new_run=new_run,
                                  options=options, scheduler=str(spec or "local"))
        summary = RunSummary(run_id=run_id, catalog=catalog, n_inputs=len(items))

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

        for rec in failures:
            record(rec)
        if summary.n_skipped:
            logger.info("resuming: %d detector(s) already in %s", summary.n_skipped, catalog)

        if runnable:
            submit_items = (
                SubmitItem(
                    key=task.key,
                    kwargs={
                        "path": task.path,
                        "detector": task.detector,
                        "config": cfg,
                        "visit": task.visit,
                        "camera": None,
                        "output": _output_path(task, out_images, in_place) if apply else None,
                        "in_place": in_place,
                        "io_retries": io_retries,
                        "io_retry_delay": io_delay,
                    },
                    tag=task,
                )
                for task in runnable
            )
            t = time.perf_counter()
            handle: ClientHandle = get_client(client, n_workers=n_workers)
            timings["cluster"] = time.perf_counter() - t
            try:
                dask_client = handle.client
                summary.dashboard_link = handle.dashboard_link
                writer.annotate_run(scheduler=str(dask_client.scheduler.address))
                limit = int(max_in_flight or default_in_flight(dask_client))
                t = time.perf_counter()
                n_before = len(failures) + summary.n_skipped
                bar = _progress(n_before + len(runnable), n_before, progress)
                with _forward_logs(dask_client, forward_logs), \
                        _performance_report(dask_client, performance_report), bar:
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
        summary.seconds = time.perf_counter() - t_start
        timings["total"] = summary.seconds
        summary.timings = timings
        writer.finish_run(summary.counts(), timings=timings)
    logger.info("%s", summary)
    return summary
