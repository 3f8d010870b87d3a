"""Catalog compaction: same rows, pruning kept, resume unchanged, crash-safe, locked."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pyarrow.dataset as pads
import pytest
from cli_helpers import cli

from ampoffset_dask import AmpOffsetConfig, ConfigError, InputError
from ampoffset_dask.catalog import (
    CatalogBusyError,
    CatalogWriter,
    DetectorResult,
    compact_catalog,
    read_catalog,
)
from ampoffset_dask.catalog import compact as compact_module
from ampoffset_dask.catalog.read import _dataset, _visit_schema, compacted_files, visit_files

TABLES = ("detectors", "pedestals", "interfaces")
DETECTORS = ("R22_S10", "R22_S11", "R22_S12")


def _record(visit, detector, value, status="ok", input=None):
    amps = ["C10", "C11", "C12", "C13"]
    interfaces = [
        {"id": f"{amps[i]}-{amps[i + 1]}", "amp_a": amps[i], "amp_b": amps[i + 1], "side": 1,
         "length": 100, "offset_raw": value * i, "offset": value * i, "good_frac": 1.0,
         "min_frac_fail": False, "max_offset_fail": False}
        for i in (2, 0, 1)  # not sorted: the order within a detector must survive
    ]
    if status == "failed":
        return DetectorResult.failure("InputError: corrupt", visit=visit, detector=detector,
                                      input=input or f"{visit}_{detector}.fits")
    return DetectorResult(visit=visit, detector=detector, status=status, detector_id=7,
                          input=input or f"{visit}_{detector}.fits", amp_names=amps,
                          pedestals=[value + i for i in range(4)],
                          pedestal_errors=[0.1] * 4, amp_levels=[500.0 + value] * 4,
                          interfaces=interfaces)


def _write_run(cat, results, config=None, new_run=False):
    with CatalogWriter(cat) as w:
        w.start_run(config=config or AmpOffsetConfig(), inputs=[], new_run=new_run)
        for r in results:
            w.add(r)
        w.finish_run()


def _write_history(folder):
    cat = folder / "cat"
    first = [_record(v, d, v + i / 10) for v in range(1, 8) for i, d in enumerate(DETECTORS)]
    first[4] = _record(2, "R22_S11", 0.0, status="failed")
    first.append(DetectorResult.failure("InputError: x.fits: no visit", visit=None,
                                        detector=None, input="x.fits"))
    _write_run(cat, first)
    _write_run(cat, [_record(2, "R22_S11", 9.0)])  # resume fills the failure
    _write_run(cat, [_record(5, d, -1.0) for d in DETECTORS[:2]],
               config=AmpOffsetConfig(amp_edge_width=32), new_run=True)
    return cat


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Seven visits, three runs: a failure replaced, a new-run redo, an unidentified input.
    Written once per run (~0.3 CPU s) and shared by the ``-n`` processes: the tests copy it."""
    from run_shared import once_per_run

    return once_per_run(tmp_path_factory, "compact_history", _write_history)


def _snapshot(cat, **kw):
    return {(t, all_rows): read_catalog(cat, t, all_rows=all_rows, **kw)
            for t in TABLES for all_rows in (False, True)}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        pd.testing.assert_frame_equal(a[key], b[key], check_exact=True, obj=str(key))


def _finished(cat, config=None):
    with CatalogWriter(cat) as w:
        w.open()
        return w.finished(config or AmpOffsetConfig())


