"""Declared endpoints: one declaration validates requests and documents them.

An :class:`Endpoint` names its method, path, authentication, body and query
models (pydantic) and success status. :class:`Api` turns each into a Starlette
route whose wrapper reads the body under a size cap, parses JSON, validates it,
authenticates, runs the (synchronous) handler in a worker thread, and encodes
the answer. The same declarations generate ``/openapi.json``.
"""

from __future__ import annotations

import errno
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import orjson
import structlog
from eventsourcing.persistence import PersistenceError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from campus.api.middleware import CLIENT_CLOSED_REQUEST
from campus.api.problems import from_campus_error, problem, validation_errors
from campus.commands import store_unavailable
from campus.errors import (
    CampusError,
    Forbidden,
    Invalid,
    Malformed,
    TooLarge,
    Unauthenticated,
)
from campus.infra.context import current_context, set_actor
from campus.repository import fresh_reads

if TYPE_CHECKING:
    from campus.aggregates.account import HostingAccount
    from campus.application import CampusApplication
    from campus.services.user_sessions import UserCaller

log = structlog.get_logger("campus.api")

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
STORAGE_RETRY_SECONDS = 60


class InsufficientStorage(CampusError):
    """A file of the request could not be written: the disk (or the quota) is full (507)."""

    status = 507
    title = "Insufficient Storage"

    def __init__(self, what: str) -> None:
        super().__init__(f"no space left on the server's disk: {what} could not be written; nothing was changed. "
                         "Retry later (the hosting provider has to free some space)", code="insufficient_storage")
        self.headers = {"Retry-After": str(STORAGE_RETRY_SECONDS)}


def no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


class Auth(str, Enum):
    NONE = "none"
    OPERATOR = "operator"
    # A console session, before the licence agreement is accepted.
    CONSOLE_ANY = "console_any"
    # A console session of an account that accepted the licence agreement.
    CONSOLE = "console"
    # A directory user's session, for the planning named in the path.
    USER = "user"
    # The console, or a superadministrator / base administrator's user session.
    CONSOLE_OR_ADMIN = "console_or_admin"


@dataclass
class Reply:
    body: Any = None
    status: int | None = None
    etag: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


@dataclass
class Call:
    """What a handler gets: the application, who is calling, and the request's parts."""

    app: CampusApplication
    path: dict[str, str]
    query: Any
    headers: Any
    token: str | None = None
    account: HostingAccount | None = None
    caller: UserCaller | None = None
    # Endpoints declared with `raw`: the body's bytes, or the Path of the file it was spooled to.
    raw: Any = None

    @property
    def account_id(self):  # noqa: ANN201
        if self.caller is not None:
            return self.caller.session.account_id
        assert self.account is not None
        return self.account.id

    @property
    def user(self) -> UserCaller:
        assert self.caller is not None
        return self.caller

    @property
    def if_match(self) -> str | None:
        return self.headers.get("if-match")


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Callable[..., Any]
    auth: Auth
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    summary: str = ""
    tag: str = ""
    # The body as-is instead of JSON: "bytes" in memory, or "file" spooled under <data_dir>/tmp
    # (removed after the handler); `cap` gives its limit (default Settings.max_body_bytes).
    raw: Literal["bytes", "file"] | None = None
    cap: Callable[[Any], int] | None = None
    # The media type of a success that is not JSON (the handler returns a Response, e.g. a
    # StreamingResponse of "text/event-stream"); documented as such in /openapi.json.
    produces: str | None = None

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(type(value).__name__)


def encode_json(value: Any) -> bytes:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


