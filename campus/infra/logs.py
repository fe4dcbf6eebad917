"""structlog configuration: JSON lines (orjson) in production, console on a TTY."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

from campus.infra.redaction import redact_log_event


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is when a line is written, not the stream of configure time
    (a command run in-process by tests, or a stream replaced later, never leaves loggers on a closed file)."""

    def write(self, data: bytes | str) -> None:
        stream = sys.stderr
        if isinstance(data, bytes):
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                buffer.write(data)
                return
            data = data.decode("utf-8", "replace")
        stream.write(data)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared = [
        structlog.contextvars.merge_contextvars,
        redact_log_event,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if fmt == "json":
        processors = [*shared, structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        factory = structlog.BytesLoggerFactory(_CurrentStderr())
    else:
        processors = [*shared, structlog.dev.ConsoleRenderer()]
        factory = structlog.PrintLoggerFactory(_CurrentStderr())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
