"""Input discovery and planning: folders, globs, manifests, identity and duplicates."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from ampoffset_dask import InputError
from ampoffset_dask.pipeline.inputs import discover_inputs, plan_tasks

from .helpers import VISIT


def test_folder_glob_and_files(sim_visit, sim_dir, tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    for p in sim_visit.paths[:2]:
        shutil.copy(p, nested / p.name)
    (nested / "notes.txt").write_text("not an input")
    found = discover_inputs(tmp_path)
    assert [p.split("/")[-1] for p in (i.path for i in found)] == [
        p.name for p in sim_visit.paths[:2]]
    assert len(discover_inputs(str(sim_dir / "*_R22_S1?.fits"))) == 3
    assert len(discover_inputs(str(tmp_path / "**" / "*.fits"))) == 2
    # the same file given twice is one input
    assert len(discover_inputs([sim_visit.paths[0], str(sim_visit.paths[0])])) == 1


def test_manifest_gives_identity(sim_visit, tmp_path):
    paths = sim_visit.paths[:2]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"visit": [100, 101], "detector": ["R22_S00", "R22_S01"],
                  "path": [str(p) for p in paths]}).to_csv(manifest, index=False)
    items = discover_inputs(manifest)
    assert [(i.visit, i.detector) for i in items] == [(100, "R22_S00"), (101, "R22_S01")]
    planned = plan_tasks(items)
    assert [(t.visit, t.name, t.error) for t in planned] == [(100, "R22_S00", ""),
                                                             (101, "R22_S01", "")]
    assert planned[0].key("tok") == "ampoffset-tok-100-R22_S00"
    # an in-memory table works the same way
    table = pd.read_csv(manifest)
    assert len(discover_inputs(table)) == 2
    with pytest.raises(InputError, match="'path' column"):
        discover_inputs(pd.DataFrame({"file": ["x"]}))


def test_plan_identity_geometry_and_duplicates(sim_visit, tmp_path):
    planned = plan_tasks(discover_inputs(sim_visit.paths[:3]))
    for task in planned:
        assert task.visit == VISIT and not task.error
        assert task.detector.shape == (200, 640) and task.detector.name == task.name
    twin = tmp_path / "twin.fits"
    shutil.copy(sim_visit.paths[0], twin)
    with pytest.raises(InputError, match="same \\(visit, detector\\)"):
        plan_tasks(discover_inputs([sim_visit.paths[0], twin]))
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"\0" * 100)
    (bad,) = plan_tasks(discover_inputs(junk))
    assert bad.visit is None and bad.detector is None
    assert "InputError" in bad.error and str(junk) in bad.error
