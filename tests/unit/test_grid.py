"""The timetable grid of a base (issue 3, Campus fiche 6): every rule, each refusal
naming its field, all broken rules at once, and a property test against an
independently written statement of the rules."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campus.errors import Invalid
from campus.rules.grid import grid_view, make_grid

MONDAY = date(2026, 8, 31)
SUNDAY = date(2027, 7, 4)  # 44 weeks later
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def grid(**overrides):
    args = {"first_monday": MONDAY, "last_sunday": SUNDAY, "working_days": list(WEEKDAYS), "sequences_per_day": 12,
                "sequence_minutes": 60, "split": 2}
    args.update(overrides)
    return make_grid(**args)


def refusal(**overrides) -> Invalid:
    with pytest.raises(Invalid) as caught:
        grid(**overrides)
    exc = caught.value
    assert exc.status == 422
    for e in exc.errors:
        assert set(e) == {"field", "message"} and e["message"].strip(), e
        assert f"{e['field']}: {e['message']}" in exc.detail
    return exc


def fields_of(exc: Invalid) -> set[str]:
    return {e["field"] for e in exc.errors}


def message(exc: Invalid, field: str) -> str:
    found = [e["message"] for e in exc.errors if e["field"] == field]
    assert found, f"no error on {field}: {exc.errors}"
    return " | ".join(found)


def test_the_grid_of_fiche_6():
    g = grid()
    assert g["weeks"] == 44
    assert g["working_days"] == ("mon", "tue", "wed", "thu", "fri")
    assert g["step_minutes"] == 30  # 60 min split in 2
    assert g["day_minutes"] == 12 * 60
    view = grid_view(g)
    assert view["first_monday"] == "2026-08-31" and view["last_sunday"] == "2027-07-04"
    assert view["working_days"] == ["mon", "tue", "wed", "thu", "fri"]


# -- the span: a Monday to a Sunday, 1 to 62 weeks -----------------------------
@pytest.mark.parametrize("offset", [1, 2, 3, 4, 5, 6])
def test_the_first_day_must_be_a_monday(offset):
    not_monday = MONDAY + timedelta(days=offset)
    exc = refusal(first_monday=not_monday)
    assert "first_monday" in fields_of(exc)
    assert "monday" in message(exc, "first_monday").lower()
    assert not_monday.isoformat() in message(exc, "first_monday")


@pytest.mark.parametrize("offset", [-6, -5, -4, -3, -2, -1])
def test_the_last_day_must_be_a_sunday(offset):
    exc = refusal(last_sunday=SUNDAY + timedelta(days=offset))
    assert fields_of(exc) == {"last_sunday"}
    assert "sunday" in message(exc, "last_sunday").lower()


@pytest.mark.parametrize("weeks", [1, 2, 52, 61, 62])
def test_one_to_62_weeks_are_accepted(weeks):
    g = grid(last_sunday=MONDAY + timedelta(weeks=weeks, days=-1))
    assert g["weeks"] == weeks


def test_a_single_week_is_the_shortest_grid():
    g = grid(last_sunday=MONDAY + timedelta(days=6))
    assert g["weeks"] == 1


@pytest.mark.parametrize("weeks", [63, 64, 104])
def test_more_than_62_weeks_are_refused(weeks):
    exc = refusal(last_sunday=MONDAY + timedelta(weeks=weeks, days=-1))
    assert fields_of(exc) == {"last_sunday"}
    assert "62 weeks" in message(exc, "last_sunday")
    assert str(weeks) in message(exc, "last_sunday")


@pytest.mark.parametrize("sunday", [MONDAY - timedelta(days=1), MONDAY - timedelta(weeks=3, days=1)])
def test_the_last_sunday_must_come_after_the_first_monday(sunday):
    exc = refusal(last_sunday=sunday)
    assert fields_of(exc) == {"last_sunday"}
    assert "after first_monday" in message(exc, "last_sunday")


# -- working days -------------------------------------------------------------
@pytest.mark.parametrize("days", [["mon"], ["sun"], ["sat", "mon"], ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]])
def test_one_to_seven_working_days_kept_in_week_order(days):
    g = grid(working_days=days)
    order = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    assert list(g["working_days"]) == sorted(days, key=order.index)


def test_no_working_day_is_refused():
    exc = refusal(working_days=[])
    assert fields_of(exc) == {"working_days"}
    assert "1 to 7" in message(exc, "working_days")


@pytest.mark.parametrize("bad", ["lun", "Mon", "monday", "", "xyz"])
def test_an_unknown_day_is_refused_and_named(bad):
    exc = refusal(working_days=["tue", bad])
    assert fields_of(exc) == {"working_days"}
    assert repr(bad) in message(exc, "working_days")
    assert "mon, tue, wed, thu, fri, sat, sun" in message(exc, "working_days")


def test_a_day_listed_twice_is_refused():
    exc = refusal(working_days=["mon", "tue", "mon"])
    assert fields_of(exc) == {"working_days"}
    assert "twice" in message(exc, "working_days")


def test_eight_entries_cannot_sneak_in_through_a_duplicate():
    exc = refusal(working_days=["mon", "tue", "wed", "thu", "fri", "sat", "sun", "sun"])
    assert fields_of(exc) == {"working_days"}


# -- the day and its sequences ------------------------------------------------
@pytest.mark.parametrize("sequences,minutes", [(24, 60), (1, 1440), (48, 30), (1440, 1)])
def test_a_day_of_exactly_24_hours_is_accepted(sequences, minutes):
    g = grid(sequences_per_day=sequences, sequence_minutes=minutes, split=1)
    assert g["day_minutes"] == 24 * 60


@pytest.mark.parametrize("sequences,minutes", [(25, 60), (1, 1441), (13, 111), (1441, 1)])
def test_a_day_longer_than_24_hours_is_refused(sequences, minutes):
    exc = refusal(sequences_per_day=sequences, sequence_minutes=minutes, split=1)
    assert fields_of(exc) == {"sequences_per_day"}
    assert "24 h" in message(exc, "sequences_per_day")


@pytest.mark.parametrize("value", [0, -1])
def test_at_least_one_sequence_of_at_least_one_minute(value):
    assert fields_of(refusal(sequences_per_day=value)) == {"sequences_per_day"}
    assert fields_of(refusal(sequence_minutes=value, split=1)) == {"sequence_minutes"}


# -- the split of a sequence --------------------------------------------------
@pytest.mark.parametrize("split", [1, 2, 3, 4, 6, 12])
def test_the_allowed_splits(split):
    g = grid(sequence_minutes=60, split=split)
    assert g["step_minutes"] == 60 // split
    assert g["split"] == split


@pytest.mark.parametrize("split", [0, 5, 7, 8, 10, 24, -2])
def test_other_splits_are_refused(split):
    exc = refusal(split=split)
    assert fields_of(exc) == {"split"}
    assert "2, 3, 4, 6 or 12" in message(exc, "split")


def test_60_minutes_in_2_make_steps_of_30():
    assert grid(sequence_minutes=60, split=2)["step_minutes"] == 30


@pytest.mark.parametrize("minutes,split", [(50, 3), (55, 2), (50, 4), (50, 12), (45, 6), (1, 2)])
def test_the_step_must_be_a_whole_number_of_minutes(minutes, split):
    exc = refusal(sequence_minutes=minutes, split=split)
    assert fields_of(exc) == {"split"}
    assert f"{minutes} min split in {split}" in message(exc, "split")
    assert "whole number of minutes" in message(exc, "split")


@pytest.mark.parametrize("minutes,split,step", [(45, 3, 15), (50, 2, 25), (48, 12, 4), (36, 6, 6), (55, 1, 55)])
def test_whole_steps_are_accepted(minutes, split, step):
    assert grid(sequence_minutes=minutes, split=split)["step_minutes"] == step


# -- every broken rule at once ------------------------------------------------
def test_all_broken_rules_are_reported_at_once():
    exc = refusal(first_monday=MONDAY + timedelta(days=1), last_sunday=MONDAY + timedelta(weeks=70, days=-2),
                  working_days=["mon", "mon", "funday"], sequences_per_day=30, sequence_minutes=50, split=3)
    assert fields_of(exc) == {"first_monday", "last_sunday", "working_days", "sequences_per_day", "split"}
    assert "unknown days" in message(exc, "working_days") and "twice" in message(exc, "working_days")
    assert "sunday" in message(exc, "last_sunday").lower() and "62 weeks" in message(exc, "last_sunday")


def test_a_wrong_split_and_a_long_day_together():
    exc = refusal(sequences_per_day=30, sequence_minutes=60, split=5)
    assert fields_of(exc) == {"sequences_per_day", "split"}


# -- the property: make_grid accepts exactly the grids the issue allows ---------
DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def allowed(first: date, last: date, days: list[str], sequences: int, minutes: int, split: int) -> bool:
    """The rules of issue 3, written from the issue, not from campus/rules/grid.py."""
    if first.isoweekday() != 1 or last.isoweekday() != 7:
        return False
    span = (last - first).days + 1
    if span % 7 or not 7 <= span <= 62 * 7:
        return False
    if not days or len(days) > 7 or len(set(days)) != len(days) or not set(days) <= set(DAY_NAMES):
        return False
    if sequences < 1 or minutes < 1 or sequences * minutes > 1440:
        return False
    if split not in {1, 2, 3, 4, 6, 12}:
        return False
    return (minutes / split).is_integer()


anchor = date(2026, 1, 5)  # a Monday
starts = st.integers(-20, 20).map(lambda n: anchor + timedelta(days=n))
lengths = st.one_of(st.integers(-10, 70).map(lambda w: w * 7 - 1),  # whole weeks, most often
                    st.integers(-30, 460))
day_lists = st.lists(st.sampled_from(DAY_NAMES + ["lun", "MON", ""]), max_size=9)


@settings(max_examples=400, deadline=None)
@given(first=starts, length=lengths, days=day_lists, sequences=st.integers(-2, 60),
       minutes=st.integers(-2, 200), split=st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 24]))
def test_make_grid_accepts_exactly_the_allowed_grids(first, length, days, sequences, minutes, split):
    last = first + timedelta(days=length)
    expected = allowed(first, last, days, sequences, minutes, split)
    try:
        g = make_grid(first, last, days, sequences, minutes, split)
    except Invalid as exc:
        assert not expected, f"refused an allowed grid: {exc.detail}"
        assert exc.errors, "a refusal names at least one field"
        assert {e["field"] for e in exc.errors} <= {"first_monday", "last_sunday", "working_days",
                                                    "sequences_per_day", "sequence_minutes", "split"}
        return
    assert expected, "accepted a grid the rules forbid"
    assert g["weeks"] == ((last - first).days + 1) // 7
    assert 1 <= g["weeks"] <= 62
    assert g["step_minutes"] * split == minutes
    assert g["day_minutes"] == sequences * minutes <= 1440
    assert set(g["working_days"]) == set(days)
