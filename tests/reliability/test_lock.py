"""Issue 10 item 2: the catalog lock is held by one writer at a time, whatever the race.

Before: the lock file was created empty and filled afterwards, and an empty lock counted as
stale, so racing writers took it over from each other and both wrote the catalog.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from ampoffset_dask.catalog import CatalogWriter
from reliability.forked import script_env

# One acquirer: take the catalog (CatalogWriter.open), count the holders while holding it,
# let go; many rounds. Runs in threads of this process and in separate processes.
ACQUIRER = textwrap.dedent("""
    import os, sys, time, uuid
    from pathlib import Path
    from ampoffset_dask import ConfigError
    from ampoffset_dask.catalog import CatalogWriter

    def acquirer(catalog, rounds):
        holders = Path(catalog).parent / "holders"
        go = Path(catalog).parent / "go"
        worst, wins = 0, 0
        while not go.exists():
            time.sleep(0.001)
        for _ in range(rounds):
            writer = CatalogWriter(catalog)
            try:
                writer.open()
            except ConfigError:
                time.sleep(0.0005)
                continue
            mark = holders / uuid.uuid4().hex
            mark.touch()
            worst = max(worst, len(os.listdir(holders)))
            time.sleep(0.002)
            mark.unlink()
            wins += 1
            writer.close()
        return worst, wins

    if __name__ == "__main__":
        # N acquirer processes forked from this one after the imports above (one import
        # instead of N), each printing "worst wins" into its own file.
        from forked import run_forked

        def run():
            print(*acquirer(sys.argv[1], int(sys.argv[2])))
            return 0

        run_forked({f"acquirer{k}": run for k in range(int(sys.argv[3]))}, ready=True)
""")


def test_forty_concurrent_acquirers_never_two_holders(tmp_path):
    script = tmp_path / "acquirer.py"
    script.write_text(ACQUIRER)
    (tmp_path / "holders").mkdir()
    catalog = tmp_path / "cat"
    catalog.mkdir()
    rounds = 30
    # 10 processes (forked by one that imported the package once) and 30 threads, all
    # released at once when every process is ready.
    proc = subprocess.Popen([sys.executable, str(script), str(catalog), str(rounds), "10"],
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path, env=script_env())
    assert proc.stdout.readline().strip() == "ready"
    sys.path.insert(0, str(tmp_path))
    try:
        import acquirer as mod
    finally:
        sys.path.remove(str(tmp_path))
    results: list[tuple[int, int]] = []
    threads = [threading.Thread(target=lambda: results.append(mod.acquirer(str(catalog),
                                                                           rounds)))
               for _ in range(30)]
    for t in threads:
        t.start()
    (tmp_path / "go").touch()
    for t in threads:
        t.join()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    codes = json.loads(out.splitlines()[-1])
    assert len(codes) == 10, out
    for name, (_, code) in codes.items():
        assert code == 0, (tmp_path / f"{name}.err").read_text()
        results.append(tuple(int(v) for v in (tmp_path / f"{name}.out").read_text().split()))
    assert len(results) == 40
    worst = max(w for w, _ in results)
    wins = sum(n for _, n in results)
    assert worst == 1, f"{worst} writers held the catalog lock at once"
    assert wins >= 5  # the lock went round, not just refused to everybody
    assert not (catalog / ".lock").exists()


# Two `process` calls in processes forked from one (`forked.run_forked`), released together
# by the ``go`` file.
RUNNER = textwrap.dedent("""
    import os, sys, time
    import distributed  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import ampoffset_dask.io.fits, ampoffset_dask.pipeline.cluster  # noqa: F401
    import ampoffset_dask.pipeline.run, ampoffset_dask.pipeline.worker_logs  # noqa: F401
    import distributed.scheduler, tqdm.auto  # noqa: F401
    from ampoffset_dask import ConfigError, process
    from forked import run_forked

    def run(inputs, catalog, address, go):
        while not os.path.exists(go):
            time.sleep(0.001)
        try:
            summary = process(inputs, catalog, client=address, progress=False)
        except ConfigError as exc:
            print("ERROR", exc, flush=True)
            return 2
        print("OK", summary.n_ok, flush=True)
        return 0

    run_forked({name: lambda: run(*sys.argv[1:5]) for name in ("a", "b")}, ready=True)
""")



@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from run_shared import once_per_run

    from ampoffset_dask.simulate import simulate_focal_plane

    def make(out):  # once per run: the -n processes share the files (read only)
        simulate_focal_plane(out, "lsstcam", rafts="R22", scale=0.05, seed=4)
        return out

    return once_per_run(tmp_path_factory, "lock-sim", make)


def test_two_process_calls_at_the_same_instant(sim, scheduler, tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    catalog = tmp_path / "cat"
    go = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, str(script), str(sim), str(catalog), scheduler,
                             str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=script_env())
    # both imported and waiting: release them together
    assert proc.stdout.readline().strip() == "ready"
    go.touch()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    outs = [((tmp_path / f"{name}.out").read_text(), code, pid)
            for name, (pid, code) in json.loads(out).items()]
    codes = sorted(code for _, code, _ in outs)
    assert codes == [0, 2], (outs, [(tmp_path / f"{n}.err").read_text() for n in "ab"])
    won, _, winner = next(o for o in outs if o[1] == 0)
    lost, _, _ = next(o for o in outs if o[1] == 2)
    assert won.split() == ["OK", "9"]
    host = socket.gethostname()
    assert f"catalog in use by {host}:{winner} since 20" in lost, lost
    from ampoffset_dask import read_catalog

    runs = read_catalog(catalog, "runs")
    assert list(runs["status"]) == ["finished"]  # the refused call recorded nothing


def test_cli_reports_a_busy_catalog_with_exit_2(sim, scheduler, tmp_path, capsys):
    from ampoffset_dask.cli import main

    catalog = tmp_path / "cat"
    with CatalogWriter(catalog) as holder:
        holder.open()
        code = main(["run", str(sim), "-o", str(catalog), "--scheduler", scheduler,
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    assert f"catalog in use by {socket.gethostname()}:{os.getpid()} since 20" in lines[0]
    with CatalogWriter(catalog) as writer:  # free again afterwards
        writer.open()
