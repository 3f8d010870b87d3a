"""Diagnostics beside LSST's pedestals: NaN handling, unphysical values, stated errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ampoffset_dask.trends import amp_trend, find_trends


def _gain_series(n: int = 40):
    """An amp with a 0.2 % gain error (pedestal = 0.002 x centred level) and a 2 ADU jump
    at its 21st visit."""
    rng = np.random.default_rng(1)
    visits = np.arange(100, 100 + n)
    level = rng.uniform(500, 3000, n)
    ped = rng.normal(0, 0.1, n) + 0.002 * (level - level.mean())
    ped[20:] += 2.0
    return visits, ped, level


@pytest.mark.parametrize("hole", ["level", "pedestal"])
def test_trends_one_nan_visit_keeps_the_series_analysis(hole):
    visits, ped, level = _gain_series()
    if hole == "level":
        level[5] = np.nan
    else:
        ped[5] = np.nan
    table = pd.DataFrame({"visit": visits, "detector": "R22_S11", "amp": "C10",
                          "pedestal": ped, "pedestal_err": 0.1, "level": level})
    res = find_trends(table)
    row = res.summary.iloc[0]
    assert row["gain_slope"] == pytest.approx(0.002, abs=1e-4)
    assert row["gain_slope_err"] < 1e-4
    assert bool(row["gain_like"])
    assert row["jump_visits"] == "120"
    # the visit left out has no model value and is not a jump
    assert np.isnan(res.series["model"].iloc[5]) and not res.series["jump"].iloc[5]
    assert np.isfinite(res.series["model"].drop(index=5)).all()


def test_trends_levels_of_few_visits_are_not_used():
    visits, ped, level = _gain_series()
    level[3:] = np.nan  # a catalog mostly written before the level column existed
    tr = amp_trend(visits, ped, level, np.full(ped.shape, 0.1))
    assert np.isnan(tr.gain_slope)
    assert np.isfinite(tr.model).all()


def test_trends_all_nan_pedestals():
    tr = amp_trend(np.arange(5), np.full(5, np.nan), np.arange(5.0), np.full(5, 0.1))
    assert np.isnan(tr.gain_slope) and np.isnan(tr.model).all() and not tr.jumps.any()


def _strips_with_additive_trend():
    """Two 400-line strips across a vertical interface: 10 ADU of flux range along it and,
    in A's background-subtracted strip, a 30 ADU additive trend (no gain error)."""
    rng = np.random.default_rng(3)
    n, w = 400, 20
    y = np.arange(n)[:, None]
    sky = 1000.0 + 10.0 * y / n
    raw_a = (sky + rng.normal(0, 5, (n, w))).astype(np.float32)
    raw_b = (sky + rng.normal(0, 5, (n, w))).astype(np.float32)
    strip_a = (raw_a - sky + 30.0 * y / n).astype(np.float32)
    strip_b = (raw_b - sky).astype(np.float32)
    return strip_a, strip_b, raw_a, raw_b


def test_gain_step_faster_than_flux_is_no_gain_ratio():
    from ampoffset_dask.algorithm.gain import gain_steps, interface_gain
    from ampoffset_dask.algorithm.strips import strip_stats

    strip_a, strip_b, raw_a, raw_b = _strips_with_additive_trend()
    # The fitted slope is about 3 (the step grows 30 ADU over 10 ADU of flux): the ratio
    # (1 + s/2) / (1 - s/2) would be about -5, and was flagged gain-like.
    one = interface_gain(strip_a, strip_b, raw_a, raw_b, 1, inset=5)
    assert np.isnan(one.gain_ratio) and np.isnan(one.gain_ratio_err) and not one.gain_like
    pair = (strip_stats(strip_a, 1, inset=5, raw=raw_a),
            strip_stats(strip_b, 3, inset=5, raw=raw_b))
    (batch,) = gain_steps([pair])
    assert np.isnan(batch.gain_ratio) and not batch.gain_like


def test_gain_ratio_of_a_real_gain_step_is_kept():
    from ampoffset_dask.algorithm.gain import interface_gain

    rng = np.random.default_rng(4)
    n, w = 400, 20
    y = np.arange(n)[:, None]
    flux = 5000.0 + 5000.0 * y / n  # a flat-like flux range
    a = (1.02 * flux + rng.normal(0, 5, (n, w))).astype(np.float32)
    b = (flux + rng.normal(0, 5, (n, w))).astype(np.float32)
    step = interface_gain(a, b, a, b, 1, inset=5)
    assert step.gain_ratio == pytest.approx(1.02, abs=3 * step.gain_ratio_err)
    assert step.gain_ratio_err < 0.002 and step.gain_like


