"""The distributed run as a service: real schedulers, workers and CLI processes on 127.0.0.1.

- A run stopped by Ctrl-C or SIGTERM records what it skipped and what it sent to the
  cluster, not only the rows it had recorded.
- A ``Client.restart()`` by another client of a shared scheduler cancels the run's tasks in
  flight: they are submitted again, not recorded as failed detectors.
- A worker running another ampoffset-dask version does not put its numbers in the catalog
  as ``ok`` rows; other package differences are reported and recorded.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pipeline.helpers import (
    SCALE,
    VISIT,
    dask_processes,
    journal_lines,
    signal_after_first_result,
    wait_for,
)
from run_shared import stop_processes

import ampoffset_dask
from ampoffset_dask import process, read_catalog


@pytest.fixture(scope="module")
def sim9(tmp_path_factory):
    """Nine tiny detectors of one visit (shared, read only)."""
    from run_shared import once_per_run

    from ampoffset_dask.simulate import simulate_focal_plane

    def make(folder):
        sim = simulate_focal_plane(folder / "v", "lsstcam", rafts="R22", visits=[VISIT],
                                   scale=SCALE, seed=11)
        return sorted(str(p) for p in sim.paths)

    return once_per_run(tmp_path_factory, "service-sim9", make)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopped_run_records_what_it_skipped_and_sent(sim9, scheduler, tmp_path, cli_env,
                                                      sig):
    cat = tmp_path / "cat"
    first = process(sim9[:3], cat, client=scheduler, progress=False)
    assert first.n_ok == 3
    proc = subprocess.Popen(
        ["ampoffset-dask", "run", *sim9, "--output", str(cat), "--scheduler", scheduler,
         "--max-in-flight", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env,
        preexec_fn=_default_sigint)
    out, err = signal_after_first_result(proc, cat, sig)
    assert proc.returncode in (130, 143), out + err
    run = read_catalog(cat, "runs").iloc[-1]
    assert run["status"] == "interrupted"
    assert run["n_skipped"] == 3  # was 0
    rows = read_catalog(cat, "detectors", all_rows=True)
    recorded = int((rows["run_id"] == run["run_id"]).sum())
    assert run[["n_ok", "n_flagged", "n_failed"]].sum() == recorded >= 1
    # every task sent is counted, those in flight when it stopped too (was: only the
    # recorded ones): at most the bound in flight and one result not yet recorded more
    assert recorded <= run["n_submitted"] <= recorded + 3
    assert run["n_submitted"] + run["n_skipped"] <= len(sim9)


def test_restart_by_another_client_resubmits_the_tasks(sim9, tmp_path):
    from distributed import Client

    cat = tmp_path / "cat"
    # workers with nannies, which Client.restart needs
    with dask_processes(tmp_path / "cluster", nanny=True) as (address, _, _):
        other = Client(address)
        try:
            other.wait_for_workers(2, timeout=60)
            restarted = []

            def restart():  # a notebook's "restart" on the shared scheduler, mid-run
                wait_for(lambda: journal_lines(cat) >= 1, 120, 0.01, "the first result")
                other.restart()
                restarted.append(True)

            thread = threading.Thread(target=restart)
            thread.start()
            summary = process(sim9, cat, client=address, progress=False, max_in_flight=4)
            thread.join(120)
        finally:
            other.close()
    assert restarted
    # before: the tasks in flight were failed rows "cancelled for reason: scheduler-restart"
    assert (summary.n_ok, summary.n_failed) == (9, 0), summary
    rows = read_catalog(cat, "detectors")
    assert len(rows) == 9 and set(rows["status"]) == {"ok"}
    assert read_catalog(cat, "runs").iloc[-1]["n_submitted"] == 9


def test_worker_of_another_version_is_not_recorded_as_ok(sim9, tmp_path):
    """A worker whose ampoffset-dask is another version (here 0.0.9, with a solver that
    gives other pedestals) joins the scheduler: before, its detectors were ``ok`` rows and
    the runs table named only the client's version."""
    from distributed import Client

    old = tmp_path / "old"
    shutil.copytree(Path(ampoffset_dask.__file__).parent, old / "ampoffset_dask",
                    ignore=shutil.ignore_patterns("__pycache__"))
    meta = old / "ampoffset_dask-0.0.9.dist-info"
    meta.mkdir()
    meta.joinpath("METADATA").write_text(
        "Metadata-Version: 2.1\nName: ampoffset-dask\nVersion: 0.0.9\n")
    solve = old / "ampoffset_dask" / "algorithm" / "solve.py"
    text = solve.read_text()
    assert "rcond=None)[0])" in text
    solve.write_text(text.replace("rcond=None)[0])", "rcond=None)[0]) + 0.5"))
    cat = tmp_path / "cat"
    with dask_processes(tmp_path / "cluster", n_workers=0) as (address, _, _):
        env = {**os.environ, "PYTHONPATH": str(old),
               "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        worker = subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--host", "127.0.0.1"], env=env, cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            with Client(address) as client:
                client.wait_for_workers(1, timeout=60)
                version = client.run(importlib.metadata.version, "ampoffset-dask")
                assert list(version.values()) == ["0.0.9"]
            summary = process(sim9[:2], cat, client=address, progress=False)
        finally:
            stop_processes([worker.pid])
            worker.wait(5)
    assert (summary.n_ok, summary.n_failed) == (0, 2), summary
    assert "ampoffset-dask 0.0.9 (here " in summary.notes[0]
    rows = read_catalog(cat, "detectors")
    assert set(rows["status"]) == {"failed"}
    assert rows["error"].str.contains("runs ampoffset-dask 0.0.9, not this client's").all()
    assert read_catalog(cat, "pedestals").empty  # no pedestals of the other version
    versions = json.loads(read_catalog(cat, "runs").iloc[-1]["versions"])
    assert versions["ampoffset-dask"] == ampoffset_dask.__version__
    assert list(versions["workers"].values()) == [{"ampoffset-dask": "0.0.9"}]


