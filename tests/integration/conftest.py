from __future__ import annotations

from collections.abc import Iterator

import pytest

from campus.application import CampusApplication
from campus.clock import ManualClock
from campus.settings import Settings


@pytest.fixture
def app(settings: Settings, clock: ManualClock) -> Iterator[CampusApplication]:
    """The service layer on each store (see the `settings` fixture), closed afterwards."""
    application = CampusApplication(settings, clock=clock)
    try:
        yield application
    finally:
        application.close()
