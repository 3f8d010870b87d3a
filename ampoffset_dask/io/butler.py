"""Butler repositories as input: a registry query turned into a manifest of file URIs.

Only the client talks to the Butler (``lsst-daf-butler``, the ``[butler]`` extra): it queries
the datasets, asks the datastore for their URIs and hands plain strings to the workers, which
read the files with this package's readers. ``butler.get`` is never called (it would need the
LSST science pipelines to build an ``ExposureF``). Identity comes from the dataId - visit,
detector id, the detector's name from its dimension record, the instrument - never from the
file headers; the instrument name selects the built-in camera.

URIs become what the readers open: ``file://`` URIs local paths, ``s3://`` (and other
object-store) URIs ``scheme://bucket/key`` with the key as stored (the datastore's URIs are
percent-encoded), signed ``https://`` URIs as given, and zip members
``archive.zip#zip-path=member`` (the archive local or in a store);
`ampoffset_dask.io.remote` opens them (an S3 datastore's endpoint from ``S3_ENDPOINT_URL``
too, and a datastore addressed by an lsst.resources profile, ``s3://PROFILE@bucket/...``,
with the endpoint and keys of ``LSST_RESOURCES_S3_PROFILE_<PROFILE>``, as lsst.resources
takes them).
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InputError

__all__ = ["MANIFEST_COLUMNS", "find_inputs", "require_butler"]

logger = logging.getLogger(__name__)

#: Columns of the manifest `find_inputs` returns (``path`` is the URI again, for `process`).
MANIFEST_COLUMNS = ("uri", "visit", "detector", "detector_id", "instrument", "dataset_id",
                    "path")

_INSTALL = "pip install 'ampoffset-dask[butler]'"


def require_butler() -> Any:
    """The ``lsst.daf.butler`` module, or an `InputError` naming the extra to install."""
    try:
        import lsst.daf.butler as daf_butler
    except ImportError as exc:
        raise InputError(f"Butler input needs lsst-daf-butler: {_INSTALL}") from exc
    return daf_butler


def _collections(collections: str | Iterable[str]) -> list[str]:
    if isinstance(collections, str):
        out = [c.strip() for c in collections.split(",") if c.strip()]
    else:
        out = [str(c).strip() for c in collections if str(c).strip()]
    if not out:
        raise InputError("Butler input needs at least one collection (--collections)")
    return out


def uri_to_input(uri: Any) -> str:
    """The string a worker opens for a datastore URI: a local path for ``file://`` URIs
    (zip members keep their ``#zip-path=`` fragment), ``scheme://bucket/key`` with the key
    as stored for object stores, and ``http(s)://`` URLs (signed ones) unchanged.

    Datastore URIs are percent-encoded (``run%201``, ``t%C3%ABst``) while fsspec takes an
    object's key as it is: passing them on would name objects that do not exist.
    """
    text = str(uri)
    scheme = getattr(uri, "scheme", text.partition("://")[0] if "://" in text else "")
    if scheme in ("file", ""):
        path = uri.ospath if hasattr(uri, "ospath") else text.removeprefix("file://")
        fragment = getattr(uri, "unquoted_fragment", "")
        return f"{path}#{fragment}" if fragment else path
    if scheme in ("http", "https"):  # a signature is computed over the encoded URL
        return text
    parts = urllib.parse.urlsplit(text)
    key = urllib.parse.unquote(parts.path)
    fragment = urllib.parse.unquote(parts.fragment)
    return f"{parts.scheme}://{parts.netloc}{key}" + (f"#{fragment}" if fragment else "")


def find_inputs(
    repo: str,
    collections: str | Iterable[str],
    *,
    where: str | None = None,
    bind: Mapping[str, Any] | None = None,
    dataset_type: str = "post_isr_image",
    instrument: str | None = None,
) -> Any:
    """Query a Butler repository and return a manifest that `process` accepts.

    Parameters
    ----------
    repo : str
        A repository path, a butler config (``butler.yaml``) or a Butler server URL.
    collections : str or iterable of str
        Collections to search, in order (a comma-separated string is split).
    where : str, optional
        A Butler query expression (``"visit = 2025052000123 AND detector IN (90..98)"``).
    bind : mapping, optional
        Values for identifiers in ``where``.
    dataset_type : str
        Dataset type of assembled, trimmed exposures (``post_isr_image``; ``calexp`` and
        ``postISRCCD`` in older repositories).
    instrument : str, optional
        Restrict to one instrument (``LSSTCam``...).

    Returns
    -------
    pandas.DataFrame
        One row per dataset, sorted by visit and detector id, with columns ``uri``, ``visit``,
        ``detector`` (name), ``detector_id``, ``instrument``, ``dataset_id`` (UUID string) and
        ``path`` (the same as ``uri``). Datasets the registry lists but whose file the
        datastore no longer holds (pruned, or never written) are left out with a warning
        naming them.

    Raises
    ------
    InputError
        Without lsst-daf-butler (naming the extra), when the repository cannot be opened, the
        query is invalid, or it finds nothing (or nothing with its file in the datastore).
    """
    import pandas as pd

    daf_butler = require_butler()
    colls = _collections(collections)
    t0 = time.perf_counter()
    try:
        butler = daf_butler.Butler.from_config(str(repo), writeable=False)
    except Exception as exc:  # a bad path/URL raises many different types
        raise InputError(f"{repo}: cannot open the Butler repository: {exc}") from exc
    kwargs: dict[str, Any] = {}
    if instrument is not None:
        kwargs["instrument"] = instrument
    query = dict(collections=colls, where=where or "", bind=dict(bind or {}), limit=None,
                 explain=False, **kwargs)
    try:
        # The datasets alone, the detector names from their records separately: joining the
        # dimension records needs visit_detector_region rows, and a repository where some
        # visits lack them silently loses those visits' datasets from a joined query.
        refs = butler.query_datasets(dataset_type, **query)
        if not refs:
            raise InputError(
                f"{repo}: no {dataset_type!r} datasets in collections {colls}"
                + (f" of instrument {instrument!r} (names are case-sensitive)"
                   if instrument is not None else "")
                + (f" matching {where!r}" if where else "")
            )
        names = _detector_names(butler, refs)
        try:
            uris = butler.get_many_uris(refs)
        except FileNotFoundError:  # one dataset without its file fails them all
            refs = _stored(butler, repo, refs, names)
            uris = butler.get_many_uris(refs)
    except InputError:
        raise
    except Exception as exc:  # MissingDatasetTypeError, query syntax errors, ...
        hint = ""
        if instrument is None and "instrument" in str(exc):
            # a visit or detector number means nothing without its instrument
            hint = ("; a where clause naming a visit, exposure or detector needs the "
                    "instrument: give instrument= (--instrument LSSTCam)")
        raise InputError(f"{repo}: Butler query for {dataset_type!r} in {colls} failed: "
                         f"{type(exc).__name__}: {exc}{hint}") from exc
    rows = []
    for ref in refs:
        data_id = ref.dataId
        inst = str(data_id["instrument"])
        det_id = int(data_id["detector"])
        name = names[(inst, det_id)]
        visit = data_id.get("visit", data_id.get("exposure"))
        if visit is None:
            raise InputError(f"{repo}: dataset type {dataset_type!r} has no visit or exposure "
                             "dimension; amp offsets run on one (visit, detector) at a time")
        found = uris[ref]
        if found.primaryURI is None:
            raise InputError(
                f"{repo}: dataset {ref.id} ({inst} visit {visit} detector {name}) is stored "
                "disassembled (one file per plane); it needs a datastore that writes "
                "exposures as single files"
            )
        uri = uri_to_input(found.primaryURI)
        rows.append({"uri": uri, "visit": int(visit), "detector": name,
                     "detector_id": det_id, "instrument": inst, "dataset_id": str(ref.id),
                     "path": uri})
    table = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    table = table.sort_values(["visit", "detector_id"], kind="stable").reset_index(drop=True)
    logger.info("%s: %d %s datasets in %s (%.2f s)", repo, len(table), dataset_type, colls,
                time.perf_counter() - t0)
    return table


def _stored(butler: Any, repo: str, refs: list[Any], names: Mapping[tuple[str, int], str]
            ) -> list[Any]:
    """The refs whose files the datastore holds; the others (registered, but their files
    removed: pruned or never written) are named in a warning, and are an `InputError` when
    none is left."""
    stored = butler.stored_many(refs)
    kept = [ref for ref in refs if stored[ref]]
    gone = [ref for ref in refs if not stored[ref]]

    def label(ref: Any) -> str:
        data_id = ref.dataId
        visit = data_id.get("visit", data_id.get("exposure"))
        name = names.get((str(data_id["instrument"]), int(data_id["detector"])), "?")
        return f"visit {visit} detector {name} (dataset {ref.id})"

    listed = "; ".join(label(ref) for ref in gone[:5]) + (
        f"; and {len(gone) - 5} more" if len(gone) > 5 else "")
    if not kept:
        raise InputError(f"{repo}: none of the {len(gone)} datasets found has its file in the "
                         f"datastore (removed or never written): {listed}")
    logger.warning("%s: %d of %d datasets found have no file in the datastore (removed or "
                   "never written) and are left out: %s", repo, len(gone), len(refs), listed)
    return kept


def _detector_names(butler: Any, refs: list[Any]) -> dict[tuple[str, int], str]:
    """``{(instrument, detector id): full name}`` from the detector dimension records."""
    names: dict[tuple[str, int], str] = {}
    for inst in sorted({str(r.dataId["instrument"]) for r in refs}):
        for rec in butler.query_dimension_records("detector", instrument=inst, limit=None,
                                                  explain=False):
            names[(inst, int(rec.id))] = str(rec.full_name)
    missing = {(str(r.dataId["instrument"]), int(r.dataId["detector"])) for r in refs} - set(
        names)
    if missing:
        raise InputError(f"detectors without dimension records: {sorted(missing)[:5]}")
    return names
