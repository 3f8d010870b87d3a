"""Object stores and Butler repositories used as real users do: objects rewritten while a
process keeps their bytes, listings cached by fsspec, keys that are also prefixes, objects
compressed whole, zip members of one name, the endpoint variables, output prefixes holding
the inputs, stamps the store cannot give, HTTP servers without byte ranges, datastore URIs
with encoded characters and datasets whose files are gone.

Against real components on 127.0.0.1: the run's S3 server (moto), Python's HTTP server and
Butler repositories made with lsst-daf-butler in temporary folders (one with its datastore in
a bucket).
"""

from __future__ import annotations

import bz2
import gzip
import logging

import numpy as np
import pytest

from ampoffset_dask import Amplifier, AmpOffsetConfig, Detector, measure_detector, open_exposure
from ampoffset_dask.errors import InputError
from ampoffset_dask.io import remote
from ampoffset_dask.io.fits import inspect_file, open_lazy, write_exposure
from ampoffset_dask.pipeline.detector_job import process_file


def wide(height: int = 24) -> Detector:
    """4 amps of 1000 x ``height`` pixels side by side."""
    return Detector("wide", 4000, height, tuple(Amplifier(f"C0{c}", c * 1000, 0, 1000, height)
                                                for c in range(4)))


EDGES = AmpOffsetConfig(do_background=False, do_detection=False, amp_edge_width=12)


def stepped(det: Detector, step: float) -> np.ndarray:
    rng = np.random.default_rng(3)
    image = rng.normal(1000.0, 3.0, det.shape).astype(np.float32)
    for i, amp in enumerate(det):
        image[amp.slices] += step * i
    return image


@pytest.fixture
def s3(s3_bucket):
    """Environment pointing at the run's S3 server, an empty bucket and a client."""
    return s3_bucket


@pytest.mark.parametrize("compress", [None, "gzip"])
def test_an_object_reopened_after_a_rewrite_gives_the_new_pixels(s3, tmp_path, compress):
    """open_lazy / open_exposure of an object rewritten in the store since this process read
    it (a notebook re-running a cell): the new pixels, not the bytes kept from the old."""
    bucket, client = s3
    key = f"v/w-{compress}.fits"
    url = f"s3://{bucket}/{key}"
    for step in (2.0, -3.0):
        path = write_exposure(tmp_path / f"w{step}.fits", stepped(wide(), step),
                              header={"VISIT": 9}, detector=wide(), compress=compress)
        client.upload_file(str(path), bucket, key)
        want = measure_detector(open_lazy(path), config=EDGES).pedestals
        np.testing.assert_array_equal(measure_detector(open_lazy(url), config=EDGES).pedestals,
                                      want)
        np.testing.assert_array_equal(
            measure_detector(open_exposure(url), config=EDGES).pedestals, want)


def test_an_object_rewritten_after_a_listing_is_read_as_it_is_now(s3, tmp_path):
    """fsspec keeps what a listing said of each object (size, ETag): an object rewritten
    since is described, and read, as the store holds it now."""
    bucket, client = s3
    key = "v/w.fits"
    url = f"s3://{bucket}/{key}"
    first = write_exposure(tmp_path / "a.fits", stepped(wide(), 2.0), header={"VISIT": 9},
                           detector=wide())
    client.upload_file(str(first), bucket, key)
    assert remote.list_url(f"s3://{bucket}/v/") == [url]
    measure_detector(open_lazy(url), config=EDGES)
    tall = wide(48)
    second = write_exposure(tmp_path / "b.fits", stepped(tall, -3.0), header={"VISIT": 10},
                            detector=tall)
    client.upload_file(str(second), bucket, key)
    info = inspect_file(url)
    assert (info.visit, info.shape) == (10, (48, 4000))
    np.testing.assert_array_equal(measure_detector(open_lazy(url), config=EDGES).pedestals,
                                  measure_detector(open_lazy(second), config=EDGES).pedestals)


@pytest.mark.parametrize(("suffix", "opener", "kind"), [(".fits.gz", gzip.open, "gzip"),
                                                        (".fits.bz2", bz2.open, "bzip2")])
