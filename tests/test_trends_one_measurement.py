"""Trends refuse a series whose current rows were measured in different ways (configurations,
overscan modes): a partial ``--new-run`` leaves rows of two runs current, and the series
would change meaning at a visit with no jump of the camera behind it."""

from __future__ import annotations

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig
from ampoffset_dask.catalog import CatalogWriter, DetectorResult
from ampoffset_dask.errors import InputError
from ampoffset_dask.trends import read_series


def test_trends_refuse_rows_of_two_configurations(tmp_path):
    """The QA scenario: visits 1-4 measured with the default config, 5-8 after a ``--new-run``
    that zeroes every pedestal (``ampEdgeMaxOffset=0.05``); refused by `read_series` and by
    ``ampoffset-dask trends`` (exit 2, no trends written) until every visit is measured again
    with one config."""
    from cli_helpers import cli
    from distributed import Client, LocalCluster

    from ampoffset_dask import process
    from ampoffset_dask.simulate import simulate_focal_plane

    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S11"],
                               visits=list(range(1, 9)), scale=0.05, seed=3, sequence=True)
    late = [p for p in sim.paths if int(p.name.split("_")[1]) >= 5]
    cat = tmp_path / "cat"
    zeroed = {"ampEdgeMaxOffset": 0.05}
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        process(sim.paths, cat, client=client, progress=False)
        process(late, cat, client=client, progress=False, config=zeroed, new_run=True)
        msg = (r"pedestals of 2 configurations \(amp_edge_max_offset 5\.0 -> 0\.05\): "
               r"4 detector-visit\(s\) measured with config \w+ \(run [\w-]+; visit 1 "
               r"R22_S11\) and 4 with config \w+ \(run [\w-]+; visit 5 R22_S11\).*"
               r"run again with --new-run over all the inputs")
        with pytest.raises(InputError, match=msg):
            read_series(cat)
        with pytest.raises(InputError, match=msg):  # one detector (any case), one amp
            read_series(cat, detector="r22_s11", amp="C10")
        proc = cli("trends", cat)
        assert proc.returncode == 2 and "2 configurations" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not (cat / "trends").exists()
        # the advice works: every input measured again with one config
        process(sim.paths, cat, client=client, progress=False, config=zeroed, new_run=True)
    assert len(read_series(cat)) == 8 * 16
    assert cli("trends", cat).returncode == 0


def _catalog(path, runs):
    """A catalog of detector R22_S11 written by one run per ``(config, visits, overscan)``
    of ``runs`` (a ``new_run`` each), with steady pedestals."""
    amps = [f"C1{i}" for i in range(8)]
    with CatalogWriter(path) as writer:
        for config, visits, overscan in runs:
            writer.start_run(config=config, new_run=True)
            for visit in visits:
                writer.add(DetectorResult(
                    visit=visit, detector="R22_S11", status="ok", detector_id=94,
                    amp_names=amps, pedestals=list(np.linspace(-1, 1, 8)),
                    pedestal_errors=[0.05] * 8, overscan=overscan))
            writer.add(DetectorResult(visit=100, detector="R22_S12", status="failed",
                                      error="unreadable"))
            writer.finish_run()
    return path


def test_trends_refuse_mixed_overscan_modes(tmp_path):
    mixed = _catalog(tmp_path / "mixed", [(AmpOffsetConfig(), [1, 2, 3], "per-row"),
                                          (AmpOffsetConfig(), [4, 5], "mean")])
    with pytest.raises(InputError, match=r"2 overscan modes: 3 detector-visit\(s\) with "
                                         r"'per-row' \(visit 1 R22_S11\) and 2 detector-"
                                         r"visit\(s\) with 'mean' \(visit 4 R22_S11\)"):
        read_series(mixed)


def test_trends_read_rows_measured_one_way(tmp_path):
    """One config over several runs, a config change that only ``doApplyAmpOffset`` makes
    (a correcting run: no other pedestals), a failed row, rows without an overscan mode
    (catalogs of earlier versions, failures): read as before."""
    one = _catalog(tmp_path / "one", [
        (AmpOffsetConfig(), [1, 2], "per-row"),
        (AmpOffsetConfig(doApplyAmpOffset=True), [3, 4], "per-row"),
        (AmpOffsetConfig(), [5], ""),
    ])
    series = read_series(one)
    assert sorted(set(series["visit"])) == [1, 2, 3, 4, 5] and len(series) == 5 * 8
    assert series.attrs["unit"] == "ADU"
    # the rows of another config are history: superseded, not compared
    redone = _catalog(tmp_path / "redone", [
        (AmpOffsetConfig(), [1, 2], "per-row"),
        (AmpOffsetConfig(ampEdgeMaxOffset=0.5), [1, 2], "per-row"),
    ])
    assert len(read_series(redone)) == 2 * 8


def test_trends_leave_out_the_header_pedestals_of_already_corrected_files(tmp_path):
    """A file corrected before this catalog saw it (another catalog, another config) is a
    flagged row holding its header's pedestals under this run's id and config: the series
    took them as this configuration's measurement."""
    amps = [f"C1{i}" for i in range(8)]
    cat = tmp_path / "cat"
    with CatalogWriter(cat) as writer:
        writer.start_run(config=AmpOffsetConfig())
        for visit in (1, 2, 3, 4):
            writer.add(DetectorResult(
                visit=visit, detector="R22_S11", status="ok", detector_id=94, amp_names=amps,
                pedestals=list(np.linspace(-1, 1, 8)), pedestal_errors=[0.05] * 8))
        writer.add(DetectorResult(
            visit=5, detector="R22_S11", status="flagged", detector_id=94, amp_names=amps,
            error="already corrected (LSST ISR AMPOFFSET PEDESTAL SUBTRACTED = T in x.fits)",
            pedestals=list(np.linspace(-9, 9, 8)), pedestal_errors=[float("nan")] * 8,
            applied=True))
        writer.finish_run()
    series = read_series(cat)
    assert sorted(set(series["visit"])) == [1, 2, 3, 4] and len(series) == 4 * 8
    assert series["pedestal"].abs().max() <= 1.0
