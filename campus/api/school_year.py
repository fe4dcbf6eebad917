"""HTTP handlers of the school-year change (hosting guide fiches 2, 6 and 12)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import Field, StringConstraints

from campus.aggregates.school_year import YearChange
from campus.api import schemas as s
from campus.api.backups import backup_view
from campus.api.handlers import _uuid, api
from campus.api.routing import Auth, Call, Reply
from campus.api.school import base_view


class PrepareYear(s.Strict):
    confirm: bool = Field(default=False, description="must be true: a save and an archive are taken, a base added")
    year: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)] | None = Field(
        default=None, description="the school year to prepare, e.g. 2027-2028 (default: the one after the base's)")


def year_change_view(change: YearChange) -> dict[str, Any]:
    return {
        "school_year": change.year,
        "archives": list(change.archives),
        "next_base_id": change.next_base_id,
        "next_base_skipped": change.next_base_skipped,
        "pre_release": change.pre_release,
        "version_change": change.version_change,
        "version": change.version,
    }


def product_version(changes: list[YearChange]) -> dict[str, Any] | None:
    """The version the planning runs: the latest release or pre-release installed."""
    for change in reversed(changes):
        if change.version_change:
            return {"version": change.version_change["version"], "channel": "release", "school_year": change.year}
        if change.pre_release:
            return {"version": change.pre_release["version"], "channel": "pre_release", "school_year": change.year}
    return None


def _planning_id(call: Call) -> UUID:
    return _uuid(call.path["planning_id"], "planning")


@api.post("/v1/console/plannings/{planning_id}/year-change", auth=Auth.CONSOLE_OR_ADMIN, body=PrepareYear,
          status=201, tag="school year")
def prepare_next_year(call: Call, body: PrepareYear) -> Reply:
    """Prepare the next school year: a save, an archive of the year, a new empty base with the grid moved on."""
    prepared = call.app.school_year.prepare_next_year(call.account_id, _planning_id(call), confirm=body.confirm, year=body.year)
    planning = prepared.planning
    return Reply({
        "school_year": prepared.year,
        "planning_id": str(planning.id),
        "save": backup_view(prepared.save),
        "archive": backup_view(prepared.archive),
        "base": {**base_view(prepared.base), "current": planning.base_id == prepared.base.id},
        "current_base_id": str(planning.base_id),
    }, headers={"Location": f"/v1/console/plannings/{planning.id}/bases"})


@api.get("/v1/console/plannings/{planning_id}/year-change", auth=Auth.CONSOLE_OR_ADMIN, tag="school year")
def year_change_status(call: Call) -> dict:
    """The planning's school-year changes: archives, prepared bases, versions installed."""
    planning_id = _planning_id(call)
    changes = call.app.school_year.year_changes(call.account_id, planning_id)
    return {"planning_id": str(planning_id), "product_version": product_version(changes),
            "school_years": [year_change_view(c) for c in changes]}


@api.get("/v1/console/upcoming-operations", auth=Auth.CONSOLE, tag="school year")
def upcoming_operations(call: Call) -> dict:
    """What the clock will do next: saves, archives, the July archive, the August base, the version change."""
    return {"now": call.app.now(), "operations": call.app.school_year.upcoming_operations(call.account_id)}
