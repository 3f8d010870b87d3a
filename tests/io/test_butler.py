"""Butler input: a real repository (SQLite registry, file datastore) built in a temporary folder.

The repository is made with lsst-daf-butler by ``tests/butler_repo.py``; the package queries it
with `ampoffset_dask.io.butler.find_inputs` and reads the files itself (no afw).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from butler_repo import DETECTORS, HEADER_VISIT, RUN, VISIT, make_repo

from ampoffset_dask.errors import InputError
from ampoffset_dask.io.butler import MANIFEST_COLUMNS, find_inputs, require_butler
from ampoffset_dask.io.fits import inspect_file, open_lazy


@pytest.fixture(scope="module", autouse=True)
def _butler():
    pytest.importorskip("lsst.daf.butler")  # the [butler] extra is in the test extra


@pytest.fixture(scope="module")
def detector_files(butler_detector_files):
    return butler_detector_files


@pytest.fixture(scope="module")
def repo(butler_repo_root):
    """The run's shared repository (tests/conftest.py): the tests only query it."""
    return butler_repo_root


def test_find_inputs_manifest(repo, detector_files):
    table = find_inputs(str(repo), RUN)
    assert tuple(table.columns) == MANIFEST_COLUMNS
    assert table["detector"].tolist() == ["R22_S11", "R22_S12"]
    assert table["detector_id"].tolist() == [94, 95]
    assert set(table["visit"]) == {VISIT} and set(table["instrument"]) == {"LSSTCam"}
    assert table["dataset_id"].str.len().eq(36).all()  # UUIDs
    assert (table["uri"] == table["path"]).all()
    for uri, (src, *_rest) in zip(table["uri"], detector_files, strict=True):
        assert uri.startswith(str(repo)) and uri.endswith(".fits")  # copied into the datastore
        assert_same_pixels(uri, src, _rest[2])


def assert_same_pixels(uri, src, name):
    """The file behind ``uri`` holds the bytes of ``src`` and reads as a detector."""
    from ampoffset_dask.io import remote

    assert Path(remote.localize(uri)).read_bytes() == Path(src).read_bytes()
    a = open_lazy(uri, "lsstcam", name).image[1990:2010, :]
    np.testing.assert_array_equal(a, open_lazy(src, "lsstcam", name).image[1990:2010, :])


def test_identity_comes_from_the_data_id_not_the_header(repo):
    table = find_inputs(str(repo), RUN)
    info = inspect_file(table["uri"][0])
    assert info.visit == HEADER_VISIT != VISIT  # the header is wrong on purpose
    assert set(table["visit"]) == {VISIT}
    assert [(int(a), b) for a, b in zip(table["detector_id"], table["detector"],
                                         strict=True)] == list(DETECTORS)


def test_where_and_bind(repo):
    table = find_inputs(str(repo), [RUN], where="detector = det AND visit = v",
                        bind={"det": 95, "v": VISIT}, instrument="LSSTCam")
    assert table["detector"].tolist() == ["R22_S12"]


def test_without_visit_detector_region_rows(tmp_path, detector_files):
    """with_dimension_records=True finds nothing without region rows: names come from the
    detector records instead."""
    root = tmp_path / "noregions"
    make_repo(root, detector_files, regions=False)
    table = find_inputs(str(root), RUN)
    assert table["detector"].tolist() == ["R22_S11", "R22_S12"]


def test_visits_without_region_rows_beside_visits_with_them(tmp_path, detector_files):
    """A joined query (dimension records attached) drops the datasets of visits that have no
    visit_detector_region rows: it found the first visit's two and silently lost the
    second's while any were found."""
    from butler_repo import DAY_OBS, FORMATTER
    from lsst.daf.butler import DatasetRef, FileDataset

    root = tmp_path / "mixed"
    butler = make_repo(root, detector_files, regions=True)
    later = VISIT + 1
    butler.registry.insertDimensionData("visit", {
        "instrument": "LSSTCam", "id": later, "day_obs": DAY_OBS, "physical_filter": "r_57",
        "name": f"visit{later}", "seq_num": later % 100000})
    dtype = butler.registry.getDatasetType("post_isr_image")
    butler.ingest(*[
        FileDataset(path=str(Path(p).resolve()),
                    refs=[DatasetRef(dtype, {"instrument": "LSSTCam", "visit": later,
                                             "detector": d}, run=RUN)],
                    formatter=FORMATTER)
        for p, _v, d, _n in detector_files], transfer="copy")
    table = find_inputs(str(root), RUN)
    assert list(zip(table["visit"], table["detector"], strict=True)) == [
        (VISIT, "R22_S11"), (VISIT, "R22_S12"), (later, "R22_S11"), (later, "R22_S12")]
    one = find_inputs(str(root), RUN, where="detector = 94", instrument="LSSTCam")
    assert one["visit"].tolist() == [VISIT, later]


def test_zip_member_uris(tmp_path, repo, detector_files):
    """A repository holding the datasets in a zip: URIs are zip members the readers open."""
    from lsst.daf.butler import Butler

    source = Butler.from_config(str(repo))
    refs = source.query_datasets("post_isr_image", collections=RUN, explain=False)
    archive = source.retrieve_artifacts_zip(refs, tmp_path / "zips")
    zipped = make_repo(tmp_path / "zipped", detector_files, ingest=False)
    zipped.ingest_zip(archive, transfer="copy")
    table = find_inputs(str(tmp_path / "zipped"), RUN)
    assert table["uri"].str.contains(".zip#zip-path=", regex=False).all()
    for uri, (src, _v, _d, name) in zip(table["uri"], detector_files, strict=True):
        assert_same_pixels(uri, src, name)


def test_clear_errors(tmp_path, repo):
    with pytest.raises(InputError, match="cannot open the Butler repository"):
        find_inputs(str(tmp_path / "nothing-here"), RUN)
    with pytest.raises(InputError, match="no 'post_isr_image' datasets"):
        find_inputs(str(repo), RUN, where="detector = 3", instrument="LSSTCam")
    with pytest.raises(InputError, match="calexp"):
        find_inputs(str(repo), RUN, dataset_type="calexp")
    with pytest.raises(InputError, match="at least one collection"):
        find_inputs(str(repo), " , ")


def test_missing_extra_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lsst.daf.butler", None)  # import fails as if absent
    with pytest.raises(InputError, match=r"pip install 'ampoffset-dask\[butler\]'"):
        require_butler()


def test_a_where_clause_without_the_instrument_says_to_give_it(repo):
    """The butler's own message ("references a dimension dependent on instrument") did not
    say what to add."""
    with pytest.raises(InputError, match=r"needs the instrument: give instrument= "
                                         r"\(--instrument LSSTCam\)"):
        find_inputs(str(repo), RUN, where="detector = 94")