class Api:
    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def route(self, method: str, path: str, *, auth: Auth, body: type[BaseModel] | None = None,
              query: type[BaseModel] | None = None, response: type[BaseModel] | None = None,
              status: int = 200, tag: str = "", raw: Literal["bytes", "file"] | None = None,
              cap: Callable[[Any], int] | None = None, produces: str | None = None) -> Callable[[Callable], Callable]:
        def register(handler: Callable) -> Callable:
            summary = (handler.__doc__ or handler.__name__).strip().splitlines()[0]
            self.endpoints.append(Endpoint(method, path, handler, auth, body, query, response, status, summary, tag,
                                           raw, cap, produces))
            return handler
        return register

    def get(self, path: str, **kw: Any) -> Callable[[Callable], Callable]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Callable], Callable]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Callable], Callable]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Callable], Callable]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Callable], Callable]:
        return self.route("DELETE", path, **kw)

    def starlette_routes(self, application: CampusApplication) -> list[Route]:
        by_path: dict[str, dict[str, Endpoint]] = {}
        for ep in self.endpoints:
            by_path.setdefault(ep.path, {})[ep.method] = ep
        # Starlette takes the first match: a literal segment wins over a parameter
        # (/v1/console/users/export before /v1/console/users/{login}).
        ordered = sorted(by_path.items(), key=lambda item: item[0].count("{"))
        return [Route(path, _dispatcher(application, eps), methods=list(eps)) for path, eps in ordered]


def _dispatcher(application: CampusApplication, endpoints: dict[str, Endpoint]) -> Callable:
    async def endpoint(request: Request) -> Response:
        ep = endpoints[request.method if request.method != "HEAD" else "GET"]
        cap = ep.cap(application.settings) if ep.cap else application.settings.max_body_bytes
        spooled: Path | None = None
        try:
            raw: bytes | Path = b""
            if ep.raw == "file":
                # Credentials first: an anonymous caller never gets to write a temporary file.
                await run_in_threadpool(_authenticate, application, ep.auth, request, _bare_call(application, request))
                raw = spooled = await _spool_body(request, application.settings.data_dir / "tmp", cap)
            elif ep.raw or ep.body:
                raw = await _read_body(request, cap)
            return await run_in_threadpool(_handle, application, ep, request, raw)
        except CampusError as exc:
            return from_campus_error(exc)
        except ClientDisconnect:
            # The client went away while sending its body: no answer can reach it, nothing was done.
            # Not an error of ours: no traceback; the request's log line says 499.
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except OSError as exc:
            if no_space(exc):  # the upload filled the disk: its partial file is already removed
                log.warning("no_space_left", error_type=type(exc).__name__, writing="upload")
                return from_campus_error(InsufficientStorage("the uploaded file"))
            raise
        finally:
            if spooled is not None:
                spooled.unlink(missing_ok=True)
    return endpoint


