"""Catalog durability and consistency, from a QA report (/tmp/qa/catalog/REPORT.md).

Each test follows one finding: the latest row decided by the writer's clock, not a worker's
(1); the dask reader on a compacted catalog a later run added to (3); reads racing a
compaction (4); damaged Parquet files (5); a killed run's counts in the runs table (6); a full
disk or file-size limit (7); compaction of a read-only catalog (8); results of a killed run
still only in its journal (10).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from cli_helpers import cli, cli_subprocess, entry_point

from ampoffset_dask import AmpOffsetConfig, InputError
from ampoffset_dask.catalog import CatalogWriter, DetectorResult, compact_catalog, read_catalog
from ampoffset_dask.catalog import read as read_module
from ampoffset_dask.catalog.read import compacted_files, visit_files

AMPS = ["C10", "C11", "C12", "C13"]
DETECTORS = ["R22_S10", "R22_S11", "R22_S12"]
TABLES = ("detectors", "pedestals", "interfaces")
WORKER = "tcp://127.0.0.1:40000"
OTHER = AmpOffsetConfig(amp_edge_width=8)


def _result(visit: int, detector: str, value: float, *, worker: str = WORKER,
            finished_at: float | None = None) -> DetectorResult:
    """A measured detector's record, as a worker returns it (4 amps, 3 interfaces)."""
    interfaces = [
        {"id": f"{AMPS[i]}-{AMPS[i + 1]}", "amp_a": AMPS[i], "amp_b": AMPS[i + 1], "side": 1,
         "length": 100, "offset_raw": value, "offset": value, "good_frac": 1.0,
         "min_frac_fail": False, "max_offset_fail": False}
        for i in range(3)
    ]
    record = DetectorResult(visit=visit, detector=detector, status="ok", detector_id=94,
                            input=f"{visit}_{detector}.fits", amp_names=AMPS,
                            pedestals=[value + i for i in range(4)], interfaces=interfaces,
                            worker=worker)
    if finished_at is not None:
        record.finished_at = finished_at
    return record


def _failure(visit: int, detector: str) -> DetectorResult:
    """An input that failed planning: recorded without a worker."""
    return DetectorResult.failure("InputError: unreadable header", visit=visit,
                                  detector=detector, input=f"{visit}_{detector}.fits")


def _run(cat: Path, results, config=None, new_run: bool = False) -> str:
    with CatalogWriter(cat) as w:
        run_id = w.start_run(config=config or AmpOffsetConfig(), inputs=[], new_run=new_run)
        for r in results:
            w.add(r)
        w.finish_run()
    return run_id


def _killed_writer(cat: Path, body: str) -> None:
    """Run ``body`` in a writer process (``w``, the helpers of this module at hand) that is
    then killed with SIGKILL."""
    here = os.path.dirname(__file__)
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        sys.path[:0] = [{here!r}, {os.path.dirname(here)!r}]
        from test_durability_qa import _failure, _result, DETECTORS, OTHER
        from ampoffset_dask import AmpOffsetConfig
        from ampoffset_dask.catalog import CatalogWriter
        w = CatalogWriter({str(cat)!r}, flush_interval=1e9)
    """) + textwrap.dedent(body) + "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _sorted(df: pd.DataFrame, table: str) -> pd.DataFrame:
    keys = {"detectors": ["visit", "detector", "run_id"],
            "pedestals": ["visit", "detector", "run_id", "amp_index"],
            "interfaces": ["visit", "detector", "run_id", "interface_id"]}[table]
    return df.sort_values(keys).reset_index(drop=True)


# -- 1: the latest row is the one the writer recorded last -----------------------------------
def test_a_worker_clock_ahead_does_not_keep_an_old_run_current(tmp_path):
    """Run 1's worker clock is an hour ahead; run 2 (another config) measures again: run
    2's rows are current, a resume with its config skips them, finished_at is kept."""
    cat = tmp_path / "cat"
    run1 = _run(cat, [_result(1, d, 1.0, finished_at=time.time() + 3600) for d in DETECTORS])
    run2 = _run(cat, [_result(1, d, 2.0) for d in DETECTORS], config=OTHER, new_run=True)
    for table in TABLES:
        assert set(read_catalog(cat, table)["run_id"]) == {run2}, table
    assert read_catalog(cat, "pedestals")["pedestal"].tolist()[:4] == [2.0, 3.0, 4.0, 5.0]
    assert set(read_catalog(cat, "detectors", format="dask").compute()["run_id"]) == {run2}
    with CatalogWriter(cat) as w:
        w.open()
        assert w.finished(OTHER) == {(1, d) for d in DETECTORS}
    history = read_catalog(cat, "detectors", all_rows=True)
    first, second = (history[history["run_id"] == r] for r in (run1, run2))
    # the worker's times are kept as they were, and decided nothing
    assert first["finished_at"].min() > second["finished_at"].max()
    assert first["recorded_at"].max() < second["recorded_at"].min()


