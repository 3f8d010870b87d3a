"""Amplifier geometry described by FITS header keywords (IRAF/NOAO ``DATASEC`` style).

Two conventions are understood, in one image HDU:

* per-amp suffixed keywords, as DECam writes them: ``DATASECA``, ``DATASECB``, ... give each
  amp's data pixels in the file image; ``CCDSEC<s>`` (else ``DETSEC<s>`` when it fits in the
  detector) places the amp in the detector frame; ``BIASSEC<s>`` is its serial overscan;
  ``AMPNAM<s>`` (written by `ampoffset_dask.io.fits.write_exposure`) names it, else the suffix
  does;
* a single ``DATASEC`` (one amp covering the data section).

`geometry_from_hdus` reads a third convention, one image HDU per amp (a generic per-amp
multi-extension raw): each HDU's ``DATASEC`` (default: the whole HDU) holds the amp's data,
its ``CCDSEC`` (else ``DETSEC``) places it, its ``BIASSEC`` is its serial overscan.

Sections are 1-based and inclusive (``[x1:x2,y1:y2]``). A reversed range is a flip, as in the
NOAO/IRAF convention that LSST raw headers follow: an amp whose place (``CCDSEC``/``DETSEC``)
runs ``[509:1,4000:2001]`` was read out mirrored along both axes, and is flipped before it is
pasted; a reversed ``DATASEC`` range reads the data mirrored (an IRAF image section), so
both reversed is no flip (`section_flips`). Placements that put two amps on the same
detector pixels are refused (`GeometryError` naming both keywords).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import GeometryError
from ..geometry import Amplifier, Detector
from .sections import _overlaps

__all__ = ["HeaderGeometry", "format_section", "geometry_from_hdus", "geometry_from_header",
           "parse_section", "section_flips", "section_suffixes"]

_SECTION = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (0-based, half-open)


def _section_numbers(text: str) -> tuple[int, int, int, int]:
    """``(x1, x2, y1, y2)`` of ``'[x1:x2,y1:y2]'``, as written (`GeometryError` if not a
    section)."""
    m = _SECTION.match(str(text))
    if not m:
        raise GeometryError(f"{text!r} is not a FITS section '[x1:x2,y1:y2]'")
    a, b, c, d = (int(v) for v in m.groups())
    return a, b, c, d


def parse_section(text: str) -> Box:
    """``'[x1:x2,y1:y2]'`` (1-based, inclusive, either order) -> ``(y0, y1, x0, x1)`` 0-based
    half-open.

    Raises
    ------
    GeometryError
        If the text is not a section.
    """
    a, b, c, d = _section_numbers(text)
    if min(a, b, c, d) < 1:
        raise GeometryError(f"section {text!r} has a coordinate below 1")
    return min(c, d) - 1, max(c, d), min(a, b) - 1, max(a, b)


def section_flips(text: str) -> tuple[bool, bool]:
    """Which ranges of section ``'[x1:x2,y1:y2]'`` are reversed: ``(x2 < x1, y2 < y1)``.

    In the NOAO/IRAF convention a reversed range is a flip along that axis (`parse_section`
    gives the same pixels either way).

    Raises
    ------
    GeometryError
        If the text is not a section.
    """
    a, b, c, d = _section_numbers(text)
    return b < a, d < c


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
    per_amp : bool
        The amps come from per-amp keywords (``DATASEC<s>``... or one HDU per amp), not from
        a single ``DATASEC``: the header states a layout of its own.
    hdus : tuple of int or None
        Per amp: the HDU its boxes are in (`geometry_from_hdus`); None when all are in the
        one image HDU whose header was read.
    flips : tuple of (bool, bool) or None
        Per amp: ``(flip_x, flip_y)`` to apply to its data before pasting it at its place
        (reversed section ranges, `section_flips`); None when no amp is flipped.
    """

    detector: Detector
    data_boxes: tuple[Box, ...]
    overscan_boxes: tuple[Box | None, ...]

    @property
    def trimmed(self) -> bool:
        """True if the file image is already the detector image (no assembly needed)."""
        return self.flips is None and all(
            box == (a.y0, a.y1, a.x0, a.x1)
            for box, a in zip(self.data_boxes, self.detector.amplifiers, strict=True)
        ) and self.detector.shape == self._file_shape

    _file_shape: tuple[int, int] = (0, 0)
    per_amp: bool = False
    hdus: tuple[int, ...] | None = None
    flips: tuple[tuple[bool, bool], ...] | None = None

    def flip(self, k: int) -> tuple[bool, bool]:
        """``(flip_x, flip_y)`` of amp ``k`` (detector order)."""
        return (False, False) if self.flips is None else self.flips[k]


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
        For malformed sections, sections outside the image, or places (``CCDSEC<s>``,
        ``DETSEC<s>``) that put two amps on the same detector pixels, naming the keywords.
    """
    suffixes = _suffixes_in(header)
    if suffixes:
        entries = []
        for s in suffixes:
            data = _checked(header, f"DATASEC{s}", shape)
            amp_name = str(_get(header, f"AMPNAM{s}") or s).strip()
            over = None
            if _get(header, f"BIASSEC{s}") is not None:
                over = _checked(header, f"BIASSEC{s}", shape)
            place, place_key = _placement(header, s)
            entries.append(_Entry(amp_name, data, over, place, place_key,
                                  data_key=f"DATASEC{s}",
                                  data_flip=_reversal(header, f"DATASEC{s}"),
                                  place_flip=_reversal(header, place_key)))
    elif _get(header, "DATASEC") is not None:
        data = _checked(header, "DATASEC", shape)
        over = _checked(header, "BIASSEC", shape) if _get(header, "BIASSEC") is not None else None
        entries = [_Entry(str(_get(header, "AMPNAME") or "A").strip(), data, over, None, "",
                          data_key="DATASEC", data_flip=_reversal(header, "DATASEC"))]
    else:
        return None

    sizes_match = all(e.place is not None and _size(e.place) == _size(e.data) for e in entries)
    if not sizes_match and all(e.place is not None for e in entries):
        # Places of another size than their data (a binned file whose CCDSEC/DETSEC count
        # unbinned pixels): packing the data boxes in file order instead dropped the places
        # and their flips, and the strips compared pixels that are not neighbours.
        e = next(e for e in entries if _size(e.place) != _size(e.data))
        raise GeometryError(
            f"{e.place_key} = {str(_get(header, e.place_key)).strip()!r} is not the size of "
            f"its data section {e.data_key} = {format_section(*e.data)} (binned?): describe "
            "the amps with a camera file (docs/cameras.md)")
    if sizes_match:
        dest = _shifted([e.place for e in entries])
        keys = [e.place_key for e in entries]
        flips = [e.flip for e in entries]
    else:  # the places are not used: only a reversed DATASEC flips (read mirrored)
        dest = _pack([e.data for e in entries])
        keys = [e.data_key for e in entries]
        flips = [e.data_flip for e in entries]
    _check_disjoint(dest, keys, header)
    return _geometry(entries, dest, name, id, shape, per_amp=bool(suffixes), flips=flips)


def geometry_from_hdus(
    hdus: Sequence[tuple[int, Mapping[str, Any], tuple[int, int]]], name: str,
    id: int | None = None,
) -> HeaderGeometry:
    """Build a detector from a file holding one image HDU per amp.

    Each HDU's ``DATASEC`` (default: the whole HDU) gives the amp's data, ``CCDSEC`` (else
    ``DETSEC``) its place in the detector, ``BIASSEC`` its serial overscan; the amp is named
    by the HDU's ``EXTNAME`` (else ``HDU<k>``). The places, shifted so that the lowest is at
    the origin, must tile a rectangle: the detector.

    Parameters
    ----------
    hdus : sequence of (int, mapping, (int, int))
        ``(HDU index, header, (height, width))`` of every amp HDU, in amp order.
    name : str
        Detector name to use.
    id : int, optional
        Detector id.

    Returns
    -------
    HeaderGeometry
        With ``hdus`` giving each amp's HDU.

    Raises
    ------
    GeometryError
        When the keywords do not describe one detector unambiguously (a missing or malformed
        section, a place of another size than the data, two amps on the same pixels, gaps),
        naming the HDU and keyword.
    """
    entries = []
    for k, header, shape in hdus:
        extname = str(_get(header, "EXTNAME") or "").strip()
        where = f"HDU {k}" + (f" ({extname})" if extname else "")
        try:
            data = (_checked(header, "DATASEC", shape) if _get(header, "DATASEC") is not None
                    else (0, shape[0], 0, shape[1]))
            over = (_checked(header, "BIASSEC", shape) if _get(header, "BIASSEC") is not None
                    else None)
            place, place_key = _placement(header, "")
        except GeometryError as exc:
            raise GeometryError(f"{where}: {exc}") from exc
        if place is None:
            raise GeometryError(f"{where} has no CCDSEC or DETSEC to place its amp")
        if _size(place) != _size(data):
            raise GeometryError(
                f"{where}: {place_key} = {_get(header, place_key)!r} is not the size of its "
                f"data section {format_section(*data)} (binned?)")
        shown = f"{where} {place_key} = {str(_get(header, place_key)).strip()!r}"
        data_flip = (_reversal(header, "DATASEC") if _get(header, "DATASEC") is not None
                     else (False, False))
        entries.append(_Entry(extname or f"HDU{k}", data, over, place, shown,
                              data_key=f"{where} DATASEC", data_flip=data_flip,
                              place_flip=_reversal(header, place_key)))
    if len(entries) < 2:
        raise GeometryError("fewer than two amp HDUs")
    dest = _shifted([e.place for e in entries])
    _check_disjoint(dest, [e.place_key for e in entries], None)
    height, width = max(d[1] for d in dest), max(d[3] for d in dest)
    if sum(_size(d)[0] * _size(d)[1] for d in dest) != height * width:
        raise GeometryError(f"the amp places leave gaps in the {width}x{height} detector they "
                            "span")
    geometry = _geometry(entries, dest, name, id, (height, width), per_amp=True,
                         flips=[e.flip for e in entries])
    return dataclasses.replace(geometry, hdus=tuple(k for k, _, _ in hdus))


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One amp as the keywords give it: data box in the file, overscan, place, keywords."""

    name: str
    data: Box
    over: Box | None
    place: Box | None
    place_key: str
    data_key: str
    data_flip: tuple[bool, bool] = (False, False)
    place_flip: tuple[bool, bool] = (False, False)

    @property
    def flip(self) -> tuple[bool, bool]:
        """``(flip_x, flip_y)`` of the amp pasted at its place: a reversed place range is a
        flip (NOAO/IRAF), a reversed data range reads the data mirrored, and two cancel."""
        return (self.data_flip[0] != self.place_flip[0], self.data_flip[1] != self.place_flip[1])


