"""Credentials in input URLs (``http://user:password@host/...``, signed queries) never reach
the catalog or the messages: `remote.redact` hides them, the store libraries' messages are
redacted too, and a run over such a URL leaves no trace of the password in any catalog file
or in what it prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import cli_subprocess

from ampoffset_dask.catalog import CatalogWriter
from ampoffset_dask.catalog.journal import Journal, replay
from ampoffset_dask.catalog.schema import DetectorResult
from ampoffset_dask.io import remote

SECRET = "S3cr3t-PassW0rd"


@pytest.mark.parametrize("url, shown", [
    # the user name stays (which account read it), the password goes
    (f"http://alice:{SECRET}@h:5123/b/x.fits", "http://alice:***@h:5123/b/x.fits"),
    (f"https://alice:{SECRET}@h/b/x.fits", "https://alice:***@h/b/x.fits"),
    (f"s3://AKIA1234:{SECRET}@bucket/v/x.fits", "s3://AKIA1234:***@bucket/v/x.fits"),
    (f"gs://alice:{SECRET}@bucket/x.fits", "gs://alice:***@bucket/x.fits"),
    (f"HTTP://alice:{SECRET}@h/x.fits", "HTTP://alice:***@h/x.fits"),
    # a user name alone is usually a token: hidden whole
    (f"https://{SECRET}@h/x.fits", "https://***@h/x.fits"),
    # an empty password, and an unencoded "@" in one (the last "@" ends the user information)
    ("https://alice:@h/x.fits", "https://alice:***@h/x.fits"),
    (f"https://alice:{SECRET}@x@h/x.fits", "https://alice:***@h/x.fits"),
    # user information and a signed query together
    (f"https://alice:{SECRET}@h/x.fits?X-Amz-Signature={SECRET}",
     "https://alice:***@h/x.fits?<signature>"),
    # fragments are kept (never sent to a server; they name zip members or parts of a key)
    (f"http://alice:{SECRET}@h/a.zip#zip-path=x.fits", "http://alice:***@h/a.zip#zip-path=x.fits"),
    ("s3://bucket/a#b.fits", "s3://bucket/a#b.fits"),
    # an "@" after the host is part of the path, not user information
    ("s3://bucket/user@example.org/x.fits", "s3://bucket/user@example.org/x.fits"),
    ("https://h/x.fits?X-Amz-Signature=abc", "https://h/x.fits?<signature>"),
    # local paths keep their form
    ("/data/a:b@c/x.fits", "/data/a:b@c/x.fits"),
    ("relative/x.fits", "relative/x.fits"),
])
def test_redact_hides_passwords_and_keeps_the_rest(url, shown):
    assert remote.redact(url) == shown
    assert remote.redact(shown) == shown  # redacting twice changes nothing
    assert SECRET not in remote.redact(url)


def test_messages_of_the_store_libraries_are_redacted():
    """aiohttp and fsspec quote the URL they were given, password included, in their own
    messages: `_error` (every remote failure) says why without it."""
    url = f"http://alice:{SECRET}@127.0.0.1:9/b/x.fits?sig={SECRET}"
    said = (f"500, message='Internal Server Error', url=URL('{url}'); "
            f"also tried {url}: gave up")
    for exc in (OSError(said), ValueError(said), ConnectionRefusedError(f"Cannot connect {url}")):
        err = remote._error(url, exc, "opening")
        assert SECRET not in str(err), err
        assert "http://alice:***@127.0.0.1:9/b/x.fits?<signature>" in str(err)
    text = remote.redact_text(f"see ({url}). and s3://k:{SECRET}@b/x.fits: no such object")
    assert SECRET not in text and "s3://k:***@b/x.fits: no such object" in text
    assert remote.redact_text(text) == text


def test_the_writer_stores_no_password_whoever_calls_it(tmp_path):
    """The catalog writer redacts what it records (rows, journal, run record), also when its
    caller passes the URL as given."""
    url = f"https://alice:{SECRET}@h/v/x.fits?X-Amz-Credential={SECRET}"
    cat = tmp_path / "cat"
    with CatalogWriter(cat) as writer:
        writer.start_run(config={"a": 1}, inputs=[url], url_stamps={url: (10, 1.5)},
                         options={"output_images": f"s3://k:{SECRET}@b/out/"},
                         scheduler=f"tcp://u:{SECRET}@sched:8786")
        writer.expect(-1, [f"input:{url}"])
        writer.add(DetectorResult.failure(
            f"InputError: {url}: no such object; the store said URL('{url}')",
            visit=None, detector=None, input=url))
        writer.add(DetectorResult(visit=3, detector="R22_S11", status="ok", input=url,
                                  output=f"s3://k:{SECRET}@b/out/x.fits",
                                  warnings=[f"{url}: slow"], amp_names=["C10", "C11"],
                                  pedestals=[0.5, -0.5]))
        journal = Journal(cat, writer.run_id).path.read_bytes()
        assert SECRET.encode() not in journal
        # the caller's stamp of the URL is recorded under its redacted name
        assert json.loads(writer._run_row["inputs"]) == [
            {"path": "https://alice:***@h/v/x.fits?<signature>", "size": 10, "mtime": 1.5}]
    assert_no_secret(cat)
    rows = CatalogWriter(cat).current()
    assert rows[(3, "R22_S11")].input == "https://alice:***@h/v/x.fits?<signature>"


def test_a_journal_written_with_a_password_is_recovered_without_it(tmp_path):
    """A journal left by a killed run of an earlier version holds the URL as given: replay
    redacts it before it reaches the tables."""
    url = f"http://alice:{SECRET}@h/x.fits"
    j = Journal(tmp_path, "run1")
    j.append(DetectorResult.failure(f"InputError: {url}: no such object", visit=None,
                                    detector=None, input=url))
    j.close()
    [rec] = replay(tmp_path).records
    assert rec.input == "http://alice:***@h/x.fits" and SECRET not in rec.error


def assert_no_secret(folder: Path, *texts: str) -> None:
    """No file under ``folder`` (read as bytes: Parquet pages, JSON, journals) and none of
    ``texts`` holds the password, in clear or percent-encoded."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    for p in files:
        data = p.read_bytes()
        assert SECRET.encode() not in data, p
    for text in texts:
        assert SECRET not in text, text