def test_force_measures_inputs_an_earlier_run_flagged_already_corrected(sim9, scheduler,
                                                                        tmp_path):
    """The "already corrected" flag says "use --force to process it anyway"; before, the
    forced re-run counted the flagged rows as done and measured nothing (exit 0)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sim9[:2]:
        shutil.copy(path, folder)
    assert process(folder, tmp_path / "a", client=scheduler, progress=False,
                   in_place=True).n_ok == 2
    cat = tmp_path / "cat"
    flagged = process(folder, cat, client=scheduler, progress=False)
    assert (flagged.n_flagged, flagged.n_ok) == (2, 0)
    forced = process(folder, cat, client=scheduler, progress=False, force=True)
    assert (forced.n_ok, forced.n_skipped, forced.n_submitted) == (2, 0, 2)
    rows = read_catalog(cat, "detectors")
    assert set(rows["status"]) == {"ok"} and rows["worker"].astype(bool).all()
    again = process(folder, cat, client=scheduler, progress=False, force=True)
    assert (again.n_skipped, again.n_submitted) == (2, 0)  # the forced rows resume


@pytest.mark.parametrize(("spec", "said"), [
    ("local:0", "at least one worker"),  # before: a cluster of no workers, a run waiting for ever
    ("local:abc", "use local or local:N"),  # before: ignored, a default-size cluster ran
    ("slurm:0", "at least one worker"),
])
def test_mistyped_worker_count_is_a_usage_error_before_the_catalog(sim9, tmp_path, cli_env,
                                                                   spec, said):
    cat = tmp_path / "cat"
    proc = subprocess.run(
        ["ampoffset-dask", "run", sim9[0], "--output", str(cat), "--scheduler", spec,
         "--no-progress"], capture_output=True, text=True, env=cli_env, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert said in proc.stderr and repr(spec) in proc.stderr
    assert not cat.exists()  # refused before the run was opened
    from ampoffset_dask.errors import ClusterError

    with pytest.raises(ClusterError, match=said):
        process(sim9[0], cat, client=spec, progress=False)
    assert not cat.exists()


def test_workers_joining_during_the_run_get_tasks(tmp_path):
    """A cluster whose workers join after the run started (gateway, jobqueue and Kubernetes
    clusters start that way): before, the bound on tasks in flight was computed once, from
    no workers (8), whatever joined later."""
    from distributed import Client

    from ampoffset_dask.simulate import simulate_focal_plane

    paths = simulate_focal_plane(tmp_path / "in", "lsstcam", rafts="R22", visits=[1, 2],
                                 scale=SCALE, seed=5).paths
    with dask_processes(tmp_path / "cluster", n_workers=0) as (address, _, _):
        done = []
        run = threading.Thread(target=lambda: done.append(
            process(paths, tmp_path / "cat", client=address, progress=False)))
        run.start()
        workers = [subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
             "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            for _ in range(3)]
        most = 0
        try:
            with Client(address) as watcher:
                while run.is_alive():
                    most = max(most, watcher.run_on_scheduler(
                        lambda dask_scheduler: sum(  # tasks of ampoffset runs it holds
                            1 for key in dask_scheduler.tasks
                            if str(key).startswith("ampoffset-"))))
                    time.sleep(0.02)
        finally:
            run.join(120)
            stop_processes([w.pid for w in workers])
    assert done and done[0].n_ok == 18
    assert most >= 11, most  # 4 per worker thread (was at most 8, and 9 while releasing)


def test_an_empty_input_folder_among_others_is_refused(sim9, tmp_path):
    """An input folder holding no FITS file (an unmounted volume, a night not yet copied):
    before, with other inputs given, it was skipped without a word (exit 0)."""
    from cli_helpers import cli

    empty = tmp_path / "night2"
    empty.mkdir()
    proc = cli("run", sim9[0], empty, "--output", tmp_path / "cat", "--scheduler",
               "tcp://127.0.0.1:9", "--no-progress")  # refused before any cluster
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{empty}: no FITS files in this folder" in proc.stderr
    assert not (tmp_path / "cat").exists()


START_THEN_TERM = """
import os, signal, threading, time

