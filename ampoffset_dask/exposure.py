"""A minimal in-memory exposure, and one adapter from any supported exposure to its parts.

`Exposure` is the numpy exposure of this package. `as_exposure_parts` is the one place that
knows the shapes an exposure can come in - our `Exposure`, an opened file
(`ampoffset_dask.io.fits.ExposureData`), an xarray Dataset from
`ampoffset_dask.open_exposure`, an LSST afw-like exposure, or an ``(image, mask, detector[,
mask_planes])`` tuple - by duck typing (no xarray or LSST import), so `measure_detector`,
`AmpOffsetTask.run` and `measure_visit` accept the same things.

A Dataset's planes are dask arrays; reading ~90 edge strips from them one by one costs a
dask computation each. A layer that knows a cheaper reader under such an array registers it
(`register_direct_reader`; the xarray layer does for `open_exposure` planes), and the parts
then hold that reader instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .errors import GeometryError, InputError
from .geometry import Amplifier, Detector
from .masks import DEFAULT_MASK_PLANES

__all__ = ["Exposure", "ExposureParts", "as_exposure_parts", "detector_frame",
           "is_exposure_like", "register_direct_reader"]

#: ``finder(array)`` -> an object to read regions from instead of ``array`` (same shape,
#: dtype and values), or None for arrays it does not know.
_DIRECT_READERS: list[Callable[[Any], Any]] = []


def register_direct_reader(finder: Callable[[Any], Any]) -> None:
    """Let `as_exposure_parts` read a Dataset's planes through ``finder(array)`` when it
    returns something (an object with the array's shape, dtype and values, sliced as
    ``obj[rows, cols]`` and converted by ``np.asarray``); None leaves the array as it is.
    Registering the same finder twice has no effect."""
    if finder not in _DIRECT_READERS:
        _DIRECT_READERS.append(finder)


def _direct(array: Any) -> Any:
    for finder in _DIRECT_READERS:
        found = finder(array)
        if found is not None:
            return found
    return array


class Exposure:
    """An exposure as AmpOffsetTask needs it, without the LSST stack.

    Parameters
    ----------
    image : array_like, shape (height, width)
        Pixel values; stored as float32 (LSST's ``ImageF``).
    mask : array_like of int, optional
        Mask bits; int32, zeros when omitted.
    variance : array_like, optional
        Variance plane; float32, zeros when omitted.
    detector : Detector
        Geometry of the detector.
    mask_planes : mapping, optional
        Plane name -> bit; afw's default dictionary when omitted.
    metadata : mapping, optional
        Header-like metadata; a new dict when omitted. ``AmpOffsetTask.run`` writes LSST's
        ``LSST ISR AMPOFFSET ...`` keys here.
    """

    def __init__(
        self,
        image: Any,
        mask: Any = None,
        variance: Any = None,
        detector: Detector | None = None,
        mask_planes: Mapping[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if detector is None:
            raise InputError("Exposure needs a detector (geometry of the amplifiers)")
        image = np.asarray(image)
        if image.ndim != 2:
            raise InputError(f"detector {detector.name!r}: image must be 2-D, got {image.shape}")
        if image.shape != detector.shape:
            raise InputError(
                f"detector {detector.name!r}: image shape {image.shape} does not match the "
                f"detector size {detector.shape} (height, width)"
            )
        self.image = np.ascontiguousarray(image, dtype=np.float32)
        self.mask = (
            np.zeros(image.shape, np.int32)
            if mask is None
            else np.ascontiguousarray(mask, dtype=np.int32)
        )
        self.variance = (
            np.zeros(image.shape, np.float32)
            if variance is None
            else np.ascontiguousarray(variance, dtype=np.float32)
        )
        for name, plane in (("mask", self.mask), ("variance", self.variance)):
            if plane.shape != image.shape:
                raise InputError(
                    f"detector {detector.name!r}: {name} shape {plane.shape} differs from the "
                    f"image shape {image.shape}"
                )
        self.detector = detector
        self.mask_planes = dict(DEFAULT_MASK_PLANES if mask_planes is None else mask_planes)
        self.metadata = {} if metadata is None else metadata

    def getDetector(self) -> Detector:
        """LSST-style accessor."""
        return self.detector

    def getMetadata(self) -> dict[str, Any]:
        """LSST-style accessor."""
        return self.metadata

    def __repr__(self) -> str:
        return f"Exposure(detector={self.detector.name!r}, shape={self.image.shape})"


class ExposureParts(NamedTuple):
    """What the algorithm needs from an exposure (see `as_exposure_parts`).

    Attributes
    ----------
    image : array_like
        numpy, dask or lazy array ``(height, width)``; for afw-like and our exposures the
        very array the exposure holds (so it can be corrected in place).
    mask : array_like or None
    detector : Detector
    mask_planes : dict or None
        Plane name -> bit (None: afw's defaults apply).
    metadata : mapping or None
        Where LSST's ``LSST ISR AMPOFFSET ...`` keys go: our `Exposure`'s ``metadata`` dict,
        an afw ``PropertyList``, a Dataset's ``attrs["ampoffset_metadata"]``; None when the
        object has none (an opened file, a tuple).
    """

    image: Any
    mask: Any
    detector: Detector
    mask_planes: dict[str, int] | None
    metadata: Any


def detector_frame(ds: Any, detector: Detector) -> Any:
    """Dataset ``ds`` with its pixels in ``detector``'s frame (see `as_exposure_parts`); the
    same object when they already are. Pixels are taken by position, so an xarray reordering
    would otherwise put each amp's pedestal on another amp."""
    dims = tuple(ds["image"].dims)
    if set(dims) == {"y", "x"} and dims != ("y", "x"):
        ds = ds.transpose("y", "x", ...)
    for dim, n in zip(("y", "x"), detector.shape, strict=True):
        if dim not in ds.coords or ds[dim].ndim != 1 or ds[dim].size != n:
            continue  # no coordinate to go by (a size mismatch is reported later)
        c = np.asarray(ds[dim].values)
        if c.dtype.kind not in "iuf" or (np.diff(c) > 0).all():
            continue  # increasing: the pixels are in order, whatever their labels
        if c.dtype.kind in "iu" and np.array_equal(np.sort(c), np.arange(n)):
            ds = ds.sortby(dim)  # the pixel indices reordered: put them back
            continue
        raise GeometryError(
            f"detector {detector.name!r}: the Dataset's {dim!r} coordinate does not increase "
            "along its pixels, so they are not in the detector frame; sort it "
            f"(ds.sortby({dim!r})) or measure arrays in the detector frame")
    return ds


def is_exposure_like(obj: Any) -> bool:
    """Whether `as_exposure_parts` would treat ``obj`` as an exposure (not a bare array)."""
    if hasattr(obj, "data_vars"):
        return True
    return hasattr(obj, "image") and (hasattr(obj, "detector") or hasattr(obj, "getDetector"))


def as_exposure_parts(obj: Any, mask_planes: Mapping[str, int] | None = None, *,
                      writes_metadata: bool = False) -> ExposureParts:
    """Image, mask, detector, mask planes and metadata of any supported exposure.

    Parameters
    ----------
    obj : Exposure, ExposureData, xarray.Dataset, afw-like exposure or tuple
        An `Exposure`; an opened file (`read_exposure`/`open_lazy`); a Dataset from
        `ampoffset_dask.open_exposure` (``image``/``mask`` variables, JSON ``geometry`` and
        ``mask_planes`` attributes); an object with ``.image.array``, ``.mask.array``,
        ``.getDetector()`` (amps with ``getName()``/``getBBox()``) and ``.getMetadata()``;
        or ``(image, mask, detector[, mask_planes])``.
    mask_planes : mapping, optional
        Planes for objects that do not carry their own (tuples of three).
    writes_metadata : bool
        The caller writes metadata: a Dataset without an ``ampoffset_metadata`` attribute
        gets an empty one (otherwise the Dataset is left untouched, and its parts' metadata
        is None).

    Returns
    -------
    ExposureParts
        A Dataset's planes in the detector frame: dimensions ``(y, x)`` (a transposed
        Dataset is transposed back) and, where the Dataset has ``y``/``x`` coordinates that
        are a reordering of the pixel indices (``isel`` with a negative step, ``sortby``,
        ``roll`` with its coordinates), sorted back by them.

    Raises
    ------
    InputError
        For an object of none of these shapes, or a Dataset without geometry.
    GeometryError
        For a Dataset whose ``y``/``x`` coordinates do not increase and are not a
        reordering of the pixel indices: its pixels are not in the detector frame.
    """
    if isinstance(obj, tuple):
        if len(obj) not in (3, 4):
            raise InputError("an exposure tuple is (image, mask, detector[, mask_planes]), "
                             f"got {len(obj)} items")
        image, mask, detector, *rest = obj
        planes = rest[0] if rest else mask_planes
        return ExposureParts(image, mask, detector, _planes(planes), None)
    if hasattr(obj, "data_vars"):  # xarray Dataset from open_exposure
        if "image" not in obj.data_vars:
            raise InputError("dataset has no 'image' variable")
        if "geometry" not in obj.attrs:
            raise InputError("dataset has no 'geometry' attribute; pass detector=")
        detector = Detector.from_dict(json.loads(obj.attrs["geometry"]))
        planes = obj.attrs.get("mask_planes", mask_planes)
        planes = json.loads(planes) if isinstance(planes, str) else planes
        metadata = (obj.attrs.setdefault("ampoffset_metadata", {}) if writes_metadata
                    else obj.attrs.get("ampoffset_metadata"))
        framed = detector_frame(obj, detector)
        mask = _direct(framed["mask"].data) if "mask" in framed.data_vars else None
        return ExposureParts(_direct(framed["image"].data), mask, detector, _planes(planes),
                             metadata)
    if isinstance(getattr(obj, "detector", None), Detector) and hasattr(obj, "image"):
        # our Exposure, or an ExposureData from read_exposure/open_lazy
        return ExposureParts(obj.image, obj.mask, obj.detector,
                             _planes(getattr(obj, "mask_planes", mask_planes)),
                             getattr(obj, "metadata", None))
    try:  # afw-like
        image = obj.image.array
        mask_obj = obj.mask
        mask = mask_obj.array
        det = obj.getDetector()
        metadata = obj.getMetadata()
    except AttributeError as exc:
        raise InputError(f"unsupported exposure type {type(obj).__name__}: {exc}") from exc
    planes = mask_obj.getMaskPlaneDict() if hasattr(mask_obj, "getMaskPlaneDict") else None
    planes = dict(planes) if isinstance(planes, Mapping) else dict(DEFAULT_MASK_PLANES)
    name = det.getName() if hasattr(det, "getName") else "detector"
    det_id = det.getId() if hasattr(det, "getId") else None
    amps = list(det.getAmplifiers()) if hasattr(det, "getAmplifiers") else list(det)
    detector = detector_from_amps(amps, name, det_id)
    if detector.shape != image.shape:
        detector = Detector(name, image.shape[1], image.shape[0], detector.amplifiers, det_id)
    return ExposureParts(image, mask, detector, planes, metadata)


def _planes(planes: Any) -> dict[str, int] | None:
    return None if planes is None else dict(planes)


def as_amplifier(amp: Any) -> Amplifier:
    """Our `Amplifier`, or one made from an afw-like amp (``getName()``, ``getBBox()``)."""
    if isinstance(amp, Amplifier):
        return amp
    box = amp.getBBox()
    return Amplifier(amp.getName(), box.getMinX(), box.getMinY(), box.getWidth(),
                     box.getHeight())


def detector_from_amps(amps: Sequence[Any], name: str = "detector",
                       det_id: Any = None) -> Detector:
    """A `Detector` spanning ``amps`` (ours or afw-like), in their order."""
    converted = tuple(as_amplifier(a) for a in amps)
    width = max(a.x1 for a in converted)
    height = max(a.y1 for a in converted)
    return Detector(name, width, height, converted, det_id)
