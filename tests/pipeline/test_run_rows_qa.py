"""The rows a run records are the measurements it made, with the config it records.

A config changed after `prepare` does not reach the workers behind the runs table's back;
a ``force`` measurement of an already corrected input stays current at the next plain run;
a ``new_run`` with another config over files this catalog corrected in place keeps their
measured rows current instead of recording the headers' pedestals as its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ampoffset_dask import AmpOffsetConfig, ConfigError, process, read_catalog
from ampoffset_dask.pipeline import RunOptions, execute, prepare


def _run(inputs, catalog, client, **kw):
    return process(inputs, catalog, client=client, progress=False, **kw)


def _counts(summary):
    return summary.n_ok, summary.n_flagged, summary.n_failed, summary.n_skipped


def _copies(paths, folder: Path) -> list[Path]:
    folder.mkdir()
    return [Path(shutil.copy2(p, folder / Path(p).name)) for p in paths]


def test_a_config_changed_after_prepare_is_not_what_the_workers_measure_with(
        sim_visit, client, tmp_path):
    """The runs table recorded the config given to `prepare`, the workers measured with the
    caller's object as changed since (no background, a 0.01 ADU limit), and a resume with
    the recorded config skipped those rows."""
    paths = list(sim_visit.paths[:2])
    cat = tmp_path / "cat"
    cfg = AmpOffsetConfig(amp_edge_max_offset=5.0)
    with prepare(paths, cat, config=cfg, options=RunOptions(progress=False)) as run:
        cfg.amp_edge_max_offset = 0.01
        cfg.do_background = False
        summary = execute(run, client=client)
    assert _counts(summary) == (2, 0, 0, 0)
    recorded = json.loads(read_catalog(cat, "runs")["config"].iloc[-1])
    assert recorded["amp_edge_max_offset"] == 5.0 and recorded["do_background"] is True
    det = read_catalog(cat, "detectors")
    assert det["background"].tolist() == ["ok", "ok"]
    itf = read_catalog(cat, "interfaces")
    assert len(itf) == 44 and 0.01 < itf["offset_raw"].abs().max() < 5.0
    assert not itf["max_offset_fail"].any()  # the recorded limit, 5 ADU, zeroed none
    # the same measurement as a run given that config untouched
    again = tmp_path / "again"
    _run(paths, again, client, config=AmpOffsetConfig(amp_edge_max_offset=5.0))
    np.testing.assert_allclose(read_catalog(cat, "pedestals")["pedestal"],
                               read_catalog(again, "pedestals")["pedestal"], atol=1e-9)


def test_execute_refuses_prepared_options_changed_since(sim_visit, client, tmp_path):
    """The workers measured with options changed after prepare (gain nominal: electrons)
    while the runs table recorded those given (ADU), and an ADU run skipped the rows."""
    paths = list(sim_visit.paths[:1])
    cat = tmp_path / "cat"
    options = RunOptions(progress=False)
    with prepare(paths, cat, config=AmpOffsetConfig(), options=options) as run:
        options.gain = "nominal"  # the caller's object: not the run's any more
        assert run.options.gain is None
        run.options.overscan = "none"
        with pytest.raises(ConfigError, match=r"options of run .* changed after prepare"):
            execute(run, client=client)
    assert not (cat / "detectors").exists()
    # that refused run, which recorded nothing, does not hold the catalog to its config
    assert _counts(_run(paths, cat, client, config=AmpOffsetConfig())) == (1, 0, 0, 0)


def test_a_refused_run_that_recorded_nothing_does_not_block_the_catalogs_config(
        sim_visit, client, tmp_path):
    paths = list(sim_visit.paths[:1])
    cat = tmp_path / "cat"
    assert _counts(_run(paths, cat, client)) == (1, 0, 0, 0)
    other = AmpOffsetConfig(amp_edge_max_offset=9.0)
    with prepare(paths, cat, config=other, options=RunOptions(progress=False, new_run=True,
                                                              gain="nominal")) as run:
        run.config.do_background = False
        with pytest.raises(ConfigError, match=r"changed after prepare"):
            execute(run, client=client)
    assert read_catalog(cat, "runs")["status"].tolist() == ["finished", "failed"]
    # it was refused "holds results of a different configuration" (and measurement options)
    assert _counts(_run(paths, cat, client)) == (0, 0, 0, 1)


def test_execute_refuses_a_prepared_config_changed_since(sim_visit, client, tmp_path):
    paths = list(sim_visit.paths[:1])
    cat = tmp_path / "cat"
    with prepare(paths, cat, config=AmpOffsetConfig(), options=RunOptions(progress=False)) as run:
        run.config.do_background = False
        with pytest.raises(ConfigError, match=r"config of run .* changed after prepare"):
            execute(run, client=client)
    assert not (cat / "detectors").exists()  # nothing measured
    assert read_catalog(cat, "runs")["status"].tolist() == ["failed"]


def test_force_measurements_stay_current_at_a_plain_resume(sim_visit, client, tmp_path):
    """Corrected copies measured with ``force``: the next plain run of the same files and
    config flagged them all again as "already corrected", and the ok rows stopped being
    current."""
    corr = tmp_path / "corr"
    _run(list(sim_visit.paths[:2]), tmp_path / "first", client, output_images=corr)
    files = sorted(corr.rglob("*.fits"))
    assert len(files) == 2
    cat = tmp_path / "cat"
    forced = _run(files, cat, client, force=True)
    assert _counts(forced) == (2, 0, 0, 0)
    for _ in range(2):
        summary = _run(files, cat, client)
        assert _counts(summary) == (0, 0, 0, 2) and summary.n_submitted == 0
    det = read_catalog(cat, "detectors")
    assert det["status"].tolist() == ["ok", "ok"]
    assert set(det["run_id"]) == {forced.run_id}
    assert len(read_catalog(cat, "interfaces")) == 44
    # corrected copies asked for: they cannot be written without force, and the forced
    # rows stay current (flagged rows replaced them for good)
    summary = _run(files, cat, client, output_images=tmp_path / "copies")
    assert _counts(summary) == (0, 0, 0, 2) and summary.n_submitted == 0
    assert any("neither measured nor written" in note for note in summary.notes)
    assert _counts(_run(files, cat, client)) == (0, 0, 0, 2)
    assert read_catalog(cat, "detectors")["status"].tolist() == ["ok", "ok"]
    # a file changed since its forced measurement is not that measurement: flagged
    os.utime(files[0], (1_000_000_000, 1_000_000_000))
    assert _counts(_run(files, cat, client)) == (0, 1, 0, 1)


def test_new_run_with_another_config_keeps_the_in_place_rows(sim_visit, client, tmp_path,
                                                             caplog):
    """A ``new_run`` with another config over files this catalog corrected in place
    recorded flagged rows carrying the headers' pedestals (the first config's) as its own
    measurement with the new config, replacing the ok rows; every later run did it again."""
    paths = _copies(sim_visit.paths[:2], tmp_path / "in")
    backups = _copies(sim_visit.paths[:2], tmp_path / "backup")
    cat = tmp_path / "cat"
    first = _run(paths, cat, client, in_place=True)
    assert _counts(first) == (2, 0, 0, 0)
    corrected = [p.read_bytes() for p in paths]
    pedestals = read_catalog(cat, "pedestals")
    other = {"ampEdgeMaxOffset": 10.0}
    for options in ({"in_place": True, "new_run": True}, {"in_place": True}, {},
                    {"output_images": tmp_path / "images"}):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ampoffset_dask"):
            summary = _run(paths, cat, client, config=other, **options)
        assert _counts(summary) == (0, 0, 0, 2) and summary.n_submitted == 0
        warned = [r.getMessage() for r in caplog.records
                  if "neither measured nor written by this run" in r.getMessage()]
        assert len(warned) == 1 and warned[0].startswith("2 input(s)")
        assert all(str(p) in warned[0] for p in paths)
        assert first.run_id in warned[0] and "--force" in warned[0]
        assert warned[0] in summary.notes
        det = read_catalog(cat, "detectors")
        assert det["status"].tolist() == ["ok", "ok"]
        assert set(det["run_id"]) == {first.run_id}
        assert det["n_interfaces"].tolist() == [22, 22]
        pd.testing.assert_frame_equal(read_catalog(cat, "pedestals"), pedestals)
        assert [p.read_bytes() for p in paths] == corrected
    # the originals restored: measured and corrected with the new config
    for backup, path in zip(backups, paths, strict=True):
        shutil.copy2(backup, path)
    summary = _run(paths, cat, client, config=other, in_place=True)
    assert _counts(summary) == (2, 0, 0, 0)
    det = read_catalog(cat, "detectors")
    assert set(det["run_id"]) == {summary.run_id}
    assert _counts(_run(paths, cat, client, config=other, in_place=True)) == (0, 0, 0, 2)


def test_inputs_recorded_under_the_earlier_visit_numbering_are_refused(sim_visit, client,
                                                                       tmp_path):
    """A catalog made before LSST raws' visits counted the controller holds a CONTRLLR = C
    raw as day_obs * 100000 + seq_num; resuming it measured the raw again under LSST's
    exposure id, and both rows stayed current (4 current rows for 2 files, no word)."""
    from astropy.io import fits

    from ampoffset_dask.catalog import CatalogWriter, DetectorResult

    raw = tmp_path / "raw"
    raw.mkdir()
    paths = []
    for k, path in enumerate(sim_visit.paths[:2]):
        with fits.open(path) as hdus:
            del hdus[0].header["VISIT"]
            hdus[0].header.update(DAYOBS="20230101", SEQNUM=5, CONTRLLR="C")
            hdus.writeto(raw / f"raw{k}.fits")
        paths.append(raw / f"raw{k}.fits")
    cat = tmp_path / "cat"
    summary = _run(paths, cat, client)
    assert _counts(summary) == (2, 0, 0, 0)
    det = read_catalog(cat, "detectors")
    assert set(det["visit"]) == {3023010100005}
    # the same catalog as the earlier numbering wrote it
    old = tmp_path / "old"
    with CatalogWriter(old) as writer:
        writer.start_run(config=AmpOffsetConfig(), inputs=[str(p) for p in paths])
        for row in det.itertuples():
            writer.add(DetectorResult(visit=2023010100005, detector=row.detector,
                                      detector_id=int(row.detector_id), status="ok",
                                      input=row.input, amp_names=["C10", "C11"],
                                      pedestals=[0.5, -0.5]))
        writer.finish_run()
    before = read_catalog(old, "detectors", all_rows=True)
    with pytest.raises(ConfigError, match=(
            r"2 input\(s\) are recorded here under the visit numbers an earlier version gave "
            r"LSST raws, e\.g\. .*raw0\.fits as visit 2023010100005, now 3023010100005 .*"
            r"measure them into a new catalog")):
        _run(paths, old, client)
    pd.testing.assert_frame_equal(read_catalog(old, "detectors", all_rows=True), before)
    # a catalog of the new numbering resumes as before
    assert _counts(_run(paths, cat, client)) == (0, 0, 0, 2)
    # the path reused for another exposure (the O raw of that day and sequence number was
    # replaced by the C raw): not a renumbering, measured
    for k, path in enumerate(paths):
        os.utime(path, (1_000_000_000 + k, 1_000_000_000 + k))
    assert _counts(_run(paths, old, client)) == (2, 0, 0, 0)
