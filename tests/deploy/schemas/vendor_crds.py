"""Regenerate the vendored Dask operator CRD schemas in this folder.

The Dask Kubernetes operator (https://github.com/dask/dask-kubernetes, BSD-3-Clause, see
``LICENSE-dask-kubernetes``) ships fully resolved CustomResourceDefinitions in its helm chart
(``dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/crds/``). This script keeps
the identity (group, version, kind) and the ``openAPIV3Schema`` of the ``DaskCluster`` and
``DaskJob`` CRDs unchanged and writes them as JSON next to this file.

Usage::

    pip download --no-deps dask-kubernetes -d /tmp/dk
    python -m zipfile -e /tmp/dk/dask_kubernetes-*.whl /tmp/dk/x
    python tests/deploy/schemas/vendor_crds.py /tmp/dk/x
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

CRDS = ("daskcluster", "daskjob")
CHART_CRDS = "dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/crds"


def vendor(unpacked_wheel: Path, version: str, out_dir: Path) -> list[Path]:
    """Extract the CRD schemas from an unpacked dask-kubernetes wheel into ``out_dir``."""
    written = []
    for name in CRDS:
        crd = yaml.safe_load((unpacked_wheel / CHART_CRDS / f"{name}.yaml").read_text())
        (ver,) = crd["spec"]["versions"]
        doc = {
            "source": f"dask-kubernetes {version}: {CHART_CRDS}/{name}.yaml",
            "group": crd["spec"]["group"],
            "version": ver["name"],
            "kind": crd["spec"]["names"]["kind"],
            "openAPIV3Schema": ver["schema"]["openAPIV3Schema"],
        }
        path = out_dir / f"{name}.schema.json"
        path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    root = Path(sys.argv[1])
    (dist,) = root.glob("dask_kubernetes-*.dist-info")
    version = dist.name.split("-")[1].removesuffix(".dist-info")
    for p in vendor(root, version, Path(__file__).resolve().parent):
        sys.stdout.write(f"wrote {p}\n")
