"""deploy/hpc: the dask-jobqueue SLURM config and the sbatch script.

The jobqueue config renders its batch script with dask_jobqueue.SLURMCluster(...).job_script().
The sbatch script runs for real on this machine with stand-ins for the two SLURM commands it
calls (`squeue` reporting the time left, `srun` starting N copies of the worker command): a
real scheduler and real workers on 127.0.0.1, and `ampoffset-dask run` through them.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from pathlib import Path

import dask
import pandas as pd
import psutil
import pytest
from cli_helpers import cli
from conftest import DEPLOY, load_yaml
from dask.utils import parse_bytes, parse_timedelta

HPC = DEPLOY / "hpc"

# SLURM stand-ins: `squeue -h -j ID -o %L` prints the time left; `srun --ntasks=N ... CMD`
# runs N copies of CMD with SLURM_PROCID set and forwards SIGTERM to them.
SQUEUE = '#!/usr/bin/env bash\necho "$FAKE_SLURM_TIME_LEFT"\n'
SRUN = """#!/usr/bin/env bash
n=1
while [[ "$1" == --* ]]; do
    case "$1" in --ntasks=*) n="${1#--ntasks=}" ;; esac
    shift
done
pids=()
for ((i = 0; i < n; i++)); do
    SLURM_PROCID=$i "$@" &
    pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
