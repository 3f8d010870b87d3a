"""Notebook API: the per-detector `dask.delayed` graph, and measuring an in-memory visit.

`build_graph` gives, for each (visit, detector), the chain read -> measure -> [write] ->
result as delayed objects, so a notebook can inspect it, ``dask.visualize`` it and
``dask.compute`` it on any scheduler. For thousands of detectors prefer `process`, which
bounds what is in flight and streams results to a catalog.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask

from ..algorithm.apply import apply_pedestals
from ..catalog import DetectorResult
from ..config import AmpOffsetConfig, as_config
from ..geometry import Detector
from ..io.remote import is_url, redact
from ..io.sections import map_once
from . import _config
from .detector_job import (
    check_read_unchanged,
    check_shape,
    corrected_cards,
    failure_message,
    flag_harm,
    flag_unwritten,
    planning_failure,
    with_io_retries,
    write_corrected,
)
from .inputs import PlannedTask, plan_tasks
from .options import RunOptions
from .run import check_config_fits

__all__ = ["build_graph", "measure_visit"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Failed:
    """What a step computes to for a detector that failed (the failed record's message):
    the steps after it pass it on, so one bad detector never fails the whole graph."""

    message: str


def _read(path: str, detector: Detector, camera: Any = None, *, hdu: int | None = None,
          overscan: str = "auto", gain: str | None = None, variance: bool = True,
          stamp: tuple[int, int] | None = None, io_retries: int = 3,
          io_retry_delay: float = 0.5) -> Any:
    from ..io.fits import read_exposure
    from ..io.sections import check_stamp, file_stamp

    try:
        # the geometry was planned from the file as it was then: a file replaced since is
        # refused
        check_stamp(path, stamp, "the graph was built", "build the graph again")
        before = stamp if stamp is not None else file_stamp(path)
        # hdu: one CCD of a multi-CCD file is read from its own HDU, not the file's first one
        exposure = with_io_retries(
            lambda: read_exposure(path, camera=camera, detector=detector, overscan=overscan,
                                  gain=gain, hdu=hdu, variance=variance),
            retries=io_retries, delay=io_retry_delay, what=f"reading {path}")
        # replaced while it was read (an in-place correction by another run): its pixels
        # may be of two versions
        check_read_unchanged(path, before)
        check_shape(path, exposure.image, detector)
    except Exception as exc:
        return _Failed(failure_message(exc, detector.name, path, io_retries))
    return exposure


def _measure(exposure: Any, detector: Detector, config: AmpOffsetConfig | None) -> Any:
    from ..algorithm.measure import measure_detector

    if isinstance(exposure, _Failed):
        return exposure
    try:
        _config.apply_kernels()
        return measure_detector(exposure.image, exposure.mask, detector, config,
                                mask_planes=exposure.mask_planes)
    except Exception as exc:
        return _Failed(failure_message(exc, detector.name, str(exposure.info.path), 0))


def _write(exposure: Any, measurement: Any, detector: Detector, output: str,
           visit: int, camera: Any = None, stamp: tuple[int, Any] | None = None
           ) -> tuple[str, str]:
    """``(output, "")`` once written, or ``("", reason)``: as in `process`, the measurement
    stands when only its corrected image could not be written (its result is flagged).
    ``stamp``: the input's when the graph was built (the pixels were read from it)."""
    from ..errors import AmpOffsetError, InputError

    if isinstance(measurement, _Failed):  # nothing measured: nothing to write
        return "", ""
    source = str(exposure.info.path)
    try:
        # build_graph checked the outputs when it was built; a graph computed later, or
        # built by hand, still never replaces its input (as `DetectorJob` refuses)
        if Path(output).resolve() == Path(source).resolve():
            raise InputError(f"{source}: refusing to overwrite the input with its corrected "
                             "copy")
        # The copy's header cards are the input's, read now: a file rewritten since its
        # pixels were read (another run correcting it in place) would give the copy another
        # version's cards over these pixels, so it is not written then.
        cards = corrected_cards(source, exposure, visit, detector, camera)
        check_read_unchanged(source, stamp)
        corrected = apply_pedestals(exposure.image, measurement.pedestals, detector)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        write_corrected(output, source, exposure, corrected, measurement, visit, detector,
                        camera, cards=cards)
    except (OSError, AmpOffsetError) as exc:
        logger.warning("%s: corrected image not written: %s", source, exc)
        return "", f"corrected image not written: {exc}"
    return output, ""


def _result(measurement: Any, exposure: Any, written: tuple[str, str] | None, visit: int,
            detector: Detector, path: str, dataset_id: str | None,
            config: AmpOffsetConfig | None = None) -> DetectorResult:
    if isinstance(measurement, _Failed):  # `process`'s failed row
        failed = DetectorResult.failure(measurement.message, visit=visit,
                                        detector=detector.name, input=path,
                                        detector_id=detector.id)
        failed.dataset_id = dataset_id or ""
        return failed
    output, write_error = written or ("", "")
    result = DetectorResult.from_measurement(measurement, visit=visit, detector=detector,
                                             input=path, output=output or None,
                                             overscan=exposure.isr.overscan,
                                             gain=exposure.isr.gain)
    result.dataset_id = dataset_id or ""
    flag_harm(result, measurement, config)  # flagged as `process` flags them
    return flag_unwritten(result, write_error)


def _checked_outputs(planned: list[PlannedTask], options: RunOptions) -> dict[str, Path]:
    """`process`'s output checks (`run.check_outputs`), then the output folder created and
    marked as `process` marks it; a refused graph leaves no folder behind."""
    from ..errors import InputError
    from .run import _remove_created, check_outputs, mark_output_images

    if not options.apply:
        return {}
    folder = options.output_images
    if is_url(folder):  # `_write` writes local files only; `process` uploads to a store
        raise InputError(f"{redact(str(folder))}: build_graph writes corrected images to a "
                         "local folder; use process() for an object-store prefix")
    outputs = check_outputs(planned, options)  # duplicates, an output over an input
    created = [] if Path(folder).exists() else [folder]
    try:
        mark_output_images(options)
    except BaseException:
        _remove_created(created)
        raise
    return outputs


def build_graph(
    inputs: Any,
    *,
    camera: Any = None,
    config: AmpOffsetConfig | None = None,
    output_images: str | os.PathLike | None = None,
    overscan: str = "auto",
    gain: str | None = None,
    force: bool = False,
    visit: int | str | None = None,
    detector: str | None = None,
) -> dict[tuple[int, str], Any]:
    """The per-detector delayed graph of a set of files (typically one visit).

    The inputs are planned and checked as `process` plans and checks them: each CCD of a
    multi-CCD file is its own detector, read from its HDU; an input whose header says it was
    already corrected is not read, measured or corrected again unless ``force`` (its value
    computes to a ``flagged`` result holding the pedestals its header records); outputs that
    would overwrite an input, or each other, are refused before anything is built. As in
    `process`, one bad detector never fails the graph: an input that cannot be planned, read
    or measured computes to a ``failed`` result whose ``error`` says why, and the others
    compute as usual.

    Parameters
    ----------
    inputs : path, glob, folder, manifest or list of them
        As for `process`. Headers are read now; pixels only when the graph runs.
    camera : str or Camera, optional
        Camera for the geometry (default: from the headers).
    config : AmpOffsetConfig, optional
        LSST defaults when omitted.
    output_images : path-like, optional
        Add a write step: corrected exposures go to
        ``<folder>/<visit>/<detector>/<input name>.fits``, as with `process`; the folder is
        marked as one of corrected images (later runs and graphs do not take inputs from it).
        A local folder, neither an input folder nor one holding an input folder.
    overscan : {"auto", "per-row", "mean", "none"}
        Serial overscan subtraction of raw pixels, as `process`'s ``overscan``.
    gain : {None, "nominal"}
        ``"nominal"``: apply the camera's nominal gains, as `process`'s ``gain``.
    force : bool
        Measure (and correct) inputs whose header says they were already corrected, as
        `process`'s ``force``.
    visit, detector : optional
        Identity of the inputs whose headers and manifest give none, as `process`'s.

    Returns
    -------
    dict
        ``{(visit, detector): Delayed}``; each value computes to a
        `~ampoffset_dask.catalog.DetectorResult`. Task keys are ``ampoffset-read-<graph>-
        <visit>-<detector>``, ``ampoffset-measure-...``, ``ampoffset-write-...`` and
        ``ampoffset-<graph>-<visit>-<detector>`` for the result, ``<graph>`` unique to each
        call (graphs of the same inputs with other configs, computed together or on one
        shared scheduler, never share a key, so never each other's results; the result's key
        is the only key of a flagged input,
        and of one that could not be planned: its key is its record's
        `~ampoffset_dask.catalog.DetectorResult.key`, ``input:<path>`` in place of an
        unknown detector, and in place of a detector another input of the graph is (a
        manifest row naming a missing copy), ``#<hdu>`` added for a CCD of a multi-CCD
        file). ``dask.compute(graph)`` computes all of them;
        ``dask.visualize(*graph.values())`` draws them. Reads retry transient I/O errors
        as `process`'s tasks do (``ampoffset.io-retries``, ``ampoffset.io-retry-delay``).

    Raises
    ------
    InputError
        If no inputs are found, two inputs are the same (visit, detector), ``output_images``
        is, or holds, an input folder, or a corrected image would overwrite an input or
        another corrected image.
    ConfigError
        For an invalid ``overscan``, ``gain``, ``visit``, ``detector`` or ``output_images``.
    """
    from .run import _resolve_camera, discover_checked, flagged_result, output_key

    # RunOptions: the same validation (absolute output folder, overscan/gain names) and the
    # same object `process`'s output checks take
    options = RunOptions(camera=camera, output_images=output_images, overscan=overscan,
                         gain=gain, force=force, visit=visit, detector=detector)
    items = discover_checked(inputs, options.output_images)
    # planned with the camera loaded once, as process does; the read tasks get ``camera`` as
    # given (a name, not the loaded Camera, keeps each task small), a camera file by its
    # absolute path (the tasks may run in another working directory)
    camera = _camera_for_tasks(camera)
    planned = plan_tasks(items, camera=_resolve_camera(options.camera), force=options.force,
                         visit=options.visit, detector=options.detector)
    bad = [t for t in planned if t.error]
    if bad:
        logger.warning("%d of %d input(s) cannot be measured (failed results): %s", len(bad),
                       len(planned), "; ".join(t.error for t in bad[:3]))
    outputs = _checked_outputs([t for t in planned if not t.error], options)
    # converted and checked as `process` does, and copied: the graph is computed later, and
    # an edit of the caller's config meanwhile (one object reused across notebook cells)
    # must not change the graph's pedestals
    config = as_config(config).copy()
    _config.check_settings()
    check_config_fits(planned, config)  # as `process`: before anything is computed
    io_retries = int(_config.get("io-retries", 3))
    io_delay = float(_config.get("io-retry-delay", 0.5))
    graph: dict[tuple[int, str], Any] = {}
    call = uuid.uuid4().hex[:12]  # this graph's part of its keys
    # measured inputs first: an input failing planning with the identity of another one
    # (a manifest row naming a missing file) must not take that input's place
    for task in sorted(planned, key=lambda t: bool(t.error)):
        if task.error:  # `process`'s failed row
            record = planning_failure(task)
            key = record.key
            if key in graph:  # another input's identity: keyed by this input, as process
                key = (key[0], f"input:{task.path}" + (f"#{task.hdu}" if task.hdu else ""))
            if key in graph:  # failing copies of one file: one failed result each
                key = (key[0], f"{key[1]}#{len(graph)}")
            graph[key] = dask.delayed(record, name=f"ampoffset-{call}-{key[0]}-{key[1]}")
            continue
        tag = f"{call}-{task.visit}-{task.name}"
        if task.flag:  # already corrected: `process`'s flagged row, nothing read or written
            graph[(task.visit, task.name)] = dask.delayed(flagged_result, pure=True)(
                task, dask_key_name=f"ampoffset-{tag}")
            continue
        out = outputs.get(output_key(task))
        exposure = dask.delayed(_read, pure=True)(
            task.path, task.detector, camera, hdu=task.hdu, overscan=options.overscan,
            gain=options.gain, variance=out is not None, stamp=task.stamp,
            io_retries=io_retries, io_retry_delay=io_delay,
            dask_key_name=f"ampoffset-read-{tag}")
        measurement = dask.delayed(_measure, pure=True)(
            exposure, task.detector, config, dask_key_name=f"ampoffset-measure-{tag}")
        written = None
        if out is not None:
            written = dask.delayed(_write, pure=True)(
                exposure, measurement, task.detector, str(out), task.visit, camera,
                task.stamp, dask_key_name=f"ampoffset-write-{tag}")
        graph[(task.visit, task.name)] = dask.delayed(_result, pure=True)(
            measurement, exposure, written, task.visit, task.detector, task.path,
            task.dataset_id, config, dask_key_name=f"ampoffset-{tag}")
    return graph


def _camera_for_tasks(camera: Any) -> Any:
    """``camera`` as the read and write tasks get it: a camera file's path made absolute,
    since a task may run in another working directory (a notebook's ``%cd``, a worker
    started elsewhere), where a relative path names no file; names and objects as given."""
    from ..cameras.camera import canonical_camera_name

    if (isinstance(camera, (str, os.PathLike)) and canonical_camera_name(str(camera)) is None
            and Path(camera).is_file()):
        return str(Path(camera).resolve())
    return camera


def _visit_members(visit: Any) -> dict[str, Any]:
    """``{detector name: Dataset | Exposure | (image, mask, detector[, mask_planes])}``."""
    if hasattr(visit, "children") and hasattr(visit, "to_dataset"):  # xarray.DataTree
        out: dict[str, Any] = {}
        paths: dict[str, str] = {}
        for node in visit.subtree:
            if node.has_data and "image" in node.dataset.data_vars:
                name = node.name or str(node.path)
                if name in out:  # results are keyed by name: one would replace the other
                    from ..errors import InputError

                    raise InputError(
                        f"measure_visit: the DataTree nodes {paths[name]} and {node.path} "
                        f"have the same name {name!r}, and results are keyed by node name; "
                        "name each detector's node uniquely (e.g. by detector, as open_visit "
                        "does)")
                out[name] = node.to_dataset()
                paths[name] = str(node.path)
        return out
    if isinstance(visit, Mapping):
        return dict(visit)
    raise TypeError(
        f"measure_visit needs an xarray DataTree or a mapping of detector -> exposure, got "
        f"{type(visit).__name__}"
    )


class _Opaque:
    """Hides a lazy Dataset from dask.delayed, which would otherwise compute every pixel of
    it before the task runs; the task then reads only what the measurement slices."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _argument(value: Any) -> Any:
    """How a member travels to its task: hidden from dask (`_Opaque`), unless it holds
    persisted data (futures of a distributed cluster): those pixels are already computed, and
    the task's synchronous reads could not reach them, so dask hands the task their values."""
    from distributed import futures_of

    return value if futures_of(value) else _Opaque(value)


def _measure_member(value: Any, config: AmpOffsetConfig | None,
                    mask_planes: Mapping[str, int] | None, name: str = "?") -> Any:
    from ..algorithm.measure import measure_detector
    from ..errors import InputError
    from ..exposure import as_exposure_parts

    if isinstance(value, _Opaque):
        value = value.value
    _config.apply_kernels()
    try:
        parts = as_exposure_parts(value, mask_planes)
    except InputError as exc:
        raise InputError(f"measure_visit: member {name!r}: {exc}") from exc
    if parts.detector is None:
        raise InputError(f"measure_visit: member {name!r} carries no amp geometry (a Dataset "
                         "without a 'geometry' attribute, a CCDData or a masked array): give "
                         "it as (image, mask, detector)")
    # An untouched open_exposure Dataset's planes come as LazyPlanes (read from their files,
    # each plane mapped once); other dask arrays are computed in this task, synchronously,
    # not as nested cluster work.
    with dask.config.set(scheduler="sync"), map_once():
        return measure_detector(parts.image, parts.mask, parts.detector, config,
                                mask_planes=parts.mask_planes)


def measure_visit(
    visit: Any,
    *,
    config: AmpOffsetConfig | None = None,
    mask_planes: Mapping[str, int] | None = None,
    scheduler: Any = None,
) -> dict[str, Any]:
    """Measure every detector of an in-memory (or lazily opened) visit, in parallel.

    Parameters
    ----------
    visit : xarray.DataTree or mapping
        A DataTree from `ampoffset_dask.open_visit` (one node per detector), or
        ``{detector name: Dataset | Exposure | (image, mask, Detector[, mask_planes])}``.
    config : AmpOffsetConfig, optional
        LSST defaults when omitted.
    mask_planes : mapping, optional
        Plane name -> bit for tuple members without their own.
    scheduler : optional
        Passed to `dask.compute` (default: the current one, e.g. a connected Client).

    Returns
    -------
    dict
        ``{detector name: DetectorMeasurement}`` in the order of ``visit``.

    Raises
    ------
    InputError, GeometryError, ConfigError
        The first failing member's error, naming it (the member's key, or its detector).

    Notes
    -----
    Task keys are ``ampoffset-measure-<call>-<detector name>``, ``<call>`` unique to each
    call: visits measured at the same time on one scheduler (two notebooks on a shared
    cluster) never share a key, so never each other's results.
    """
    config = as_config(config)  # a mapping of LSST names, as `process` takes it
    members = _visit_members(visit)
    call = uuid.uuid4().hex[:12]
    tasks = [dask.delayed(_measure_member, pure=False)(
                 _argument(value), config, mask_planes, str(name),
                 dask_key_name=f"ampoffset-measure-{call}-{name}")
             for name, value in members.items()]
    results = dask.compute(*tasks, scheduler=scheduler)
    return dict(zip(members, results, strict=True))
