"""Worker preload of the local cluster: its worker processes ignore Ctrl-C.

A terminal's Ctrl-C reaches the whole foreground process group, the local cluster's worker
processes included; each then printed a 30-line ``KeyboardInterrupt`` traceback beside the
command's one-line message. The command that owns them stops them when it is interrupted
(their nannies terminate them), so they need not react to the key themselves. Nor need
they warn about each task the stop cancels.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any


def _not_a_cancelled_task(record: logging.LogRecord) -> bool:
    return "ended with CancelledError" not in record.getMessage()


def dask_setup(worker: Any) -> None:
    """Ignore SIGINT in this worker process (called by distributed's preload machinery)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker.state_machine").addFilter(_not_a_cancelled_task)
