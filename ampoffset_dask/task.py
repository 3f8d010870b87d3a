"""``AmpOffsetTask``: the LSST-compatible face of the algorithm.

Same public methods, signatures and metadata keys as ``lsst.ip.isr.AmpOffsetTask``; every
computation is delegated to `ampoffset_dask.algorithm`. ``run`` accepts whatever
`ampoffset_dask.exposure.as_exposure_parts` accepts: our `Exposure`, a Dataset from
`ampoffset_dask.open_exposure`, or any afw-like exposure (``.image.array``, ``.mask.array``,
``.getDetector()``, ``.getMetadata()``), so it also runs in an LSST stack.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping, Sequence
from typing import Any

import numpy as np

from ._pipe_base import Struct, Task
from .algorithm.apply import apply_pedestals
from .algorithm.edges import edge_profile, strip_slices
from .algorithm.measure import measure_detector
from .algorithm.metadata import header_metadata_comments, lsst_metadata_comments, task_metadata
from .algorithm.offsets import interface_offset
from .config import AmpOffsetConfig, BackgroundConfig, DetectionConfig
from .errors import InputError
from .exposure import (
    ExposureParts,
    as_amplifier,
    as_exposure_parts,
    dataset_metadata,
    detector_frame,
    detector_from_amps,
)

__all__ = ["AmpOffsetTask", "SourceDetectionTask", "SubtractBackgroundTask"]


class SubtractBackgroundTask(Task):
    """The background subtask (configuration holder; the fit lives in the algorithm layer)."""

    ConfigClass = BackgroundConfig
    _DefaultName = "background"


class SourceDetectionTask(Task):
    """The detection subtask (configuration holder; detection lives in the algorithm layer)."""

    ConfigClass = DetectionConfig
    _DefaultName = "detection"


class AmpOffsetTask(Task):
    """Measure (and optionally remove) amp-to-amp pedestal offsets, as LSST does.

    Parameters
    ----------
    config : AmpOffsetConfig, optional
        LSST defaults when omitted.
    **kwargs
        ``name``, ``parentTask``, ``log`` as for LSST tasks.
    """

    ConfigClass = AmpOffsetConfig
    _DefaultName = "isrAmpOffset"

    def __init__(self, config: AmpOffsetConfig | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.config.validate()
        if self.config.doBackground:
            self.makeSubtask("background")
        if self.config.doDetection:
            self.makeSubtask("detection")
        self.interfaceLengthLookupBySide: dict[int, int] = {}
        self.interfaceOffsetOriginals: dict[str, float] = {}
        self.shortAmpSide: int | None = None
        self.ampDims: tuple[int, int] | None = None

    @classmethod
    def _subtasks(cls) -> dict[str, type[Task]]:
        return {"background": SubtractBackgroundTask, "detection": SourceDetectionTask}

    # -- run -------------------------------------------------------------------------------
    def run(self, exposure: Any) -> Struct:
        """Measure the pedestals of ``exposure``; subtract them if ``doApplyAmpOffset``.

        Parameters
        ----------
        exposure : Exposure, xarray.Dataset or afw-like exposure
            Assembled, trimmed post-ISR exposure. LSST's ``LSST ISR AMPOFFSET ...`` keys go
            into its metadata; a Dataset's ``attrs["ampoffset_metadata"]`` holds them as a
            JSON object string (``json.loads`` reads it; ``to_netcdf`` writes it).

        Returns
        -------
        Struct
            ``pedestals`` (float64, amp order), ``interfaces`` (list of InterfaceResult) and
            ``measurement`` (the full `DetectorMeasurement`).

        Raises
        ------
        InputError
            For an exposure without amp geometry, or, with ``doApplyAmpOffset``, one whose
            image cannot be corrected in place (read-only, lazy or integer pixels): then
            before anything is measured or recorded, so its metadata never claims a
            correction that was not made.
        """
        applied = bool(self.config.doApplyAmpOffset)
        parts = as_exposure_parts(exposure)
        detector = parts.detector
        if detector is None:
            raise InputError(
                f"{_describe(exposure)} carries no amp geometry: AmpOffsetTask.run needs an "
                "exposure with a detector (for arrays, measure_detector(image, mask, "
                "detector); for a CCDData, ampoffset_dask.ccddata.correct_ccddata)")
        if applied:
            _check_correctable(exposure, parts)
        _check_metadata(parts)
        with self.timer("ampOffset"):
            result = measure_detector(parts.image, parts.mask, detector, self.config,
                                      parts.mask_planes)
        amp = detector.amplifiers[0]
        self.ampDims = (amp.width, amp.height)
        self.shortAmpSide = min(amp.width, amp.height)
        self.interfaceLengthLookupBySide = _lengths(detector.amplifiers)
        self.interfaceOffsetOriginals = result.interface_offsets_raw

        if applied:
            _apply(exposure, parts, result.pedestals)
        metadata = parts.metadata
        if hasattr(exposure, "data_vars"):
            # a new dict: xarray's copies of a Dataset share their attributes' values, and
            # the keys recorded for this one must not appear on the others
            metadata = dataset_metadata(exposure.attrs.get("ampoffset_metadata")) or {}
        if metadata is not None:
            # a FITS header holds no NaN (an interface without valid edge samples)
            cards = (header_metadata_comments if hasattr(metadata, "cards")
                     else lsst_metadata_comments)(result, applied)
            for key, (value, comment) in cards.items():
                _set_metadata(metadata, key, value, comment)
        if hasattr(exposure, "data_vars"):
            # a JSON string: netCDF attributes take no dicts (nor booleans), and
            # ds.to_netcdf must keep working after a run
            exposure.attrs["ampoffset_metadata"] = json.dumps(metadata, default=_json_scalar)
        self.metadata.update(task_metadata(result))
        return Struct(pedestals=result.pedestals, interfaces=list(result.interfaces),
                      measurement=result)

    # -- LSST's building blocks ---------------------------------------------------------------
    def getAmpAssociations(self, amps: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Association (weighted Laplacian) and side matrices of ``amps``."""
        grid = detector_from_amps(amps).grid(self.config.applyWeights)
        self.interfaceLengthLookupBySide = _lengths(amps)
        return np.array(grid.associations), np.array(grid.sides)

    def getNeighbors(self, ampIds: np.ndarray, ampId: int) -> tuple[list[int], list[int]]:
        """Neighbour amp ids of ``ampId`` and their sides, visiting sides 0, 1, 2, 3."""
        ampIds = np.asarray(ampIds)
        r, c = (int(v[0]) for v in np.nonzero(ampIds == ampId))
        neighbors: list[int] = []
        sides: list[int] = []
        for side, (dr, dc) in enumerate(((1, 0), (0, 1), (-1, 0), (0, -1))):
            rr, cc = r + dr, c + dc
            if 0 <= rr < ampIds.shape[0] and 0 <= cc < ampIds.shape[1]:
                neighbors.append(int(ampIds[rr, cc]))
                sides.append(side)
        return neighbors, sides

    def getAmpEdges(self, im: Any, amps: Sequence[Any], ampSides: np.ndarray) -> dict:
        """Median edge profiles ``{ampId: {side: float32 profile}}`` of a NaN-masked image."""
        arr = np.asarray(getattr(im, "array", im), dtype=np.float32)
        edges: dict[int, dict[int, np.ndarray]] = {}
        for amp_id, amp in enumerate(amps):
            a = as_amplifier(amp)
            edges[amp_id] = {}
            for side in sorted({int(s) for s in np.asarray(ampSides)[amp_id] if s >= 0}):
                sl = strip_slices(a, side, self.config.ampEdgeInset, self.config.ampEdgeWidth)
                edges[amp_id][side] = edge_profile(arr[sl], side)
        return edges

    def getAmpOffsets(
        self, im: Any, amps: Sequence[Any], associations: np.ndarray, sides: np.ndarray
    ) -> np.ndarray:
        """Right-hand side ``b`` of the pedestal system (LSST ``getAmpOffsets``)."""
        associations = np.asarray(associations)
        sides = np.asarray(sides)
        edges = self.getAmpEdges(im, amps, sides)
        names = [as_amplifier(a).name for a in amps]
        b = np.zeros(len(amps))
        done: dict[tuple[int, int], float] = {}
        self.interfaceOffsetOriginals = {}
        for i in range(len(amps)):
            for j in np.flatnonzero(associations[i] < 0):
                j = int(j)
                side = int(sides[i, j])
                weight = -associations[i, j]
                if i < j:
                    res = self.getInterfaceOffset(names[i], names[j], edges[i][side],
                                                  edges[j][(side + 2) % 4])
                    done[(i, j)] = res[1]
                    self.interfaceOffsetOriginals[res[0]] = res[2]
                    offset = res[1]
                else:
                    offset = -done[(j, i)]
                b[i] += weight * offset
        return b

    def getInterfaceOffset(
        self, ampNameA: str, ampNameB: str, edgeA: np.ndarray, edgeB: np.ndarray
    ) -> tuple[str, float, float, float, bool, bool]:
        """``(interfaceId, offset, originalOffset, goodFrac, minFracFail, maxOffsetFail)``."""
        interface_id = f"{ampNameA}-{ampNameB}"
        res = interface_offset(
            interface_id, edgeA, edgeB,
            window_frac=self.config.ampEdgeWindowFrac if self.config.doWindowSmoothing else None,
            min_frac=self.config.ampEdgeMinFrac, max_offset=self.config.ampEdgeMaxOffset,
        )
        if res.good_frac == 0.0 and res.min_frac_fail:
            self.log.warning("The edge of interface %s is fully masked.", interface_id)
        return tuple(res)