def _placement(header: Mapping[str, Any], s: str) -> tuple[Box | None, str]:
    """``CCDSEC<s>`` (else ``DETSEC<s>``) as a box, with the keyword read; None if absent."""
    for key in (f"CCDSEC{s}", f"DETSEC{s}"):
        if _get(header, key) is not None:
            try:
                return parse_section(str(_get(header, key))), key
            except GeometryError as exc:
                raise GeometryError(f"keyword {key}: {exc}") from exc
    return None, ""


def _reversal(header: Mapping[str, Any], key: str) -> tuple[bool, bool]:
    """`section_flips` of keyword ``key`` (already parsed as a section); no flip if absent."""
    value = _get(header, key) if key else None
    return (False, False) if value is None else section_flips(str(value))


def _size(box: Box) -> tuple[int, int]:
    return box[1] - box[0], box[3] - box[2]


def _shifted(places: list[Box]) -> list[Box]:
    """The places moved so that the lowest row and column are 0 (a mosaic frame's DETSEC)."""
    y_min = min(p[0] for p in places)
    x_min = min(p[2] for p in places)
    return [(p[0] - y_min, p[1] - y_min, p[2] - x_min, p[3] - x_min) for p in places]


def _check_disjoint(dest: list[Box], keys: list[str], header: Mapping[str, Any] | None) -> None:
    """`GeometryError` naming the keywords of the first two amps placed on the same pixels
    (a layout the amp-offset solve cannot use: both amps would claim those pixels)."""
    def shown(key: str) -> str:
        value = _get(header, key) if header is not None else None
        return key if value is None else f"{key} = {str(value).strip()!r}"

    for (i, a), (j, b) in itertools.combinations(enumerate(dest), 2):
        if _overlaps(a, *b):
            raise GeometryError(f"{shown(keys[j])} overlaps {shown(keys[i])}: two amps on the "
                                "same detector pixels")


def _geometry(entries: list[_Entry], dest: list[Box], name: str, id: int | None,
              shape: tuple[int, int], per_amp: bool,
              flips: Sequence[tuple[bool, bool]] = ()) -> HeaderGeometry:
    """The `HeaderGeometry` of ``entries`` placed at ``dest`` (detector frame), each amp
    flipped as ``flips`` says."""
    amps = tuple(Amplifier(e.name, d[2], d[0], d[3] - d[2], d[1] - d[0])
                 for e, d in zip(entries, dest, strict=True))
    detector = Detector(name, max(d[3] for d in dest), max(d[1] for d in dest), amps, id)
    flipped = tuple(tuple(f) for f in flips) if any(any(f) for f in flips) else None
    return HeaderGeometry(detector, tuple(e.data for e in entries),
                          tuple(e.over for e in entries), tuple(shape), per_amp, flips=flipped)


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
