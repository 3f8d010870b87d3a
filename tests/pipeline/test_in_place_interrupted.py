"""An in-place run stopped while detectors ran on the workers: they finish and overwrite their
inputs, their results are never recorded. The file's header names the catalog run that wrote
it, so the next run records it from its header and never corrects it again (with or without
force); a file corrected by another catalog keeps the "already corrected ... --force" rule.

The lost record is simulated without timing races: the job function corrects a file in place
with the catalog run's id, and its result is not recorded (what a stopped client does).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from astropy.io import fits

from ampoffset_dask import process, read_catalog
from ampoffset_dask.algorithm.metadata import PEDESTAL_KEY, SUBTRACTED_KEY
from ampoffset_dask.pipeline.detector_job import process_file
from ampoffset_dask.pipeline.inputs import RUN_KEY


def _copies(sim_visit, folder, n=3):
    folder.mkdir()
    paths = []
    for src in sim_visit.paths[:n]:
        dst = folder / os.path.basename(src)
        shutil.copyfile(src, dst)
        paths.append(dst)
    return paths


def _lost_record(sim_visit, client, tmp_path):
    """A catalog whose run corrected three files in place but recorded two: the third was
    corrected by the job function with that run's id, its result dropped. Returns the
    folder, the catalog, the run id, the unrecorded file and the job's result."""
    folder, catalog = tmp_path / "in", tmp_path / "cat"
    paths = _copies(sim_visit, folder)
    lost = paths[2]
    hidden = tmp_path / lost.name
    shutil.move(lost, hidden)  # not an input of the first run
    first = process(folder, catalog, in_place=True, client=client, progress=False)
    assert first.n_ok == 2
    shutil.move(hidden, lost)
    result = process_file(lost, output=lost, in_place=True, run_id=first.run_id)
    assert result.status in ("ok", "flagged") and result.output == str(lost)
    assert fits.getheader(lost, 0)[RUN_KEY] == first.run_id
    assert len(read_catalog(catalog, "detectors")) == 2
    return folder, catalog, first.run_id, lost, result


def _header_pedestals(path, amp_names):
    header = fits.getheader(path, 0)
    return [header[PEDESTAL_KEY.format(a)] for a in amp_names]


def test_a_corrected_file_names_the_run_that_wrote_it(sim_visit, client, tmp_path):
    paths = _copies(sim_visit, tmp_path / "in", n=1)
    summary = process(paths, tmp_path / "cat", in_place=True, client=client, progress=False)
    header = fits.getheader(paths[0], 0)
    assert header.get(SUBTRACTED_KEY) is True
    assert header[RUN_KEY] == summary.run_id
    runs = read_catalog(tmp_path / "cat", "runs")
    assert summary.run_id in set(runs["run_id"])
    # corrected copies carry it too
    copy = process([sim_visit.paths[0]], tmp_path / "cat2",
                   output_images=tmp_path / "out", client=client, progress=False)
    written = read_catalog(tmp_path / "cat2", "detectors")["output"].iloc[0]
    assert fits.getheader(written, 0)[RUN_KEY] == copy.run_id


