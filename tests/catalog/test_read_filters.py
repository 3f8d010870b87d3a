"""`read_catalog`'s ``detectors=`` and ``visits=`` filters: a detector by name in any case or by
id, a visit given as a bare value or a string, and values that are not visits refused; the
same rows in every output format, per-visit or compacted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ampoffset_dask import AmpOffsetConfig, ConfigError
from ampoffset_dask.catalog import CatalogWriter, DetectorResult, compact_catalog, read_catalog

FORMATS = ("pandas", "arrow", "astropy", "dask")
DETECTORS = {"R22_S11": 94, "R22_S12": 95}


def _frame(got, fmt):
    if fmt == "dask":
        return got.compute()
    return got.to_pandas() if fmt in ("arrow", "astropy") else got


@pytest.fixture(scope="module", params=["per-visit", "compacted"])
def catalog(request, tmp_path_factory):
    """Visits 1, 2 and 12 of two detectors, visit 2 of R22_S11 measured again by a second
    run (history), the catalog then compacted or not."""
    path = tmp_path_factory.mktemp("filters") / "cat"
    with CatalogWriter(path) as writer:
        for run, visits in enumerate(([1, 2, 12], [2])):
            writer.start_run(config=AmpOffsetConfig(), new_run=run > 0)
            for visit in visits:
                for name, det_id in DETECTORS.items():
                    if run and name != "R22_S11":
                        continue
                    writer.add(DetectorResult(
                        visit=visit, detector=name, status="ok", detector_id=det_id,
                        amp_names=["C10", "C11"], pedestals=[0.5 + run, -0.5 - run]))
            writer.finish_run()
    if request.param == "compacted":
        compact_catalog(path)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table", ["pedestals", "detectors"])
@pytest.mark.parametrize("all_rows", [False, True])
def test_detectors_match_names_in_any_case_and_ids(catalog, fmt, table, all_rows):
    want = _frame(read_catalog(catalog, table, fmt, detectors=["R22_S11"], all_rows=all_rows),
                  fmt)
    assert len(want) and set(want["detector"]) == {"R22_S11"}
    for key in (["r22_s11"], ["R22_s11 "], "r22_s11", [94], 94, [np.int64(94)], ["94"],
                ["r22_s11", 94]):
        got = _frame(read_catalog(catalog, table, fmt, detectors=key, all_rows=all_rows), fmt)
        pd.testing.assert_frame_equal(got.reset_index(drop=True),
                                      want.reset_index(drop=True), obj=repr(key))
    both = _frame(read_catalog(catalog, table, fmt, detectors=["r22_s12", 94],
                               all_rows=all_rows), fmt)
    assert set(both["detector"]) == set(DETECTORS)
    for key in (["R99_S99"], [7], []):  # none of the catalog's: no rows, as before
        assert len(_frame(read_catalog(catalog, table, fmt, detectors=key), fmt)) == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_visit_is_one_value_never_its_characters(catalog, fmt):
    def visits_of(value):
        got = _frame(read_catalog(catalog, "pedestals", fmt, visits=value), fmt)
        return sorted(set(got["visit"]))

    assert visits_of("12") == visits_of(12) == visits_of(["12"]) == [12]
    assert visits_of(" 2") == visits_of(np.int32(2)) == visits_of(np.array([2])) == [2]
    assert visits_of([1.0, 2]) == visits_of(range(1, 3)) == [1, 2]
    assert visits_of([1, "12"]) == [1, 12]
    for bad in ([2.7], 2.7, "1,2", ["abc"], [True], [float("nan")], "", [None]):
        with pytest.raises(ConfigError, match=r"visits: .* is not a visit number") as err:
            read_catalog(catalog, "pedestals", fmt, visits=bad)
        assert repr(bad if not isinstance(bad, list) else bad[0]) in str(err.value)


def test_bad_detector_keys_are_refused(catalog):
    for bad in ([True], [2.5], 2.5, [None]):
        with pytest.raises(ConfigError, match=r"detectors: .* is not a detector name or "
                                              r"integer id"):
            read_catalog(catalog, "pedestals", detectors=bad)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table", ["detectors", "runs"])
def test_one_column_by_name_is_that_column_not_its_letters(catalog, fmt, table):
    got = _frame(read_catalog(catalog, table, fmt, columns="status"), fmt)
    assert list(got.columns) == ["status"] and len(got)
    want = _frame(read_catalog(catalog, table, fmt, columns=["status"]), fmt)
    pd.testing.assert_frame_equal(got, want)


def test_a_column_the_table_lacks_is_named_with_the_ones_it_has(catalog):
    # the runs table has no visit: a ConfigError like the other tables', not a KeyError
    with pytest.raises(ConfigError, match=r"catalog table 'runs' has no column\(s\) "
                       r"\['visit'\]; it has run_id, status, "):
        read_catalog(catalog, "runs", columns=["visit"])
    with pytest.raises(ConfigError, match=r"'pedestals' has no column\(s\) \['nope'\]; it "
                       r"has visit, "):
        read_catalog(catalog, "pedestals", columns=["nope"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_columns_given_as_an_iterator_are_those_columns(catalog, fmt):
    # a generator was consumed by the column check: every row came back with no columns
    want = _frame(read_catalog(catalog, "detectors", fmt, columns=["visit", "detector"]), fmt)
    got = _frame(read_catalog(catalog, "detectors", fmt,
                              columns=(c for c in ["visit", "detector"])), fmt)
    assert list(got.columns) == ["visit", "detector"]
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize("columns", [b"visit", 5, ["visit", 5]])
def test_columns_that_are_not_names_are_refused(catalog, columns):
    with pytest.raises(ConfigError, match=r"give a column name or a list of them"):
        read_catalog(catalog, "detectors", columns=columns)
