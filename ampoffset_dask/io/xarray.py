"""Lazy xarray views of exposure files: `open_exposure`, `open_visit` and an xarray backend.

Opening reads headers only. Each plane is a dask array with one chunk per amp whose tasks hold
a picklable `~ampoffset_dask.io.fits.LazyPlane` (path + amp boxes, no open file), so graphs
travel to workers, and slicing a chunk reads only the sliced pixels: measuring a detector
with background and detection switched off reads only the amp edge strips.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from xarray.backends import BackendEntrypoint

from ..algorithm.metadata import SUBTRACTED_KEY
from ..errors import InputError
from ..geometry import Detector
from .fits import FileInfo, file_isr, mask_sources, open_sources, sources_on_hdu
from .paths import is_fits_name, walk_fits
from .sections import PLANE_NAME_PREFIX, AmpSource, LazyPlane, file_stamp

__all__ = [
    "AmpOffsetBackendEntrypoint",
    "MultiCCDWarning",
    "amp_chunks",
    "dataset_detector",
    "dataset_mask_planes",
    "open_exposure",
    "open_visit",
]

logger = logging.getLogger(__name__)


class MultiCCDWarning(UserWarning):
    """A multi-CCD file was opened as one Dataset: only one of its CCDs (the first) is in it."""


def amp_chunks(detector: Detector) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Dask chunks ``(rows, columns)`` whose boundaries are the amp boundaries."""

    def sizes(edges: set[int], n: int) -> tuple[int, ...]:
        cuts = sorted(e for e in edges | {0, n} if 0 <= e <= n)
        return tuple(b - a for a, b in itertools.pairwise(cuts) if b > a)

    ys = {a.y0 for a in detector} | {a.y1 for a in detector}
    xs = {a.x0 for a in detector} | {a.x1 for a in detector}
    return sizes(ys, detector.height), sizes(xs, detector.width)


def _plane(info: FileInfo, name: str, dtype: Any, sources: tuple[AmpSource, ...],
           detector: Detector, chunks, stamp: tuple | None) -> da.Array:
    plane = LazyPlane(info.path, detector.shape, dtype, sources, stamp=stamp)
    token = tokenize(str(info.path), stamp, name, sources, np.dtype(dtype).str)
    return da.from_array(plane, chunks=chunks, name=f"{PLANE_NAME_PREFIX}{name}-{token}",
                         asarray=False, meta=np.empty((0, 0), dtype=dtype))


