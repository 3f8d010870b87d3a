"""The package's layers, checked from the source: each layer imports only from those below it.

Imports are read with `ast` (module level and inside functions alike), relative ones
resolved, so a lazy ``import dask`` in a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ampoffset_dask"

#: What the foundation modules may import from the package (nothing above their layer).
FOUNDATION = {
    "errors": set(),
    "masks": {"errors"},
    "config": {"errors", "masks"},
    "geometry": {"errors", "masks", "config"},
    "cameras": {"errors", "masks", "config", "geometry", "cameras"},
    "exposure": {"errors", "masks", "config", "geometry", "cameras"},
}
#: The algorithm layer: pure numpy/scipy on top of the foundation.
ALGORITHM_MAY_USE = set(FOUNDATION) | {"algorithm"}
#: Third-party packages that mean I/O or distribution, never allowed in the algorithm layer.
ALGORITHM_FORBIDDEN = ("dask", "distributed", "xarray", "astropy.io", "fsspec", "s3fs",
                       "pyarrow", "pandas")
#: The only modules that may import dask or distributed (the catalog's dask reader is
#: catalog.py or, once split, catalog/read.py).
DASK_ALLOWED = ("pipeline/", "io/xarray.py", "catalog.py", "catalog/read.py")


def module_name(path: Path) -> str:
    """Dotted name of a file of the package (``ampoffset_dask.io.fits``)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source``."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                if node.module:
                    found.append((node.lineno, ".".join([*base, node.module])))
                else:  # from . import x: x may be a module
                    found.extend((node.lineno, ".".join([*base, alias.name]))
                                 for alias in node.names)
            else:
                found.append((node.lineno, node.module))
    return found


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _own(name: str) -> str | None:
    """The top-level part of the package an import names (``io`` for ampoffset_dask.io.x)."""
    if name == "ampoffset_dask":
        return ""
    if name.startswith("ampoffset_dask."):
        return name.split(".")[1]
    return None


def violations(path: Path, source: str | None = None) -> list[str]:
    """Layer-rule violations of one file of the package."""
    rel = path.relative_to(PACKAGE).as_posix()
    source = path.read_text() if source is None else source
    top = rel.split("/")[0].removesuffix(".py")
    out = []
    for line, name in imports_of(source, module_name(path), path.name == "__init__.py"):
        where = f"{rel}:{line} imports {name}"
        own = _own(name)
        if _within(name, ("dask", "distributed")) and not rel.startswith(DASK_ALLOWED):
            out.append(f"{where}: dask only in {', '.join(DASK_ALLOWED)}")
        if top == "algorithm":
            if _within(name, ALGORITHM_FORBIDDEN):
                out.append(f"{where}: the algorithm layer does no I/O and no dask")
            if own is not None and own not in ALGORITHM_MAY_USE:
                out.append(f"{where}: the algorithm layer may only use "
                           f"{', '.join(sorted(ALGORITHM_MAY_USE))}")
        if top in FOUNDATION:
            if own is not None and own != top and own not in FOUNDATION[top]:
                out.append(f"{where}: {top} sits below it")
            if _within(name, ALGORITHM_FORBIDDEN):
                out.append(f"{where}: {top} does no I/O and no dask")
    return out


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_package_keeps_its_layers():
    problems = [v for path in package_files() for v in violations(path)]
    assert problems == []


@pytest.mark.parametrize("rel, source, expected", [
    ("algorithm/measure.py", "def f():\n    import dask.array\n", "dask only in"),
    ("algorithm/measure.py", "from ..io import fits\n", "may only use"),
    ("algorithm/measure.py", "from ..io.fits import read_exposure\n", "may only use"),
    ("algorithm/stats.py", "from astropy.io import fits\n", "no I/O and no dask"),
    ("algorithm/stats.py", "import xarray as xr\n", "no I/O and no dask"),
    ("algorithm/solve.py", "from ..pipeline import run\n", "may only use"),
    ("algorithm/solve.py", "from .. import task\n", "may only use"),
    ("config.py", "from .geometry import Detector\n", "config sits below it"),
    ("geometry.py", "from .algorithm import measure_detector\n", "geometry sits below it"),
    ("cameras/camera.py", "from ..io.fits import inspect_file\n", "cameras sits below it"),
    ("io/fits.py", "import distributed\n", "dask only in"),
    ("plots.py", "from dask import delayed\n", "dask only in"),
])
def test_the_checker_catches(rel, source, expected):
    """Each rule fails on a planted import (so the real check above can fail)."""
    found = violations(PACKAGE / rel, source)
    assert any(expected in v for v in found), found


@pytest.mark.parametrize("rel, source", [
    ("pipeline/run.py", "import distributed\nfrom dask import config\n"),
    ("io/xarray.py", "import dask.array as da\n"),
    ("catalog/read.py", "import dask.dataframe as dd\n"),
    ("catalog.py", "import dask.dataframe as dd\n"),
    ("algorithm/measure.py", "from ..geometry import Detector\nfrom .stats import x\n"
                             "from ..exposure import as_exposure_parts\nimport scipy.ndimage\n"),
    ("geometry.py", "from .errors import GeometryError\n"),
])
def test_the_checker_allows(rel, source):
    assert violations(PACKAGE / rel, source) == []
