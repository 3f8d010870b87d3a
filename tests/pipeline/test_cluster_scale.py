"""How `get_client` sizes the clusters its specs start or connect to (kubernetes, gateway,
jobqueue).

dask-kubernetes, a Kubernetes cluster and a gateway server cannot run here: stand-in cluster
managers (installed as the ``dask_kubernetes.operator``, ``dask_gateway`` and
``dask_jobqueue`` modules) record every ``scale``/``adapt`` call, and the client really
connects, through them, to the session's real scheduler. The stand-in KubeCluster behaves as
dask-kubernetes' operator KubeCluster does: a cluster of that name already running is
connected to (``n_workers`` = its replicas, ``shutdown_on_close`` False), otherwise one is
created (``shutdown_on_close`` True) from ``kubernetes.custom-cluster-spec`` when set.
"""

from __future__ import annotations

import logging
import re
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import dask
import pytest
import yaml
from distributed.core import Status

from ampoffset_dask.pipeline import get_client

DASKCLUSTER_YAML = (Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
                    / "daskcluster.yaml")
LOGGER = "ampoffset_dask.pipeline.cluster"


class StandInCluster:
    """A cluster manager of the session's scheduler that records how it is sized."""

    address: ClassVar[str] = ""

    def __init__(self, replicas: int | None = None) -> None:
        self.n_workers = replicas
        self.calls: list[Any] = []
        self.closed = False
        self.status = Status.running
        self.scheduler_address = self.address
        self.dashboard_link = None

    def scale(self, n: int) -> None:
        self.calls.append(("scale", n))
        self.n_workers = n

    def adapt(self, **kwargs: Any) -> None:
        self.calls.append(("adapt", kwargs))

    def close(self) -> None:
        self.closed = True


class KubeCluster(StandInCluster):
    """dask-kubernetes' operator KubeCluster as far as `get_client` sees it."""

    running: ClassVar[dict[str, int]] = {}  # name -> replicas of the clusters that run
    made: ClassVar[list[KubeCluster]] = []

    def __init__(self, *, name: str | None = None, **kwargs: Any) -> None:
        custom = dask.config.get("kubernetes.custom-cluster-spec", None)
        spec = yaml.safe_load(Path(custom).read_text()) if custom else None
        self.name = spec["metadata"]["name"] if spec else name
        if self.name in self.running:
            super().__init__(self.running[self.name])
            self.shutdown_on_close = False
        else:
            replicas = spec["spec"]["worker"]["replicas"] if spec else 3
            super().__init__(replicas)
            self.running[self.name] = replicas
            self.shutdown_on_close = True
        self.made.append(self)

    def scale(self, n: int) -> None:
        super().scale(n)
        self.running[self.name] = n

    def close(self) -> None:
        super().close()
        if self.shutdown_on_close:
            del self.running[self.name]


class Gateway:
    made: ClassVar[list[StandInCluster]] = []

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def new_cluster(self) -> StandInCluster:
        cluster = StandInCluster(0)  # a gateway cluster starts without workers
        self.made.append(cluster)
        return cluster


class SLURMCluster(StandInCluster):
    made: ClassVar[list[StandInCluster]] = []

    def __init__(self) -> None:
        super().__init__(0)
        self.made.append(self)