def test_replayed_results_keep_the_writers_order_and_its_clock_going_back(tmp_path,
                                                                          monkeypatch):
    """A run killed with results only in its journal, measured by workers whose clock is an
    hour behind: replayed, its rows are current, stamped when its writer recorded them. The
    next run's writer clock is an hour behind too: its start still comes after."""
    cat = tmp_path / "cat"
    run1 = _run(cat, [_result(1, d, 1.0) for d in DETECTORS])
    _killed_writer(cat, """
        w.start_run(config=OTHER, inputs=[], new_run=True)
        w.expect(1, DETECTORS + ["R22_S22"])  # one never arrives: the visit is not written
        for d in DETECTORS:
            w.add(_result(1, d, 2.0, finished_at=time.time() - 3600))
    """)
    (journal,) = (cat / "_journal").glob("*.jsonl")
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    stamps = sorted(line["recorded_at"] for line in lines)
    assert len(stamps) == 3 and stamps[0] < stamps[1] < stamps[2]
    run2 = journal.stem
    assert set(read_catalog(cat, "detectors")["run_id"]) == {run1}  # not replayed yet

    from ampoffset_dask.catalog import writer as writer_module

    back = writer_module._now() - pd.Timedelta(hours=1).to_pytimedelta()
    monkeypatch.setattr(writer_module, "_now", lambda: back)
    with CatalogWriter(cat) as w:  # replays run 2's journal, then starts run 3
        w.start_run(config=OTHER, inputs=[])
        assert w.finished() == {(1, d) for d in DETECTORS}
        w.finish_run()
    runs = read_catalog(cat, "runs")
    assert runs["started"].is_monotonic_increasing and len(runs) == 3
    det = read_catalog(cat, "detectors")
    assert set(det["run_id"]) == {run2}
    recorded = sorted(int(t.value // 1000) for t in det["recorded_at"])
    assert recorded == stamps
    assert (det["recorded_at"] > runs.set_index("run_id").loc[run2, "started"]).all()
    assert set(read_catalog(cat, "pedestals")["run_id"]) == {run2}


def test_catalogs_written_before_recorded_at_still_read_in_run_order(tmp_path):
    """Files without the recorded_at column (written by an earlier version) read, with the
    column null; runs are ordered by their start in the runs table, not by worker clocks."""
    cat = tmp_path / "cat"
    _run(cat, [_result(1, d, 1.0, finished_at=time.time() + 3600) for d in DETECTORS])
    run2 = _run(cat, [_result(1, d, 2.0) for d in DETECTORS[:2]], config=OTHER,
                new_run=True)
    for path in (cat / "detectors").rglob("*.parquet"):
        table = pq.read_table(path)
        if "recorded_at" in table.column_names:
            table = table.drop_columns(["recorded_at"])
        pq.write_table(table, path)
    det = read_catalog(cat, "detectors")
    assert det["recorded_at"].isna().all()
    assert dict(zip(det["detector"], det["run_id"] == run2, strict=True)) == {
        "R22_S10": True, "R22_S11": True, "R22_S12": False}
    assert len(read_catalog(cat, "pedestals")) == 12
    assert len(read_catalog(cat, "detectors", all_rows=True)) == 5


# -- 3: the dask reader on a compacted catalog that a later run added to ----------------------
def test_dask_reader_on_a_compacted_catalog_with_later_runs(tmp_path):
    cat = tmp_path / "cat"
    _run(cat, [_result(1, d, 1.0) for d in DETECTORS[:2]])
    compact_catalog(cat)
    _run(cat, [_result(1, DETECTORS[2], 2.0), _result(2, DETECTORS[0], 3.0)])
    assert compacted_files(cat, "pedestals") and visit_files(cat, "pedestals")
    for table in TABLES:
        for all_rows in (False, True):
            want = read_catalog(cat, table, all_rows=all_rows)
            got = read_catalog(cat, table, format="dask", all_rows=all_rows).compute()
            assert len(got) == len(want) > 0
            pd.testing.assert_frame_equal(_sorted(got[want.columns], table),
                                          _sorted(want, table), check_dtype=False)


# -- 4: reads racing a compaction ------------------------------------------------------------
@pytest.fixture
def history(tmp_path):
    """Eight visits, two runs (the second supersedes two detectors of visit 3)."""
    cat = tmp_path / "cat"
    _run(cat, [_result(v, d, v + i) for v in range(1, 9) for i, d in enumerate(DETECTORS)])
    _run(cat, [_result(3, d, -1.0) for d in DETECTORS[:2]], config=OTHER, new_run=True)
    return cat


@pytest.mark.parametrize("when", ["before the per-visit listing", "after the listing"])
@pytest.mark.parametrize("table, all_rows", [("detectors", False), ("detectors", True),
                                             ("pedestals", False), ("interfaces", True)])
def test_a_read_racing_a_compaction_is_neither_short_nor_doubled(history, monkeypatch, caplog,
                                                                 when, table, all_rows):
    """A compaction moves every file between a read's listings, or between its listing and
    the opening of the files: the read returns the same rows as before."""
    before = read_catalog(history, table, all_rows=all_rows)
    name = "visit_files" if when.startswith("before") else "_dataset"
    real = getattr(read_module, name)
    raced = []

    def racing(*args, **kwargs):
        if raced:
            return real(*args, **kwargs)
        raced.append(True)
        if name == "visit_files":
            compact_catalog(history, visits_per_file=3)
            return real(*args, **kwargs)
        listed = real(*args, **kwargs)  # names the files; they are opened later
        compact_catalog(history, visits_per_file=3)
        return listed

    monkeypatch.setattr(read_module, name, racing)
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask"):
        after = read_catalog(history, table, all_rows=all_rows)
    assert raced and visit_files(history, table) == [] and compacted_files(history, table)
    pd.testing.assert_frame_equal(after, before)
    assert "kept changing" not in caplog.text  # moved rows are not a run writing


# -- 5: damaged Parquet files ----------------------------------------------------------------
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("damage", ["truncated pedestals", "empty detectors",
                                    "garbage runs"])
def test_a_damaged_file_is_an_input_error_naming_it(history, damage):
    if damage == "truncated pedestals":
        bad = history / "pedestals" / "visit=2" / "part-0.parquet"
        _truncate(bad)
    elif damage == "empty detectors":
        bad = history / "detectors" / "visit=3" / "part-0.parquet"
        bad.write_bytes(b"")
    else:
        bad = history / "runs" / "part-0.parquet"
        bad.write_bytes(b"garbage\n")
    table = bad.parent.parent.name if damage != "garbage runs" else "runs"
    with pytest.raises(InputError, match="cannot read this catalog file") as exc:
        read_catalog(history, table)
    assert str(bad) in str(exc.value) and "restore it from a backup" in str(exc.value)
    # resuming must not count what it cannot read as done
    with pytest.raises(InputError, match=str(bad)), CatalogWriter(history) as w:
        w.check_config(OTHER)
        w.finished()
    # compaction refuses before it moves anything
    files = {t: visit_files(history, t) for t in TABLES}
    with pytest.raises(InputError, match=str(bad)):
        compact_catalog(history)
    assert {t: visit_files(history, t) for t in TABLES} == files
    assert not any(compacted_files(history, t) for t in TABLES)


@pytest.fixture
def simulated(tmp_path):
    from ampoffset_dask.simulate import simulate_focal_plane

    sim = tmp_path / "sim"
    simulate_focal_plane(sim, "lsstcam", detectors=["R22_S11", "R22_S12"], visits=[1, 2],
                         scale=0.05, seed=3)
    return sim


def test_cli_on_a_truncated_file_exits_2_and_the_way_out_works(tmp_path, simulated,
                                                               shared_scheduler):
    cat = tmp_path / "cat"
    run = ("run", simulated, "--output", cat, "--scheduler", shared_scheduler, "--no-progress")
    assert cli(*run).returncode == 0
    bad = cat / "pedestals" / "visit=2" / "part-0.parquet"
    _truncate(bad)
    for args in (run, ("catalog", cat), ("catalog", "compact", cat), (*run, "--new-run")):
        proc = cli_subprocess(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert str(bad) in proc.stderr and "cannot read this catalog file" in proc.stderr
        assert "internal error" not in proc.stderr
        assert f"move what holds rows of visit 2 aside ({cat}/detectors/visit=2" in proc.stderr
        if args == run:  # refused before anything was recorded or moved
            assert len(read_catalog(cat, "runs")) == 1
    assert not any(compacted_files(cat, t) for t in TABLES)
    # the way out the message gives: move the visit aside and run again
    aside = tmp_path / "aside"
    for table in TABLES:
        (aside / table).mkdir(parents=True)
        shutil.move(cat / table / "visit=2", aside / table)
    proc = cli(*run)
    assert proc.returncode == 0, proc.stderr
    assert "ok 2, flagged 0, failed 0, skipped 2" in proc.stdout
    assert len(read_catalog(cat, "detectors")) == 4
    assert len(read_catalog(cat, "pedestals")) == 4 * 16


# -- 6 and 10: a killed run: its counts, and its results still in the journal -----------------
@pytest.fixture
def killed(tmp_path):
    """A run killed with visit 1 written (a planning failure and two measured detectors) and
    two results of visit 2 only in its journal."""
    cat = tmp_path / "cat"
    _killed_writer(cat, """
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.expect(1, DETECTORS)
        w.expect(2, DETECTORS)
        w.add(_failure(1, DETECTORS[0]))
        for d in DETECTORS[1:]:
            w.add(_result(1, d, 1.0))
        for d in DETECTORS[:2]:
            w.add(_result(2, d, 2.0))
    """)
    return cat


def test_a_killed_runs_record_gets_the_counts_of_what_was_recovered(killed):
    (journal,) = (killed / "_journal").glob("*.jsonl")
    assert read_catalog(killed, "runs")["status"].tolist() == ["running"]
    with CatalogWriter(killed) as w:
        w.open()  # replays the journal
    runs = read_catalog(killed, "runs")
    det = read_catalog(killed, "detectors", all_rows=True)
    assert len(det) == 5 and set(det["run_id"]) == {journal.stem}
    row = runs.iloc[0]
    assert (row.status, row.n_ok, row.n_flagged, row.n_failed, row.n_submitted) == (
        "interrupted", 4, 0, 1, 4)


def test_an_interrupted_run_records_what_it_submitted(tmp_path):
    """SIGTERM and Ctrl-C stop a run with KeyboardInterrupt: the run's record counts the
    results measured on workers as submitted, not 0."""
    cat = tmp_path / "cat"
    with pytest.raises(KeyboardInterrupt), CatalogWriter(cat) as w:
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.add(_failure(1, DETECTORS[0]))
        for d in DETECTORS[1:]:
            w.add(_result(1, d, 1.0))
        raise KeyboardInterrupt
    row = read_catalog(cat, "runs").iloc[0]
    assert (row.status, row.n_ok, row.n_failed, row.n_submitted) == ("interrupted", 2, 1, 2)


def test_results_only_in_a_killed_runs_journal_are_announced(killed, caplog):
    (journal,) = (killed / "_journal").glob("*.jsonl")
    run_id = journal.stem
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask"):
        det = read_catalog(killed, "detectors")
    assert len(det) == 3  # visit 1 only: visit 2's results wait in the journal
    text = caplog.text
    assert str(killed) in text and run_id in text and "2 of its results" in text
    assert f"ampoffset-dask catalog compact {killed}" in text

    proc = cli_subprocess("catalog", killed)
    assert proc.returncode == 0, proc.stderr
    assert f"pending     run {run_id} did not finish" in proc.stdout
    assert "2 result(s) only in its journal" in proc.stdout
    summary = json.loads(cli_subprocess("catalog", killed, "--json").stdout)
    assert summary["pending"] == [{"run_id": run_id, "results": 2, "journal": str(journal)}]

    # recovering them (the way the message says) empties the announcement
    assert cli_subprocess("catalog", "compact", killed).returncode == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask"):
        assert len(read_catalog(killed, "detectors")) == 5
    assert "journal" not in caplog.text
    assert "pending" not in cli_subprocess("catalog", killed).stdout


def test_results_already_in_the_tables_are_not_announced_as_pending(tmp_path, caplog):
    """A run's journal is emptied only once every visit begun is written: killed with
    visit 1 written and visit 2 begun before it, the journal also holds visit 1's three
    results, which were counted as 'only in its journal' (5, where 2 are)."""
    cat = tmp_path / "cat"
    _killed_writer(cat, """
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.expect(1, DETECTORS)
        w.expect(2, DETECTORS)
        w.add(_result(2, DETECTORS[0], 2.0))
        w.add(_failure(1, DETECTORS[0]))
        for d in DETECTORS[1:]:
            w.add(_result(1, d, 1.0))
        w.add(_result(2, DETECTORS[1], 2.0))
    """)
    (journal,) = (cat / "_journal").glob("*.jsonl")
    assert len(journal.read_text().splitlines()) == 5
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask"):
        assert len(read_catalog(cat, "detectors")) == 3  # visit 1
    assert "2 of its results are only in its journal" in caplog.text
    summary = json.loads(cli_subprocess("catalog", cat, "--json").stdout)
    assert [p["results"] for p in summary["pending"]] == [2]
    assert cli_subprocess("catalog", "compact", cat).returncode == 0
    assert len(read_catalog(cat, "detectors")) == 5  # what the count promised: 3 + 2


# -- 7: a file-size limit (as a full disk) ---------------------------------------------------
def test_a_write_past_the_file_size_limit_names_the_file_and_loses_nothing(tmp_path,
                                                                          shared_scheduler):
    from ampoffset_dask.simulate import simulate_focal_plane

    sim = tmp_path / "sim"
    simulate_focal_plane(sim, "lsstcam", rafts=["R22"], visits=[1], scale=0.05, seed=5)
    ref = tmp_path / "ref"
    assert cli("run", sim, "--output", ref, "--scheduler", shared_scheduler,
               "--no-progress").returncode == 0
    # every Parquet file fits under the limit; the journal of the visit's 9 results does not
    limit = max(p.stat().st_size for p in ref.rglob("*.parquet")) + 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cat = tmp_path / "cat"
    args = ["run", sim, "--output", cat, "--scheduler", shared_scheduler, "--no-progress"]
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep
               + os.environ.get("PATH", ""))
    proc = subprocess.run([entry_point(), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, preexec_fn=small_files)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "internal error" not in proc.stderr
    assert f"cannot write the catalog file {cat}/_journal/" in proc.stderr
    assert "File too large" in proc.stderr and "Nothing recorded before is lost" in proc.stderr
    recorded = read_catalog(cat, "detectors")
    run = read_catalog(cat, "runs").iloc[0]
    assert run.status == "failed" and run.n_ok == len(recorded) >= 1
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"skipped {len(recorded)}" in again.stdout
    assert len(read_catalog(cat, "detectors")) == 9
    assert len(read_catalog(cat, "pedestals")) == 9 * 16


# -- 8: compacting a read-only catalog -------------------------------------------------------
def _read_only_compact(history) -> tuple[subprocess.CompletedProcess, str]:
    """``catalog compact`` on the catalog made read-only: by permissions for a user, by a
    read-only bind mount in a private mount namespace for root (permissions do not stop it)."""
    if os.geteuid() != 0:
        paths = [history, *history.rglob("*")]
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            return cli("catalog", "compact", str(history)), "Permission denied"
        finally:
            for p in reversed(paths):
                p.chmod(modes[p])
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("root without a private mount namespace (unshare): no way to make the "
                    "catalog read-only for root")
    script = (f"mount --bind {history} {history} && "
              f"mount -o remount,ro,bind {history} && "
              f"exec {entry_point()} catalog compact {history}")
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=120), "Read-only file system"


def test_compacting_a_read_only_catalog_is_a_clear_error(history):
    proc, reason = _read_only_compact(history)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot write the catalog file {history}/.lock: {reason}" in proc.stderr
    assert "internal error" not in proc.stderr
    assert not any(compacted_files(history, t) for t in TABLES)


def test_a_killed_run_keeps_the_skipped_count_it_saved(tmp_path):
    """A resumed run saves what it skipped as soon as planning knows it: killed (SIGKILL)
    later, its recovered record says so, beside the counts of the rows it left."""
    cat = tmp_path / "cat"
    _run(cat, [_result(1, d, 1.0) for d in DETECTORS])
    _killed_writer(cat, """
        w.start_run(config=AmpOffsetConfig(), inputs=[])
        w.annotate_run(n_skipped=3)
        w.save_run()
        w.add(_result(2, DETECTORS[0], 2.0))
    """)
    with CatalogWriter(cat) as w:
        w.open()  # recovers the killed run
    runs = read_catalog(cat, "runs").sort_values("started")
    killed = runs.iloc[-1]
    assert killed.status == "interrupted"
    assert (killed.n_skipped, killed.n_ok) == (3, 1)
