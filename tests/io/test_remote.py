"""Object-store inputs against a real S3 server (moto) on 127.0.0.1: headers, byte-range strip
reads (uncompressed rows and compressed tiles), the number of requests, whole reads, listing,
and clear errors for missing objects, wrong endpoints, denied access and corrupt objects."""

from __future__ import annotations

import collections
import dataclasses

import dask
import numpy as np
import pytest
from astropy.io import fits
from golden import lsst_detector, lsst_image
from s3_server import KEYS

from ampoffset_dask import Amplifier, AmpOffsetConfig, Detector
from ampoffset_dask.errors import InputError
from ampoffset_dask.io import remote
from ampoffset_dask.io.fits import inspect_file, open_lazy, read_exposure, write_exposure
from ampoffset_dask.pipeline.detector_job import process_file

DET = lsst_detector()
#: 4 amps of 1000 x 24 pixels side by side: rows long enough that edge strips are a small part
#: of them, and few (each row of a strip is one byte range; moto answers them one by one)
WIDE = Detector("wide", 4000, 24, tuple(Amplifier(f"C0{c}", c * 1000, 0, 1000, 24)
                                        for c in range(4)))
#: 4 amps of 1024 x 256 pixels: 2 x 32 tiles of 128 x 128 per compressed plane, of which the
#: edge strips at the 3 interfaces (on tile boundaries) touch 12
TILED = Detector("tiled", 4096, 256, tuple(Amplifier(f"C0{c}", c * 1024, 0, 1024, 256)
                                           for c in range(4)))
EDGES = AmpOffsetConfig(do_background=False, do_detection=False, amp_edge_width=12)


@pytest.fixture(scope="module")
def server(s3_endpoint):
    """The run's S3 server (tests/conftest.py)."""
    return s3_endpoint


@pytest.fixture
def s3(s3_bucket, tmp_path):
    """Environment pointing at the server, a bucket with two detector files (one plain, one
    tile-compressed) and their local copies."""
    bucket, client = s3_bucket
    local = {}
    for name, compress in (("plain", None), ("packed", "gzip")):
        path = write_exposure(tmp_path / f"{name}.fits", lsst_image("artificial", "constant"),
                              header={"VISIT": 9}, detector=DET, compress=compress)
        client.upload_file(str(path), bucket, f"visit9/{name}.fits")
        local[name] = path
    return bucket, local, client


