"""Store inputs meet the run's rules as local files do: a catalog of the earlier LSST visit
numbering is refused, corrected objects are flagged (not failed) and their forced rows kept,
and S3 options forwarded for a run's inputs do not break its http reads."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
from astropy.io import fits

from ampoffset_dask import AmpOffsetConfig, ConfigError, process, read_catalog
from ampoffset_dask.catalog import CatalogWriter, DetectorResult
from ampoffset_dask.io import remote
from ampoffset_dask.simulate import simulate_focal_plane


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store_rows")
    return simulate_focal_plane(folder / "sim", "lsstcam", detectors=["R22_S11", "R22_S12"],
                                visits=[1], scale=0.05, seed=4).paths


def _run(inputs, catalog, client, **kw):
    return process(inputs, catalog, client=client, progress=False, **kw)


def _counts(summary):
    return summary.n_ok, summary.n_flagged, summary.n_failed, summary.n_skipped


@pytest.fixture
def client(shared_scheduler):
    from distributed import Client

    with Client(shared_scheduler) as c:
        yield c


def test_an_object_under_the_earlier_visit_numbering_is_refused(s3_bucket, sims, tmp_path,
                                                                client):
    """Local files were refused; an s3:// input was measured again under LSST's exposure id
    and both rows stayed current (the check compared the object's stamp before the run
    held it)."""
    bucket, s3 = s3_bucket
    raw = tmp_path / "raw.fits"
    with fits.open(sims[0]) as hdus:
        del hdus[0].header["VISIT"]
        hdus[0].header.update(DAYOBS="20230101", SEQNUM=5, CONTRLLR="C")
        hdus.writeto(raw)
    s3.upload_file(str(raw), bucket, "raw/raw.fits")
    url = f"s3://{bucket}/raw/raw.fits"
    old = tmp_path / "old"
    with CatalogWriter(old) as writer:  # as the earlier numbering recorded it
        writer.start_run(config=AmpOffsetConfig(), inputs=[url],
                         url_stamps={url: remote.url_stamp(url)})
        writer.add(DetectorResult(visit=2023010100005, detector="R22_S11", detector_id=94,
                                  status="ok", input=url, amp_names=["C10", "C11"],
                                  pedestals=[0.5, -0.5]))
        writer.finish_run()
    with pytest.raises(ConfigError, match=r"as visit 2023010100005, now 3023010100005"):
        _run([url], old, client)
    assert set(read_catalog(old, "detectors")["visit"]) == {2023010100005}


def test_corrected_objects_are_flagged_and_their_forced_rows_kept(s3_bucket, sims, tmp_path,
                                                                  client):
    """Every corrected object in a store was a failed row ("cannot read the header: not
    enough values to unpack"), with or without force; a forced row was then replaced by a
    flagged one at a later new run."""
    bucket, s3 = s3_bucket
    copies = tmp_path / "copies"
    assert _counts(_run(list(sims), tmp_path / "first", client, output_images=copies)) == (
        2, 0, 0, 0)
    urls = []
    for k, path in enumerate(sorted(copies.rglob("*.fits"))):
        s3.upload_file(str(path), bucket, f"corr/{k}.fits")
        urls.append(f"s3://{bucket}/corr/{k}.fits")
    cat = tmp_path / "cat"
    flagged = _run(urls, cat, client)
    assert _counts(flagged) == (0, 2, 0, 0)
    assert all("already corrected" in error for _, _, error in flagged.flagged)
    forced = _run(urls, cat, client, force=True)
    assert _counts(forced) == (2, 0, 0, 0)
    again = _run(urls, cat, client, new_run=True)
    assert _counts(again) == (0, 0, 0, 2) and again.n_submitted == 0
    assert any("neither measured nor written" in note for note in again.notes)
    det = read_catalog(cat, "detectors")
    assert det["status"].tolist() == ["ok", "ok"] and set(det["run_id"]) == {forced.run_id}


class _Get(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(False)

    def do_GET(self):
        self._serve(True)

    def _serve(self, body: bool) -> None:
        data = self.server.data
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


def test_s3_options_of_a_run_leave_its_http_reads_alone(s3_bucket, sims, monkeypatch):
    """The options forwarded for a run's S3 inputs (endpoint, keys, region) reached the http
    filesystem too: every http write of such a run failed with aiohttp's "unexpected
    keyword argument 'region_name'"."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket, _ = s3_bucket
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Get)
    server.data = Path(sims[0]).read_bytes()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x.fits"
        options = remote.environment_options([f"s3://{bucket}/raw/a.fits"])
        assert options["client_kwargs"] == {"region_name": "us-east-1"}
        with remote.scoped_storage_options(options):
            assert "region_name" not in remote.storage_options(url).get("client_kwargs", {})
            with remote.filesystem(url).open(url, "rb") as fh:
                header = fits.getheader(fh, 0)
            # the S3 inputs keep them
            assert remote.storage_options(f"s3://{bucket}/raw/a.fits")["client_kwargs"] == {
                "region_name": "us-east-1"}
        assert header["DETNAME"] == fits.getheader(sims[0], 0)["DETNAME"]
    finally:
        server.shutdown()
        server.server_close()
