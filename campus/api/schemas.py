"""Request and response declarations (pydantic). They validate requests and,
through :mod:`campus.api.openapi`, document them."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from campus.aggregates.user import Status
# Required text: invisible-only values (zero-width, control, every kind of space) are refused (campus/rules/text.py).
from campus.rules.text import Name
from campus.rules.text import Short as Text
Login = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Patch(Strict):
    """A partial update: absent fields are left alone; only `NULLABLE` fields may be sent as null."""

    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _null_only_where_meaningful(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.NULLABLE:
            raise ValueError("must not be null (leave the field out to keep its value)")
        return value


NoControl = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$", max_length=200)]


def _utc_in_range(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("is out of the range of representable instants") from None


# -- operator -------------------------------------------------------------------
class Manager(Strict):
    name: Name
    email: EmailStr


class OpenAccount(Strict):
    establishment: Text
    manager: Manager
    edition: Literal["campus", "hosted"] = Field(
        default="campus", description="campus: a created base goes into service at once (Campus fiche 6)")


class OpenedAccountOut(BaseModel):
    hosting_number: str = Field(description="12 digits")
    console_password: str = Field(description="14 characters; shown only here")
    invoice_number: str = Field(description="10 digits; asked at the first login from a machine")
    establishment: str


class ConsolePasswordOut(BaseModel):
    hosting_number: str
    console_password: str = Field(description="the new password; shown only here")


# -- console session ------------------------------------------------------------
class OpenConsoleSession(Strict):
    hosting_number: Annotated[str, StringConstraints(pattern=r"^\d{12}$")] = Field(description="12 digits")
    password: Secret
    invoice_number: Annotated[str, StringConstraints(pattern=r"^\d{10}$")] | None = Field(
        default=None, description="10 digits; needed at the first login from a machine")
    certificate: Secret | None = Field(default=None, description="the certificate returned by an earlier login")


class ConsoleSessionOut(BaseModel):
    token: str
    certificate: str | None = Field(description="a newly installed certificate (only when invoice_number was sent)")
    expires_at: datetime


# -- controller -----------------------------------------------------------------
class BindDomain(Strict):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = Field(
        description="the label, e.g. `monecole` for monecole.pronote-campus.net")


class ControllerOut(BaseModel):
    name: str | None
    domain: str | None
    port: int | None
    state: Literal["stopped", "active"]


# -- plannings ------------------------------------------------------------------
class PlanningChanges(Patch):
    NULLABLE = frozenset({"publication_name"})

    name: Name | None = None
    publication_name: Name | None = None
    net_licence: bool | None = None
    domain: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    time_zone: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None = None


class ProfileAssignment(Strict):
    logins: list[Login] = Field(max_length=10000)


class PlanningOut(BaseModel):
    id: str
    number: int
    name: str
    publication_name: str
    net_licence: bool
    domain: str | None
    port: int | None
    time_zone: str
    server_state: str
    publication_state: str
    profiles: dict[str, list[str]]
    version: int


class SaveTemplate(Strict):
    name: Name
    planning_id: str


class ApplyTemplate(Strict):
    name: Name


# -- users ----------------------------------------------------------------------
class ExternalIds(Strict):
    ldap: Annotated[str, StringConstraints(max_length=200)] | None = None
    cas: Annotated[str, StringConstraints(max_length=200)] | None = None
    wsfed: Annotated[str, StringConstraints(max_length=200)] | None = None


class NewSuperadministrator(Strict):
    first_name: Name
    last_name: Name
    login: Login
    password: Secret
    password_confirmation: Secret


class NewUser(Strict):
    login: Login
    last_name: Name
    first_name: Name
    civility: Literal["M.", "Mme"] | None = None
    status: Status = Status.USER
    email: EmailStr | None = None
    external_ids: ExternalIds | None = None


class UserChanges(Patch):
    NULLABLE = frozenset({"email", "civility"})

    last_name: Name | None = None
    first_name: Name | None = None
    civility: Literal["M.", "Mme"] | None = None
    status: Status | None = None
    email: EmailStr | None = None
    console_access: bool | None = None
    external_ids: ExternalIds | None = None


class UserOut(BaseModel):
    login: str
    last_name: str
    first_name: str
    civility: str | None
    status: Status
    email: str | None
    console_access: bool
    external_ids: dict[str, str]
    version: int


class CreatedUserOut(UserOut):
    password: str = Field(description="generated; shown only here")


# -- history --------------------------------------------------------------------
class HistoryParams(Strict):
    type: NoControl | None = Field(default=None, description="event types, comma-separated, e.g. Planning.DomainBound")
    actor: NoControl | None = None
    aggregate_id: UUID | None = None
    planning_id: UUID | None = Field(default=None, description=(
        "events of that planning: its own, its bases', their saves' and archives', the user sessions opened on it"))
    base_id: UUID | None = Field(default=None, description=(
        "events of that base: its own, its mounting, its saves' and archives', the user sessions opened on it"))
    since: AwareDatetime | None = Field(default=None, description="ISO 8601 instant with offset, inclusive")
    until: AwareDatetime | None = Field(default=None, description="ISO 8601 instant with offset, inclusive")
    after: int | None = Field(default=None, ge=0, le=2**63 - 1, description=(
        "a position: events after it (the stream prefers the Last-Event-ID header)"))
    limit: int = Field(default=100, ge=1, le=1000, description=(
        "page size of the list (at most 1,000); the export and stream ignore it"))

    _in_range = field_validator("since", "until")(_utc_in_range)


# -- bases ----------------------------------------------------------------------
class NewBase(Strict):
    name: Name
    first_monday: date = Field(description="a Monday: the first day of the timetable")
    last_sunday: date = Field(description="a Sunday: the last day (1 to 62 weeks after first_monday)")
    working_days: list[Annotated[str, StringConstraints(max_length=3)]] = Field(
        min_length=1, max_length=7, description="mon, tue, wed, thu, fri, sat, sun")
    sequences_per_day: int = Field(ge=1, le=1440)
    sequence_minutes: int = Field(ge=1, le=1440)
    split: int = Field(description="2, 3, 4, 6 or 12 steps per sequence; 1 for no split")


class ServerState(Strict):
    state: Literal["in_service", "stopped"]


class MountBase(Strict):
    base_id: UUID


class RecordBody(BaseModel):
    """The record's fields; each kind declares its own (see the kinds in the API overview)."""

    model_config = ConfigDict(extra="allow")


