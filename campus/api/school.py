"""HTTP handlers of bases, their servers and records."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from campus.aggregates.school_base import Base
from campus.api import schemas as s
from campus.api.handlers import _uuid, api
from campus.api.routing import Auth, Call, Reply
from campus.api.views import planning_view
from campus.errors import Invalid
from campus.rules.grid import grid_view
from campus.rules.records import KINDS, record_json


def base_view(base: Base, planning_base_id: UUID | None = None) -> dict[str, Any]:
    counts = base.counts()
    sections: dict[str, dict[str, int]] = {}
    for kind in KINDS.values():
        sections.setdefault(kind.section, {})[kind.name] = counts[kind.name]
    return {
        "id": str(base.id),
        "name": base.name,
        "planning_id": str(base.planning_id),
        "origin": base.origin,
        "grid": grid_view(base.grid),
        "counts": counts,
        "sections": sections,
        "created_at": base.created_on,
        "last_entry_at": base.last_entry_at,
        "annexes": [{"name": n, "content_type": a["content_type"], "size": a["size"], "sha256": a["sha256"]}
                    for n, a in sorted(base.annexes.items())],
        "connection_modes": base.connection_modes,
        "version": base.version,
    }


def _planning_id(call: Call) -> UUID:
    return _uuid(call.path["planning_id"], "planning")


@api.post("/v1/console/plannings/{planning_id}/bases", auth=Auth.CONSOLE_OR_ADMIN, body=s.NewBase, status=201,
          tag="bases")
def create_base(call: Call, body: s.NewBase) -> Reply:
    """Create an empty base with its timetable grid (Campus fiche 6, hosting fiche 2)."""
    planning, base = call.app.bases.create_base(call.account_id, _planning_id(call), **body.model_dump())
    return Reply({**base_view(base), "server_state": planning.server_state}, etag=base.etag)


@api.get("/v1/console/plannings/{planning_id}/base", auth=Auth.CONSOLE_OR_ADMIN, query=s.AsOf, tag="bases")
def get_base(call: Call) -> Reply:
    """The planning's base: grid, counts per kind, created at, last entry at — now, or `as_of` an instant."""
    if call.query.as_of is not None:
        past = call.app.time_machine.base_as_of(call.account_id, _planning_id(call), call.query.as_of)
        return Reply({**base_view(past.base), "server_state": past.planning.server_state,
                      "as_of": past.as_of, "position": past.position})
    planning, base = call.app.bases.current_base(call.account_id, _planning_id(call))
    return Reply({**base_view(base), "server_state": planning.server_state}, etag=base.etag)


@api.get("/v1/console/plannings/{planning_id}/bases", auth=Auth.CONSOLE_OR_ADMIN, tag="bases")
def list_bases(call: Call) -> dict:
    """Every base of the planning: the current one and the others ("autres bases")."""
    planning, bases = call.app.bases.list_bases(call.account_id, _planning_id(call))
    return {"current": str(planning.base_id) if planning.base_id else None,
            "bases": [{"id": str(b.id), "name": b.name, "origin": b.origin, "created_at": b.created_on,
                       "counts": b.counts()} for b in bases]}


@api.put("/v1/console/plannings/{planning_id}/base", auth=Auth.CONSOLE_OR_ADMIN, body=s.MountBase, tag="bases")
def mount_base(call: Call, body: s.MountBase) -> Reply:
    """Make another of the planning's bases the current one (the server must be stopped)."""
    planning = call.app.bases.mount_base(call.account_id, _planning_id(call), body.base_id)
    return Reply(planning_view(planning), etag=planning.etag)


@api.put("/v1/console/plannings/{planning_id}/server", auth=Auth.CONSOLE_OR_ADMIN, body=s.ServerState,
         tag="bases")
def set_server(call: Call, body: s.ServerState) -> Reply:
    """Put the planning's server in service (needs a base and a superadministrator) or stop it."""
    planning = call.app.bases.set_server_state(call.account_id, _planning_id(call), body.state)
    return Reply({**planning_view(planning), "state": planning.server_state}, etag=planning.etag)


# -- records (directory users) ------------------------------------------------------
@api.post("/v1/plannings/{planning_id}/records/{kind}", auth=Auth.USER, body=s.RecordBody, status=201,
          tag="records")
def add_record(call: Call, body: s.RecordBody) -> Reply:
    """Add a record of a kind (teachers, students, grades, absences…); needs modification or administration."""
    call.user.require("write")
    base, record_id, fields = call.app.bases.add_record(call.account_id, _planning_id(call), call.path["kind"],
                                                  body.model_dump())
    return Reply(record_json(call.path["kind"], record_id, fields), etag=f'"{base.revisions[record_id]}"')


