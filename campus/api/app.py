"""The composition root of the HTTP server: settings in, ASGI app out."""

from __future__ import annotations

import gc
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware

from campus.api import (  # noqa: F401 - they register their routes on `api`  # noqa: F401 - the account page, the school-year change  # noqa: F401 - fiche 11: connections, seats, suspended addresses
    account,
    backups,
    connections,
    exchange,
    mail,  # noqa: F401 - Campus fiches 10-11: mail accounts, connection details, outbox
    me,
    publication,  # noqa: F401 - registers the publication routes on `api`
    school,
    school_year,
    security,
)
from campus.api.handlers import api
from campus.api.middleware import RequestContextMiddleware
from campus.api.openapi import campus_version
from campus.api.problems import EXCEPTION_HANDLERS
from campus.api.router import PrefixRouter
from campus.application import CampusApplication
from campus.infra.clock import Clock
from campus.infra.settings import Settings, operator_token

log = structlog.get_logger("campus")
# The cyclic garbage collector, less often than Python's default (700, 10, 10): a server keeps large
# states (bases, aggregates) whose full scans stalled every request; measured with wrk at 32 connections,
# writes' p99 went from 66-69 ms to 34-39 ms and req/s up 5-15% (docs/DECISIONS.md, issue 11).
GC_THRESHOLDS = (50_000, 50, 1_000)


def _settings_from_environment() -> Settings:
    from campus.infra.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    token, _ = operator_token(settings)
    return Settings(**{**settings.__dict__, "operator_token": token})


def _warm_up(app_service: CampusApplication, stop: threading.Event) -> None:
    try:
        log.info("warmed_up", bases=app_service.bases.warm_up(stop))
    except Exception:  # noqa: BLE001 - a cold cache is only slower
        log.warning("warm_up_failed", exc_info=True)


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Set `stop` as soon as the server is asked to stop (SIGTERM, SIGINT), then run its own handler.

    uvicorn lets open responses end before it runs the lifespan's shutdown, and a live
    history stream ends only when it sees `stop`: waiting for the lifespan would hold the
    shutdown for the whole graceful timeout. Chains onto the handler the server installed
    (main thread only: in-process test clients run the lifespan elsewhere). Returns the undo.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    chained = {sig: previous for sig, previous in handlers.items() if callable(previous)}

    def handler(sig: int, frame: object) -> None:
        stop.set()
        chained[sig](sig, frame)

    for sig in chained:
        signal.signal(sig, handler)

    def undo() -> None:
        for sig, previous in chained.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)
    return undo


def create_app(settings: Settings | None = None, *, clock: Clock | None = None,
               application: CampusApplication | None = None) -> Starlette:
    """Build the ASGI app. The eventsourcing application is built here unless given.

    Without settings, this is a uvicorn factory (``uvicorn --factory campus.api.app:create_app``, and
    each worker of ``campus serve --workers N``): the settings are read from the environment, logging
    is configured, and the operator token comes from ``CAMPUS_OPERATOR_TOKEN`` or the data dir.
    """
    if settings is None:
        settings = _settings_from_environment()
    app_service = application or CampusApplication(settings, clock=clock)
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gc.set_threshold(*GC_THRESHOLDS)
        app_service.history.catch_up(patient=True)  # waits while another server projects a long backlog
        # Interrupted writes and orphan files of a crash, in the server holding the scheduler's lease.
        app_service.backup_schedule.clean_snapshots()
        stop = threading.Event()
        restore_signals = _stop_on_signals(stop)  # open history streams end at once, not after the timeout
        follower = app_service.history.follow(stop)
        timeline_follower = app_service.timeline.follow(stop)
        # Saves, archives, year operations, clean-ups: in one server at a time.
        scheduler = app_service.backup_schedule.start_scheduler(stop)
        mail_sender = app_service.outbox.start_mail_sender(stop)
        # Snapshots of bases that grew, outside any school's serialisation: in one server at a time.
        base_snapshots = app_service.base_snapshots.start_snapshotter(stop)
        warm_up = threading.Thread(target=_warm_up, args=(app_service, stop), name="campus-warm-up", daemon=True)
        warm_up.start()
        log.info("started", store="postgres" if settings.uses_postgres else "sqlite", version=campus_version(),
                 pid=os.getpid())
        yield
        stop.set()
        restore_signals()
        # Background threads end before the store closes (never log or query after shutdown).
        for thread in (follower, timeline_follower, scheduler, warm_up, mail_sender, base_snapshots):
            thread.join(timeout=10)
        app_service.close()

    app = Starlette(
        routes=api.starlette_routes(app_service),
        middleware=[Middleware(RequestContextMiddleware, trusted_proxies=settings.trusted_proxies)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    # The same routes, tried by the literal beginning of the path (campus/api/router.py).
    app.router = PrefixRouter(routes=app.router.routes, lifespan=lifespan)
    app.state.campus = app_service
    return app
