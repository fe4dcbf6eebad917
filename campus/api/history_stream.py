"""The history's streamed answers: the live history (Server-Sent Events) and the export (JSON lines).

``GET /v1/console/history/stream`` answers ``text/event-stream``. Each event of
the school that passes the filters is one message::

    id: <position>
    event: <type, e.g. Planning.DomainBound>
    data: <the JSON object the list answers for that event>

First every matching event after the resume point (``Last-Event-ID``, else
``?after=``, else the beginning), then each new one as it is recorded: the
stream polls the view (:data:`POLL_SECONDS`), which is cheap when nothing
happened. A comment (``: keep-alive``) goes out when nothing else did for
``Settings.history_heartbeat_seconds``, so proxies keep the connection. The
console session is checked again before every batch of events is sent and at
least every ``Settings.history_session_check_seconds`` (5 s by default) while
the stream waits: the stream ends as soon as the session has ended (logout,
expiry, password reset), and never sends an event after. The stream also ends when
the server is asked to stop (``HistoryView.stopping``), so a shutdown never
waits for its clients. It reads the same rows as the list, so secrets stay
redacted the same way, and only the caller's school's rows.

The generator runs on the event loop: it sleeps with ``anyio.sleep`` and reads
the store in a worker thread, so an open stream holds no thread while it waits.

``GET /v1/console/history/export`` answers ``application/x-ndjson``, one event
per line, read a page at a time as the client takes them
(:meth:`HistoryView.export <campus.projections.history.HistoryView.export>`):
memory holds one page whatever the length of the history, and the export holds
the events up to where the view was when it began. A store that fails before the
first byte is a problem (503) like any other; after it, the answer is cut short
(no end of the chunked body: the client sees an incomplete download, never a
complete-looking partial one).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio
import structlog
from eventsourcing.persistence import PersistenceError
from starlette.responses import StreamingResponse
from starlette.types import Send

from campus.api.routing import encode_json
from campus.errors import Invalid, StoreUnavailable, Unauthenticated
from campus.projections.history import HistoryQuery

if TYPE_CHECKING:
    from campus.application import CampusApplication

MEDIA_TYPE = "text/event-stream"
EXPORT_MEDIA_TYPE = "application/x-ndjson"
POLL_SECONDS = 0.5
MAX_POSITION = 2**63 - 1
log = structlog.get_logger("campus.history")


def last_event_id(headers: Mapping[str, str]) -> int | None:
    """The position to resume after, from ``Last-Event-ID`` (empty means none, as in the SSE spec)."""
    value = headers.get("last-event-id")
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or int(value) > MAX_POSITION:
        raise Invalid.field("header.Last-Event-ID",
                            f"must be the id of an event of this stream (a position from 0 to {MAX_POSITION})")
    return int(value)


def sse_message(event: dict) -> bytes:
    """One event as an SSE message (orjson never writes a raw newline, so `data` is one line)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event["position"], event["type"].encode(), encode_json(event))


def history_stream(app: CampusApplication, query: HistoryQuery, token: str) -> StreamingResponse:
    return StreamingResponse(
        _follow(app, query, token), media_type=MEDIA_TYPE,
        # No caching, and no buffering by a reverse proxy (nginx honours X-Accel-Buffering).
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _follow(app: CampusApplication, query: HistoryQuery, token: str) -> AsyncIterator[bytes]:
    cursor = query.after or 0  # every matching event up to here was sent
    drained_at = -1  # the view's position when the last read found nothing more
    heartbeat = app.settings.history_heartbeat_seconds
    check_every = app.settings.history_session_check_seconds
    quiet_until = time.monotonic() + heartbeat
    checked_at = time.monotonic()  # the request that opened the stream was authenticated

    async def signed_in() -> bool:
        nonlocal checked_at
        checked_at = time.monotonic()
        return await anyio.to_thread.run_sync(_still_signed_in, app, token)

    try:
        while not app.history.stopping.is_set():
            try:
                position = await anyio.to_thread.run_sync(app.history.catch_up)
            except StoreUnavailable:  # the view is behind (its projector is busy): look again at the next poll
                if time.monotonic() - checked_at >= check_every and not await signed_in():
                    return
                await anyio.sleep(POLL_SECONDS)
                continue
            if position != drained_at:
                events, more = await anyio.to_thread.run_sync(app.history.page, replace(query, after=cursor))
                if events:
                    if not await signed_in():  # never an event for a session that has ended
                        return
                    yield b"".join(sse_message(e) for e in events)
                    cursor, quiet_until = events[-1]["position"], time.monotonic() + heartbeat
                if more is not None:
                    continue
                # Everything up to `position` was in the view when it was read: nothing there is missed.
                cursor, drained_at = max(cursor, position), position
            if time.monotonic() - checked_at >= check_every and not await signed_in():
                return
            if time.monotonic() >= quiet_until:
                if not await signed_in():
                    return
                yield b": keep-alive\n\n"
                quiet_until = time.monotonic() + heartbeat
            await anyio.sleep(POLL_SECONDS)
    except PersistenceError as exc:
        # The store is busy or unreachable: end the stream; the client resumes with Last-Event-ID.
        log.warning("history_stream_store_unavailable", error_type=type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - the headers are sent: end the stream cleanly, say why in the log
        log.error("history_stream_failed", error_type=type(exc).__name__, exc_info=exc)


def history_export(app: CampusApplication, query: HistoryQuery) -> StreamingResponse:
    """The export of `query` (runs in the handler's thread: the first page is read before the answer starts)."""
    chunks = app.history.export(query, page=app.settings.history_page_max)
    return _Export(chunks, media_type=EXPORT_MEDIA_TYPE,
                   headers={"Content-Disposition": 'attachment; filename="history.jsonl"'})


class _Export(StreamingResponse):
    """A streamed answer that a store failure cuts short instead of ending it as if it were whole."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sent = 0
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
        except PersistenceError as exc:
            # No last empty chunk: the server closes the connection and the client knows it is incomplete.
            log.warning("history_export_cut", error_type=type(exc).__name__, bytes_sent=sent)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _still_signed_in(app: CampusApplication, token: str) -> bool:
    try:
        app.console_sessions.authenticate_console(token)
    except Unauthenticated:
        return False
    return True
