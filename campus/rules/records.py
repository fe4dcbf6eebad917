"""The school's records: the kinds a base holds, their fields and references.

One declaration per kind: a pydantic model (validates creation and, merged
with the current values, every change), the references it makes to other
kinds, and the section of the dashboard it counts in. The API paths use the
plural English names (`teachers`, `grades`, …).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time

Day = date  # a field may be named `date`: annotations use this alias
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from campus.errors import Invalid
from campus.rules.text import LongText as Text  # required text refuses invisible-only values
from campus.rules.text import Name, Short
Score = Annotated[Decimal, Field(max_digits=9, decimal_places=3, allow_inf_nan=False)]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Teacher(Record):
    last_name: Name
    first_name: Name
    civility: Annotated[str, StringConstraints(pattern=r"^(M\.|Mme)$")] | None = None
    email: Short | None = None


class Subject(Record):
    name: Name
    short_name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)] | None = None


class SchoolClass(Record):
    name: Name
    level: Name | None = None


class Group(Record):
    name: Name
    class_id: UUID | None = None


class Student(Record):
    last_name: Name
    first_name: Name
    class_id: UUID
    birth_date: Day | None = None


class Room(Record):
    name: Name
    capacity: Annotated[int, Field(ge=0, le=100_000)] | None = None


class Course(Record):
    subject_id: UUID
    teacher_id: UUID
    class_id: UUID | None = None
    group_id: UUID | None = None
    room_id: UUID | None = None
    weekday: Annotated[str, StringConstraints(pattern=r"^(mon|tue|wed|thu|fri|sat|sun)$")]
    start: time
    duration_minutes: Annotated[int, Field(ge=1, le=24 * 60)]


class Homework(Record):
    subject_id: UUID
    class_id: UUID
    given_on: Day
    due_on: Day
    description: Text

    @model_validator(mode="after")
    def _due_after_given(self) -> "Homework":
        if self.due_on < self.given_on:
            raise ValueError("due_on must not be before given_on")
        return self


class Grade(Record):
    student_id: UUID
    subject_id: UUID
    value: Score
    scale: Score = Decimal(20)
    coefficient: Annotated[Decimal, Field(ge=0, max_digits=6, decimal_places=2)] = Decimal(1)
    date: Day | None = None
    comment: Short | None = None

    @model_validator(mode="after")
    def _value_within_scale(self) -> "Grade":
        if self.scale <= 0:
            raise ValueError("scale must be greater than 0")
        if not Decimal(0) <= self.value <= self.scale:
            raise ValueError(f"value must be between 0 and the scale ({self.scale})")
        return self


class LessonLog(Record):
    course_id: UUID
    date: Day
    content: Text


class Appraisal(Record):
    student_id: UUID
    subject_id: UUID
    period: Name
    text: Text


class Level(StrEnum):
    NOT_ACQUIRED = "not_acquired"
    IN_PROGRESS = "in_progress"
    ACQUIRED = "acquired"
    EXCEEDED = "exceeded"


class Evaluation(Record):
    student_id: UUID
    subject_id: UUID
    competence: Short
    level: Level
    date: Day | None = None


class Company(Record):
    name: Name
    city: Name | None = None


class Internship(Record):
    student_id: UUID
    company_id: UUID
    start: Day
    end: Day

    @model_validator(mode="after")
    def _ordered(self) -> "Internship":
        if self.end < self.start:
            raise ValueError("end must not be before start")
        return self


class Absence(Record):
    student_id: UUID
    start: AwareDatetime
    end: AwareDatetime
    reason: Short | None = None
    justified: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "Absence":
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class Lateness(Record):
    student_id: UUID
    at: AwareDatetime
    minutes: Annotated[int, Field(ge=1, le=24 * 60)]
    reason: Short | None = None


class Punishment(Record):
    student_id: UUID
    on: Day
    nature: Name
    reason: Short | None = None


class Sanction(Record):
    student_id: UUID
    on: Day
    nature: Name
    reason: Short | None = None


@dataclass(frozen=True)
class Kind:
    name: str  # plural, as in the API path
    model: type[Record]
    section: str  # resources | schooling | school_life
    references: dict[str, str]  # field -> kind it points at

    @property
    def singular(self) -> str:
        return SINGULAR.get(self.name, self.name.removesuffix("s"))


SINGULAR = {"classes": "class", "companies": "company", "homework": "homework", "lateness": "lateness"}


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("teachers", Teacher, "resources", {}),
    Kind("subjects", Subject, "resources", {}),
    Kind("classes", SchoolClass, "resources", {}),
    Kind("groups", Group, "resources", {"class_id": "classes"}),
    Kind("students", Student, "resources", {"class_id": "classes"}),
    Kind("rooms", Room, "resources", {}),
    Kind("courses", Course, "schooling", {"subject_id": "subjects", "teacher_id": "teachers",
                                          "class_id": "classes", "group_id": "groups", "room_id": "rooms"}),
    Kind("homework", Homework, "schooling", {"subject_id": "subjects", "class_id": "classes"}),
    Kind("grades", Grade, "schooling", {"student_id": "students", "subject_id": "subjects"}),
    Kind("lesson_logs", LessonLog, "schooling", {"course_id": "courses"}),
    Kind("appraisals", Appraisal, "schooling", {"student_id": "students", "subject_id": "subjects"}),
    Kind("evaluations", Evaluation, "schooling", {"student_id": "students", "subject_id": "subjects"}),
    Kind("internships", Internship, "schooling", {"student_id": "students", "company_id": "companies"}),
    Kind("companies", Company, "schooling", {}),
    Kind("absences", Absence, "school_life", {"student_id": "students"}),
    Kind("lateness", Lateness, "school_life", {"student_id": "students"}),
    Kind("punishments", Punishment, "school_life", {"student_id": "students"}),
    Kind("sanctions", Sanction, "school_life", {"student_id": "students"}),
)}

# Which kinds point at a kind, and through which field: {target: [(kind, field)]}.
REFERRERS: dict[str, list[tuple[str, str]]] = {}
for _kind in KINDS.values():
    for _field, _target in _kind.references.items():
        REFERRERS.setdefault(_target, []).append((_kind.name, _field))


def kind_of(name: str) -> Kind:
    from campus.errors import NotFound

    try:
        return KINDS[name]
    except KeyError:
        raise NotFound(f"no record kind {name!r}; kinds are: {', '.join(KINDS)}") from None


def validate_fields(kind: Kind, data: Any) -> dict[str, Any]:
    """Validated, normalised field values (Python types: Decimal, date, UUID…)."""
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object", errors=[{"field": "body", "message": "must be a JSON object"}])
    try:
        model = kind.model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            if not loc:  # a rule across fields names its first field first ("value must be…")
                first = message.split(" ", 1)[0]
                loc = first if first in kind.model.model_fields else "body"
            errors.append({"field": loc, "message": message})
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors) from None
    return model.model_dump(mode="python", exclude_none=True)


def record_json(kind: str, record_id: UUID, fields: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(record_id), "kind": kind, **{k: _jsonable(v) for k, v in fields.items()}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    return value
