"""Objects of stores named as users name them: over plain HTTP(S) (a replaced object noticed
by its Last-Modified or ETag), through an lsst.resources S3 profile (``s3://PROFILE@bucket``),
as zip members of an archive in a store, by glob patterns, and with keys whose last segment
is longer than a file name may be.

Against real servers on 127.0.0.1: the run's S3 server (moto) and a small HTTP server that
serves byte ranges and sends the validators it is told to.
"""

from __future__ import annotations

import errno
import http.server
import logging
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ampoffset_dask import Amplifier, AmpOffsetConfig, Detector, measure_detector, open_exposure
from ampoffset_dask.errors import InputError
from ampoffset_dask.io import remote
from ampoffset_dask.io.fits import open_lazy, write_exposure
from ampoffset_dask.io.paths import OUTPUT_MARKER
from ampoffset_dask.io.sections import stamp_changed
from ampoffset_dask.pipeline.detector_job import DetectorJob, process_file

EDGES = AmpOffsetConfig(do_background=False, do_detection=False, amp_edge_width=12)
WIDE = Detector("wide", 4000, 24, tuple(Amplifier(f"C0{c}", c * 1000, 0, 1000, 24)
                                        for c in range(4)))


def stepped(step: float, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 3.0, WIDE.shape).astype(np.float32)
    for i, amp in enumerate(WIDE):
        image[amp.slices] += step * i
    return image


def exposure(tmp_path, name: str, step: float, visit: int = 9):
    return write_exposure(tmp_path / name, stepped(step), header={"VISIT": visit},
                          detector=WIDE)


def pedestals(path) -> np.ndarray:
    return measure_detector(open_lazy(path), config=EDGES).pedestals


# ------------------------------------------------------------------------------------------
# HTTP(S): Last-Modified and ETag
# ------------------------------------------------------------------------------------------
class _Objects(http.server.BaseHTTPRequestHandler):
    """Serves ``server.objects[path] = (bytes, headers)`` with byte ranges, sending the
    headers (``ETag``, ``Last-Modified``) given with each object and no others."""

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        found = self.server.objects.get(self.path.split("?", 1)[0])
        if found is None:
            self.send_error(404)
            return
        data, headers = found
        start, end, status = 0, len(data), 200
        asked = self.headers.get("Range")
        if asked and asked.startswith("bytes="):
            first, _, last = asked[6:].partition("-")
            start, end, status = int(first), min(len(data), int(last) + 1 if last else
                                                 len(data)), 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data[start:end])


