"""Where each amp of a file is read from: the detector's geometry and per-amp sources.

`resolve_detector` decides the geometry of a file (a camera or detector the caller gives,
the camera the header names, a persisted afw Detector, a layout the header states per amp,
or a built-in camera recognised from the detector name and image size, in that order);
`amp_sources` turns it into one `AmpSource` per amp (its box in an HDU, flips, overscan and
gain), from which the readers of `ampoffset_dask.io.fits` assemble the detector frame.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..cameras import Camera, UnknownDetectorError, canonical_camera_name, get_camera
from ..errors import GeometryError, InputError
from ..geometry import Amplifier, Detector, check_overlaps
from .file_info import (
    CCDDATA_MASK_PLANES,
    FileInfo,
    _amp_hdu_geometry,
    inspect_file,
    warn_once,
)
from .header_geometry import (
    HeaderGeometry,
    format_section,
    geometry_from_header,
    parse_section,
)
from .mosaic import (
    check_hsc_channels,
    flip_box,
    raw_image_flip,
    trimmed_detector,
)
from .overscan import IsrSteps, isr_steps, normalize_gain, normalize_overscan
from .sections import (
    AmpSource,
    _overlaps,
    file_stamp,
)

__all__ = [
    "amp_sources", "direct_sources", "file_isr", "mask_sources", "open_sources",
    "persisted_detector", "resolve_detector", "sources_on_hdu",
]


logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------
def _coerce_detector(detector: Any, path: Path) -> Detector | None:
    if detector is None or isinstance(detector, Detector):
        return detector
    if isinstance(detector, Mapping):
        try:
            return Detector.from_dict(detector)
        except (GeometryError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: invalid detector description: {exc}") from exc
    return None


def _camera_or_none(camera: Any, path: Path) -> Camera | None:
    if camera is None:
        return None
    try:
        return get_camera(camera)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def _guess_camera(info: FileInfo, report: bool = False) -> Camera | None:
    """A built-in camera holding a detector of this name and image size, if exactly one and
    the header states no other amp layout.

    The guess rests on a name and a size only: a layout the header states per amp
    (``AMPNAM<s>``/``DATASEC<s>``, ``CCDSEC<s>``...; what `write_exposure` records) is the
    file's own account of its amps and wins when the two differ. ``report`` logs that
    (`resolve_detector` does, once per file).
    """
    if info.detector is None or info.kind == "raw":
        return None
    from ..cameras import list_cameras

    hits = []
    for name in list_cameras():
        cam = get_camera(name)
        if info.detector in cam and cam[info.detector].shape == info.shape:
            hits.append(cam)
    if len(hits) != 1:
        return None
    cam = hits[0]
    stated = _stated_geometry(info)
    if stated is not None and stated.per_amp and not _same_layout(stated.detector,
                                                                  cam[info.detector]):
        if report:
            logger.info(
                "%s: the header states its own amp layout (%s), which differs from detector "
                "%r of camera %r (recognised from the detector name and image size only: %s); "
                "using the header's (pass camera= / --camera to use the camera's)",
                info.path, _layout_text(stated.detector), info.detector, cam.name,
                _layout_text(cam[info.detector]))
        return None
    return cam


def _same_layout(a: Detector, b: Detector) -> bool:
    """Same shape, and the same amps (names, boxes) in the same order."""
    return a.shape == b.shape and a.amplifiers == b.amplifiers


def _same_places(a: Detector, b: Detector) -> bool:
    """Same shape, and the same amp names at the same origins in the same order."""
    return a.shape == b.shape and (
        [(amp.name, amp.x0, amp.y0) for amp in a] == [(amp.name, amp.x0, amp.y0) for amp in b])


def _layout_text(detector: Detector, n: int = 2) -> str:
    """The first amps of ``detector`` as ``C10 x[0:509] y[0:2000], ...`` for messages."""
    shown = ", ".join(f"{a.name} x[{a.x0}:{a.x1}] y[{a.y0}:{a.y1}]"
                      for a in detector.amplifiers[:n])
    return shown + (", ..." if len(detector) > n else "")


def resolve_detector(info: FileInfo, camera: Any = None, detector: Any = None) -> Detector:
    """The amp geometry of a file.

    Parameters
    ----------
    info : FileInfo
        From `inspect_file`.
    camera : str or Camera, optional
        Camera to look the detector up in (default: the camera named in the header).
    detector : Detector, dict, str or int, optional
        A `Detector` (or its dict) to use as is, or a detector name/id in the camera
        (default: the detector named in the header).

    Raises
    ------
    InputError
        Naming the file, if no geometry can be found or the detector is unknown.
    """
    path = info.path
    user = _coerce_detector(detector, path)
    if user is not None:
        return user
    if detector is None and info.archive_hdus:
        persisted = persisted_detector(info)
        if persisted is not None:
            return persisted
    cam = _camera_or_none(camera, path)
    named = cam is None and info.camera is not None
    if named:
        cam = get_camera(info.camera)
    if cam is None:
        cam = _guess_camera(info, report=True)
    if cam is not None:
        key: Any = detector
        if key is None:
            key = info.detector if info.detector is not None else info.detector_id
        if key is None and len(cam) == 1:
            key = cam.detector_names[0]
        if key is None:
            raise InputError(
                f"{path}: the header names no detector (DETNAME, DETECTOR, RAFTBAY+CCDSLOT); "
                f"pass detector= (camera {cam.name!r})"
            )
        try:
            found = _fit_to_image(info, cam[key], cam)
        except UnknownDetectorError as exc:
            if detector is None and info.detector_id is not None and info.detector is not None:
                if info.detector_id_from is not None:
                    # the id is the header camera's number for that name, not the header's:
                    # in another camera it names another detector (LATISS's 0 is R01_S00)
                    raise InputError(
                        f"{path}: unknown detector: {exc}; the header gives no detector id "
                        f"(id {info.detector_id} is the number of {info.detector!r} in camera "
                        f"{info.detector_id_from!r}, which the header names); pass the "
                        "camera the file holds, or detector= (--detector)") from exc
                try:
                    return cam[info.detector_id]
                except UnknownDetectorError:
                    pass
            raise InputError(f"{path}: unknown detector: {exc}") from exc
        _warn_recorded_layout(info, found, cam, named)
        return found
    if detector is not None:
        raise InputError(
            f"{path}: detector {detector!r} given without a camera, and the header names no "
            "known camera; pass camera= or a Detector"
        )
    hg = _header_geometry(info)
    if hg is not None:
        return hg.detector
    if info.kind == "image" and len(info.segment_shapes) > 1:
        raise InputError(
            f"{path}: cannot tell the amp layout: {len(info.segment_shapes)} image HDUs and no "
            "camera given, none recognised in the header (CAMERA/INSTRUME) and no DATASEC-style "
            "keywords; if each HDU holds an amp, describe them with a camera whose amps name "
            "their HDU (\"hdu\"/\"extname\", see docs/cameras.md) and pass camera="
        )
    raise InputError(
        f"{path}: cannot tell the amp layout: no camera given, none recognised in the header "
        "(CAMERA/INSTRUME) and no DATASEC-style keywords; pass camera= and detector=, or a "
        "Detector"
    )


def persisted_detector(info: FileInfo) -> Detector | None:
    """The Detector an LSST exposure file carries in its archive tables (what
    ``exposure.getDetector()`` gives LSST's AmpOffsetTask), or None if it carries none.

    The amp rows give each amp's name and box in the assembled image, the detector row its
    name and id. Amps that do not tile the image are reported (a warning) and ignored.
    """
    if not info.archive_hdus:
        return None
    key = (str(info.path), file_stamp(info.path), info.archive_hdus)
    if key in _PERSISTED:
        return _PERSISTED[key]
    amps, name, det_id = None, info.detector, info.detector_id
    try:
        with fits.open(info.path, memmap=False, lazy_load_hdus=True) as hdul:
            for k in info.archive_hdus:
                table = hdul[k].data
                columns = set(table.columns.names)
                if {"name", "bbox_min_x", "bbox_min_y", "bbox_extent_x",
                        "bbox_extent_y"} <= columns and len(table):
                    amps = tuple(Amplifier(_text(r["name"]), int(r["bbox_min_x"]),
                                           int(r["bbox_min_y"]), int(r["bbox_extent_x"]),
                                           int(r["bbox_extent_y"])) for r in table)
                elif {"name", "serial"} <= columns and len(table) == 1:
                    name = _text(table[0]["name"]) or name
                    if "id" in columns:
                        det_id = int(table[0]["id"])
        detector = None
        if amps:
            detector = Detector(name or info.path.name.split(".")[0], info.shape[1],
                                info.shape[0], amps, id=det_id)
            _check_tiling(detector)
    except (OSError, ValueError, KeyError, IndexError, TypeError, GeometryError) as exc:
        logger.warning("%s: the persisted detector in its archive tables is unusable (%s); "
                       "using the camera's", info.path, exc)
        detector = None
    if len(_PERSISTED) > 256:
        _PERSISTED.clear()
    _PERSISTED[key] = detector
    return detector


def _check_tiling(detector: Detector) -> None:
    """`GeometryError` unless the amps cover the detector exactly once."""
    check_overlaps(detector)  # inside the image: `Detector` checks that
    # inside and disjoint: they cover the image exactly when their areas add up to it
    if sum(a.width * a.height for a in detector) != detector.width * detector.height:
        raise GeometryError("the amps do not cover the image")


def _text(value: Any) -> str:
    """A string cell of an archive table (stored as a string or as an array of characters)."""
    if isinstance(value, np.ndarray):
        value = "".join(v.decode() if isinstance(v, bytes) else str(v) for v in value.ravel())
    elif isinstance(value, bytes):
        value = value.decode()
    return str(value).strip()


#: `persisted_detector` per file (path, stamp, tables): planning and the readers ask again.
_PERSISTED: dict[tuple, Detector | None] = {}


def _fit_to_image(info: FileInfo, det: Detector, cam: Camera) -> Detector:
    """The camera's detector, cropped to a trimmed image (CP instcal/ooi, ``LTV1/2``).

    Raises
    ------
    InputError
        For a single image smaller than the detector that ``LTV1``/``LTV2`` do not place
        in it: no raw (a raw is larger), so the camera's raw boxes cannot be what it holds.
    """
    if info.kind != "image" or info.shape == det.shape:
        return det
    if info.shape[0] <= det.height and info.shape[1] <= det.width:
        cropped = trimmed_detector(det, info.header, info.shape)
        if cropped is not None:
            return cropped
        if len(info.segment_shapes) <= 1 and _single_image_raws(cam, det):
            # the camera's raw boxes would cut this single image as a raw (DECam's lie
            # outside it, and the message said so of an image that is no raw)
            ltv = (info.header.get("LTV1"), info.header.get("LTV2"))
            why = ("it has no LTV1/LTV2, which a trimmed image needs to say where it was cut"
                   if None in ltv else
                   f"its LTV1/LTV2 = {ltv[0]}, {ltv[1]} do not place it inside the detector")
            raise InputError(
                f"{info.path}: the image is {info.shape[1]}x{info.shape[0]} while detector "
                f"{det.name!r} of camera {cam.name!r} is {det.width}x{det.height}: smaller, so "
                f"no raw but a trimmed image, and {why} (pass detector= with a Detector of "
                "the image's amps otherwise)")
    return det


def _single_image_raws(cam: Camera, det: Detector) -> bool:
    """Whether the camera reads ``det``'s raws as one image (its raw boxes name no HDU):
    boxes in per-amp HDUs say nothing of a single image (refused later for its shape)."""
    try:
        raws = cam.raw_amps(det.name)
    except InputError:
        return False
    return not any(r.extname or r.hdu is not None for r in raws)


def _warn_recorded_layout(info: FileInfo, detector: Detector, cam: Camera,
                          named: bool) -> None:
    """Warn (once per file) when the per-amp layout the header states (``AMPNAM<s>``,
    ``DATASEC<s>``/``CCDSEC<s>``, ``DETSEC<s>``...) differs from ``detector``, the camera's,
    which is used: the camera is named by the header (``named``) or given, and either may
    know better than the cards (a persisted detector's layout the file no longer carries, a
    relabelled copy), but the per-amp rows of such a file may name the wrong amps."""
    if info.amp_hdus or info.kind == "raw":
        found = _stated_geometry(info)
        stated = found.detector if found is not None and found.per_amp else None
    else:  # one layout per detector type: its cards, not each file's, decide
        cards = tuple((str(k), str(v)) for k, v in info.header.items()
                      if _LAYOUT_CARD.match(str(k)))
        stated = _stated_layout(cards, tuple(info.shape)) if cards else None
    if stated is None:
        return
    differ = _layout_differences(stated, detector)
    if not differ:
        return
    _warn_once(
        info, "stated layout",
        "%s: the amp layout recorded in the header (%s) differs from detector %r of %s camera "
        "%r (%s) for %s; using the camera's, so the per-amp rows follow the camera's amp "
        "boxes (pass detector= with a Detector to use another layout)", info.path,
        _layout_text(stated), detector.name, "the header's" if named else "the given",
        cam.name, _layout_text(detector), differ)


def _layout_differences(stated: Detector, detector: Detector) -> str:
    """What differs between two amp layouts, for messages (``'amps A, B'``, ``'the
    shape ...'``); empty when they place the same amps at the same boxes (in any order).

    Amps are matched by name; a header naming its amps otherwise (per-amp HDUs named
    ``AMPA``, ``AMPB`` where the camera has ``A``, ``B``) is compared by its boxes alone.
    """
    if stated.shape != detector.shape:
        return (f"the shape: {stated.width}x{stated.height} stated, {detector.width}x"
                f"{detector.height} in the camera")
    boxes = {a.name: (a.x0, a.y0, a.width, a.height) for a in stated}
    theirs = {a.name: (a.x0, a.y0, a.width, a.height) for a in detector}
    names = [n for n in theirs if n in boxes and boxes[n] != theirs[n]]
    if not names and set(boxes.values()) != set(theirs.values()):
        names = [n for n, box in theirs.items() if box not in boxes.values()]
    return f"amp{'s' if len(names) > 1 else ''} {', '.join(names)}" if names else ""


#: The keywords `geometry_from_header` reads.
_LAYOUT_CARD = re.compile(r"(DATASEC|DETSEC|CCDSEC|BIASSEC|AMPNAM)")


@functools.lru_cache(maxsize=64)
def _stated_layout(cards: tuple[tuple[str, str], ...],
                   shape: tuple[int, int]) -> Detector | None:
    """The per-amp layout the single-image header ``cards`` state (None when they state
    none, or an unusable one): the same for every file of a detector type, worked out once
    (~5 ms each, a third of planning a file)."""
    try:
        stated = geometry_from_header(dict(cards), "layout", shape)
    except GeometryError as exc:
        logger.debug("header amp geometry: %s", exc)
        return None
    return stated.detector if stated is not None and stated.per_amp else None


def _header_geometry(info: FileInfo) -> HeaderGeometry | None:
    """The amp layout the headers describe (`ampoffset_dask.io.header_geometry`), or None.

    Raises
    ------
    InputError
        Naming the file and keyword when the keywords are malformed or contradict each other,
        and for per-amp HDUs that do not tile a detector (saying how to describe the file).
    """
    name = info.detector or info.path.name.split(".")[0]
    if info.amp_hdus:
        try:
            return _amp_hdu_geometry(info.amp_hdus, info.segment_shapes, name,
                                     info.detector_id)
        except GeometryError as exc:
            names = ", ".join(keys.get("EXTNAME") or f"HDU {k}"
                              for k, keys in info.amp_hdus.items())
            raise InputError(
                f"{info.path}: {len(info.amp_hdus)} image HDUs ({names}) each hold one amp, "
                f"but their sections do not describe one detector: {exc}; describe the file "
                "with a camera whose amps name their HDU (\"hdu\": k or \"extname\", see "
                "docs/cameras.md) and pass camera= (--camera), or read one HDU with hdu="
            ) from exc
    if info.kind == "raw":
        return None
    try:
        return geometry_from_header(info.header, name, info.shape, info.detector_id)
    except GeometryError as exc:
        raise InputError(f"{info.path}: header amp geometry: {exc}") from exc


def _stated_geometry(info: FileInfo) -> HeaderGeometry | None:
    """`_header_geometry`, None when the header has none or an unusable one (the caller
    then keeps the geometry it has from elsewhere)."""
    try:
        return _header_geometry(info)
    except InputError as exc:
        logger.debug("%s", exc)
        return None


def amp_sources(
    info: FileInfo,
    detector: Detector,
    camera: Any = None,
    overscan: bool | str = "auto",
    gain: str | None = None,
) -> tuple[AmpSource, ...]:
    """Where each amp of ``detector`` is read from in the file described by ``info``.

    Exposure files and images already in the detector frame read each amp from the same box
    of the image HDU; raws and untrimmed images are assembled from the camera's raw boxes
    (or the header's ``DATASEC`` keywords), with their serial overscan subtracted as
    ``overscan`` says (`ampoffset_dask.io.overscan`).

    Parameters
    ----------
    info : FileInfo
    detector : Detector
    camera : str or Camera, optional
    overscan : {"auto", "per-row", "mean", "none"} or bool
        ``"auto"``: per-row for pixels read from raw boxes with a serial overscan, nothing
        for assembled files; ``True`` = ``"per-row"``, ``False`` = ``"none"``.
    gain : {None, "none", "nominal"}
        ``"nominal"`` multiplies each amp by the camera's nominal gain (``amp_gain``).

    Raises
    ------
    InputError
        If the image does not match the detector, a raw box lies outside its HDU, a forced
        overscan mode finds no overscan, or nominal gains are asked for but unknown.
    ConfigError
        For an unknown ``overscan`` or ``gain`` value.
    """
    mode = normalize_overscan(overscan)
    gain_mode = normalize_gain(gain)
    path = info.path
    cam = _camera_or_none(camera, path)
    if cam is not None:
        _warn_other_camera(info, cam)
    if cam is None and info.camera is not None:
        cam = get_camera(info.camera)
    if cam is None and info.kind != "raw":
        cam = _guess_camera(info)
    sources = _located_sources(info, detector, cam, mode)
    if gain_mode == "nominal":
        _check_in_adu(info, detector)
        gains = _nominal_gains(info, detector, cam)
        sources = tuple(dataclasses.replace(s, gain=g)
                        for s, g in zip(sources, gains, strict=True))
    return sources


def _located_sources(info: FileInfo, detector: Detector, cam: Camera | None,
                     mode: str) -> tuple[AmpSource, ...]:
    path = info.path
    forced = mode in ("per-row", "mean")

    def direct() -> tuple[AmpSource, ...]:
        return direct_sources(detector, info.image_hdu)

    if info.kind in ("exposure", "ccddata"):
        if info.shape != detector.shape:
            raise InputError(_shape_message(info, detector))
        if forced:
            raise InputError(f"{path}: overscan={mode!r}, but an assembled exposure file has no "
                             "overscan (use overscan='auto' or 'none')")
        return direct()
    if info.kind == "raw":
        return _raw_sources(info, detector, cam, mode)
    # plain image
    if info.shape == detector.shape and not forced:
        hg = _stated_geometry(info)
        if hg is None or hg.trimmed or not _same_places(hg.detector, detector):
            return direct()
        # the header stores the amps elsewhere than at their places (DATASEC<s> != CCDSEC<s>,
        # amps out of detector order): read each from its DATASEC
        return _header_sources(info, detector, hg, mode)
    raws = None
    if cam is not None and detector.name in cam:
        try:
            raws = cam.raw_amps(detector.name)
        except InputError:
            raws = None
        if raws is not None and cam[detector.name] != detector:
            raws = None
    if raws is not None and any(r.extname or r.hdu is not None for r in raws):
        claimed = {r.extname.upper() for r in raws if r.extname}
        if all(_raw_hdu(info, r, claimed) is not None for r in raws):
            return _raw_sources(info, detector, cam, mode)  # the file has the amps' HDUs
        raws = None  # boxes within per-amp HDUs the file lacks: they say nothing of one image
    if raws is not None:
        flip = raw_image_flip(cam, detector)
        out = []
        for amp, raw in zip(detector, raws, strict=True):
            out.append(_source_from_raw(info, amp, raw, info.image_hdu, info.shape, mode, flip))
        if flip is not None:
            check_hsc_channels(info.header, [s.src for s in out], path)
        _check_amp_datasecs(info, detector, cam, raws)
        return _distinct(tuple(out), info, detector)
    hg = _header_geometry(info)
    if hg is not None and _same_places(hg.detector, detector):
        return _header_sources(info, detector, hg, mode)
    if info.shape == detector.shape:
        return direct()
    raise InputError(_shape_message(info, detector))


def _header_sources(info: FileInfo, detector: Detector, hg: HeaderGeometry,
                    mode: str) -> tuple[AmpSource, ...]:
    """Each amp read from its header data box (in its own HDU for per-amp files), flipped
    where its section ranges are reversed, placed at its place in ``detector``, with the
    header's overscan as ``mode`` says."""
    if mode in ("per-row", "mean") and any(o is None for o in hg.overscan_boxes):
        raise InputError(f"{info.path}: overscan={mode!r}, but the header gives no BIASSEC "
                         "overscan region for every amp")
    use = mode != "none" and all(o is not None for o in hg.overscan_boxes)
    hdus = hg.hdus or (info.image_hdu,) * len(detector)
    out = []
    for k, (amp, data, over, hdu) in enumerate(zip(detector, hg.data_boxes, hg.overscan_boxes,
                                                   hdus, strict=True)):
        flip_x, flip_y = hg.flip(k)
        out.append(AmpSource(amp.name, (amp.y0, amp.y1, amp.x0, amp.x1), hdu, data, flip_x,
                             flip_y, overscan=over if use else None,
                             overscan_mode=_applied_mode(mode)))
    return _distinct(tuple(out), info, detector)


def _distinct(sources: tuple[AmpSource, ...], info: FileInfo,
              detector: Detector) -> tuple[AmpSource, ...]:
    """``sources``, once no two amps read overlapping pixels of one HDU (boxes that do
    describe another layout than the file's: every amp would measure the same pixels)."""
    for i, a in enumerate(sources):
        for b in sources[i + 1:]:
            if a.hdu == b.hdu and _overlaps(a.src, *b.src):
                raise InputError(
                    f"{info.path}: the raw boxes of detector {detector.name!r} put amps "
                    f"{a.name!r} and {b.name!r} on overlapping pixels of the {info.shape} image; "
                    "they describe another layout (is it the right detector?)")
    return sources


def _applied_mode(mode: str) -> str:
    return "per-row" if mode == "auto" else mode


#: ``BUNIT`` values of pixels in electrons (FITS and astropy spellings).
_ELECTRONS = frozenset({"electron", "electrons", "e-", "e"})


def _check_in_adu(info: FileInfo, detector: Detector) -> None:
    """Refuse nominal gains for pixels the header says are in electrons already (a copy
    corrected with gain='nominal', LSST's post-ISR images): multiplied again, pedestals and
    levels came out gain times too large, recorded ok."""
    header = info.header or {}
    said = None
    if str(header.get("GAINCORR", "")).strip().lower() == "nominal":
        said = "GAINCORR = 'nominal'"
    elif str(header.get("BUNIT", "")).strip().lower() in _ELECTRONS:
        said = f"BUNIT = {header['BUNIT']!r}"
    if said is not None:
        raise InputError(f"{info.path}: detector {detector.name!r}: gain='nominal' (--gain "
                         f"nominal) on pixels already in electrons ({said} in its header); "
                         "measure it without gains")


def _nominal_gains(info: FileInfo, detector: Detector, cam: Camera | None) -> list[float]:
    """Per-amp nominal gains (e-/ADU) of ``detector`` from the camera description."""
    gains = None
    if cam is None:
        reason = ("no camera is given or named in the header; pass camera= (--camera) of a "
                  "camera with amp_gain")
    elif detector.name not in cam:
        reason = f"camera {cam.name!r} has no detector {detector.name!r}"
    else:
        gains = cam.info(detector.name).get("amp_gain")
        reason = (f"camera {cam.name!r} gives none for it" if not gains else
                  f"camera {cam.name!r} gives {len(gains)} for its {len(detector)} amps")
    if not gains or len(gains) != len(detector):
        # one reason per case: "no camera gives none" read as a double negative
        raise InputError(f"{info.path}: gain='nominal' needs the nominal gains (amp_gain, one "
                         f"per amp) of detector {detector.name!r}, but {reason}")
    out = [float(g) for g in gains]
    if not all(np.isfinite(g) and g > 0 for g in out):
        raise InputError(f"{info.path}: detector {detector.name!r}: nominal gains {out} are not "
                         "all positive")
    return out


def _shape_message(info: FileInfo, detector: Detector) -> str:
    return (f"{info.path}: image shape {info.shape} (height, width) does not match detector "
            f"{detector.name!r} of shape {detector.shape}")


def _source_from_raw(info, amp, raw, hdu, hdu_shape, mode: str,
                     flip: str | None = None) -> AmpSource:
    """One amp's source from its camera raw boxes; ``flip`` (``"x"``/``"y"``) says the boxes
    are in the frame of the whole raw image flipped left-right/top-bottom (HSC)."""
    if flip is not None:
        over_box = raw.raw_serial_overscan_bbox
        raw = dataclasses.replace(
            raw, raw_data_bbox=flip_box(raw.raw_data_bbox, flip, hdu_shape),
            raw_serial_overscan_bbox=(None if over_box is None
                                      else flip_box(over_box, flip, hdu_shape)),
            flip_x=raw.flip_x != (flip == "x"), flip_y=raw.flip_y != (flip == "y"))
    x0, y0, w, h = raw.raw_data_bbox
    if (w, h) != (amp.width, amp.height):
        raise InputError(
            f"{info.path}: amp {amp.name!r}: raw data box {w}x{h} "
            f"differs from its {amp.width}x{amp.height} bbox"
        )
    if x0 < 0 or y0 < 0 or y0 + h > hdu_shape[0] or x0 + w > hdu_shape[1]:
        raise InputError(
            f"{info.path}: amp {amp.name!r}: raw data box x[{x0}:{x0 + w}] y[{y0}:{y0 + h}] "
            f"lies outside HDU {hdu} of shape {hdu_shape}"
        )
    over = None
    if mode != "none":
        if raw.raw_serial_overscan_bbox is None:
            if mode != "auto":
                raise InputError(f"{info.path}: amp {amp.name!r} has no serial overscan box "
                                 f"(overscan={mode!r})")
        else:
            ox, oy, ow, oh = raw.raw_serial_overscan_bbox
            if ox < 0 or oy < 0 or oy + oh > hdu_shape[0] or ox + ow > hdu_shape[1]:
                raise InputError(
                    f"{info.path}: amp {amp.name!r}: overscan box x[{ox}:{ox + ow}] "
                    f"y[{oy}:{oy + oh}] lies outside HDU {hdu} of shape {hdu_shape}"
                )
            over = (oy, oy + oh, ox, ox + ow)
    return AmpSource(amp.name, (amp.y0, amp.y1, amp.x0, amp.x1), hdu, (y0, y0 + h, x0, x0 + w),
                     raw.flip_x, raw.flip_y, over, _applied_mode(mode))


def _raw_hdu(info: FileInfo, raw: Any, claimed: set[str]) -> int | None:
    """The HDU of the file a camera raw amp names (by ``extname``, else ``hdu``), or None.

    The ``hdu`` number stands in for a missing ``extname`` only on an HDU that no other amp
    of the detector names (``claimed``: their EXTNAMEs): a raw missing a segment would
    otherwise give its amp the pixels of the segment that moved up into its place.

    Raises
    ------
    InputError
        When several HDUs carry the amp's EXTNAME.
    """
    name = (raw.extname or "").upper()
    if name in info.duplicate_names:
        raise InputError(
            f"{info.path}: HDUs {', '.join(map(str, info.duplicate_names[name]))} share the "
            f"EXTNAME {raw.extname}: which one holds that amp is ambiguous (a damaged or "
            "wrongly merged file)")
    hdu = info.segments.get(name)
    if hdu is None and raw.hdu is not None and raw.hdu in info.segment_shapes:
        held = next((n for n, k in info.segments.items() if k == raw.hdu), None)
        if held is None or held not in claimed:
            hdu = raw.hdu
    return hdu


def _raw_sources(info: FileInfo, detector: Detector, cam: Camera | None,
                 mode: str) -> tuple[AmpSource, ...]:
    """Per-amp HDUs assembled with the camera's raw boxes, else (generic per-amp files) with
    their header sections."""
    path = info.path
    raws = None
    if cam is not None and detector.name in cam:
        try:
            raws = cam.raw_amps(detector.name)
        except InputError:
            if not info.amp_hdus:
                raise
    if raws is None:
        hg = _header_geometry(info) if info.amp_hdus else None
        if hg is not None and _same_places(hg.detector, detector):
            return _header_sources(info, detector, hg, mode)
        if hg is not None:
            raise InputError(
                f"{path}: detector {detector.name!r} is not the layout of the file's "
                f"{len(info.amp_hdus)} amp HDUs ({_layout_text(hg.detector)}); give a camera "
                "whose amps name their HDU (\"hdu\"/\"extname\", see docs/cameras.md)")
        raise InputError(
            f"{path}: raw file of detector {detector.name!r}: assembling raws needs a camera "
            "with raw boxes (pass camera=)"
        )
    lsst = _lsst_segments(info)
    if lsst:
        _check_detsize(info, detector, cam)
    out = []
    claimed = {r.extname.upper() for r in raws if r.extname}
    for amp, raw in zip(detector, raws, strict=True):
        hdu = _raw_hdu(info, raw, claimed)
        if hdu is None and raw.extname is None and raw.hdu is None:
            raise InputError(
                f"{path}: camera {cam.name!r} names no HDU (\"hdu\"/\"extname\") for amp "
                f"{amp.name!r} of detector {detector.name!r}, but this file holds one amp per "
                f"HDU (HDUs {', '.join(map(str, sorted(info.segment_shapes)))})"
            )
        if hdu is None:
            raise InputError(
                f"{path}: detector {detector.name!r}: no raw HDU {raw.extname or raw.hdu} for "
                f"amp {amp.name!r} (the file's segments: "
                f"{', '.join(sorted(info.segments)) or 'none named'})"
            )
        if lsst and hdu == info.image_hdu:
            _check_datasec(info, detector, cam, amp, raw, info.segment_shapes[hdu])
        out.append(_source_from_raw(info, amp, raw, hdu, info.segment_shapes[hdu], mode))
    return tuple(out)


# ------------------------------------------------------------------------------------------
# The file's own account of its detector, against the camera's
# ------------------------------------------------------------------------------------------
_LSST_SEGMENT = re.compile(r"^SEGMENT\d+$")


def _lsst_segments(info: FileInfo) -> bool:
    """True for an LSST-style raw (``SegmentNN`` HDUs), whose ``DETSIZE`` is the CCD's size.

    Other per-amp files may follow the NOAO mosaic convention, where ``DETSIZE`` is the size
    of the whole mosaic (DECam: ``[1:29400,1:29050]``), so it says nothing of one detector.
    """
    return any(_LSST_SEGMENT.match(name) for name in info.segments)


@functools.cache
def _known_layouts() -> tuple[tuple[str, str, tuple[int, int], tuple[int, int]], ...]:
    """``(camera, physical type, (width, height), raw data box (width, height))`` of every
    amp layout of the built-in cameras (one detector of each type): what a header's sizes
    can be recognised as."""
    from ..cameras import list_cameras

    out = []
    for cam_name in list_cameras():
        cam = get_camera(cam_name)
        seen: set[str] = set()
        for name in cam.detector_names:
            kind = str(cam.info(name).get("physical_type") or "")
            if kind in seen:
                continue
            seen.add(kind)
            try:
                raws = cam.raw_amps(name)
            except InputError:
                continue
            det = cam[name]
            for raw in raws[:1]:
                out.append((cam.name, kind, (det.width, det.height),
                            (raw.raw_data_bbox[2], raw.raw_data_bbox[3])))
    return tuple(out)


def _known_as(size: tuple[int, int], which: int) -> str:
    """The built-in layouts whose detector (``which=2``) or raw data box (``which=3``) has
    ``size``, as ``' (the size of ITL in lsstcam, ...)'``; empty if none."""
    hits: dict[str, list[str]] = {}
    for layout in _known_layouts():
        if layout[which] == size:
            hits.setdefault(layout[1], []).append(layout[0])
    if not hits:
        return ""
    shown = "; ".join(f"{kind} in {', '.join(cams)}" for kind, cams in hits.items())
    return f" (the size of {shown})"


def _detector_info(cam: Camera, detector: Detector, key: str) -> str | None:
    try:
        value = cam.info(detector.name).get(key)
    except (InputError, KeyError):
        return None
    return None if value is None else str(value)


def _detector_type(cam: Camera, detector: Detector) -> str | None:
    """``SCIENCE``, ``WAVEFRONT``... of the camera's detector, if it says."""
    kind = _detector_info(cam, detector, "type")
    return None if kind is None else kind.upper()


def _physical_type(cam: Camera, detector: Detector) -> str:
    """``', E2V'``: the detector's physical type for messages, if the camera gives one."""
    kind = _detector_info(cam, detector, "physical_type")
    return f", {kind}" if kind else ""


def _header_camera(info: FileInfo, cam: Camera) -> str:
    """``'; the header names camera 'lsstcam''`` when it names another built-in camera."""
    if info.camera is None or info.camera == canonical_camera_name(cam.name):
        return ""
    return f"; the header names camera {info.camera!r} (CAMERA/INSTRUME)"


def _check_detsize(info: FileInfo, detector: Detector, cam: Camera) -> None:
    """Refuse an LSST raw whose ``DETSIZE`` is not the size of the camera's detector.

    The camera's raw boxes would then cut another CCD type's segments (an ITL raw whose
    ``RAFTBAY``/``CCDSLOT`` name an E2V slot, an E2V raw read with LSSTComCam): every box
    fits in the segments, so nothing else notices, and the pedestals come out wrong by a few
    ADU. All real LSSTCam, LSSTComCam and LATISS raws state their CCD's size here.

    Raises
    ------
    InputError
        Naming the file, the detector, both sizes and what to do.
    """
    text = info.header.get("DETSIZE")
    if text is None:
        return
    try:
        y0, y1, x0, x1 = parse_section(str(text))
    except GeometryError as exc:
        _warn_once(info, "DETSIZE", "%s: DETSIZE %r is not a section (%s); not checked against "
                   "detector %r of camera %r", info.path, text, exc, detector.name, cam.name)
        return
    size = (x1 - x0, y1 - y0)
    if size == (detector.width, detector.height):
        return
    if (size == (detector.width, 2 * detector.height)
            and _detector_type(cam, detector) == "WAVEFRONT"):
        # an LSSTCam wavefront detector is one half of a CCD, read by 8 of its amps: its raw
        # may state the whole CCD (no real wavefront raw was at hand to tell)
        return
    raise InputError(
        f"{info.path}: the header's DETSIZE {str(text).strip()!r} says the file holds a "
        f"{size[0]}x{size[1]} detector{_known_as(size, 2)}, but detector {detector.name!r} of "
        f"camera {cam.name!r} is {detector.width}x{detector.height}"
        f"{_physical_type(cam, detector)}{_header_camera(info, cam)}: its raw boxes would cut "
        "another CCD type's segments; pass the camera and detector the file holds (camera=, "
        "detector=; --camera, --detector), or correct RAFTBAY/CCDSLOT if they name the wrong "
        "slot")


def _check_datasec(info: FileInfo, detector: Detector, cam: Camera, amp: Amplifier,
                   raw: Any, hdu_shape: tuple[int, int]) -> None:
    """Compare the ``DATASEC`` of the raw's first segment with the camera's raw data box.

    Real LSST raws are known to carry some wrong ``DATASEC`` values, and LSST assembles with
    its camera and only warns (obs_lsst ``fixAmpGeometry``), so a disagreement is a warning,
    once per file. A data box of another built-in CCD type's size (ITL's 509x2000 where the
    camera has E2V's 512x2002) is no clerical slip but another CCD: refused, as the camera's
    boxes would cut it wrongly. Only the first segment's keywords are kept by
    `inspect_file`; LSST raws give every segment the same ``DATASEC``.

    Raises
    ------
    InputError
        When ``DATASEC`` has the data-box size of another built-in CCD type.
    """
    text = info.header.get("DATASEC")
    if text is None:
        return
    x0, y0, w, h = raw.raw_data_bbox
    camera_box = format_section(y0, y0 + h, x0, x0 + w)
    where = f"segment {raw.extname or amp.name} (HDU {info.image_hdu})"
    try:
        box = parse_section(str(text))
    except GeometryError as exc:
        box = None
        reason = str(exc)
    if box is not None and box == (y0, y0 + h, x0, x0 + w):
        return
    if box is not None:
        size = (box[3] - box[2], box[1] - box[0])
        other = _known_as(size, 3)
        if size != (w, h) and other:
            raise InputError(
                f"{info.path}: {where}: DATASEC {str(text).strip()!r} has {size[0]}x{size[1]} "
                f"data pixels{other}, but detector {detector.name!r} of camera {cam.name!r}"
                f"{_physical_type(cam, detector)} has {w}x{h} ({camera_box})"
                f"{_header_camera(info, cam)}: "
                "the file holds another CCD type; pass the camera and detector it holds "
                "(camera=, detector=; --camera, --detector)")
        reason = (f"{size[0]}x{size[1]} pixels" if size != (w, h)
                  else "the same size at another place")
        if box[1] > hdu_shape[0] or box[3] > hdu_shape[1]:
            reason += f", outside the {hdu_shape[1]}x{hdu_shape[0]} segment"
    _warn_once(info, "DATASEC",
               "%s: %s: DATASEC %r disagrees with the raw data box %s of detector %r of camera "
               "%r (%s); using the camera's, as LSST does (real raws carry some wrong DATASEC "
               "values); pass another camera if the file is not that detector", info.path,
               where, str(text).strip(), camera_box, detector.name, cam.name, reason)


def _warn_other_camera(info: FileInfo, cam: Camera) -> None:
    """Warn (once per file) when the header names another built-in camera than the
    built-in camera the caller gives: the caller may know better (a relabelled test-stand
    file), so the given camera is used."""
    given = canonical_camera_name(cam.name)
    if given is None or info.camera is None or info.camera == given:
        return
    named = info.header.get("CAMERA") or info.header.get("INSTRUME")
    _warn_once(info, "camera", "%s: camera %r was given, but the header names camera %r "
               "(%s); using %r as asked", info.path, given, info.camera,
               f"{named!r}" if named else "CAMERA/INSTRUME", given)


def _check_amp_datasecs(info: FileInfo, detector: Detector, cam: Camera,
                        raws: Sequence[Any]) -> None:
    """Warn (once per file) when the header's per-amp data sections (DECam's ``DATASECA``,
    ``DATASECB``) disagree with the camera's raw data boxes the image is cut with: the HDU is
    then not the CCD its identity keywords name (an N CCD's layout under an S CCD's
    ``DETPOS`` was cut with the S boxes, without a word)."""
    wrong = []
    for amp, raw in zip(detector, raws, strict=True):
        text = info.header.get(f"DATASEC{amp.name}")
        if text is None:
            continue
        x0, y0, w, h = raw.raw_data_bbox
        try:
            box = parse_section(str(text))
        except GeometryError:
            box = None
        if box != (y0, y0 + h, x0, x0 + w):
            wrong.append(f"DATASEC{amp.name} {str(text).strip()!r} (camera: "
                         f"{format_section(y0, y0 + h, x0, x0 + w)})")
    if wrong:
        _warn_once(info, "DATASEC<amp>",
                   "%s: %s disagree with the raw data boxes of detector %r of camera %r the "
                   "image is cut with; the HDU may hold another CCD than its identity "
                   "keywords name: pass camera= and detector= if so", info.path,
                   "; ".join(wrong), detector.name, cam.name)


def _warn_once(info: FileInfo, what: str, message: str, *args: Any) -> None:
    """`warn_once` per file (and stamp: a file rewritten since warns again) and ``what``:
    planning and every reader of a file build its sources again."""
    warn_once(logger, (str(info.path), file_stamp(info.path), what), message, *args)


def file_isr(info: FileInfo, detector: Detector, sources: tuple[AmpSource, ...]) -> IsrSteps:
    """What reading ``sources`` does to the pixels of the file (`IsrSteps`)."""
    raw = (info.kind == "raw" or tuple(info.shape) != detector.shape
           or any((s.src, s.flip_x, s.flip_y) != (s.dest, False, False) for s in sources))
    return isr_steps(sources, raw=raw)


def open_sources(
    path: str | os.PathLike, camera: Any = None, detector: Any = None,
    overscan: bool | str = "auto", gain: str | None = None, hdu: int | None = None,
) -> tuple[FileInfo, Detector, tuple[AmpSource, ...]]:
    """Headers, geometry and per-amp pixel sources of a file (what every reader starts from)."""
    info = inspect_file(path, hdu)
    det = resolve_detector(info, camera, detector)
    return info, det, amp_sources(info, det, camera, overscan, gain)


def sources_on_hdu(sources: tuple[AmpSource, ...], hdu: int,
                   gain_power: int = 0) -> tuple[AmpSource, ...]:
    """The same amp boxes read from another HDU, without overscan: the mask
    (``gain_power=0``: no gain) or the variance (``gain_power=2``: scaled by gain squared)."""
    return tuple(dataclasses.replace(
        s, hdu=hdu, overscan=None,
        # float32(gain) ** power: the factor the whole-image read applies (`_times_gain`)
        gain=(None if s.gain is None or not gain_power
              else float(np.float32(s.gain) ** gain_power)),
    ) for s in sources)


def mask_sources(info: FileInfo, sources: tuple[AmpSource, ...]) -> tuple[AmpSource, ...]:
    """The amp boxes of the MASK HDU (CCDData's boolean masks become ``BAD`` bits)."""
    out = sources_on_hdu(sources, info.mask_hdu)
    if info.kind == "ccddata":
        bit = CCDDATA_MASK_PLANES["BAD"]
        out = tuple(dataclasses.replace(s, flag_nonzero=bit) for s in out)
    return out


def direct_sources(det: Detector, hdu: int) -> tuple[AmpSource, ...]:
    """Each amp read from its own box of image HDU ``hdu`` (a file in the detector frame)."""
    return tuple(AmpSource(a.name, (a.y0, a.y1, a.x0, a.x1), hdu, (a.y0, a.y1, a.x0, a.x1))
                 for a in det)