def test_no_unphysical_gain_ratios_next_to_a_large_additive_step():
    from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
    from ampoffset_dask.simulate import scale_detector, simulate_detector

    cam = get_camera("lsstcam")
    info = cam.info("R02_S02")
    det = scale_detector(cam["R02_S02"], 0.25)
    ped = np.zeros(len(det))
    ped[det.amp_names.index("C15")] = 60.0  # additive only: no gain error anywhere
    ped -= ped.mean()
    sim = simulate_detector(det, seed=[0, 9], gain=info["amp_gain"],
                            read_noise=info["amp_read_noise"], pedestals=ped, sky=1200.0)
    m = measure_detector(sim.image, sim.mask, det, AmpOffsetConfig())
    ratios = np.array([i.gain_ratio for i in m.interfaces])
    assert (ratios[np.isfinite(ratios)] > 0).all()
    assert not any(i.gain_like for i in m.interfaces)


def test_trends_drift_is_per_visit_with_lsst_visit_ids():
    # Three nights of 20 visits with LSST-style ids (YYYYMMDD * 1e5 + sequence number): the
    # ids jump by ~1e5 between nights, by 1 within one. The amp drifts 0.01 ADU per visit.
    rng = np.random.default_rng(2)
    nights = [20251201, 20251202, 20251215]
    visits = np.concatenate([np.arange(20) + 1 + night * 100000 for night in nights])
    i = np.arange(visits.size)
    ped = 0.01 * i + rng.normal(0, 0.02, i.size)
    drifts = []
    for v in (i + 1, visits):
        table = pd.DataFrame({"visit": v, "detector": "R22_S11", "amp": "C10",
                              "pedestal": ped, "pedestal_err": 0.02, "level": np.nan})
        row = find_trends(table).summary.iloc[0]
        drifts.append((row["drift"], row["drift_err"]))
    assert drifts[1][0] == pytest.approx(0.01, abs=5e-4)
    assert drifts[1] == pytest.approx(drifts[0], rel=1e-9)


def test_plot_visit_draws_unmeasured_and_failed_detectors_without_a_value(tmp_path,
                                                                         monkeypatch):
    pytest.importorskip("matplotlib")
    from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector, plots
    from ampoffset_dask.catalog import CatalogWriter, DetectorResult
    from ampoffset_dask.simulate import scale_detector, simulate_detector

    camera = get_camera("lsstcam")
    ok_det = scale_detector(camera["R22_S11"], 0.1)
    sim = simulate_detector(ok_det, seed=4)
    good = measure_detector(sim.image, sim.mask, ok_det)
    masked = measure_detector(sim.image, np.ones_like(sim.mask), ok_det)  # nothing measured
    assert masked.all_masked and not masked.pedestals.any()
    cat = tmp_path / "cat"
    with CatalogWriter(cat) as writer:
        writer.start_run(config=AmpOffsetConfig(), inputs=[])
        for name, m, status in (("R22_S11", good, "ok"), ("R22_S12", masked, "flagged")):
            writer.add(DetectorResult(
                visit=5, detector=name, status=status, detector_id=camera[name].id,
                amp_names=list(m.amp_names), pedestals=[float(p) for p in m.pedestals],
                all_masked=m.all_masked, interfaces=[i.to_dict() for i in m.interfaces]))
        writer.add(DetectorResult(visit=5, detector="R22_S10", status="failed",
                                  detector_id=camera["R22_S10"].id, error="unreadable"))
        writer.finish_run()
    drawn = {}
    real_map, real_amp = plots.focal_plane_map, plots.amp_map

    def spy_map(table, *args, **kwargs):
        drawn["map"] = table
        return real_map(table, *args, **kwargs)

    def spy_amp(table, *args, **kwargs):
        drawn["amp"] = (table, kwargs["interfaces"])
        return real_amp(table, *args, **kwargs)

    monkeypatch.setattr(plots, "focal_plane_map", spy_map)
    monkeypatch.setattr(plots, "amp_map", spy_amp)
    plots.plot_visit(cat, camera=camera, detector="R22_S12", out=tmp_path / "p")
    table = drawn["map"].set_index("detector")
    assert np.isfinite(table.loc["R22_S11", "pedestal"]).all()
    assert np.isnan(table.loc["R22_S12", "pedestal"]).all()  # not 0: nothing was measured
    assert len(table.loc["R22_S10"]) == 16 and np.isnan(table.loc["R22_S10", "pedestal"]).all()
    amp_table, itf = drawn["amp"]
    assert np.isnan(amp_table["pedestal"]).all()
    assert {t for _, _, t in plots._interface_rows(itf)} == {"no data"}
    fig = real_map(drawn["map"], camera, visit=5)
    assert fig.axes[0].get_title().endswith("grey: no value")


