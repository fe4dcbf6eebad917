"""The composition root of the HTTP server: settings in, ASGI app out."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware

from campus.api import backups, exchange, me, school  # noqa: F401 - they register their routes on `api`
from campus.api.handlers import api
from campus.api.middleware import RequestContextMiddleware
from campus.api.openapi import campus_version
from campus.api.problems import EXCEPTION_HANDLERS
from campus.application import CampusApplication
from campus.clock import Clock
from campus.settings import Settings

log = structlog.get_logger("campus")


def _warm_up(app_service: CampusApplication, stop: threading.Event) -> None:
    try:
        log.info("warmed_up", bases=app_service.warm_up(stop))
    except Exception:  # noqa: BLE001 - a cold cache is only slower
        log.warning("warm_up_failed", exc_info=True)


def create_app(settings: Settings, *, clock: Clock | None = None,
               application: CampusApplication | None = None) -> Starlette:
    """Build the ASGI app. The eventsourcing application is built here unless given."""
    app_service = application or CampusApplication(settings, clock=clock)
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app_service.history.catch_up()
        stop = threading.Event()
        follower = app_service.history.follow(stop)
        scheduler = app_service.start_backup_scheduler(stop)
        warm_up = threading.Thread(target=_warm_up, args=(app_service, stop), name="campus-warm-up", daemon=True)
        warm_up.start()
        log.info("started", store="postgres" if settings.uses_postgres else "sqlite", version=campus_version())
        yield
        stop.set()
        # Background threads end before the store closes (never log or query after shutdown).
        for thread in (follower, scheduler, warm_up):
            thread.join(timeout=10)
        app_service.close()

    app = Starlette(
        routes=api.starlette_routes(app_service),
        middleware=[Middleware(RequestContextMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.campus = app_service
    return app
