"""Reads of a catalog that a run is writing."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("visits", [None, [1]])
def test_a_read_during_a_write_never_pairs_two_runs(tmp_path, monkeypatch, visits):
    """A run writing between the reader's look at `detectors` and its read of `pedestals`
    (the old detectors file with the new pedestals: a detector's pedestals twice) is
    noticed and the read repeated: one run's pedestals, the newest."""
    import ampoffset_dask.catalog.read as read_mod
    from ampoffset_dask import AmpOffsetConfig, read_catalog
    from ampoffset_dask.catalog import CatalogWriter, DetectorResult

    def run(values):
        with CatalogWriter(tmp_path / "cat") as writer:
            writer.start_run(config=AmpOffsetConfig(), new_run=True)
            writer.add(DetectorResult(visit=1, detector="R22_S11", status="ok",
                                      amp_names=["C10", "C11"], pedestals=values))

    run([0.5, -0.5])
    original = read_mod._current_runs
    calls = []

    def racing(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:  # another run lands right after the reader's look
            run([0.25, -0.25])
        return out

    monkeypatch.setattr(read_mod, "_current_runs", racing)
    ped = read_catalog(tmp_path / "cat", "pedestals", visits=visits)
    assert len(calls) == 2
    assert ped["pedestal"].tolist() == [0.25, -0.25]