def test_an_object_compressed_whole_is_a_failed_row_saying_so(s3, tmp_path, suffix, opener,
                                                             kind):
    bucket, client = s3
    path = write_exposure(tmp_path / "w.fits", stepped(wide(), 2.0), header={"VISIT": 9},
                          detector=wide())
    wrapped = tmp_path / f"w{suffix}"
    with opener(wrapped, "wb") as out:
        out.write(path.read_bytes())
    client.upload_file(str(wrapped), bucket, f"v/w{suffix}")
    url = f"s3://{bucket}/v/w{suffix}"
    assert remote.list_url(f"s3://{bucket}/v/") == [url]
    r = process_file(url, None, EDGES)
    assert r.status == "failed" and url in r.error, r.error
    assert f"{kind}-wrapped" in r.error and "tile-compressed" in r.error, r.error
    with pytest.raises(InputError, match=f"{kind}-wrapped"):
        inspect_file(url)


def test_a_key_that_is_also_a_prefix_names_its_object(s3):
    """``s3://b/obj.fits`` names that object even when other keys start with
    ``obj.fits/``; the trailing slash lists the prefix (as does a name that is not a FITS
    name: ``visit1``, here also a stray object)."""
    bucket, client = s3
    for key in ("obj.fits", "obj.fits/inner.fits", "visit1/a b/ü.fits", "visit10/x.fits",
                "visit1"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert remote.list_url(f"s3://{bucket}/obj.fits") == [f"s3://{bucket}/obj.fits"]
    assert remote.list_url(f"s3://{bucket}/obj.fits/") == [f"s3://{bucket}/obj.fits/inner.fits"]
    for prefix in ("visit1", "visit1/"):
        assert remote.list_url(f"s3://{bucket}/{prefix}") == [f"s3://{bucket}/visit1/a b/ü.fits"]

def test_zip_members_of_one_name_in_different_folders_are_read_apart(tmp_path):
    """``a/x.fits`` and ``b/x.fits`` of one archive are two files: each zip-member URI
    reads its own."""
    import zipfile

    images = {"a/x.fits": (1, 2.0), "b/x.fits": (2, -3.0)}
    archive = tmp_path / "repo.zip"
    locals_ = {}
    with zipfile.ZipFile(archive, "w") as zf:
        for member, (visit, step) in images.items():
            path = write_exposure(tmp_path / f"{visit}.fits", stepped(wide(), step),
                                  header={"VISIT": visit}, detector=wide())
            zf.write(path, member)
            locals_[member] = path
    for member, (visit, _step) in images.items():
        r = process_file(f"{archive}#zip-path={member}", None, EDGES)
        assert r.status == "ok" and r.visit == visit, (r.visit, r.error)
        np.testing.assert_array_equal(
            r.pedestals, process_file(str(locals_[member]), None, EDGES).pedestals)


def test_the_lsst_resources_endpoint_variable_is_used(s3, s3_endpoint, monkeypatch):
    """``S3_ENDPOINT_URL`` alone (how a Butler whose datastore is in the store is set up)
    points the reads, and the options forwarded to workers, at that store, not at AWS."""
    bucket, client = s3
    client.put_object(Bucket=bucket, Key="v/a.fits", Body=b"x")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_endpoint)
    assert remote.list_url(f"s3://{bucket}/v/") == [f"s3://{bucket}/v/a.fits"]
    assert remote.environment_options([f"s3://{bucket}/v/a.fits"])["endpoint_url"] == \
        s3_endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # botocore's wins
    assert remote.storage_options("s3://b/k")["endpoint_url"] == "http://127.0.0.1:9"


def test_an_input_prefix_inside_the_output_images_prefix_is_refused_saying_why(s3, tmp_path):
    """As for folders: inputs listed from the output images' prefix (or one inside it) are
    refused naming both, not "no FITS files found"."""
    from ampoffset_dask import process

    bucket, client = s3
    client.put_object(Bucket=bucket, Key="visit1/a.fits", Body=b"x")
    for out in (f"s3://{bucket}/visit1", f"s3://{bucket}/"):
        with pytest.raises(InputError, match=r"lies inside\) the output images' prefix"):
            remote.list_url(f"s3://{bucket}/visit1/", exclude=[out])
        with pytest.raises(InputError, match="runs never take inputs from a prefix of corrected"):
            process(f"s3://{bucket}/visit1/", tmp_path / "cat", output_images=out)
    # a prefix inside the inputs is left out of them
    assert remote.list_url(f"s3://{bucket}/", exclude=[f"s3://{bucket}/visit1/corr"]) == [
        f"s3://{bucket}/visit1/a.fits"]