def open_exposure(
    path: str | os.PathLike,
    camera: Any = None,
    detector: Any = None,
    *,
    overscan: bool | str = "auto",
    gain: str | None = None,
    hdu: int | None = None,
) -> xr.Dataset:
    """Open an exposure (or raw, or image) file lazily as an `xarray.Dataset`.

    Only headers are read here. ``image`` (float32), ``mask`` (int32) and ``variance``
    (float32) are dask arrays over ``("y", "x")`` in the detector frame with one chunk per amp;
    files without a mask or variance plane get zeros.

    Parameters
    ----------
    path : path-like
    camera : str or Camera, optional
        Camera for the geometry (default: from the header).
    detector : Detector, dict, str or int, optional
        Geometry, or a detector name/id in the camera (default: from the header).
    overscan : {"auto", "per-row", "mean", "none"} or bool
        Serial overscan subtraction (`ampoffset_dask.io.overscan`): ``"auto"`` subtracts it
        row by row from raws and untrimmed images, and leaves assembled files alone.
    gain : {None, "none", "nominal"}
        ``"nominal"``: multiply each amp by the camera's nominal gain (ADU -> electrons).
    hdu : int, optional
        Open this image HDU: one CCD of a multi-CCD file (``inspect_file(path).ccd_hdus``).

    Returns
    -------
    xarray.Dataset
        Attributes (strings and integers, as netCDF and JSON store them): ``visit`` and
        ``detector_id`` (when known), ``detector``, ``camera``, ``path``, ``kind``,
        ``overscan`` (what was applied: ``"per-row"``, ``"mean"``, ``"none"``),
        ``overscan_subtracted`` (1 or 0), ``gain`` (``"nominal"``, ``"none"``), ``geometry``
        (JSON of ``Detector.to_dict()``), ``mask_planes`` (JSON of ``{plane: bit}``).
        Scalar coordinates ``detector`` (and ``visit`` when known).

    Raises
    ------
    InputError
        Naming the file, for unreadable files or unusable geometry.

    Examples
    --------
    A two-amp detector file that describes its own geometry (``write_exposure`` records the
    amp boxes), opened lazily: one dask chunk per amp, nothing read until computed.

    >>> import numpy as np
    >>> from ampoffset_dask import AmpOffsetConfig, measure_detector, open_exposure
    >>> from ampoffset_dask.geometry import detector_from_boxes
    >>> from ampoffset_dask.io.fits import write_exposure
    >>> det = detector_from_boxes("D", 200, 100, [("A", 0, 0, 100, 100),
    ...                                           ("B", 100, 0, 100, 100)])
    >>> image = np.random.default_rng(1).normal(1000.0, 1.0, det.shape).astype(np.float32)
    >>> image[:, 100:] += 3.0
    >>> path = write_exposure(tmp / "d.fits", image, detector=det, header={"VISIT": 7})
    >>> ds = open_exposure(path)
    >>> ds["image"].chunks, ds.attrs["visit"], ds.attrs["detector"]
    (((100,), (100, 100)), 7, 'D')
    >>> bool((ds["image"].values == image).all())
    True
    >>> config = AmpOffsetConfig(amp_edge_width=16, do_background=False, do_detection=False)
    >>> measure_detector(ds, config=config).pedestals.round(1)
    array([-1.5,  1.5])
    """
    return _open(path, camera, detector, overscan=overscan, gain=gain, hdu=hdu)[0]


def _open(path: str | os.PathLike, camera: Any = None, detector: Any = None, *,
          overscan: bool | str = "auto", gain: str | None = None,
          hdu: int | None = None) -> tuple[xr.Dataset, FileInfo]:
    """`open_exposure`, with the `FileInfo` of the file's headers (its ``ccd_hdus`` say
    whether the file holds other CCDs), so callers need not read the headers again."""
    stamp = file_stamp(path)  # before the headers: a change while reading them shows too
    info, det, sources = open_sources(path, camera, detector, overscan, gain, hdu)
    isr = file_isr(info, det, sources)
    chunks = amp_chunks(det)
    image = _plane(info, "image", np.float32, sources, det, chunks, stamp)
    if info.mask_hdu is not None:
        mask = _plane(info, "mask", np.int32, mask_sources(info, sources), det, chunks,
                      stamp)
    else:
        mask = da.zeros(det.shape, dtype=np.int32, chunks=chunks)
    if info.variance_hdu is not None:
        variance = _plane(info, "variance", np.float32,
                          sources_on_hdu(sources, info.variance_hdu, 2), det, chunks, stamp)
    else:
        variance = da.zeros(det.shape, dtype=np.float32, chunks=chunks)
    coords: dict[str, Any] = {
        "y": np.arange(det.height),
        "x": np.arange(det.width),
        "detector": det.name,
    }
    if info.visit is not None:
        coords["visit"] = int(info.visit)
    attrs = {
        "visit": None if info.visit is None else int(info.visit),
        "detector": det.name,
        "detector_id": None if det.id is None else int(det.id),
        "camera": info.camera if camera is None else _camera_name(camera),
        "path": str(info.path),
        "kind": info.kind,
        "hdu": int(info.image_hdu),
        "overscan": isr.overscan,
        "overscan_subtracted": int(isr.overscan != "none"),
        "gain": isr.gain,
        "geometry": json.dumps(det.to_dict()),
        "mask_planes": json.dumps({k: int(v) for k, v in info.mask_planes.items()}),
    }
    if info.header.get(SUBTRACTED_KEY) is True:
        # measuring such a file finds what is left; correcting it corrects it a second time
        attrs["ampoffset_subtracted"] = 1
        logger.warning("%s: its header says amp offsets were already subtracted (%s = T): "
                       "measuring it finds what is left of them, and correcting it corrects "
                       "it again", info.path, SUBTRACTED_KEY)
    # netCDF has no None (nor booleans): an unknown value is left out, so to_netcdf works
    attrs = {k: v for k, v in attrs.items() if v is not None}
    ds = xr.Dataset(
        {
            "image": (("y", "x"), image),
            "mask": (("y", "x"), mask),
            "variance": (("y", "x"), variance),
        },
        coords=coords,
        attrs=attrs,
    )
    for var in ds.data_vars.values():
        var.encoding["preferred_chunks"] = {"y": chunks[0], "x": chunks[1]}
    return ds, info


