"""The school-year calendar (hosting guide fiches 2, 6 and 12): pure rules, no input/output.

School years ("2027-2028") and the year a base's grid is for; a grid moved on by whole school
years; the account's version-change choice (fiche 12), checked, and which summer it applies to;
the summer's dated operations of a planning, in its time zone (1 July: the year's archive;
15 August: the coming year's base; 31 August, or the chosen date: the version change, after the
pre-release from its date), and whether a planning's YearChange records one as done. The use
cases that run them are in :mod:`campus.services.school_year`; see docs/SCHOOL_YEAR.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from campus.errors import Invalid

# (month, day) of each scheduled operation, at 00:00 in the planning's time zone.
YEAR_ARCHIVE_ON = (7, 1)
NEXT_BASE_ON = (8, 15)
VERSION_CHANGE_ON = (8, 31)
# A school year "starts" in the calendar year of its grid's first Monday if that is from July on.
YEAR_STARTS_IN_MONTH = 7
# The order of operations falling on the same instant.
ORDER = {"year_archive": 0, "pre_release": 1, "next_base": 2, "version_change": 3}
# A scheduler down for longer than this misses the operation instead of running it out of season
# (say, the server of a school stopped in November for an August version change).
LATE_LIMIT = timedelta(days=31)
# The account's choice until it makes one: the version is installed at its release, 31 August.
DEFAULT_VERSION_CHANGE = {"choice": "install_at_release", "date": None, "base": None}


# -- school years and grids ---------------------------------------------------------------------------
def school_year(start: int) -> str:
    """2027 → "2027-2028"."""
    return f"{start}-{start + 1}"


def parse_school_year(text: str, field: str = "year") -> int:
    """ "2027-2028" → 2027; anything else is a 422 naming `field`."""
    first, sep, second = text.strip().partition("-")
    if not (sep and first.isdigit() and second.isdigit() and len(first) == len(second) == 4
            and int(second) == int(first) + 1):
        raise Invalid.field(field, f"{text!r} is not a school year: write it like 2027-2028")
    return int(first)


def year_of_grid(grid: dict[str, Any]) -> int:
    """The school year a base's grid is for, by its first Monday (2026-08-31 → 2026, i.e. 2026-2027)."""
    first: date = grid["first_monday"]
    return first.year if first.month >= YEAR_STARTS_IN_MONTH else first.year - 1


def move_grid(grid: dict[str, Any], years: int) -> dict[str, Any]:
    """The same grid `years` school years later: whole weeks (so Monday stays Monday), the
    first Monday as near as can be to the same calendar day, the span unchanged."""
    first: date = grid["first_monday"]
    try:
        target = first.replace(year=first.year + years)
    except ValueError:  # 29 February
        target = first.replace(year=first.year + years, day=28)
    shift = timedelta(weeks=round((target - first).days / 7))
    return {**grid, "first_monday": first + shift, "last_sunday": grid["last_sunday"] + shift}


# -- the account's choice ----------------------------------------------------------------------------
def deferral_cycle(day: date) -> int:
    """The summer whose version change a deferral to `day` postpones (31 August to 30 June)."""
    return day.year if (day.month, day.day) >= VERSION_CHANGE_ON else day.year - 1


def validate_version_change(choice: str, day: date | None, base: str | None, today: date) -> dict[str, Any]:
    """The version-change choice, checked as a whole; each refusal names its field."""
    errors: list[dict[str, str]] = []

    def refuse(field: str, message: str) -> None:
        errors.append({"field": f"version_change.{field}", "message": message})

    if choice == "install_at_release":
        if day is not None:
            refuse("date", "install_at_release takes no date: the version is installed at its release, 31 August")
        if base is not None:
            refuse("base", "install_at_release takes no base: a base of the ending year is replaced by the "
                           "new year's, a base of the coming year is kept")
    elif choice == "defer":
        if day is None:
            refuse("date", "defer needs the date to install the version on")
        elif (day.month, day.day) < VERSION_CHANGE_ON and day.month >= YEAR_STARTS_IN_MONTH:
            refuse("date", "a deferred installation is from 31 August to 30 June; for an earlier date choose "
                           "pre_release")
        elif day < today:
            refuse("date", f"{day.isoformat()} is in the past")
        if base not in ("new_empty", "current"):
            refuse("base", "defer needs base: new_empty (a new empty base goes in) or current (the base in "
                           "service is kept)")
    elif choice == "pre_release":
        if day is None:
            refuse("date", "pre_release needs the date to install the pre-release from")
        elif not YEAR_ARCHIVE_ON <= (day.month, day.day) < VERSION_CHANGE_ON:
            refuse("date", "the pre-release is installed from 1 July to 30 August")
        elif day < today:
            refuse("date", f"{day.isoformat()} is in the past")
        if base is not None:
            refuse("base", "pre_release takes no base: a base of the ending year is replaced by the new year's")
    else:
        refuse("choice", "one of install_at_release, defer, pre_release")
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
    return {"choice": choice, "date": day, "base": base}


def choice_for(chosen: dict[str, Any], cycle: int) -> dict[str, Any]:
    """The account's choice as it applies to the summer `cycle`: a dated choice applies to the
    summer of its date; every other summer the version is installed at release."""
    day = chosen.get("date")
    if chosen["choice"] == "defer" and day is not None and deferral_cycle(day) == cycle:
        return chosen
    if chosen["choice"] == "pre_release" and day is not None and day.year == cycle:
        return chosen
    return dict(DEFAULT_VERSION_CHANGE)


# -- the schedule ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class YearOperation:
    """One scheduled operation of the summer `cycle` (preparing the school year cycle-(cycle+1))."""

    kind: str  # year_archive | next_base | pre_release | version_change
    cycle: int
    at: datetime  # UTC
    choice: dict

    @property
    def year(self) -> str:
        return school_year(self.cycle)


def local_midnight(day: date, time_zone: str) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=ZoneInfo(time_zone)).astimezone(UTC)


def year_operations(cycle: int, time_zone: str, chosen: dict[str, Any]) -> list[YearOperation]:
    """The operations of the summer `cycle` for a planning in `time_zone`, in the order they run."""
    choice = choice_for(chosen, cycle)

    def at(month_day: tuple[int, int]) -> datetime:
        return local_midnight(date(cycle, *month_day), time_zone)

    ops = [YearOperation("year_archive", cycle, at(YEAR_ARCHIVE_ON), choice),
           YearOperation("next_base", cycle, at(NEXT_BASE_ON), choice)]
    if choice["choice"] == "defer":
        ops.append(YearOperation("version_change", cycle, local_midnight(choice["date"], time_zone), choice))
    else:
        ops.append(YearOperation("version_change", cycle, at(VERSION_CHANGE_ON), choice))
    if choice["choice"] == "pre_release":
        ops.append(YearOperation("pre_release", cycle, local_midnight(choice["date"], time_zone), choice))
    return sorted(ops, key=lambda op: (op.at, ORDER[op.kind]))


def is_done(op: YearOperation, change: Any | None) -> bool:
    """Does the planning's YearChange for the year (campus.aggregates.school_year), if any, record `op`?"""
    if change is None:
        return False
    if op.kind == "year_archive":
        return change.scheduled_archive is not None
    if op.kind == "next_base":
        return change.next_base_id is not None or change.next_base_skipped is not None
    if op.kind == "pre_release":
        return change.pre_release is not None
    return change.version_change is not None

