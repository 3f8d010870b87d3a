"""Amp geometry, the amp grid and LSST's association/side matrices (ALGORITHM.md 1.3)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from golden import lsst_detector, lsst_fixture

from ampoffset_dask import Amplifier, Detector, GeometryError
from ampoffset_dask.geometry import detector_from_boxes

FIXTURE = lsst_fixture()


def lsst_matrices(amps: list[Amplifier], weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Literal port of section 1.3: centres, ceil-based grid indices, neighbours by side."""
    xc = [a.x0 + (a.width - 1) / 2 for a in amps]
    yc = [a.y0 + (a.height - 1) / 2 for a in amps]
    xi = [math.ceil(x / min(xc) / 2) - 1 for x in xc]
    yi = [math.ceil(y / min(yc) / 2) - 1 for y in yc]
    ids = np.zeros((max(yi) + 1, max(xi) + 1), dtype=int)
    for k, (x, y) in enumerate(zip(xi, yi, strict=True)):
        ids[y, x] = k
    n = len(amps)
    a_mat = np.zeros((n, n), dtype=int)
    s_mat = np.full((n, n), -1, dtype=int)
    w, h = amps[0].width, amps[0].height
    for k in ids.ravel():
        r, c = (int(v[0]) for v in np.nonzero(ids == k))
        for side, (rr, cc) in enumerate(((r + 1, c), (r, c + 1), (r - 1, c), (r, c - 1))):
            if 0 <= rr < ids.shape[0] and 0 <= cc < ids.shape[1]:
                j = ids[rr, cc]
                weight = (w if side in (0, 2) else h) if weighted else 1
                a_mat[k, j] = -weight
                s_mat[k, j] = side
        a_mat[k, k] = -a_mat[k].sum()
    return a_mat, s_mat


def lsstcam_itl() -> Detector:
    """LSSTCam ITL layout in LSST's amp order: C10..C17 (upper row), then C07..C00."""
    w, h = 509, 2000
    amps = [Amplifier(f"C1{i}", i * w, h, w, h) for i in range(8)]
    amps += [Amplifier(f"C0{i}", i * w, 0, w, h) for i in range(7, -1, -1)]
    return Detector("R22_S11", 8 * w, 2 * h, amps, id=94)


def test_lsst_fixture_grid():
    det = lsst_detector(FIXTURE)
    grid = det.grid(True)
    np.testing.assert_array_equal(grid.amp_ids, [[0, 4], [1, 5], [2, 6], [3, 7]])
    expected = FIXTURE["expected_matrices"]
    np.testing.assert_array_equal(grid.sides, expected["sides"])
    np.testing.assert_array_equal(grid.associations, expected["associations_weighted"])
    unweighted = det.grid(False)
    np.testing.assert_array_equal(unweighted.associations, expected["associations_unweighted"])
    np.testing.assert_array_equal(unweighted.sides, expected["sides"])


def test_lsst_fixture_matrices_by_hand():
    grid = lsst_detector(FIXTURE).grid(True)
    a = grid.associations
    np.testing.assert_array_equal(np.diag(a), [151, 251, 251, 151, 151, 251, 251, 151])
    for i, j in ((0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 7)):
        assert a[i, j] == a[j, i] == -100
    for i in range(4):
        assert a[i, i + 4] == a[i + 4, i] == -51
    assert a.sum() == 0
    np.testing.assert_array_equal(a, a.T)
    np.testing.assert_array_equal(np.diag(lsst_detector(FIXTURE).grid(False).associations),
                                  [2, 3, 3, 2, 2, 3, 3, 2])


def test_lsst_fixture_interfaces_in_order():
    det = lsst_detector(FIXTURE)
    interfaces = det.grid(True).interfaces
    assert [i.id for i in interfaces] == FIXTURE["interfaces_in_order"]
    first = interfaces[0]
    assert (first.a, first.b, first.side, first.length) == (0, 1, 0, 100)
    second = interfaces[1]
    assert (second.a, second.b, second.side, second.length) == (0, 4, 1, 51)
    for itf in interfaces:
        assert itf.a < itf.b
        assert itf.length == (100 if itf.side in (0, 2) else 51)


@pytest.mark.parametrize("weighted", [True, False])
def test_matrices_equal_literal_port(weighted):
    for det in (lsst_detector(FIXTURE), lsstcam_itl()):
        a_ref, s_ref = lsst_matrices(list(det.amplifiers), weighted)
        grid = det.grid(weighted)
        np.testing.assert_array_equal(grid.associations, a_ref)
        np.testing.assert_array_equal(grid.sides, s_ref)


def test_lsstcam_interface_names():
    grid = lsstcam_itl().grid(True)
    ids = [i.id for i in grid.interfaces]
    assert ids[:2] == ["C10-C11", "C10-C00"]
    assert len(ids) == 7 + 7 + 8
    sides = {i.id: (i.side, i.length) for i in grid.interfaces}
    assert sides["C10-C11"] == (1, 2000)  # C11 at larger x
    assert sides["C10-C00"] == (2, 509)  # C00 at smaller y
    assert sides["C06-C05"] == (3, 2000)  # C06 (id 9) has C05 (id 10) at smaller x
    np.testing.assert_array_equal(grid.amp_ids[1], range(8))
    np.testing.assert_array_equal(grid.amp_ids[0], range(15, 7, -1))


def test_single_amp_and_single_row():
    one = detector_from_boxes("one", 50, 40, [("A", 0, 0, 50, 40)])
    g = one.grid()
    np.testing.assert_array_equal(g.associations, [[0]])
    assert g.interfaces == ()
    row = detector_from_boxes("row", 160, 40, [(f"A{i}", 40 * i, 0, 40, 40) for i in range(4)])
    g = row.grid(True)
    np.testing.assert_array_equal(np.diag(g.associations), [40, 80, 80, 40])
    assert [i.id for i in g.interfaces] == ["A0-A1", "A1-A2", "A2-A3"]


