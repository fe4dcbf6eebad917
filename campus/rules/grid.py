"""The timetable grid of a base (Campus fiche 6, hosting guide fiche 2).

A grid spans whole weeks, from a Monday to a Sunday (1 to 62 weeks), keeps 1 to
7 working days, cuts a day into sequences of a number of minutes, and a
sequence into 2, 3, 4, 6 or 12 steps (or none). Every refusal names the field
and the rule; all broken rules are reported at once.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from campus.errors import Invalid

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SPLITS = (1, 2, 3, 4, 6, 12)
MAX_WEEKS = 62


def make_grid(
    first_monday: date,
    last_sunday: date,
    working_days: list[str],
    sequences_per_day: int,
    sequence_minutes: int,
    split: int,
) -> dict[str, Any]:
    errors: list[dict[str, str]] = []

    def refuse(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    if first_monday.weekday() != 0:
        refuse("first_monday", f"{first_monday.isoformat()} is a {_day_name(first_monday)}, not a Monday")
    if last_sunday.weekday() != 6:
        refuse("last_sunday", f"{last_sunday.isoformat()} is a {_day_name(last_sunday)}, not a Sunday")
    span_days = (last_sunday - first_monday).days + 1
    weeks = span_days // 7
    if span_days <= 0:
        refuse("last_sunday", "must come after first_monday")
    elif not 1 <= span_days / 7 <= MAX_WEEKS:
        refuse("last_sunday", f"the timetable must span 1 to {MAX_WEEKS} weeks, not {span_days / 7:g}")
    unknown = [d for d in working_days if d not in DAYS]
    if unknown:
        refuse("working_days", f"unknown days {unknown}: use {', '.join(DAYS)}")
    if len(set(working_days)) != len(working_days):
        refuse("working_days", "a day is listed twice")
    if not 1 <= len(set(working_days)) <= 7:
        refuse("working_days", "a week has 1 to 7 working days")
    if sequences_per_day < 1:
        refuse("sequences_per_day", "must be at least 1")
    if sequence_minutes < 1:
        refuse("sequence_minutes", "must be at least 1 minute")
    if sequences_per_day >= 1 and sequence_minutes >= 1 and sequences_per_day * sequence_minutes > 24 * 60:
        refuse("sequences_per_day",
               f"{sequences_per_day} sequences of {sequence_minutes} min make "
               f"{sequences_per_day * sequence_minutes / 60:g} h: a day cannot exceed 24 h")
    if split not in SPLITS:
        refuse("split", "a sequence is split in 2, 3, 4, 6 or 12 (1 for no split)")
    elif sequence_minutes >= 1 and sequence_minutes % split:
        refuse("split", f"{sequence_minutes} min split in {split} is not a whole number of minutes")
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
    ordered = tuple(d for d in DAYS if d in working_days)
    return {
        "first_monday": first_monday,
        "last_sunday": last_sunday,
        "weeks": weeks,
        "working_days": ordered,
        "sequences_per_day": sequences_per_day,
        "sequence_minutes": sequence_minutes,
        "split": split,
        "step_minutes": sequence_minutes // split,
        "day_minutes": sequences_per_day * sequence_minutes,
    }


def grid_view(grid: dict[str, Any]) -> dict[str, Any]:
    return {**grid, "working_days": list(grid["working_days"]),
            "first_monday": grid["first_monday"].isoformat(), "last_sunday": grid["last_sunday"].isoformat()}


def next_year(grid: dict[str, Any]) -> dict[str, Any]:
    """The same grid shifted to the next school year (52 weeks later)."""
    shift = timedelta(weeks=52)
    return {**grid, "first_monday": grid["first_monday"] + shift, "last_sunday": grid["last_sunday"] + shift}


def _day_name(day: date) -> str:
    return day.strftime("%A")
