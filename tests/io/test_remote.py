"""Object-store inputs against a real S3 server (moto) on 127.0.0.1: headers, byte-range strip
reads, whole reads, listing, and clear errors for missing objects, wrong endpoints and denied
access."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("s3fs")  # the [cloud] extra is in the test extra
pytest.importorskip("moto")

from golden import lsst_detector, lsst_image
from s3_server import KEYS, moto_server, s3_client

from ampoffset_dask import Amplifier, AmpOffsetConfig, Detector
from ampoffset_dask.errors import InputError
from ampoffset_dask.io import remote
from ampoffset_dask.io.fits import inspect_file, open_lazy, read_exposure, write_exposure
from ampoffset_dask.pipeline.detector_job import process_file

DET = lsst_detector()
#: 4 amps of 1000 x 32 pixels side by side: rows long enough that edge strips are a small part
#: of them, and few (each row of a strip is one byte range; moto answers them one by one)
WIDE = Detector("wide", 4000, 32, tuple(Amplifier(f"C0{c}", c * 1000, 0, 1000, 32)
                                        for c in range(4)))
EDGES = AmpOffsetConfig(do_background=False, do_detection=False, amp_edge_width=12)


@pytest.fixture(scope="module")
def server():
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(server, monkeypatch, tmp_path):
    """Environment pointing at the server, a bucket with two detector files (one plain, one
    tile-compressed) and their local copies."""
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server)
    client = s3_client(server)
    bucket = f"b{tmp_path.name.lower().replace('_', '-')[-40:]}"
    client.create_bucket(Bucket=bucket)
    local = {}
    for name, compress in (("plain", None), ("packed", "gzip")):
        path = write_exposure(tmp_path / f"{name}.fits", lsst_image("artificial", "constant"),
                              header={"VISIT": 9}, detector=DET, compress=compress)
        client.upload_file(str(path), bucket, f"visit9/{name}.fits")
        local[name] = path
    return bucket, local, client


def wide_image() -> np.ndarray:
    rng = np.random.default_rng(3)
    image = rng.normal(1000.0, 3.0, WIDE.shape).astype(np.float32)
    for i, amp in enumerate(WIDE):
        image[amp.slices] += 2.0 * i
    return image


def test_inspect_and_list(s3):
    bucket, local, _ = s3
    url = f"s3://{bucket}/visit9/plain.fits"
    assert remote.list_url(f"s3://{bucket}/visit9/") == [
        f"s3://{bucket}/visit9/packed.fits", url]
    info, ref = inspect_file(url), inspect_file(local["plain"])
    assert info.path == url
    assert (info.kind, info.shape, info.visit, info.mask_hdu) == (
        ref.kind, ref.shape, ref.visit, ref.mask_hdu)
    size = local["plain"].stat().st_size
    assert 0 < remote.bytes_fetched(url) < size / 2  # headers only


@pytest.mark.parametrize("name", ["plain", "packed"])
def test_strips_and_whole_reads_equal_local(s3, name):
    bucket, local, _ = s3
    url = f"s3://{bucket}/visit9/{name}.fits"
    lazy, ref = open_lazy(url), open_lazy(local[name])
    a = DET.amplifiers[1]
    for sl in ((slice(a.y0, a.y1), slice(a.x0, a.x0 + 12)),
               (slice(a.y1 - 12, a.y1), slice(a.x0, a.x1)),
               (slice(0, DET.height), slice(0, DET.width))):
        np.testing.assert_array_equal(lazy.image[sl], ref.image[sl])
        np.testing.assert_array_equal(lazy.mask[sl], ref.mask[sl])
    whole = read_exposure(url)
    np.testing.assert_array_equal(whole.image, read_exposure(local[name]).image)
    assert whole.info.path == url


def test_edges_only_fetches_a_fraction_and_matches_local(s3, tmp_path):
    bucket, _, client = s3
    path = write_exposure(tmp_path / "wide.fits", wide_image(), header={"VISIT": 9},
                          detector=WIDE)
    client.upload_file(str(path), bucket, "visit9/wide.fits")
    url = f"s3://{bucket}/visit9/wide.fits"
    before = remote.bytes_fetched(url)
    r = process_file(url, None, EDGES)
    fetched = remote.bytes_fetched(url) - before
    ref = process_file(str(path), None, EDGES)
    assert r.status == "ok", r.error
    np.testing.assert_allclose(r.pedestals, ref.pedestals, rtol=0, atol=0)
    # 12-pixel edge strips of image and mask (of image + mask + variance) plus headers
    fraction = fetched / path.stat().st_size
    assert 0.01 < fraction < 0.15, fraction
    full = process_file(url, None, dataclasses.replace(EDGES, do_background=True))
    assert full.status == "ok", full.error
    np.testing.assert_allclose(
        full.pedestals,
        process_file(str(path), None, dataclasses.replace(EDGES, do_background=True)).pedestals,
        rtol=0, atol=0)


def test_missing_object_wrong_endpoint_denied(s3, monkeypatch):
    bucket, _, _ = s3
    r = process_file(f"s3://{bucket}/visit9/nothing.fits", None, EDGES)
    assert r.status == "failed" and "no such object" in r.error and "nothing.fits" in r.error
    with pytest.raises(InputError, match="no such object or prefix"):
        remote.list_url(f"s3://{bucket}/elsewhere/x.fits")

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    r = process_file(f"s3://{bucket}/visit9/plain.fits", None, EDGES)
    assert r.status == "failed" and "cannot reach the storage endpoint" in r.error


def test_denied_access(tmp_path, monkeypatch):
    with moto_server(auth=True) as url:
        for k, v in KEYS.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        r = process_file("s3://locked/visit9/plain.fits", None, EDGES)
    assert r.status == "failed" and "access denied" in r.error, r.error
    assert KEYS["AWS_SECRET_ACCESS_KEY"] not in r.error


def test_storage_options_argument_overrides_environment(s3, monkeypatch):
    bucket, _, _ = s3
    endpoint = remote.storage_options("s3://x")["endpoint_url"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    remote.set_storage_options({"endpoint_url": endpoint})
    try:
        assert remote.list_url(f"s3://{bucket}/visit9/plain.fits") == [
            f"s3://{bucket}/visit9/plain.fits"]
    finally:
        remote.set_storage_options(None)


def test_signed_https_urls_are_redacted_in_messages():
    assert remote.redact("https://h/x.fits?X-Amz-Signature=abc") == "https://h/x.fits?<signature>"
    assert remote.is_url("s3://b/k") and not remote.is_url("file:///tmp/x") and not \
        remote.is_url("/tmp/x")
