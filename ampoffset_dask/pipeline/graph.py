"""Notebook API: the per-detector `dask.delayed` graph, and measuring an in-memory visit.

`build_graph` gives, for each (visit, detector), the chain read -> measure -> [write] ->
result as delayed objects, so a notebook can inspect it, ``dask.visualize`` it and
``dask.compute`` it on any scheduler. For thousands of detectors prefer `process`, which
bounds what is in flight and streams results to a catalog.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask

from ..algorithm.apply import apply_pedestals
from ..algorithm.metadata import lsst_metadata_comments
from ..catalog import DetectorResult
from ..config import AmpOffsetConfig
from ..geometry import Detector
from ..io.paths import fits_stem
from ..io.sections import map_once
from . import _config
from .detector_job import output_header
from .inputs import discover_inputs, plan_tasks

__all__ = ["build_graph", "measure_visit"]

logger = logging.getLogger(__name__)


def _read(path: str, detector: Detector, camera: Any = None) -> Any:
    from ..io.fits import read_exposure

    return read_exposure(path, camera=camera, detector=detector)


def _measure(exposure: Any, detector: Detector, config: AmpOffsetConfig | None) -> Any:
    from ..algorithm.measure import measure_detector

    _config.apply_kernels()
    return measure_detector(exposure.image, exposure.mask, detector, config,
                            mask_planes=exposure.mask_planes)


def _write(exposure: Any, measurement: Any, detector: Detector, output: str,
           visit: int) -> str:
    from ..io.fits import write_exposure

    corrected = apply_pedestals(exposure.image, measurement.pedestals, detector)
    header = output_header(str(exposure.info.path), exposure.info, visit, detector)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    write_exposure(output, corrected, exposure.mask, exposure.variance,
                   mask_planes=exposure.mask_planes, header=header,
                   metadata=lsst_metadata_comments(measurement, applied=True), overwrite=True,
                   detector=detector)
    return output


def _result(measurement: Any, output: str | None, visit: int, detector: Detector,
            path: str) -> DetectorResult:
    return DetectorResult.from_measurement(measurement, visit=visit, detector=detector,
                                           input=path, output=output)


def build_graph(
    inputs: Any,
    *,
    camera: Any = None,
    config: AmpOffsetConfig | None = None,
    output_images: str | os.PathLike | None = None,
) -> dict[tuple[int, str], Any]:
    """The per-detector delayed graph of a set of files (typically one visit).

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
        ``<folder>/<visit>/<detector>/<input name>.fits``, as with `process`.

    Returns
    -------
    dict
        ``{(visit, detector): Delayed}``; each value computes to a
        `~ampoffset_dask.catalog.DetectorResult`. Task keys are ``ampoffset-read-<visit>-
        <detector>``, ``ampoffset-measure-...``, ``ampoffset-write-...`` and
        ``ampoffset-<visit>-<detector>`` for the result. ``dask.compute(graph)`` computes all
        of them; ``dask.visualize(*graph.values())`` draws them.

    Raises
    ------
    InputError
        If an input cannot be planned (unreadable header, unknown geometry): the message
        lists them.
    """
    from ..errors import InputError

    planned = plan_tasks(discover_inputs(inputs), camera=camera)
    bad = [t for t in planned if t.error]
    if bad:
        raise InputError("cannot build the graph: " + "; ".join(t.error for t in bad[:5]))
    config = config if config is not None else AmpOffsetConfig()
    graph: dict[tuple[int, str], Any] = {}
    for task in planned:
        tag = f"{task.visit}-{task.name}"
        exposure = dask.delayed(_read, pure=True)(
            task.path, task.detector, dask_key_name=f"ampoffset-read-{tag}")
        measurement = dask.delayed(_measure, pure=True)(
            exposure, task.detector, config, dask_key_name=f"ampoffset-measure-{tag}")
        written = None
        if output_images is not None:
            stem, _ = fits_stem(Path(task.path).name)  # same layout as process
            out = os.path.join(os.path.abspath(output_images), str(task.visit), str(task.name),
                               f"{stem}.fits")
            written = dask.delayed(_write, pure=True)(
                exposure, measurement, task.detector, out, task.visit,
                dask_key_name=f"ampoffset-write-{tag}")
        graph[(task.visit, task.name)] = dask.delayed(_result, pure=True)(
            measurement, written, task.visit, task.detector, task.path,
            dask_key_name=f"ampoffset-{tag}")
    return graph


def _visit_members(visit: Any) -> dict[str, Any]:
    """``{detector name: Dataset | Exposure | (image, mask, detector[, mask_planes])}``."""
    if hasattr(visit, "children") and hasattr(visit, "to_dataset"):  # xarray.DataTree
        out: dict[str, Any] = {}
        for node in visit.subtree:
            if node.has_data and "image" in node.dataset.data_vars:
                out[node.name or str(node.path)] = node.to_dataset()
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
                    mask_planes: Mapping[str, int] | None) -> Any:
    from ..algorithm.measure import measure_detector
    from ..exposure import as_exposure_parts

    if isinstance(value, _Opaque):
        value = value.value
    parts = as_exposure_parts(value, mask_planes)
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
    """
    members = _visit_members(visit)
    tasks = [dask.delayed(_measure_member, pure=False)(_argument(value), config, mask_planes,
                                                       dask_key_name=f"ampoffset-measure-{name}")
             for name, value in members.items()]
    results = dask.compute(*tasks, scheduler=scheduler)
    return dict(zip(members, results, strict=True))
