"""Issue 10 item 10: errors and exit codes.

User mistakes found at planning exit 2 before any cluster is contacted, with one message
(the runs point at a port where no scheduler listens: contacting it would exit 3).
Environment failures are classified; SIGTERM behaves like Ctrl-C; a lost scheduler is exit 3;
a failed image write keeps the measurement; partial outputs of a killed worker are removed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from cli_helpers import cli
from pipeline.helpers import VISIT, journal_lines, signal_after_first_result, wait_for

from ampoffset_dask import read_catalog
from ampoffset_dask.cli import main

NOWHERE = "tcp://127.0.0.1:9"  # nothing listens here


def one_error(capsys, code, expected):
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err  # printed once
    for text in expected:
        assert text in lines[0], err
    return lines[0]


def test_planning_mistakes_exit_2_before_any_cluster(sim4, tmp_path, capsys):
    base = ["run", str(sim4[0]), "--output", str(tmp_path / "cat"), "--scheduler", NOWHERE,
            "--no-progress"]
    handler = signal.getsignal(signal.SIGTERM)
    one_error(capsys, main([*base, "--camera", "nosuchcam"]), ["nosuchcam"])
    one_error(capsys, main([*base, "--camera", str(tmp_path / "missing.json")]),
              ["missing.json"])
    one_error(capsys, main([*base, "--set", "ampEdgeWidth=500"]),
              ["ampEdgeWidth=500", "R22_S11"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("ampEdgeWidth: [1,\n  2\nfoo: : bar\n")
    one_error(capsys, main([*base, "--config", str(bad)]), [str(bad), "line 3", "YAML"])
    camera = tmp_path / "cam.json"
    camera.write_text(json.dumps({"instrument": "X", "detectors": [{"name": "D"}]}))
    one_error(capsys, main([*base, "--camera", str(camera)]), [str(camera), "amp_layouts"])
    notcat = tmp_path / "notcat"
    notcat.mkdir()
    one_error(capsys, main(["catalog", str(notcat)]), [str(notcat), "not an ampoffset"])
    assert signal.getsignal(signal.SIGTERM) is handler  # main() put its handler back


@pytest.mark.slow
def test_write_failure_keeps_the_measurement_and_is_not_retried(sim4, scheduler, tmp_path):
    out = tmp_path / "out"
    blocked = out / str(VISIT) / "R22_S11" / sim4[0].name
    blocked.mkdir(parents=True)  # a directory where the corrected file should go
    stale = blocked.parent.parent / "R22_S12" / f".{sim4[1].name}.0123456789ab.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial file of a killed worker")
    proc = cli("run", *sim4[:2], "--output", tmp_path / "cat", "--output-images", out,
               "--scheduler", scheduler, "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not stale.exists()  # removed by the next run
    rows = read_catalog(tmp_path / "cat", "detectors").set_index("detector")
    assert rows.loc["R22_S11", "status"] == "flagged"
    assert "corrected image not written" in rows.loc["R22_S11", "error"]
    assert rows.loc["R22_S11", "attempts"] == 1  # one read, one write: no retries
    assert rows.loc["R22_S12", "status"] == "ok"
    ped = read_catalog(tmp_path / "cat", "pedestals")
    assert (ped["detector"] == "R22_S11").sum() == 16  # the measurement is recorded


@pytest.fixture(scope="module")
def sim9(tmp_path_factory):
    """Nine tiny detectors: with one task in flight a run takes several seconds."""
    from pipeline.helpers import SCALE
    from run_shared import once_per_run

    from ampoffset_dask.simulate import simulate_focal_plane

    def make(folder):  # once per run: the -n processes share the files (read only)
        sim = simulate_focal_plane(folder / "v", "lsstcam", rafts="R22", visits=[VISIT],
                                   scale=SCALE, seed=9)
        return [str(p) for p in sim.paths]

    return once_per_run(tmp_path_factory, "sim9", make)


def _slow_run(paths, tmp_path, address, env):
    return subprocess.Popen(
        ["ampoffset-dask", "run", *paths, "--output", str(tmp_path / "cat"),
         "--scheduler", address, "--max-in-flight", "1", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # A shell's background jobs inherit SIGINT ignored; a terminal's Ctrl-C reaches a
        # foreground program with the default disposition, which is what is tested here.
        preexec_fn=_default_sigint)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "said"), [
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),  # what SLURM and Kubernetes send
    (signal.SIGINT, 130, "interrupted; what finished is in the catalog, run again to "
                         "resume"),  # Ctrl-C
])
def test_sigterm_is_like_ctrl_c(sim9, scheduler, tmp_path, cli_env, sig, code, said):
    proc = _slow_run(sim9, tmp_path, scheduler, cli_env)
    out, err = signal_after_first_result(proc, tmp_path / "cat", sig)
    assert proc.returncode == code, out + err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and said in lines[0], err  # one line, no dask noise
    runs = read_catalog(tmp_path / "cat", "runs")
    assert runs["status"].iloc[-1] == "interrupted"
    # its counts say what it recorded before it stopped
    recorded = read_catalog(tmp_path / "cat", "detectors")
    assert runs[["n_ok", "n_flagged", "n_failed"]].iloc[-1].sum() == len(recorded) >= 1
    # what was done is kept (journaled) and the next run resumes it
    again = cli("run", *sim9, "--output", tmp_path / "cat", "--scheduler", scheduler,
                "--no-progress")
    assert again.returncode == 0, again.stdout + again.stderr
    skipped = int(again.stdout.split("skipped ")[1].split()[0].rstrip(",)"))
    assert 1 <= skipped < len(sim9), again.stdout
    assert len(read_catalog(tmp_path / "cat", "detectors")) == len(sim9)


@pytest.mark.slow
def test_lost_scheduler_is_exit_3(sim9, tmp_path, cli_env):
    sfile = tmp_path / "scheduler.json"
    log = open(tmp_path / "cluster.log", "w")
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(sfile)], stdout=log,
        stderr=subprocess.STDOUT, env=cli_env, start_new_session=True)
    worker = None
    try:
        wait_for(lambda: sfile.exists() and sfile.stat().st_size > 0, 60, 0.05, "scheduler")
        address = json.loads(sfile.read_text())["address"]
        worker = subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--host", "127.0.0.1"], stdout=log,
            stderr=subprocess.STDOUT, env=cli_env, start_new_session=True)
        # give up on the lost scheduler after 3 s instead of the default 30 s
        env = {**cli_env, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s",
               "DASK_AMPOFFSET__CONNECT_TIMEOUT": "3s"}
        proc = _slow_run(sim9, tmp_path, address, env)
        wait_for(lambda: journal_lines(tmp_path / "cat") >= 1 or proc.poll() is not None,
                 120, 0.01, "the first result")
        scheduler.kill()
        out, err = proc.communicate(timeout=240)
    finally:
        for p in (worker, scheduler):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.wait()
        log.close()
    assert proc.returncode == 3, out + err
    # one line from us (distributed's client may log its own reconnection errors before it)
    ours = [ln for ln in err.splitlines() if ln.startswith("ampoffset-dask run: error:")]
    assert len(ours) == 1 and "lost the Dask scheduler" in ours[0], err


@pytest.mark.slow
def test_a_run_that_loses_every_worker_says_so(sim9, tmp_path, cli_env):
    from pipeline.helpers import dask_processes, stop_processes

    env = {**cli_env, "DASK_AMPOFFSET__WORKER_WATCH_INTERVAL": "0.2s"}
    with dask_processes(tmp_path / "cluster", n_workers=1) as (address, workers, _):
        proc = _slow_run(sim9, tmp_path, address, env)
        late = None
        try:
            wait_for(lambda: journal_lines(tmp_path / "cat") >= 1 or proc.poll() is not None,
                     120, 0.01, "the first result")
            workers[0].kill()
            workers[0].wait()
            time.sleep(2.0)  # ten checks without a worker: the run says so once
            assert proc.poll() is None, proc.communicate()
            late = subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
                 "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env,
                start_new_session=True)
            out, err = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
            if late is not None:
                stop_processes([late.pid])
    assert proc.returncode == 0, out + err
    assert err.count(f"the scheduler at {address} has no workers left") == 1, err
    assert f"a worker joined the scheduler at {address}: the run goes on" in err, err
    rows = read_catalog(tmp_path / "cat", "detectors")
    assert sorted(rows["status"]) == ["ok"] * len(sim9)