@pytest.fixture
def stand_ins(shared_scheduler, monkeypatch):
    """The stand-in modules, and a fresh Kubernetes with no cluster running."""
    operator = types.ModuleType("dask_kubernetes.operator")
    operator.KubeCluster = KubeCluster
    package = types.ModuleType("dask_kubernetes")
    package.operator = operator
    gateway = types.ModuleType("dask_gateway")
    gateway.Gateway = Gateway
    jobqueue = types.ModuleType("dask_jobqueue")
    jobqueue.SLURMCluster = SLURMCluster
    for name, module in (("dask_kubernetes", package), ("dask_kubernetes.operator", operator),
                         ("dask_gateway", gateway), ("dask_jobqueue", jobqueue)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(StandInCluster, "address", shared_scheduler)
    monkeypatch.setattr(KubeCluster, "running", {})
    for kind in (KubeCluster, Gateway, SLURMCluster):
        monkeypatch.setattr(kind, "made", [])
    return KubeCluster


def open_and_close(spec: str) -> StandInCluster:
    """The cluster behind ``get_client(spec)``, after a real client used it and closed."""
    for kind in (KubeCluster, Gateway, SLURMCluster):
        kind.made.clear()
    with get_client(spec) as client:
        client.wait_for_workers(1, timeout=60)  # the session's scheduler, really
        assert sum(client.nthreads().values()) >= 1
    made = KubeCluster.made + Gateway.made + SLURMCluster.made
    assert len(made) == 1
    return made[0]


@pytest.mark.parametrize("spec", ["kubernetes", "kubernetes:ampoffset", "k8s:ampoffset"])
def test_a_running_kubernetes_cluster_keeps_its_size(stand_ins, spec, caplog):
    # the long-lived cluster of deploy/kubernetes/daskcluster.yaml after
    # `kubectl scale daskcluster ampoffset --replicas 16`: it was scaled down to 1 worker
    stand_ins.running["ampoffset"] = 16
    with caplog.at_level(logging.INFO, logger=LOGGER):
        cluster = open_and_close(spec)
    assert cluster.calls == []
    assert stand_ins.running == {"ampoffset": 16}  # still there after the run, 16 workers
    assert "connected to the running cluster 'ampoffset'; kept its 16 worker(s)" in caplog.text
    assert "1 worker" not in caplog.text


def test_a_running_kubernetes_cluster_is_scaled_up_never_down(stand_ins, caplog):
    stand_ins.running["ampoffset"] = 16
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cluster = open_and_close("kubernetes:ampoffset:8")
    assert cluster.calls == []
    assert stand_ins.running == {"ampoffset": 16}
    assert ("left the running cluster 'ampoffset' at its 16 worker(s), more than the 8 asked "
            "for") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cluster = open_and_close("kubernetes:ampoffset:24")
    assert cluster.calls == [("scale", 24)]
    assert stand_ins.running == {"ampoffset": 24}
    assert "scaled the running cluster 'ampoffset' up from 16 to 24 worker(s)" in caplog.text


def test_a_running_kubernetes_cluster_is_not_made_adaptive(stand_ins, caplog):
    # adapt(minimum=0) would hand the shared cluster to an autoscaler that can empty it
    stand_ins.running["ampoffset"] = 16
    with dask.config.set({"ampoffset.cluster.adaptive-maximum": 32}), \
            caplog.at_level(logging.WARNING, logger=LOGGER):
        cluster = open_and_close("kubernetes")
    assert cluster.calls == []
    assert stand_ins.running == {"ampoffset": 16}
    assert "adaptive-maximum is not applied to the running cluster 'ampoffset'" in caplog.text


def test_a_kubernetes_cluster_created_from_the_custom_spec_keeps_its_replicas(stand_ins, caplog):
    # DASK_KUBERNETES__CUSTOM_CLUSTER_SPEC=deploy/kubernetes/daskcluster.yaml (replicas: 8)
    replicas = yaml.safe_load(DASKCLUSTER_YAML.read_text())["spec"]["worker"]["replicas"]
    assert replicas == 8
    with dask.config.set({"kubernetes.custom-cluster-spec": str(DASKCLUSTER_YAML)}):
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            cluster = open_and_close("kubernetes:ampoffset")
        assert cluster.shutdown_on_close and cluster.closed
        assert cluster.calls == []
        assert cluster.n_workers == 8
        assert [r.getMessage() for r in caplog.records
                if r.name == LOGGER and r.levelno >= logging.WARNING] == []
        assert stand_ins.running == {}  # created by the run, deleted with it
        # a worker count sizes the cluster the run created, up or down
        cluster = open_and_close("kubernetes:ampoffset:4")
        assert cluster.calls == [("scale", 4)]


def test_a_kubernetes_cluster_created_without_a_spec_gets_the_documented_size(stand_ins, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cluster = open_and_close("kubernetes")
    assert cluster.calls == [("scale", 1)]
    assert "no worker count given; asked KubeCluster for 1 worker" in caplog.text
    with dask.config.set({"ampoffset.cluster.workers": 5}):
        cluster = open_and_close("kubernetes:other")
    assert cluster.calls == [("scale", 5)]


@pytest.mark.parametrize(("spec", "calls"), [
    ("gateway", [("scale", 1)]),
    ("gateway:3", [("scale", 3)]),
    ("slurm", [("scale", 1)]),
    ("slurm:2", [("scale", 2)]),
])
def test_gateway_and_jobqueue_clusters_keep_their_documented_size(stand_ins, spec, calls,
                                                                  caplog):
    # always new clusters, started without workers: N, else one worker, with a warning
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cluster = open_and_close(spec)
    assert cluster.calls == calls
    assert cluster.closed
    if calls == [("scale", 1)]:
        assert re.search(rf"scheduler {spec!r}: no worker count given; asked \w+ for 1 "
                         r"worker", caplog.text), caplog.text
    with dask.config.set({"ampoffset.cluster.adaptive-maximum": 6}):
        cluster = open_and_close(spec.split(":")[0])
    assert cluster.calls == [("adapt", {"minimum": 0, "maximum": 6})]
