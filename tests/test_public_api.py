"""Every public name of DESIGN.md is importable from the package."""

import importlib

import pytest

import ampoffset_dask

PUBLIC = [
    "AmpOffsetConfig", "AmpOffsetTask", "Amplifier", "Detector", "Camera", "Exposure",
    "measure_detector", "get_camera", "list_cameras", "open_exposure", "open_visit", "process",
    "build_graph", "read_catalog", "AmpOffsetError", "ConfigError", "GeometryError",
    "InputError", "ClusterError", "RunOptions",
]


def test_public_names_resolve():
    for name in PUBLIC:
        assert name in ampoffset_dask.__all__
        assert getattr(ampoffset_dask, name) is not None


def test_error_hierarchy():
    base = ampoffset_dask.AmpOffsetError
    for name in ("ConfigError", "GeometryError", "InputError", "ClusterError"):
        assert issubclass(getattr(ampoffset_dask, name), base)


def test_algorithm_layer_imports_no_dask():
    """The algorithm layer stays pure numpy/scipy: importing it pulls in no dask."""
    import subprocess
    import sys

    code = (
        "import sys, ampoffset_dask.algorithm.measure, ampoffset_dask.task;"
        "print(any(m == 'dask' or m.startswith('dask.') or m.startswith('distributed')"
        " for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_attribute_raises():
    try:
        importlib.import_module("ampoffset_dask").no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


@pytest.mark.parametrize("package, all_lazy", [("ampoffset_dask.catalog", True),
                                               ("ampoffset_dask.pipeline", False),
                                               ("ampoffset_dask", False)])
def test_names_resolve_on_first_use(package, all_lazy):
    """Each public name of a package with lazily imported names (`ampoffset_dask._lazy`)
    is listed, resolves to its module's object, and an unknown name raises."""
    pkg = importlib.import_module(package)
    for name in pkg.__all__:
        assert name in dir(pkg)
        value = getattr(pkg, name)
        if all_lazy or name in pkg._LAZY:
            module = importlib.import_module(pkg._LAZY[name], package)
            assert value is getattr(module, name)
    assert set(pkg._LAZY) <= set(pkg.__all__)
    with pytest.raises(AttributeError, match="no_such_name"):
        pkg.no_such_name  # noqa: B018


def test_a_worker_importing_the_job_skips_the_catalog_readers():
    """Every dask worker imports the per-detector job; reading catalogs (pandas,
    pyarrow.dataset, pyarrow.compute, pyarrow.parquet) and running `process` (the rest of
    ``ampoffset_dask.pipeline``) are the client's business."""
    import subprocess
    import sys

    code = (
        "import sys, ampoffset_dask.pipeline.detector_job;"
        "print(sorted(m for m in ('pandas', 'pyarrow.dataset', 'pyarrow.compute',"
        " 'pyarrow.parquet', 'ampoffset_dask.pipeline.run', 'ampoffset_dask.pipeline.graph',"
        " 'ampoffset_dask.catalog.read') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
