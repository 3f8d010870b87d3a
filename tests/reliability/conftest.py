"""Fixtures of the reliability tests: real processes (schedulers, workers, CLI runs) on
127.0.0.1, tiny simulated detectors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture
def cli_env() -> dict[str, str]:
    """The environment with this interpreter's bin folder (dask, ampoffset-dask) first."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env
