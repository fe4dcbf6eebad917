"""HTTP handlers of saves and archives (hosting guide fiches 6, 10, 12)."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import Field
from starlette.responses import FileResponse, Response

from campus.aggregates.backup import Backup
from campus.api import schemas as s
from campus.api.exchange import attachment
from campus.api.handlers import _uuid, api
from campus.api.routing import Auth, Call, Reply
from campus.rules.export_format import MEDIA_TYPE
from campus.services.backups import backup_filename


class NewBackup(s.Strict):
    kind: Literal["save"] = Field(default="save", description="saves are taken on request; archives every day")


def backup_view(backup: Backup, status: tuple[str, str | None] = ("ok", None)) -> dict[str, Any]:
    """A backup as listed; `status` is "ok", "damaged" (a check found its file altered) or
    "missing" (no file on this server's snapshot storage), with the problem's code."""
    return {
        "id": str(backup.id),
        "kind": backup.kind,
        "name": backup.name,
        "taken_at": backup.taken_at,
        "position": backup.position,
        "version": backup.base_version,
        "size": backup.size,
        "counts": backup.counts,
        "scheduled": backup.scheduled,
        "kept": backup.kept,  # a school-year archive: out of the 12/30 retention
        "base_id": str(backup.base_id),
        "status": status[0],
        "problem": status[1],
    }


def _planning_id(call: Call) -> UUID:
    return _uuid(call.path["planning_id"], "planning")


@api.get("/v1/console/plannings/{planning_id}/backups", auth=Auth.CONSOLE_OR_ADMIN, tag="backups")
def list_backups(call: Call) -> dict:
    """The saves and archives of the planning's current base, newest first (discarded ones are not listed);
    each with its `status`: "ok", "damaged" or "missing"."""
    return {"backups": [backup_view(b, call.app.backups.backup_status(b))
                        for b in call.app.backups.list_backups(call.account_id, _planning_id(call))]}


@api.post("/v1/console/plannings/{planning_id}/backups", auth=Auth.CONSOLE_OR_ADMIN, body=NewBackup, status=201,
          tag="backups")
def take_backup(call: Call, body: NewBackup) -> Reply:
    """Take a save of the planning's current base now."""
    backup = call.app.backups.take_backup(call.account_id, _planning_id(call), body.kind)
    return Reply(backup_view(backup), headers={
        "Location": f"/v1/console/plannings/{backup.planning_id}/backups/{backup.id}/download"})


@api.get("/v1/console/plannings/{planning_id}/backups/{backup_id}/download", auth=Auth.CONSOLE_OR_ADMIN,
         tag="backups")
def download_backup(call: Call) -> Response:
    """The backup's campus-base file (loads anywhere); its SHA-256 is checked before it is sent:
    409 `backup_corrupted` when the file is altered (the backup is then marked damaged for every
    server); 410 `backup_file_missing` when the file is not on this server's snapshot storage
    (nothing is recorded: the servers of one store share that storage, another may have it)."""
    backup = call.app.backups.get_backup(call.account_id, _planning_id(call), _uuid(call.path["backup_id"], "backup"))
    path = call.app.backups.trusted_backup_path(backup)
    return FileResponse(path, media_type=MEDIA_TYPE, headers={
        "Content-Disposition": attachment(backup_filename(backup)),
        "ETag": f'"{backup.sha256}"',
        "Digest": f"sha-256={backup.sha256}",
        "Cache-Control": "no-store",
    })