def test_amp_map_labels_an_offset_do_no_harm_zeroed():
    from ampoffset_dask.algorithm.result import InterfaceResult
    from ampoffset_dask.plots import _interface_rows

    rows = [InterfaceResult("C10-C11", "C10", "C11", 1, 400, 12.5, 0.0, 1.0, False, True),
            InterfaceResult("C11-C12", "C11", "C12", 1, 400, 0.25, 0.25, 1.0, False, False),
            InterfaceResult("C12-C13", "C12", "C13", 1, 400, 0.0, 0.0, 0.0, True, False)]
    assert [t for _, _, t in _interface_rows(rows)] == ["0 (+12.50)", "+0.25", "no data"]
    table = pd.DataFrame([r.to_dict() for r in rows])
    assert [t for _, _, t in _interface_rows(table)] == ["0 (+12.50)", "+0.25", "no data"]
    # a table with the offsets alone: the offsets as before
    assert [t for _, _, t in _interface_rows(table[["amp_a", "amp_b", "offset"]])] == [
        "+0.00", "+0.25", "+0.00"]


def test_before_after_axes_span_the_detector():
    pytest.importorskip("matplotlib")
    from ampoffset_dask import get_camera
    from ampoffset_dask.plots import before_after
    from ampoffset_dask.simulate import scale_detector

    cam = get_camera("hsc")
    det = scale_detector(cam[cam.detector_names[0]], 0.2)  # 835 rows: not a whole bin count
    image = np.zeros(det.shape, dtype=np.float32)
    fig = before_after(image, det, np.zeros(len(det)))
    for ax in fig.axes[:2]:
        assert ax.get_xlim() == (0.0, det.width) and ax.get_ylim() == (0.0, det.height)


def _catalog_in_units(path, gains):
    """A catalog of one detector, one visit per entry of ``gains`` (1: ADU, else nominal
    gains: electrons), with steady pedestals."""
    from ampoffset_dask import AmpOffsetConfig, get_camera
    from ampoffset_dask.catalog import CatalogWriter, DetectorResult

    det = get_camera("lsstcam")["R22_S11"]
    offsets = np.linspace(-1, 1, len(det))
    with CatalogWriter(path) as writer:
        writer.start_run(config=AmpOffsetConfig(), inputs=[])
        for visit, gain in enumerate(gains, start=1):
            writer.add(DetectorResult(
                visit=visit, detector=det.name, status="ok", detector_id=det.id,
                amp_names=list(det.amp_names), pedestals=list(gain * offsets),
                pedestal_errors=[0.05] * len(det), amp_levels=[gain * 1000.0] * len(det),
                gain="nominal" if gain != 1 else "none"))
        writer.add(DetectorResult(visit=len(gains) + 1, detector="R22_S12", status="failed",
                                  error="unreadable"))
        writer.finish_run()
    return path


def test_read_series_refuses_pedestals_in_two_units(tmp_path):
    from ampoffset_dask.errors import InputError
    from ampoffset_dask.trends import read_series

    mixed = _catalog_in_units(tmp_path / "mixed", [1] * 4 + [1.7] * 4)
    with pytest.raises(InputError, match=r"two units: 4 detector-visit\(s\) measured with "
                                         r"nominal gains \(electrons; visit 5 R22_S11\)"):
        read_series(mixed)
    with pytest.raises(InputError, match="two units"):
        read_series(mixed, detector="R22_S11", amp="C10")
    # one unit (either), a failed row beside it: read as before
    for name, gain in (("adu", 1), ("electrons", 1.7)):
        series = read_series(_catalog_in_units(tmp_path / name, [gain] * 4))
        assert len(series) == 4 * 16
