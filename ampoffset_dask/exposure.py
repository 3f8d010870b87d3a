"""A minimal in-memory exposure, and one adapter from any supported exposure to its parts.

`Exposure` is the numpy exposure of this package. `as_exposure_parts` is the one place that
knows the shapes an exposure can come in - our `Exposure`, an opened file
(`ampoffset_dask.io.fits.ExposureData`), an xarray Dataset from
`ampoffset_dask.open_exposure`, an LSST afw-like exposure, an ``(image, mask, detector[,
mask_planes])`` tuple, or an array that carries its own mask (astropy ``CCDData``/``NDData``,
numpy ``MaskedArray``; no geometry: give the detector) - by duck typing (no xarray, astropy or
LSST import), so `measure_detector`, `AmpOffsetTask.run` and `measure_visit` accept the same
things.

A Dataset's planes are dask arrays; reading ~90 edge strips from them one by one costs a
dask computation each. A layer that knows a cheaper reader under such an array registers it
(`register_direct_reader`; the xarray layer does for `open_exposure` planes), and the parts
then hold that reader instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .errors import GeometryError, InputError
from .geometry import Amplifier, Detector
from .masks import DEFAULT_MASK_PLANES

logger = logging.getLogger(__name__)

__all__ = ["Exposure", "ExposureParts", "as_exposure_parts", "carries_mask", "dataset_metadata",
           "detector_frame", "frame_array", "frame_pair", "is_exposure_like", "mask_words",
           "register_direct_reader"]

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
        Pixel values; stored as float32 (LSST's ``ImageF``). A C-contiguous float32 array
        is held as it is, so ``AmpOffsetTask.run`` (``doApplyAmpOffset``) corrects the
        caller's array; any other is copied, and the corrected pixels are then only in
        ``exposure.image``. The masked pixels of an array that carries its own mask (numpy
        ``MaskedArray``, astropy ``CCDData``) get the ``BAD`` bit in ``mask``.
    mask : array_like, optional
        Mask bits, stored as int32 (zeros when omitted); booleans mark the ``BAD`` plane of
        ``mask_planes``, floating-point words must hold integers (as `measure_detector`
        takes masks).
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
        planes = dict(DEFAULT_MASK_PLANES if mask_planes is None else mask_planes)
        own_mask = None
        if carries_mask(image):
            # np.asarray would drop the array's own mask, and its pixels would count as good.
            image, own_mask = _masked_pixels(image)
        image = np.asarray(image)
        if image.ndim != 2:
            raise InputError(f"detector {detector.name!r}: image must be 2-D, got {image.shape}")
        if image.shape != detector.shape:
            raise InputError(
                f"detector {detector.name!r}: image shape {image.shape} does not match the "
                f"detector size {detector.shape} (height, width)"
            )
        self.image = np.ascontiguousarray(image, dtype=np.float32)
        # as `measure_detector` takes masks: booleans on the BAD bit (not bit 0), fractions
        # refused (not truncated)
        self.mask = (
            np.zeros(image.shape, np.int32)
            if mask is None
            else np.ascontiguousarray(np.asarray(mask_words(mask, planes, detector.name)),
                                      dtype=np.int32)
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
        if own_mask is not None and own_mask.any():
            if "BAD" not in planes:
                raise InputError(f"detector {detector.name!r}: the image carries a mask, but "
                                 "mask_planes has no BAD plane to mark its pixels in")
            if mask is not None and np.may_share_memory(self.mask, mask):
                self.mask = self.mask.copy()  # the caller's mask is never modified
            self.mask[own_mask] |= np.int32(1 << planes["BAD"])
        self.detector = detector
        self.mask_planes = planes
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
    mask : array_like of int or None
        In a type the algorithm's bit tests take (`mask_words`).
    detector : Detector or None
        None for objects without amp geometry (a ``CCDData``, a masked array, a Dataset
        without a ``geometry`` attribute, an afw exposure without a detector): the caller
        supplies it.
    mask_planes : dict or None
        Plane name -> bit (None: afw's defaults apply).
    metadata : mapping or None
        Where LSST's ``LSST ISR AMPOFFSET ...`` keys go: our `Exposure`'s ``metadata`` dict,
        an afw ``PropertyList``; for a Dataset, a new dict of the keys its
        ``attrs["ampoffset_metadata"]`` holds (`dataset_metadata`); None when the object has
        none (an opened file, a tuple, a Dataset without the attribute).
    """

    image: Any
    mask: Any
    detector: Detector | None
    mask_planes: dict[str, int] | None
    metadata: Any


