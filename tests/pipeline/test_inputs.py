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


def test_local_headers_are_planned_in_this_thread(sim_visit, monkeypatch):
    """Files that answer at once are planned without threads (they would only contend for
    the GIL), in order, whatever ``threads`` allows."""
    import threading

    import ampoffset_dask.pipeline.inputs as inputs_mod

    seen = []
    real = inputs_mod._plan_one

    def plan_one(*args, **kwargs):
        seen.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(inputs_mod, "_plan_one", plan_one)
    items = discover_inputs(sim_visit.paths[:4])
    planned = plan_tasks(items, threads=8)
    assert [t.path for t in planned] == [i.path for i in items]
    assert all(not t.error for t in planned)
    assert seen == [threading.get_ident()] * 4


def test_planning_that_waits_goes_on_in_threads():
    """When the headers keep planning waiting (a network file system, here a plan that
    sleeps), the files after the first two are planned in threads, results in order."""
    import threading
    import time

    from ampoffset_dask.pipeline.inputs import InputItem, _plan_all

    main = threading.get_ident()
    where = {}

    def slow(item):
        time.sleep(0.02)
        where[item.path] = threading.get_ident()
        return [item.path]

    items = [InputItem(f"f{i}.fits") for i in range(10)]
    t0 = time.perf_counter()
    assert _plan_all(items, slow, threads=4) == [[i.path] for i in items]
    elapsed = time.perf_counter() - t0
    assert [where[f"f{i}.fits"] == main for i in range(10)] == [True] * 2 + [False] * 8
    assert elapsed < 0.02 * 10 * 0.75  # the waits overlapped
    where.clear()
    assert _plan_all(items, slow, threads=1) == [[i.path] for i in items]
    assert set(where.values()) == {main}  # one thread asked for: no threads


def test_urls_are_planned_in_threads():
    import threading

    from ampoffset_dask.pipeline.inputs import InputItem, _plan_all

    where = []

    def plan(item):
        where.append(threading.get_ident())
        return [item.path]

    items = [InputItem(f"s3://bucket/f{i}.fits") for i in range(3)]
    assert _plan_all(items, plan, threads=3) == [[i.path] for i in items]
    assert threading.get_ident() not in where