def test_compaction_keeps_every_row_and_the_latest_row_rule(history, tmp_path):
    cat = tmp_path / "cat"
    shutil.copytree(history, cat)
    before = _snapshot(cat)
    by_visit = _snapshot(cat, visits=[5, 6])
    by_detector = _snapshot(cat, detectors=["R22_S11"])
    done = _finished(cat)
    dask_before = read_catalog(cat, "pedestals", format="dask").compute()

    result = compact_catalog(cat, visits_per_file=3)
    # 8 visits (with -1) of detectors, 7 of pedestals and interfaces; 3 visits per file.
    assert result.files_before == {"detectors": 8, "pedestals": 7, "interfaces": 7}
    assert result.files_after == {"detectors": 3, "pedestals": 3, "interfaces": 3}
    assert result.rows["pedestals"] == len(before[("pedestals", True)])
    for table in TABLES:
        assert visit_files(cat, table) == []
        assert not list((cat / table).glob("visit=*"))  # emptied folders removed
    _assert_same(_snapshot(cat), before)
    _assert_same(_snapshot(cat, visits=[5, 6]), by_visit)
    _assert_same(_snapshot(cat, detectors=["R22_S11"]), by_detector)
    assert _finished(cat) == done
    dask_after = read_catalog(cat, "pedestals", format="dask").compute()
    pd.testing.assert_frame_equal(
        dask_after.sort_values(["visit", "detector", "amp_index"]).reset_index(drop=True),
        dask_before.sort_values(["visit", "detector", "amp_index"]).reset_index(drop=True),
        check_dtype=False)
    itf = read_catalog(cat, "interfaces", visits=[3])
    assert list(itf["interface_id"][:3]) == ["C12-C13", "C10-C11", "C11-C12"]

    # A later run (new config) writes per-visit files again; its rows supersede compacted ones.
    _write_run(cat, [_record(6, "R22_S10", 42.0)], config=AmpOffsetConfig(amp_edge_width=32))
    assert [v for v, _ in visit_files(cat, "pedestals")] == [6]
    later = read_catalog(cat, "pedestals", visits=[6])
    assert list(later.loc[later["detector"] == "R22_S10", "pedestal"]) == [42.0, 43.0, 44.0,
                                                                            45.0]
    assert len(later) == 12
    assert len(read_catalog(cat, "pedestals", all_rows=True)) == len(
        before[("pedestals", True)]) + 4
    again = _snapshot(cat)
    second = compact_catalog(cat, visits_per_file=3)
    assert second.files_after == {"detectors": 4, "pedestals": 4, "interfaces": 4}
    _assert_same(_snapshot(cat), again)


def _sorted(frame):
    keys = [c for c in ("visit", "detector", "run_id", "amp_index", "interface_id")
            if c in frame.columns]
    return frame.sort_values(keys).reset_index(drop=True)


@pytest.mark.parametrize("twice", [False, True])
def test_a_dask_read_built_before_a_compaction_computes_every_row_after_it(history,
                                                                           tmp_path, twice):
    """The dask reader lists files when its graph is built and reads them when it is
    computed: rows a compaction moves in between, out of per-visit files into new compacted
    files, are read from there (``twice``: a first compaction before the graph is built)."""
    cat = tmp_path / "cat"
    shutil.copytree(history, cat)
    if twice:
        compact_catalog(cat, visits_per_file=3)
        _write_run(cat, [_record(v, "R22_S12", 50.0 + v) for v in (2, 6)],
                   config=AmpOffsetConfig(amp_edge_width=32))
    graphs = {(t, all_rows, visits): read_catalog(cat, t, format="dask", all_rows=all_rows,
                                                  visits=visits)
              for t in TABLES for all_rows in (False, True) for visits in (None, (2, 6))}
    expected = {key: read_catalog(cat, key[0], all_rows=key[1], visits=key[2])
                for key in graphs}
    compact_catalog(cat, visits_per_file=2)
    assert visit_files(cat, "pedestals") == []
    for key, graph in graphs.items():
        got = graph.compute()
        assert len(got) == len(expected[key]), key
        pd.testing.assert_frame_equal(_sorted(got), _sorted(expected[key]), check_dtype=False,
                                      obj=str(key))


def test_filters_skip_other_files_and_row_groups(history, tmp_path):
    cat = tmp_path / "cat"
    shutil.copytree(history, cat)
    want = read_catalog(cat, "pedestals", visits=[6, 7])
    compact_catalog(cat, visits_per_file=3, row_group_size=4)
    files = compacted_files(cat, "pedestals")
    assert [(lo, hi) for lo, hi, _ in files] == [(1, 3), (4, 6), (7, 7)]
    # Make the file of visits 1-3 unreadable: a reader of visits 6 and 7 never opens it.
    files[0][2].write_bytes(b"not parquet")
    pd.testing.assert_frame_equal(read_catalog(cat, "pedestals", visits=[6, 7]), want)
    with pytest.raises(Exception, match=r"(?i)parquet"):
        read_catalog(cat, "pedestals", visits=[2])
    # Rows are sorted by detector, so a detector filter reads a few row groups only.
    ds = _dataset([files[1][2]], [pads.field("visit") >= 4], _visit_schema("pedestals"))
    (fragment,) = ds.get_fragments()
    n_groups = fragment.metadata.num_row_groups
    hit = fragment.split_by_row_group(filter=pads.field("detector") == "R22_S12")
    assert n_groups >= 9 and 0 < len(hit) <= n_groups // 3 + 1


