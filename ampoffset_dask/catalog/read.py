"""Reading a catalog: one table to pandas, astropy, Arrow or dask; the latest rows or all.

A catalog keeps every run's rows (history). By default readers see the latest row of each
(visit, detector) - the row of the run that finished it last - and the pedestals and
interfaces of that row's run; a failed row of an input whose identity was unknown is hidden
once a later row of the same input has one. ``all_rows=True`` returns the history.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from .schema import PART, SCHEMAS, TABLES, sorted_table

__all__ = ["arrow_table", "latest_mask", "read_catalog", "read_visit_file", "visit_dir"]


def visit_dir(root: Path, table: str, visit: int) -> Path:
    """``root/<table>/visit=<visit>``."""
    return root / table / f"visit={int(visit)}"


def read_visit_file(root: Path, table: str, visit: int) -> pa.Table:
    """Every row of one visit's file of ``table`` (empty when there is none)."""
    path = visit_dir(root, table, visit) / PART
    if not path.exists():
        return SCHEMAS[table].empty_table()
    return pq.read_table(path, schema=SCHEMAS[table])


def arrow_table(root: Path, table: str, columns: Sequence[str] | None = None,
                filter: Any = None) -> pa.Table:
    """Every row of ``table`` (history included) as Arrow; ``visit`` first, as int64."""
    if table not in TABLES:
        raise ConfigError(f"unknown catalog table {table!r}; choose from {', '.join(TABLES)}")
    folder = root / table
    if table == "runs":
        schema = SCHEMAS["runs"]
        path = folder / PART
        tab = pq.read_table(path, schema=schema) if path.exists() else schema.empty_table()
        if columns is not None:
            tab = tab.select(list(columns))
        return tab
    schema = pa.schema([pa.field("visit", pa.int64()), *SCHEMAS[table]])
    if not folder.is_dir() or not any(folder.glob(f"visit=*/{PART}")):
        tab = schema.empty_table()
        return tab.select(list(columns)) if columns is not None else tab
    part = pads.partitioning(pa.schema([("visit", pa.int64())]), flavor="hive")
    dataset = pads.dataset(folder, format="parquet", partitioning=part, schema=schema)
    return dataset.to_table(columns=list(columns) if columns else None, filter=filter)


def latest_mask(detectors: Any) -> Any:
    """Boolean mask of the current rows of a ``detectors`` table (pandas DataFrame).

    Current: the latest row (by ``finished_at``) of each (visit, detector) - for rows without
    a detector, of each (visit, input) - except failed rows without a detector whose input
    has a row with a detector that is at least as recent.
    """
    import numpy as np

    det = detectors
    if len(det) == 0:
        return np.zeros(0, dtype=bool)
    key = det["detector"].where(det["detector"] != "", "input:" + det["input"])
    frame = det[["visit", "finished_at"]].assign(_key=key.to_numpy(), _pos=np.arange(len(det)))
    latest = frame.sort_values("finished_at", kind="stable").groupby(
        ["visit", "_key"], sort=False).tail(1)["_pos"].to_numpy()
    keep = np.zeros(len(det), dtype=bool)
    keep[latest] = True
    named = det["detector"] != ""
    if (~named).any() and named.any():
        newest = det[named].groupby("input")["finished_at"].max()
        later = det["input"].map(newest)
        keep &= ~((~named) & later.notna() & (later >= det["finished_at"])).to_numpy()
    return keep


def _current_runs(root: Path, visits: Iterable[int] | None) -> Any:
    """``(visit, detector, run_id)`` of the current ``detectors`` rows (pandas)."""
    flt = None if visits is None else pads.field("visit").isin([int(v) for v in visits])
    det = arrow_table(root, "detectors", columns=["visit", "detector", "input", "run_id",
                                                  "finished_at"], filter=flt).to_pandas()
    return det[latest_mask(det)][["visit", "detector", "run_id"]]


def _current(root: Path, table: str, tab: pa.Table, visits: Iterable[int] | None) -> pa.Table:
    import numpy as np

    if table == "runs" or tab.num_rows == 0:
        return tab
    if table == "detectors":
        cols = tab.select(["visit", "detector", "input", "finished_at"]).to_pandas()
        return tab.filter(pa.array(latest_mask(cols)))
    current = _current_runs(root, visits)
    keys = set(zip(current["visit"], current["detector"], current["run_id"], strict=True))
    rows = zip(tab["visit"].to_pylist(), tab["detector"].to_pylist(), tab["run_id"].to_pylist(),
               strict=True)
    return tab.filter(pa.array(np.fromiter((r in keys for r in rows), dtype=bool,
                                           count=tab.num_rows)))