@pytest.fixture
def requests_sent(monkeypatch):
    """S3 requests s3fs sends to the server, by object key and operation (counted where the
    requests leave the client, independently of the reader's own counters)."""
    import s3fs

    sent: collections.Counter[tuple[str, str]] = collections.Counter()
    call = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *args, **kwargs):
        sent[(kwargs.get("Key", ""), method)] += 1
        return await call(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    return sent


def gets(sent: collections.Counter, key: str) -> int:
    return sent[(key, "get_object")]


def wide_image(det: Detector = WIDE) -> np.ndarray:
    rng = np.random.default_rng(3)
    image = rng.normal(1000.0, 3.0, det.shape).astype(np.float32)
    for i, amp in enumerate(det):
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


def test_edges_only_fetches_a_fraction_and_matches_local(s3, tmp_path, requests_sent):
    bucket, _, client = s3
    path = write_exposure(tmp_path / "wide.fits", wide_image(), header={"VISIT": 9},
                          detector=WIDE)
    client.upload_file(str(path), bucket, "visit9/wide.fits")
    url = f"s3://{bucket}/visit9/wide.fits"
    # the default merge gap: the rows between the strips too (image and mask: 2/3 of the
    # object, plus headers in 32 KiB read-ahead blocks), whole rows in a few requests
    sent = gets(requests_sent, "visit9/wide.fits")
    r = process_file(url, None, EDGES)
    assert r.status == "ok", r.error
    np.testing.assert_allclose(r.pedestals, process_file(str(path), None, EDGES).pedestals,
                               rtol=0, atol=0)
    assert 0.6 < r.fetched_fraction < 0.9, r.fetched_fraction
    assert gets(requests_sent, "visit9/wide.fits") - sent <= 10, requests_sent
    # no merging: a 12-pixel strip costs one request per row and only its own bytes
    remote.clear_caches()
    rows = slice(0, WIDE.height)
    with dask.config.set({"ampoffset.remote.merge-gap": 0}):
        remote.read_url_section(url, 1, (rows, slice(988, 1000)))  # parses the headers
        before, sent = remote.bytes_fetched(url), gets(requests_sent, "visit9/wide.fits")
        strip = remote.read_url_section(url, 1, (rows, slice(1000, 1012)))
    np.testing.assert_array_equal(strip, read_exposure(path).image[rows, 1000:1012])
    assert gets(requests_sent, "visit9/wide.fits") - sent == WIDE.height, requests_sent
    assert remote.bytes_fetched(url) - before == 12 * 4 * WIDE.height
    full = process_file(url, None, dataclasses.replace(EDGES, do_background=True))
    assert full.status == "ok", full.error
    np.testing.assert_allclose(
        full.pedestals,
        process_file(str(path), None, dataclasses.replace(EDGES, do_background=True)).pedestals,
        rtol=0, atol=0)


@pytest.mark.parametrize("compress", [None, "gzip"])
def test_a_rewritten_object_is_read_afresh(s3, tmp_path, compress):
    """Blocks kept by one detector task are never served to the next: an object rewritten
    between two tasks in the same process gives the new pedestals."""
    bucket, _, client = s3
    key = f"visit9/rewritten-{compress}.fits"
    url = f"s3://{bucket}/{key}"
    for step in (2.0, -3.0):
        image = wide_image(TILED)
        for i, amp in enumerate(TILED):
            image[amp.slices] += step * i
        path = write_exposure(tmp_path / f"r{step}.fits", image, header={"VISIT": 9},
                              detector=TILED, compress=compress)
        client.upload_file(str(path), bucket, key)
        r = process_file(url, None, EDGES)
        assert r.status == "ok", r.error
        np.testing.assert_allclose(r.pedestals, process_file(str(path), None, EDGES).pedestals,
                                   rtol=0, atol=0)


@pytest.mark.parametrize("compress", ["rice", "gzip"])
def test_compressed_edges_only_fetches_only_the_edge_tiles(s3, tmp_path, requests_sent,
                                                           compress):
    bucket, _, client = s3
    mask = np.zeros(TILED.shape, dtype=np.int32)
    mask[100:103, 1020:1030] = 1  # BAD pixels on an interface
    path = write_exposure(tmp_path / "tiled.fits", wide_image(TILED), mask,
                          header={"VISIT": 9}, detector=TILED, compress=compress)
    key = f"visit9/tiled-{compress}.fits"
    client.upload_file(str(path), bucket, key)
    url = f"s3://{bucket}/{key}"
    ref = process_file(str(path), None, EDGES).pedestals
    runs = {}
    for gap in (0, None):  # only the tiles' bytes / tiles closer than the default gap merged
        remote.clear_caches()
        sent = gets(requests_sent, key)
        with dask.config.set({"ampoffset.remote.merge-gap": gap}):
            r = process_file(url, None, EDGES)
        assert r.status == "ok", r.error
        np.testing.assert_allclose(r.pedestals, ref, rtol=0, atol=0)
        runs[gap] = r.fetched_fraction, gets(requests_sent, key) - sent
    # gap 0: 12 of 64 tiles of image and mask, plus headers and the two tile tables in 32
    # KiB read-ahead blocks (a whole-heap read would be over 60% of this small object), in
    # one request per tile column strip and plane; the default gap: whole rows of tiles
    # (here all) in a few requests
    assert 0.02 < runs[0][0] < 0.4, runs
    assert runs[0][1] <= 30 and runs[None][1] <= 10, runs
    # the strips read remotely equal a full local read bit for bit
    lazy, full = open_lazy(url), read_exposure(path)
    for sl in ((slice(0, 256), slice(1012, 1036)), (slice(5, 250), slice(3000, 3090)),
               (slice(120, 136), slice(0, 4096))):
        np.testing.assert_array_equal(lazy.image[sl], full.image[sl])
        np.testing.assert_array_equal(lazy.mask[sl], full.mask[sl])


@pytest.mark.parametrize("compression", ["RICE_1", "GZIP_1", "GZIP_2"])
def test_compressed_regions_equal_full_reads_for_any_tiling(s3, tmp_path, compression):
    """Row tiles (astropy's default, LSST's) and odd 2-D tiles: every region read from the
    store equals the same region of a full local read, bit for bit."""
    bucket, _, client = s3
    rng = np.random.default_rng(5)
    data = rng.normal(1000.0, 3.0, (70, 90)).astype(np.float32)
    for tile in ((1, 90), (16, 32), (7, 13)):
        path = tmp_path / f"{compression}-{tile[0]}x{tile[1]}.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(
            data, compression_type=compression, tile_shape=tile)]).writeto(path)
        client.upload_file(str(path), bucket, path.name)
        url = f"s3://{bucket}/{path.name}"
        full = fits.getdata(path, 1)
        for sl in ((slice(0, 70), slice(30, 44)), (slice(33, 47), slice(0, 90)),
                   (slice(9, 61), slice(50, 89)), (slice(0, 70), slice(0, 90))):
            got = remote.read_url_section(url, 1, sl)
            assert got.dtype == full.dtype.newbyteorder("=")
            np.testing.assert_array_equal(got, full[sl])


