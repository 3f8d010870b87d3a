"""`process` and ``ampoffset-dask run`` on data where users keep it: a real Butler repository
(temporary, SQLite + file datastore) and a real S3 server (moto) on 127.0.0.1. Results must
equal a run on the same files given as local paths."""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
from cli_helpers import cli

from ampoffset_dask import AmpOffsetConfig, process, read_catalog

EDGES = AmpOffsetConfig(do_background=False, do_detection=False)


class S3Data(NamedTuple):
    endpoint: str
    env: dict
    paths: list
    client: object
    survey: str  # the input bucket
    results: str  # the output bucket


def pedestals(catalog) -> pd.Series:
    p = read_catalog(catalog, "pedestals")
    return p.set_index(["detector", "amp"])["pedestal"].sort_index()


# ------------------------------------------------------------------------------------------
# Butler
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def butler_repo(butler_repo_root, butler_detector_files):
    """The run's shared repository (tests/conftest.py) and its files: the runs only read it."""
    return butler_repo_root, butler_detector_files


def test_process_butler_manifest_equals_paths(butler_repo, client, tmp_path):
    from butler_repo import RUN, VISIT

    from ampoffset_dask.io.butler import find_inputs

    root, files = butler_repo
    table = find_inputs(str(root), RUN)
    s = process(table, tmp_path / "butler", client=client, config=EDGES, progress=False)
    assert (s.n_ok, s.n_failed) == (2, 0), s.failed
    ref = process([str(p) for p, *_ in files], tmp_path / "paths", client=client,
                  config=EDGES, progress=False)
    assert ref.n_ok == 2
    pd.testing.assert_series_equal(pedestals(tmp_path / "butler"), pedestals(tmp_path / "paths"),
                                   rtol=0, atol=0)
    det = read_catalog(tmp_path / "butler", "detectors").sort_values("detector")
    assert set(det["visit"]) == {VISIT}  # the dataId's, not the header's
    assert det["detector_id"].tolist() == table["detector_id"].tolist()
    assert det["input"].tolist() == table["uri"].tolist()
    assert det["dataset_id"].tolist() == table["dataset_id"].tolist()


def test_butler_datasets_are_never_corrected_in_place(butler_repo, client, tmp_path):
    """In place, a Butler input's file in the datastore was rewritten (its size and checksum
    then no longer those the datastore records)."""
    import hashlib

    from butler_repo import RUN

    from ampoffset_dask import InputError
    from ampoffset_dask.io.butler import find_inputs

    root, _ = butler_repo
    table = find_inputs(str(root), RUN)
    before = [hashlib.sha256(open(u, "rb").read()).hexdigest() for u in table["uri"]]
    with pytest.raises(InputError, match=r"dataset [0-9a-f-]{36} of a Butler repository "
                                         r"cannot be corrected in place"):
        process(table, tmp_path / "cat", client=client, config=EDGES, progress=False,
                in_place=True)
    assert [hashlib.sha256(open(u, "rb").read()).hexdigest() for u in table["uri"]] == before


def test_cli_butler_run(butler_repo, client, tmp_path):
    from butler_repo import RUN, VISIT

    root, _ = butler_repo
    cat = tmp_path / "cat"
    proc = cli("run", "--butler", root, "--collections", f"{RUN},",
               "--instrument", "LSSTCam", "--where", "detector = 95",
               "--set", "doBackground=false",
               "--set", "doDetection=false", "--output", cat,
               "--scheduler", client.scheduler.address)
    assert proc.returncode == 0, proc.stderr
    det = read_catalog(cat, "detectors")
    assert det[["visit", "detector", "status"]].values.tolist() == [[VISIT, "R22_S12", "ok"]]
    assert len(det["dataset_id"].iloc[0]) == 36

    bad = cli("run", "--butler", root, "--collections", RUN, "--dataset-type", "calexp",
              "--output", tmp_path / "x")
    assert bad.returncode == 2 and "calexp" in bad.stderr
    missing = cli("run", "--butler", root, "--collections", f"{RUN},other/none",
                  "--output", tmp_path / "z")
    assert missing.returncode == 2 and "other/none" in missing.stderr
    both = cli("run", "somefile.fits", "--butler", root, "--collections", RUN,
               "--output", tmp_path / "y")
    assert both.returncode == 2 and "either INPUTs or --butler" in both.stderr