@pytest.mark.parametrize("stop_after", [0, 2, 4])
def test_compaction_stopped_at_any_point_loses_and_doubles_nothing(history, tmp_path,
                                                                   monkeypatch, stop_after):
    """Stopped after ``stop_after`` per-visit files were removed (the compacted file of
    their 3 visits in place): readers see the same rows; a writer and the next compaction
    too."""
    cat = tmp_path / "cat"
    shutil.copytree(history, cat)
    before = _snapshot(cat)
    done = _finished(cat)
    # a temporary file of a compaction killed while writing
    (cat / "pedestals" / "_compacted").mkdir()
    (cat / "pedestals" / "_compacted" / ".v1_3_dead.parquet.1.abcd.tmp").write_bytes(b"x")
    real = compact_module._retire
    calls = []

    def retire_then_stop(path):
        if len(calls) == stop_after:
            raise KeyboardInterrupt("stopped")
        calls.append(path)
        real(path)

    monkeypatch.setattr(compact_module, "_retire", retire_then_stop)
    with pytest.raises(KeyboardInterrupt):
        compact_catalog(cat, visits_per_file=3)
    monkeypatch.setattr(compact_module, "_retire", real)
    assert not (cat / ".lock").exists()
    assert len(compacted_files(cat, "detectors")) == 1 + stop_after // 3
    assert len(visit_files(cat, "detectors")) == 8 - stop_after  # some already compacted
    _assert_same(_snapshot(cat), before)
    assert _finished(cat) == done

    # A run now adds to visit 3, whose per-visit file may still hold the copied rows.
    _write_run(cat, [_record(3, "R22_S12", 7.5)], config=AmpOffsetConfig(amp_edge_width=32))
    later = _snapshot(cat)
    assert len(later[("pedestals", True)]) == len(before[("pedestals", True)]) + 4
    compact_catalog(cat, visits_per_file=3)
    _assert_same(_snapshot(cat), later)
    assert not list((cat / "pedestals" / "_compacted").glob(".*.tmp"))
    for table in TABLES:
        assert visit_files(cat, table) == []


