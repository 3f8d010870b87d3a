"""An input replaced or rewritten while its task reads it (another run correcting it in place)
fails, instead of recording a measurement of pixels from two versions of the file as ok."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from ampoffset_dask import AmpOffsetConfig
from ampoffset_dask.io.sections import file_stamp
from ampoffset_dask.pipeline.detector_job import process_file

EDGES = AmpOffsetConfig(do_background=False, do_detection=False)


def _replace(path, source) -> None:
    """Replace ``path`` by a copy of ``source`` as an in-place correction does (a new file
    renamed over it), with a modification time surely not the old one's."""
    old = os.stat(path).st_mtime_ns
    tmp = f"{path}.tmp"
    shutil.copy(source, tmp)
    os.utime(tmp, ns=(old + 2_000_000_000, old + 2_000_000_000))
    os.replace(tmp, path)


@pytest.fixture
def inputs(sim_visit, tmp_path):
    """A copy of one simulated detector file, and another detector's file (its replacement)."""
    path = shutil.copy(sim_visit.paths[0], tmp_path / "d.fits")
    return str(path), str(sim_visit.paths[1])


def _replaced_after(monkeypatch, module, name, path, source):
    """Make ``module.name`` (the job imports it when it runs) replace ``path`` by ``source``
    once it has returned: the file changes after the job's reads, before it goes on."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        _replace(path, source)
        return out

    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.parametrize("planned", [True, False])
def test_a_file_replaced_after_its_read_fails(inputs, monkeypatch, planned):
    """The whole-file read (``read_exposure``), with and without a planned stamp: the task
    compares the file after reading it with what it was before."""
    import ampoffset_dask.io.fits as fits_io

    path, other = inputs
    stamp = file_stamp(path) if planned else None
    _replaced_after(monkeypatch, fits_io, "read_exposure", path, other)
    res = process_file(path, planned_stamp=stamp)
    assert res.status == "failed", res
    assert f"{path}: the file changed while it was read" in res.error
    assert "run again" in res.error and "since it was planned" not in res.error
    assert len(res.pedestals) == 0


def test_a_file_replaced_while_its_strips_are_read_fails(inputs, monkeypatch):
    """Edges only, the strips are read by the measurement itself: a change after its last
    read is caught too."""
    import ampoffset_dask.algorithm.measure as measure

    path, other = inputs
    stamp = file_stamp(path)
    _replaced_after(monkeypatch, measure, "measure_detector", path, other)
    res = process_file(path, config=EDGES, planned_stamp=stamp)
    assert res.status == "failed" and "the file changed while it was read" in res.error


def test_a_file_changed_while_read_is_not_corrected_in_place(inputs, monkeypatch):
    """An in-place task whose input changed while it was read writes nothing: the file
    keeps what the other writer put there."""
    import ampoffset_dask.io.fits as fits_io

    path, other = inputs
    stamp = file_stamp(path)
    _replaced_after(monkeypatch, fits_io, "read_exposure", path, other)
    res = process_file(path, output=path, in_place=True, planned_stamp=stamp)
    assert res.status == "failed" and "the file changed while it was read" in res.error
    assert not res.applied and res.output == ""
    with open(path, "rb") as a, open(other, "rb") as b:
        assert a.read() == b.read()


def test_a_file_changed_before_the_task_still_says_since_it_was_planned(inputs):
    path, other = inputs
    stamp = file_stamp(path)
    _replace(path, other)
    res = process_file(path, planned_stamp=stamp)
    assert res.status == "failed" and "changed since it was planned" in res.error
    assert "while it was read" not in res.error


@pytest.mark.parametrize("config", [None, EDGES], ids=["full", "edges"])
def test_an_unchanged_file_is_measured(inputs, config, tmp_path):
    """The check after the reads lets an unchanged file through, measured as without it;
    with an output too (whose header cards are read before the check)."""
    from ampoffset_dask.io.fits import read_exposure

    path, _ = inputs
    res = process_file(path, config=config, planned_stamp=file_stamp(path))
    assert res.status == "ok", res.error
    again = process_file(path, config=config)
    np.testing.assert_array_equal(res.pedestals, again.pedestals)
    out = tmp_path / "out" / "c.fits"
    written = process_file(path, config=config, output=out, planned_stamp=file_stamp(path))
    assert written.status == "ok" and written.output == str(out), written.error
    assert read_exposure(out).visit == res.visit


def test_a_graph_task_whose_file_is_replaced_after_its_read_fails(inputs, monkeypatch):
    """`build_graph`'s read task checks the file after reading it too."""
    import dask

    import ampoffset_dask.io.fits as fits_io
    from ampoffset_dask.pipeline.graph import build_graph

    path, other = inputs
    graph = build_graph(path)
    _replaced_after(monkeypatch, fits_io, "read_exposure", path, other)
    ((res,),) = [dask.compute(list(graph.values()), scheduler="sync")]
    [res] = res
    assert res.status == "failed", res
    assert f"{path}: the file changed while it was read" in res.error
