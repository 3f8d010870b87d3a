"""Issue 10 item 4: the clusters we start listen on loopback only.

`deploy/local/start-cluster.sh` (scheduler, nannies, workers, dashboards) and the default
`LocalCluster` of `get_client` are started for real; every listening TCP socket of their
processes (read from /proc by psutil) must be on 127.0.0.1, never on 0.0.0.0 or ::.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "local" / "start-cluster.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(pids: list[int]) -> dict[int, list[tuple[str, int]]]:
    """``{pid: [(ip, port), ...]}`` of the listening TCP sockets of ``pids`` and their
    descendants (a nanny's worker is its child)."""
    procs = []
    for pid in pids:
        p = psutil.Process(pid)
        procs.append(p)
        procs.extend(p.children(recursive=True))
    out: dict[int, list[tuple[str, int]]] = {}
    for p in procs:
        conns = p.net_connections(kind="tcp")
        out[p.pid] = [(c.laddr.ip, c.laddr.port) for c in conns
                      if c.status == psutil.CONN_LISTEN]
    return out


def assert_loopback_only(sockets: dict[int, list[tuple[str, int]]]) -> None:
    exposed = {pid: [s for s in socks if s[0] not in ("127.0.0.1", "::1")]
               for pid, socks in sockets.items()}
    exposed = {pid: s for pid, s in exposed.items() if s}
    assert not exposed, f"sockets listening beyond loopback: {exposed}"


@pytest.mark.slow
def test_start_cluster_binds_everything_to_loopback(tmp_path, cli_env):
    port, dashboard = free_port(), free_port()
    run_dir = tmp_path / "cluster"
    args = ["--port", str(port), "--dashboard-port", str(dashboard), "--workers", "2",
            "--memory-limit", "1GiB", "--run-dir", str(run_dir)]
    started = subprocess.run(["bash", str(SCRIPT), "start", *args], capture_output=True,
                             text=True, env=cli_env, timeout=120, check=False)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pids = [int(p.read_text()) for p in sorted(run_dir.glob("*.pid"))]
        assert len(pids) == 3  # scheduler + 2 nannies (each with its worker child)
        sockets = listening(pids)
        # scheduler comm + dashboard, 2 nannies, 2 workers with their HTTP ports
        n = sum(len(s) for s in sockets.values())
        assert n >= 2 + 2 + 2 * 2, sockets
        assert ("127.0.0.1", port) in sockets[pids[0]] or any(
            ("127.0.0.1", port) in s for s in sockets.values())
        assert_loopback_only(sockets)
    finally:
        stopped = subprocess.run(["bash", str(SCRIPT), "stop", *args], capture_output=True,
                                 text=True, env=cli_env, timeout=120, check=False)
    assert stopped.returncode == 0, stopped.stderr


_LOCAL = """
import os, sys
from ampoffset_dask.pipeline.cluster import get_client
handle = get_client(None, n_workers=1, memory_limit="512MiB")
print(handle.dashboard_link, flush=True)
sys.stdin.read()
handle.close()
"""


@pytest.mark.slow
def test_default_local_cluster_binds_to_loopback(cli_env):
    proc = subprocess.Popen([sys.executable, "-c", _LOCAL], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env)
    try:
        link = proc.stdout.readline().strip()
        assert link.startswith("http://127.0.0.1:"), (link, proc.stderr.read()
                                                      if proc.poll() is not None else "")
        dashboard_port = int(link.split(":")[2].split("/")[0])
        sockets = listening([proc.pid])
        assert_loopback_only(sockets)
        assert len(sockets) >= 3  # client/scheduler process, a nanny, its worker
        assert ("127.0.0.1", dashboard_port) in sockets[proc.pid]  # really served
    finally:
        proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
