from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_helpers import make_client
from school_helpers import CampusSchool, campus_school
from starlette.testclient import TestClient

from campus.application import CampusApplication
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings


@pytest.fixture
def app(settings: Settings, clock: ManualClock) -> Iterator[CampusApplication]:
    """The service layer on each store (see the `settings` fixture), closed afterwards."""
    application = CampusApplication(settings, clock=clock)
    try:
        yield application
    finally:
        application.close()


@pytest.fixture
def client(sqlite_only_settings: Settings, clock: ManualClock) -> Iterator[TestClient]:
    """An in-process API client on SQLite."""
    with make_client(sqlite_only_settings, clock) as c:
        yield c


@pytest.fixture
def cs(client: TestClient) -> CampusSchool:
    """A school with an active controller, users of every profile and a base in service."""
    return campus_school(client)
