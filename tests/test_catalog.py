"""Tests of the Parquet catalog: schema, atomic per-visit files, journal recovery, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from ampoffset_dask import AmpOffsetConfig, ConfigError
from ampoffset_dask.catalog import CatalogWriter, DetectorResult, read_catalog


def _record(visit, detector, value=1.0, status="ok", n_amps=4, input="x.fits"):
    amps = [f"C1{i}" for i in range(n_amps)]
    interfaces = [
        {"id": f"{amps[i]}-{amps[i + 1]}", "amp_a": amps[i], "amp_b": amps[i + 1], "side": 1,
         "length": 100, "offset_raw": value * i, "offset": value * i, "good_frac": 1.0,
         "min_frac_fail": False, "max_offset_fail": False}
        for i in range(n_amps - 1)
    ]
    return DetectorResult(
        visit=visit, detector=detector, status=status, detector_id=7, input=input,
        amp_names=amps, pedestals=[value + i for i in range(n_amps)], interfaces=interfaces,
        masked_fraction=0.1, background="ok", detection="ok",
    )


def test_tables_files_and_readers(tmp_path):
    cat = tmp_path / "cat"
    with CatalogWriter(cat) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.expect(1, ["R00_S00", "R00_S01"])
        w.expect(2, ["R00_S00"])
        w.add(_record(1, "R00_S01", 2.0))
        w.add(_record(2, "R00_S00", 3.0))
        w.add(_record(1, "R00_S00", 1.0))
        w.add(DetectorResult.failure("InputError: bad.fits: corrupt", visit=None, detector=None,
                                     input="bad.fits"))
        w.finish_run({"n_ok": 3, "n_failed": 1})
    for table in ("detectors", "pedestals", "interfaces"):
        for visit in (1, 2):
            files = list((cat / table / f"visit={visit}").iterdir())
            assert [f.name for f in files] == ["part-0.parquet"]
    assert not list((cat / "_journal").glob("*.jsonl"))
    assert not (cat / ".lock").exists()

    ped = pd.read_parquet(cat / "pedestals")
    assert {"visit", "detector", "amp", "pedestal"} <= set(ped.columns)
    assert len(ped) == 12
    mine = read_catalog(cat, "pedestals")
    assert mine["visit"].dtype == np.int64
    assert list(mine["visit"]) == [1] * 8 + [2] * 4
    assert list(mine["detector"][:4]) == ["R00_S00"] * 4
    np.testing.assert_array_equal(mine["pedestal"][:4], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(mine["amp_index"][:4], [0, 1, 2, 3])

    det = read_catalog(cat, "detectors")
    assert len(det) == 4
    bad = det[det["status"] == "failed"]
    assert list(bad["visit"]) == [-1] and "corrupt" in bad["error"].iloc[0]
    itf = read_catalog(cat, "interfaces", format="astropy")
    assert len(itf) == 9 and itf["interface_id"][0] == "C10-C11"

    import dask.dataframe as dd

    ddf = dd.read_parquet(str(cat / "interfaces"))
    assert len(ddf.compute()) == 9
    assert len(read_catalog(cat, "pedestals", format="dask").compute()) == 12
    assert len(read_catalog(cat, "pedestals", visits=[2])) == 4

    runs = read_catalog(cat, "runs")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "finished" and row["n_ok"] == 3 and row["n_failed"] == 1
    assert json.loads(row["config"])["amp_edge_width"] == 64
    assert "numpy" in json.loads(row["versions"])


def test_resume_replaces_rows_and_checks_config(tmp_path):
    cat = tmp_path / "cat"
    with CatalogWriter(cat) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.expect(5, ["A", "B"])
        w.add(_record(5, "A", 1.0))
        w.add(_record(5, "B", 0.0, status="failed"))
        w.finish_run()
    with CatalogWriter(cat) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        assert w.finished() == {(5, "A")}
        w.expect(5, ["B"])
        w.add(_record(5, "B", 9.0))
        w.finish_run()
    det = read_catalog(cat, "detectors")
    assert list(det["detector"]) == ["A", "B"] and list(det["status"]) == ["ok", "ok"]
    ped = read_catalog(cat, "pedestals")
    assert len(ped) == 8 and ped["pedestal"].iloc[4] == 9.0
    assert len(read_catalog(cat, "runs")) == 2

    other = AmpOffsetConfig(amp_edge_width=32)
    with pytest.raises(ConfigError, match="different configuration"), CatalogWriter(cat) as w:
        w.start_run(config=other, inputs=[])
    with CatalogWriter(cat) as w:
        w.start_run(config=other, inputs=[], new_run=True)
        w.expect(5, ["A"])
        w.add(_record(5, "A", 4.0))
        w.finish_run()
    ped = read_catalog(cat, "pedestals")
    assert len(ped) == 8 and ped["pedestal"].iloc[0] == 4.0
    runs = read_catalog(cat, "runs")
    assert len(runs) == 3 and runs["config_digest"].nunique() == 2


def test_killed_writer_loses_nothing_journaled(tmp_path):
    """A writer process killed mid-visit: the next writer replays its journal."""
    cat = tmp_path / "cat"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_catalog import _record
        from ampoffset_dask import AmpOffsetConfig
        from ampoffset_dask.catalog import CatalogWriter
        w = CatalogWriter({str(cat)!r}, flush_interval=1e9)
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.expect(3, ["A", "B", "C"])
        w.add(_record(3, "A", 1.0))
        w.add(_record(3, "B", 2.0))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert (cat / ".lock").exists()
    assert not (cat / "pedestals" / "visit=3").exists()  # never flushed
    with CatalogWriter(cat) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        assert w.finished() == {(3, "A"), (3, "B")}
        w.expect(3, ["C"])
        w.add(_record(3, "C", 3.0))
        w.finish_run()
    det = read_catalog(cat, "detectors")
    assert list(det["detector"]) == ["A", "B", "C"]
    runs = read_catalog(cat, "runs")
    assert list(runs["status"]) == ["interrupted", "finished"]
    assert len(read_catalog(cat, "pedestals")) == 12


def test_live_lock_refuses_second_writer(tmp_path):
    with CatalogWriter(tmp_path) as w:
        w.open()
        with pytest.raises(ConfigError, match="catalog in use by "):
            CatalogWriter(tmp_path).open()


def test_empty_and_bad_catalogs(tmp_path):
    assert read_catalog(tmp_path, "pedestals").empty
    assert list(read_catalog(tmp_path, "detectors").columns)[:3] == ["visit", "detector",
                                                                        "detector_id"]
    with pytest.raises(ConfigError, match="unknown catalog table"):
        read_catalog(tmp_path, "nope")
    with pytest.raises(Exception, match="no catalog here"):
        read_catalog(tmp_path / "missing")