def test_a_stamp_the_store_cannot_give_is_warned_about(s3, monkeypatch, caplog):
    """Without a stamp a resumed run takes an object for unchanged: when the store cannot be
    asked (here a wrong endpoint) that is said, once per process, not passed over."""
    bucket, client = s3
    client.put_object(Bucket=bucket, Key="v/a.fits", Body=b"x" * 10)
    url = f"s3://{bucket}/v/a.fits"
    stamp = remote.url_stamp(url)
    assert stamp is not None and stamp[0] == 10
    monkeypatch.setattr(remote, "_STAMP_WARNED", False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with caplog.at_level(logging.DEBUG, logger="ampoffset_dask.io.remote"):
        assert remote.url_stamp(url) is None
        assert remote.url_stamp(url) is None
    said = [r for r in caplog.records if "cannot ask the store for its size" in r.message]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG], said
    assert url in said[0].message and "will not notice if it is replaced" in said[0].message


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1 by Python's own server, which ignores Range
    headers (it always sends the whole file)."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_without_range_requests_is_named_not_called_truncated(http_folder):
    folder, base = http_folder
    write_exposure(folder / "w.fits", stepped(wide(), 2.0), header={"VISIT": 9},
                   detector=wide())
    r = process_file(f"{base}/w.fits", None, EDGES)
    assert r.status == "failed" and f"{base}/w.fits" in r.error, r.error
    assert "does not serve byte ranges" in r.error and "truncated" not in r.error, r.error


# ------------------------------------------------------------------------------------------
# Butler repositories
# ------------------------------------------------------------------------------------------
@pytest.fixture
def butler_files(butler_detector_files):
    pytest.importorskip("lsst.daf.butler")
    return butler_detector_files


def test_a_dataset_without_its_file_is_left_out_with_a_warning(tmp_path, butler_files, caplog):
    """One dataset whose file was removed from the datastore (pruned) no longer fails the
    query of all the others; it is named in a warning."""
    from butler_repo import RUN, make_repo

    from ampoffset_dask.io.butler import find_inputs

    butler = make_repo(tmp_path / "repo", butler_files)
    refs = butler.query_datasets("post_isr_image", collections=RUN, explain=False)
    gone = next(r for r in refs if int(r.dataId["detector"]) == 94)
    butler.pruneDatasets([gone], disassociate=False, unstore=True, purge=False)
    with caplog.at_level(logging.WARNING, logger="ampoffset_dask.io.butler"):
        table = find_inputs(str(tmp_path / "repo"), RUN)
    assert table["detector"].tolist() == ["R22_S12"]
    assert "1 of 2 datasets" in caplog.text and "R22_S11" in caplog.text
    assert str(gone.id) in caplog.text
    rest = next(r for r in refs if r != gone)
    butler.pruneDatasets([rest], disassociate=False, unstore=True, purge=False)
    with pytest.raises(InputError, match="none of the 2 datasets found has its file"):
        find_inputs(str(tmp_path / "repo"), RUN)


def test_s3_datastore_uris_with_encoded_characters_are_read(s3, s3_endpoint, tmp_path,
                                                           butler_files, monkeypatch):
    """A datastore in a bucket gives percent-encoded URIs (a run name with a space, a ``+``
    and a non-ASCII letter): the manifest names the objects as stored, and they are read."""
    from butler_repo import make_repo

    from ampoffset_dask.io.butler import find_inputs

    bucket, client = s3
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_endpoint)  # lsst.resources' variable
    run = "u/tëst/run 1+x"
    make_repo(tmp_path / "repo", butler_files, run=run, datastore_root=f"s3://{bucket}/repo/")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    table = find_inputs(str(tmp_path / "repo"), run)
    assert len(table) == 2
    for uri, (src, *_rest) in zip(table["uri"], butler_files, strict=True):
        assert uri.removeprefix(f"s3://{bucket}/") in keys, (uri, keys)
        r = process_file(uri, None, EDGES)
        assert r.status == "ok", r.error
        np.testing.assert_array_equal(r.pedestals, process_file(str(src), None, EDGES).pedestals)


