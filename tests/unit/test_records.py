"""The record kinds of a base (issue 3): required fields, value rules, unknown
fields, decimal precision and the Python types `validate_fields` returns."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from campus.errors import Invalid, NotFound
from campus.rules.records import KINDS, REFERRERS, kind_of, record_json, validate_fields

ID = str(uuid4())

EXPECTED_KINDS = [
    "teachers", "subjects", "classes", "groups", "students", "rooms", "courses", "homework", "grades",
    "lesson_logs", "appraisals", "evaluations", "internships", "companies", "absences", "lateness",
    "punishments", "sanctions",
]

# The smallest valid body of each kind, and the fields it cannot do without.
MINIMAL: dict[str, tuple[dict, set[str]]] = {
    "teachers": ({"last_name": "Martin", "first_name": "Pierre"}, {"last_name", "first_name"}),
    "subjects": ({"name": "Mathématiques"}, {"name"}),
    "classes": ({"name": "2nde A"}, {"name"}),
    "groups": ({"name": "Latin"}, {"name"}),
    "students": ({"last_name": "Bernard", "first_name": "Lucie", "class_id": ID},
                 {"last_name", "first_name", "class_id"}),
    "rooms": ({"name": "Salle 215"}, {"name"}),
    "courses": ({"subject_id": ID, "teacher_id": ID, "weekday": "mon", "start": "08:00", "duration_minutes": 60},
                {"subject_id", "teacher_id", "weekday", "start", "duration_minutes"}),
    "homework": ({"subject_id": ID, "class_id": ID, "given_on": "2026-09-07", "due_on": "2026-09-14",
                  "description": "Exercices 1 à 5"}, {"subject_id", "class_id", "given_on", "due_on", "description"}),
    "grades": ({"student_id": ID, "subject_id": ID, "value": "12.5"}, {"student_id", "subject_id", "value"}),
    "lesson_logs": ({"course_id": ID, "date": "2026-09-07", "content": "Les fonctions affines"},
                    {"course_id", "date", "content"}),
    "appraisals": ({"student_id": ID, "subject_id": ID, "period": "Trimestre 1", "text": "Bon travail"},
                   {"student_id", "subject_id", "period", "text"}),
    "evaluations": ({"student_id": ID, "subject_id": ID, "competence": "Raisonner", "level": "acquired"},
                    {"student_id", "subject_id", "competence", "level"}),
    "internships": ({"student_id": ID, "company_id": ID, "start": "2027-01-04", "end": "2027-01-29"},
                    {"student_id", "company_id", "start", "end"}),
    "companies": ({"name": "Boulangerie Durand"}, {"name"}),
    "absences": ({"student_id": ID, "start": "2026-09-07T08:00:00+02:00", "end": "2026-09-07T12:00:00+02:00"},
                 {"student_id", "start", "end"}),
    "lateness": ({"student_id": ID, "at": "2026-09-07T08:10:00Z", "minutes": 10}, {"student_id", "at", "minutes"}),
    "punishments": ({"student_id": ID, "on": "2026-09-07", "nature": "Retenue"}, {"student_id", "on", "nature"}),
    "sanctions": ({"student_id": ID, "on": "2026-09-07", "nature": "Avertissement"}, {"student_id", "on", "nature"}),
}


def refused(kind: str, data) -> Invalid:
    with pytest.raises(Invalid) as caught:
        validate_fields(KINDS[kind], data)
    exc = caught.value
    assert exc.status == 422 and exc.errors
    for e in exc.errors:
        assert e["field"] and e["message"], e
    return exc


def fields_of(exc: Invalid) -> set[str]:
    return {e["field"] for e in exc.errors}


def message(exc: Invalid, field: str) -> str:
    return " | ".join(e["message"] for e in exc.errors if e["field"] == field)


def test_the_eighteen_kinds_of_the_issue():
    assert list(KINDS) == EXPECTED_KINDS
    assert {k.section for k in KINDS.values()} == {"resources", "schooling", "school_life"}
    assert [k for k, v in KINDS.items() if v.section == "school_life"] == ["absences", "lateness", "punishments",
                                                                            "sanctions"]
    assert set(MINIMAL) == set(KINDS)


def test_an_unknown_kind_is_not_found_and_the_kinds_are_listed():
    with pytest.raises(NotFound) as caught:
        kind_of("notes")
    assert "'notes'" in caught.value.detail
    for name in EXPECTED_KINDS:
        assert name in caught.value.detail


def test_references_point_at_kinds_that_exist():
    for kind in KINDS.values():
        for field, target in kind.references.items():
            assert target in KINDS and field in kind.model.model_fields
    assert ("grades", "student_id") in REFERRERS["students"]
    assert ("students", "class_id") in REFERRERS["classes"]
    assert KINDS["grades"].references == {"student_id": "students", "subject_id": "subjects"}


@pytest.mark.parametrize("kind", EXPECTED_KINDS)
def test_the_minimal_body_of_each_kind_is_accepted(kind):
    body, _ = MINIMAL[kind]
    fields = validate_fields(KINDS[kind], body)
    assert set(body) <= set(fields)


@pytest.mark.parametrize("kind", EXPECTED_KINDS)
def test_each_required_field_is_named_when_missing(kind):
    body, required = MINIMAL[kind]
    for field in required:
        exc = refused(kind, {k: v for k, v in body.items() if k != field})
        assert fields_of(exc) == {field}, (field, exc.errors)
        assert "required" in message(exc, field).lower()
    exc = refused(kind, {})
    assert fields_of(exc) == required


@pytest.mark.parametrize("kind", EXPECTED_KINDS)
def test_unknown_fields_are_refused_by_name(kind):
    body, _ = MINIMAL[kind]
    exc = refused(kind, {**body, "colour": "blue"})
    assert fields_of(exc) == {"colour"}


@pytest.mark.parametrize("data", [[], "a grade", 12, None])
def test_the_body_must_be_an_object(data):
    exc = refused("grades", data)
    assert fields_of(exc) == {"body"}


@pytest.mark.parametrize("field", ["name"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_names_cannot_be_blank(field, blank):
    assert fields_of(refused("classes", {field: blank})) == {field}


def test_names_are_trimmed():
    assert validate_fields(KINDS["classes"], {"name": "  2nde A  "})["name"] == "2nde A"


# -- grades -------------------------------------------------------------------
GRADE = {"student_id": ID, "subject_id": ID}


@pytest.mark.parametrize("value,scale", [(0, 20), (20, 20), ("12.5", 20), (0, "0.001"), (100, 100), ("7.125", 10)])
def test_a_grade_between_0_and_its_scale(value, scale):
    fields = validate_fields(KINDS["grades"], {**GRADE, "value": value, "scale": scale})
    assert fields["value"] == Decimal(str(value)) and fields["scale"] == Decimal(str(scale))


@pytest.mark.parametrize("value,scale", [(21, 20), ("20.001", 20), (-1, 20), ("-0.5", 20), (11, 10)])
def test_a_grade_outside_0_to_scale_is_refused_naming_value(value, scale):
    exc = refused("grades", {**GRADE, "value": value, "scale": scale})
    assert fields_of(exc) == {"value"}
    assert "between 0 and the scale" in message(exc, "value")


def test_the_scale_defaults_to_20():
    fields = validate_fields(KINDS["grades"], {**GRADE, "value": 20})
    assert fields["scale"] == Decimal(20)
    assert fields_of(refused("grades", {**GRADE, "value": "20.5"})) == {"value"}


@pytest.mark.parametrize("scale", [0, -20])
def test_the_scale_must_be_positive(scale):
    exc = refused("grades", {**GRADE, "value": 0, "scale": scale})
    assert fields_of(exc) == {"scale"}


@pytest.mark.parametrize("value", ["12.3456", "0.0001", "NaN", "Infinity", "douze", True])
def test_grade_values_beyond_the_decimal_precision_are_refused(value):
    exc = refused("grades", {**GRADE, "value": value, "scale": 20})
    assert fields_of(exc) == {"value"}


def test_decimals_keep_their_exact_value():
    fields = validate_fields(KINDS["grades"], {**GRADE, "value": "12.125", "scale": "20", "coefficient": "1.5"})
    assert fields["value"] == Decimal("12.125") and isinstance(fields["value"], Decimal)
    assert fields["coefficient"] == Decimal("1.5")
    # A JSON number such as 15.1 is read as the decimal 15.1, not as a binary float.
    assert validate_fields(KINDS["grades"], {**GRADE, "value": 15.1})["value"] == Decimal("15.1")


def test_the_coefficient_is_not_negative():
    assert fields_of(refused("grades", {**GRADE, "value": 1, "coefficient": -1})) == {"coefficient"}


# -- dates and instants in order --------------------------------------------------
def test_an_absence_starts_before_it_ends():
    base = {"student_id": ID}
    exc = refused("absences", {**base, "start": "2026-09-07T12:00:00Z", "end": "2026-09-07T08:00:00Z"})
    assert fields_of(exc) == {"start"}
    assert "before end" in message(exc, "start")
    same = refused("absences", {**base, "start": "2026-09-07T08:00:00Z", "end": "2026-09-07T08:00:00Z"})
    assert fields_of(same) == {"start"}
    # Instants are compared as instants: 10:00+02:00 is before 09:00Z.
    fields = validate_fields(KINDS["absences"], {**base, "start": "2026-09-07T10:00:00+02:00",
                                                 "end": "2026-09-07T09:00:00Z"})
    assert fields["start"] < fields["end"]


def test_absence_instants_need_an_offset():
    exc = refused("absences", {"student_id": ID, "start": "2026-09-07T08:00:00", "end": "2026-09-07T12:00:00Z"})
    assert fields_of(exc) == {"start"}


def test_an_internship_does_not_end_before_it_starts():
    base = {"student_id": ID, "company_id": ID}
    exc = refused("internships", {**base, "start": "2027-01-29", "end": "2027-01-04"})
    assert fields_of(exc) == {"end"}
    assert "before start" in message(exc, "end")
    one_day = validate_fields(KINDS["internships"], {**base, "start": "2027-01-04", "end": "2027-01-04"})
    assert one_day["start"] == one_day["end"] == date(2027, 1, 4)


def test_homework_is_not_due_before_it_is_given():
    body, _ = MINIMAL["homework"]
    exc = refused("homework", {**body, "given_on": "2026-09-14", "due_on": "2026-09-07"})
    assert fields_of(exc) == {"due_on"}
    assert "before given_on" in message(exc, "due_on")
    same_day = validate_fields(KINDS["homework"], {**body, "given_on": "2026-09-14", "due_on": "2026-09-14"})
    assert same_day["due_on"] == date(2026, 9, 14)


@pytest.mark.parametrize("kind,field,bad", [
    ("courses", "weekday", "monday"), ("courses", "duration_minutes", 0), ("courses", "duration_minutes", 1441),
    ("courses", "start", "25:00"), ("lateness", "minutes", 0), ("evaluations", "level", "perfect"),
    ("students", "class_id", "not-a-uuid"), ("students", "birth_date", "2010-02-30"), ("rooms", "capacity", -1),
    ("teachers", "civility", "Dr"),
])
def test_field_rules(kind, field, bad):
    body, _ = MINIMAL[kind]
    assert fields_of(refused(kind, {**body, field: bad})) == {field}


# -- validate_fields output types ---------------------------------------------
def test_validate_fields_returns_python_types_and_drops_absent_options():
    fields = validate_fields(KINDS["students"], {"last_name": "Bernard", "first_name": "Lucie", "class_id": ID,
                                                 "birth_date": "2010-05-17"})
    assert fields == {"last_name": "Bernard", "first_name": "Lucie", "class_id": UUID(ID),
                      "birth_date": date(2010, 5, 17)}
    assert "birth_date" not in validate_fields(KINDS["students"], MINIMAL["students"][0])

    course = validate_fields(KINDS["courses"], MINIMAL["courses"][0])
    assert course["start"] == time(8, 0) and isinstance(course["subject_id"], UUID)
    assert "room_id" not in course and "class_id" not in course

    absence = validate_fields(KINDS["absences"], MINIMAL["absences"][0])
    assert absence["start"] == datetime(2026, 9, 7, 6, 0, tzinfo=UTC)
    assert absence["start"].tzinfo is not None
    assert absence["justified"] is False

    evaluation = validate_fields(KINDS["evaluations"], MINIMAL["evaluations"][0])
    assert evaluation["level"] == "acquired"


def test_record_json_is_plain_json():
    fields = validate_fields(KINDS["grades"], {**GRADE, "value": "12.50", "date": "2026-09-07"})
    body = record_json("grades", UUID(ID), fields)
    assert body["id"] == ID and body["kind"] == "grades"
    assert body["student_id"] == ID
    assert Decimal(body["value"]) == Decimal("12.5")
    assert body["date"] == "2026-09-07"
    evaluation = record_json("evaluations", UUID(ID), validate_fields(KINDS["evaluations"],
                                                                      MINIMAL["evaluations"][0]))
    assert evaluation["level"] == "acquired" and type(evaluation["level"]) is str