def read_catalog(
    path: str | os.PathLike,
    table: str = "pedestals",
    format: str = "pandas",
    *,
    columns: Sequence[str] | None = None,
    visits: Iterable[int] | None = None,
    all_rows: bool = False,
):
    """Read one table of a catalog.

    Parameters
    ----------
    path : path-like
        The catalog directory (the ``output`` of `ampoffset_dask.process`).
    table : {"pedestals", "interfaces", "detectors", "runs"}
        Which table.
    format : {"pandas", "astropy", "arrow", "dask"}
        Return type: `pandas.DataFrame`, `astropy.table.Table`, `pyarrow.Table` or
        `dask.dataframe.DataFrame`.
    columns : sequence of str, optional
        Only these columns.
    visits : iterable of int, optional
        Only these visits (read only their files).
    all_rows : bool
        Every run's rows (the history) instead of the current row of each (visit, detector)
        and the pedestals and interfaces of its run.

    Returns
    -------
    DataFrame, Table or dask DataFrame
        ``visit`` is int64 and comes first; rows are sorted by visit, detector, then amp
        order (pedestals) or LSST's interface order (interfaces).

    Raises
    ------
    InputError
        If ``path`` is not a catalog directory.
    ConfigError
        For an unknown table or format.

    Examples
    --------
    >>> from ampoffset_dask import AmpOffsetConfig, read_catalog
    >>> from ampoffset_dask.catalog import CatalogWriter, DetectorResult
    >>> with CatalogWriter(tmp / "cat") as writer:
    ...     run_id = writer.start_run(config=AmpOffsetConfig())
    ...     writer.add(DetectorResult(visit=1, detector="R22_S11", status="ok",
    ...                               amp_names=["C10", "C11"], pedestals=[0.5, -0.5]))
    >>> read_catalog(tmp / "cat", "pedestals")[["visit", "detector", "amp", "pedestal"]]
       visit detector  amp  pedestal
    0      1  R22_S11  C10       0.5
    1      1  R22_S11  C11      -0.5
    >>> read_catalog(tmp / "cat", "detectors")[["visit", "detector", "status", "n_amps"]]
       visit detector status  n_amps
    0      1  R22_S11     ok       2
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: no catalog here (not a directory)")
    if format not in ("pandas", "astropy", "arrow", "dask"):
        raise ConfigError(f"format={format!r}: use 'pandas', 'astropy', 'arrow' or 'dask'")
    if table not in TABLES:
        raise ConfigError(f"unknown catalog table {table!r}; choose from {', '.join(TABLES)}")
    if format == "dask":
        return _read_dask(root, table, columns, visits, all_rows)
    flt = None
    if visits is not None and table != "runs":
        flt = pads.field("visit").isin([int(v) for v in visits])
    tab = arrow_table(root, table, columns=None, filter=flt)
    if not all_rows:
        tab = _current(root, table, tab, visits)
    # Stable sort: interfaces keep LSST's order within a detector.
    tab = sorted_table(tab, table)
    if columns is not None:
        tab = tab.select(list(columns))
    if format == "arrow":
        return tab
    df = tab.to_pandas(types_mapper=None)
    df = df.reset_index(drop=True)
    if format == "pandas":
        return df
    from astropy.table import Table

    return Table.from_pandas(df)


def _read_dask(root: Path, table: str, columns: Sequence[str] | None,
               visits: Iterable[int] | None, all_rows: bool):
    import dask.dataframe as dd

    if table == "runs":
        return dd.from_pandas(read_catalog(root, "runs", columns=columns), npartitions=1)
    filters = None if visits is None else [("visit", "in", [int(v) for v in visits])]
    ddf = dd.read_parquet(str(root / table), filters=filters)
    if "visit" in ddf.columns:
        ddf["visit"] = ddf["visit"].astype("int64")
    if not all_rows:
        if table == "detectors":
            keep = read_catalog(root, "detectors", visits=visits)[
                ["visit", "detector", "input", "run_id"]]
            ddf = ddf.merge(keep, on=["visit", "detector", "input", "run_id"], how="inner")
        else:
            ddf = ddf.merge(_current_runs(root, visits), on=["visit", "detector", "run_id"],
                            how="inner")
    return ddf[list(columns)] if columns else ddf