def test_matrices_are_read_only():
    grid = lsst_detector(FIXTURE).grid(True)
    with pytest.raises(ValueError):
        grid.associations[0, 0] = 1


BOX = (40, 30)


def _boxes(*cells):
    return [(name, c * BOX[0], r * BOX[1], *BOX) for name, c, r in cells]


def test_hole_is_reported():
    det = detector_from_boxes("D1", 80, 60, _boxes(("A", 0, 0), ("B", 1, 0), ("C", 0, 1)))
    with pytest.raises(GeometryError) as info:
        det.check()
    msg = str(info.value)
    assert "'D1'" in msg and "hole" in msg and "x[40:80] y[30:60]" in msg


def test_non_rectangular_tiling_is_reported():
    # an L of five cells in a 3x2 bounding grid
    cells = (("A", 0, 0), ("B", 1, 0), ("C", 2, 0), ("D", 0, 1), ("E", 1, 1))
    det = detector_from_boxes("D2", 120, 60, _boxes(*cells))
    with pytest.raises(GeometryError, match=r"hole\(s\) at x\[80:120\] y\[30:60\]"):
        det.grid()


def test_off_grid_amp_is_reported():
    boxes = [("A", 0, 0, 40, 30), ("B", 40, 0, 40, 30), ("C", 20, 30, 40, 30),
             ("D", 60, 30, 40, 30)]
    det = detector_from_boxes("D3", 100, 60, boxes)
    with pytest.raises(GeometryError) as info:
        det.check()
    assert "'C'" in str(info.value) and "non-rectangular" in str(info.value)


def test_overlap_is_reported():
    boxes = [("A", 0, 0, 40, 30), ("B", 20, 0, 40, 30), ("C", 0, 30, 40, 30),
             ("D", 40, 30, 40, 30)]
    det = detector_from_boxes("D4", 80, 60, boxes)
    with pytest.raises(GeometryError) as info:
        det.check()
    assert "'A'" in str(info.value) and "'B'" in str(info.value)
    assert "overlap" in str(info.value)


def test_identical_boxes_overlap():
    boxes = [("A", 0, 0, 40, 30), ("B", 0, 0, 40, 30)]
    with pytest.raises(GeometryError, match="'A' and 'B' overlap"):
        detector_from_boxes("D5", 40, 30, boxes).check()


def test_unequal_sizes_are_reported():
    boxes = [("A", 0, 0, 40, 30), ("B", 40, 0, 40, 31)]
    with pytest.raises(GeometryError) as info:
        detector_from_boxes("D6", 80, 31, boxes).check()
    msg = str(info.value)
    assert "'A' is 40x30" in msg and "'B' is 40x31" in msg and "same size" in msg


def test_amp_outside_detector():
    with pytest.raises(GeometryError) as info:
        detector_from_boxes("D7", 80, 30, [("A", 0, 0, 40, 30), ("B", 50, 0, 40, 30)])
    msg = str(info.value)
    assert "'B'" in msg and "x[50:90]" in msg and "outside the 80x30 image" in msg


def test_bad_amplifiers():
    with pytest.raises(GeometryError, match=r"'X'.*positive"):
        Amplifier("X", 0, 0, 0, 5)
    with pytest.raises(GeometryError, match=r"'X'.*negative"):
        Amplifier("X", -1, 0, 3, 5)
    with pytest.raises(GeometryError, match=r"'X'.*x0=0\.5"):
        Amplifier("X", 0.5, 0, 3, 5)
    with pytest.raises(GeometryError, match="duplicate amp names"):
        detector_from_boxes("D8", 80, 30, [("A", 0, 0, 40, 30), ("A", 40, 0, 40, 30)])
    with pytest.raises(GeometryError, match="no amplifiers"):
        Detector("D9", 10, 10, ())


def test_amplifier_properties():
    amp = Amplifier("C:1,1", 100, 51, 100, 51)
    assert amp.slices == (slice(51, 102), slice(100, 200))
    assert (amp.x1, amp.y1) == (200, 102)
    assert Amplifier("A", np.int64(3), 4.0, 5, 6).x0 == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        amp.x0 = 3


def test_detector_queries_and_round_trip():
    det = lsst_detector(FIXTURE)
    assert det.shape == (204, 200)
    assert len(det) == 8
    assert det.amp_names[0] == "C:0,0" and det.amp_names[4] == "C:1,0"
    assert det["C:1,1"] is det[5]
    with pytest.raises(KeyError):
        det["nope"]
    d = det.to_dict()
    again = Detector.from_dict(json.loads(json.dumps(d)))
    assert again == det
    alt = Detector.from_dict({"name": "x", "width": 80, "height": 30,
                              "amps": [{"name": "A", "bbox": [0, 0, 40, 30]},
                                       {"name": "B", "bbox": [40, 0, 40, 30]}]})
    assert alt.amp_names == ("A", "B")


def test_with_amp_order_permutes_matrices():
    det = lsst_detector(FIXTURE)
    order = [det.amp_names[i] for i in (7, 3, 0, 5, 1, 6, 2, 4)]
    perm = [det.amp_names.index(n) for n in order]
    other = det.with_amp_order(order)
    assert other.amp_names == tuple(order)
    g0, g1 = det.grid(True), other.grid(True)
    np.testing.assert_array_equal(g1.associations, g0.associations[np.ix_(perm, perm)])
    np.testing.assert_array_equal(g1.sides, g0.sides[np.ix_(perm, perm)])
