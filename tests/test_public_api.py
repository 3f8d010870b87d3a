"""Every public name of DESIGN.md is importable from the package."""

import importlib

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


def test_catalog_names_resolve_on_first_use():
    import ampoffset_dask.catalog as catalog

    for name in catalog.__all__:
        assert name in dir(catalog)
        value = getattr(catalog, name)
        module = importlib.import_module(catalog._LAZY[name], "ampoffset_dask.catalog")
        assert value is getattr(module, name)
    try:
        catalog.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_pipeline_names_resolve_on_first_use():
    import ampoffset_dask.pipeline as pipeline

    for name in pipeline.__all__:
        assert name in dir(pipeline)
        value = getattr(pipeline, name)
        if name in pipeline._LAZY:
            module = importlib.import_module(pipeline._LAZY[name], "ampoffset_dask.pipeline")
            assert value is getattr(module, name)
    assert set(pipeline._LAZY) <= set(pipeline.__all__)
    try:
        pipeline.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


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