# ------------------------------------------------------------------------------------------
# S3 (moto server)
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3(tmp_path_factory, s3_endpoint):
    """Two small detector files in a bucket of the run's S3 server, an empty bucket for
    outputs (both named after this process: the server is shared), and the environment
    that points the command at the server."""
    from s3_server import KEYS, bucket_name, s3_client

    from ampoffset_dask.io.fits import write_exposure

    folder = tmp_path_factory.mktemp("s3_files")
    rng = np.random.default_rng(8)
    from ampoffset_dask import Amplifier, Detector

    det = Detector("wide", 2000, 40, tuple(Amplifier(f"C0{c}", c * 500, 0, 500, 40)
                                           for c in range(4)))
    paths = []
    for k in range(2):
        image = rng.normal(500.0, 2.0, det.shape).astype(np.float32)
        for i, amp in enumerate(det):
            image[amp.slices] += (k + 1) * i
        paths.append(write_exposure(folder / f"det{k}.fits", image, detector=det,
                                    header={"VISIT": 5, "DETNAME": f"D{k}"}))
    client = s3_client(s3_endpoint)
    survey, results = bucket_name("survey"), bucket_name("results")
    client.create_bucket(Bucket=survey)
    client.create_bucket(Bucket=results)
    for p in paths:
        client.upload_file(str(p), survey, f"raw/visit5/{p.name}")
    env = {**os.environ, **KEYS, "AWS_ENDPOINT_URL": s3_endpoint}
    return S3Data(s3_endpoint, env, paths, client, survey, results)