wait  # returns early when a signal arrives; then wait for the copies to exit
wait
"""


# dask-jobqueue stand-ins: `sbatch SCRIPT` copies the script (jobqueue deletes it right after
# submitting) and runs it in the background in its own session, printing the session id as
# the job id; `scancel ID` terminates that session; `squeue` reports nothing.
SBATCH = """#!/usr/bin/env bash
script="${@: -1}"
mkdir -p "$FAKE_SLURM_DIR"
cp "$script" "$FAKE_SLURM_DIR/job-$$.sh"
setsid bash "$FAKE_SLURM_DIR/job-$$.sh" >"$FAKE_SLURM_DIR/job-$$.out" 2>&1 </dev/null &
echo "Submitted batch job $!"
"""
SCANCEL = """#!/usr/bin/env bash
for id in "$@"; do kill -TERM -- "-$id" 2>/dev/null || kill -TERM "$id" 2>/dev/null; done
exit 0
"""


def slurm_config() -> dict:
    return load_yaml(HPC / "jobqueue.yaml")["jobqueue"]["slurm"]


def test_jobqueue_config_renders_the_expected_batch_script(tmp_path, monkeypatch):
    from dask_jobqueue import SLURMCluster

    monkeypatch.chdir(tmp_path)  # the cluster creates its relative log directory here

    conf = slurm_config()
    flat = {f"jobqueue.slurm.{key}": value for key, value in conf.items()}
    with dask.config.set(flat), SLURMCluster(
        scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"}
    ) as cluster:
        script = cluster.job_script()
        address = cluster.scheduler_address
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    directives = [line for line in lines if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH -J ampoffset-worker",
        "#SBATCH -e dask-logs/ampoffset-worker-%J.err",
        "#SBATCH -o dask-logs/ampoffset-worker-%J.out",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH -t 02:00:00",
    ]
    (command,) = [line for line in lines if "distributed.cli.dask_worker" in line]
    args = command.split()
    assert args[args.index("distributed.cli.dask_worker") + 1] == address

    def flag(name: str) -> str:
        return args[args.index(name) + 1]

    assert flag("--nthreads") == "1"
    assert flag("--nworkers") == "8"
    # 32 GiB per job over 8 single-threaded workers: the 4 GiB of every other deployment.
    assert parse_bytes(flag("--memory-limit")) == 4 * 2**30
    assert flag("--death-timeout") == "60"
    # Expanded by bash on the compute node; never an empty word (which would make the next
    # flag the directory).
    assert flag("--local-directory") == "${TMPDIR:-/tmp}"
    # Walltime-aware: the latest worker retirement (lifetime + stagger) precedes the walltime.
    h, m, s = (int(x) for x in conf["walltime"].split(":"))
    walltime = h * 3600 + m * 60 + s
    latest = parse_timedelta(flag("--lifetime")) + parse_timedelta(flag("--lifetime-stagger"))
    assert latest <= walltime - 300


def write_shims(folder: Path) -> None:
    folder.mkdir()
    for name, text in (("squeue", SQUEUE), ("srun", SRUN), ("sbatch", SBATCH),
                       ("scancel", SCANCEL)):
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def sbatch_env(tmp_path: Path, cli_env: dict, time_left: str) -> dict:
    shims = tmp_path / "shims"
    if not shims.exists():
        write_shims(shims)
    env = dict(cli_env)
    env.update(
        PATH=f"{shims}{os.pathsep}{env['PATH']}",
        SLURM_JOB_ID="4242",
        SLURM_NTASKS="2",
        SLURM_MEM_PER_CPU="1024",
        FAKE_SLURM_TIME_LEFT=time_left,
        AMPOFFSET_RUN_DIR=str(tmp_path / "run"),
        AMPOFFSET_HOST="127.0.0.1",
        AMPOFFSET_DASHBOARD="127.0.0.1:0",
        # no bokeh pages: ~1 s of CPU less for the scheduler and each worker
        AMPOFFSET_NO_DASHBOARD="1",
        TMPDIR=str(tmp_path),
    )
    return env


def simulate(out: Path) -> None:
    """Two small detectors of one visit (in this process: the input is not what is tested)."""
    sim = cli("simulate", "--detectors", "R22_S11,R22_S12", "--scale", "0.1", "--out", out)
    assert sim.returncode == 0, sim.stdout + sim.stderr


def test_sbatch_refuses_to_start_without_enough_walltime(tmp_path, cli_env):
    proc = subprocess.run(
        ["bash", str(HPC / "ampoffset.sbatch"), "in", "--output", "out"],
        env=sbatch_env(tmp_path, cli_env, "04:00"), capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert proc.returncode == 1
    assert "only 240s left in job 4242" in proc.stderr
    assert not (tmp_path / "run" / "scheduler.json").exists()


@pytest.mark.slow
def test_sbatch_runs_scheduler_workers_and_the_cli(tmp_path, cli_env):
    data = tmp_path / "visit"
    simulate(data)
    catalog = tmp_path / "catalog"
    proc = subprocess.run(
        ["bash", str(HPC / "ampoffset.sbatch"), str(data), "--output", str(catalog),
         "--no-progress"],
        env=sbatch_env(tmp_path, cli_env, "1-00:10:00"), capture_output=True, text=True,
        timeout=180, check=False,
    )
    run_dir = tmp_path / "run"
    logs = "".join(p.read_text() for p in run_dir.glob("*.log"))
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    # 1 day 10 min left, 300 s margin: stagger capped at 300 s, lifetime 86400 s, the CLI is
    # interrupted 150 s before the walltime.
    assert re.search(
        r"job 4242, 2 workers x 1 thread, memory limit 1024MiB, worker lifetime 86400s "
        r"\(stagger 300s\), run deadline 86850s, dashboards off", proc.stdout
    ), proc.stdout
    assert "ampoffset-dask run exited with 0" in proc.stdout
    # Both workers joined the scheduler started by the script.
    assert logs.count("Starting established connection") >= 2 or logs.count(
        "Register worker") >= 2, logs
    detectors = pd.read_parquet(catalog / "detectors")
    assert sorted(detectors["detector"]) == ["R22_S11", "R22_S12"]
    assert set(detectors["status"]) == {"ok"}
    assert len(pd.read_parquet(catalog / "pedestals")) == 2 * 16
    # Everything it started is gone (every process it started names the scheduler file).
    left = []
    for proc_ in psutil.process_iter(["pid", "cmdline"]):
        if str(run_dir / "scheduler.json") in " ".join(proc_.info["cmdline"] or []):
            left.append(proc_.info["pid"])
    assert left == []


@pytest.mark.slow
def test_cli_submits_jobqueue_workers_from_the_config(tmp_path, cli_env):
    # `ampoffset-dask run --scheduler slurm:2` with deploy/hpc/jobqueue.yaml as the dask
    # config: the CLI renders the job script and submits it; the script really starts the
    # workers (here 2 per job instead of 8, to fit this machine) and they process the visit.
    data, catalog = tmp_path / "visit", tmp_path / "catalog"
    env = sbatch_env(tmp_path, cli_env, "1:00:00")
    simulate(data)
    dask_config = tmp_path / "dask-config"
    dask_config.mkdir()
    (dask_config / "jobqueue.yaml").write_text((HPC / "jobqueue.yaml").read_text())
    env.update(
        DASK_CONFIG=str(dask_config), FAKE_SLURM_DIR=str(tmp_path / "jobs"),
        DASK_JOBQUEUE__SLURM__CORES="2", DASK_JOBQUEUE__SLURM__PROCESSES="2",
        DASK_JOBQUEUE__SLURM__MEMORY="4GiB", DASK_JOBQUEUE__SLURM__INTERFACE="lo",
        DASK_JOBQUEUE__SLURM__LOG_DIRECTORY=str(tmp_path / "dask-logs"),
        # the config's worker arguments, and no bokeh dashboards (~0.5 s of CPU per worker)
        DASK_JOBQUEUE__SLURM__WORKER_EXTRA_ARGS=repr(
            [*slurm_config()["worker-extra-args"], "--no-dashboard"]),
    )
    run = subprocess.run(
        ["ampoffset-dask", "run", str(data), "--output", str(catalog), "--scheduler",
         "slurm:2", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    jobs = tmp_path / "jobs"
    outputs = "".join(p.read_text() for p in jobs.glob("*.out"))
    assert run.returncode == 0, run.stdout + run.stderr + outputs
    (script,) = jobs.glob("*.sh")
    text = script.read_text()
    assert "#SBATCH -t 02:00:00" in text
    assert "--lifetime 110m --lifetime-stagger 5m --no-dashboard" in text
    assert "--nthreads 1 --memory-limit 2.00GiB --nworkers 2" in text
    assert outputs.count("Registered to:") == 2, outputs
    detectors = pd.read_parquet(catalog / "detectors")
    assert sorted(detectors["detector"]) == ["R22_S11", "R22_S12"]
    assert set(detectors["status"]) == {"ok"}
    # Closing the cluster cancelled the job: its script and workers exit.
    (job_id,) = re.findall(r"job-(\d+)\.sh", script.name)
    deadline = time.monotonic() + 60
    while any(str(script) in " ".join(p.info["cmdline"] or [])
              for p in psutil.process_iter(["cmdline"])):
        assert time.monotonic() < deadline, f"job {job_id} still running"
        time.sleep(0.5)


def test_sbatch_directives_give_the_jobqueue_worker_shape():
    # One single-threaded task per worker, --mem-per-cpu equal to the jobqueue per-worker limit.
    directives = dict(
        line[len("#SBATCH "):].split("=", 1)
        for line in (HPC / "ampoffset.sbatch").read_text().splitlines()
        if line.startswith("#SBATCH --")
    )
    conf = slurm_config()
    assert directives["--cpus-per-task"] == "1"
    per_worker = parse_bytes(conf["memory"]) / conf["processes"]
    assert parse_bytes(directives["--mem-per-cpu"] + "iB") == per_worker == 4 * 2**30
    assert directives["--time"] == conf["walltime"]
