"""Shared helpers for the deploy/ tests: paths, a strict YAML loader, free ports."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "schemas"


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> object:
    """Load a single-document YAML file strictly."""
    return yaml.load(path.read_text(), Loader=StrictLoader)


def load_all_yaml(path: Path) -> list:
    """Load every document of a YAML file strictly."""
    return [d for d in yaml.load_all(path.read_text(), Loader=StrictLoader) if d is not None]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def venv_env() -> dict[str, str]:
    """The environment with this interpreter's bin folder (dask, ampoffset-dask) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for subprocesses running the deploy scripts."""
    env = venv_env()
    assert shutil.which("dask", path=env["PATH"]), "the `dask` command is not installed"
    return env
