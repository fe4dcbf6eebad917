"""Moving bases and users in and out: export files, loads, annexes, users file,
timetable transfers (hosting guide fiches 5 and 7).

* **Export**: a consistent copy of the base is taken under the tenant's lock,
  then written as a campus-base file (:mod:`campus.rules.export_format`) outside it.
* **Load**: the file is read and checked in full (:mod:`campus.rules.base_file_reader`)
  *before* the lock is taken; then one command creates the base (origin
  ``loaded``), imports the records in events of :data:`IMPORT_CHUNK`, adds the
  annexes and connection modes, and mounts it on the planning, all in one
  atomic ``save``.
* **Users file** (the ``.profils`` of fiche 7): directory users with their
  password hashes (never their passwords) and the profile assignments by
  planning name, checksummed (its format: :mod:`campus.rules.users_file`).
* **Timetable transfer** (fiche 5): one request with the grid, resources that
  refer to each other by client-side refs (:mod:`campus.rules.transfer`), and
  the connection modes.
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from campus.aggregates.planning import Planning, Profile
from campus.aggregates.school_base import Base
from campus.aggregates.user import DirectoryUser, Status, user_id_for
from campus.errors import Conflict, Invalid, NotFound, TooLarge
from campus.rules.base_file_reader import read_base_file
from campus.rules.export_format import (
    MAX_ANNEX_BYTES,
    Annex,
    BaseFile,
    PreparedFile,
    prepare,
    validate_annex_name,
    validate_connection_modes,
    validate_content_type,
)
from campus.rules.grid import make_grid
from campus.rules.text import BLANK_MESSAGE, VISIBLE, is_blank, required_text
from campus.rules.transfer import MAX_TRANSFER_ERRORS, transfer_records
from campus.rules.users_file import USERS_FORMAT, USERS_VERSION, parse_users_file, users_file_digest
from campus.services.base import Service


IMPORT_CHUNK = 1000  # records per RecordsImported event
ON_CONFLICT = ("fail", "update", "skip")


# -- export and load ----------------------------------------------------------------------
def snapshot_of(base: Base, exported_at: Any) -> BaseFile:
    """A copy of `base` that later changes to the (cached, mutable) aggregate cannot touch."""
    return BaseFile(
        base_id=base.id,
        name=base.name,
        origin=base.origin,
        created_at=base.created_on,
        last_entry_at=base.last_entry_at,
        grid=dict(base.grid),
        records={kind: {rid: dict(fields) for rid, fields in records.items()}
                 for kind, records in base.records.items()},
        annexes={name: Annex(a["content_type"], a["sha256"], a["data"]) for name, a in base.annexes.items()},
        connection_modes=copy.deepcopy(base.connection_modes),
        position=base.version,
        exported_at=exported_at,
    )


class Exchange(Service):
    """Base files: export, load, annexes, the users file and the timetable transfer (hosting guide fiches 5, 7)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "backups", "bases", "plannings", "users")

    def export_base_file(self, account_id: UUID, planning_id: UUID) -> PreparedFile:
        """The planning's current base as a campus-base file ready to stream."""
        planning = self.plannings.get_planning(account_id, planning_id)
        if planning.base_id is None:
            raise NotFound(f"planning {planning.name!r} has no base yet: create or load one")
        with self._reading(account_id):
            snapshot = snapshot_of(self.bases.get_base(account_id, planning.base_id), self.now())
        return prepare(snapshot)

    def check_can_load(self, account_id: UUID, planning_id: UUID) -> Planning:
        """Refuse early (404, 409) before a client uploads a whole file for nothing."""
        planning = self.plannings.get_planning(account_id, planning_id)
        self.bases.require_stopped(planning, "load a base")
        return planning

    def load_base_file(self, account_id: UUID, planning_id: UUID, path: Path,
                       name: str | None = None) -> tuple[Planning, Base, BaseFile]:
        """Load a campus-base file as a new base of the planning (hosting guide fiche 7)."""
        with open(path, "rb") as stream:
            loaded = read_base_file(stream)
        base_name = required_text("name", loaded.name if name is None else name, 100)
        rows = [(kind, record_id, dict(fields)) for kind, record_id, fields in loaded.record_rows()]
        current = self.plannings.get_planning(account_id, planning_id)
        self.bases.require_stopped(current, "load a base")
        if current.base_id is not None:
            self.backups.take_backup(account_id, planning_id, before="load")  # the base being replaced, as it is now

        def body() -> tuple[Planning, Base, BaseFile]:
            planning = self.plannings.get_planning(account_id, planning_id)
            self.bases.require_stopped(planning, "load a base")
            base = Base(account_id=account_id, planning_id=planning.id, name=base_name, grid=loaded.grid,
                        origin="loaded")
            _import(base, rows, loaded.last_entry_at)
            for annex_name in sorted(loaded.annexes):
                annex = loaded.annexes[annex_name]
                base.add_annex(name=annex_name, content_type=annex.content_type, sha256=annex.sha256,
                               data=annex.data, at=self.now())
            if loaded.connection_modes:
                base.set_connection_modes(modes=dict(loaded.connection_modes))
            planning.mount_base(base_id=base.id)
            self.save(base, planning)
            self.bases.base_cache.put(base)  # built in memory already: no replay on the first read
            return planning, base, loaded

        return self._run(account_id, body)

    def put_annex(self, account_id: UUID, planning_id: UUID, name: str,
                  content_type: str | None, data: bytes) -> tuple[Base, dict[str, Any], bool]:
        """Add or replace an annex of the planning's current base; True if it is new."""
        name = validate_annex_name(name)
        if is_blank(name):
            raise Invalid.field("name", f"an annex name {BLANK_MESSAGE}")
        content_type = validate_content_type(content_type or "application/octet-stream", "Content-Type")
        if not data:
            raise Invalid.field("body", "an annex cannot be empty")
        if len(data) > MAX_ANNEX_BYTES:
            raise TooLarge(f"the annex is {len(data)} bytes; the limit is {MAX_ANNEX_BYTES} bytes")
        sha256 = hashlib.sha256(data).hexdigest()

        def body() -> tuple[Base, dict[str, Any], bool]:
            _, base = self.bases.writable_base(account_id, planning_id)
            existing = base.annexes.get(name)
            if existing is None or (existing["sha256"], existing["content_type"]) != (sha256, content_type):
                base.add_annex(name=name, content_type=content_type, sha256=sha256, data=data, at=self.now())
                self.save(base)
            return base, annex_info(name, base.annexes[name]), existing is None

        return self._run(account_id, body)

    def get_annex(self, account_id: UUID, planning_id: UUID, name: str) -> dict[str, Any]:
        _, base = self.bases.current_base(account_id, planning_id)
        with self._reading(account_id):
            annex = base.annexes.get(name)
            if annex is None:
                raise NotFound(f"the base {base.name!r} has no annex named {name!r}")
            return dict(annex)

    def export_users_file(self, account_id: UUID) -> tuple[bytes, int]:
        """The users file (JSON) and how many users it holds."""
        account = self.accounts.get_account(account_id)
        users = self.users.list_users(account_id)
        document: dict[str, Any] = {
            "format": USERS_FORMAT,
            "version": USERS_VERSION,
            "establishment": account.establishment,
            "exported_at": self.now().isoformat(),
            "users": [{**u.public_fields(), "password_hash": u.password_hash} for u in users],
            "assignments": {p.name: {profile: list(logins) for profile, logins in p.profiles.items()}
                            for p in self.plannings.list_plannings(account_id)},
        }
        document["sha256"] = users_file_digest(document)
        return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n", len(users)

    def import_users_file(self, account_id: UUID, raw: bytes,
                          on_conflict: str = "fail") -> dict[str, Any]:
        """Create the file's users with their password hashes and apply its assignments.

        An existing login is a 409 (nothing imported) unless `on_conflict` is
        ``update`` (names, status, e-mail, access, identifiers and password hash
        replaced) or ``skip`` (left as it is, assignments included).
        """
        if on_conflict not in ON_CONFLICT:
            raise Invalid.field("query.on_conflict", f"must be one of {', '.join(ON_CONFLICT)}")
        entries, assignments = parse_users_file(raw, UserEntry, [p.value for p in Profile])

        def body() -> dict[str, Any]:
            account = self.accounts.get_account(account_id)
            plannings = {p.name.casefold(): p for p in self.plannings.list_plannings(account_id)}
            unknown = [name for name in assignments if name.casefold() not in plannings]
            if unknown:
                known = ", ".join(repr(p.name) for p in plannings.values())
                raise Invalid("; ".join(f"assignments.{n}: no planning named {n!r} in this school (plannings: "
                                        f"{known})" for n in unknown),
                              errors=[{"field": f"assignments.{n}", "message": f"no planning named {n!r} in this "
                                       f"school (plannings: {known})"} for n in unknown])
            existing: dict[str, DirectoryUser] = {}
            for entry in entries:
                user_id = user_id_for(account_id, entry.login)
                if user_id in self.repository:
                    existing[entry.login.casefold()] = self._get(DirectoryUser, user_id, account_id, "user")
            if existing and on_conflict == "fail":
                logins = ", ".join(repr(u.login) for u in existing.values())
                raise Conflict(f"these logins already exist in this school: {logins}; nothing was imported. "
                               "Send ?on_conflict=update to update them or ?on_conflict=skip to keep them",
                               code="login_exists")
            created, updated, skipped = [], [], []
            users: dict[str, DirectoryUser] = {}  # casefolded login -> user the import may assign
            for entry in entries:
                user = existing.get(entry.login.casefold())
                if user is None:
                    user = DirectoryUser(
                        account_id=account_id, login=entry.login, last_name=entry.last_name,
                        first_name=entry.first_name, civility=entry.civility, status=entry.status,
                        email=entry.email, password_hash=entry.password_hash,
                        external_ids={k: v for k, v in entry.external_ids.items() if v})
                    if entry.console_access:
                        user.change_console_access(console_access=True)
                    created.append(user)
                elif on_conflict == "skip":
                    skipped.append(user.login)
                    continue
                elif self._update_from_entry(account_id, user, entry):
                    updated.append(user)
                users[entry.login.casefold()] = user
            changed_plannings = self._apply_assignments(account_id, assignments, plannings, users,
                                                        {u.casefold() for u in skipped})
            extra = []
            superadmins = [u for u in created if u.status == Status.SUPERADMINISTRATOR]
            if superadmins and account.first_superadministrator is None:
                account.record_first_superadministrator(login=superadmins[0].login)
                extra.append(account)
            self.save(*created, *updated, *changed_plannings, *extra)
            return {"created": len(created), "updated": len(updated), "skipped": skipped,
                    "plannings": [p.name for p in changed_plannings]}

        return self._run(account_id, body)

    def _update_from_entry(self, account_id: UUID, user: DirectoryUser, entry: UserEntry) -> bool:
        before = len(user.pending_events)
        if (entry.last_name, entry.first_name, entry.civility) != (user.last_name, user.first_name, user.civility):
            user.rename(last_name=entry.last_name, first_name=entry.first_name, civility=entry.civility)
        if entry.status != user.status:
            if entry.status == Status.USER:
                self.users.check_can_leave_administration(account_id, user)
            if user.status == Status.SUPERADMINISTRATOR:
                self.users.check_not_last_superadministrator(account_id, user)
            user.change_status(status=entry.status)
        if entry.email != user.email:
            user.change_email(email=entry.email)
        if entry.console_access != user.console_access:
            user.change_console_access(console_access=entry.console_access)
        external = {k: v for k, v in entry.external_ids.items() if v}
        if external != user.external_ids:
            user.change_external_ids(external_ids=external)
        if entry.password_hash != user.password_hash:
            user.change_password(password_hash=entry.password_hash)
        return len(user.pending_events) != before

    def _apply_assignments(self, account_id: UUID, assignments: dict[str, dict[str, list[str]]],
                           plannings: dict[str, Planning], users: dict[str, DirectoryUser],
                           skipped: set[str]) -> list[Planning]:
        errors: list[dict] = []
        changed: list[Planning] = []
        for planning_name, by_profile in assignments.items():
            planning = plannings[planning_name.casefold()]
            profiles = {p: list(ls) for p, ls in planning.profiles.items()}
            for profile_name, logins in by_profile.items():
                profile = Profile(profile_name)
                for index, login in enumerate(logins):
                    where = f"assignments.{planning_name}.{profile_name}[{index}]"
                    key = login.casefold()
                    if key in skipped:
                        continue
                    user = users.get(key)
                    if user is None:
                        try:
                            user = self.users.get_user(account_id, login)
                        except NotFound:
                            errors.append({"field": where, "message": f"no user {login!r} in the file or the school"})
                            continue
                    if profile == Profile.ADMINISTRATION and not user.is_administrative:
                        errors.append({"field": where, "message": f"{user.login!r} has status {user.status.value}: "
                                       "the Administration profile is only for superadministrators and base "
                                       "administrators"})
                        continue
                    for held in profiles.values():
                        if user.login in held:
                            held.remove(user.login)
                    profiles[profile.value].append(user.login)
            new = {p: tuple(ls) for p, ls in profiles.items()}
            if new != planning.profiles:
                planning.assign_profiles(profiles=new)
                changed.append(planning)
        if errors:
            raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
        return changed

    def transfer_base(self, account_id: UUID, planning_id: UUID, *, name: str,
                      grid: dict[str, Any], resources: dict[str, Any], connection_modes: dict[str, Any]
                      ) -> tuple[Planning, Base, dict[str, dict[str, str]]]:
        """Create a base from a timetable transfer: grid, resources, connection modes.

        Resources may carry a client-side ``ref``; a reference field ``x_id`` is
        then given as ``x_ref`` (a student's ``class_ref``). Answers the ids given
        to each ref, by kind.
        """
        errors: list[dict] = []
        try:
            base_name = required_text("name", name, 100)
        except Invalid as exc:
            errors += exc.errors
        try:
            made_grid = make_grid(grid["first_monday"], grid["last_sunday"], list(grid["working_days"]),
                                  grid["sequences_per_day"], grid["sequence_minutes"], grid["split"])
        except Invalid as exc:
            errors += [{"field": f"grid.{e['field']}", "message": e["message"]} for e in exc.errors]
        try:
            modes = validate_connection_modes(connection_modes)
        except Invalid as exc:
            errors += exc.errors
        rows, refs = transfer_records(resources, errors)
        if errors:
            shown = errors[:MAX_TRANSFER_ERRORS]
            more = f" (and {len(errors) - len(shown)} more)" if len(errors) > len(shown) else ""
            raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in shown) + more, errors=shown)

        def body() -> tuple[Planning, Base, dict[str, dict[str, str]]]:
            planning = self.plannings.get_planning(account_id, planning_id)
            self.bases.require_stopped(planning, "initialise a base from a timetable transfer")
            base = Base(account_id=account_id, planning_id=planning.id, name=base_name, grid=made_grid,
                        origin="transfer")
            _import(base, rows, self.now() if rows else None)
            base.set_connection_modes(modes=modes)
            planning.mount_base(base_id=base.id)
            self.save(base, planning)
            self.bases.base_cache.put(base)
            return planning, base, refs

        return self._run(account_id, body)


