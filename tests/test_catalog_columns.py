"""The catalog columns of the uncertainties, robust weights and gain diagnosis."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ampoffset_dask import AmpOffsetConfig, get_camera, measure_detector
from ampoffset_dask.catalog import SCHEMAS, CatalogWriter, DetectorResult, read_catalog
from ampoffset_dask.simulate import scale_detector, simulate_detector


def test_errors_levels_and_gain_columns_round_trip(tmp_path):
    det = scale_detector(get_camera("lsstcam")["R22_S11"], 0.2)
    sim = simulate_detector(det, seed=4)
    m = measure_detector(sim.image, sim.mask, det, AmpOffsetConfig(estimator="robust"))
    record = DetectorResult.from_measurement(m, visit=5, detector=det, input="sim.fits")
    assert DetectorResult.from_dict(record.to_dict()) == record  # the journal line
    cat = tmp_path / "cat"
    with CatalogWriter(cat) as writer:
        writer.start_run(config=AmpOffsetConfig(estimator="robust"))
        writer.add(record)
        writer.flush(5, force=True)
        writer.finish_run()
    ped = read_catalog(cat, "pedestals")
    np.testing.assert_array_equal(ped["pedestal_err"], m.pedestal_errors)
    np.testing.assert_array_equal(ped["level"], m.amp_levels)
    assert np.isfinite(ped["pedestal_err"]).all() and (ped["level"] > 100).all()
    itf = read_catalog(cat, "interfaces")
    for name in ("offset_err", "weight", "gain_ratio", "gain_ratio_err"):
        np.testing.assert_array_equal(itf[name], [getattr(i, name) for i in m.interfaces])
    assert list(itf["gain_like"]) == [i.gain_like for i in m.interfaces]


def test_catalogs_without_the_new_columns_read_as_nan(tmp_path):
    """A visit file written before the columns existed reads with NaN / null there."""
    old = pa.schema([f for f in SCHEMAS["pedestals"] if f.name not in ("pedestal_err", "level")])
    table = pa.table({"detector": ["R22_S11"], "detector_id": pa.array([94], old.field(
        "detector_id").type), "amp": ["C10"], "amp_index": pa.array([0], pa.int32()),
        "pedestal": [0.5], "applied": [False], "run_id": ["r"]}, schema=old)
    folder = tmp_path / "cat" / "pedestals" / "visit=1"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    ped = read_catalog(tmp_path / "cat", "pedestals", all_rows=True)
    assert ped["pedestal"].tolist() == [0.5]
    assert ped["pedestal_err"].isna().all() and ped["level"].isna().all()


def test_a_runs_file_of_an_earlier_version_reads_with_todays_columns(tmp_path):
    """The runs table is read as one file (without pyarrow.dataset, whose import cost every
    run 0.2 s before its first task): a column an earlier version did not write reads as
    null, one it no longer writes is dropped, the others keep their values and types."""
    from ampoffset_dask.catalog.read import arrow_table

    cat = tmp_path / "cat"
    with CatalogWriter(cat) as writer:
        writer.start_run(config={"a": 1}, inputs=["x.fits"])
    path = next((cat / "runs").rglob("*.parquet"))
    today = pq.read_table(path)
    dropped = SCHEMAS["runs"].names[-1]
    old = today.drop_columns([dropped]).append_column("retired", pa.array(["x"] * len(today)))
    pq.write_table(old.cast(pa.schema([f.with_type(pa.large_string()) if f.name == "run_id"
                                       else f for f in old.schema])), path)
    got = arrow_table(cat, "runs")
    assert got.schema.equals(SCHEMAS["runs"], check_metadata=False)
    assert got.column(dropped).null_count == len(today) > 0
    assert got.column("run_id").to_pylist() == today.column("run_id").to_pylist()
    assert got.drop_columns([dropped]).equals(today.drop_columns([dropped]))


def test_a_new_run_does_not_import_the_dataset_module(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from ampoffset_dask.catalog import CatalogWriter\n"
            f"with CatalogWriter({str(tmp_path / 'cat')!r}) as w:\n"
            "    w.start_run(config={'a': 1}, inputs=['x.fits'])\n"
            "print('pyarrow.dataset' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "False", done.stderr
