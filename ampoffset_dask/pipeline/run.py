"""`process`: measure (and optionally correct) many detectors on a Dask cluster.

One task per (visit, detector), key ``ampoffset-<run token>-<visit>-<detector>`` (unique per
run, so runs sharing a scheduler never share results), submitted with a bounded
number in flight and gathered with `distributed.as_completed`, so the client's memory and the
scheduler's graph stay small whatever the number of inputs. Results stream into the catalog
(`ampoffset_dask.catalog.CatalogWriter`) as they arrive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._job_entry import identified_job  # light for the scheduler to unpickle
from ..catalog import CatalogWriter, DetectorResult, config_digest
from ..catalog.schema import DONE, CatalogWriteError, DamagedCatalogError
from ..catalog.writer import recorded_nothing
from ..config import AmpOffsetConfig, as_config
from ..errors import ClusterError, ConfigError, GeometryError, InputError
from ..io.file_info import earlier_lsst_visit
from ..io.paths import OUTPUT_MARKER, file_name, fits_stem, mark_output_folder, shortened
from ..io.remote import (
    _ZIP_FRAGMENT,
    environment_options,
    is_url,
    redact,
    scoped_storage_options,
)
from ..io.sections import _is_wrapped
from ..io.writer import partial_stem
from . import _config
from .cluster import (
    ClientHandle,
    check_n_workers,
    check_spec,
    default_in_flight,
    get_client,
    signals_held,
)
from .detector_job import planning_failure
from .inputs import PlannedTask, discover_inputs, plan_tasks
from .options import RunOptions, option_name

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
    flagged : list of (visit, detector, reason)
        Each flagged detector (measured, but the pedestals are not to be trusted).
    notes : list of str
        Warnings about the run as a whole (e.g. raw files read with ``overscan="none"``).
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
    flagged: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
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
        for visit, det, why in self.flagged:
            text += f"\n  FLAGGED visit {visit} {det}: {why}"
        return text


@dataclasses.dataclass
class SubmitItem:
    """One task for `stream_tasks`: a key, positional and keyword arguments, a tag, and
    how many times `stream_tasks` submitted it again (``resubmits``: the task key then ends
    in ``-r<resubmits>``)."""

    key: str
    args: tuple = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    tag: Any = None
    resubmits: int = 0

    @property
    def task_key(self) -> str:
        """The key of this submission."""
        return self.key if not self.resubmits else f"{self.key}-r{self.resubmits}"


def stream_tasks(
    client: Any,
    fn: Callable[..., Any],
    items: Iterable[SubmitItem],
    *,
    max_in_flight: int | Callable[[], int],
    on_error: Callable[[SubmitItem, BaseException], Any] | None = None,
    resubmit: Callable[[SubmitItem, BaseException], bool] | None = None,
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
    max_in_flight : int or callable
        Bound on submitted-but-not-yet-yielded tasks, or a function returning it, asked
        again after each completion (a cluster whose workers join during the run).
    on_error : callable, optional
        ``on_error(item, exc)`` turns a task's exception (e.g. `KilledWorker`) into a
        result; without it the exception propagates.
    resubmit : callable, optional
        ``resubmit(item, exc)`` says whether a task that raised ``exc`` is submitted again
        (under a new key, ``item.resubmits`` counting the times) instead of being yielded:
        for tasks the cluster dropped, not tasks that failed. Asked before ``on_error``.
    """
    from distributed import as_completed

    iterator = iter(items)
    pending: dict[str, SubmitItem] = {}
    ac = as_completed()

    def submit(item: SubmitItem) -> None:
        fut = client.submit(fn, *item.args, key=item.task_key, **item.kwargs)
        pending[fut.key] = item
        ac.add(fut)

    def fill() -> None:
        bound = max_in_flight() if callable(max_in_flight) else max_in_flight
        for _ in range(max(1, int(bound)) - len(pending)):
            item = next(iterator, None)
            if item is None:
                return
            submit(item)

    fill()
    for fut in ac:
        item = pending.pop(fut.key)
        try:
            result = fut.result()
        except Exception as exc:
            if resubmit is not None and resubmit(item, exc):
                fut.release()
                del fut
                submit(dataclasses.replace(item, resubmits=item.resubmits + 1))
                continue
            if on_error is None:
                raise
            result = on_error(item, exc)
        fut.release()
        del fut
        # Refill before yielding so the cluster stays busy while the caller writes.
        fill()
        yield item, result


def _applied_config(config: AmpOffsetConfig, opts: RunOptions
                    ) -> tuple[AmpOffsetConfig, str]:
    """The run's config with ``doApplyAmpOffset`` saying what the run does, and a note when
    the given config expected corrected images the run does not write.

    A run corrects images where its options put them (``apply``, ``output_images``,
    ``in_place``): a preset's ``doApplyAmpOffset`` (LSST's "subtract from the exposure in
    memory") has no place to write to, so the options decide and the recorded config
    tells the truth. Asking for corrected images with LSST's default (False) is the
    ordinary way to correct, and only logged.
    """
    apply = bool(opts.apply)
    if config.do_apply_amp_offset == apply:
        return config, ""
    config = config.copy()
    config.do_apply_amp_offset = apply
    if apply:
        logger.info("correcting the images as asked; the catalog records "
                    "doApplyAmpOffset=True (the config said False)")
        return config, ""
    return config, (f"the config says doApplyAmpOffset=True, but this run writes no corrected "
                    f"images (give {option_name('output_images')} DIR or "
                    f"{option_name('in_place')}): measuring only; the catalog records "
                    "doApplyAmpOffset=False")


def _output_path(task: PlannedTask, options: RunOptions) -> Path | str | None:
    """Where the corrected exposure of ``task`` goes (None when nothing is written):
    ``<output_images>/<visit>/<detector>/<input name>.fits``, or the same under an
    object-store prefix. Planning allows one input per (visit, detector), so two inputs never
    share an output; the corrected file is plain FITS whatever the input's compression, and
    named so. In place, it is the input itself (the file a symbolic link names): refused
    (`InputError`) for URLs, Butler datasets, zip members, one CCD of a multi-CCD file,
    gzip/bzip2-wrapped files, raws, files holding what the corrected exposure would not keep
    (`PlannedTask.keeps`) and files with several hard links. A visit or detector name that
    cannot be a folder name (``..``, a path separator) is refused too."""
    if not options.apply:
        return None
    if options.output_images is None:
        if is_url(task.path):
            raise InputError(f"{redact(task.path)}: in-place writes need local files; give "
                             "--output-images / output_images for URL inputs")
        if task.dataset_id:
            # the datastore's records (size, checksum) describe the file as ingested, and
            # other pipelines read it as that dataset
            raise InputError(
                f"{task.path}: dataset {task.dataset_id} of a Butler repository cannot be "
                "corrected in place (a Butler dataset is never rewritten); use "
                "--output-images / output_images")
        if _ZIP_FRAGMENT in os.fspath(task.path):
            raise InputError(f"{task.path}: a member of a zip archive cannot be corrected in "
                             "place (the archive is not rewritten); use --output-images / "
                             "output_images")
        if task.hdu is not None:
            raise InputError(f"{task.path}: one CCD of a multi-CCD file cannot be corrected in "
                             "place; use --output-images / output_images")
        if _is_wrapped(Path(task.path)):
            raise InputError(
                f"{task.path}: a gzip/bzip2-wrapped file cannot be corrected in place (the "
                "corrected exposure is plain FITS); use --output-images / output_images")
        if task.raw:
            raise InputError(
                f"{task.path}: a raw file cannot be corrected in place (the corrected "
                "exposure is an assembled float32 image: the raw segments and their "
                "overscan would be lost for good); use --output-images / output_images")
        if task.keeps:
            raise InputError(
                f"{task.path}: cannot be corrected in place: the corrected exposure (plain "
                f"IMAGE, MASK and VARIANCE extensions) would lose its {task.keeps} for good; "
                "use --output-images / output_images")
        # A symbolic link: correct the file it names (replacing the link would leave that
        # file as it was). Hard links cannot all be replaced by one write.
        target = Path(os.path.realpath(task.path))
        links = target.stat().st_nlink
        if links > 1:
            raise InputError(
                f"{task.path}: has {links} hard links; a corrected copy written in place "
                "would replace this name only, leaving the others uncorrected; use "
                "--output-images / output_images")
        return target  # in place (RunOptions guarantees it was asked for)
    for part, what in ((str(task.visit), "visit"), (str(task.name), "detector name")):
        if part in ("", ".", "..") or any(c in part for c in "/\\\0"):
            raise InputError(f"{task.path}: the {what} {part!r} cannot name a folder of "
                             "the corrected images")
    # (an object's key may be longer than a file name)
    stem = shortened(fits_stem(file_name(task.path))[0], _MAX_STEM)
    if is_url(options.output_images):
        return (f"{str(options.output_images).rstrip('/')}/{task.visit}/{task.name}/"
                f"{stem}.fits")
    return options.output_images / str(task.visit) / str(task.name) / f"{stem}.fits"


