"""A router that tries only the routes whose literal beginning fits the request's path.

Starlette's router tries every route's regular expression in turn; with a hundred routes, and the
record routes (three parameters) last, that cost a tenth of a write's time in the event loop. Here
the routes are indexed by the literal segments their path starts with (up to :data:`DEPTH`); a
request tries, in the original order, only the routes whose literal beginning is a beginning of its
path. The answer is the same route Starlette would find: a route left out cannot match. Anything
else (no match, a redirect of a trailing slash, a 405, lifespan) goes to Starlette's own loop.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match, Route, Router, get_route_path
from starlette.types import Receive, Scope, Send

DEPTH = 3  # literal segments indexed


class PrefixRouter(Router):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._by_prefix: dict[tuple[str, ...], list[tuple[int, BaseRoute]]] = {}
        for order, route in enumerate(self.routes):
            self._by_prefix.setdefault(_literal_prefix(route), []).append((order, route))

    def candidates(self, path: str) -> list[BaseRoute]:
        """The routes that may match `path`, in the router's order."""
        segments = tuple(path.strip("/").split("/")[:DEPTH])
        found: list[tuple[int, BaseRoute]] = []
        for length in range(len(segments) + 1):
            found += self._by_prefix.get(segments[:length], ())
        found.sort(key=lambda item: item[0])
        return [route for _, route in found]

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("router", self)
            for route in self.candidates(get_route_path(scope)):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
                if match is Match.PARTIAL:
                    break  # a 405 (or another partial answer): Starlette's loop decides, as always
        await super().app(scope, receive, send)


def _literal_prefix(route: BaseRoute) -> tuple[str, ...]:
    """The segments a route's path starts with before its first parameter (at most DEPTH); () for a
    route that is not a plain path route (it is then tried for every request)."""
    if not isinstance(route, Route):
        return ()
    literal = []
    for segment in route.path.strip("/").split("/")[:DEPTH]:
        if "{" in segment:
            break
        literal.append(segment)
    return tuple(literal)
