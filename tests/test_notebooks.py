"""The notebooks in notebooks/ execute top to bottom on tiny simulated data (nbclient).

Their parameter cells read AMPOFFSET_NB_* environment variables and AMPOFFSET_SCHEDULER; here
three detectors at a tenth of full size, on the session's shared scheduler (a kernel that
starts a local cluster of its own costs a scheduler and worker processes per notebook) except
where the notebook's own local cluster is what is tested (02's fallback). The notebooks are
stored without outputs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ["01-quickstart.ipynb", "02-cluster.ipynb", "03-diagnostics.ipynb", "04-butler.ipynb"]


def test_notebooks_are_stored_without_outputs():
    import nbformat

    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: one cell tagged 'parameters'"


def run_notebook(name: str, tmp_path: Path, monkeypatch, scheduler: str,
                 scale: str = "0.1") -> tuple[str, int]:
    """Execute a notebook on tiny data; return its text output and how many figures it drew."""
    import nbformat  # Jupyter's packages only in the test process that runs notebooks
    from nbclient import NotebookClient

    monkeypatch.setenv("AMPOFFSET_NB_SCALE", scale)
    monkeypatch.setenv("AMPOFFSET_NB_DETECTORS", "R22_S11,R22_S12,R22_S21")
    monkeypatch.setenv("AMPOFFSET_NB_WORKERS", "1")
    monkeypatch.setenv("AMPOFFSET_NB_VISITS", "2")
    monkeypatch.setenv("AMPOFFSET_NB_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("AMPOFFSET_SCHEDULER", scheduler)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "\n".join(out.get("text", "") for out in outputs)
    images = sum("image/png" in out.get("data", {}) for out in outputs)
    assert (tmp_path / "work").is_dir()
    return text, images


@pytest.mark.slow
def test_quickstart_notebook(tmp_path, monkeypatch, shared_scheduler):
    text, images = run_notebook("01-quickstart.ipynb", tmp_path, monkeypatch, shared_scheduler)
    assert "3 ok, 0 flagged, 0 failed" in text
    assert images >= 3, "figures not rendered"


@pytest.mark.slow
def test_cluster_notebook_falls_back_to_a_local_cluster(tmp_path, monkeypatch):
    # dask-gateway asked for but not configured: the notebook says so and runs locally.
    # Without the performance report (its HTML is checked on the running scheduler below):
    # here the local scheduler runs in the kernel, and the report costs it ~1 s of CPU.
    monkeypatch.setenv("AMPOFFSET_NB_PERFORMANCE_REPORT", "0")
    text, _ = run_notebook("02-cluster.ipynb", tmp_path, monkeypatch, "gateway")
    assert "cannot use 'gateway'" in text
    assert "falling back to a local cluster" in text
    assert "6 ok, 0 flagged, 0 failed" in text  # 3 detectors x 2 visits
    assert "performance report: off" in text
    assert not (tmp_path / "work" / "performance-report.html").exists()


@pytest.mark.slow
def test_cluster_notebook_on_a_running_scheduler(tmp_path, monkeypatch, shared_scheduler):
    # The session's real scheduler with two `dask worker` processes; the cluster of
    # deploy/local/start-cluster.sh is tested in tests/deploy/test_local_cluster.py.
    from distributed import Client

    with Client(shared_scheduler, timeout=30) as client:
        client.wait_for_workers(2, timeout=120)  # the session cluster may be starting up
        workers = client.scheduler_info(n_workers=-1)["workers"]
    assert len(workers) == 2
    text, _ = run_notebook("02-cluster.ipynb", tmp_path, monkeypatch, shared_scheduler)
    assert "falling back" not in text and "cannot use" not in text
    for address, worker in workers.items():  # the notebook's line per worker
        assert re.search(rf"^ +{re.escape(str(worker['name']))}  {re.escape(address)} ", text,
                         re.MULTILINE), text
    assert "6 ok, 0 flagged, 0 failed" in text
    report = tmp_path / "work" / "performance-report.html"  # bokeh is in the test extra
    assert f"performance report: {report}" in text
    assert "<title>Dask Performance Report</title>" in report.read_text()


@pytest.mark.slow
def test_diagnostics_notebook(tmp_path, monkeypatch, shared_scheduler):
    # A 20-visit sequence of one detector; trends needs amps of ~100 px to see a 0.1 % gain
    # error, so this one runs at a fifth of full size.
    text, images = run_notebook("03-diagnostics.ipynb", tmp_path, monkeypatch, shared_scheduler,
                                scale="0.2")
    assert "20 visits of R22_S11" in text
    assert "injected: amp C15 jumps by" in text and "at visit 9" in text
    assert "injected: amp C02 has a gain error of" in text
    assert "20 ok, 0 flagged, 0 failed" in text
    assert "20 visits, 16 amps: 1 jump(s), 1 gain-like amp(s)" in text
    assert "trends found exactly the injected jump and gain error" in text
    assert images >= 3, "figures not rendered"


@pytest.mark.slow
def test_butler_notebook(tmp_path, monkeypatch, shared_scheduler, butler_detector_files):
    """04-butler against a temporary Butler repository (SQLite registry, file datastore)."""
    from butler_repo import RUN, VISIT, make_repo

    root = tmp_path / "repo"
    make_repo(root, butler_detector_files)
    monkeypatch.setenv("AMPOFFSET_NB_BUTLER_REPO", str(root))
    monkeypatch.setenv("AMPOFFSET_NB_COLLECTIONS", RUN)
    monkeypatch.setenv("AMPOFFSET_NB_WHERE", f"visit = {VISIT}")
    monkeypatch.setenv("AMPOFFSET_NB_INSTRUMENT", "LSSTCam")
    text, _ = run_notebook("04-butler.ipynb", tmp_path, monkeypatch, shared_scheduler)
    assert "2 datasets in" in text
    assert f"connected with {shared_scheduler}" in text
    assert "2 ok, 0 flagged, 0 failed" in text
    assert "1 visit(s), 2 detector(s), 32 pedestals" in text
