"""Each run's worker log records, forwarded to the client that started the run and no other.

Several clients may share one scheduler (a notebook and a batch job, two users). Dask's
``Client.forward_logging`` installs one worker plugin per logger name, so a second run's
forwarding replaces the first's, the first to finish stops the other's, and each client
receives every run's records. Here each run installs its own plugin (named after its run
token, publishing to its own topic) whose handler passes only the records logged while one
of that run's tasks runs on the worker thread (`tagged`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

from distributed.diagnostics.plugin import ForwardLoggingPlugin

__all__ = ["forward_run_logs", "tagged"]

logger = logging.getLogger(__name__)

LOGGER = "ampoffset_dask"
_RUN: contextvars.ContextVar[str] = contextvars.ContextVar("ampoffset_run", default="")


@contextlib.contextmanager
def tagged(run_token: str) -> Iterator[None]:
    """Mark the log records of the enclosed task (this thread) as the run's."""
    reset = _RUN.set(run_token)
    try:
        yield
    finally:
        _RUN.reset(reset)


class _OfRun(logging.Filter):
    def __init__(self, run_token: str) -> None:
        super().__init__()
        self.run_token = run_token

    def filter(self, record: logging.LogRecord) -> bool:
        return _RUN.get() == self.run_token


class _RunLogPlugin(ForwardLoggingPlugin):
    """Dask's forwarding plugin for the ``ampoffset_dask`` logger, restricted to one run."""

    def __init__(self, run_token: str, level: int, topic: str) -> None:
        super().__init__(LOGGER, level, topic)
        self.run_token = run_token

    def setup(self, worker: Any) -> None:
        super().setup(worker)
        self.handler.addFilter(_OfRun(self.run_token))


def _handle(event: tuple[float, dict[str, Any]]) -> None:
    record = logging.makeLogRecord(event[1])
    logging.getLogger(record.name).handle(record)


@contextlib.contextmanager
def forward_run_logs(client: Any, run_token: str, enabled: bool = True,
                     level: int = logging.INFO) -> Iterator[None]:
    """Forward the run's worker records (logger ``ampoffset_dask``, ``level`` and above) to
    this process's loggers for the block; other runs on the same scheduler are unaffected."""
    if not enabled:
        yield
        return
    name = f"ampoffset-logs-{run_token}"
    topic = f"forwarded-log-record-{name}"
    try:
        client.subscribe_topic(topic, _handle)
        client.register_plugin(_RunLogPlugin(run_token, level, topic), name=name)
    except Exception as exc:  # the run goes on without its workers' log records
        logger.warning("cannot forward the workers' log records: %s", exc)
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            client.unregister_worker_plugin(name)
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)