def _import(base: Base, rows: list[tuple[str, UUID, dict]], last_entry_at: Any) -> None:
    for start in range(0, len(rows), IMPORT_CHUNK):
        base.import_records(records=tuple(rows[start:start + IMPORT_CHUNK]), last_entry_at=last_entry_at)


def annex_info(name: str, annex: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "content_type": annex["content_type"], "size": annex["size"], "sha256": annex["sha256"]}


# -- the users file: one user's entry (the file's format: campus.rules.users_file) ----------
LOGIN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
ARGON2ID = re.compile(r"^\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$")
UserName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), VISIBLE]
ExternalId = Annotated[str, StringConstraints(max_length=200)]


class UserEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    login: Annotated[str, StringConstraints(strip_whitespace=True, pattern=LOGIN_PATTERN)]
    last_name: UserName
    first_name: UserName
    civility: Literal["M.", "Mme"] | None = None
    status: Status
    email: EmailStr | None = None
    console_access: bool = False
    external_ids: dict[Literal["ldap", "cas", "wsfed"], ExternalId | None] = {}
    password_hash: str

    @field_validator("password_hash")
    @classmethod
    def _argon2id(cls, value: str) -> str:
        if not ARGON2ID.match(value):
            raise ValueError("must be an argon2id hash ($argon2id$v=…); passwords themselves are never imported")
        return value

    @field_validator("email")
    @classmethod
    def _email_text(cls, value: Any) -> Any:
        return str(value) if value is not None else None

    @model_validator(mode="after")
    def _access_needs_email(self) -> UserEntry:
        if self.console_access and not self.email:
            raise ValueError("console_access needs an e-mail address")
        return self
