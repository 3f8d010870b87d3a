"""Amp geometry from DATASEC-style header keywords."""

from __future__ import annotations

import pytest

from ampoffset_dask.errors import GeometryError
from ampoffset_dask.io.header_geometry import (
    format_section,
    geometry_from_header,
    parse_section,
    section_suffixes,
)


def test_parse_and_format_sections():
    assert parse_section("[1:512,2003:4004]") == (2002, 4004, 0, 512)
    assert parse_section(" [ 512:1 , 4004:2003 ] ") == (2002, 4004, 0, 512)  # reversed ranges
    assert format_section(2002, 4004, 0, 512) == "[1:512,2003:4004]"
    for bad in ("1:512,1:10", "[0:5,1:3]", "[a:b,c:d]"):
        with pytest.raises(GeometryError):
            parse_section(bad)


def test_suffixes():
    assert section_suffixes(3) == ["A", "B", "C"]
    assert section_suffixes(28)[-2:] == ["AA", "AB"]


def test_named_amps_in_a_trimmed_image():
    header = {"DATASECA": "[1:4,1:3]", "AMPNAMA": "C10", "DATASECB": "[5:8,1:3]",
              "AMPNAMB": "C11"}
    geom = geometry_from_header(header, "det", (3, 8), id=4)
    assert geom.detector.amp_names == ("C10", "C11") and geom.detector.id == 4
    assert geom.data_boxes == ((0, 3, 0, 4), (0, 3, 4, 8))
    assert geom.trimmed


def test_untrimmed_boxes_are_packed_without_gaps():
    # data of two amps separated by overscan columns, no CCDSEC: packed side by side
    header = {"DATASECA": "[3:6,2:5]", "BIASSECA": "[1:2,2:5]",
              "DATASECB": "[9:12,2:5]", "BIASSECB": "[13:14,2:5]"}
    geom = geometry_from_header(header, "det", (6, 14))
    det = geom.detector
    assert det.shape == (4, 8)
    assert [(a.x0, a.y0) for a in det] == [(0, 0), (4, 0)]
    assert geom.overscan_boxes == ((1, 5, 0, 2), (1, 5, 12, 14))
    assert not geom.trimmed


def test_no_keywords_and_bad_keywords():
    assert geometry_from_header({"OBJECT": "x"}, "det", (10, 10)) is None
    single = geometry_from_header({"DATASEC": "[1:10,1:5]"}, "det", (5, 12))
    assert single.detector.shape == (5, 10) and len(single.detector) == 1
    with pytest.raises(GeometryError, match=r"DATASECB.*outside the 8x3 image"):
        geometry_from_header({"DATASECA": "[1:4,1:3]", "DATASECB": "[5:9,1:3]"}, "d", (3, 8))
    with pytest.raises(GeometryError, match="keyword DATASECA"):
        geometry_from_header({"DATASECA": "nonsense"}, "d", (3, 8))


def test_places_of_another_size_than_their_data_are_refused():
    """A binned single-HDU file (CCDSUM 2 2) whose CCDSEC<s> count unbinned pixels: the
    places were dropped for the data boxes in file order, flips and all, and the edge strips
    compared pixels that are not neighbours on the CCD (pedestals off by ~2 ADU, ok)."""
    header = {"DATASECA": "[1:4,1:3]", "CCDSECA": "[8:1,1:6]",
              "DATASECB": "[5:8,1:3]", "CCDSECB": "[9:16,1:6]", "CCDSUM": "2 2"}
    with pytest.raises(GeometryError, match=r"CCDSECA = '\[8:1,1:6\]' is not the size of its "
                                            r"data section DATASECA = .*binned\?.*camera"):
        geometry_from_header(header, "det", (3, 8))
    # unbinned, the same places are used (A read mirrored in x)
    same = {"DATASECA": "[1:4,1:3]", "CCDSECA": "[4:1,1:3]",
            "DATASECB": "[5:8,1:3]", "CCDSECB": "[5:8,1:3]"}
    geom = geometry_from_header(same, "det", (3, 8))
    assert [a.name for a in geom.detector] == ["A", "B"]