@pytest.fixture
def http_store():
    """``(objects, base URL)``: a dict the test fills, served on 127.0.0.1."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Objects)
    server.objects = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.objects, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


MONDAY = "Mon, 30 Nov 2026 10:00:00 GMT"
TUESDAY = "Tue, 01 Dec 2026 10:00:00 GMT"


def test_http_stamps_read_last_modified_and_the_etag(http_store, tmp_path):
    objects, base = http_store
    data = exposure(tmp_path, "a.fits", 2.0).read_bytes()
    objects["/a.fits"] = (data, {"Last-Modified": MONDAY, "ETag": '"v1"'})
    url = f"{base}/a.fits"
    stamp = remote.url_stamp(url)
    assert stamp == (len(data), 1796032800.0, '"v1"')
    assert not stamp_changed(url, stamp)
    # new bytes of the same size under the same time: only the ETag tells
    objects["/a.fits"] = (data[:-1] + b"!", {"Last-Modified": MONDAY, "ETag": '"v2"'})
    assert stamp_changed(url, stamp)
    # a new time alone is a change too; so is a store that sends only a time
    objects["/a.fits"] = (data, {"Last-Modified": TUESDAY})
    assert remote.url_stamp(url) == (len(data), 1796119200.0)
    assert stamp_changed(url, stamp)
    # a weak ETag promises no byte identity (some servers send a new one every time)
    objects["/a.fits"] = (data, {"Last-Modified": TUESDAY, "ETag": 'W/"any"'})
    assert remote.url_stamp(url) == (len(data), 1796119200.0)


def test_an_http_object_replaced_after_planning_fails_its_task(http_store, tmp_path):
    """The same size, the same Last-Modified, a new ETag: the task refuses the object (its
    planned visit and detector may not be its own any more); unchanged, it is measured."""
    objects, base = http_store
    first = exposure(tmp_path, "a.fits", 2.0)
    other = exposure(tmp_path, "b.fits", -3.0, visit=10)
    url = f"{base}/x.fits"
    objects["/x.fits"] = (first.read_bytes(), {"Last-Modified": MONDAY, "ETag": '"v1"'})
    planned = remote.url_stamp(url)

    def run():
        return DetectorJob(url, WIDE, EDGES, visit=9,
                           planned_stamp=planned).run_safely()

    ok = run()
    assert ok.status == "ok", ok.error
    np.testing.assert_array_equal(ok.pedestals, pedestals(first))
    assert first.stat().st_size == other.stat().st_size
    objects["/x.fits"] = (other.read_bytes(), {"Last-Modified": MONDAY, "ETag": '"v2"'})
    replaced = run()
    assert replaced.status == "failed" and not replaced.pedestals
    assert "changed in the store since it was planned" in replaced.error, replaced.error
    assert url in replaced.error


@pytest.mark.parametrize("times", [(MONDAY, TUESDAY), (MONDAY, MONDAY), (None, None)],
                         ids=["new time", "same time", "no time"])
def test_a_resumed_run_measures_a_replaced_http_object_again(http_store, tmp_path,
                                                              shared_scheduler, times):
    """A run on a cluster records the object's Last-Modified and ETag; the next run skips it
    while it is unchanged and measures it again once it is replaced: by its new time, or
    by its ETag alone when replaced within the same second or by a store giving no time
    (recorded without a time, an object once counted as changed on every run)."""
    import pandas as pd
    from distributed import Client

    from ampoffset_dask import process, read_catalog

    objects, base = http_store
    first = exposure(tmp_path, "a.fits", 2.0)
    other = exposure(tmp_path, "b.fits", -3.0)
    assert first.stat().st_size == other.stat().st_size

    def served(data: bytes, time: str | None, tag: str) -> tuple[bytes, dict]:
        return data, {**({"Last-Modified": time} if time else {}), "ETag": tag}

    objects["/x.fits"] = served(first.read_bytes(), times[0], '"v1"')
    manifest = pd.DataFrame({"path": [f"{base}/x.fits"], "visit": [9], "detector": ["wide"]})
    cat = tmp_path / "cat"
    with Client(shared_scheduler) as client:
        def run():
            return process(manifest, cat, client=client, config=EDGES, progress=False)

        assert (run().n_ok, run().n_skipped) == (1, 1)
        objects["/x.fits"] = served(other.read_bytes(), times[1], '"v2"')
        again = run()
        assert (again.n_ok, again.n_skipped) == (1, 0), again
        assert run().n_skipped == 1
    got = read_catalog(cat, "pedestals")
    latest = got[got["run_id"] == again.run_id].sort_values("amp")["pedestal"].to_numpy()
    np.testing.assert_allclose(latest, pedestals(other), rtol=0, atol=1e-6)


def test_a_store_without_stamps_is_warned_about_once(http_store, tmp_path, caplog):
    objects, base = http_store
    objects["/a.fits"] = (b"x" * 10, {})
    objects["/b.fits"] = (b"y" * 10, {})
    with caplog.at_level(logging.DEBUG, logger="ampoffset_dask.io.remote"):
        assert remote.url_stamp(f"{base}/a.fits") is None
        assert remote.url_stamp(f"{base}/b.fits") is None
    said = [r for r in caplog.records if "neither a size with a modification time" in r.message]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG], said
    assert f"{base}/a.fits" in said[0].message and "will not notice" in said[0].message


# ------------------------------------------------------------------------------------------
# lsst.resources S3 profiles
# ------------------------------------------------------------------------------------------
def test_an_s3_profile_gives_the_endpoint_and_keys(s3_bucket, s3_endpoint, tmp_path,
                                                   monkeypatch, caplog):
    bucket, client = s3_bucket
    path = exposure(tmp_path, "w.fits", 2.0)
    client.upload_file(str(path), bucket, "v/w.fits")
    host = s3_endpoint.removeprefix("http://")
    monkeypatch.setenv("LSST_RESOURCES_S3_PROFILE_qa", f"http://profile-key:s3cr%2Ft@{host}")
    # the environment's endpoint and keys are not the profile's: they must not be used
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    url = f"s3://qa@{bucket}/v/w.fits"
    opts = remote.storage_options(url)
    assert (opts["endpoint_url"], opts["key"], opts["secret"]) == (s3_endpoint, "profile-key",
                                                                  "s3cr/t")
    assert remote.list_url(f"s3://qa@{bucket}/v/") == [url]
    assert remote.list_url(f"s3://qa@{bucket}/v/*.fits") == [url]
    assert remote.url_stamp(url)[0] == path.stat().st_size
    np.testing.assert_array_equal(pedestals(url), pedestals(path))
    np.testing.assert_array_equal(measure_detector(open_exposure(url), config=EDGES).pedestals,
                                  pedestals(path))
    # the workers get the profile with the run's options
    forwarded = remote.environment_options([url])
    assert forwarded["ampoffset_s3_profiles"] == {"qa": f"http://profile-key:s3cr%2Ft@{host}"}
    monkeypatch.delenv("LSST_RESOURCES_S3_PROFILE_qa")
    assert remote.storage_options(url, forwarded)["secret"] == "s3cr/t"


def test_an_s3_profile_without_its_variable_is_named(s3_bucket, monkeypatch):
    bucket, _ = s3_bucket
    monkeypatch.delenv("LSST_RESOURCES_S3_PROFILE_nope", raising=False)
    url = f"s3://nope@{bucket}/v/w.fits"
    r = process_file(url, None, EDGES)
    assert r.status == "failed"
    assert "LSST_RESOURCES_S3_PROFILE_nope" in r.error and "not set" in r.error, r.error
    assert "Invalid bucket name" not in r.error
    monkeypatch.setenv("LSST_RESOURCES_S3_PROFILE_nope", "not a url with secret-key")
    with pytest.raises(InputError, match="LSST_RESOURCES_S3_PROFILE_nope is not a URL") as e:
        remote.list_url(url)
    assert "secret-key" not in str(e.value)
    # an AWS secret key with a "/" (the host would end there), not percent-encoded
    for secret in ("wJalr/K7MDEN", "12345/K7MDEN"):
        monkeypatch.setenv("LSST_RESOURCES_S3_PROFILE_nope",
                           f"http://AKIAKEY:{secret}@127.0.0.1:9")
        with pytest.raises(InputError, match=r"keys in LSST_RESOURCES_S3_PROFILE_nope hold a "
                                             r"'/'.*%2F") as e:
            remote.list_url(url)
        assert "K7MDEN" not in str(e.value)


# ------------------------------------------------------------------------------------------
# Zip members in a store
# ------------------------------------------------------------------------------------------
def test_a_zip_member_of_an_archive_without_a_version_is_never_a_stale_copy(
        http_store, tmp_path):
    # without a stamp, extractions were keyed by pid and generation in a shared folder: a
    # later process with the same pid (a container's worker) read the old archive's member
    objects, base = http_store
    members = []
    for k, step in enumerate((2.0, -3.0)):
        archive = tmp_path / f"x{k}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(exposure(tmp_path, f"m{k}.fits", step), "d.fits")
        members.append(archive)
    url = f"{base}/x.zip#zip-path=d.fits"
    objects["/x.zip"] = (members[0].read_bytes(), {})
    first = remote._remote_zip_member(url)
    with zipfile.ZipFile(members[0]) as zf:
        assert Path(first).read_bytes() == zf.read("d.fits")
    assert first.startswith(remote._process_zip_folder())  # this process's own folder
    objects["/x.zip"] = (members[1].read_bytes(), {})
    remote.forget(url)
    second = remote._remote_zip_member(url)
    with zipfile.ZipFile(members[1]) as zf:
        assert Path(second).read_bytes() == zf.read("d.fits")
    assert second != first and not Path(first).exists()  # the previous one removed


def test_a_replaced_archives_earlier_member_extractions_are_removed(http_store, tmp_path):
    # one folder per archive version in the shared temporary folder, never removed: a
    # long-lived worker filled its disk with every version of every member it had read
    objects, base = http_store
    url = f"{base}/v.zip#zip-path=d.fits"
    got = []
    for k, step in enumerate((2.0, -3.0)):
        archive = tmp_path / f"v{k}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(exposure(tmp_path, f"v{k}.fits", step), "d.fits")
        objects["/v.zip"] = (archive.read_bytes(), {"Last-Modified": MONDAY,
                                                     "ETag": f'"v{k}"'})
        remote.forget(url)
        got.append(Path(remote._remote_zip_member(url)))
        with zipfile.ZipFile(archive) as zf:
            assert got[-1].read_bytes() == zf.read("d.fits")
    assert got[0] != got[1] and not got[0].exists()
    assert [p.name for p in got[1].parent.parent.iterdir()] == [got[1].parent.name]


def test_zip_members_of_an_archive_in_a_store_are_read(s3_bucket, tmp_path):
    bucket, client = s3_bucket
    a = exposure(tmp_path, "a.fits", 2.0)
    b = exposure(tmp_path, "b.fits", -3.0)
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(a, "one/d.fits", compress_type=zipfile.ZIP_DEFLATED)
        zf.write(b, "two/d.fits", compress_type=zipfile.ZIP_STORED)
    client.upload_file(str(archive), bucket, "repo/x.zip")
    base = f"s3://{bucket}/repo/x.zip#zip-path="
    for member, src in (("one/d.fits", a), ("two/d.fits", b)):
        url = base + member
        assert remote.list_url(url) == [url]
        r = process_file(url, None, EDGES)
        assert r.status == "ok", r.error
        np.testing.assert_array_equal(r.pedestals, pedestals(src))
        np.testing.assert_array_equal(
            measure_detector(open_exposure(url), config=EDGES).pedestals, pedestals(src))
    # the member's stamp is its archive's: a replaced archive is noticed
    stamp = remote.url_stamp(base + "one/d.fits")
    assert stamp == remote.url_stamp(f"s3://{bucket}/repo/x.zip")
    assert stamp[0] == archive.stat().st_size
    r = process_file(base + "three/d.fits", None, EDGES)
    assert r.status == "failed" and "no such member" in r.error and "three/d.fits" in r.error
    r = process_file(f"s3://{bucket}/repo/gone.zip#zip-path=d.fits", None, EDGES)
    assert r.status == "failed" and "no such object" in r.error, r.error


# ------------------------------------------------------------------------------------------
# Globs
# ------------------------------------------------------------------------------------------
def test_globs_on_object_store_urls_are_expanded(s3_bucket):
    bucket, client = s3_bucket
    keys = [f"raw/visit5/d{i}.fits" for i in range(6)] + ["raw/visit5/notes.txt",
                                                          "raw/visit6/sub/e.fits.fz",
                                                          "raw/visit6/corr/c.fits",
                                                          f"raw/visit6/corr/{OUTPUT_MARKER}"]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    root = f"s3://{bucket}/raw"

    def urls(*names):
        return [f"{root}/{n}" for n in names]

    assert remote.list_url(f"{root}/visit5/*.fits") == urls(*(f"visit5/d{i}.fits"
                                                              for i in range(6)))
    assert remote.list_url(f"{root}/visit5/d?.fits") == remote.list_url(f"{root}/visit5/*")
    assert remote.list_url(f"{root}/visit5/d[0-2].fits") == urls(
        "visit5/d0.fits", "visit5/d1.fits", "visit5/d2.fits")
    # ** goes down every level; corrected images (below an output marker) are left out
    assert remote.list_url(f"{root}/**/e.fits.fz") == urls("visit6/sub/e.fits.fz")
    assert remote.list_url(f"{root}/visit6/**") == urls("visit6/sub/e.fits.fz")
    assert remote.list_url(f"{root}/visit*/d[4-9].fits") == urls("visit5/d4.fits",
                                                                 "visit5/d5.fits")
    # a pattern matching prefixes takes the FITS objects under them, as one matching
    # local folders does
    assert remote.list_url(f"{root}/visit6*") == urls("visit6/sub/e.fits.fz")
    # as are the run's own outputs
    assert remote.list_url(f"{root}/**/*.fits*", exclude=[f"{root}/visit5"]) == urls(
        "visit6/sub/e.fits.fz")
    with pytest.raises(InputError, match=r"no FITS object matches this pattern \(1 other"):
        remote.list_url(f"{root}/visit5/*.txt")
    with pytest.raises(InputError, match=r"no FITS object matches this pattern$"):
        remote.list_url(f"{root}/visit7/*.fits")


def test_prefixes_named_with_pattern_characters_and_output_prefixes_under_a_pattern(
        s3_bucket):
    # "run[1]/" named the prefix run1/ (another prefix's objects, its own lost), "v?/"
    # recursed without end; a pattern matching the output prefix refused the whole run
    bucket, client = s3_bucket
    for key in ("lit/run[1]/x.fits", "lit/run1/y.fits", "lit/v?/z.fits",
                "lit/out/5/D0/c.fits"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    root = f"s3://{bucket}/lit"
    assert remote.list_url(f"{root}/run[1]/") == [f"{root}/run[1]/x.fits"]
    assert remote.list_url(f"{root}/v?/") == [f"{root}/v?/z.fits"]
    assert remote.list_url(f"{root}/*", exclude=[f"{root}/out"]) == [
        f"{root}/run1/y.fits", f"{root}/run[1]/x.fits", f"{root}/v?/z.fits"]
    with pytest.raises(InputError, match=r"no FITS object matches this pattern outside the "
                                         r"prefixes of corrected images \(1 inside them\)"):
        remote.list_url(f"{root}/out/*/*/*.fits", exclude=[f"{root}/out"])


# ------------------------------------------------------------------------------------------
# Keys longer than a file name
# ------------------------------------------------------------------------------------------
def test_a_key_longer_than_a_file_name_is_downloaded(s3_bucket, tmp_path):
    bucket, client = s3_bucket
    path = exposure(tmp_path, "w.fits", 2.0)
    key = "v/" + "k" * 300 + ".fits"
    client.upload_file(str(path), bucket, key)
    url = f"s3://{bucket}/{key}"
    with remote.local_copy(url) as copy:
        assert copy.name == "object.fits" and copy.read_bytes() == path.read_bytes()
    np.testing.assert_array_equal(measure_detector(open_exposure(url), config=EDGES).pedestals,
                                  pedestals(path))


def test_local_failures_that_no_retry_fixes_are_not_store_errors(tmp_path):
    url = "s3://bucket/v/a.fits"
    local = OSError(errno.ENAMETOOLONG, "File name too long", str(tmp_path / "x"))
    err = remote._error(url, local, "downloading")
    assert type(err) is InputError
    assert "on the local disk" in str(err) and "File name too long" in str(err)
    # a store's I/O error stays one (retried by the task)
    assert isinstance(remote._error(url, OSError(errno.EIO, "reset"), "downloading"),
                      remote._FetchError)
