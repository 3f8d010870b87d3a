"""deploy/kubernetes: Dask operator manifests against the operator's CRD schemas, helm values.

The CRD schemas are vendored from dask-kubernetes (tests/deploy/schemas/). Besides JSON-schema
validation, the manifests are checked for fields Kubernetes would silently prune (keys a
structural schema does not declare), which jsonschema alone accepts.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import urllib.request

import jsonschema
import pytest
from conftest import DEPLOY, SCHEMAS, free_port, load_all_yaml, load_yaml
from dask.utils import parse_bytes
from distributed import Client

K8S = DEPLOY / "kubernetes"
OPERATOR_ENV = {"DASK_WORKER_NAME", "DASK_SCHEDULER_ADDRESS"}  # set by the operator
K8S_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9}


def crd(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def k8s_quantity(value: str | int) -> int:
    """Bytes of a Kubernetes memory quantity (4Gi, 500M, 1024)."""
    text = str(value)
    for suffix in sorted(K8S_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * K8S_UNITS[suffix])
    return int(text)


def pruned_fields(instance, schema, path="") -> list[str]:
    """Paths of keys that a structural schema does not declare (Kubernetes drops them)."""
    found = []
    if isinstance(instance, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return found
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            if props is not None and key in props:
                found += pruned_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += pruned_fields(value, extra, f"{path}.{key}")
            elif props is not None and extra is not True:
                found.append(f"{path}.{key}")
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(instance):
            found += pruned_fields(item, schema["items"], f"{path}[{i}]")
    return found


@functools.cache
def validator(name: str) -> jsonschema.Draft7Validator:
    """A validator of the CRD's schema, itself checked against the metaschema once (what
    `jsonschema.validate` redoes on every call, ~0.2 s for these schemas)."""
    schema = crd(name)["openAPIV3Schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_validate(body: dict, name: str) -> None:
    """`jsonschema.validate` with the cached validator: raises the best-matching error."""
    error = jsonschema.exceptions.best_match(validator(name).iter_errors(body))
    if error is not None:
        raise error


def validate_manifest(doc: dict, name: str) -> None:
    schema = crd(name)
    assert doc["apiVersion"] == f"{schema['group']}/{schema['version']}"
    assert doc["kind"] == schema["kind"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    schema_validate(body, name)
    assert pruned_fields(body, schema["openAPIV3Schema"]) == []


@pytest.fixture(scope="module")
def cluster() -> dict:
    return load_yaml(K8S / "daskcluster.yaml")


@pytest.fixture(scope="module")
def job() -> dict:
    return load_yaml(K8S / "daskjob.yaml")


def containers(pod_spec: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod_spec["containers"]}


def flag_value(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def test_daskcluster_validates_against_operator_crd(cluster):
    validate_manifest(cluster, "daskcluster")


def test_daskjob_validates_against_operator_crd(job):
    validate_manifest(job, "daskjob")


def test_validation_catches_broken_manifests(cluster):
    # The checks are not vacuous: a wrong type fails the schema, a typo is found as pruned.
    bad = json.loads(json.dumps(cluster))
    bad["spec"]["worker"]["replicas"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(bad, "daskcluster")
    typo = json.loads(json.dumps(cluster))
    typo["spec"]["worker"]["spec"]["containers"][0]["resorces"] = {}
    schema = crd("daskcluster")["openAPIV3Schema"]
    body = {"spec": typo["spec"]}
    schema_validate(body, "daskcluster")  # jsonschema alone accepts it...
    assert pruned_fields(body, schema) == [".spec.worker.spec.containers[0].resorces"]
    missing = json.loads(json.dumps(cluster))
    del missing["spec"]["scheduler"]
    with pytest.raises(jsonschema.ValidationError, match="scheduler"):
        validate_manifest(missing, "daskcluster")


@pytest.mark.parametrize("which", ["cluster", "job"])
def test_worker_memory_limit_matches_container_limit(which, cluster, job):
    spec = cluster["spec"] if which == "cluster" else job["spec"]["cluster"]["spec"]
    worker = containers(spec["worker"]["spec"])["worker"]
    limit = parse_bytes(flag_value(worker["args"], "--memory-limit"))
    assert limit == k8s_quantity(worker["resources"]["limits"]["memory"]) == 4 * 2**30
    assert k8s_quantity(worker["resources"]["requests"]["memory"]) == limit
    assert flag_value(worker["args"], "--nthreads") == "1"
    assert worker["resources"]["limits"]["cpu"] == "1"


@pytest.mark.parametrize("which", ["cluster", "job"])
def test_probes_use_declared_ports_and_health_endpoint(which, cluster, job):
    spec = cluster["spec"] if which == "cluster" else job["spec"]["cluster"]["spec"]
    for role in ("scheduler", "worker"):
        (container,) = spec[role]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] == "/health"
            assert get["port"] in ports
        dashboard = flag_value(container["args"], "--dashboard-address")
        assert int(dashboard.rsplit(":", 1)[-1]) == ports["http-dashboard"]
    service_ports = {p["name"]: p for p in spec["scheduler"]["service"]["ports"]}
    scheduler = containers(spec["scheduler"]["spec"])["scheduler"]
    assert int(flag_value(scheduler["args"], "--port")) == service_ports["tcp-comm"]["port"]
    sched_ports = {p["name"] for p in scheduler["ports"]}
    assert {p["targetPort"] for p in service_ports.values()} <= sched_ports


def test_environment_references_are_defined(cluster, job):
    pods = [cluster["spec"]["worker"]["spec"], cluster["spec"]["scheduler"]["spec"],
            job["spec"]["job"]["spec"], job["spec"]["cluster"]["spec"]["worker"]["spec"]]
    for pod in pods:
        for container in pod["containers"]:
            defined = OPERATOR_ENV | {e["name"] for e in container.get("env", [])}
            for arg in container.get("args", []):
                for var in re.findall(r"\$\((\w+)\)", arg):
                    assert var in defined, f"{container['name']}: $({var}) is never set"


def test_volumes_are_declared_and_claimed(cluster, job):
    claims = {d["metadata"]["name"]: d for d in load_all_yaml(K8S / "volumes.yaml")}
    assert all(d["kind"] == "PersistentVolumeClaim" for d in claims.values())
    pods = [cluster["spec"]["worker"]["spec"], job["spec"]["job"]["spec"],
            job["spec"]["cluster"]["spec"]["worker"]["spec"]]
    for pod in pods:
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    # Input read-only everywhere it is mounted.
    for pod in pods:
        for container in pod["containers"]:
            for mount in container["volumeMounts"]:
                if mount["name"] == "input":
                    assert mount["readOnly"] is True


def test_job_cluster_is_the_daskcluster_spec(cluster, job):
    job_cluster = job["spec"]["cluster"]["spec"]
    assert job_cluster["worker"] == cluster["spec"]["worker"]
    assert job_cluster["scheduler"]["spec"] == cluster["spec"]["scheduler"]["spec"]
    # The operator names the job's cluster after the job; the service selector must follow.
    selector = job_cluster["scheduler"]["service"]["selector"]
    assert selector["dask.org/cluster-name"] == job["metadata"]["name"]
    assert cluster["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == (
        cluster["metadata"]["name"]
    )


def test_job_runner_runs_the_cli_against_its_cluster(job):
    runner = job["spec"]["job"]["spec"]
    assert runner["restartPolicy"] == "Never"
    (container,) = runner["containers"]
    args = container["args"]
    assert args[:2] == ["ampoffset-dask", "run"]
    assert flag_value(args, "--scheduler") == "$(DASK_SCHEDULER_ADDRESS)"
    output = flag_value(args, "--output")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert any(output.startswith(p + "/") and not m.get("readOnly") for p, m in mounts.items())


def test_job_runner_arguments_parse_with_the_cli(job):
    from ampoffset_dask.cli import build_parser

    args = job["spec"]["job"]["spec"]["containers"][0]["args"]
    parsed = build_parser().parse_args(args[1:])
    assert parsed.scheduler == "$(DASK_SCHEDULER_ADDRESS)"
    assert str(parsed.output) == "/data/output/catalog"


def test_pods_run_as_the_image_user(cluster, job):
    pods = [cluster["spec"]["worker"]["spec"], cluster["spec"]["scheduler"]["spec"],
            job["spec"]["job"]["spec"]]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 1000


def test_worker_flags_match_the_local_script(cluster, cli_env):
    proc = subprocess.run(
        ["bash", str(DEPLOY / "local" / "start-cluster.sh"), "flags", "--memory-limit", "4GiB"],
        capture_output=True, text=True, check=True, env=cli_env, timeout=30,
    )
    local = proc.stdout.split()
    worker_args = containers(cluster["spec"]["worker"]["spec"])["worker"]["args"]
    assert worker_args[:2] == ["dask", "worker"]
    k8s_flags = {a for a in worker_args if a.startswith("--")}
    local_flags = {a for a in local if a.startswith("--")}
    assert k8s_flags == local_flags
    for flag in ("--nthreads", "--memory-limit", "--death-timeout"):
        assert flag_value(local, flag) == flag_value(worker_args, flag)


# Keys of the dask helm chart's values.yaml (https://github.com/dask/helm-chart, dask/values.yaml
# and the options its templates read) that our values may set.
HELM_CHART_KEYS = {
    "scheduler": {"name", "enabled", "image", "replicas", "serviceType", "loadBalancerIP",
                  "servicePort", "serviceAnnotations", "extraArgs", "resources", "tolerations",
                  "affinity", "nodeSelector", "securityContext", "serviceAccountName",
                  "metrics", "livenessProbe", "readinessProbe", "env"},
    "worker": {"name", "image", "replicas", "strategy", "custom_scheduler_url",
               "default_resources", "env", "extraArgs", "resources", "mounts", "annotations",
               "tolerations", "affinity", "nodeSelector", "securityContext",
               "serviceAccountName", "port", "portDashboard", "threads_per_worker", "metrics",
               "livenessProbe", "readinessProbe"},
    "jupyter": {"name", "enabled", "rbac", "image", "serviceType", "servicePort", "password",
                "passwordHint", "env", "command", "args", "extraConfig", "resources",
                "mounts", "tolerations", "affinity", "nodeSelector", "securityContext",
                "serviceAccountName", "ingress", "livenessProbe", "readinessProbe"},
    "webUI": {"name", "servicePort", "ingress"},
    "additional_worker_groups": set(),
    "nameOverride": set(),
    "fullnameOverride": set(),
}
HELM_IMAGE_KEYS = {"repository", "tag", "pullPolicy", "pullSecrets", "dask_worker"}


def test_helm_values_use_chart_keys_and_match_the_operator_cluster(cluster):
    values = load_yaml(K8S / "helm-values.yaml")
    assert set(values) <= set(HELM_CHART_KEYS)
    for section, body in values.items():
        assert set(body) <= HELM_CHART_KEYS[section], section
        if "image" in body:
            assert set(body["image"]) <= HELM_IMAGE_KEYS
    op_worker = containers(cluster["spec"]["worker"]["spec"])["worker"]
    worker = values["worker"]
    # The chart passes resources.limits.memory as --memory-limit (dask parses "4Gi").
    assert parse_bytes(worker["resources"]["limits"]["memory"]) == parse_bytes(
        flag_value(op_worker["args"], "--memory-limit")
    )
    assert worker["threads_per_worker"] == 1
    assert worker["replicas"] == cluster["spec"]["worker"]["replicas"]
    image = f"{worker['image']['repository']}:{worker['image']['tag']}"
    assert image == op_worker["image"]
    assert worker["livenessProbe"]["httpGet"]["port"] == worker["portDashboard"]
    assert worker["image"]["dask_worker"] == "dask-worker"  # shim installed by the Dockerfile
    assert values["scheduler"]["livenessProbe"]["httpGet"]["path"] == "/health"


def chart_commands(values: dict, scheduler_port: int, dashboard_port: int,
                   worker_dashboard_port: int) -> tuple[list[str], list[str]]:
    """Scheduler and worker commands as the dask chart's templates render them from our values
    (dask/templates/dask-scheduler-deployment.yaml, dask-worker-deployment.yaml), with the
    ports moved to free ones on 127.0.0.1."""
    scheduler = ["dask-scheduler", f"--port={scheduler_port}",
                 f"--dashboard-address=127.0.0.1:{dashboard_port}", "--host=127.0.0.1"]
    worker_values = values["worker"]
    worker = [worker_values["image"]["dask_worker"], f"127.0.0.1:{scheduler_port}",
              "--nthreads", str(worker_values["threads_per_worker"]),
              "--memory-limit", str(worker_values["resources"]["limits"]["memory"]),
              "--no-dashboard", "--dashboard-address", f"127.0.0.1:{worker_dashboard_port}",
              *worker_values["extraArgs"]]
    return scheduler, worker


@pytest.mark.slow
def test_helm_chart_commands_run_with_the_image_shims(cli_env, tmp_path):
    values = load_yaml(K8S / "helm-values.yaml")
    ports = free_port(), free_port(), free_port()
    scheduler_cmd, worker_cmd = chart_commands(values, *ports)
    env = dict(cli_env)
    env["PATH"] = f"{DEPLOY / 'docker' / 'bin'}:{env['PATH']}"
    procs = []
    try:
        for cmd, log in ((scheduler_cmd, "scheduler.log"), (worker_cmd, "worker.log")):
            with (tmp_path / log).open("w") as out:
                procs.append(subprocess.Popen(cmd, env=env, stdout=out,
                                              stderr=subprocess.STDOUT, cwd=tmp_path))
        with Client(f"tcp://127.0.0.1:{ports[0]}", timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            (worker,) = client.scheduler_info(n_workers=-1)["workers"].values()
            assert worker["nthreads"] == 1
            assert worker["memory_limit"] == 4 * 2**30
        # The probes of helm-values.yaml: /health on the dashboard ports, even with
        # --no-dashboard (the chart's worker flag).
        for port in ports[1:]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
                assert r.read() == b"ok"
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=60)