@api.get("/v1/plannings/{planning_id}/records/{kind}", auth=Auth.USER, query=s.RecordPage, tag="records")
def list_records(call: Call) -> dict:
    """The records of a kind, in the order they were added, paged with `after` and `limit`."""
    call.user.require("read")
    q: s.RecordPage = call.query
    page, next_id = call.app.bases.list_records(call.account_id, _planning_id(call), call.path["kind"],
                                          q.after, q.limit, as_of=q.as_of)
    kind = call.path["kind"]
    return {"records": [record_json(kind, i, f) for i, f in page], "next": str(next_id) if next_id else None,
            **({"as_of": q.as_of} if q.as_of else {})}


# -- the past -----------------------------------------------------------------------
@api.get("/v1/console/plannings/{planning_id}/restore-window", auth=Auth.CONSOLE_OR_ADMIN, tag="time machine")
def restore_window(call: Call) -> dict:
    """The instants the base can be restored to: the last 30 days, not before it existed."""
    earliest, latest = call.app.time_machine.restore_window(call.account_id, _planning_id(call))
    return {"earliest": earliest, "latest": latest}


@api.post("/v1/console/plannings/{planning_id}/restores", auth=Auth.CONSOLE_OR_ADMIN, body=s.Restore, status=201,
          tag="time machine")
def restore(call: Call, body: s.Restore) -> Reply:
    """Restore the base to an instant (server stopped, `confirm: true`); undo by restoring to just before."""
    if body.backup_id is not None:
        if body.as_of is not None:
            raise Invalid.field("as_of", "give either backup_id or as_of, not both")
        done = call.app.backups.restore_from_backup(call.account_id, _planning_id(call), _uuid(body.backup_id, "backup"),
                                            confirm=body.confirm, reason=body.reason, kinds=body.kinds)
        return Reply({"base": base_view(done.base), "restored_to": done.backup.taken_at,
                      "restored_at": done.restored_at, "backup_id": str(done.backup.id), "source": done.source,
                      "warning": done.warning, "kinds": body.kinds,
                      "undo": {"as_of": done.restored_at - timedelta(microseconds=1)}},
                     etag=done.base.etag)
    if body.as_of is None:
        raise Invalid.field("as_of", "give the instant to restore to, or a backup_id")
    base, at = call.app.time_machine.restore_base(call.account_id, _planning_id(call), as_of=body.as_of, confirm=body.confirm,
                                     reason=body.reason, kinds=body.kinds)
    return Reply({"base": base_view(base), "restored_to": body.as_of, "restored_at": at, "source": "event_log",
                  "kinds": body.kinds, "undo": {"as_of": at - timedelta(microseconds=1)}}, etag=base.etag)


@api.get("/v1/console/plannings/{planning_id}/base/diff", auth=Auth.CONSOLE_OR_ADMIN, query=s.Diff,
         tag="time machine")
def diff(call: Call) -> dict:
    """Records added, changed and removed between two instants."""
    d = call.app.time_machine.diff_base(call.account_id, _planning_id(call), call.query.from_, call.query.to)
    return {
        "from": {"as_of": d["from"].as_of, "position": d["from"].position},
        "to": {"as_of": d["to"].as_of, "position": d["to"].position},
        "added": [record_json(k, i, f) for k, i, f in d["added"]],
        "changed": [{"id": str(i), "kind": k, "before": record_json(k, i, b), "after": record_json(k, i, a)}
                    for k, i, b, a in d["changed"]],
        "removed": [record_json(k, i, f) for k, i, f in d["removed"]],
    }


@api.get("/v1/plannings/{planning_id}/records/{kind}/{record_id}", auth=Auth.USER, tag="records")
def get_record(call: Call) -> Reply:
    """One record."""
    call.user.require("read")
    record_id = _uuid(call.path["record_id"], "record")
    etag, fields = call.app.bases.get_record(call.account_id, _planning_id(call), call.path["kind"], record_id)
    return Reply(record_json(call.path["kind"], record_id, fields), etag=etag)


@api.patch("/v1/plannings/{planning_id}/records/{kind}/{record_id}", auth=Auth.USER, body=s.RecordBody,
           tag="records")
def change_record(call: Call, body: s.RecordBody) -> Reply:
    """Change some fields of a record (null removes an optional field)."""
    call.user.require("write")
    record_id = _uuid(call.path["record_id"], "record")
    base, fields = call.app.bases.change_record(call.account_id, _planning_id(call), call.path["kind"], record_id,
                                          body.model_dump(), call.if_match)
    return Reply(record_json(call.path["kind"], record_id, fields), etag=f'"{base.revisions[record_id]}"')


@api.delete("/v1/plannings/{planning_id}/records/{kind}/{record_id}", auth=Auth.USER, status=204, tag="records")
def remove_record(call: Call) -> None:
    """Remove a record no other record refers to."""
    call.user.require("write")
    record_id = _uuid(call.path["record_id"], "record")
    call.app.bases.remove_record(call.account_id, _planning_id(call), call.path["kind"], record_id, call.if_match)