@pytest.fixture
def http_object(s3_bucket, tmp_path):
    """A simulated detector in the session's S3 server, and the plain-HTTP base URL of its
    bucket (the server answers unsigned requests)."""
    from ampoffset_dask.simulate import simulate_focal_plane

    bucket, client = s3_bucket
    sim = simulate_focal_plane(tmp_path / "sim", "lsstcam", detectors=["R22_S11"], visits=[1],
                               scale=0.05, seed=3)
    client.upload_file(str(sim.paths[0]), bucket, "v/R22_S11.fits")
    endpoint = remote.storage_options("s3://x")["endpoint_url"]
    host = endpoint.split("://", 1)[1]
    return f"http://alice:{SECRET}@{host}/{bucket}/v"


def test_a_run_over_urls_with_a_password_records_and_prints_none(http_object, tmp_path):
    """End to end (the command, verbose): one object measured, one missing (a failed row
    whose error quotes the store), then a rerun that resumes; neither the catalog's files
    nor the output hold the password, and the rows name the URLs redacted."""
    ok, missing = f"{http_object}/R22_S11.fits", f"{http_object}/missing.fits"
    cat = tmp_path / "cat"
    first = cli_subprocess("-v", "run", ok, missing, "--output", cat, "--scheduler", "local:1",
                           "--no-progress")
    assert first.returncode == 1, first.stderr  # one failed input
    assert "ok 1," in first.stdout + first.stderr and "failed 1" in first.stdout + first.stderr
    assert "alice:***@" in first.stderr  # the failure is named, redacted
    again = cli_subprocess("-v", "run", ok, missing, "--output", cat, "--scheduler",
                           "local:1", "--no-progress")
    assert "skipped 1" in again.stdout + again.stderr, again.stderr  # resume found the row
    assert_no_secret(cat, first.stdout, first.stderr, again.stdout, again.stderr)

    from ampoffset_dask.catalog.read import arrow_table

    rows = arrow_table(cat, "detectors", columns=["status", "input", "error"]).to_pylist()
    assert {(r["status"], r["input"]) for r in rows} == {
        ("ok", remote.redact(ok)), ("failed", remote.redact(missing))}
    assert all("alice:***@" in r["error"] for r in rows if r["status"] == "failed")
    runs = arrow_table(cat, "runs", columns=["inputs"]).to_pylist()
    assert {i["path"] for r in runs for i in json.loads(r["inputs"])} == {
        remote.redact(ok), remote.redact(missing)}


def test_info_reads_a_url_and_names_it_without_the_password(http_object):
    """``info`` took its argument for a local path: a URL became ``http:/alice:<password>@...:
    no such file``, the password in clear. It now reads the object's headers as `run` does."""
    url = f"{http_object}/R22_S11.fits"
    proc = cli_subprocess("info", url)
    assert proc.returncode == 0, proc.stderr
    assert f"file        {remote.redact(url)}" in proc.stdout
    assert "R22_S11" in proc.stdout and "16 of" in proc.stdout
    data = json.loads(cli_subprocess("info", url, "--json").stdout)
    assert data["path"] == remote.redact(url) and data["size_bytes"] > 2880
    assert SECRET not in proc.stdout + proc.stderr + json.dumps(data)


def test_verbose_tracebacks_of_an_unreachable_store_hold_no_password(tmp_path):
    """With ``-v``, the traceback of a command's error chains the store library's own
    exception, which quotes the URL as given; and a refused connection was "no such object"
    (fsspec's HTTP reads raise FileNotFoundError for it)."""
    url = f"http://alice:{SECRET}@127.0.0.1:9/b/x.fits"
    proc = cli_subprocess("-v", "info", url)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr  # -v shows it, redacted
    assert SECRET not in proc.stdout + proc.stderr, proc.stderr
    assert "http://alice:***@127.0.0.1:9/b/x.fits: cannot reach the storage endpoint" in \
        proc.stderr, proc.stderr


def test_a_refused_run_names_a_url_without_its_password(tmp_path):
    # a manifest naming one URL twice with two visits: the refusal quoted the URL whole
    manifest = tmp_path / "m.csv"
    url = "http://alice:s3cret@127.0.0.1:9/x.fits"
    manifest.write_text(f"path,visit\n{url},1\n{url},2\n")
    from ampoffset_dask import InputError, process

    proc = cli_subprocess("run", manifest, "--output", tmp_path / "cat", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "given twice with different identities" in proc.stderr
    assert "s3cret" not in proc.stderr and "http://alice:***@127.0.0.1:9/x.fits" in proc.stderr
    with pytest.raises(InputError) as info:
        process(manifest, tmp_path / "cat2", progress=False)
    assert "s3cret" not in str(info.value)
