"""The notebooks in notebooks/ execute top to bottom on tiny simulated data (nbclient).

Their parameter cells read AMPOFFSET_NB_* environment variables; here three detectors at a
tenth of full size on two local workers. The notebooks are stored without outputs.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01-quickstart.ipynb", "02-cluster.ipynb", "03-diagnostics.ipynb"]


def test_notebooks_are_stored_without_outputs():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: one cell tagged 'parameters'"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("AMPOFFSET_NB_SCALE", "0.1")
    monkeypatch.setenv("AMPOFFSET_NB_DETECTORS", "R22_S11,R22_S12,R22_S21")
    monkeypatch.setenv("AMPOFFSET_NB_WORKERS", "2")
    monkeypatch.setenv("AMPOFFSET_NB_VISITS", "2")
    monkeypatch.setenv("AMPOFFSET_NB_WORKDIR", str(tmp_path / "work"))
    # 02: ask for dask-gateway with no gateway configured -> the notebook falls back to a
    # local cluster (the documented path when no cluster is reachable).
    monkeypatch.setenv("AMPOFFSET_SCHEDULER", "gateway")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    text = "\n".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
        for out in cell.outputs
    )
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells
                 if cell.cell_type == "code" for out in cell.outputs)
    if name == "02-cluster.ipynb":
        assert "falling back to a local cluster" in text
        assert "6 ok, 0 flagged, 0 failed" in text  # 3 detectors x 2 visits
    else:
        assert images >= 3, f"{name}: figures not rendered"
    if name == "01-quickstart.ipynb":
        assert "3 ok, 0 flagged, 0 failed" in text