import psutil

from ampoffset_dask.pipeline.cluster import get_client


def stop(signum, frame):  # as the command line: SIGTERM stops it like Ctrl-C
    raise KeyboardInterrupt


def term_when_a_worker_spawns():
    while not psutil.Process().children():
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=term_when_a_worker_spawns, daemon=True).start()
    try:
        handle = get_client("local:1")
        print("started")
    except KeyboardInterrupt:
        print("interrupted")
"""


def test_sigterm_while_the_local_cluster_starts_is_clean(tmp_path, cli_env):
    """SIGTERM (or Ctrl-C) while the local cluster starts: before, the interrupted start
    left a cluster that dask's exit hook failed to close, printing "Exception ignored in
    atexit callback ... AssertionError: Status.init" after the command's message."""
    proc = subprocess.run([sys.executable, "-c", START_THEN_TERM], capture_output=True,
                          text=True, env=cli_env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["interrupted"], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def _workers_of(pid: int) -> list:
    """The local cluster's worker processes of CLI process ``pid`` (its spawned children,
    not multiprocessing's resource tracker)."""
    import psutil

    found = []
    for child in psutil.Process(pid).children():
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmd and "resource_tracker" not in cmd:
            found.append(child)
    return found


def _rss(process) -> int:
    import psutil

    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


@pytest.mark.parametrize("when", ["workers starting", "after a result"])
def test_ctrl_c_at_the_terminal_leaves_no_worker_tracebacks(sim9, tmp_path, cli_env, when):
    """A terminal's Ctrl-C signals the whole process group, the local cluster's workers
    too: before, each printed a KeyboardInterrupt traceback (30 lines) beside the one-line
    message, whether they were starting up or running tasks."""
    cat = tmp_path / "cat"
    proc = subprocess.Popen(
        # one detector at a time: the run outlives the first result by several detectors
        ["ampoffset-dask", "run", *sim9, "--output", str(cat), "--scheduler", "local:2",
         "--max-in-flight", "1", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env,
        preexec_fn=_default_sigint, start_new_session=True)
    workers = []
    try:
        if when == "workers starting":  # importing its modules (past 40 MB), not yet up
            wait_for(lambda: any(_rss(w) > 40e6 for w in _workers_of(proc.pid))
                     or proc.poll() is not None, 120, 0.005, "a worker process")
        else:
            wait_for(lambda: journal_lines(cat) >= 1 or proc.poll() is not None, 120, 0.01,
                     "the first result")
        workers = _workers_of(proc.pid)
        assert workers and proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)  # as the terminal sends it
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "CancelledError" not in err, err
    # the workers, which leave Ctrl-C to the command, are stopped with it
    wait_for(lambda: not any(w.is_running() for w in workers), 30, 0.05, "the workers to end")
