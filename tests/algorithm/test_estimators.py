"""The opt-in robust estimator (algorithm/estimators.py, ``estimator="robust"``)."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
from ampoffset_dask.algorithm.estimators import robust_interface_offset, robust_solve
from ampoffset_dask.algorithm.offsets import InterfaceOffset
from ampoffset_dask.algorithm.solve import right_hand_side, solve_pedestals
from ampoffset_dask.cli import _load_config
from ampoffset_dask.errors import ConfigError
from ampoffset_dask.simulate import scale_detector, simulate_detector


@pytest.fixture(scope="module")
def itl_quarter():
    camera = get_camera("lsstcam")
    return scale_detector(camera["R02_S02"], 0.25), camera.info("R02_S02")


def test_estimator_field_is_validated_and_settable():
    assert AmpOffsetConfig().estimator == "lsst"
    assert AmpOffsetConfig.from_lsst({"estimator": "robust"}).estimator == "robust"
    assert _load_config(None, ["estimator=robust"]).estimator == "robust"
    with pytest.raises(ConfigError, match=r"estimator=.median.*lsst, robust"):
        AmpOffsetConfig(estimator="median").validate()


def test_robust_solve_rejects_an_inconsistent_interface(itl_quarter):
    det, _ = itl_quarter
    grid = det.grid(True)
    rng = np.random.default_rng(4)
    truth = rng.normal(0.0, 1.5, len(det))
    truth -= truth.mean()
    err = rng.uniform(0.05, 0.15, len(grid.interfaces))
    offsets = np.array([truth[i.a] - truth[i.b] for i in grid.interfaces])
    offsets += rng.normal(0.0, err)
    bad = 5
    offsets[bad] += 2.0  # a star halo on one edge
    used = np.ones(len(offsets), dtype=bool)
    sol = robust_solve(grid, offsets, err, used)
    assert sol.factors[bad] == 0.0
    assert (sol.factors[np.arange(len(offsets)) != bad] > 0.3).all()
    assert abs(sol.pedestals.sum()) < 1e-9  # LSST's gauge
    pulls = (sol.pedestals - truth) / sol.errors
    assert np.abs(pulls).max() < 4.0
    lsst = solve_pedestals(grid.associations, right_hand_side(
        grid, {(i.a, i.b): o for i, o in zip(grid.interfaces, offsets, strict=True)}))
    rms_lsst = np.sqrt(np.mean((lsst - truth) ** 2))
    assert rms_lsst > 2 * np.sqrt(np.mean((sol.pedestals - truth) ** 2))


def test_robust_solve_do_no_harm_interfaces_enter_as_zero(itl_quarter):
    det, _ = itl_quarter
    grid = det.grid(True)
    offsets = np.zeros(len(grid.interfaces))
    offsets[0] = 50.0  # fails the max-offset check upstream
    used = np.ones(len(offsets), dtype=bool)
    used[0] = False
    sol = robust_solve(grid, offsets, np.full(len(offsets), 0.1), used)
    np.testing.assert_allclose(sol.pedestals, 0.0, atol=1e-12)
    assert sol.factors[0] == 1.0


def test_robust_interface_offset_clips_a_local_bump():
    rng = np.random.default_rng(8)
    length, width = 2000, 64
    strip_a = rng.normal(1000.5, 25.0, (width, length)).astype(np.float32)
    strip_b = rng.normal(1000.0, 25.0, (width, length)).astype(np.float32)
    strip_a[:, 600:800] += 3.0  # a halo confined to 10 % of the edge, below the pixel clip
    strip_b[:40, 1500] = np.nan
    edge_a = np.nanmedian(strip_a, axis=0).astype(np.float32)
    edge_b = np.nanmedian(strip_b, axis=0).astype(np.float32)
    lsst = InterfaceOffset("A-B", 0.8, 0.8, 1.0, False, False)
    res, err = robust_interface_offset(lsst, strip_a, edge_a, 2, strip_b, edge_b,
                                       AmpOffsetConfig())
    assert res.offset_raw == pytest.approx(0.5, abs=4 * err)
    # 25 / sqrt(64 * 2000) per side, a quarter of the blocks clipped
    assert 0.08 < err < 0.15
    assert res.offset == res.offset_raw and res.good_frac == 1.0
    far, _ = robust_interface_offset(lsst, strip_a + np.float32(9.0), edge_a + np.float32(9.0),
                                     2, strip_b, edge_b, AmpOffsetConfig())
    assert far.max_offset_fail and far.offset == 0.0


def test_default_estimator_is_untouched_and_robust_runs_on_a_detector(itl_quarter):
    det, info = itl_quarter
    sim = simulate_detector(det, seed=[3, 1], sky=1200.0, gain=info["amp_gain"],
                            read_noise=info["amp_read_noise"],
                            bright_stars=[(det.amplifiers[2].x1 - 30.0, 1500.0, 2e8)])
    lsst = measure_detector(sim.image, sim.mask, det, AmpOffsetConfig())
    again = measure_detector(sim.image, sim.mask, det, AmpOffsetConfig(estimator="lsst"))
    np.testing.assert_array_equal(lsst.pedestals, again.pedestals)
    assert all(i.weight == 1.0 for i in lsst.interfaces)
    robust = measure_detector(sim.image, sim.mask, det, AmpOffsetConfig(estimator="robust"))
    assert abs(robust.pedestals.sum()) < 1e-9
    assert np.isfinite(robust.pedestal_errors).all()
    assert all(0.0 <= i.weight <= 1.0 for i in robust.interfaces)
    err_lsst = np.sqrt(np.mean((lsst.pedestals - sim.pedestals) ** 2))
    err_robust = np.sqrt(np.mean((robust.pedestals - sim.pedestals) ** 2))
    assert err_robust < err_lsst
    assert np.std((robust.pedestals - sim.pedestals) / robust.pedestal_errors) < 2.0


def test_robust_interfaces_without_data_report_no_offset():
    """An interface with no valid sample has offset_raw 0.0 (LSST's value) under the robust
    estimator too, not the first pass's pedestal difference it used to inherit."""
    from ampoffset_dask import get_camera
    from ampoffset_dask.simulate import scale_detector, simulate_detector

    det = scale_detector(get_camera("lsstcam")["R22_S11"], 0.25)
    sim = simulate_detector(det, seed=5)
    image = sim.image.copy()
    image[det.amplifiers[0].slices] = np.nan
    res = measure_detector(image, sim.mask, det, AmpOffsetConfig(estimator="robust"))
    empty = [i for i in res.interfaces if i.good_frac == 0.0]
    assert {i.id for i in empty} == {"C10-C11", "C10-C00"}
    assert all(i.offset_raw == 0.0 and i.offset == 0.0 for i in empty)
    assert all(i.offset_raw != 0.0 for i in res.interfaces if i.good_frac > 0)
