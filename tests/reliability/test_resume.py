"""Issue 10 item 7: resume never mixes configurations or keeps results of changed inputs.

Before: a plain re-run after an interrupted ``--new-run`` with a new config skipped every
detector the catalog held, measured with the old config; an input changed since it was
measured was skipped too; readers showed whatever row was written last, with no history.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from astropy.io import fits

from ampoffset_dask import AmpOffsetConfig, measure_detector, process, read_catalog
from ampoffset_dask.cli import main
from ampoffset_dask.io.fits import read_exposure

CONFIG_B = AmpOffsetConfig(amp_edge_width=32)


def _direct(path, config=None):
    exp = read_exposure(path)
    m = measure_detector(exp.image, exp.mask, exp.detector, config, mask_planes=exp.mask_planes)
    return exp.detector.name, np.asarray(m.pedestals)


def _pedestals(catalog, **kw):
    ped = read_catalog(catalog, "pedestals", **kw)
    return {d: g["pedestal"].to_numpy() for d, g in ped.groupby("detector")}


@pytest.fixture
def data(tmp_path):
    from ampoffset_dask.simulate import simulate_focal_plane

    sim = simulate_focal_plane(tmp_path / "in", "lsstcam",
                               detectors=["R22_S00", "R22_S01", "R22_S10", "R22_S11"],
                               scale=0.05, seed=8)
    return sorted(sim.paths)


def test_rerun_after_partial_new_run_measures_the_rest_with_the_new_config(
        data, scheduler, tmp_path):
    cat = tmp_path / "cat"
    first = process(data, cat, client=scheduler, progress=False)
    assert first.n_ok == 4
    # A --new-run with config B that got through one detector only (as if interrupted).
    partial = process(data[:1], cat, client=scheduler, progress=False, config=CONFIG_B,
                      new_run=True)
    assert partial.n_ok == 1
    # A plain re-run with config B measures the three detectors of config A again.
    again = process(data, cat, client=scheduler, progress=False, config=CONFIG_B)
    assert (again.n_skipped, again.n_submitted, again.n_ok) == (1, 3, 3)
    got = _pedestals(cat)
    for path in data:
        name, want = _direct(path, CONFIG_B)
        np.testing.assert_array_equal(got[name], want)
    det = read_catalog(cat, "detectors")
    runs = read_catalog(cat, "runs").set_index("run_id")
    assert set(runs.loc[det["run_id"], "config_digest"]) == {runs["config_digest"].iloc[-1]}
    # The history keeps all three runs' rows: 4 (A) + 1 (B) + 3 (B).
    assert len(read_catalog(cat, "detectors", all_rows=True)) == 8
    assert len(read_catalog(cat, "pedestals", all_rows=True)) == 8 * 16


def test_changed_input_is_measured_again_and_supersedes(data, scheduler, tmp_path, capsys):
    cat = tmp_path / "cat"
    assert process(data, cat, client=scheduler, progress=False).n_ok == 4
    name, before = _direct(data[2])
    with fits.open(data[2], mode="update") as hdul:  # same size, new pixels and mtime
        hdul[1].data[:, :40] += np.float32(2.5)
    stamp = os.stat(data[2]).st_mtime + 10
    os.utime(data[2], (stamp, stamp))
    _, after = _direct(data[2])
    assert not np.array_equal(before, after)
    again = process(data, cat, client=scheduler, progress=False)
    assert (again.n_skipped, again.n_submitted, again.n_ok) == (3, 1, 1)
    np.testing.assert_array_equal(_pedestals(cat)[name], after)
    history = read_catalog(cat, "pedestals", all_rows=True)
    mine = history[history["detector"] == name]
    assert len(mine) == 32 and mine["run_id"].nunique() == 2
    # The command line shows the latest rows; --all-rows the history.
    assert main(["catalog", str(cat), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["detectors"] == 4
    assert main(["catalog", str(cat), "--json", "--all-rows"]) == 0
    assert json.loads(capsys.readouterr().out)["detectors"] == 5


def test_stale_failure_fixed_later_is_not_counted(data, scheduler, tmp_path, capsys):
    inputs = tmp_path / "mixed"
    inputs.mkdir()
    for path in data[:2]:
        shutil.copy(path, inputs / path.name)
    broken = inputs / data[2].name
    broken.write_bytes(data[2].read_bytes()[:30000])  # truncated: fails on the worker
    cat = tmp_path / "cat"
    first = process(inputs, cat, client=scheduler, progress=False)
    assert (first.n_ok, first.n_failed) == (2, 1)
    shutil.copy(data[2], broken)  # fixed
    again = process(inputs, cat, client=scheduler, progress=False)
    assert (again.n_skipped, again.n_ok, again.n_failed) == (2, 1, 0)
    assert main(["catalog", str(cat), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == {"ok": 3} and summary["failed"] == []
    assert main(["catalog", str(cat), "--json", "--all-rows"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert history["status"] == {"ok": 3, "failed": 1}
    [stale] = history["failed"]
    assert broken.name in stale["error"]
