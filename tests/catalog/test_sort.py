"""The catalog's row order: the fast sort of large tables equals Arrow's stable sort."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ampoffset_dask.catalog.schema import sorted_table


def test_large_tables_sort_like_arrow():
    rng = np.random.default_rng(1)
    n = 60_000
    table = pa.table({
        "visit": rng.integers(-1, 2**40, n // 10).repeat(10),
        "detector": pa.array(rng.choice(["R22_S11", "R01_S00", "R22_S1", ""], n)),
        "amp_index": rng.integers(0, 16, n).astype(np.int32),
        "row": np.arange(n),  # ties keep their order
    })
    fast = sorted_table(table, "pedestals")
    assert fast.equals(table.sort_by([("visit", "ascending"), ("detector", "ascending"),
                                      ("amp_index", "ascending")]))
    assert sorted_table(fast, "pedestals") is fast  # already sorted: no copy
    with_null = table.set_column(1, "detector", pa.array([None] + ["A"] * (n - 1)))
    assert sorted_table(with_null, "pedestals").equals(with_null.sort_by(
        [("visit", "ascending"), ("detector", "ascending"), ("amp_index", "ascending")]))
