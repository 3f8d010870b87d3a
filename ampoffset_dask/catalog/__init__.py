"""The results catalog: Parquet tables of detectors, pedestals, interfaces and runs.

Layout of a catalog directory ``CATALOG``::

    CATALOG/detectors/visit=<v>/part-0.parquet    rows per (visit, detector)
    CATALOG/pedestals/visit=<v>/part-0.parquet    rows per (visit, detector, amp)
    CATALOG/interfaces/visit=<v>/part-0.parquet   rows per (visit, detector, interface)
    CATALOG/<table>/_compacted/v<a>_<b>_<tag>.parquet  compacted rows of visits a..b
    CATALOG/runs/part-0.parquet                   one row per run (config, versions, inputs)
    CATALOG/_journal/<run>.jsonl                  results of a running (or killed) run
    CATALOG/_quarantine/<run>.jsonl               journal lines that could not be recovered
    CATALOG/.lock                                 the writer's lock and owner record

The ``visit`` column lives in the hive-style directory name, so ``pandas.read_parquet(CATALOG /
"pedestals")`` and ``dask.dataframe.read_parquet`` see it (as a category; `read_catalog` gives
int64); after `compact_catalog` the rows of compacted visits are in ``_compacted`` files,
which such raw readers skip: read compacted catalogs with `read_catalog`. Inputs whose visit
could not be determined are recorded under ``visit=-1``. The files keep every run's rows;
`read_catalog` shows the latest row of each (visit, detector) unless ``all_rows=True``:
latest in the order the catalog writer recorded them (each run's ``started`` in the runs table,
then each row's ``recorded_at``; both by the writer's clock, never a worker's).

Its errors are `~ampoffset_dask.errors.InputError` subclasses naming the file:
`DamagedCatalogError` (a file cannot be read, with how to recover) and `CatalogWriteError`
(full disk, read-only file system). `pending_journals` lists results of killed runs not yet
in the tables.

One module per job: `~ampoffset_dask.catalog.schema` (tables and the per-detector record),
`~ampoffset_dask.catalog.read` (readers), `~ampoffset_dask.catalog.lock` (one writer at a
time), `~ampoffset_dask.catalog.journal` (crash safety), `~ampoffset_dask.catalog.writer`
(`CatalogWriter`), `~ampoffset_dask.catalog.compact` (`compact_catalog`: many visits per
file) and `~ampoffset_dask.catalog.provenance` (what a run records).
"""

from __future__ import annotations

from .._lazy import lazy_attributes

# Each public name and the module that defines it. They are imported when first used, so a
# process that only builds records (every dask worker) does not pay for pandas and
# pyarrow.dataset, which reading and compaction need.
_LAZY = {
    "CompactionResult": ".compact",
    "compact_catalog": ".compact",
    "Journal": ".journal",
    "replay": ".journal",
    "PendingJournal": ".journal",
    "pending_journals": ".journal",
    "CatalogBusyError": ".lock",
    "CatalogLock": ".lock",
    "config_digest": ".provenance",
    "input_records": ".provenance",
    "package_versions": ".provenance",
    "read_catalog": ".read",
    "SCHEMAS": ".schema",
    "TABLES": ".schema",
    "UNKNOWN_VISIT": ".schema",
    "VISIT_TABLES": ".schema",
    "CatalogFileError": ".schema",
    "CatalogWriteError": ".schema",
    "DamagedCatalogError": ".schema",
    "DetectorResult": ".schema",
    "CatalogWriter": ".writer",
    "CurrentRow": ".writer",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())


__all__ = [
    "SCHEMAS",
    "TABLES",
    "UNKNOWN_VISIT",
    "VISIT_TABLES",
    "CatalogBusyError",
    "CatalogFileError",
    "CatalogLock",
    "CatalogWriteError",
    "CatalogWriter",
    "CompactionResult",
    "CurrentRow",
    "DamagedCatalogError",
    "DetectorResult",
    "Journal",
    "PendingJournal",
    "compact_catalog",
    "config_digest",
    "input_records",
    "package_versions",
    "pending_journals",
    "read_catalog",
    "replay",
]
