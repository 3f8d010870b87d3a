"""Trends: the change-point / model refinement (jumps found with sky levels, coefficients
that match the reported jumps) and the input checks of `find_trends` and `read_series`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ampoffset_dask import AmpOffsetConfig, read_catalog
from ampoffset_dask.catalog import CatalogWriter, DetectorResult
from ampoffset_dask.errors import InputError
from ampoffset_dask.trends import amp_trend, find_trends, read_series

AMPS = [f"C1{i}" for i in range(8)]

# One amp's pedestals (sigma ~0.1 ADU) with a -0.9 ADU step at index 10, no drift, no gain
# error: a jump near the threshold, seen with one gain estimate and not with the other.
STEP_SERIES = np.array([
    -0.147, 0.12, 0.159, -0.126, -0.118, -0.177, -0.096, -0.311, -0.114, 0.13,
    -0.993, -0.873, -1.007, -0.782, -0.938, -0.996, -0.703, -0.99, -1.08, -0.938])
STEP_LEVELS = np.array([
    1785., 1103., 1851., 1602., 1856., 517., 425., 420., 1777., 1378., 1144., 578.,
    1445., 841., 1508., 1083., 1163., 1642., 458., 1284.])


def _catalog(path, visits, *, seed=1, jump_visit=None, status="ok", new_run=False):
    """Write detector R22_S11 (id 94, amps C10-C17) of ``visits`` to the catalog ``path``:
    pedestals of sigma 0.1 ADU, C10 10 ADU higher from ``jump_visit`` on; no interfaces
    (with ``status="flagged"``: the header pedestals of already corrected files)."""
    rng = np.random.default_rng(seed)
    with CatalogWriter(path) as writer:
        writer.start_run(config=AmpOffsetConfig(), new_run=new_run)
        for visit in visits:
            p = rng.normal(0.0, 0.1, len(AMPS))
            if jump_visit is not None and visit >= jump_visit:
                p[0] += 10.0
            p -= p.mean()
            sky = float(rng.uniform(500, 1500))
            writer.add(DetectorResult(
                visit=int(visit), detector="R22_S11", detector_id=94, status=status,
                amp_names=AMPS, pedestals=list(p), pedestal_errors=[0.1] * len(AMPS),
                amp_levels=[sky] * len(AMPS), overscan="none"))
        writer.finish_run()
    return path


def _random_series(rng, n=20, sigma=0.1, gain=0.0, step=True):
    """A random series: an 8-12 sigma step at a random visit (or none), random sky levels,
    a gain error ``gain``; returns (step index, pedestals, levels)."""
    at = int(rng.integers(8, 17))
    jump = rng.choice([-1, 1]) * rng.uniform(8, 12) * sigma
    levels = rng.uniform(300, 2000, n)
    p = rng.normal(0.0, sigma, n) + gain * (levels - levels.mean())
    if step:
        p[at:] += jump
    return at, p, levels


def test_unsettled_refinement_reports_the_fitted_jump_and_its_coefficients():
    """The refinement alternated "jump at 10" / "no jump"; the summary must name the
    coefficients of the fit with the reported jumps (not a segment level as the drift)."""
    t = np.arange(20, dtype=float)
    tr = amp_trend(t, STEP_SERIES, STEP_LEVELS, np.full(20, 0.1))
    assert np.flatnonzero(tr.jumps).tolist() == [10]
    assert abs(tr.drift) < 3 * tr.drift_err and abs(tr.drift) < 0.03  # true drift 0
    assert abs(tr.gain_slope) < 3 * tr.gain_slope_err  # true gain error 0
    # the model holds the step
    assert tr.model[10:].mean() - tr.model[:10].mean() == pytest.approx(-0.9, abs=0.1)
    table = pd.DataFrame({"visit": t + 1, "detector": "R22_S11", "amp": "C10",
                          "pedestal": STEP_SERIES, "pedestal_err": 0.1, "level": STEP_LEVELS})
    row = find_trends(table).summary.iloc[0]
    assert (row["n_jumps"], row["jump_visits"]) == (1, "11")
    assert row["drift"] == pytest.approx(tr.drift)


def test_jumps_found_as_often_with_sky_levels_as_without():
    """8-12 sigma steps in 20-visit series: found about as often with the sky levels as
    without (278/300 vs 297/300 before), no jump on series without a step, and injected
    gain errors still flagged with a step in the series."""
    rng = np.random.default_rng(0)
    t = np.arange(20, dtype=float)
    err = np.full(20, 0.1)
    found = {True: 0, False: 0}
    for _ in range(300):
        at, p, levels = _random_series(rng)
        for use_levels in (True, False):
            tr = amp_trend(t, p, levels if use_levels else None, err)
            found[use_levels] += bool(tr.jumps[at])
    assert found[True] >= found[False] - 2 and found[True] >= 294, found

    false_jumps = gain_found = 0
    for _ in range(200):
        _, p, levels = _random_series(rng, step=False)
        false_jumps += int(amp_trend(t, p, levels, err).jumps.sum())
        at, p, levels = _random_series(rng, gain=5e-4)
        tr = amp_trend(t, p, levels, err)
        gain_found += bool(abs(tr.gain_slope) > max(2e-4, 5 * tr.gain_slope_err)
                           and tr.jumps[at])
    assert false_jumps == 0
    assert gain_found >= 190, gain_found


def test_find_trends_orders_visits_by_number(tmp_path):
    """``pandas.read_parquet`` of the pedestals table gives ``visit`` as a category in
    string order (1, 10, 11, ..., 2): the series still run in visit order."""
    cat = _catalog(tmp_path / "cat", range(1, 21), jump_visit=12)
    raw = pd.read_parquet(cat / "pedestals")
    assert isinstance(raw["visit"].dtype, pd.CategoricalDtype)
    result = find_trends(raw)
    row = result.summary.set_index("amp").loc["C10"]
    assert (row["n_jumps"], row["jump_visits"]) == (1, "12")
    series = result.series[result.series["amp"] == "C10"]
    assert series["visit"].tolist() == list(range(1, 21))
    assert series.loc[series["jump"], "visit"].tolist() == [12]
    # the same as from read_series
    good = find_trends(read_series(cat)).summary.set_index("amp")
    assert row["drift"] == pytest.approx(good.loc["C10", "drift"])


def test_find_trends_orders_numeric_string_visits():
    rng = np.random.default_rng(4)
    p = rng.normal(0.0, 0.1, 20)
    p[11:] += 2.0  # visit 12 on
    visits = [str(v) for v in range(1, 21)]
    table = pd.DataFrame({"visit": visits, "detector": "D", "amp": "A", "pedestal": p})
    table = table.sample(frac=1.0, random_state=1)  # any row order
    result = find_trends(table)
    assert result.summary.iloc[0]["jump_visits"] == "12"
    assert result.series["visit"].tolist() == list(range(1, 21))


def test_find_trends_refuses_history_rows(tmp_path):
    """Several rows of one (visit, detector, amp) - the catalog's history - are refused."""
    cat = _catalog(tmp_path / "cat", range(1, 21), seed=1)
    _catalog(cat, range(5, 8), seed=5, new_run=True)  # visits 5-7 measured again
    history = read_catalog(cat, "pedestals", all_rows=True)
    with pytest.raises(InputError, match=r"24 repeated \(visit, detector, amp\) "
                                         r"row\(s\), e\.g\. visit 5 R22_S11 C1\d.*pass the "
                                         r"current rows \(read_catalog's default"):
        find_trends(history)
    current = find_trends(read_catalog(cat, "pedestals"))
    assert current.summary["n_visits"].tolist() == [20] * 8


