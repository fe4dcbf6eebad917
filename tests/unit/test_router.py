"""The prefix router (campus/api/router.py) finds the very route Starlette's own loop finds."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Match

from campus.api.app import create_app
from campus.api.router import PrefixRouter
from campus.infra.settings import Settings


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> PrefixRouter:
    d: Path = tmp_path_factory.mktemp("router")
    app = create_app(Settings(data_dir=d / "data", snapshots_dir=d / "snapshots", operator_token="o" * 40))
    assert isinstance(app.router, PrefixRouter)
    return app.router


def first_full(routes, scope):  # noqa: ANN001, ANN201
    for route in routes:
        if route.matches(dict(scope))[0] is Match.FULL:
            return route
    return None


VALUES = st.sampled_from(["students", "export", "current", "grades", "x", "", str(uuid.UUID(int=7))])


@settings(max_examples=300, deadline=None)
@given(data=st.data(), method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
       slash=st.booleans())
def test_every_request_path_reaches_the_route_starlette_would_choose(router: PrefixRouter, data, method, slash) -> None:  # noqa: ANN001
    template = data.draw(st.sampled_from([r.path for r in router.routes]))
    path = re.sub(r"\{[^}]+\}", lambda _: data.draw(VALUES), template) + ("/" if slash else "")
    scope = {"type": "http", "path": path, "method": method, "root_path": ""}
    assert first_full(router.candidates(path), scope) is first_full(router.routes, scope)


def test_a_path_under_no_prefix_has_no_candidate(router: PrefixRouter) -> None:
    assert router.candidates("/nowhere/at/all") == [r for r in router.routes if r.path.startswith("/{")]
