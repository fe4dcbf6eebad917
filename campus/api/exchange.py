"""HTTP handlers of exports, loads, annexes, the users file and timetable
transfers (hosting guide fiches 5 and 7).

Every route is declared on ``api``. Files come as raw bodies (``raw=``): a
base file is spooled to a temporary file under ``<data_dir>/tmp/`` with a size
cap (removed after the handler), an annex or a users file is read in memory;
the export is streamed.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Any, Literal
from urllib.parse import quote
from uuid import UUID

import structlog
from pydantic import Field
from starlette.responses import Response, StreamingResponse

from campus.api import schemas as s
from campus.api.handlers import _uuid, api
from campus.api.routing import (
    Auth,
    Call,
    Reply,
)
from campus.api.school import base_view
from campus.errors import Invalid
from campus.infra.settings import Settings
from campus.rules.export_format import MAX_ANNEX_BYTES, MEDIA_TYPE, SPACES, SUFFIX

log = structlog.get_logger("campus.api")

MAX_USERS_FILE_BYTES = 16 * 1024 * 1024
STALE_UPLOAD_SECONDS = 24 * 3600


def upload_cap(settings: Settings) -> int:
    return settings.max_upload_bytes


def _planning_id(call: Call) -> UUID:
    return _uuid(call.path["planning_id"], "planning")


def attachment(filename: str) -> str:
    """A Content-Disposition for `filename`, with an ASCII fallback when it needs one."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    ascii_name = re.sub(r"[^A-Za-z0-9 ._()+-]", "_", ascii_name).strip() or "download"
    value = f'attachment; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


# -- declared (JSON) routes ------------------------------------------------------------------
class TransferGrid(s.Strict):
    first_monday: date = Field(description="a Monday: the first day of the timetable")
    last_sunday: date = Field(description="a Sunday: the last day (1 to 62 weeks after first_monday)")
    working_days: list[str] = Field(min_length=1, max_length=7, description="mon, tue, wed, thu, fri, sat, sun")
    sequences_per_day: int = Field(ge=1, le=1440)
    sequence_minutes: int = Field(ge=1, le=1440)
    split: int = Field(description="2, 3, 4, 6 or 12 steps per sequence; 1 for no split")


class ModeRights(s.Strict):
    public: bool = False
    client: bool = Field(default=False, description="may connect with the installed client")
    spaces: list[Literal[SPACES]] = Field(default_factory=list,  # type: ignore[valid-type]
                                          description="the web spaces this mode may use")


class Transfer(s.Strict):
    name: s.Name
    grid: TransferGrid
    resources: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        description="records by kind (teachers, subjects, classes, groups, students, rooms, courses); each may "
                    "carry a client-side `ref`, and refer to others with `<field>_ref` (a student's class_ref)")
    connection_modes: dict[str, ModeRights] = Field(
        default_factory=dict,
        description="direction, teachers, school_life, parents, companions, students, company, academy")


@api.post("/v1/console/plannings/{planning_id}/bases/transfer", auth=Auth.CONSOLE_OR_ADMIN, body=Transfer,
          status=201, tag="bases")
def transfer_base(call: Call, body: Transfer) -> Reply:
    """Initialise a base from a timetable transfer: grid, resources, connection modes (hosting fiche 5)."""
    planning, base, refs = call.app.exchange.transfer_base(
        call.account_id, _planning_id(call), name=body.name, grid=body.grid.model_dump(),
        resources=body.resources, connection_modes={m: r.model_dump() for m, r in body.connection_modes.items()})
    return Reply({**base_view(base), "server_state": planning.server_state, "refs": refs}, etag=base.etag)


@api.get("/v1/console/plannings/{planning_id}/base/annexes/{name}", auth=Auth.CONSOLE_OR_ADMIN, tag="bases")
def get_annex(call: Call) -> Reply:
    """An annex file of the base in service (photo, document), as it was added."""
    annex = call.app.exchange.get_annex(call.account_id, _planning_id(call), call.path["name"])
    return Reply(annex["data"], media_type=annex["content_type"], etag=f'"{annex["sha256"]}"',
                 headers={"Content-Disposition": attachment(call.path["name"])})