async def _read_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise TooLarge(f"the body is {declared} bytes; the limit is {cap} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise TooLarge(f"the body exceeds the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _spool_body(request: Request, directory: Path, cap: int) -> Path:
    """Stream the body to a new file in `directory` under `cap` bytes; the file is removed on failure."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise TooLarge(f"the body is {declared} bytes; the limit is {cap} bytes")
    await anyio.to_thread.run_sync(lambda: directory.mkdir(parents=True, exist_ok=True))
    fd, name = await anyio.to_thread.run_sync(
        lambda: tempfile.mkstemp(prefix="upload-", suffix=".part", dir=directory))
    path = Path(name)
    try:
        size = 0
        async with await anyio.open_file(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise TooLarge(f"the body exceeds the limit of {cap} bytes")
                await out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _bare_call(application: CampusApplication, request: Request) -> Call:
    return Call(app=application, path=dict(request.path_params), query=None, headers=request.headers)


def _handle(application: CampusApplication, ep: Endpoint, request: Request, raw: bytes | Path) -> Response:
    """Runs in a worker thread (its own copy of the context): validate, authenticate, call, encode."""
    fresh_reads()  # the request reads the store as of its first read, plus what its own commands write
    try:
        args: list[Any] = []
        call = _bare_call(application, request)
        _authenticate(application, ep.auth, request, call)
        if ep.query is not None:
            call.query = _validate(ep.query, dict(request.query_params), "query.")
        if ep.raw is not None:
            call.raw = raw
        elif ep.body is not None:
            args.append(_validate(ep.body, _parse_json(raw, request), ""))
        result = _call_handler(ep, call, args)
        response = _encode(ep, result)
    except CampusError as exc:
        response = from_campus_error(exc)
    except PersistenceError as exc:
        # A read the store could not answer (unreachable, busy, timed out): nothing was written.
        # (Commands map their own store failures: campus/commands.py.)
        response = from_campus_error(store_unavailable(exc))
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into a clean 500
        log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
        response = problem(500, "internal error; quote the X-Request-ID header when reporting it")
    request.scope.setdefault("state", {})["actor"] = current_context().actor
    return response


def _call_handler(ep: Endpoint, call: Call, args: list[Any]) -> Any:
    """The handler; a file it could not write for want of space is a 507, not a bug."""
    try:
        return ep.handler(call, *args)
    except OSError as exc:
        if no_space(exc):
            log.warning("no_space_left", error_type=type(exc).__name__, path=getattr(exc, "filename", None))
            raise InsufficientStorage("a file of this request") from None
        raise


def _parse_json(raw: bytes, request: Request) -> Any:
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise Malformed(f"the body must be application/json, not {media}")
    if not raw.strip():
        raise Malformed("a JSON body is required")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"the body is not valid JSON: {exc.msg} (at character {exc.pos})") from None


def _validate(model: type[BaseModel], data: Any, prefix: str) -> BaseModel:
    if prefix == "" and not isinstance(data, dict):
        raise Invalid("the body must be a JSON object", errors=[{"field": "body", "message": "must be a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = validation_errors(exc, prefix)
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors) from None


def _authenticate(application: CampusApplication, auth: Auth, request: Request, call: Call) -> None:
    if auth is Auth.NONE:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send Authorization: Bearer <token>", code="missing_token")
    if auth is Auth.OPERATOR:
        application.login_guard.authenticate_operator(token)  # 401, or 429 after too many failures from this address
        set_actor("operator")
        return
    call.token = token
    if auth is Auth.USER:
        call.caller = _user_for_path(application, token, call)
        return
    if auth is Auth.CONSOLE_OR_ADMIN:
        try:
            account = application.console_sessions.authenticate_console(token)
        except Unauthenticated:
            # A superadministrator or base administrator holding Administration on this planning.
            call.caller = _user_for_path(application, token, call, serving=False)
            call.caller.require("administer")
            return
    else:
        account = application.console_sessions.authenticate_console(token)
    set_actor(f"manager:{account.hosting_number}")
    call.account = account
    if auth in (Auth.CONSOLE, Auth.CONSOLE_OR_ADMIN) and not account.licence_accepted:
        raise Forbidden(
            "accept the licence agreement first (POST /v1/console/licence-agreement); "
            "nothing else of the console works before", code="licence_not_accepted")


def _user_for_path(application: CampusApplication, token: str, call: Call, serving: bool = True) -> UserCaller:
    caller = application.user_sessions.authenticate_user(token, serving=serving)
    wanted = call.path.get("planning_id")
    if wanted is not None and wanted != str(caller.planning.id):
        application.plannings.get_planning_by_text(caller.session.account_id, wanted)  # another school's: 404
        raise Forbidden(f"this session is for the planning {caller.planning.name!r}; "
                        "log in to the other planning", code="other_planning")
    return caller


def _encode(ep: Endpoint, result: Any) -> Response:
    if isinstance(result, Response):  # a streamed answer (an export, the live history)
        return result
    reply = result if isinstance(result, Reply) else Reply(body=result)
    status = reply.status or ep.status
    headers = dict(reply.headers)
    if reply.etag:
        headers["ETag"] = reply.etag
    if status == 204 or reply.body is None:
        return Response(status_code=204 if reply.body is None else status, headers=headers)
    content = reply.body if isinstance(reply.body, bytes) else encode_json(reply.body)
    return Response(content, status_code=status, media_type=reply.media_type, headers=headers)
