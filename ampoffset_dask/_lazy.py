"""Package attributes imported on first use (module ``__getattr__``, PEP 562).

The package ``__init__`` modules list their heavier public names here so that importing a
package costs only what its caller uses: a dask worker unpickling its task, or the LSST stack
importing the algorithm layer, never loads pandas, pyarrow's readers or xarray.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, names: Mapping[str, str], namespace: dict[str, Any],
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package with lazily imported names.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    names : mapping
        Public name -> the module that defines it (relative to ``package`` when it starts
        with a dot).
    namespace : dict
        The package's ``globals()``: a name is stored there when first imported, so later
        lookups do not come back here.
    """

    def get_attribute(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def list_names() -> list[str]:
        return sorted(set(namespace) | set(names))

    return get_attribute, list_names