# -- helpers ---------------------------------------------------------------------------------
def _lengths(amps) -> dict[int, int]:
    a = as_amplifier(amps[0])
    return {0: a.width, 1: a.height, 2: a.width, 3: a.height}


def _json_scalar(value: Any) -> Any:
    """A numpy scalar as the Python value `json.dumps` writes."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"metadata value {value!r} ({type(value).__name__}) is not JSON")


def _set_metadata(metadata: Any, key: str, value: Any, comment: str) -> None:
    if hasattr(metadata, "cards"):
        # an astropy Header: LSST's long keys are HIERARCH cards (without the prefix,
        # astropy warns for each key before making them so)
        metadata.set(f"HIERARCH {key}", value, comment)
    elif isinstance(metadata, MutableMapping):
        metadata[key] = value
    else:  # afw PropertyList
        metadata.set(key, value, comment)


def _check_metadata(parts: ExposureParts) -> None:
    """Raise, before anything is measured or applied, unless `_set_metadata` can record
    LSST's keys in the exposure's metadata (a Dataset gets a dict of its own)."""
    metadata = parts.metadata
    if (metadata is None or hasattr(metadata, "cards") or isinstance(metadata, MutableMapping)
            or callable(getattr(metadata, "set", None))):
        return
    raise InputError(
        f"detector {parts.detector.name!r}: the exposure's metadata, a "
        f"{type(metadata).__name__}, cannot take LSST's keys (give a dict or another mutable "
        "mapping, an astropy Header or an afw PropertyList); nothing was measured or recorded")


def _describe(exposure: Any) -> str:
    if hasattr(exposure, "data_vars"):
        name = exposure.attrs.get("detector")
        return ("the Dataset" + (f" of detector {name!r}" if name else "")
                + " (no 'geometry' attribute)")
    if hasattr(exposure, "getDetector"):
        return f"the {type(exposure).__name__} (no detector attached)"
    return f"a {type(exposure).__name__}"


def _check_correctable(exposure: Any, parts: ExposureParts) -> None:
    """Raise unless `_apply` can subtract the pedestals from ``exposure``'s own image."""
    if hasattr(exposure, "data_vars"):
        return  # the image variable is replaced by the corrected one
    image = parts.image
    if isinstance(image, np.ndarray) and image.flags.writeable and image.dtype.kind == "f":
        return
    what = type(image).__name__
    if isinstance(image, np.ndarray):
        what = (f"a read-only {what} (np.array(image) makes a writable copy)"
                if not image.flags.writeable
                else f"an {image.dtype} {what} (corrected pixels are fractional: give a "
                     "float image, e.g. image.astype(np.float32))")
    raise InputError(
        f"detector {parts.detector.name!r}: doApplyAmpOffset needs an in-memory, writable "
        f"image of floats to correct in place, got {what} (read the file with "
        "read_exposure, or measure without applying); nothing was measured or recorded")


def _apply(exposure: Any, parts: ExposureParts, pedestals: np.ndarray) -> None:
    """Subtract the pedestals from the exposure's image (`_check_correctable` passed):
    in place for in-memory images.

    A Dataset's image variable is replaced by the corrected, in-memory image (float32, or
    the image's own float type), in the Dataset's own pixel order.
    """
    if hasattr(exposure, "data_vars"):
        image = exposure["image"]
        framed = detector_frame(exposure, parts.detector)  # as it was measured
        pixels = np.asarray(framed["image"].data)
        out = np.empty(pixels.shape, pixels.dtype if pixels.dtype.kind == "f" else np.float32)
        corrected = framed["image"].copy(
            data=apply_pedestals(pixels, pedestals, parts.detector, out=out))
        if framed is not exposure:  # back to the Dataset's own order
            corrected = corrected.reindex_like(image).transpose(*image.dims)
        exposure["image"] = corrected
    else:
        apply_pedestals(parts.image, pedestals, parts.detector, out=parts.image)
