"""An interrupt (Ctrl-C, SIGTERM) inside `CatalogWriter.add` loses no journaled result."""

from __future__ import annotations

import pytest

from ampoffset_dask import AmpOffsetConfig
from ampoffset_dask.catalog import CatalogWriter, DetectorResult, read_catalog


def _record(detector: str) -> DetectorResult:
    return DetectorResult(visit=5, detector=detector, status="ok", input=f"{detector}.fits",
                          amp_names=["C10", "C11"], pedestals=[0.5, -0.5])


def test_interrupt_right_after_the_journal_line_keeps_the_result(tmp_path):
    cat = tmp_path / "cat"
    with pytest.raises(KeyboardInterrupt), CatalogWriter(cat) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.add(_record("R22_S11"))
        journal = w._journal
        append = journal.append

        def append_then_interrupt(record):  # the signal arrives as the line is written
            append(record)
            raise KeyboardInterrupt

        journal.append = append_then_interrupt
        w.add(_record("R22_S12"))
    rows = read_catalog(cat, "detectors")
    assert sorted(rows["detector"]) == ["R22_S11", "R22_S12"]
    assert read_catalog(cat, "runs")["status"].tolist() == ["interrupted"]
    # what the interrupted run kept, a resumed run skips
    with CatalogWriter(cat) as w:
        assert {d for _, d in w.finished(AmpOffsetConfig())} == {"R22_S11", "R22_S12"}
