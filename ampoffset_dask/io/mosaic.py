"""Header conventions of mosaic cameras: one file holding many CCDs, whole-image raw flips,
trimmed CCD images.

- DECam-style multi-extension files hold one image HDU per CCD (raw, with ``DATASECA/B`` and
  ``BIASSECA/B``; or the Community Pipeline's trimmed ``instcal``/``ooi`` CCDs), each HDU
  naming its CCD (``CCDNUM``, ``DETPOS``); `ccd_hdus` lists them so that planning makes one
  task per CCD, each reading only its HDU. HDUs that all name the same CCD (`name_one_ccd`)
  are not a mosaic: they are the amps of that CCD, one per HDU.
- HSC raws are one 2144x4241 HDU whose four channels are read after flipping the whole image
  left-right (top-bottom for the rotated detectors 100-103); `raw_image_flip` says which flip
  a detector needs, `flip_box` maps a raw box of the flipped frame back to the file, and
  `check_hsc_channels` cross-checks the result with the header's ``T_EFMN``/``T_EFMX``
  channel keywords.
- CP ``instcal``/``ooi`` CCDs are trimmed by one pixel on each side (``LTV1 = LTV2 = -1``):
  `trimmed_detector` crops the camera's detector to the image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InputError
from ..geometry import Detector, detector_from_boxes

__all__ = ["check_hsc_channels", "flip_box", "is_ccd_header", "name_one_ccd", "raw_image_flip",
           "trimmed_detector"]

#: Header keys that name the CCD an HDU holds.
CCD_KEYS = ("CCDNUM", "DETPOS", "DETNAME", "DET-ID")
_HSC_ROTATED = range(100, 104)  # flipped top-bottom instead of left-right (cameras/README.md)


def is_ccd_header(header: Mapping[str, Any]) -> bool:
    """The HDU header names a CCD of its own (a mosaic extension)."""
    return any(key in header for key in CCD_KEYS)


def name_one_ccd(headers: Sequence[Mapping[str, Any]]) -> bool:
    """The headers all name the same CCD (equal `CCD_KEYS` values): several HDUs of one CCD,
    such as its amps in their own HDUs, rather than a multi-CCD file."""
    def ccd(header: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(str(header.get(key, "")).strip() for key in CCD_KEYS)

    return len({ccd(h) for h in headers}) == 1


def raw_image_flip(camera: Any, detector: Detector) -> str | None:
    """``"x"`` / ``"y"`` if the camera's raw boxes apply to the raw image flipped left-right /
    top-bottom, else None.

    User cameras say so per detector with ``"raw_image_flip": "x"`` (or ``"y"``); HSC needs
    ``"x"``, ``"y"`` for its rotated detectors 100-103 (obs_subaru's raw formatter).
    """
    if camera is None or detector.name not in camera:
        return None
    flip = camera.info(detector.name).get("raw_image_flip")
    if flip is None and camera.name == "hsc":
        flip = "y" if detector.id in _HSC_ROTATED else "x"
    if flip not in (None, "x", "y"):
        raise InputError(f"camera {camera.name!r}, detector {detector.name!r}: raw_image_flip "
                         f"must be 'x' or 'y', got {flip!r}")
    return flip


def flip_box(box: tuple[int, int, int, int], flip: str | None,
             shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A ``(x0, y0, w, h)`` box of the flipped raw frame, in the file's frame."""
    x0, y0, w, h = box
    if flip == "x":
        return shape[1] - x0 - w, y0, w, h
    if flip == "y":
        return x0, shape[0] - y0 - h, w, h
    return box


def _channel_boxes(header: Mapping[str, Any]) -> list[tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` data boxes (0-based, half-open) from ``T_EFMN<ch><axis>``..."""
    boxes = []
    channels = sorted({m.group(1) for k in header
                       if (m := re.fullmatch(r"T_EFMN(\d)1", str(k)))})
    for ch in channels:
        try:
            x0, x1 = int(header[f"T_EFMN{ch}1"]), int(header[f"T_EFMX{ch}1"])
            y0, y1 = int(header[f"T_EFMN{ch}2"]), int(header[f"T_EFMX{ch}2"])
        except (KeyError, TypeError, ValueError):
            continue
        boxes.append((y0 - 1, y1, x0 - 1, x1))
    return boxes


def check_hsc_channels(header: Mapping[str, Any], data_boxes: Sequence[tuple[int, ...]],
                       path: Any) -> None:
    """Every amp's data columns (file frame) must be one of the header's channels, if any.

    Only the columns are compared: they decide which channel an amp is read from (and catch a
    wrong left-right flip); the rows of the rotated detectors' channels are not checked.

    Raises
    ------
    InputError
        If the header describes channels and an amp's columns are none of them (wrong camera,
        detector or flip).
    """
    channels = [(x0, x1) for _, _, x0, x1 in _channel_boxes(header)]
    if not channels:
        return
    for box in data_boxes:
        if (box[2], box[3]) not in channels:
            raise InputError(
                f"{path}: raw amp columns {box[2]}:{box[3]} are none of the channels the header "
                f"describes (T_EFMN/T_EFMX: {channels}); wrong detector or camera?"
            )


def trimmed_detector(detector: Detector, keys: Mapping[str, Any],
                     shape: tuple[int, int]) -> Detector | None:
    """The part of ``detector`` a trimmed image holds, from its ``LTV1``/``LTV2`` offsets.

    CP ``instcal``/``ooi`` CCDs carry ``LTV1 = LTV2 = -1`` and are 2 pixels smaller than the
    CCD in each direction. Returns None when the keys do not describe such a cut-out.
    """
    try:
        dx, dy = -round(float(keys["LTV1"])), -round(float(keys["LTV2"]))
    except (KeyError, TypeError, ValueError):
        return None
    height, width = shape
    if dx < 0 or dy < 0 or dx + width > detector.width or dy + height > detector.height:
        return None
    boxes = []
    for amp in detector:
        x0, x1 = max(amp.x0, dx) - dx, min(amp.x1, dx + width) - dx
        y0, y1 = max(amp.y0, dy) - dy, min(amp.y1, dy + height) - dy
        if x1 <= x0 or y1 <= y0:
            return None
        boxes.append((amp.name, x0, y0, x1 - x0, y1 - y0))
    return detector_from_boxes(detector.name, width, height, boxes, detector.id)
