"""Plannings: names, domains, time zones, licences, profile assignments (Campus fiches 3, 4 and 8)."""

from __future__ import annotations

from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from campus.aggregates.account import HostingAccount
from campus.aggregates.core import CampusAggregate
from campus.aggregates.planning import FIRST_PLANNING_PORT, Planning, Profile
from campus.aggregates.user import DirectoryUser
from campus.errors import Conflict, Invalid, NotFound
from campus.rules.text import required_text
from campus.services.base import Service




def validate_time_zone(name: Any) -> None:
    if not isinstance(name, str) or name not in _time_zones():
        raise Invalid.field("time_zone", f"{name!r} is not an IANA time zone name (for example Europe/Paris)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # pragma: no cover - listed but unreadable
        raise Invalid.field("time_zone", f"{name!r} is not an IANA time zone name") from None


_TZ_CACHE: set[str] = set()


def _time_zones() -> set[str]:
    if not _TZ_CACHE:
        _TZ_CACHE.update(available_timezones())
    return _TZ_CACHE


class Plannings(Service):
    """Plannings: names, domains, time zones, licences, profile assignments (Campus fiches 3, 4 and 8)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "controllers", "users")

    def list_plannings(self, account_id: UUID) -> list[Planning]:
        account = self.accounts.get_account(account_id)
        return [self._get(Planning, pid, account_id, "planning") for pid in account.planning_ids]

    def get_planning(self, account_id: UUID, planning_id: UUID, *, read_only: bool = False) -> Planning:
        return self._get(Planning, planning_id, account_id, "planning", read_only=read_only)

    def get_planning_by_text(self, account_id: UUID, planning_id: str) -> Planning:
        try:
            return self.get_planning(account_id, UUID(planning_id))
        except ValueError:
            raise NotFound("planning not found") from None

    def update_planning(
        self, account_id: UUID, planning_id: UUID, changes: dict[str, Any], if_match: str | None = None
    ) -> Planning:
        if "time_zone" in changes:
            validate_time_zone(changes["time_zone"])
        domain = self.controllers.domain("domain", changes["domain"]) if changes.get("domain") else None
        if "name" in changes:
            changes["name"] = required_text("name", changes["name"], 64)
        if changes.get("publication_name") is not None:
            changes["publication_name"] = required_text("publication_name", changes["publication_name"], 64)

        def body() -> Planning:
            planning = self.get_planning(account_id, planning_id)
            self._check_version(planning, if_match)
            extra: list[CampusAggregate] = []
            if "name" in changes and changes["name"] != planning.name:
                others = [p for p in self.list_plannings(account_id) if p.id != planning.id]
                if any(p.name.casefold() == changes["name"].casefold() for p in others):
                    raise Conflict(f"another planning is already named {changes['name']!r}")
                planning.rename(name=changes["name"])
            if "publication_name" in changes and changes["publication_name"] != planning.custom_publication_name:
                planning.change_publication_name(publication_name=changes["publication_name"])
            if "net_licence" in changes and changes["net_licence"] != planning.net_licence:
                planning.switch_net_licence(enabled=changes["net_licence"])
                if not changes["net_licence"] and planning.publication_state == "published":
                    planning.stop_publication()  # without the .net licence nothing may stay published
            if "time_zone" in changes and changes["time_zone"] != planning.time_zone:
                planning.change_time_zone(time_zone=changes["time_zone"])
            if domain and domain[1] != planning.domain:
                extra = self.controllers.claim_domain(domain[1], account_id, planning.id, planning.domain)
                planning.bind_domain(label=domain[0], domain=domain[1], port=FIRST_PLANNING_PORT + planning.number - 1)
            self.save(planning, *extra)
            return planning

        return self._run(account_id, body)

    def assign_profile(
        self, account_id: UUID, planning_id: UUID, profile: Profile, logins: list[str], if_match: str | None = None
    ) -> Planning:
        def body() -> Planning:
            planning = self.get_planning(account_id, planning_id)
            self._check_version(planning, if_match)
            assigned = self._resolve_assignable(account_id, profile, logins, "logins")
            profiles = {p: tuple(l for l in ls if l not in assigned) for p, ls in planning.profiles.items()}
            profiles[profile.value] = tuple(assigned)
            if profiles != planning.profiles:
                planning.assign_profiles(profiles=profiles)
                self.save(planning)
            return planning

        return self._run(account_id, body)

    def _resolve_assignable(self, account_id: UUID, profile: Profile, logins: list[str], field: str) -> list[str]:
        """Stored logins for `logins`, checking each exists and may hold `profile`."""

        def may_hold(user: DirectoryUser) -> str | None:
            if profile == Profile.ADMINISTRATION and not user.is_administrative:
                return (f"{user.login!r} has status {user.status.value}: the Administration profile "
                        "is only for superadministrators and base administrators")
            return None

        return [user.login for user in self.users.users_named(account_id, logins, field, may_hold)]

    def save_assignment_template(self, account_id: UUID, name: str, planning_id: UUID) -> HostingAccount:
        name = required_text("name", name, 64)

        def body() -> HostingAccount:
            planning = self.get_planning(account_id, planning_id)
            account = self.accounts.get_account(account_id)
            account.save_assignment_template(name=name, assignments=dict(planning.profiles), source_planning_id=planning.id)
            self.save(account)
            return account

        return self._run(account_id, body)

    def apply_assignment_template(
        self, account_id: UUID, planning_id: UUID, name: str, if_match: str | None = None
    ) -> Planning:
        def body() -> Planning:
            account = self.accounts.get_account(account_id)
            if name not in account.assignment_templates:
                raise NotFound(f"no assignment template named {name!r}")
            planning = self.get_planning(account_id, planning_id)
            self._check_version(planning, if_match)
            template = account.assignment_templates[name]["assignments"]
            profiles = {
                p.value: tuple(self._resolve_assignable(account_id, p, list(template.get(p.value, ())), p.value))
                for p in Profile
            }
            planning.assign_profiles(profiles=profiles, template=name)
            self.save(planning)
            return planning

        return self._run(account_id, body)
