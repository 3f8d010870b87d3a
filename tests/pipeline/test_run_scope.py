"""A run's storage options are in force for that run's reads only: a later run in the same
process (a notebook) or on the same workers (another client) never inherits them."""

from __future__ import annotations

import shutil
import threading

from ampoffset_dask import process
from ampoffset_dask.io import remote
from ampoffset_dask.pipeline.detector_job import DetectorJob
from ampoffset_dask.pipeline.inputs import discover_inputs, plan_tasks

RUN_OPTIONS = {"endpoint_url": "http://127.0.0.1:9", "key": "run-key", "secret": "run-secret"}


def _endpoint() -> str | None:
    return remote.storage_options("s3://bucket/k").get("endpoint_url")


def test_scoped_options_hold_in_the_block_and_its_copied_threads_only(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    seen = {}
    with remote.scoped_storage_options(RUN_OPTIONS):
        assert _endpoint() == RUN_OPTIONS["endpoint_url"]
        # an explicit argument still wins
        assert remote.storage_options("s3://b/k", {"key": "k2"})["key"] == "k2"
        plain = threading.Thread(target=lambda: seen.setdefault("plain", _endpoint()))
        plain.start()
        plain.join()
    assert seen["plain"] is None  # another thread (another task) does not see them
    assert _endpoint() is None
    # a process default still applies, under a run's options
    remote.set_storage_options({"endpoint_url": "http://default"})
    try:
        with remote.scoped_storage_options(RUN_OPTIONS):
            assert _endpoint() == RUN_OPTIONS["endpoint_url"]
        with remote.scoped_storage_options(None):
            assert _endpoint() == "http://default"
    finally:
        remote.set_storage_options(None)


def test_planning_threads_read_headers_with_the_run_options(sim_visit, tmp_path):
    seen = []
    data = tmp_path / "in"
    data.mkdir()
    for p in sim_visit.paths[:3]:
        shutil.copy(p, data)
    items = discover_inputs(data)

    import ampoffset_dask.pipeline.inputs as inputs_mod

    real_plan_one = inputs_mod._plan_one

    def plan_one(*args, **kwargs):
        seen.append(_endpoint())
        return real_plan_one(*args, **kwargs)

    inputs_mod._plan_one = plan_one
    try:
        with remote.scoped_storage_options(RUN_OPTIONS):
            planned = plan_tasks(items, threads=3)
    finally:
        inputs_mod._plan_one = real_plan_one
    assert len(planned) == 3
    assert seen == [RUN_OPTIONS["endpoint_url"]] * 3


def test_a_run_with_storage_options_leaves_none_behind(sim_visit, client, tmp_path,
                                                        monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    data = tmp_path / "in"
    data.mkdir()
    for p in sim_visit.paths[:2]:
        shutil.copy(p, data)
    # the job on a worker, as `process` submits it, then what that worker holds afterwards
    job = DetectorJob(sim_visit.paths[0], storage_options=RUN_OPTIONS)
    assert job.run().status == "ok"
    assert _endpoint() is None
    summary = process(data, tmp_path / "cat", client=client, progress=False,
                      storage_options=RUN_OPTIONS)
    assert summary.n_ok == 2
    assert _endpoint() is None  # this process (a notebook's next run)

    def worker_endpoint():
        from ampoffset_dask.io import remote

        return remote.storage_options("s3://bucket/k").get("endpoint_url")

    # the workers that ran its tasks (the next client's runs there)
    assert set(client.run(worker_endpoint).values()) == {None}