# -- directory user sessions ----------------------------------------------------
class OpenUserSession(Strict):
    domain: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)] = Field(
        description="the controller's domain, e.g. monecole.pronote-campus.net (or just monecole)")
    login: Login
    password: Secret
    planning: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] = Field(
        description="the planning's id, name or publication name")
    mode: Literal["administrative", "teacher", "school_life"]
    device: Annotated[str, StringConstraints(min_length=16, max_length=256)] | None = Field(
        default=None, description="a secret identifier the client keeps for this device (16+ characters)")
    pin: Annotated[str, StringConstraints(max_length=32)] | None = None


class SecurityChoice(Strict):
    measure: Literal["none", "notification", "pin"]
    pin: Annotated[str, StringConstraints(max_length=32)] | None = None
    pin_confirmation: Annotated[str, StringConstraints(max_length=32)] | None = None


class DeviceName(Strict):
    name: Name = Field(description='e.g. "Bureau", "Salle 215"')


class RecordPage(Strict):
    after: UUID | None = Field(default=None, description="the id of the last record of the previous page")
    limit: int = Field(default=100, ge=1, le=1000)
    as_of: AwareDatetime | None = Field(default=None, description="read the records as they were at this instant")

    _in_range = field_validator("as_of")(_utc_in_range)


# -- the past -------------------------------------------------------------------
class AsOf(Strict):
    as_of: AwareDatetime | None = Field(
        default=None, description="an ISO 8601 instant with offset: the state after every event stamped at or before it")

    _in_range = field_validator("as_of")(_utc_in_range)


class Diff(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: AwareDatetime = Field(alias="from", description="ISO 8601 instant with offset")
    to: AwareDatetime = Field(description="ISO 8601 instant with offset")

    _in_range = field_validator("from_", "to")(_utc_in_range)


class Restore(Strict):
    as_of: AwareDatetime | None = Field(default=None, description="the instant to go back to (last 30 days)")
    backup_id: str | None = Field(default=None, description="a save or an archive (coming with saves and archives)")
    confirm: bool = Field(default=False, description="must be true: the restore replaces the base's current state")
    kinds: list[str] | None = Field(
        default=None, description="only these record kinds are brought back; the rest of the base stays as it is")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None

    _in_range = field_validator("as_of")(_utc_in_range)