def test_an_instrument_filter_finding_nothing_is_named(butler_repo_root, butler_files):
    from butler_repo import RUN

    from ampoffset_dask.io.butler import find_inputs

    with pytest.raises(InputError, match=r"of instrument 'lsstcam' .*case-sensitive"):
        find_inputs(str(butler_repo_root), RUN, instrument="lsstcam")


def test_input_records_ask_the_store_with_the_run_s_storage_options(s3, monkeypatch):
    """The run's storage options (here the only place the endpoint is given) reach the
    threads that ask the store for the inputs' size and time: the runs table records the
    object's stamp, which resume compares to notice a replaced object."""
    from ampoffset_dask.catalog.provenance import input_records

    bucket, client = s3
    client.put_object(Bucket=bucket, Key="v/a.fits", Body=b"x" * 10)
    client.put_object(Bucket=bucket, Key="v/b.fits", Body=b"y" * 12)
    urls = [f"s3://{bucket}/v/a.fits", f"s3://{bucket}/v/b.fits"]
    endpoint = remote.storage_options(urls[0])["endpoint_url"]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with remote.scoped_storage_options({"endpoint_url": endpoint}):
        records = input_records(urls)
    assert [(r["path"], r["size"]) for r in records] == [(urls[0], 10), (urls[1], 12)]
    assert all(r["mtime"] is not None for r in records)


def test_an_object_replaced_after_planning_fails_its_task(s3, tmp_path):
    """A task refuses an object its store says changed since it was planned (its planned
    visit and detector may not be its own any more), as it refuses a changed local file;
    an unchanged object is measured."""
    import time

    from ampoffset_dask.pipeline.detector_job import DetectorJob
    from ampoffset_dask.pipeline.inputs import discover_inputs, plan_tasks

    bucket, client = s3
    url = f"s3://{bucket}/v/x.fits"
    first = write_exposure(tmp_path / "a.fits", stepped(wide(), 2.0), header={"VISIT": 9},
                           detector=wide())
    other = write_exposure(tmp_path / "b.fits", stepped(wide(), -3.0), header={"VISIT": 10},
                           detector=wide())
    client.upload_file(str(first), bucket, "v/x.fits")
    (task,) = plan_tasks(discover_inputs(url))
    assert task.visit == 9 and task.stamp is not None

    def run():
        return DetectorJob(task.path, task.detector, EDGES, visit=task.visit,
                           planned_stamp=task.stamp).run_safely()

    ok = run()
    assert ok.status == "ok", ok.error
    np.testing.assert_array_equal(ok.pedestals, process_file(str(first), config=EDGES).pedestals)
    time.sleep(1.1)  # the store's times are to the second
    client.upload_file(str(other), bucket, "v/x.fits")
    replaced = run()
    assert replaced.status == "failed" and not replaced.pedestals
    assert "the object changed in the store since it was planned" in replaced.error
    assert url in replaced.error


def test_input_records_take_the_stamps_planning_asked_for(s3, monkeypatch):
    """The runs table records what planning asked the store (one request per object, not
    two); an object planning has no stamp for is asked."""
    from ampoffset_dask.catalog.provenance import input_records

    bucket, client = s3
    client.put_object(Bucket=bucket, Key="v/a.fits", Body=b"x" * 10)
    client.put_object(Bucket=bucket, Key="v/b.fits", Body=b"y" * 12)
    a, b = f"s3://{bucket}/v/a.fits", f"s3://{bucket}/v/b.fits"
    asked = []
    real = remote.url_stamp

    def counted(url, *args, **kwargs):
        asked.append(url)
        return real(url, *args, **kwargs)

    monkeypatch.setattr(remote, "url_stamp", counted)
    records = input_records([a, b], {a: (10, 123.0), "/local/file.fits": (1, 2)})
    assert asked == [b]
    assert (records[0]["size"], records[0]["mtime"]) == (10, 123.0)
    assert records[1]["size"] == 12
