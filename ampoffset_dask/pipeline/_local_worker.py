"""Worker preload of the local cluster: its worker processes ignore Ctrl-C.

A terminal's Ctrl-C reaches the whole foreground process group, the local cluster's worker
processes included; each then printed a 30-line ``KeyboardInterrupt`` traceback beside the
command's one-line message. The command that owns them stops them when it is interrupted
(their nannies terminate them), so they need not react to the key themselves. Nor need
they warn about each task the stop cancels, nor about a heartbeat that found the
scheduler gone: a local cluster's scheduler lives in the command's own process, so it goes
away only when the command ends, and the command reports that itself.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

_EXPECTED_AT_THE_END = (
    "ended with CancelledError",
    "Failed to communicate with scheduler during heartbeat",
)


def _not_expected_at_the_end(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(text in message for text in _EXPECTED_AT_THE_END)


def dask_setup(worker: Any) -> None:
    """Ignore SIGINT in this worker process (called by distributed's preload machinery)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("distributed.worker.state_machine", "distributed.worker"):
        logger = logging.getLogger(name)
        if _not_expected_at_the_end not in logger.filters:
            logger.addFilter(_not_expected_at_the_end)