def test_read_series_says_all_rows_were_header_pedestals(tmp_path):
    """Every detector-visit flagged as already corrected (header pedestals, no interfaces):
    the error says they were left out, not that the catalog has no pedestals."""
    cat = _catalog(tmp_path / "cat", range(1, 5), status="flagged")
    assert len(read_catalog(cat, "pedestals")) == 4 * 8
    with pytest.raises(InputError, match=r"cat: no measured pedestals: all 4 "
                                         r"detector-visit\(s\) were left out as "
                                         r"already-corrected header pedestals"):
        read_series(cat)


def test_read_series_int_detector_without_rows(tmp_path):
    cat = _catalog(tmp_path / "cat", range(1, 5))
    assert len(read_series(cat, detector=94)) == 4 * 8
    with pytest.raises(InputError, match=r"cat: no pedestals for 999$"):
        read_series(cat, detector=999)


def test_amp_names_match_ignoring_case(tmp_path):
    from cli_helpers import cli

    cat = _catalog(tmp_path / "cat", range(1, 21), jump_visit=12)
    table = read_series(cat, amp="c10")
    assert set(table["amp"]) == {"C10"} and len(table) == 20
    result = find_trends(read_series(cat), amp="c10")
    assert result.summary[["amp", "jump_visits"]].values.tolist() == [["C10", "12"]]
    proc = cli("trends", cat, "--amp", "c10", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    summary = pd.read_parquet(tmp_path / "out" / "trends_summary.parquet")
    assert summary[["amp", "jump_visits"]].values.tolist() == [["C10", "12"]]
    # two names equal ignoring case, neither exactly: ambiguous
    both = pd.DataFrame({"visit": [1, 2, 1, 2], "detector": "D", "amp": ["Ab", "Ab", "aB", "aB"],
                         "pedestal": [0.0, 0.1, 0.0, 0.1]})
    with pytest.raises(InputError, match=r"amp 'ab' is ambiguous: it matches \['Ab', 'aB'\]"):
        find_trends(both, amp="ab")
    assert find_trends(both, amp="aB").summary["amp"].tolist() == ["aB"]


def test_trends_of_a_catalog_whose_every_detector_failed_says_so(tmp_path):
    from cli_helpers import cli

    src = tmp_path / "src"
    src.mkdir()
    (src / "junk.fits").write_text("not a FITS file\n")
    cat = tmp_path / "cat"
    assert cli("run", src, "--output", cat, "--no-progress").returncode == 1
    proc = cli("trends", cat)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no pedestals: the catalog's 1 detector row(s) are 1 failed" in proc.stderr
    assert "no catalog pedestals table here" not in proc.stderr