def cli_in(env: dict, monkeypatch, *args):
    """`cli` with the S3 settings of ``env`` (endpoint, keys, region) in this process's
    environment, where the command reads them (at each run)."""
    from s3_server import KEYS

    for name in (*KEYS, "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(name, env[name])
    return cli(*args)


def test_cli_s3_run_equals_local_and_writes_objects(s3, client, tmp_path, monkeypatch):
    _endpoint, env, paths, s3client, survey, results = s3
    config = ["--set", "doBackground=false", "--set", "doDetection=false",
              "--set", "ampEdgeWidth=12"]
    proc = cli_in(env, monkeypatch, "run", f"s3://{survey}/raw/visit5/", *config, "--output",
                  tmp_path / "remote", "--output-images", f"s3://{results}/corrected",
                  "--scheduler", client.scheduler.address)
    assert proc.returncode == 0, proc.stderr
    local = cli("run", *map(str, paths), *config, "--output", tmp_path / "local",
                "--scheduler", client.scheduler.address)
    assert local.returncode == 0, local.stderr
    pd.testing.assert_series_equal(pedestals(tmp_path / "remote"),
                                   pedestals(tmp_path / "local"), rtol=0, atol=0)
    det = read_catalog(tmp_path / "remote", "detectors").sort_values("detector")
    assert det["input"].tolist() == [f"s3://{survey}/raw/visit5/{p.name}" for p in paths]
    assert det["output"].tolist() == [f"s3://{results}/corrected/5/D{k}/{p.name}"
                                      for k, p in enumerate(paths)]
    # corrected images need whole exposures: each object fetched once, headers twice
    assert ((det["fetched_fraction"] >= 1.0) & (det["fetched_fraction"] < 1.5)).all()
    keys = [o["Key"] for o in s3client.list_objects_v2(Bucket=results)["Contents"]
            if not o["Key"].endswith("/.ampoffset-outputs")]
    assert sorted(keys) == [f"corrected/5/D{k}/{p.name}" for k, p in enumerate(paths)]
    # each upload is a complete corrected exposure
    body = s3client.get_object(Bucket=results, Key=keys[0])["Body"].read()
    import io as _io

    from astropy.io import fits as pyfits

    with pyfits.open(_io.BytesIO(body)) as hdul:
        assert hdul[0].header["LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] is True
    # the credentials appear nowhere in the catalog
    for table in ("detectors", "runs"):
        text = read_catalog(tmp_path / "remote", table).to_json()
        assert env["AWS_SECRET_ACCESS_KEY"] not in text


def test_cli_s3_edges_only_fetches_a_fraction(s3, client, tmp_path, monkeypatch):
    endpoint, env, _paths, _, survey, _ = s3
    opts = json.dumps({"endpoint_url": endpoint})
    proc = cli_in({**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, monkeypatch,  # option wins
                  "run", f"s3://{survey}/raw/visit5/det0.fits", "--set", "doBackground=false",
                  "--set", "doDetection=false", "--set", "ampEdgeWidth=12",
                  "--storage-options", opts, "--output", tmp_path / "cat",
                  "--scheduler", client.scheduler.address)
    assert proc.returncode == 0, proc.stderr
    det = read_catalog(tmp_path / "cat", "detectors")
    fraction = float(det["fetched_fraction"].iloc[0])
    # with the default merge gap, whole rows of IMAGE and MASK (2/3 of the object) and the
    # headers; never VARIANCE, never a download of the whole object
    assert 0.5 < fraction < 0.9, fraction


def test_cli_s3_errors(s3, s3_checking_endpoint, client, tmp_path, monkeypatch):
    _endpoint, env, _paths, _, survey, _ = s3
    edges = ["--set", "doBackground=false", "--set", "doDetection=false",
             "--set", "ampEdgeWidth=12", "--scheduler", client.scheduler.address]
    # a manifest naming a missing object among good ones: a failed row naming it
    manifest = tmp_path / "inputs.csv"
    pd.DataFrame({"path": [f"s3://{survey}/raw/visit5/det0.fits",
                           f"s3://{survey}/raw/visit5/gone.fits"],
                  "visit": [5, 5], "detector": ["D0", "D9"]}).to_csv(manifest, index=False)
    proc = cli_in(env, monkeypatch, "run", manifest, *edges, "--output", tmp_path / "a")
    assert proc.returncode == 1, proc.stderr
    assert "gone.fits" in proc.stderr and "no such object" in proc.stderr
    det = read_catalog(tmp_path / "a", "detectors")
    assert sorted(det["status"]) == ["failed", "ok"]
    # a wrong endpoint: nothing can be listed, a usage/input error
    wrong = cli_in({**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, monkeypatch,
                   "run", f"s3://{survey}/raw/visit5/", *edges, "--output", tmp_path / "b")
    assert wrong.returncode == 2 and "cannot reach the storage endpoint" in wrong.stderr
    # bad credentials on a server that checks them (the run's, which refuses the test's
    # keys): access denied (what this process has kept of the object forgotten, as a new
    # command process starts without it)
    import s3fs

    from ampoffset_dask.io import remote

    url = f"s3://{survey}/raw/visit5/det0.fits"
    remote.forget(url)
    remote.clear_caches()  # also closes the objects kept open (they would hold the server)
    s3fs.S3FileSystem.clear_instance_cache()
    denied = cli_in({**env, "AWS_ENDPOINT_URL": s3_checking_endpoint}, monkeypatch,
                    "run", url, *edges, "--output", tmp_path / "c")
    assert denied.returncode == 2 and "access denied" in denied.stderr, denied.stderr
    assert env["AWS_SECRET_ACCESS_KEY"] not in denied.stderr + denied.stdout


def test_cli_s3_resume_measures_a_replaced_object_again(s3, client, tmp_path, monkeypatch):
    """A re-run skips the objects that are unchanged and measures again one replaced since
    (the run used to record no size or time for objects, so every one counted as
    unchanged and the catalog kept the old pedestals)."""
    import time

    from ampoffset_dask import Amplifier, Detector
    from ampoffset_dask.io.fits import write_exposure

    _endpoint, env, paths, s3client, survey, _ = s3
    for p in paths:
        s3client.upload_file(str(p), survey, f"resume/{p.name}")
    edges = ["--set", "doBackground=false", "--set", "doDetection=false",
             "--set", "ampEdgeWidth=12", "--scheduler", client.scheduler.address]
    args = ("run", f"s3://{survey}/resume/", "--output", tmp_path / "cat", *edges)
    proc = cli_in(env, monkeypatch, *args)
    assert proc.returncode == 0, proc.stderr
    proc = cli_in(env, monkeypatch, *args)
    assert proc.returncode == 0 and "skipped 2" in proc.stdout, proc.stdout
    # det0 replaced by another exposure of the same detector (same size, new pixels)
    det = Detector("wide", 2000, 40, tuple(Amplifier(f"C0{c}", c * 500, 0, 500, 40)
                                           for c in range(4)))
    image = np.random.default_rng(9).normal(500.0, 2.0, det.shape).astype(np.float32)
    for i, amp in enumerate(det):
        image[amp.slices] -= 3.0 * i
    new = write_exposure(tmp_path / "det0.fits", image, detector=det,
                         header={"VISIT": 5, "DETNAME": "D0"})
    assert new.stat().st_size == paths[0].stat().st_size
    time.sleep(1.1)  # the store's modification times have whole seconds
    s3client.upload_file(str(new), survey, f"resume/{paths[0].name}")
    proc = cli_in(env, monkeypatch, *args)
    assert proc.returncode == 0, proc.stderr
    assert "ok 1" in proc.stdout and "skipped 1" in proc.stdout, proc.stdout
    local = cli("run", new, "--output", tmp_path / "local", *edges)
    assert local.returncode == 0, local.stderr
    got = pedestals(tmp_path / "cat").loc["D0"]
    np.testing.assert_array_equal(got.to_numpy(), pedestals(tmp_path / "local").loc["D0"])


def test_cli_s3_outputs_under_the_input_prefix_are_never_inputs(s3, client, tmp_path,
                                                                monkeypatch):
    """Corrected images written under the input prefix are left out of later listings (a
    marker object, as local output folders have), so the same run can be repeated; they
    once came back as inputs and the run was refused for duplicate detectors."""
    _endpoint, env, paths, s3client, survey, _ = s3
    for p in paths:
        s3client.upload_file(str(p), survey, f"nested/{p.name}")
    edges = ["--set", "doBackground=false", "--set", "doDetection=false",
             "--set", "ampEdgeWidth=12", "--scheduler", client.scheduler.address]
    for catalog in ("cat", "cat", "other"):
        proc = cli_in(env, monkeypatch, "run", f"s3://{survey}/nested/", "--output-images",
                      f"s3://{survey}/nested/corr", "--output", tmp_path / catalog, *edges)
        assert proc.returncode == 0, proc.stderr
    assert read_catalog(tmp_path / "other", "detectors")["input"].tolist() == [
        f"s3://{survey}/nested/{p.name}" for p in paths]
    keys = {o["Key"] for o in s3client.list_objects_v2(Bucket=survey,
                                                        Prefix="nested/corr/")["Contents"]}
    assert "nested/corr/.ampoffset-outputs" in keys


def test_cli_s3_resume_writes_again_a_corrected_object_another_catalog_replaced(
        s3, client, tmp_path, monkeypatch):
    """Another catalog writing corrected images to the same prefix (another configuration)
    replaces the objects; a resumed run of the first checks each object's pedestals against
    its row, as for local folders, and writes it again (it once checked only that the
    object existed, and its rows named objects holding the other run's correction)."""
    import io

    from astropy.io import fits

    _endpoint, env, paths, s3client, survey, results = s3
    s3client.upload_file(str(paths[0]), survey, f"replaced/{paths[0].name}")
    base = ["--set", "doBackground=false", "--set", "doDetection=false",
            "--scheduler", client.scheduler.address, "--output-images",
            f"s3://{results}/replaced-out"]
    run_a = ("run", f"s3://{survey}/replaced/", "--output", tmp_path / "a", *base,
             "--set", "ampEdgeWidth=12")
    run_b = ("run", f"s3://{survey}/replaced/", "--output", tmp_path / "b", *base,
             "--set", "ampEdgeWidth=20")
    for args in (run_a, run_b, run_a):
        proc = cli_in(env, monkeypatch, *args)
        assert proc.returncode == 0, proc.stderr
    assert "ok 1" in proc.stdout and "skipped 0" in proc.stdout, proc.stdout
    row = read_catalog(tmp_path / "a", "detectors").iloc[0]
    key = row["output"].split(f"s3://{results}/", 1)[1]
    with fits.open(io.BytesIO(s3client.get_object(Bucket=results, Key=key)["Body"].read())
                   ) as hdul:
        header = hdul[0].header
    mine = read_catalog(tmp_path / "a", "pedestals")
    for amp, value in zip(mine["amp"], mine["pedestal"], strict=True):
        assert header[f"LSST ISR AMPOFFSET PEDESTAL {amp}"] == pytest.approx(value, abs=1e-9)
    # unchanged since: the next run skips it
    proc = cli_in(env, monkeypatch, *run_a)
    assert proc.returncode == 0 and "skipped 1" in proc.stdout, proc.stdout


def test_cli_s3_a_key_longer_than_a_file_name_gets_a_short_corrected_copy(
        s3, client, tmp_path, monkeypatch):
    """An object whose last key segment is longer than a file name may be: its corrected
    copy in a local folder is named by its start and a digest (the write failed with
    "File name too long", retried as an I/O error, and the detector was flagged)."""
    _endpoint, env, paths, s3client, survey, _ = s3
    long_name = "d" * 300 + ".fits"
    s3client.upload_file(str(paths[0]), survey, f"long/{long_name}")
    args = ("run", f"s3://{survey}/long/{long_name}", "--output", tmp_path / "cat",
            "--set", "doBackground=false", "--set", "doDetection=false",
            "--set", "ampEdgeWidth=12", "--output-images", tmp_path / "out",
            "--scheduler", client.scheduler.address)
    proc = cli_in(env, monkeypatch, *args)
    assert proc.returncode == 0, proc.stderr
    row = read_catalog(tmp_path / "cat", "detectors").iloc[0]
    assert row["status"] == "ok", row["error"]
    copy = tmp_path / "out" / "5" / "D0" / os.path.basename(row["output"])
    assert copy.is_file() and copy.name.startswith("d" * 100) and len(copy.name) <= 210
    proc = cli_in(env, monkeypatch, *args)  # the same name again: resumed
    assert proc.returncode == 0 and "skipped 1" in proc.stdout, proc.stdout