#: Longest stem of a corrected copy's name, in bytes: file names hold 255, and the writer's
#: temporary name adds ~20 to the copy's.
_MAX_STEM = 200


def check_outputs(planned: Iterable[PlannedTask], options: RunOptions) -> dict[str, Path]:
    """Every planned output path, checked before anything is submitted.

    Returns
    -------
    dict
        `output_key` (input path, with ``[hdu]`` for one CCD of a multi-CCD file) -> output
        path of each runnable task (empty without ``apply``).

    Raises
    ------
    InputError
        When two inputs would write the same output, or an output would overwrite another
        input (or, without ``in_place``, its own input); the message names both files.
    """
    outputs: dict[str, Path] = {}
    if not options.apply:
        return outputs
    tasks = [t for t in planned if not t.error and not t.flag]

    def real(path: Any) -> str:
        return str(path) if is_url(str(path)) else os.path.realpath(path)

    inputs = {real(t.path): t.path for t in planned}
    owners: dict[str, str] = {}
    for task in tasks:
        out = _output_path(task, options)
        where = real(out)
        if where in owners:
            raise InputError(f"{task.path} and {owners[where]} would both be corrected into "
                             f"{out}; give each input its own (visit, detector)")
        other = inputs.get(where)
        if other is not None and (other != task.path or not options.in_place):
            raise InputError(f"the corrected {task.path} would overwrite the input {other} "
                             f"({out}); choose another output folder")
        owners[where] = task.path
        outputs[output_key(task)] = out
    return outputs


def output_key(task: PlannedTask) -> str:
    """The `check_outputs` key of a task: its input, and its HDU for one CCD of a file."""
    return task.path if task.hdu is None else f"{task.path}[{task.hdu}]"


def _check_not_in_output_images(inputs: Any, output_images: Any) -> None:
    """Refuse an input folder that is, or lies inside, the ``--output-images`` folder.

    Runs never take inputs from a folder of corrected images (the run marks it): this run
    would find no input there, and later runs over a folder holding it would skip these
    inputs with it.
    """
    if output_images is None or is_url(output_images):
        return
    out = Path(os.path.realpath(output_images))
    items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    for item in items:
        if not isinstance(item, (str, os.PathLike)) or is_url(os.fspath(item)) \
                or not os.path.isdir(item):
            continue
        folder = Path(os.path.realpath(item))
        if folder == out or out in folder.parents:
            where = "is" if folder == out else "lies inside"
            raise InputError(
                f"{item}: the input folder {where} the --output-images folder {output_images}, "
                "and runs never take inputs from a folder of corrected images; write them "
                f"elsewhere (a folder inside the inputs, e.g. {Path(item) / 'corrected'}, is "
                "fine)")


def discover_checked(inputs: Any, output_images: Any) -> list[Any]:
    """`discover_inputs` as `process` and `build_graph` take inputs: never from the
    ``output_images`` folder, and refused when there are none or some lie inside it.

    Raises
    ------
    InputError
        For no inputs, an input folder that is or lies inside ``output_images``
        (`_check_not_in_output_images`), or an input file inside it
        (`_check_inputs_outside_output_images`).
    """
    _check_not_in_output_images(inputs, output_images)
    items = discover_inputs(inputs, exclude=[p for p in (output_images,) if p])
    if not items:
        raise InputError(f"no FITS files found in {inputs!r}")
    _check_inputs_outside_output_images(items, output_images)
    return items


def _check_inputs_outside_output_images(items: Iterable[Any], output_images: Any) -> None:
    """Refuse input files that lie inside the ``--output-images`` folder (given one by one,
    or by a manifest: `_check_not_in_output_images` sees only folders). The run marks that
    folder as one of corrected images, and every later run over a folder holding it would
    skip those inputs without a word."""
    if output_images is None or is_url(output_images):
        return
    out = Path(os.path.realpath(output_images))
    for item in items:
        path = getattr(item, "path", item)
        if not isinstance(path, (str, os.PathLike)) or is_url(os.fspath(path)):
            continue
        if out in Path(os.path.realpath(path)).parents:
            raise InputError(
                f"{path}: the input lies inside the --output-images folder {output_images}, "
                "which the run marks as a folder of corrected images: later runs over it "
                "would skip this input; write the corrected images elsewhere (a folder of "
                "their own, e.g. beside the inputs)")


def _remove_created(folders: Iterable[Any]) -> None:
    """Remove folders a refused run created, if they hold nothing but what it put there
    (the output folder's mark): a refusal leaves no half catalog that the next command
    calls "not an ampoffset-dask catalog".

    A catalog's ``.lock`` is never removed here: a lock this run held is gone already (its
    release removes it), and one it found busy is another run's, which started on the same
    new folder at the same time; removing it would let a third run write beside that one.
    """
    for folder in folders:
        folder = Path(folder)
        try:
            for entry in folder.iterdir():
                if entry.name == OUTPUT_MARKER and entry.is_file():
                    entry.unlink()
            folder.rmdir()  # fails, leaving it, if anything else is there
        except OSError:
            pass


def mark_output_images(opts: RunOptions) -> None:
    """Check that the corrected images' folder can be written and mark it (a store prefix:
    mark it), so that a later run over a tree holding it does not take its images as
    inputs. Nothing without ``output_images``."""
    if opts.output_images is None:
        return
    if not is_url(opts.output_images):
        _check_writable(opts.output_images, "corrected images")
        mark_output_folder(opts.output_images)
    else:
        from ..io.remote import mark_output_prefix

        mark_output_prefix(str(opts.output_images), opts.storage_options)