@pytest.mark.parametrize("force", [False, True])
def test_resume_records_an_unrecorded_in_place_correction_once(sim_visit, client, tmp_path,
                                                                force):
    folder, catalog, run_id, lost, job = _lost_record(sim_visit, client, tmp_path)
    before = lost.read_bytes()
    again = process(folder, catalog, in_place=True, client=client, progress=False,
                    force=force)
    assert lost.read_bytes() == before  # not corrected a second time
    assert (again.n_ok, again.n_flagged, again.n_failed, again.n_skipped,
            again.n_submitted) == (0, 1, 0, 2, 0)
    (_, detector, why), = again.flagged
    assert detector == job.detector
    assert f"corrected in place by run {run_id} of this catalog, which stopped before " \
           "recording it" in why
    assert "the pedestals its header holds are recorded; not corrected again" in why
    assert "--force" not in why and "force=True" not in why
    assert any(run_id in note for note in again.notes)

    det = read_catalog(catalog, "detectors")
    row = det[(det["detector"] == job.detector) & (det["run_id"] == again.run_id)]
    assert len(row) == 1
    assert row["status"].iloc[0] == "flagged" and bool(row["applied"].iloc[0])
    assert row["output"].iloc[0] == os.path.realpath(lost)
    peds = read_catalog(catalog, "pedestals")
    mine = peds[(peds["detector"] == job.detector) & (peds["run_id"] == again.run_id)]
    mine = mine.sort_values("amp_index")
    # the pedestals its header says were subtracted, which are those the job measured
    assert list(mine["amp"]) == list(job.amp_names)
    np.testing.assert_allclose(mine["pedestal"], _header_pedestals(lost, job.amp_names),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(mine["pedestal"], job.pedestals, rtol=0, atol=1e-5)

    # the next run finds it done: no new row, the file as it was
    n_rows = len(det)
    third = process(folder, catalog, in_place=True, client=client, progress=False,
                    force=force)
    assert (third.n_skipped, third.n_submitted, third.n_flagged) == (3, 0, 0)
    assert len(read_catalog(catalog, "detectors")) == n_rows
    assert lost.read_bytes() == before


def test_a_file_corrected_by_another_catalog_is_still_flagged(sim_visit, client, tmp_path):
    folder = tmp_path / "in"
    paths = _copies(sim_visit, folder, n=2)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(paths[1], elsewhere)
    process(folder, tmp_path / "cat", in_place=True, client=client, progress=False)
    # corrected in place by a run of another catalog
    other = process([elsewhere], tmp_path / "other", in_place=True, client=client,
                    progress=False)
    assert fits.getheader(elsewhere, 0)[RUN_KEY] == other.run_id
    shutil.move(elsewhere, paths[1])
    before = paths[1].read_bytes()
    again = process(folder, tmp_path / "cat", in_place=True, client=client, progress=False)
    assert (again.n_flagged, again.n_skipped, again.n_submitted) == (1, 1, 0)
    (_, _, why), = again.flagged
    assert why.startswith(f"already corrected ({SUBTRACTED_KEY} = T in {paths[1]})")
    assert "--force / force=True measures it anyway, and in place corrects it a second time" in why
    assert "of this catalog" not in why
    assert paths[1].read_bytes() == before


def test_the_interrupted_message_of_an_in_place_run(sim_visit, tmp_path, monkeypatch,
                                                    capsys):
    from ampoffset_dask import cli
    from ampoffset_dask.pipeline import run as run_module

    def stopped(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "execute", stopped)
    paths = _copies(sim_visit, tmp_path / "in", n=1)
    code = cli.main(["run", str(paths[0]), "--output", str(tmp_path / "cat"), "--in-place",
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130
    assert "what finished is in the catalog" not in err
    assert ("detectors running when it stopped may have been corrected in place without "
            "being recorded; run again to record them from their headers") in err
    # without --in-place, the message is as it was
    code = cli.main(["run", str(paths[0]), "--output", str(tmp_path / "cat2"),
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130
    assert "interrupted; what finished is in the catalog, run again to resume" in err
    assert "corrected in place" not in err


def test_a_recovered_correction_of_another_configuration_says_so(sim_visit, client,
                                                                 tmp_path):
    # the stopped run measured with the default config, the recovering run (--new-run)
    # with another: the row sits under the new config with the old one's pedestals
    folder, catalog, run_id, lost, job = _lost_record(sim_visit, client, tmp_path)
    before = lost.read_bytes()
    again = process(folder, catalog, in_place=True, client=client, progress=False,
                    new_run=True, config={"ampEdgeWidth": 30})
    assert lost.read_bytes() == before
    why = next(w for _, d, w in again.flagged if d == job.detector)
    assert f"corrected in place by run {run_id} of this catalog" in why
    assert "(measured with that run's configuration, not this run's)" in why
    # with its own config, the message says nothing of it
    (tmp_path / "b").mkdir()
    folder2, catalog2, _, _, job2 = _lost_record(sim_visit, client, tmp_path / "b")
    why = next(w for _, d, w in process(folder2, catalog2, in_place=True, client=client,
                                        progress=False).flagged if d == job2.detector)
    assert "configuration" not in why