def _camera_name(camera: Any) -> str:
    from ..cameras import get_camera

    return get_camera(camera).name


def dataset_detector(ds: xr.Dataset) -> Detector:
    """The `Detector` stored in an `open_exposure` Dataset's ``geometry`` attribute."""
    try:
        return Detector.from_dict(json.loads(ds.attrs["geometry"]))
    except KeyError as exc:
        raise InputError("dataset has no 'geometry' attribute (not from open_exposure?)") from exc


def dataset_mask_planes(ds: xr.Dataset) -> dict[str, int]:
    """The ``{plane: bit}`` dictionary stored in a Dataset's ``mask_planes`` attribute."""
    try:
        planes = json.loads(ds.attrs["mask_planes"])
    except KeyError as exc:
        raise InputError("dataset has no 'mask_planes' attribute") from exc
    return {str(k): int(v) for k, v in planes.items()}


def _expand(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        p = Path(paths)
        if p.is_dir():
            found = walk_fits(p)
            if not found:
                raise InputError(f"{p}: no FITS files in this folder")
            bad = [f for f in found if f.problem]
            if bad:
                raise InputError(f"{bad[0].path}: {bad[0].problem}")
            return [Path(f.path) for f in found]
        return [p]
    return [Path(p) for p in paths]


def open_visit(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    camera: Any = None,
    *,
    overscan: bool | str = "auto",
    gain: str | None = None,
) -> xr.DataTree:
    """Open the detector files of one visit lazily as an `xarray.DataTree`.

    A multi-CCD file (DECam raws, Community Pipeline ``ooi`` files: several image HDUs, each
    naming its CCD, ``inspect_file(path).ccd_hdus``) gives one node per CCD, as `process`
    makes one task per CCD.

    Parameters
    ----------
    paths : path-like or iterable of path-like
        Files, or a folder searched (recursively, like `process`) for FITS files.
    camera : str or Camera, optional
        Camera for the geometry (default: from each header).
    overscan, gain
        Passed to `open_exposure`.

    Returns
    -------
    xarray.DataTree
        One child node per detector (named by detector, as `process` names it), each an
        `open_exposure` Dataset (its ``hdu`` attribute says which HDU of a multi-CCD file it
        reads); root attributes ``visit`` and ``camera`` (each when known and shared) and
        ``detectors`` (names, in file order, then HDU order within a file).

    Raises
    ------
    InputError
        For unreadable files (or CCDs), files of several visits, or a detector given twice.
    """
    files = _expand(paths)
    if not files:
        raise InputError("open_visit: no files given")
    nodes: dict[str, xr.Dataset] = {}
    origins: dict[str, str] = {}  # detector name -> the file (and HDU) it came from
    visits = set()
    for f in files:
        ds, info = _open(f, camera=camera, overscan=overscan, gain=gain)
        if info.ccd_hdus:
            # each CCD opened by its HDU, as process plans it (the default open above holds
            # only the first CCD); the headers are read again per CCD, as planning does
            members = [(f"{f}[{k}]", open_exposure(f, camera=camera, overscan=overscan,
                                                    gain=gain, hdu=k))
                       for k in info.ccd_hdus]
        else:
            members = [(str(f), ds)]
        for where, member in members:
            name = member.attrs["detector"]
            if name in nodes:
                raise InputError(f"{where}: detector {name!r} is also in {origins[name]}")
            nodes[name] = member
            origins[name] = where
            visits.add(member.attrs.get("visit"))
    if len(visits) > 1:
        raise InputError(
            "open_visit: the files belong to several visits "
            f"{sorted(visits, key=lambda v: (v is None, v))}; open one visit at a time"
        )
    visit = visits.pop()
    cameras = {ds.attrs.get("camera") for ds in nodes.values()}
    tree = xr.DataTree.from_dict({f"/{name}": ds for name, ds in nodes.items()})
    attrs = {"visit": visit, "camera": cameras.pop() if len(cameras) == 1 else None,
             "detectors": list(nodes)}
    tree.attrs = {k: v for k, v in attrs.items() if v is not None}  # as in open_exposure
    return tree


#: xarray's CF decoding options, which it hands to every backend given them; the planes are
#: not CF-encoded, so they change nothing here.
_CF_DECODERS = ("mask_and_scale", "decode_times", "decode_timedelta", "use_cftime",
                "concat_characters", "decode_coords")


class AmpOffsetBackendEntrypoint(BackendEntrypoint):
    """``xr.open_dataset(path, engine="ampoffset", camera=..., detector=..., hdu=...)``.

    Returns the same lazy Dataset as `open_exposure`, with the same options. A Dataset holds
    one CCD: of a multi-CCD file, ``hdu=k`` opens the CCD of HDU ``k``
    (``inspect_file(path).ccd_hdus``); without it the first CCD is opened, with a
    `MultiCCDWarning` saying how many the file holds and how to open the others
    (`open_visit` opens them all). xarray's CF decoding options (``decode_cf``,
    ``mask_and_scale``, ``decode_times``, ...) are accepted and change nothing: the planes
    are not CF-encoded.
    """

    description = "Open LSST exposure, raw and single-image FITS files lazily (ampoffset-dask)"
    url = "https://github.com/ampoffset-dask/ampoffset-dask"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "camera", "detector",
                               "overscan", "gain", "hdu", *_CF_DECODERS)

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        camera: Any = None,
        detector: Any = None,
        overscan: bool | str = "auto",
        gain: str | None = None,
        hdu: int | None = None,
        mask_and_scale: Any = None,
        decode_times: Any = None,
        decode_timedelta: Any = None,
        use_cftime: Any = None,
        concat_characters: Any = None,
        decode_coords: Any = None,
    ) -> xr.Dataset:
        if not isinstance(filename_or_obj, str | os.PathLike):
            raise InputError("the ampoffset engine opens files by path only")
        ds, info = _open(filename_or_obj, camera=camera, detector=detector,
                         overscan=overscan, gain=gain, hdu=hdu)
        if hdu is None and info.ccd_hdus:
            # the other CCDs are not in the Dataset: say so rather than lose them silently
            # (stacklevel 3: the caller of xr.open_dataset; Python's filters then show a
            # file's warning once per calling line)
            warnings.warn(
                f"{filename_or_obj}: the file holds {len(info.ccd_hdus)} CCDs (HDUs "
                f"{list(info.ccd_hdus)}); opened the first, HDU {ds.attrs['hdu']} "
                f"({ds.attrs['detector']}). Open another with xr.open_dataset(path, "
                "engine='ampoffset', hdu=k), or all of them with "
                "ampoffset_dask.open_visit(path)",
                MultiCCDWarning, stacklevel=3)
        if drop_variables is not None:
            drop = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables)
            ds = ds.drop_vars(drop)
        return ds

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        return is_fits_name(str(filename_or_obj))

