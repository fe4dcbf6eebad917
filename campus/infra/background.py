"""The server's background work: one way to run a task every few seconds until the server stops."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("campus")


def run_every(seconds: float, work: Callable[[], Any], stop: threading.Event, name: str) -> threading.Thread:
    """A daemon thread running `work` every `seconds` until `stop` is set.

    A failure is logged (``<name>_failed``) and the next round tries again: readers
    that need the work done (a projection's catch-up) do it themselves and report.
    """

    def loop() -> None:
        while not stop.wait(seconds):
            try:
                work()
            except Exception:  # noqa: BLE001 - logged; the next round retries
                log.warning(f"{name.replace('-', '_')}_failed", exc_info=True)

    thread = threading.Thread(target=loop, name=f"campus-{name}", daemon=True)
    thread.start()
    return thread
