"""deploy/gateway: dask-gateway server cluster options, daskhub values and client settings.

The server config is loaded the way dask-gateway-server loads it (a traitlets Python config
file), its Options are evaluated for real, and the resulting settings are validated by
dask-gateway-server's own ClusterConfig traits. The client settings are loaded into dask's
config and used to build a real `dask_gateway.Gateway` (no connection is made).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import dask
import pandas as pd
import pytest
import yaml
from cli_helpers import cli
from conftest import DEPLOY, free_port, load_yaml
from dask.utils import parse_bytes
from traitlets.config.loader import PyFileConfigLoader

GATEWAY = DEPLOY / "gateway"


@pytest.fixture(scope="module")
def server_config():
    return PyFileConfigLoader("dask_gateway_config.py", path=str(GATEWAY)).load_config()


@pytest.fixture(scope="module")
def options(server_config):
    from dask_gateway_server.options import Options

    opts = server_config.Backend.cluster_options
    assert isinstance(opts, Options)
    return opts


def settings_for(options, request: dict) -> dict:
    return options.get_configuration(options.parse_options(request), user=None)


def test_default_options_give_single_threaded_workers_with_the_cluster_memory(options):
    from dask_gateway_server.backends.base import ClusterConfig

    settings = settings_for(options, {})
    image = settings.pop("image")
    assert image == "ghcr.io/ampoffset-dask/ampoffset-dask:0.1.0"
    config = ClusterConfig(**settings)  # raises on unknown or invalid settings
    assert config.worker_threads == 1 and config.worker_cores == 1
    assert config.worker_memory == 4 * 2**30
    assert config.idle_timeout == 30 * 60
    # Same worker shape as the operator's DaskCluster.
    cluster = load_yaml(DEPLOY / "kubernetes" / "daskcluster.yaml")
    args = cluster["spec"]["worker"]["spec"]["containers"][0]["args"]
    assert parse_bytes(args[args.index("--memory-limit") + 1]) == config.worker_memory


def test_user_choices_are_bounded_and_converted(options):
    settings = settings_for(options, {"worker_memory_gib": 8, "idle_timeout_minutes": 0})
    assert settings["worker_memory"] == 8 * 2**30
    assert settings["idle_timeout"] == 0
    with pytest.raises(ValueError):
        options.parse_options({"worker_memory_gib": 64})
    with pytest.raises(ValueError, match="Unknown fields"):
        options.parse_options({"worker_threads": 4})


def test_daskhub_values_embed_the_server_config_and_match_its_defaults(options):
    from dask_gateway_server.backends.base import ClusterConfig

    values = load_yaml(GATEWAY / "daskhub-values.yaml")
    gateway = values["dask-gateway"]["gateway"]
    code = (GATEWAY / "dask_gateway_config.py").read_text()
    assert gateway["extraConfig"]["ampoffset"].strip() == code.strip()
    backend = gateway["backend"]
    worker = ClusterConfig(worker_memory=backend["worker"]["memory"]["limit"])
    assert worker.worker_memory == settings_for(options, {})["worker_memory"]
    assert backend["worker"]["threads"] == 1
    assert backend["worker"]["cores"]["limit"] == 1
    image = f"{backend['image']['name']}:{backend['image']['tag']}"
    assert image == settings_for(options, {})["image"]
    env = values["jupyterhub"]["singleuser"]["extraEnv"]
    assert env["DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE"] == image


def test_client_settings_are_dask_gateway_config_and_name_server_options(options, monkeypatch):
    import dask_gateway
    from dask_gateway.auth import JupyterHubAuth

    client = load_yaml(GATEWAY / "gateway.yaml")
    defaults = dask.config.collect(paths=[str(Path(dask_gateway.__file__).parent)], env={})

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and v:
                out |= keys(v, prefix + k + ".")
        return out

    known = keys(defaults["gateway"])
    ours = {k for k in keys(client["gateway"]) if not k.startswith("cluster.options.")}
    assert ours <= known, ours - known
    server_fields = {f.field for f in options.fields}
    assert set(client["gateway"]["cluster"]["options"]) <= server_fields
    # The client options are valid server choices.
    options.parse_options(client["gateway"]["cluster"]["options"])

    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "test-token")

    async def build() -> tuple[str, object]:
        # asynchronous=True: the synchronous client's __del__ trips over distributed's loop
        # runner after close() (dask-gateway 2026.3 with distributed 2026.8).
        gw = dask_gateway.Gateway(asynchronous=True)
        try:
            return gw.address, gw.auth
        finally:
            await gw.close()

    merged = dask.config.merge(defaults["gateway"], client["gateway"])
    with dask.config.set({"gateway": merged}):
        address, auth = asyncio.run(build())
    assert address == client["gateway"]["address"]
    assert isinstance(auth, JupyterHubAuth)


SERVER_CONFIG = """
c = get_config()
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{http}"
c.Proxy.tcp_address = "127.0.0.1:{tcp}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.UnsafeLocalBackend.inherited_environment.extend({inherited!r})
# One process per worker: a nanny would double the worker processes for nothing checked here.
# No bokeh dashboards (~0.9 s of CPU to import in each process, nothing checked here); their
# HTTP servers, which the gateway's --dashboard-address configures, still run.
c.ClusterConfig.scheduler_cmd = ["dask-scheduler", "--no-dashboard"]
c.ClusterConfig.worker_cmd = ["dask-worker", "--no-nanny", "--no-dashboard"]
load_subconfig({ours!r})
"""

# The local backend passes only a whitelist of variables to the schedulers and workers it
# starts; add the test settings every other process of the suite inherits (numpy kernels
# instead of loading or compiling the numba ones, quiet idle dask processes:
# tests/conftest.py).
TEST_SETTINGS = ("AMPOFFSET_KERNELS", "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED",
                 "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL",
                 "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL")


@pytest.fixture
def gateway_server(tmp_path, cli_env):
    """A real dask-gateway server on 127.0.0.1 running deploy/gateway/dask_gateway_config.py,
    with the local-process backend; schedulers and workers start through the image's
    dask-scheduler / dask-worker commands (deploy/docker/bin)."""
    api, http, tcp = free_port(), free_port(), free_port()
    config = tmp_path / "server_config.py"
    config.write_text(SERVER_CONFIG.format(
        api=api, http=http, tcp=tcp,
        ours=str(GATEWAY / "dask_gateway_config.py"),
        inherited=list(TEST_SETTINGS),
    ))
    env = dict(cli_env)
    env["PATH"] = f"{DEPLOY / 'docker' / 'bin'}{os.pathsep}{env['PATH']}"
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "dask-gateway-server"), "-f", str(config)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "Dask-Gateway server started" not in log.read_text():
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield {"address": f"http://127.0.0.1:{http}", "proxy": f"gateway://127.0.0.1:{tcp}",
               "env": env, "log": log}
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.slow
def test_cli_runs_through_a_real_gateway_with_the_client_settings(gateway_server, tmp_path):
    # The client settings of deploy/gateway/gateway.yaml, pointed at the local server.
    client_config = load_yaml(GATEWAY / "gateway.yaml")
    client_config["gateway"]["address"] = gateway_server["address"]
    client_config["gateway"]["proxy-address"] = gateway_server["proxy"]
    client_config["gateway"]["public-address"] = gateway_server["address"]
    client_config["gateway"]["auth"] = {"type": "basic"}
    client_config["gateway"]["cluster"]["options"]["worker_memory_gib"] = 2
    dask_dir = tmp_path / "dask-config"
    dask_dir.mkdir()
    (dask_dir / "gateway.yaml").write_text(yaml.safe_dump(client_config))
    env = dict(gateway_server["env"], DASK_CONFIG=str(dask_dir),
               DASK_AMPOFFSET__CLUSTER__WORKERS="2")

    data, catalog = tmp_path / "visit", tmp_path / "catalog"
    sim = cli("simulate", "--detectors", "R22_S11,R22_S12", "--scale", "0.1", "--out", data)
    assert sim.returncode == 0, sim.stdout + sim.stderr
    # A process of its own: the dask config (DASK_CONFIG, DASK_AMPOFFSET__*) is read at start.
    run = subprocess.run(
        ["ampoffset-dask", "run", str(data), "--output", str(catalog), "--scheduler",
         "gateway", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    log = gateway_server["log"].read_text()
    assert run.returncode == 0, run.stdout + run.stderr + log
    assert "Created worker" in log and log.count("Submitting worker") == 2
    detectors = pd.read_parquet(catalog / "detectors")
    assert sorted(detectors["detector"]) == ["R22_S11", "R22_S12"]
    assert set(detectors["status"]) == {"ok"}

    # The server offers our options, with the client's defaults applied.
    async def options() -> dict:
        from dask_gateway import Gateway

        gw = Gateway(gateway_server["address"], proxy_address=gateway_server["proxy"],
                     auth="basic", asynchronous=True)
        try:
            return dict(await gw.cluster_options())
        finally:
            await gw.close()

    with dask.config.set({"gateway.cluster.options": client_config["gateway"]["cluster"][
            "options"]}):
        offered = asyncio.run(options())
    assert offered == {"image": "ghcr.io/ampoffset-dask/ampoffset-dask:0.1.0",
                       "worker_memory_gib": 2, "scheduler_memory_gib": 2,
                       "idle_timeout_minutes": 30}