def _check_writable(folder: Path, what: str) -> None:
    """Fail now, with one line naming the folder, if ``folder`` cannot be written (read-only
    file system, no space, no permission), instead of once per detector later."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".ampoffset-probe-{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"\0" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write {what} to {folder}: {exc.strerror or exc}") from None


_TMP = re.compile(r"^\.(.+)\.[0-9a-f]{12}\.tmp$")


def _remove_stale_tmp(outputs: Iterable[Path]) -> int:
    """Delete the partial ``.<name>.<id>.tmp`` files a killed worker left next to this run's
    outputs (the writer renames them into place only when complete); the number removed."""
    wanted: dict[Path, set[str]] = {}
    for out in outputs:
        wanted.setdefault(out.parent, set()).add(partial_stem(out.name))
    removed = 0
    for folder, names in wanted.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            m = _TMP.match(entry.name)
            if m and m.group(1) in names:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        logger.info("removed %d partial output file(s) left by an earlier run", removed)
    return removed


def run_token(run_id: str, config: AmpOffsetConfig, options: RunOptions) -> str:
    """The part of the task keys that makes them unique per run: a digest of the run id,
    the config and where the outputs go."""
    text = "|".join([run_id, config_digest(config), str(options.output_images),
                     str(options.in_place), str(options.apply), uuid.uuid4().hex])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _task_error(item: SubmitItem, exc: BaseException) -> tuple[None, DetectorResult]:
    from distributed.scheduler import KilledWorker

    task: PlannedTask = item.tag
    if isinstance(exc, KilledWorker):
        message = f"worker died while processing {task.path} ({exc})"
    else:
        message = f"{type(exc).__name__}: {exc}"
    return None, DetectorResult.failure(message, visit=task.visit, detector=task.name,
                                        input=task.path,
                                        detector_id=task.detector.id if task.detector else None)


def _checked(task: PlannedTask, digest: str, got: tuple[str | None, DetectorResult]
             ) -> DetectorResult:
    """The task's result if it is this task's (input, visit, detector, config digest);
    otherwise a failed row saying what came back: a result is never recorded under another
    identity."""
    got_digest, result = got
    if got_digest is None:  # the client's own failure record
        return result
    expected = (task.path, task.visit, task.name, digest)
    actual = (result.input, result.visit, result.detector, got_digest)
    if result.status == "failed" and actual[1:3] != expected[1:3]:
        actual = (result.input, task.visit, task.name, got_digest)  # identity not read yet
    if actual == expected:
        return result
    logger.error("result identity mismatch for %s: expected %s, got %s", task.path, expected,
                 actual)
    return DetectorResult.failure(
        f"result identity mismatch: expected input {task.path}, visit {task.visit}, "
        f"detector {task.name}, config {digest}; got input {result.input}, visit "
        f"{result.visit}, detector {result.detector}, config {got_digest}",
        visit=task.visit, detector=task.name, input=task.path)


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
        The measurement config: `prepare`'s own copy of the one given, recorded in the
        ``runs`` table (`execute` refuses it changed since, see ``config_digest``).
    options : RunOptions
        The run options.
    writer : CatalogWriter
        The open catalog writer (run started).
    planned : list of PlannedTask
        Every input's plan; those with ``error`` set failed planning.
    failures : list of DetectorResult
        Rows recorded without computing: failed rows of the inputs that could not be
        planned, flagged rows of inputs already corrected (but those the catalog's run
        corrected in place, which are resumed), and the rows of inputs a stopped run of the
        catalog corrected in place without recording them (`recovered_result`).
    runnable : list of PlannedTask
        What `execute` submits (resumed pairs left out).
    summary : RunSummary
        Counters so far (``n_inputs``, ``n_skipped``), filled in by `execute`.
    run_token : str
        Part of every task key of this run (``ampoffset-<run_token>-<visit>-<detector>``).
    camera : Camera, optional
        The camera given by the user, loaded (it travels with each task, so user-camera raws
        are assembled on the workers without the camera file).
    outputs : dict
        Input path -> corrected output path (with ``apply``).
    config_digest : str
        The digest of ``config`` as the ``runs`` table records it.
    options_record : str
        ``options`` as the ``runs`` table records them (`execute` refuses them changed).
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
    run_token: str = ""
    outputs: dict[str, Path] = dataclasses.field(default_factory=dict)
    camera: Any = None
    config_digest: str = ""
    options_record: str = ""

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
    opts = options if options is not None else RunOptions()
    # the listing and headers of URL inputs, read here, with this run's options only
    with scoped_storage_options(opts.storage_options):
        return _prepare(inputs, output, config, opts, scheduler)


def _prepare(inputs: Any, output: str | os.PathLike, config: Any, opts: RunOptions,
             scheduler: str) -> PreparedRun:
    t_start = time.perf_counter()
    _config.load_defaults()
    _config.check_settings()
    # a private copy: the caller's object, changed after this call, must not change what
    # the workers measure with behind the config (and digest) this run records
    cfg, apply_note = _applied_config(as_config(config).copy(), opts)
    opts = dataclasses.replace(opts)  # the same for the options (gain, overscan, outputs)
    timings: dict[str, float] = {}
    camera = _resolve_camera(opts.camera)
    _check_detector(camera, opts.detector)

    if is_url(os.fspath(output)):  # else a local folder named "s3:" would be made
        raise InputError(
            f"{redact(os.fspath(output))}: the catalog is a local folder (its lock and atomic "
            "renames need a file system); write it to a local path and copy it to the store "
            "afterwards (corrected images may go to a store: --output-images)")
    items = discover_checked(inputs, opts.output_images)
    timings["discover"] = time.perf_counter() - t_start
    catalog = Path(output)
    # folders this call creates, removed again if the run is refused
    created = [f for f in (catalog, opts.output_images)
               if f is not None and not is_url(f) and not Path(f).exists()]
    try:
        _check_writable(catalog, "the catalog")
        mark_output_images(opts)
        writer = CatalogWriter(catalog)
    except BaseException:
        _remove_created(created)
        raise
    try:
        writer.check_config(cfg, new_run=opts.new_run)
        _check_same_measurement(catalog, opts)
        t = time.perf_counter()
        planned = plan_tasks(items, camera=camera, force=opts.force, visit=opts.visit,
                             detector=opts.detector)
        timings["plan"] = time.perf_counter() - t
        check_config_fits(planned, cfg)
        _check_visit_numbering(planned, writer)
        outputs = check_outputs(planned, opts)  # before anything is submitted
        local_outputs = [p for p in outputs.values() if not is_url(p)]
        if opts.in_place:
            for folder in dict.fromkeys(path.parent for path in local_outputs):
                _check_writable(folder, "corrected images")
        _remove_stale_tmp(local_outputs)
        run_id = writer.start_run(config=cfg, inputs=[redact(i.path) for i in items],
                                  url_stamps={t.path: t.stamp for t in planned
                                              if t.stamp is not None and is_url(t.path)},
                                  new_run=opts.new_run, options=opts.to_record(),
                                  scheduler=scheduler or "local")
        done = (_resumed(planned, writer, cfg, opts, outputs, camera)
                if opts.resume and not opts.new_run else set())
        summary = RunSummary(run_id=run_id, catalog=catalog, n_inputs=len(items),
                             timings=timings)
        # files a stopped run of this catalog corrected in place without recording them:
        # recorded from their headers, never corrected again (with or without force)
        unrecorded = (_unrecorded_corrections(planned, catalog, opts, done, camera,
                                              config_digest(cfg))
                      if opts.in_place else {})
        # files this catalog corrected in place that this run may not measure (no force):
        # their rows stay current, not replaced by flagged rows the run did not measure
        kept = _kept_corrections(planned, writer, done | set(unrecorded))
        if kept:
            note = _kept_note(kept, cfg)
            logger.warning("%s", note)
            summary.notes.append(note)
        if unrecorded:
            runs = sorted({t.corrected_by for t in planned if output_key(t) in unrecorded})
            note = (f"{len(unrecorded)} input(s) were corrected in place by run(s) "
                    f"{', '.join(runs)} of this catalog, which stopped before recording them: "
                    "the pedestals their headers hold are recorded (flagged), and they are not "
                    "corrected again")
            logger.warning("%s", note)
            summary.notes.append(note)
        if apply_note:
            logger.warning("%s", apply_note)
            summary.notes.append(apply_note)
        raws = [t for t in planned if t.raw and not t.error]
        if raws and opts.overscan == "none":  # said once per run, not once per detector
            note = (f"overscan 'none' (--overscan none) on {len(raws)} raw detector(s), e.g. "
                    f"{raws[0].path}: each amp keeps its own bias level, so most interfaces "
                    "will fail the do-no-harm checks; use --overscan auto")
            logger.warning("%s", note)
            summary.notes.append(note)
        failures = [planning_failure(t) for t in planned if t.error] + [
            dataclasses.replace(flagged_result(t), geometry=geometry_digest(t.detector, camera))
            for t in planned if t.flag and not t.error and output_key(t) not in done
            and output_key(t) not in unrecorded and output_key(t) not in kept
        ] + list(unrecorded.values())
        runnable = [t for t in planned if not t.error and not t.flag
                    and output_key(t) not in done and output_key(t) not in unrecorded]
        summary.n_skipped = len(planned) - len(failures) - len(runnable)
        # kept in the run's record however it ends (a run stopped before `execute` too, or
        # killed: then the next writer recovers the record saved here)
        writer.annotate_run(n_skipped=summary.n_skipped)
        if summary.n_skipped:
            writer.save_run()
        expected: dict[int, list[str]] = {}
        for rec in failures:
            expected.setdefault(rec.visit, []).append(rec.key[1])
        for task in runnable:
            expected.setdefault(task.visit, []).append(task.name)
        for visit, keys in expected.items():
            writer.expect(visit, keys)
    except BaseException as exc:
        writer.__exit__(type(exc), exc, exc.__traceback__)
        if writer.run_id is None:  # refused before the run was recorded
            _remove_created(created)
        raise
    return PreparedRun(catalog=catalog, config=cfg, options=opts, writer=writer,
                       planned=planned, failures=failures, runnable=runnable, summary=summary,
                       t_start=t_start, run_token=run_token(run_id, cfg, opts),
                       outputs=outputs, camera=camera, config_digest=config_digest(cfg),
                       options_record=_options_text(opts))


def _has_workers(client: Any) -> bool:
    try:
        return bool(client.scheduler_info().get("workers"))
    except Exception:  # cannot tell: say nothing
        return True


@contextlib.contextmanager
def _workers_watched(client: Any, has_workers: bool) -> Iterator[None]:
    """Say when the scheduler loses its last worker during the run, and when one joins
    again: the tasks in flight then wait with nothing to show (no progress bar without a
    terminal). Checked every ``ampoffset.worker-watch-interval`` seconds, in a thread;
    ``has_workers``: whether it had any at the start (a scheduler without any was said
    already)."""
    import dask.utils

    interval = dask.utils.parse_timedelta(_config.get("worker-watch-interval") or "10s")
    stop = threading.Event()
    address = client.scheduler.address

    def watch() -> None:
        gone = not has_workers
        while not stop.wait(interval):
            now = not _has_workers(client)
            if now and not gone:
                logger.warning("the scheduler at %s has no workers left: the run's tasks "
                               "wait for one to join (Ctrl-C stops the run; what finished "
                               "is kept)", address)
            elif gone and not now:
                logger.warning("a worker joined the scheduler at %s: the run goes on",
                               address)
            gone = now

    thread = threading.Thread(target=watch, name="ampoffset-worker-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1.0)  # a daemon: a check stuck on a lost scheduler ends with it


def flagged_result(task: PlannedTask) -> DetectorResult:
    """The ``flagged`` result of an input planning flagged (already corrected): not read,
    measured or written; the pedestals its header records (`_applied_fields`)."""
    return DetectorResult(visit=int(task.visit), detector=str(task.name), status="flagged",
                          error=task.flag, input=task.path,
                          detector_id=task.detector.id if task.detector else None,
                          dataset_id=task.dataset_id or "", **_applied_fields(task))


def _applied_fields(task: PlannedTask) -> dict[str, Any]:
    """The pedestal columns of a flagged already-corrected input: those its header says
    were subtracted (errors and levels unknown), or none."""
    if not task.applied or task.detector is None:
        return {}
    n = len(task.applied)
    return {"amp_names": list(task.detector.amp_names), "pedestals": list(task.applied),
            "pedestal_errors": [float("nan")] * n, "amp_levels": [float("nan")] * n,
            "applied": True}


def _options_text(options: RunOptions) -> str:
    """``options`` as the ``runs`` table records them, as one comparable text."""
    return json.dumps(options.to_record(), sort_keys=True, default=str)


def _check_visit_numbering(planned: Sequence[PlannedTask], writer: CatalogWriter) -> None:
    """Refuse inputs this catalog recorded under the visit number an earlier version gave
    LSST raws of a shifting controller (day_obs * 100000 + seq_num, the controller not
    counted): their new rows (LSST's exposure id) would be current beside the old ones.

    Raises
    ------
    ConfigError
        Naming how many inputs, one of them with both numbers, and what to do.
    """
    found = [(task, earlier_lsst_visit(task.visit)) for task in planned
             if not task.error and task.detector is not None and isinstance(task.visit, int)]
    found = [(task, legacy) for task, legacy in found if legacy is not None]
    if not found:
        return
    try:
        current = writer.current()
    except DamagedCatalogError:
        return  # the run's own checks report the catalog
    old = []
    for task, legacy in found:
        row = current.get((legacy, task.name))
        # that very file, unchanged since: a file replaced by another exposure (an O raw
        # of the same day and sequence number) is not a renumbering
        if (row is not None and _names_input(row.input, task)
                and writer.input_unchanged(row, task.stamp if is_url(task.path) else None)):
            old.append((task, legacy))
    if old:
        task, legacy = old[0]
        raise ConfigError(
            f"{writer.path}: {len(old)} input(s) are recorded here under the visit numbers an "
            f"earlier version gave LSST raws, e.g. {redact(task.path)} as visit {legacy}, now "
            f"{task.visit} (LSST's exposure id, which counts the camera controller CONTRLLR, "
            "as a Butler does); rows under both numbers would be current: measure them into "
            "a new catalog")


def _names_input(recorded: str, task: PlannedTask) -> bool:
    """Whether a row's recorded ``input`` or ``output`` is the file ``task`` names: its
    path as the catalog records it, or the file a symbolic link names."""
    return recorded in (redact(task.path), os.path.realpath(task.path))


def _corrected_in_place(row: Any, task: PlannedTask) -> bool:
    """Whether ``row`` is this catalog's in-place correction of the file ``task`` names: its
    output is the file its input names (a symbolic link's target), and that file given by
    another path (the link, or the target) is this input. Store objects are never
    corrected in place."""
    if not row.applied or is_url(task.path):
        return False
    return (_names_input(row.output, task)
            and row.output in (row.input, os.path.realpath(row.input)))


def _kept_corrections(planned: Iterable[PlannedTask], writer: CatalogWriter, done: set[str]
                      ) -> dict[str, tuple[PlannedTask, Any]]:
    """The flagged inputs (already corrected, no ``force``) whose current row this run must
    keep, by `output_key`, with that row: this catalog's in-place correction of that very
    file, or an ok measurement a ``force`` run made of it, unchanged since.

    Those rows are not this run's result (another config, a ``new_run`` over them, other
    measurement options, corrected copies asked for: `_resumed` left them out of ``done``),
    but the run can neither measure the input nor write a copy of it: its pixels are
    corrected. A flagged row would carry the header's pedestals as this run's measurement
    and replace the ok row (its interfaces, errors) as current, for good. The earlier row
    stays current instead, and the run says which inputs it left. An in-place correction
    only while the file is that correction: its header names a run of this catalog (or
    none) and holds the row's pedestals; a file corrected since by someone else is flagged
    as usual. A catalog whose files cannot be read (a ``new_run`` does not check them)
    keeps nothing.
    """
    candidates = [t for t in planned
                  if t.flag and not t.error and t.corrected and t.detector is not None
                  and output_key(t) not in done]
    if not candidates:
        return {}
    try:
        current = writer.current()
        runs = _run_options(writer.path)
    except DamagedCatalogError as err:
        logger.debug("not keeping earlier rows of corrected files: %s", err)
        return {}
    started = {run_id for run_id, _, _ in runs}
    forced = {run_id for run_id, _, recorded in runs if recorded.get("force")}
    written: list[tuple[PlannedTask, Any, str]] = []
    kept: dict[str, tuple[PlannedTask, Any]] = {}
    for task in candidates:
        row = current.get((task.visit, task.name))
        if row is None or row.status not in DONE:
            continue
        if (row.status == "ok" and row.run_id in forced and not row.applied
                and _names_input(row.input, task)
                and writer.input_unchanged(row)):
            kept[output_key(task)] = (task, row)  # a forced measurement of this file
            continue
        if task.corrected_by and task.corrected_by not in started:
            continue  # corrected by another catalog's run
        if _corrected_in_place(row, task):
            written.append((task, row, row.output))
    if written:
        still = _images_still_written(written, writer.path)
        kept.update({output_key(t): (t, row) for t, row, _ in written
                     if output_key(t) in still})
    return kept


def _kept_note(kept: Mapping[str, tuple[PlannedTask, Any]], config: AmpOffsetConfig) -> str:
    """The warning naming the inputs `_kept_corrections` left unmeasured."""
    tasks = [t for t, _ in kept.values()]
    runs = sorted({row.run_id for _, row in kept.values()})
    named = ", ".join(redact(t.path) for t in tasks[:_WARN_MOVED])
    more = f" and {len(tasks) - _WARN_MOVED} more" if len(tasks) > _WARN_MOVED else ""
    return (f"{len(tasks)} input(s) already corrected are neither measured nor written by "
            f"this run: {named}{more}; their current rows stay those of run(s) "
            f"{', '.join(runs)}. To measure them with this run's config (digest "
            f"{config_digest(config)}) or write corrected copies, restore the original files "
            f"and run again; {option_name('force')} measures the corrected pixels, and in "
            "place corrects them a second time")


def _unrecorded_corrections(planned: Iterable[PlannedTask], catalog: Path,
                            options: RunOptions, done: set[str], camera: Any = None,
                            digest: str = "") -> dict[str, DetectorResult]:
    """The rows to record for inputs a stopped run of this catalog corrected in place but
    never recorded, by `output_key`.

    A run stopped (Ctrl-C, SIGTERM, kill) while its detectors ran on the workers: they
    finish, overwrite their inputs and return results nobody records. Such an input's header
    says it was corrected (`~ampoffset_dask.pipeline.inputs.SUBTRACTED_KEY`) by a run
    (`~ampoffset_dask.pipeline.inputs.RUN_KEY`) in this catalog's ``runs`` table, and the
    catalog holds no ok or flagged row of that run with the pedestals applied for its
    (visit, detector). Its row (`recovered_result`) records the pedestals its header holds;
    it is never corrected again, with or without ``force``: those pedestals were subtracted
    once already. Inputs resumed (``done``), and files corrected by another catalog's run or
    by LSST's task, are left to the usual rules. A stopped run whose config digest is not
    ``digest`` (this run's) is named as such in the row's message: its pedestals were
    measured with another configuration.
    """
    candidates = [t for t in planned
                  if not t.error and t.corrected and t.corrected_by and t.hdu is None
                  and t.detector is not None and not is_url(t.path)
                  and output_key(t) not in done]
    if not candidates:
        return {}
    from ..catalog.read import arrow_table

    digests = {r["run_id"]: r["config_digest"] for r in arrow_table(
        catalog, "runs", columns=["run_id", "config_digest"]).to_pylist()}
    candidates = [t for t in candidates if t.corrected_by in digests]
    if not candidates:
        return {}
    recorded = _applied_rows(catalog, {t.corrected_by for t in candidates},
                             {int(t.visit) for t in candidates})
    return {output_key(t): recovered_result(
                t, options, camera, other_config=bool(digest)
                and digests[t.corrected_by] != digest)
            for t in candidates if (int(t.visit), str(t.name), t.corrected_by) not in recorded}


def _applied_rows(catalog: Path, run_ids: set[str], visits: set[int]
                  ) -> set[tuple[int, str, str]]:
    """``(visit, detector, run id)`` of the ok or flagged rows of ``run_ids`` (in ``visits``)
    that say their pedestals were applied: the recorded corrections of those runs."""
    import pyarrow.dataset as ds

    from ..catalog.read import arrow_table

    if not (catalog / "detectors").is_dir():
        return set()
    table = arrow_table(catalog, "detectors",
                        columns=["visit", "detector", "run_id", "status", "applied"],
                        filter=ds.field("visit").isin(sorted(visits))
                        & ds.field("run_id").isin(sorted(run_ids)))
    return {(r["visit"], r["detector"], r["run_id"]) for r in table.to_pylist()
            if r["status"] in DONE and r["applied"]}


def recovered_result(task: PlannedTask, options: RunOptions, camera: Any = None, *,
                     other_config: bool = False) -> DetectorResult:
    """The ``flagged`` row of an input a stopped run of this catalog (``task.corrected_by``)
    corrected in place without recording it (`_unrecorded_corrections`): the pedestals its
    header holds, applied, its output the file itself (so the next run finds it done); not
    read, measured or written. Flagged: the measurement's errors, amp levels and interfaces
    went with the lost result. ``other_config``: the stopped run measured with another
    configuration than this run's, which the message says."""
    try:
        output = str(_output_path(task, options))
    except InputError:  # e.g. hard-linked since: the file the correction replaced all the same
        output = os.path.realpath(task.path)
    held = ("the pedestals its header holds are recorded" if task.applied else
            "its header holds no pedestals, so none are recorded")
    return DetectorResult(
        visit=int(task.visit), detector=str(task.name), status="flagged",
        error=(f"corrected in place by run {task.corrected_by} of this catalog, which stopped "
               f"before recording it ({task.path}); {held}"
               + (" (measured with that run's configuration, not this run's)"
                  if other_config else "") + "; not corrected again"),
        input=task.path, output=output,
        detector_id=task.detector.id if task.detector else None,
        dataset_id=task.dataset_id or "", geometry=geometry_digest(task.detector, camera),
        **{**_applied_fields(task), "applied": True})


#: Inputs named one by one in the warnings about rows measured from another input.
_WARN_MOVED = 10


def geometry_digest(detector: Any, camera: Any = None) -> str:
    """A digest of the amp layout ``detector`` is measured with: its amp boxes, and the raw
    boxes and flips of ``camera``'s detector of that name (what assembles a raw). Recorded
    with each row; a resume measures a detector again when it changed (an edited camera
    file, a camera given where the headers gave the layout)."""
    if detector is None:
        return ""
    layout = [detector.width, detector.height,
              [(a.name, a.x0, a.y0, a.width, a.height) for a in detector.amplifiers]]
    if camera is not None and hasattr(camera, "raw_amps") and detector.name in camera:
        try:
            layout.append(repr(camera.raw_amps(detector.name)))
        except InputError:  # a camera without raw boxes for it
            pass
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]


def _resumed(planned: Iterable[PlannedTask], writer: CatalogWriter, config: AmpOffsetConfig,
             options: RunOptions, outputs: Mapping[str, Any], camera: Any = None) -> set[str]:
    """The `output_key` of each planned input that a resumed run skips: the catalog's
    current row of its (visit, detector) already is this run's result.

    That row must be ok or flagged, of this config and of this very input (another input of
    the same (visit, detector) is measured, its row superseding, with a warning naming both
    files; so is the failed row of another input that could not be planned), the input
    unchanged since (size and modification time), and, when this run writes corrected
    images, must name the one this run would write, still there and still holding the row's
    pedestals (a file or an object another run may have replaced). An input flagged "already
    corrected" is skipped (not flagged again, which would supersede the
    measurement) when that row is the correction of this file in place, with or without
    ``force``, as long as its header still says it is corrected (a restored original is
    measured and corrected again); so is one whose ok row a run with ``force`` measured
    from it, unchanged since, without ``force`` too (it is not flagged anew). With
    ``force``, the row of another input whose header says it was already corrected must
    come from a run that forced it too: a row flagged
    "already corrected" is what ``force`` asks to replace. The row's run must have measured
    with this run's overscan and gain options (`_MEASUREMENT_OPTIONS`), and must not be
    older than the latest ``new_run`` run over this input (an interrupted ``--new-run`` is
    finished by the next run, not left half done).
    """
    current = writer.current()
    if not current:
        return set()
    digest = config_digest(config)
    runs = _run_options(writer.path)
    forced = {run_id for run_id, _, recorded in runs if recorded.get("force")}
    measured = {run_id: _measurement(recorded) for run_id, _, recorded in runs}
    started = {run_id: start for run_id, start, _ in runs}
    renewed = _renewed_inputs(writer.path, runs)
    mine = _asked(options)
    done: set[str] = set()
    moved: list[tuple[PlannedTask, str]] = []
    written: list[tuple[PlannedTask, Any, str]] = []  # done if the image is still the row's
    for task in planned:
        row = current.get((task.visit, task.name))
        if row is None:
            continue
        path = redact(task.path)  # as the catalog records it
        if task.error:
            # the failed row of an input that could not be planned (a damaged copy whose
            # header names an identity measured from another file) supersedes too: said
            if row.input != path and row.status in DONE:
                moved.append((task, row.input))
            continue
        in_place = _corrected_in_place(row, task)
        if row.input != path and not in_place:
            moved.append((task, row.input))  # flagged too: its row supersedes all the same
            continue
        if row.status not in DONE or row.config_digest != digest:
            continue
        # a --new-run over this input asked for it to be measured anew: a row older than
        # that run is not its result, even when the run stopped before reaching it
        if path in renewed and started.get(row.run_id) is not None \
                and started[row.run_id] < renewed[path]:
            continue
        # another amp layout (a camera file edited, a camera given instead of the headers'
        # layout) is another measurement; rows of earlier versions do not say theirs
        if row.geometry and row.geometry != geometry_digest(task.detector, camera):
            continue
        # pixels measured otherwise (another gain or overscan: ADU beside electrons) are
        # not this run's result, whatever the latest run was
        if measured.get(row.run_id, _measurement({})) != mine:
            continue
        if in_place:
            # this catalog corrected the file in place (which changed its size and time):
            # done while its header still says so, and holds this row's pedestals, even with
            # force; a file restored since (a backup keeps the original's size and time),
            # or corrected since by another catalog's run (its card, or other pedestals),
            # is not (the card of a correction recorded later from the header names the
            # stopped run that made it: a run of this catalog all the same)
            if not task.corrected or (task.corrected_by and task.corrected_by not in started):
                continue
            if options.apply and not options.in_place:
                continue  # this run writes corrected copies, which the row is not
            written.append((task, row, row.output))
            continue
        if task.flag and not (row.status == "ok" and row.run_id in forced):
            # flagged again unless a run with force measured it: then, this very input
            # unchanged since (below), its ok row is what force asked for and stays current
            continue
        elif task.corrected and options.force and row.run_id not in forced:
            continue
        elif not writer.input_unchanged(row):
            continue
        image = _output_done(task, row.output, options, outputs) if options.apply else None
        if options.apply and image is None:
            continue
        if image is not None:
            written.append((task, row, image))
            continue
        done.add(output_key(task))
    if written:
        done.update(_images_still_written(written, writer.path, options.storage_options))
    for task, other in moved[:_WARN_MOVED]:
        doing = ("recording the failure of" if task.error
                 else "recording as already corrected" if task.flag else "measuring")
        logger.warning("visit %s detector %s: %s %s, whose row supersedes the catalog's "
                       "current row, which came from another input: %s", task.visit,
                       task.name, doing, redact(task.path), other)
    if len(moved) > _WARN_MOVED:
        logger.warning("and %d more detector(s) whose current row came from another input",
                       len(moved) - _WARN_MOVED)
    return done


def _images_still_written(written: list[tuple[PlannedTask, Any, str]], catalog: Path,
                          storage: Mapping[str, Any] | None = None) -> set[str]:
    """The `output_key` of each ``(task, row, image)`` whose corrected image (a file, or an
    object read with ``storage`` options) still holds the pedestals of its row (LSST's keys
    in its header): another catalog writing to the same folder or prefix, or anyone, may
    have replaced it since, and then it is written again."""
    import pyarrow.dataset as ds

    from ..catalog.read import arrow_table
    from .inputs import _applied_pedestals

    # only their rows: a catalog of many visits holds millions of pedestals
    runs = sorted({row.run_id for _, row, _ in written})
    visits = sorted({int(task.visit) for task, _, _ in written})
    table = arrow_table(catalog, "pedestals",
                        columns=["visit", "detector", "run_id", "amp_index", "pedestal"],
                        filter=ds.field("visit").isin(visits) & ds.field("run_id").isin(runs))
    rows: dict[tuple[int, str, str], dict[int, float]] = {}
    for r in table.to_pylist():
        rows.setdefault((r["visit"], r["detector"], r["run_id"]), {})[r["amp_index"]] = (
            r["pedestal"])
    done = set()
    for task, row, image in written:
        mine = rows.get((task.visit, task.name, row.run_id), {})
        header = _applied_pedestals(image, task.detector, storage) if task.detector else ()
        if header and len(mine) == len(header) and all(
                abs(mine.get(i, math.nan) - v) <= 1e-6 for i, v in enumerate(header)):
            done.add(output_key(task))
        else:
            logger.info("%s: the corrected image of visit %s detector %s no longer holds the "
                        "pedestals of its row (replaced or corrected since): not done",
                        row.output, task.visit, task.name)
    return done


def _renewed_inputs(catalog: Path, runs: list[tuple[str, Any, dict[str, Any]]]
                    ) -> dict[str, Any]:
    """The start of the latest ``new_run`` run that listed each input (by path, as
    recorded): rows of that input from runs started before it are not done. A run that
    failed without recording a row (refused: a damaged catalog file) renewed nothing."""
    from ..catalog.read import arrow_table

    renewing = {run_id: start for run_id, start, recorded in runs if recorded.get("new_run")}
    if not renewing:
        return {}
    out: dict[str, Any] = {}
    table = arrow_table(catalog, "runs", columns=[
        "run_id", "inputs", "status", "n_ok", "n_flagged", "n_failed"])
    for row in table.to_pylist():
        start = renewing.get(row["run_id"])
        if start is None or recorded_nothing(row):
            continue
        try:
            paths = [r["path"] for r in json.loads(row["inputs"] or "[]")]
        except (ValueError, TypeError, KeyError):
            continue
        for path in paths:
            if path not in out or out[path] < start:
                out[path] = start
    return out


def _run_options(catalog: Path, *, recorded_only: bool = False
                 ) -> list[tuple[str, Any, dict[str, Any]]]:
    """``(run id, start, options)`` of the catalog's runs, oldest first (options as
    recorded, `RunOptions.to_record`; empty for a run recorded without readable ones);
    ``recorded_only``: without the runs that failed before recording a row
    (`~ampoffset_dask.catalog.writer.recorded_nothing`)."""
    from ..catalog.read import arrow_table

    out = []
    rows = arrow_table(catalog, "runs", columns=[
        "run_id", "started", "options", "status", "n_ok", "n_flagged", "n_failed"]).to_pylist()
    for row in sorted(rows, key=lambda r: r["started"]):
        if recorded_only and recorded_nothing(row):
            continue
        try:
            options = json.loads(row["options"] or "{}")
        except ValueError:
            options = {}
        out.append((row["run_id"], row["started"],
                    options if isinstance(options, dict) else {}))
    return out


#: The run options that change what the pixels measured are (and the pedestals' unit), with
#: their defaults (runs recorded before an option existed ran with its default).
_MEASUREMENT_OPTIONS = {"overscan": "auto", "gain": None}


def _measurement(options: Mapping[str, Any]) -> dict[str, Any]:
    """A run's `_MEASUREMENT_OPTIONS` as recorded (`RunOptions.to_record`)."""
    return {k: options.get(k, d) for k, d in _MEASUREMENT_OPTIONS.items()}


def _asked(options: RunOptions) -> dict[str, Any]:
    """This run's `_MEASUREMENT_OPTIONS`, to compare with a recorded run's `_measurement`."""
    return {k: getattr(options, k) for k in _MEASUREMENT_OPTIONS}


def _check_same_measurement(catalog: Path, opts: RunOptions) -> None:
    """Refuse, as a changed config is refused (unless ``new_run``), a run whose overscan or
    gain option differs from the latest run's: resume would keep that run's pedestals beside
    this one's (ADU beside electrons, raw levels with and without their bias removed)."""
    runs = [] if opts.new_run else _run_options(catalog, recorded_only=True)
    if not runs:
        return
    run_id, _, latest = runs[-1]
    theirs = _measurement(latest)
    mine = _asked(opts)
    if theirs == mine:
        return

    def said(options: Mapping[str, Any]) -> str:
        unit = "electrons" if options["gain"] == "nominal" else "ADU"
        return f"overscan {options['overscan']!r}, gain {options['gain']!r} ({unit})"

    raise ConfigError(
        f"{catalog}: the catalog holds results measured with {said(theirs)} (run {run_id}); "
        f"this run asks for {said(mine)}, and the two pedestals cannot be compared or mixed: "
        "use another output, or start a new run (new_run=True, --new-run) whose results "
        "replace earlier ones")


def _output_done(task: PlannedTask, recorded: str, options: RunOptions,
                 outputs: Mapping[str, Any]) -> str | None:
    """The corrected image this run would write for ``task`` if ``recorded`` (a row's
    output, as the catalog names it: `redact`) is that image and it still exists, else
    None."""
    want = outputs.get(output_key(task))
    if want is None:  # a flagged input: check_outputs left it out
        try:
            want = _output_path(task, options)
        except InputError:
            return None
    want = str(want)
    if not recorded or recorded != redact(want):
        return None
    if not is_url(want):
        return want if os.path.exists(want) else None
    from ..io.remote import filesystem

    try:
        return want if filesystem(want, options.storage_options).exists(want) else None
    except Exception:  # the store cannot tell: write it again rather than trust it
        return None


def _check_detector(camera: Any, detector: Any) -> None:
    """A detector the user named must be one of the camera the user named (one error for
    the run, before anything is planned, not a failed row per input)."""
    if camera is None or detector is None or not hasattr(camera, "__getitem__"):
        return
    try:
        camera[detector]
    except (KeyError, IndexError, InputError) as exc:
        raise InputError(f"--detector {detector!r}: {exc}") from exc


def _resolve_camera(camera: Any) -> Any:
    """A camera named by the user, loaded once before planning: an unknown name, a missing
    file or a schema error is the user's mistake for the whole run (an error, not a failed
    row per input)."""
    if camera is None or not isinstance(camera, (str, os.PathLike)):
        return camera
    from ..cameras import get_camera

    return get_camera(camera)


def check_config_fits(planned: Iterable[PlannedTask], config: AmpOffsetConfig) -> None:
    """The config's edge strips and windows must fit every planned detector's amps: a config
    that does not fit is the user's mistake for the run, found before any cluster starts."""
    from ..algorithm.measure import check_amp_geometry

    seen = set()
    for task in planned:
        if task.error or task.detector is None:
            continue
        shape = tuple((a.width, a.height) for a in task.detector.amplifiers)
        if shape in seen:
            continue
        seen.add(shape)
        try:
            check_amp_geometry(task.detector, config)
        except GeometryError:
            continue  # this detector's own problem: its task reports it as a failed row


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
    # changed since `prepare` recorded them: measuring with them would record rows under a
    # config or options the runs table does not hold
    digest = config_digest(run.config)
    changed = [what for what, differs in (
        ("options", run.options_record and _options_text(opts) != run.options_record),
        ("config", run.config_digest and digest != run.config_digest)) if differs]
    if changed:
        detail = (f" (config digest {run.config_digest}, now {digest})"
                  if "config" in changed else "")
        err = ConfigError(
            f"{run.catalog}: the {' and '.join(changed)} of run {run.run_id} changed after "
            f"prepare() recorded them{detail}; nothing was measured: prepare the run again "
            "with those to use")
        _finish_stopped(run, err)
        raise err
    timings = summary.timings
    io_retries = int(opts.retries if opts.retries is not None else _config.get("io-retries", 3))
    io_delay = float(_config.get("io-retry-delay", 0.5))

    def record(result: DetectorResult) -> None:
        # recorded and counted, or neither: a stopped run's record takes these counts (the
        # writer redacts the result in place first, `storable`, so the summary's errors
        # hold no credentials either)
        with signals_held():
            try:
                writer.add(result)
            except CatalogWriteError:
                # kept in memory all the same, written with its visit when the run is closed
                count(result)
                raise
            count(result)

    def count(result: DetectorResult) -> None:
        if result.status == "failed":
            summary.n_failed += 1
            summary.failed.append((result.visit, result.detector or result.input,
                                   result.error))
        elif result.status == "flagged":
            summary.n_flagged += 1
            summary.flagged.append((result.visit, result.detector or result.input,
                                    result.error))
        else:
            summary.n_ok += 1

    try:
        _compute(run, client, record, io_retries, io_delay)
    except BaseException as exc:
        _finish_stopped(run, exc)
        raise
    summary.seconds = time.perf_counter() - run.t_start
    timings["total"] = summary.seconds
    writer.finish_run(summary.counts(), timings=timings)
    logger.info("%s", summary)
    return summary


def _finish_stopped(run: PreparedRun, exc: BaseException) -> None:
    """Record the end of a run that ``exc`` stopped (``interrupted`` on Ctrl-C or SIGTERM,
    else ``failed``) with this run's counts: the catalog writer, left to itself, would
    count only the rows it recorded (no skipped inputs, no tasks in flight)."""
    summary = run.summary
    summary.seconds = time.perf_counter() - run.t_start
    summary.timings["total"] = summary.seconds
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    try:
        run.writer.finish_run(summary.counts(), timings=summary.timings, status=status)
    except Exception as err:  # the run's own error is the one to raise
        # the writer tries again, and says so, when the run is closed
        logger.debug("could not record the end of run %s: %s", run.run_id, err)


def _compute(run: PreparedRun, client: Any, record: Callable[[DetectorResult], None],
             io_retries: int, io_delay: float) -> None:
    """The body of `execute`: record the planning results, submit the runnable tasks and
    record their results; ``run.summary`` counts as it goes (``n_submitted``: tasks sent
    to the cluster, resubmissions not counted again)."""
    opts, writer, summary = run.options, run.writer, run.summary
    timings = summary.timings
    for rec in run.failures:
        record(rec)
    if summary.n_skipped:
        logger.info("resuming: %d detector(s) already in %s", summary.n_skipped, run.catalog)

    if run.runnable:
        digest = config_digest(run.config)
        # the workers may not share this process's environment: forward its S3 settings,
        # with the explicit options over them
        storage = environment_options(
            [t.path for t in run.runnable] + [str(opts.output_images or "")])
        if opts.storage_options is not None:
            storage = {**(storage or {}), **opts.storage_options}
        submit_items = (
            SubmitItem(
                key=task.key(run.run_token),
                kwargs={
                    "path": task.path,
                    "detector": task.detector,
                    "config": run.config,
                    "visit": task.visit,
                    "camera": run.camera,
                    "output": run.outputs.get(output_key(task)),
                    "in_place": opts.in_place,
                    "io_retries": io_retries,
                    "io_retry_delay": io_delay,
                    "storage_options": storage,
                    "overscan": opts.overscan,
                    "gain": opts.gain,
                    "hdu": task.hdu,
                    "planned_stamp": task.stamp,
                    # the catalog's run id, into the corrected file's header: a file this
                    # run corrects but never records is recognised as its own later
                    "run_id": run.run_id,
                    "log_run": run.run_token,
                },
                tag=task,
            )
            for task in run.runnable
        )

        def sent(items: Iterable[SubmitItem]) -> Iterator[SubmitItem]:
            for item in items:
                summary.n_submitted += 1  # counted as sent, for a run stopped midway
                yield item

        from .worker_logs import forward_run_logs  # imports distributed

        t = time.perf_counter()
        handle: ClientHandle = get_client(client, n_workers=opts.n_workers,
                                          profile=opts.performance_report is not None)
        timings["cluster"] = time.perf_counter() - t
        try:
            dask_client = handle.client
            summary.dashboard_link = handle.dashboard_link
            writer.annotate_run(scheduler=str(dask_client.scheduler.address))
            has_workers = _has_workers(dask_client)
            if run.runnable and not has_workers:
                # the tasks wait for workers: say so rather than look hung
                logger.warning("the scheduler at %s has no workers yet: the %d task(s) wait "
                               "for one to join (Ctrl-C stops the run; what finished is "
                               "kept)", dask_client.scheduler.address, len(run.runnable))
            # the cluster's size is read again as the run goes: the workers of a cluster
            # started here (gateway, jobqueue, Kubernetes) or scaled meanwhile join later
            limit = (int(opts.max_in_flight) if opts.max_in_flight
                     else _InFlight(dask_client))
            t = time.perf_counter()
            n_before = len(run.failures) + summary.n_skipped
            bar = _progress(n_before + len(run.runnable), n_before, opts.progress)

            def on_error(item: SubmitItem, exc: BaseException) -> Any:
                if _scheduler_lost(dask_client, exc):
                    raise ClusterError(
                        f"lost the Dask scheduler {dask_client.scheduler.address} during the "
                        f"run ({type(exc).__name__}: {exc}); the results so far are in "
                        f"{run.catalog}: run again to resume") from exc
                return _task_error(item, exc)

            versions = _WorkerVersions(dask_client, writer, summary)
            dropped: list[SubmitItem] = []

            def resubmit(item: SubmitItem, exc: BaseException) -> bool:
                if not _dropped(dask_client, exc) or item.resubmits >= _RESUBMITS:
                    return False
                # one warning per run, not one per task in flight
                logger.log(logging.DEBUG if dropped else logging.WARNING,
                           "the scheduler dropped the task of visit %s detector %s (%s); "
                           "submitting it again%s", item.tag.visit, item.tag.name,
                           _one_line(exc), "" if dropped else " (and any other it drops)")
                dropped.append(item)
                return True

            with forward_run_logs(dask_client, run.run_token, opts.forward_logs), \
                    _performance_report(dask_client, opts.performance_report), bar, \
                    _workers_watched(dask_client, has_workers):
                for item, got in stream_tasks(dask_client, identified_job,
                                              sent(submit_items), max_in_flight=limit,
                                              on_error=on_error, resubmit=resubmit):
                    result = _checked(item.tag, digest, versions.checked(item.tag, got))
                    result.dataset_id = item.tag.dataset_id or ""
                    result.geometry = geometry_digest(item.tag.detector, run.camera)
                    record(result)
                    bar.update(1)
                    if summary.n_failed:
                        bar.set_postfix(failed=summary.n_failed, refresh=False)
            timings["compute"] = time.perf_counter() - t
        finally:
            handle.close()


class _InFlight:
    """The default bound on tasks in flight (`default_in_flight`), read again from the
    scheduler at most every ``interval`` seconds."""

    def __init__(self, client: Any, interval: float = 0.5) -> None:
        self.client = client
        self.interval = interval
        self.value = default_in_flight(client)
        self.read = time.monotonic()

    def __call__(self) -> int:
        if time.monotonic() - self.read >= self.interval:
            self.value = default_in_flight(self.client)
            self.read = time.monotonic()
        return self.value


#: The package whose version must be the same on the client and every worker.
_PACKAGE = "ampoffset-dask"


class _WorkerVersions:
    """Checks, once per worker that returns a result, that it runs the client's package
    versions (`~ampoffset_dask.catalog.provenance.package_versions`).

    The ``runs`` table records the client's versions for the whole run: a worker of another
    image or environment (a rolling upgrade, a stale node) would otherwise put another
    version's numbers in the catalog without a word. A worker running another
    ampoffset-dask has its results recorded as failed rows naming both versions (a re-run
    on a consistent cluster measures them); other differences (numpy, astropy...) are
    reported once per worker and recorded in the run's ``versions`` under ``workers``.
    """

    def __init__(self, client: Any, writer: CatalogWriter, summary: RunSummary) -> None:
        from ..catalog.provenance import package_versions

        self.client = client
        self.writer = writer
        self.summary = summary
        self.mine = package_versions()
        self.differences: dict[str, dict[str, str]] = {}  # worker -> {package: its version}

    def _of(self, worker: str) -> dict[str, str]:
        if worker in self.differences:
            return self.differences[worker]
        from ..catalog.provenance import package_versions

        try:
            theirs = self.client.run(package_versions, workers=[worker]).get(worker) or {}
        except Exception as exc:  # gone since its result: nothing more will come from it
            logger.debug("cannot ask worker %s for its versions: %s", worker, exc)
            theirs = {}
        diff = {k: str(v) for k, v in theirs.items() if self.mine.get(k) != v}
        self.differences[worker] = diff
        if diff:
            shown = ", ".join(f"{k} {v} (here {self.mine.get(k, 'not installed')})"
                              for k, v in sorted(diff.items()))
            consequence = ("its results are recorded as failed" if _PACKAGE in diff
                           else "its results are recorded; the run's versions list it")
            note = (f"worker {worker} runs other package versions than this client: {shown}; "
                    f"{consequence} (run the client and every worker from one image or "
                    "environment)")
            logger.warning("%s", note)
            self.summary.notes.append(note)
            self.writer.annotate_run(versions=json.dumps(
                {**self.mine, "workers": {w: d for w, d in self.differences.items() if d}},
                sort_keys=True))
        return diff

    def checked(self, task: PlannedTask, got: tuple[str | None, DetectorResult]
                ) -> tuple[str | None, DetectorResult]:
        """``task``'s ``(config digest, result)``, or ``(None, failed row of task)`` when
        its worker runs another ampoffset-dask (checked first: such a worker may not even
        compute the same config digest)."""
        result = got[1]
        if got[0] is None or not result.worker or result.worker.startswith("pid "):
            return got
        theirs = self._of(result.worker).get(_PACKAGE)
        if theirs is None:
            return got
        return None, DetectorResult.failure(
            f"measured by worker {result.worker}, which runs {_PACKAGE} {theirs}, not this "
            f"client's {self.mine.get(_PACKAGE)}: not recorded; run the client and every "
            "worker on one version, then run again",
            visit=task.visit, detector=task.name, input=task.path,
            detector_id=task.detector.id if task.detector else None, worker=result.worker,
            attempts=result.attempts, seconds=result.seconds)


#: Times a task the scheduler dropped (a restart, asked by any client of a shared
#: scheduler) is submitted again before it is recorded as failed.
_RESUBMITS = 3


def _dropped(client: Any, exc: BaseException) -> bool:
    """True when a task error means the scheduler forgot the task while this client stayed
    connected (``Client.restart`` by any client of the scheduler cancels every task), not
    that the task failed: submitting it again is safe."""
    from concurrent.futures import CancelledError

    return isinstance(exc, CancelledError) and client.status == "running"


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (dask's cancellation messages span two)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _scheduler_lost(client: Any, exc: BaseException) -> bool:
    """True when a task error means the client lost its scheduler (the futures were
    cancelled because the connection closed), not that the task failed."""
    from concurrent.futures import CancelledError

    from distributed.comm.core import CommClosedError

    if isinstance(exc, CommClosedError | OSError):
        return True
    return isinstance(exc, CancelledError) and client.status != "running"


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
        (``distributed.scheduler.allowed-failures``) and end as a failed row ("worker died");
        tasks a scheduler restart drops (``Client.restart`` by any client of a shared
        scheduler) are submitted again, up to 3 times. A result from a worker running
        another ampoffset-dask version than this process is a failed row naming both.

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
    >>> sim = simulate_focal_plane(tmp / "sim", "lsstcam", detectors=["R22_S11"], scale=0.05)
    >>> summary = process(tmp / "sim", tmp / "catalog", client="local:1", progress=False)
    >>> summary.n_ok, summary.n_failed
    (1, 0)
    >>> read_catalog(tmp / "catalog", "pedestals")["amp"].tolist()[:3]
    ['C10', 'C11', 'C12']
    """
    opts = RunOptions.from_kwargs(options, **option_values)
    check_spec(client)  # before the run is opened in the catalog
    check_n_workers(client, opts.n_workers)
    spec = client if isinstance(client, (str, type(None))) else type(client).__name__
    with prepare(inputs, output, config=config, options=opts,
                 scheduler=str(spec or "local")) as run:
        return execute(run, client)
