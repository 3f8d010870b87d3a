"""deploy/gateway: dask-gateway server cluster options, daskhub values and client settings.

The server config is loaded the way dask-gateway-server loads it (a traitlets Python config
file), its Options are evaluated for real, and the resulting settings are validated by
dask-gateway-server's own ClusterConfig traits. The client settings are loaded into dask's
config and used to build a real `dask_gateway.Gateway` (no connection is made).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import dask
import pytest
from conftest import DEPLOY, load_yaml
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
