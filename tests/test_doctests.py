"""The ``Examples`` sections of public docstrings run as doctests.

Each listed module's examples run with ``tmp`` (a fresh temporary folder) in their globals,
so they can write small files; they are kept tiny and fast.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "ampoffset_dask.algorithm.measure",  # measure_detector
    "ampoffset_dask.algorithm.apply",  # apply_pedestals
    "ampoffset_dask.io.xarray",  # open_exposure
    "ampoffset_dask.io.lru",  # LRUCache
    "ampoffset_dask.catalog.read",  # read_catalog
    "ampoffset_dask.catalog.lock",  # CatalogLock
    "ampoffset_dask.catalog.compact",  # compact_catalog
    "ampoffset_dask.pipeline.run",  # process (a one-worker local cluster)
    "ampoffset_dask.pipeline.options",  # RunOptions
]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name, tmp_path):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, extraglobs={"tmp": tmp_path}) if t.examples]
    assert tests, f"{name} has no examples"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
