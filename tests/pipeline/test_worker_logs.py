"""Worker log records reach the client of their own run only, on a shared scheduler."""

from __future__ import annotations

import contextlib
import logging

from distributed import Client

from ampoffset_dask.pipeline.detector_job import identified_job
from ampoffset_dask.pipeline.worker_logs import forward_run_logs, tagged
from pipeline.helpers import wait_for


def _messages(caplog, text):
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_two_runs_on_one_scheduler_get_their_own_worker_logs(shared_scheduler, caplog):
    def _log_in_run(run_token: str, message: str) -> str:  # local: pickled by value
        import logging

        from ampoffset_dask.pipeline.worker_logs import tagged

        with tagged(run_token):
            logging.getLogger("ampoffset_dask.pipeline.detector_job").warning(message)
        return message

    with Client(shared_scheduler) as a, Client(shared_scheduler) as b, \
            caplog.at_level(logging.WARNING, logger="ampoffset_dask"), \
            contextlib.ExitStack() as runs:
        runs.enter_context(forward_run_logs(b, "run-b"))
        stop_a = contextlib.ExitStack()
        stop_a.enter_context(forward_run_logs(a, "run-a"))
        # Both clients live in this process: a record forwarded by both runs' plugins (or by
        # a plugin of the wrong run) would show up here twice.
        assert a.submit(_log_in_run, "run-a", "from run a", pure=False).result() == "from run a"
        assert b.submit(_log_in_run, "run-b", "from run b", pure=False).result() == "from run b"
        a.submit(_log_in_run, "run-c", "from a run not forwarded", pure=False).result()
        wait_for(lambda: _messages(caplog, "from run a") and _messages(caplog, "from run b"),
                 30, 0.05, "the forwarded records")
        # the first run ends: the second run's records keep coming
        stop_a.close()
        b.submit(_log_in_run, "run-b", "after run a ended", pure=False).result()
        wait_for(lambda: _messages(caplog, "after run a ended"), 30, 0.05,
                 "the record logged after the other run ended")
        # and the ended run's records no longer do
        a.submit(_log_in_run, "run-a", "from run a after it ended", pure=False).result()
        b.submit(_log_in_run, "run-b", "last of run b", pure=False).result()
        wait_for(lambda: _messages(caplog, "last of run b"), 30, 0.05, "the last record")
    assert _messages(caplog, "from run a") == ["from run a"]
    assert _messages(caplog, "from run b") == ["from run b"]
    assert _messages(caplog, "after run a ended") == ["after run a ended"]
    assert not _messages(caplog, "not forwarded")
    assert not _messages(caplog, "after it ended")


def test_a_job_marks_its_records_with_the_run(tmp_path, caplog):
    # an unreadable input: the job logs a warning while it runs, marked with its run
    bad = tmp_path / "lsstcam_000007_R22_S11.fits"
    bad.write_bytes(b"not a FITS file")
    seen = []

    class Spy(logging.Handler):
        def emit(self, record):
            from ampoffset_dask.pipeline import worker_logs

            seen.append((record.getMessage(), worker_logs._RUN.get()))

    spy = Spy()
    log = logging.getLogger("ampoffset_dask")
    log.addHandler(spy)
    try:
        with tagged("outer"):
            _, result = identified_job(path=str(bad), log_run="run-x")
            assert result.status == "failed"
            with tagged("inner"):
                logging.getLogger("ampoffset_dask.pipeline").warning("nested")
    finally:
        log.removeHandler(spy)
    assert any(str(bad) in m and run == "run-x" for m, run in seen)
    assert ("nested", "inner") in seen