def test_compaction_killed_by_sigkill(history, tmp_path):
    cat = tmp_path / "cat"
    shutil.copytree(history, cat)
    before = _snapshot(cat)
    script = textwrap.dedent(f"""
        import os, signal
        from ampoffset_dask.catalog import compact, compact_catalog
        real, calls = compact._retire, []
        def retire(path):
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            calls.append(path)
            real(path)
        compact._retire = retire
        compact_catalog({str(cat)!r}, visits_per_file=4)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (cat / ".lock").exists()  # the dead process's lock, taken over below
    _assert_same(_snapshot(cat), before)
    compact_catalog(cat, visits_per_file=4)
    _assert_same(_snapshot(cat), before)
    assert sum(len(visit_files(cat, t)) for t in TABLES) == 0


def test_compaction_holds_the_catalog_lock(history, tmp_path):
    cat = tmp_path / "cat"
    shutil.copytree(history, cat)
    with CatalogWriter(cat) as w:
        w.open()
        with pytest.raises(CatalogBusyError, match="catalog in use by "):
            compact_catalog(cat)
        proc = cli("catalog", "compact", cat)  # the command, in this process
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "catalog in use by " in proc.stderr
    seen = []

    def progress(table, done, total):
        # a run started while compacting is refused
        with pytest.raises(CatalogBusyError, match="catalog in use by "):
            CatalogWriter(cat).open()
        seen.append((table, done, total))

    compact_catalog(cat, visits_per_file=4, progress=progress)
    assert seen == [(t, i, 2) for t in TABLES for i in (1, 2)]


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="no such catalog folder"):
        compact_catalog(tmp_path / "missing")
    with pytest.raises(InputError, match="not an ampoffset-dask catalog"):
        compact_catalog(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigError, match="visits_per_file=0"):
        compact_catalog(tmp_path, visits_per_file=0)
    assert compact_catalog(tmp_path).n_after == 0  # nothing to compact


def test_catalog_compact_command(history, tmp_path, capsys):
    from ampoffset_dask.cli import main

    cat = tmp_path / "cat"
    shutil.copytree(history, cat)
    assert main(["catalog", str(cat), "--json"]) == 0
    summary = capsys.readouterr().out
    assert main(["catalog", "compact", str(cat), "--visits-per-file", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"compacted {cat}: 22 -> 6 data files, ")
    assert main(["catalog", str(cat), "--json"]) == 0
    assert capsys.readouterr().out == summary  # the same summary from compacted files
    assert main(["catalog", "compact", str(cat), "--json"]) == 0  # nothing left to move
    assert json.loads(capsys.readouterr().out)["files_after"]["pedestals"] == 2
    assert main(["catalog", "compact", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope: no such catalog folder" in err
    with pytest.raises(SystemExit) as exc:
        main(["catalog", "squash", str(cat)])
    assert exc.value.code == 2 and "invalid choice: 'squash'" in capsys.readouterr().err


def test_summary_options_are_refused_by_compact_and_its_option_by_the_summary(history,
                                                                             tmp_path, capsys):
    """`catalog compact --visit 1` compacted every visit without a word (and `--table` was
    ignored); `--visits-per-file` without compact did nothing either."""
    from ampoffset_dask.cli import main

    cat = tmp_path / "cat"
    shutil.copytree(history, cat)
    before = sorted(p.relative_to(cat) for p in cat.rglob("*.parquet"))
    assert main(["catalog", "compact", str(cat), "--visit", "1", "--table", "pedestals"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--visit, --table: not for 'catalog compact', which moves every visit of every table")
    assert sorted(p.relative_to(cat) for p in cat.rglob("*.parquet")) == before  # untouched
    assert main(["catalog", str(cat), "--visits-per-file", "4"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--visits-per-file is for 'catalog compact'")


def test_process_resumes_a_compacted_catalog_as_before(tmp_path):
    """Real `process` runs: after compaction, resume skips exactly what it skipped before,
    and a later run's rows land in per-visit files beside the compacted ones."""
    from distributed import Client, LocalCluster

    from ampoffset_dask import process
    from ampoffset_dask.simulate import simulate_focal_plane

    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S11"],
                               visits=[1, 2, 3], scale=0.05, seed=3)
    first = [p for p in sim.paths if "_000003_" not in p.name]
    assert len(first) == 2
    cat = tmp_path / "cat"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        process(first, cat, client=client, progress=False)
        before = _snapshot(cat)
        done = _finished(cat)
        compact_catalog(cat)
        assert visit_files(cat, "pedestals") == [] and _finished(cat) == done == {
            (1, "R22_S11"), (2, "R22_S11")}
        summary = process(sim.paths, cat, client=client, progress=False)
    assert (summary.n_skipped, summary.n_submitted, summary.n_ok) == (2, 1, 1)
    assert [v for v, _ in visit_files(cat, "pedestals")] == [3]
    _assert_same(_snapshot(cat, visits=[1, 2]), before)
    assert len(read_catalog(cat, "pedestals", visits=[3])) == 16


def test_latest_rows_and_filters_match_the_rule(history, tmp_path):
    """The fast readers against the rule written out in pandas, with two superseded runs of
    one (visit, detector), before and after compaction."""
    cat = tmp_path / "cat"
    shutil.copytree(history, cat)
    _write_run(cat, [_record(5, "R22_S10", 3.0)], config=AmpOffsetConfig(amp_edge_width=32))

    def expected(table, **kw):
        det = read_catalog(cat, "detectors")
        rows = read_catalog(cat, table, all_rows=True)
        keep = rows.merge(det[["visit", "detector", "run_id"]], how="inner")
        if "visits" in kw:
            keep = keep[keep["visit"].isin(kw["visits"])]
        if "detectors" in kw:
            keep = keep[keep["detector"].isin(kw["detectors"])]
        return keep.reset_index(drop=True)

    for compacted in (False, True):
        if compacted:
            compact_catalog(cat, visits_per_file=2)
        for kw in ({}, {"visits": [5]}, {"detectors": ["R22_S10"]}):
            for table in ("pedestals", "interfaces"):
                got = read_catalog(cat, table, **kw)
                pd.testing.assert_frame_equal(got, expected(table, **kw))
                fast = read_catalog(cat, table, sort=False, format="arrow", **kw)
                assert fast.num_rows == len(got)
    cell = read_catalog(cat, "pedestals", visits=[5], detectors=["R22_S10"])
    assert list(cell["pedestal"]) == [3.0, 4.0, 5.0, 6.0]
    assert read_catalog(cat, "pedestals", visits=[5], detectors="R22_S10", all_rows=True)[
        "run_id"].nunique() == 3
