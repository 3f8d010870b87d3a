"""Amplifier geometry described by FITS header keywords (IRAF/NOAO ``DATASEC`` style).

Two conventions are understood, in one image HDU:

* per-amp suffixed keywords, as DECam writes them: ``DATASECA``, ``DATASECB``, ... give each
  amp's data pixels in the file image; ``CCDSEC<s>`` (else ``DETSEC<s>`` when it fits in the
  detector) places the amp in the detector frame; ``BIASSEC<s>`` is its serial overscan;
  ``AMPNAM<s>`` (written by `ampoffset_dask.io.fits.write_exposure`) names it, else the suffix
  does;
* a single ``DATASEC`` (one amp covering the data section).

Sections are 1-based and inclusive (``[x1:x2,y1:y2]``); reversed ranges are read as the same
pixels (no flip: see ``docs/cameras.md`` on why LSST raw DETSEC flips are not trusted).
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Mapping
from typing import Any

from ..errors import GeometryError
from ..geometry import Amplifier, Detector

__all__ = ["HeaderGeometry", "format_section", "geometry_from_header", "parse_section",
           "section_suffixes"]

_SECTION = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (0-based, half-open)


def parse_section(text: str) -> Box:
    """``'[x1:x2,y1:y2]'`` (1-based, inclusive, either order) -> ``(y0, y1, x0, x1)`` 0-based
    half-open.

    Raises
    ------
    GeometryError
        If the text is not a section.
    """
    m = _SECTION.match(str(text))
    if not m:
        raise GeometryError(f"{text!r} is not a FITS section '[x1:x2,y1:y2]'")
    a, b, c, d = (int(v) for v in m.groups())
    if min(a, b, c, d) < 1:
        raise GeometryError(f"section {text!r} has a coordinate below 1")
    return min(c, d) - 1, max(c, d), min(a, b) - 1, max(a, b)


def format_section(y0: int, y1: int, x0: int, x1: int) -> str:
    """Inverse of `parse_section` for 0-based half-open bounds."""
    return f"[{x0 + 1}:{x1},{y0 + 1}:{y1}]"


def section_suffixes(n: int) -> list[str]:
    """Keyword suffixes for ``n`` amps: ``A..Z`` then ``AA, AB, ...``."""
    letters = string.ascii_uppercase
    out = list(letters[:n])
    k = 0
    while len(out) < n:
        out.append(letters[k // 26] + letters[k % 26])
        k += 1
    return out


@dataclasses.dataclass(frozen=True)
class HeaderGeometry:
    """A detector read from header keywords and where each amp's pixels are in the file.

    Attributes
    ----------
    detector : Detector
        Amps in the assembled detector frame.
    data_boxes : tuple of Box
        Per amp (detector order): ``(y0, y1, x0, x1)`` of its data in the file image.
    overscan_boxes : tuple of Box or None
        Per amp: serial overscan in the file image, or None.
    """

    detector: Detector
    data_boxes: tuple[Box, ...]
    overscan_boxes: tuple[Box | None, ...]

    @property
    def trimmed(self) -> bool:
        """True if the file image is already the detector image (no assembly needed)."""
        return all(
            box == (a.y0, a.y1, a.x0, a.x1)
            for box, a in zip(self.data_boxes, self.detector.amplifiers, strict=True)
        ) and self.detector.shape == self._file_shape

    _file_shape: tuple[int, int] = (0, 0)


def _get(header: Mapping[str, Any], key: str) -> Any:
    try:
        return header.get(key)
    except (KeyError, ValueError):
        return None


def _suffixes_in(header: Mapping[str, Any]) -> list[str]:
    found = []
    for key in header:
        key = str(key)
        if key.startswith("DATASEC") and len(key) > len("DATASEC"):
            found.append(key[len("DATASEC"):])
    return sorted(found, key=lambda s: (len(s), s))


def geometry_from_header(
    header: Mapping[str, Any], name: str, shape: tuple[int, int], id: int | None = None
) -> HeaderGeometry | None:
    """Build a detector from ``DATASEC``-style keywords, or None if the header has none.

    Parameters
    ----------
    header : mapping
        Header of the image HDU (keys merged with the primary header are fine).
    name : str
        Detector name to use.
    shape : (int, int)
        ``(height, width)`` of the file image.
    id : int, optional
        Detector id.

    Raises
    ------
    GeometryError
        For malformed sections or sections outside the image, naming the keyword.
    """
    height, width = shape
    suffixes = _suffixes_in(header)
    if suffixes:
        entries = []
        for s in suffixes:
            data = _checked(header, f"DATASEC{s}", shape)
            amp_name = str(_get(header, f"AMPNAM{s}") or s).strip()
            over = None
            if _get(header, f"BIASSEC{s}") is not None:
                over = _checked(header, f"BIASSEC{s}", shape)
            place = None
            for key in (f"CCDSEC{s}", f"DETSEC{s}"):
                if _get(header, key) is not None:
                    try:
                        place = parse_section(str(_get(header, key)))
                    except GeometryError as exc:
                        raise GeometryError(f"keyword {key}: {exc}") from exc
                    break
            entries.append((amp_name, data, over, place))
    elif _get(header, "DATASEC") is not None:
        data = _checked(header, "DATASEC", shape)
        over = _checked(header, "BIASSEC", shape) if _get(header, "BIASSEC") is not None else None
        entries = [(str(_get(header, "AMPNAME") or "A").strip(), data, over, None)]
    else:
        return None

    places = [e[3] for e in entries]
    sizes_match = all(
        p is not None and (p[1] - p[0], p[3] - p[2]) == (d[1] - d[0], d[3] - d[2])
        for (_, d, _, _), p in zip(entries, places, strict=True)
    )
    if sizes_match:
        y_min = min(p[0] for p in places)
        x_min = min(p[2] for p in places)
        dest = [(p[0] - y_min, p[1] - y_min, p[2] - x_min, p[3] - x_min) for p in places]
    else:
        dest = _pack([e[1] for e in entries])
    det_h = max(d[1] for d in dest)
    det_w = max(d[3] for d in dest)
    amps = tuple(
        Amplifier(e[0], d[2], d[0], d[3] - d[2], d[1] - d[0])
        for e, d in zip(entries, dest, strict=True)
    )
    detector = Detector(name, det_w, det_h, amps, id)
    return HeaderGeometry(detector, tuple(e[1] for e in entries), tuple(e[2] for e in entries),
                          (height, width))


def _checked(header: Mapping[str, Any], key: str, shape: tuple[int, int]) -> Box:
    try:
        box = parse_section(str(_get(header, key)))
    except GeometryError as exc:
        raise GeometryError(f"keyword {key}: {exc}") from exc
    if box[1] > shape[0] or box[3] > shape[1]:
        raise GeometryError(
            f"keyword {key} = {_get(header, key)!r} lies outside the {shape[1]}x{shape[0]} image"
        )
    return box


def _pack(boxes: list[Box]) -> list[Box]:
    """Place data boxes side by side in the detector frame, closing the gaps between them."""

    def remap(ranges: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
        out, pos = {}, 0
        for r in sorted(set(ranges)):
            out[r] = pos
            pos += r[1] - r[0]
        return out

    ys = remap([(b[0], b[1]) for b in boxes])
    xs = remap([(b[2], b[3]) for b in boxes])
    return [(ys[(b[0], b[1])], ys[(b[0], b[1])] + b[1] - b[0],
             xs[(b[2], b[3])], xs[(b[2], b[3])] + b[3] - b[2]) for b in boxes]
