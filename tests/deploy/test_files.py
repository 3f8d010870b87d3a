"""Every file under deploy/ is well formed: YAML parses (no duplicate keys), shell scripts pass
`bash -n` and are executable, Python snippets compile, README commands name real files."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import DEPLOY, REPO, load_all_yaml

YAML_FILES = sorted(p for ext in ("*.yaml", "*.yml") for p in DEPLOY.rglob(ext))
SHELL_FILES = sorted([*DEPLOY.rglob("*.sh"), *DEPLOY.rglob("*.sbatch"),
                      *(DEPLOY / "docker" / "bin").iterdir()])


def test_deploy_has_every_target():
    names = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    assert {
        "README.md", "docker/Dockerfile", "docker/requirements.lock",
        "kubernetes/daskcluster.yaml", "kubernetes/daskjob.yaml",
        "kubernetes/helm-values.yaml", "gateway/dask_gateway_config.py",
        "gateway/gateway.yaml", "gateway/daskhub-values.yaml", "hpc/jobqueue.yaml",
        "hpc/ampoffset.sbatch", "local/start-cluster.sh",
    } <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_yaml_parses(path):
    docs = load_all_yaml(path)
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_shell_scripts_parse_and_are_executable(path):
    assert os.access(path, os.X_OK), f"{path} is not executable"
    shell = "sh" if path.read_text().startswith("#!/bin/sh") else "bash"
    subprocess.run([shell, "-n", str(path)], check=True, timeout=30)


def test_python_snippets_compile():
    for path in DEPLOY.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


def test_readme_mentions_only_existing_deploy_files():
    text = (DEPLOY / "README.md").read_text()
    mentioned = set(re.findall(r"(?<![\w/])deploy/[\w./-]+\w", text))
    assert mentioned
    missing = sorted(m for m in mentioned if not (REPO / m).exists())
    assert missing == []
