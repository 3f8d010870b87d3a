"""Camera-health trends (ampoffset_dask.trends) and the simulator's sequence mode."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ampoffset_dask import AmpOffsetConfig, measure_detector
from ampoffset_dask.io.fits import read_exposure
from ampoffset_dask.simulate import sequence_truth, simulate_focal_plane
from ampoffset_dask.trends import amp_trend, find_trends, write_trends

# Seed 12 injects four jumps and two gain-mismatched amps on this detector (checked below).
SEED = 12
VISITS = 24


@pytest.fixture(scope="module")
def sequence_sim(tmp_path_factory):
    """Simulated once per run, shared by the ``-n`` processes (read only)."""
    from run_shared import once_per_run

    return once_per_run(tmp_path_factory, "sequence", lambda out: simulate_focal_plane(
        out, detectors=["R22_S11"], visits=VISITS, scale=0.2, seed=SEED, sequence=True,
        n_bad_columns=0))


@pytest.fixture(scope="module")
def sequence(sequence_sim):
    """The simulated sequence and its measured pedestals (the costly part: only the tests
    that need the measurements build it)."""
    sim = sequence_sim
    # ampEdgeMaxOffset 10; at this tiny size (102x400 amps) LSST's background absorbs most
    # of a step, so the health series uses the robust estimator.
    config = AmpOffsetConfig.from_preset("lsstcam", estimator="robust")
    rows = []
    for path in sim.paths:
        exp = read_exposure(path)
        m = measure_detector(exp.image, exp.mask, exp.detector, config)
        rows.extend(
            (exp.visit, exp.detector.name, amp, p, e, lev)
            for amp, p, e, lev in zip(m.amp_names, m.pedestals, m.pedestal_errors,
                                      m.amp_levels, strict=True))
    table = pd.DataFrame(rows, columns=["visit", "detector", "amp", "pedestal",
                                        "pedestal_err", "level"])
    return sim, table


def test_sequence_truth_table(sequence_sim):
    truth = sequence_sim.truth
    assert {"visit", "detector", "amp", "pedestal", "offset", "jump", "gain_error",
            "sky"} <= set(truth.columns)
    assert len(truth) == VISITS * 16
    per_visit = truth.groupby("visit")
    np.testing.assert_allclose(per_visit["pedestal"].sum(), 0.0, atol=1e-9)
    assert per_visit["sky"].first().between(0.7 * 300, 1.3 * 2000).all()
    assert per_visit["sky"].first().max() > 2 * per_visit["sky"].first().min()
    # persistent: the offset minus its visit mean is the injected pedestal
    offs = truth["offset"] - truth.groupby("visit")["offset"].transform("mean")
    np.testing.assert_allclose(offs, truth["pedestal"], atol=1e-9)


def test_trends_flag_exactly_the_injected_jumps_and_gain_errors(sequence, tmp_path):
    sim, table = sequence
    truth = sim.truth
    injected_jumps = set(map(tuple, truth.loc[truth["jump"], ["visit", "amp"]].to_numpy()))
    gain_amps = set(truth.loc[truth["gain_error"] != 0, "amp"])
    assert injected_jumps and gain_amps  # the seed injects both

    result = find_trends(table)
    found = set(map(tuple, result.series.loc[result.series["jump"],
                                             ["visit", "amp"]].to_numpy()))
    assert found == injected_jumps
    assert set(result.summary.loc[result.summary["gain_like"], "amp"]) == gain_amps
    for amp in gain_amps:
        row = result.summary.set_index("amp").loc[amp]
        true = float(truth.loc[truth["amp"] == amp, "gain_error"].iloc[0])
        assert np.sign(row["gain_slope"]) == np.sign(true)

    paths = write_trends(result, tmp_path, camera="lsstcam")
    names = {p.name for p in paths}
    assert {"trends.parquet", "trends_summary.parquet", "trends_series.png",
            "trends_flags.png"} <= names
    back = pd.read_parquet(tmp_path / "trends_summary.parquet")
    assert back["n_jumps"].sum() == len(injected_jumps)
    # One panel per flagged amp, 7 x (1.8 n + 0.6) inches at 100 dpi, renamed into place.
    from matplotlib.image import imread

    n = len(result.flagged)
    assert imread(tmp_path / "trends_series.png").shape[:2] == (round(180 * n + 60), 700)
    assert not list(tmp_path.glob(".*"))


def test_amp_trend_on_synthetic_series():
    rng = np.random.default_rng(0)
    visits = np.arange(40)
    level = rng.uniform(300, 2000, 40)
    p = 0.002 * level + rng.normal(0, 0.2, 40)
    p[25:] += 2.5
    tr = amp_trend(visits, p, level, np.full(40, 0.2))
    assert list(np.flatnonzero(tr.jumps)) == [25]
    assert tr.gain_slope == pytest.approx(0.002, abs=5 * tr.gain_slope_err)
    quiet = amp_trend(visits, rng.normal(0, 0.2, 40), level, np.full(40, 0.2))
    assert not quiet.jumps.any() and abs(quiet.gain_slope) < 5 * quiet.gain_slope_err


def test_sequence_truth_rules():
    t = sequence_truth(50, 16, [1, 2, 3])
    assert not (t.jumps.any(axis=0) & (t.gain_errors != 0)).any()
    assert not t.jumps[:8].any() and not t.jumps[-2:].any()
    for a in range(16):
        v = np.flatnonzero(t.jumps[:, a])
        assert (np.diff(v) >= 8).all()


def test_trends_command_on_a_catalog(tmp_path):
    """A catalog written by the real writer, then ``ampoffset-dask trends`` on it."""
    from cli_helpers import cli

    from ampoffset_dask import AmpOffsetConfig as Config
    from ampoffset_dask.catalog import CatalogWriter, DetectorResult

    rng = np.random.default_rng(2)
    amps = [f"C{i:02d}" for i in range(16)]
    cat = tmp_path / "cat"
    with CatalogWriter(cat) as writer:
        writer.start_run(config=Config())
        for visit in range(1, 21):
            peds = rng.normal(0.0, 0.2, 16)
            if visit >= 12:
                peds[2] += 2.0  # C02 jumps at visit 12
            writer.add(DetectorResult(visit=visit, detector="R22_S11", status="ok",
                                      amp_names=amps, pedestals=list(peds - peds.mean())))
            writer.flush(visit, force=True)
        writer.finish_run()
    proc = cli("trends", cat, "--detector", "R22_S11")
    assert proc.returncode == 0, proc.stderr
    assert "320 pedestals of 16 amp(s) over 20 visit(s)" in proc.stdout
    assert "R22_S11 C02: jump(s) at visit 12" in proc.stdout
    summary = pd.read_parquet(cat / "trends" / "trends_summary.parquet").set_index("amp")
    assert summary.loc["C02", "n_jumps"] == 1 and summary["n_jumps"].sum() == 1
    assert (cat / "trends" / "trends_series.png").stat().st_size > 1000
    bad = cli("trends", cat, "--amp", "C99")
    assert bad.returncode == 2 and "C99" in bad.stderr and "Traceback" not in bad.stderr


def _change_points_by_scan(r, sigma, k, window):
    """The change-point rule written as the plain scan of the module docstring."""
    jumps, start = [], 0
    for i in range(len(r) - 1):
        if i - start < 3:
            continue
        level = float(np.median(r[max(start, i - window):i]))
        d0, d1 = r[i] - level, r[i + 1] - level
        if abs(d0) > k * sigma and abs(d1) > k * sigma and d0 * d1 > 0:
            jumps.append(i)
            start = i
    return jumps


def test_vectorised_change_points_match_the_scan():
    from ampoffset_dask.trends import _change_points

    rng = np.random.default_rng(5)
    n_jumps = 0
    for _ in range(400):
        n = int(rng.integers(1, 70))
        r = rng.normal(0.0, 1.0, n)
        for _ in range(int(rng.integers(0, 4))):
            r[int(rng.integers(0, n)):] += rng.normal(0.0, 8.0)
        window, k = int(rng.integers(1, 12)), float(rng.uniform(1.0, 5.0))
        expected = _change_points_by_scan(r, 1.0, k, window)
        assert _change_points(r, 1.0, k, window) == expected
        n_jumps += len(expected)
    assert n_jumps > 250