def detector_frame(ds: Any, detector: Detector | None) -> Any:
    """Dataset ``ds`` with its pixels in ``detector``'s frame (see `as_exposure_parts`); the
    same object when they already are. Pixels are taken by position, so an xarray reordering
    would otherwise put each amp's pedestal on another amp. Every variable with both ``y``
    and ``x`` dimensions is put in ``(y, x)`` order (a mask stored ``(x, y)`` beside a
    ``(y, x)`` image too). Without a detector, the Dataset's own sizes stand for the
    detector's."""
    if any({"y", "x"} <= set(v.dims) and tuple(d for d in v.dims if d in ("y", "x"))
           != ("y", "x") for v in ds.data_vars.values()):
        ds = ds.transpose("y", "x", ...)  # each variable with both dims: y, x, then the rest
    if detector is None:
        name = ds.attrs.get("detector", "detector")
        shape = tuple(ds.sizes.get(dim, -1) for dim in ("y", "x"))
    else:
        name, shape = detector.name, detector.shape
    for dim, n in zip(("y", "x"), shape, strict=True):
        if dim not in ds.coords or ds[dim].ndim != 1 or ds[dim].size != n:
            continue  # no coordinate to go by (a size mismatch is reported later)
        c = np.asarray(ds[dim].values)
        if c.dtype.kind not in "iuf" or (np.diff(c) > 0).all():
            continue  # increasing: the pixels are in order, whatever their labels
        if c.dtype.kind in "iu" and np.array_equal(np.sort(c), np.arange(n)):
            ds = ds.sortby(dim)  # the pixel indices reordered: put them back
            continue
        raise GeometryError(
            f"detector {name!r}: the Dataset's {dim!r} coordinate does not increase "
            "along its pixels, so they are not in the detector frame; sort it "
            f"(ds.sortby({dim!r})) or measure arrays in the detector frame")
    return ds


def _is_data_array(obj: Any) -> bool:
    """An xarray DataArray (duck-typed: no xarray import)."""
    return hasattr(obj, "dims") and hasattr(obj, "variable") and hasattr(obj, "to_dataset")


def frame_array(array: Any, detector: Detector | None = None, name: str | None = None) -> Any:
    """The pixels of ``array`` in the detector frame, as `detector_frame` puts a Dataset's.

    An xarray DataArray with ``y``/``x`` dimensions is transposed to ``(y, x)`` and sorted
    back by its ``y``/``x`` coordinates where they reorder the pixel indices, as the
    ``image`` of a Dataset is; its data (or a direct reader of it, see
    `register_direct_reader`) is returned. A DataArray without those dimensions (``dim_0``,
    ``dim_1``) is taken by position, as a numpy array is; anything else is returned as it is.

    Parameters
    ----------
    array : array_like
        Image or mask plane (numpy, dask, xarray or lazy array).
    detector : Detector, optional
        Geometry the plane belongs to (its name and size); the plane's own sizes otherwise.
    name : str, optional
        Detector name for the error messages when ``detector`` is not given.

    Raises
    ------
    GeometryError
        For ``y``/``x`` coordinates that do not increase and are not a reordering of the
        pixel indices.
    """
    return _framed(array, detector, name)[0]


def _framed(array: Any, detector: Detector | None, name: str | None) -> tuple[Any, bool]:
    """`frame_array`'s pixels, and whether it reordered them (transposed or sorted)."""
    if not _is_data_array(array):
        return array, False
    if not {"y", "x"} & set(array.dims):
        return array.data, False
    ds = array.to_dataset(name="image", promote_attrs=False)
    if detector is None:
        ds.attrs["detector"] = name or "?"
    framed = detector_frame(ds, detector)
    return _direct(framed["image"].data), framed is not ds


