"""deploy/hpc/ampoffset.sbatch and the time left in the job, as ``squeue -o %L`` prints it.

The script runs for real with stand-ins, first on PATH, for the commands it starts: `squeue`
prints the time left it is given, `dask scheduler` writes its scheduler file, and `srun`,
`timeout` and `ampoffset-dask` record their arguments (`timeout` then runs its command), so
that the flags the workers and the CLI get are read back. The run through real processes is
tests/deploy/test_hpc.py's.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import DEPLOY

SBATCH = DEPLOY / "hpc" / "ampoffset.sbatch"

# one line per call, written at once (stand-ins run concurrently): the command's name and
# its arguments, shell-quoted
RECORD = ('line="$(basename "$0")$(printf " %q" "$@")"\n'
          'printf "%s\\n" "$line" >>"$STUB_LOG"\n')
STUBS = {
    "squeue": '#!/usr/bin/env bash\necho "$FAKE_SLURM_TIME_LEFT"\n',
    # `dask scheduler ... --scheduler-file FILE`: write FILE; `dask worker`: nothing to do
    "dask": "#!/usr/bin/env bash\n" + RECORD + """
while (( $# )); do
    [[ "$1" == --scheduler-file && "$2" != "" ]] && file="$2"
    shift
done
[[ -n "${file:-}" && ! -s "$file" ]] && echo '{"address": "tcp://127.0.0.1:1"}' >"$file"
exit 0
""",
    "srun": "#!/usr/bin/env bash\n" + RECORD,
    # `timeout --signal=INT --kill-after=60 SECONDS CMD...`
    "timeout": "#!/usr/bin/env bash\n" + RECORD + 'shift 3\nexec "$@"\n',
    # runs while the workers run: ends once srun (started in the background) has recorded
    "ampoffset-dask": "#!/usr/bin/env bash\n" + RECORD + """
for _ in $(seq 200); do
    grep -q '^srun ' "$STUB_LOG" && break
    sleep 0.05
done
exit "${FAKE_RUN_STATUS:-0}"
""",
}


def run_sbatch(tmp_path: Path, time_left: str, status: int = 0) -> tuple[
        subprocess.CompletedProcess, dict[str, list[list[str]]]]:
    """Run the script in a 2-task job with ``time_left`` from squeue; return the process and
    each stand-in's calls (argument lists)."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, text in STUBS.items():
        path = stubs / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        PATH=f"{stubs}{os.pathsep}{env['PATH']}", STUB_LOG=str(log),
        SLURM_JOB_ID="4242", SLURM_NTASKS="2", SLURM_MEM_PER_CPU="1024",
        FAKE_SLURM_TIME_LEFT=time_left, FAKE_RUN_STATUS=str(status),
        AMPOFFSET_RUN_DIR=str(tmp_path / "run"), TMPDIR=str(tmp_path),
    )
    env.pop("AMPOFFSET_LIFETIME_MARGIN", None)
    proc = subprocess.run(["bash", str(SBATCH), "in", "--output", "out"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    calls: dict[str, list[list[str]]] = {}
    for line in (log.read_text().splitlines() if log.exists() else []):
        name, *args = shlex.split(line)
        calls.setdefault(name, []).append(args)
    return proc, calls


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


@pytest.mark.parametrize("time_left", ["UNLIMITED", "  UNLIMITED", "NOT_SET", "INVALID", ""])
def test_sbatch_runs_without_a_deadline_in_a_job_without_a_time_limit(tmp_path, time_left):
    # squeue -o %L prints UNLIMITED for a partition without a time limit: the script exited
    # with "10#UNLIMITED: value too great for base"
    proc, calls = run_sbatch(tmp_path, time_left)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = time_left.strip()
    assert (f"no time limit for job 4242 (squeue -o %L says '{shown}'); running without a "
            "worker lifetime or run deadline") in proc.stdout
    assert ("job 4242, 2 workers x 1 thread, memory limit 1024MiB, no worker lifetime, no "
            "run deadline") in proc.stdout
    (srun,) = calls["srun"]
    assert srun[:4] == ["--ntasks=2", "--cpus-per-task=1", "--kill-on-bad-exit=0", "dask"]
    assert "--lifetime" not in srun and "--lifetime-stagger" not in srun
    assert flag(srun, "--memory-limit") == "1024MiB"
    assert flag(srun, "--local-directory") == str(tmp_path)
    assert "timeout" not in calls  # the CLI runs without a deadline
    assert calls["ampoffset-dask"] == [
        ["run", "in", "--output", "out", "--scheduler", str(tmp_path / "run" / "scheduler.json")]]
    assert "ampoffset-dask run exited with 0" in proc.stdout


def test_sbatch_without_a_time_limit_does_not_report_a_walltime(tmp_path):
    # an interrupted run (130) is not the walltime when there is none
    proc, calls = run_sbatch(tmp_path, "UNLIMITED", status=130)
    assert proc.returncode == 130
    assert "walltime reached" not in proc.stderr
    assert "ampoffset-dask run exited with 130" in proc.stdout
    assert "timeout" not in calls


@pytest.mark.parametrize(("time_left", "lifetime", "stagger", "deadline"), [
    ("1-00:10:00", 86400, 300, 86850),  # D-HH:MM:SS
    ("08:09:10", 28750, 300, 29200),    # HH:MM:SS, leading zeros read as decimal
    ("2:00:00", 6600, 300, 7050),
    ("30:00", 1425, 75, 1650),          # MM:SS
    ("  1500 ", 1140, 60, 1350),        # SS
])
def test_sbatch_walltime_formats_give_the_worker_lifetime_and_run_deadline(
        tmp_path, time_left, lifetime, stagger, deadline):
    # MARGIN 300 s: workers retire by lifetime + stagger = left - 300, the CLI stops at
    # left - 150
    proc, calls = run_sbatch(tmp_path, time_left)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (f"worker lifetime {lifetime}s (stagger {stagger}s), run deadline {deadline}s"
            in proc.stdout)
    (srun,) = calls["srun"]
    assert flag(srun, "--lifetime") == f"{lifetime}s"
    assert flag(srun, "--lifetime-stagger") == f"{stagger}s"
    assert calls["timeout"] == [["--signal=INT", "--kill-after=60", str(deadline),
                                 "ampoffset-dask", "run", "in", "--output", "out",
                                 "--scheduler", str(tmp_path / "run" / "scheduler.json")]]
    assert len(calls["ampoffset-dask"]) == 1


def test_sbatch_still_refuses_a_job_with_too_little_time_left(tmp_path):
    proc, calls = run_sbatch(tmp_path, "06:00")
    assert proc.returncode == 1
    assert "only 360s left in job 4242; not starting" in proc.stderr
    assert calls == {}
