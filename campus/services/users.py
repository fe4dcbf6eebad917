"""Directory users of each school: statuses, passwords, the superadministrator rules (Campus fiches 4, 8)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from campus.aggregates.core import CampusAggregate
from campus.aggregates.planning import Profile
from campus.aggregates.user import DirectoryUser, Status, user_id_for
from campus.errors import Conflict, Invalid, NotFound
from campus.rules.security import generate_password, hash_secret, password_problems
from campus.rules.text import required_text
from campus.services.base import Service



LOGIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class CreatedUser:
    user: DirectoryUser
    password: str | None


class Users(Service):
    """Directory users of each school: statuses, passwords, the superadministrator rules (Campus fiches 4, 8)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "controllers", "plannings")

    def list_users(self, account_id: UUID) -> list[DirectoryUser]:
        return sorted(self._users(account_id), key=lambda u: u.login)

    def _users(self, account_id: UUID) -> Iterator[DirectoryUser]:
        """The school's users one at a time, oldest first: a check that one is enough stops early."""
        for user_id in self.history.aggregate_ids(str(account_id), "DirectoryUser"):
            yield self._get(DirectoryUser, user_id, account_id, "user")

    def has_superadministrator(self, account_id: UUID, other_than: UUID | None = None) -> bool:
        """Whether a superadministrator (other than `other_than`) exists. The first one is usually
        the school's first user, so this rarely reads more than one user, however big the school."""
        return any(u.status == Status.SUPERADMINISTRATOR and u.id != other_than for u in self._users(account_id))

    def get_user(self, account_id: UUID, login: str) -> DirectoryUser:
        return self._get(DirectoryUser, user_id_for(account_id, login), account_id, f"user {login!r}")

    def create_first_superadministrator(
        self, account_id: UUID, *, first_name: str, last_name: str, login: str, password: str, password_confirmation: str
    ) -> DirectoryUser:
        errors = [{"field": "password", "message": f"the password {m}"} for m in password_problems(password)]
        if password != password_confirmation:
            errors.append({"field": "password_confirmation", "message": "does not match the password"})
        if errors:
            raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)

        def body() -> DirectoryUser:
            account = self.accounts.get_account(account_id)
            if account.first_superadministrator is not None:
                raise Conflict("the first superadministrator already exists; add other users with POST /v1/console/users")
            account.record_first_superadministrator(login=login.strip())
            return self._new_user(account_id, login=login, last_name=last_name, first_name=first_name,
                                  status=Status.SUPERADMINISTRATOR, password=password, also_save=(account,))

        return self._run(account_id, body)

    def create_user(self, account_id: UUID, *, login: str, last_name: str, first_name: str,
                    civility: str | None = None, status: Status = Status.USER, email: str | None = None,
                    external_ids: dict | None = None) -> CreatedUser:
        def body() -> CreatedUser:
            password = generate_password(14)
            user = self._new_user(account_id, login=login, last_name=last_name, first_name=first_name,
                                  status=status, password=password, civility=civility, email=email,
                                  external_ids=external_ids)
            return CreatedUser(user, password)

        return self._run(account_id, body)

    def _new_user(self, account_id: UUID, *, login: str, last_name: str, first_name: str, status: Status,
                  password: str, civility: str | None = None, email: str | None = None,
                  external_ids: dict | None = None, also_save: tuple[CampusAggregate, ...] = ()) -> DirectoryUser:
        login = login.strip()
        if not LOGIN.match(login):
            raise Invalid.field("login", "1 to 64 characters among letters, digits and . _ @ -, starting with a letter or digit")
        if user_id_for(account_id, login) in self.repository:
            raise Conflict(f"the login {login!r} is already used in this school")
        user = DirectoryUser(
            account_id=account_id, login=login,
            last_name=required_text("last_name", last_name, 100),
            first_name=required_text("first_name", first_name, 100),
            civility=civility, status=status, email=email, password_hash=hash_secret(password),
            external_ids={k: v for k, v in (external_ids or {}).items() if v},
        )
        self.save(user, *also_save)
        return user

    def update_user(self, account_id: UUID, login: str, changes: dict[str, Any], if_match: str | None = None) -> DirectoryUser:
        for field in ("last_name", "first_name"):
            if field in changes:
                changes[field] = required_text(field, changes[field], 100)

        def body() -> DirectoryUser:
            user = self.get_user(account_id, login)
            self._check_version(user, if_match)
            email = changes.get("email", user.email) if "email" in changes else user.email
            access = changes.get("console_access", user.console_access)
            if access and not email:
                raise Invalid.field("console_access", "console access needs a valid e-mail address; set email first")
            names = (changes.get("last_name", user.last_name), changes.get("first_name", user.first_name),
                     changes.get("civility", user.civility))
            if names != (user.last_name, user.first_name, user.civility):
                user.rename(last_name=names[0], first_name=names[1], civility=names[2])
            status = changes.get("status")
            if status is not None and status != user.status:
                if status == Status.USER:
                    self.check_can_leave_administration(account_id, user)
                if user.status == Status.SUPERADMINISTRATOR:
                    self.check_not_last_superadministrator(account_id, user)
                user.change_status(status=status)
            if "email" in changes and changes["email"] != user.email:
                user.change_email(email=changes["email"])
            if "console_access" in changes and changes["console_access"] != user.console_access:
                user.change_console_access(console_access=changes["console_access"])
            if "external_ids" in changes:
                merged = {**user.external_ids, **changes["external_ids"]}
                merged = {k: v for k, v in merged.items() if v}
                if merged != user.external_ids:
                    user.change_external_ids(external_ids=merged)
            self.save(user)
            return user

        return self._run(account_id, body)

    def reset_user_password(self, account_id: UUID, login: str) -> tuple[DirectoryUser, str]:
        """A new generated password (shown once); the user's open sessions end."""
        def body() -> tuple[DirectoryUser, str]:
            user = self.get_user(account_id, login)
            password, password_hash = self.new_password()
            user.change_password(password_hash=password_hash)
            self.save(user)
            return user, password

        return self._run(account_id, body)

    @staticmethod
    def new_password() -> tuple[str, str]:
        """A generated password (14 characters, fiche 4's rules) and its argon2id hash; shared by the reset
        and the mailing of connection details (campus/mail.py)."""
        password = generate_password(14)
        return password, hash_secret(password)

    def check_not_last_superadministrator(self, account_id: UUID, user: DirectoryUser) -> None:
        if self.controllers.get_controller(account_id).state != "active":
            return
        if not self.has_superadministrator(account_id, other_than=user.id):
            raise Conflict(
                f"{user.login!r} is the only superadministrator and the controller is active; "
                "make someone else superadministrator first", code="last_superadministrator")

    def check_can_leave_administration(self, account_id: UUID, user: DirectoryUser) -> None:
        held = [p.name for p in self.plannings.list_plannings(account_id) if user.login in p.profiles[Profile.ADMINISTRATION.value]]
        if held:
            raise Conflict(
                f"{user.login!r} holds the Administration profile on {', '.join(held)}; "
                "remove it from that profile before giving the status user"
            )

    def users_named(self, account_id: UUID, logins: list[str], field: str,
                    refuse: Callable[[DirectoryUser], str | None] | None = None) -> list[DirectoryUser]:
        """The users `logins` name, each once, in order. 422 names every unknown login and every
        user `refuse` has a reason to refuse (as `field[index]`), all at once."""
        errors, users = [], []
        for index, login in enumerate(logins):
            try:
                user = self.get_user(account_id, login)
            except NotFound:
                errors.append({"field": f"{field}[{index}]", "message": f"no user with login {login!r}"})
                continue
            reason = refuse(user) if refuse else None
            if reason:
                errors.append({"field": f"{field}[{index}]", "message": reason})
            elif all(u.id != user.id for u in users):
                users.append(user)
        if errors:
            raise Invalid("; ".join(e["message"] for e in errors), errors=errors)
        return users