def frame_pair(image: Any, mask: Any, detector: Detector | None = None,
               name: str | None = None) -> tuple[Any, Any]:
    """``image`` and ``mask`` in the detector frame (`frame_array`). A labelled DataArray
    that must be reordered beside a plain array, which is taken by position, is warned
    about: both follow their own rule, but a plain array taken from the same reordered view
    (``flipped["mask"].values``) would mark other pixels (mirrored, transposed) than the
    ones it was made for."""
    (pixels, moved), (bits, bits_moved) = (_framed(image, detector, name),
                                           _framed(mask, detector, name))
    for reordered, plain, which, other in ((moved, mask, "image", "mask"),
                                           (bits_moved, image, "mask", "image")):
        if reordered and plain is not None and not _is_data_array(plain):
            logger.warning(
                "detector %r: the %s is a DataArray put in the detector frame by its y/x "
                "dimensions and coordinates (reordered), while the %s is a plain array taken "
                "by position: if both come from one reordered view, the %s marks other "
                "pixels; give both as DataArrays (or both as arrays)",
                detector.name if detector is not None else name, which, other, other)
    return pixels, bits


def dataset_metadata(value: Any) -> dict[str, Any] | None:
    """A Dataset's ``attrs["ampoffset_metadata"]`` as a new dict (None when absent).

    `AmpOffsetTask.run` stores LSST's keys there as a JSON object (a string, so that
    ``to_netcdf`` writes the Dataset); a dict put there by other code is copied.

    Raises
    ------
    InputError
        For a value that is neither a mapping nor a JSON object.
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InputError(f"the Dataset's 'ampoffset_metadata' attribute is not JSON: "
                             f"{exc}") from exc
    if not isinstance(value, Mapping):
        raise InputError("the Dataset's 'ampoffset_metadata' attribute must be a JSON object "
                         f"of LSST's keys, got a {type(value).__name__}")
    return dict(value)


def is_exposure_like(obj: Any) -> bool:
    """Whether `as_exposure_parts` would treat ``obj`` as an exposure (not a bare array):
    arrays that carry a mask (``CCDData``, ``MaskedArray``) are, so that it is used."""
    if hasattr(obj, "data_vars") or carries_mask(obj):
        return True
    return hasattr(obj, "image") and (hasattr(obj, "detector") or hasattr(obj, "getDetector"))


def carries_mask(obj: Any) -> bool:
    """An astropy ``NDData`` (``CCDData``) or a numpy ``MaskedArray``: pixels with a mask
    of their own but no amp geometry."""
    if isinstance(obj, np.ma.MaskedArray):
        return True
    return all(hasattr(obj, a) for a in ("data", "mask", "uncertainty", "wcs", "meta"))


def _masked_pixels(obj: Any) -> tuple[Any, np.ndarray | None]:
    """Pixels of a ``MaskedArray`` or ``NDData`` and where its mask is set (non-zero = bad,
    ``CCDData``'s convention; None without a mask)."""
    if isinstance(obj, np.ma.MaskedArray):
        return obj.data, np.ma.getmaskarray(obj)
    mask = obj.mask
    return obj.data, None if mask is None else np.asarray(mask) != 0


def as_exposure_parts(obj: Any, mask_planes: Mapping[str, int] | None = None, *,
                      writes_metadata: bool = False) -> ExposureParts:
    """Image, mask, detector, mask planes and metadata of any supported exposure.

    Parameters
    ----------
    obj : Exposure, ExposureData, xarray.Dataset, afw-like exposure, tuple or masked array
        An `Exposure`; an opened file (`read_exposure`/`open_lazy`); a Dataset from
        `ampoffset_dask.open_exposure` (``image``/``mask`` variables, JSON ``geometry`` and
        ``mask_planes`` attributes); an object with ``.image.array``, ``.mask.array``,
        ``.getDetector()`` (amps with ``getName()``/``getBBox()``) and ``.getMetadata()``;
        ``(image, mask, detector[, mask_planes])`` (xarray DataArrays with ``y``/``x``
        dimensions put in the detector frame, `frame_array`); or an astropy
        ``CCDData``/``NDData`` or numpy ``MaskedArray`` (mask non-zero = ``BAD``, as
        ``CCDData`` has it; no geometry).
    mask_planes : mapping, optional
        Planes for objects that do not carry their own (tuples of three, and arrays with a
        mask of their own, whose masked pixels get its ``BAD`` bit).
    writes_metadata : bool
        The caller writes metadata: a Dataset gets its own ``ampoffset_metadata`` attribute,
        a dict (a copy of the keys it has, if any: xarray's copies of a Dataset share their
        attributes' values, and the keys written for one must not appear on the others);
        otherwise the Dataset is left untouched, and its parts' metadata is a copy of the
        attribute's keys or None.

    Returns
    -------
    ExposureParts
        A Dataset's planes in the detector frame: dimensions ``(y, x)`` (a transposed
        Dataset is transposed back) and, where the Dataset has ``y``/``x`` coordinates that
        are a reordering of the pixel indices (``isel`` with a negative step, ``sortby``,
        ``roll`` with its coordinates), sorted back by them. Masks of booleans (the ``BAD``
        plane) and of integers narrower than 32 bits come as int32, and floating-point
        masks holding integers (``Dataset.astype`` converts the mask too) as int64; lazy
        masks stay lazy. ``detector`` is None for objects without amp geometry.

    Raises
    ------
    InputError
        For an object of none of these shapes, or a mask that is not integer-valued.
    GeometryError
        For a Dataset whose ``y``/``x`` coordinates do not increase and are not a
        reordering of the pixel indices: its pixels are not in the detector frame.
    """
    if isinstance(obj, tuple):
        if len(obj) not in (3, 4):
            raise InputError("an exposure tuple is (image, mask, detector[, mask_planes]), "
                             f"got {len(obj)} items")
        image, mask, detector, *rest = obj
        planes = _planes(rest[0] if rest else mask_planes)
        name = _name(detector)
        frame = detector if isinstance(detector, Detector) else None
        image, mask = frame_pair(image, mask, frame, name)
        return ExposureParts(image, mask_words(mask, planes, name), detector,
                             planes, None)
    if hasattr(obj, "data_vars"):  # xarray Dataset from open_exposure
        if "image" not in obj.data_vars:
            name = obj.attrs.get("detector")
            raise InputError(f"the Dataset{f' of detector {name!r}' if name else ''} has no "
                             "'image' variable")
        detector = (Detector.from_dict(json.loads(obj.attrs["geometry"]))
                    if "geometry" in obj.attrs else None)
        planes = obj.attrs.get("mask_planes", mask_planes)
        planes = _planes(json.loads(planes) if isinstance(planes, str) else planes)
        metadata = dataset_metadata(obj.attrs.get("ampoffset_metadata"))
        if writes_metadata:
            metadata = obj.attrs["ampoffset_metadata"] = metadata or {}
        framed = detector_frame(obj, detector)
        name = detector.name if detector is not None else obj.attrs.get("detector", "?")
        mask = (mask_words(_direct(framed["mask"].data), planes, name)
                if "mask" in framed.data_vars else None)
        return ExposureParts(_direct(framed["image"].data), mask, detector, planes, metadata)
    if carries_mask(obj):  # CCDData / NDData / MaskedArray: pixels and a mask, no geometry
        # Non-zero = bad, CCDData's convention, marked BAD (in the planes given, else afw's).
        image, mask = _masked_pixels(obj)
        planes = None if mask_planes is None else _planes(mask_planes)
        return ExposureParts(np.asarray(image), mask_words(mask, planes, "?"), None, planes,
                             None)
    if isinstance(getattr(obj, "detector", None), Detector) and hasattr(obj, "image"):
        # our Exposure, or an ExposureData from read_exposure/open_lazy
        planes = _planes(getattr(obj, "mask_planes", mask_planes))
        return ExposureParts(obj.image, mask_words(obj.mask, planes, obj.detector.name),
                             obj.detector, planes, getattr(obj, "metadata", None))
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
    if det is None:  # an exposure without a detector attached: no amp geometry
        return ExposureParts(image, mask_words(mask, planes, "?"), None, planes, metadata)
    name = det.getName() if hasattr(det, "getName") else "detector"
    det_id = det.getId() if hasattr(det, "getId") else None
    amps = list(det.getAmplifiers()) if hasattr(det, "getAmplifiers") else list(det)
    detector = detector_from_amps(amps, name, det_id)
    if detector.shape != image.shape:
        detector = Detector(name, image.shape[1], image.shape[0], detector.amplifiers, det_id)
    return ExposureParts(image, mask_words(mask, planes, name), detector, planes, metadata)


def _name(detector: Any) -> str:
    return getattr(detector, "name", None) or "?"


def mask_words(mask: Any, planes: Mapping[str, int] | None, name: str) -> Any:
    """``mask`` in a type the algorithm's bit tests take (they test bits up to 30 in words of
    the mask's own type): booleans as the ``BAD`` bit, narrower integers as int32,
    floating-point words holding integers as int64; integers of 32 bits or more as they
    are (the same object). Lazy (dask) masks are converted lazily.

    Parameters
    ----------
    mask : array_like or None
        Mask words (numpy, dask, xarray or lazy array).
    planes : mapping or None
        Plane name -> bit of the mask (afw's defaults when None): where ``BAD`` is.
    name : str
        Detector name, for the error message.

    Raises
    ------
    InputError
        For a mask of another kind, or floating-point words that are not integers.
    """
    if mask is None:
        return None
    if _is_data_array(mask):  # labelled y/x: put in the frame, as a Dataset's mask
        mask = frame_array(mask, name=name)
    dtype = getattr(mask, "dtype", None)
    dtype = np.asarray(mask).dtype if dtype is None else np.dtype(dtype)
    if dtype.kind in "iu" and dtype.itemsize >= 4:
        return mask  # what the kernels take as it is (int32 from every reader)
    if dtype.kind == "b":
        bit = (DEFAULT_MASK_PLANES if planes is None else planes).get("BAD")
        if bit is not None:
            return _convert(mask, lambda m: np.left_shift(m.astype(np.int32), bit), np.int32)

        def unmarkable(m: np.ndarray) -> np.ndarray:
            # as `Exposure` refuses a masked array's pixels: no plane would mark them
            if np.asarray(m).any():
                raise InputError(f"detector {name!r}: the mask is boolean (True = BAD), but "
                                 "mask_planes has no BAD plane to mark its pixels in; give "
                                 "integer mask bits or mask_planes with a BAD plane")
            return np.zeros(np.shape(m), np.int32)
        return _convert(mask, unmarkable, np.int32)
    if dtype.kind in "iu":
        # a signed word is its bit pattern: int8 -128 is bit 7 alone, which sign extension
        # made bits 7-31 (NO_DATA among them)
        unsigned = np.dtype(f"u{dtype.itemsize}")
        return _convert(mask, lambda m: m.astype(unsigned).astype(np.int32), np.int32)
    if dtype.kind == "f":
        def words(m: np.ndarray) -> np.ndarray:
            m = np.asarray(m)
            if not (np.isfinite(m).all() and (m == np.round(m)).all()):
                raise InputError(
                    f"detector {name!r}: the mask ({dtype}) holds values that are not mask "
                    "bits (fractions or non-finite values); give an integer mask "
                    "(to change the image's type, convert only the image: "
                    "ds['image'] = ds['image'].astype(...))")
            return m.astype(np.int64)
        return _convert(mask, words, np.int64)
    raise InputError(f"detector {name!r}: the mask must hold integer bits, got {dtype}")


def _convert(mask: Any, func: Callable[[np.ndarray], np.ndarray], dtype: Any) -> Any:
    """``func`` applied to every block of a lazy (dask) ``mask``, or to the whole array."""
    if hasattr(mask, "map_blocks"):
        return mask.map_blocks(func, dtype=dtype)
    return func(np.asarray(mask))


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