# -- file bodies and streamed answers ---------------------------------------------------------------
class LoadParams(s.Strict):
    name: s.Name | None = Field(default=None, description="the new base's name (default: the file's)")


class ImportParams(s.Strict):
    on_conflict: Literal["fail", "update", "skip"] = Field(
        default="fail", description="an existing login: refuse the import (409), update it, or skip it")


@api.get("/v1/console/plannings/{planning_id}/base/export", auth=Auth.CONSOLE_OR_ADMIN, tag="bases")
def export_base(call: Call) -> Response:
    """The base in service as one campus-base file (docs/EXPORT_FORMAT.md), streamed."""
    prepared = call.app.exchange.export_base_file(call.account_id, _planning_id(call))
    return StreamingResponse(prepared.chunks(), media_type=MEDIA_TYPE, headers={
        "Content-Disposition": attachment(prepared.source.name + SUFFIX),
        "Content-Length": str(prepared.size),
        "ETag": f'"{prepared.source.position}"',
        "Cache-Control": "no-store",
    })


@api.post("/v1/console/plannings/{planning_id}/bases/load", auth=Auth.CONSOLE_OR_ADMIN, query=LoadParams,
          raw="file", cap=upload_cap, status=201, tag="bases")
def load_base(call: Call) -> Reply:
    """Load a campus-base file (the raw body) as a new base of the planning; the server must be stopped."""
    call.app.exchange.check_can_load(call.account_id, _planning_id(call))
    if call.raw.stat().st_size == 0:
        raise Invalid.field("body", "the request carries no file: send the file as the request body")
    planning, base, loaded = call.app.exchange.load_base_file(call.account_id, _planning_id(call), call.raw, call.query.name)
    return Reply({**base_view(base), "server_state": planning.server_state,
                  "loaded": {"records": sum(loaded.counts().values()), "annexes": len(loaded.annexes),
                             "source_base_id": str(loaded.base_id), "source_position": loaded.position,
                             "exported_at": loaded.exported_at}},
                 etag=base.etag)


@api.put("/v1/console/plannings/{planning_id}/base/annexes/{name}", auth=Auth.CONSOLE_OR_ADMIN, raw="bytes",
         cap=lambda _: MAX_ANNEX_BYTES, tag="bases")
def put_annex(call: Call) -> Reply:
    """Add or replace an annex (the raw body; its Content-Type is kept) of the base in service."""
    _, info, created = call.app.exchange.put_annex(call.account_id, _planning_id(call), call.path["name"],
                                          call.headers.get("content-type"), call.raw)
    return Reply(info, status=201 if created else 200, etag=f'"{info["sha256"]}"')


@api.get("/v1/console/users/export", auth=Auth.CONSOLE, tag="users")
def export_users(call: Call) -> Reply:
    """The users file: directory users (password hashes, never passwords) and profile assignments."""
    content, _count = call.app.exchange.export_users_file(call.account_id)
    number = call.account.hosting_number if call.account else "school"
    return Reply(content, media_type="application/json", headers={
        "Content-Disposition": attachment(f"{number}.campus-users.json"), "Cache-Control": "no-store"})


@api.post("/v1/console/users/import", auth=Auth.CONSOLE, query=ImportParams, raw="bytes",
          cap=lambda _: MAX_USERS_FILE_BYTES, tag="users")
def import_users(call: Call) -> dict:
    """Create the users of a users file (keeping their password hashes) and apply its assignments."""
    if not call.raw.strip():
        raise Invalid.field("body", "the request carries no file: send the users file as the request body")
    return call.app.exchange.import_users_file(call.account_id, call.raw, call.query.on_conflict)


