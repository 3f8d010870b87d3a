"""A missing reference-data folder stops the run with one clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_missing_shared_folder_is_one_clear_error(tmp_path):
    env = dict(os.environ, AMPOFFSET_SHARED=str(tmp_path / "nowhere"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/algorithm/test_parity.py", "tests/test_task.py", "tests/io/test_fits.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out  # pytest's usage error
    assert out.count("reference data not found") == 1, out
    assert str(tmp_path / "nowhere") in out and "AMPOFFSET_SHARED" in out
    assert "golden/, cameras/, realdata/" in out
    assert "Traceback" not in out and "ERROR collecting" not in out
