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
    """Files on a local file system are planned without threads (they would only contend
    for the GIL), in order, whatever ``threads`` allows."""
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


def test_files_on_network_filesystems_and_urls_are_planned_in_threads(monkeypatch):
    """Reads that wait on a network overlap in threads; results stay in order."""
    import threading

    import ampoffset_dask.pipeline.inputs as inputs_mod
    from ampoffset_dask.pipeline.inputs import InputItem, _plan_all

    # (no network file system can be mounted here: the mount table says so instead)
    monkeypatch.setattr(inputs_mod, "on_network_filesystem", lambda paths: [True for _ in paths])
    where = []

    def plan(item):
        where.append(threading.get_ident())
        return [item.path]

    items = [InputItem(f"/lustre/f{i}.fits") for i in range(6)]
    assert _plan_all(items, plan, threads=3) == [[i.path] for i in items]
    assert threading.get_ident() not in where
    where.clear()
    assert _plan_all(items, plan, threads=1) == [[i.path] for i in items]
    assert where == [threading.get_ident()] * 6  # one thread asked for: none started
    monkeypatch.undo()  # URLs: threads, whatever the mounts
    where.clear()
    urls = [InputItem(f"s3://bucket/f{i}.fits") for i in range(3)]
    assert _plan_all(urls, plan, threads=3) == [[i.path] for i in urls]
    assert threading.get_ident() not in where


def test_network_filesystems_from_the_mount_table(tmp_path):
    from ampoffset_dask.io.paths import on_network_filesystem

    mountinfo = "\n".join([
        "22 27 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw",
        "30 22 0:40 / /data rw,relatime shared:5 - nfs4 server:/export rw,vers=4.2",
        "31 22 0:41 / /lustre/scratch rw - lustre 10.0.0.1@o2ib:/scratch rw,flock",
        "32 22 0:42 / /mnt/s3\\040bucket rw,nosuid - fuse.s3fs s3fs rw,user_id=0",
        "33 30 0:43 / /data/local rw - xfs /dev/sdb rw",
    ])
    paths = ["/home/u/x.fits", "/data/v1/x.fits", "/lustre/scratch/r/x.fits",
             "/mnt/s3 bucket/x.fits", "/data/local/x.fits", "/lustre/other/x.fits"]
    assert on_network_filesystem(paths, mountinfo) == [False, True, True, True, False, False]
    assert on_network_filesystem(["/x.fits"], "") == [None]
    # this machine's temporary folder is a local disk (or memory)
    assert on_network_filesystem([tmp_path / "x.fits"]) == [False]
