"""What a run records about itself: config digest, package versions, input file stamps."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["config_digest", "input_records", "package_versions"]


def config_digest(config: Any) -> str:
    """SHA-256 (hex, 16 chars) of a config's canonical JSON (``to_dict`` when it has one).

    ``doApplyAmpOffset`` counts as False: whether a run subtracts the pedestals changes none
    of them, so measuring and then correcting are runs of one configuration (and the digest
    of a config with it False is the one catalogs have always recorded).
    """
    data = config.to_dict() if hasattr(config, "to_dict") else config
    if isinstance(data, Mapping):
        data = {k: (False if k in ("do_apply_amp_offset", "doApplyAmpOffset") else v)
                for k, v in data.items()}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that change the numbers or the files."""
    return dict(_package_versions())


@functools.cache
def _package_versions() -> dict[str, str]:
    # Once per process (the metadata lookups take ~20 ms, before any task of a run starts):
    # the modules this process has imported do not change while it runs.
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("ampoffset-dask", "numpy", "scipy", "astropy", "xarray", "dask",
                 "distributed", "pyarrow", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover - optional in odd environments
            out[name] = "not installed"
    return out


def input_records(paths: Iterable[str | os.PathLike],
                  url_stamps: Mapping[str, tuple[Any, ...]] | None = None
                  ) -> list[dict[str, Any]]:
    """``[{path, size, mtime}]`` of each input (size -1 when it cannot be examined), with
    ``etag`` for objects whose store tags their versions.

    Local files are stat'ed; objects of a store (``s3://``...) give the size, time and tag
    their store reports (`~ampoffset_dask.io.remote.url_stamp`, asked in a few threads), unless
    ``url_stamps`` holds them already (what planning asked the store, by URL).
    """
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    from ..io.remote import is_url, url_stamp

    paths = [str(p) for p in paths]
    wanted = set(paths)
    stamps: dict[str, Any] = {p: s for p, s in (url_stamps or {}).items()
                              if p in wanted and is_url(p)}
    urls = [p for p in paths if is_url(p) and p not in stamps]
    if urls:
        with ThreadPoolExecutor(min(8, len(urls))) as pool:
            # each lookup in a copy of this context: the run's storage options (the endpoint,
            # the credentials) are context variables the pool's threads would not have
            futures = [pool.submit(contextvars.copy_context().run, url_stamp, u) for u in urls]
            stamps.update((u, f.result()) for u, f in zip(urls, futures, strict=True))
    out = []
    for p in paths:
        if p in stamps:
            stamp = stamps[p]
            record = {"path": p, "size": -1 if stamp is None else stamp[0],
                      "mtime": None if stamp is None else stamp[1]}
            if stamp is not None and len(stamp) > 2:  # the store's version tag (ETag)
                record["etag"] = stamp[2]
            out.append(record)
            continue
        try:
            st = os.stat(p)
            out.append({"path": p, "size": st.st_size, "mtime": st.st_mtime})
        except OSError:
            out.append({"path": p, "size": -1, "mtime": None})
    return out