def corrupt_tiles(path, how: str) -> bytes:
    """The bytes of ``path`` with tile 8 of the IMAGE HDU damaged: its compressed bytes
    garbled, or its descriptor pointing past the heap."""
    data = bytearray(path.read_bytes())
    with fits.open(path) as hdul:
        table = hdul[1]._bintable
        table_at = int(table._data_offset)
        heap_at = table_at + int(table._theap)
        row = table.header["NAXIS1"]
        n, offset = np.asarray(hdul[1].compressed_data["COMPRESSED_DATA"])[8]
    if how == "garbled":
        start = heap_at + int(offset) + int(n) // 3
        data[start:start + 64] = bytes(range(64))
    else:  # the descriptor (nelem, offset) is the row's first column
        data[table_at + 8 * row + 4:table_at + 8 * row + 8] = (1 << 30).to_bytes(4, "big")
    return bytes(data)


def test_corrupt_and_lying_compressed_objects_are_failed_rows(s3, tmp_path):
    bucket, _, client = s3
    path = write_exposure(tmp_path / "tiled.fits", wide_image(TILED), header={"VISIT": 9},
                          detector=TILED, compress="gzip")
    cases = {"garbled": "cannot decompress HDU 1", "pointer": "tile 8 (COMPRESSED_DATA) "
             "points outside the heap"}
    for how, reason in cases.items():
        client.put_object(Bucket=bucket, Key=f"bad/{how}.fits", Body=corrupt_tiles(path, how))
        url = f"s3://{bucket}/bad/{how}.fits"
        r = process_file(url, None, EDGES)
        assert r.status == "failed" and url in r.error and reason in r.error, r.error
    # a table declaring a huge image is refused before anything is decompressed
    data = bytearray(path.read_bytes())
    for key in (b"ZNAXIS1 = ", b"ZNAXIS2 = "):
        i = -1
        while (i := data.find(key, i + 1)) >= 0:  # all three planes
            data[i + 10:i + 30] = b"100000".rjust(20)
    client.put_object(Bucket=bucket, Key="bad/lying.fits", Body=bytes(data))
    url = f"s3://{bucket}/bad/lying.fits"
    r = process_file(url, None, EDGES)
    assert r.status == "failed" and "max-decompressed-bytes" in r.error, r.error
    # an object cut short inside the image's heap
    cut = path.read_bytes()[:path.stat().st_size // 3]
    client.put_object(Bucket=bucket, Key="bad/cut.fits", Body=cut)
    url = f"s3://{bucket}/bad/cut.fits"
    r = process_file(url, None, EDGES)
    assert r.status == "failed" and url in r.error and "truncated" in r.error, r.error


def test_missing_object_wrong_endpoint_denied(s3, monkeypatch):
    bucket, _, _ = s3
    r = process_file(f"s3://{bucket}/visit9/nothing.fits", None, EDGES)
    assert r.status == "failed" and "no such object" in r.error and "nothing.fits" in r.error
    with pytest.raises(InputError, match="no such object or prefix"):
        remote.list_url(f"s3://{bucket}/elsewhere/x.fits")
    with pytest.raises(InputError, match=r"no-such-bucket-[\w-]+/raw/: no such bucket, object "
                                         r"or prefix"):
        remote.list_url(f"s3://no-such-bucket-{bucket}/raw/")

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    r = process_file(f"s3://{bucket}/visit9/plain.fits", None, EDGES)
    assert r.status == "failed" and "cannot reach the storage endpoint" in r.error


def test_denied_access(s3_checking_endpoint, monkeypatch):
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_checking_endpoint)  # refuses the test's keys
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
