"""Failed authentications per client address, and suspended addresses (hosting guide fiche 11).

Every login path of campus (the hosting manager's console, a directory user's
password, a user's PIN, the invoice number of a first console login, a mail
account's secret answer) calls :meth:`LoginGuard.refuse_if_suspended`
before anything else, then checks each secret with
:meth:`LoginGuard.check_secret`. The operator's bearer token goes through
:meth:`LoginGuard.authenticate_operator`.

**An attempt is counted before its secret is checked.** ``check_secret`` first
adds one to the attempts in flight of its scopes and reads the counters back:
once the failures reach the limit, the attempt is taken back and the answer is
429, the secret unchecked; while failures and attempts in flight together exceed
it, the attempt waits (at most :data:`IN_FLIGHT_WAIT_SECONDS`) for the others to
end. Then the secret is checked: right, the attempt is taken back; wrong, it
becomes a failure. So however many attempts arrive at once, on however many
servers, at most the limit's worth of secrets are checked per window — and
correct logins arriving together from one address (a school behind one NAT at
8:00) are never refused for it, only queued for a moment.

**Counting.** A failure is not an event: it adds one to a counter of
``campus_login_failures`` (:class:`LoginFailures`, a table beside the events) for
its *scope* and client address, in the bucket of the window it falls in
(``failures = failures + 1``, one atomic upsert, so several servers on one
database count together). Buckets older than the window are deleted, so the table
stays small whatever an attacker does. The scopes:

- the school (the login's tenant; for a hosting number that opens no account, the
  id that account would have, so an unknown number and a wrong password behave
  alike): at ``login_failures_max`` failures within ``login_failures_window_minutes``
  the address is **suspended** for that school (``ClientAddress.Suspended``, an
  event: an action the school sees in its history and can undo with
  ``ClientAddress.Unblocked``), for ``login_suspension_minutes``; failures before a
  suspension never count after it;
- every console login, whatever hosting number is tried (:data:`CONSOLE_SCOPE`): at
  ``console_login_failures_max`` failures within the window, console logins from
  that address are refused (429) until enough of them leave the window — an
  address trying random hosting numbers is stopped although no school sees it;
- the operator's token (:data:`OPERATOR_SCOPE`): at ``login_failures_max`` failures
  within the window, operator authentications from that address are refused (429).

The two deployment-wide scopes are rate limits read from the counters alone: no
school owns them, so they write no event (a log line says when one is reached).

The address is the one :mod:`campus.api.middleware` resolved (the socket, or the
right-most untrusted ``X-Forwarded-For`` hop behind a trusted proxy). A success
does not reset any count: otherwise one valid account would let an address try
the passwords of all the others.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any, NoReturn
from uuid import UUID

import structlog
from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.address import (
    ClientAddress,
    SuspensionDay,
    client_address_id_for,
    suspension_day_id_for,
)
from campus.errors import (
    CampusError,
    Invalid,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)
from campus.infra.context import current_context
from campus.infra.settings import MIN_OPERATOR_TOKEN_LENGTH
from campus.projections.tables import StoreTables
from campus.rules.security import verify_secret
from campus.services.base import Core, Service


log = structlog.get_logger("campus.security")

UNKNOWN_ADDRESS = "unknown"  # no socket address (the service layer called directly)
CONSOLE_SCOPE = "console"  # every console login of the deployment, whatever the hosting number
OPERATOR_SCOPE = "operator"  # the operator's bearer token
BUCKETS_PER_WINDOW = 15  # a window is counted in this many buckets (one minute each by default)
IN_FLIGHT_WAIT_SECONDS = 5.0  # an attempt waits this long at most for others in flight from its address
IN_FLIGHT_PAUSE_SECONDS = 0.05


class FailureKind:
    """What was being checked when an authentication failed."""

    CONSOLE_PASSWORD = "console_password"
    INVOICE_NUMBER = "invoice_number"
    PASSWORD = "password"
    PIN = "pin"
    SECRET_ANSWER = "secret_answer"  # a mail account's secret question
    OPERATOR_TOKEN = "operator_token"


CONSOLE_KINDS = frozenset({FailureKind.CONSOLE_PASSWORD, FailureKind.INVOICE_NUMBER})


def current_address() -> str:
    return current_context().client_address or UNKNOWN_ADDRESS


def _iso(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


class LoginFailures(StoreTables):
    """``campus_login_failures(scope, address, bucket_start, failures)``: failed authentications per
    scope, client address and bucket of the counting window (bucket_start in seconds since the epoch).

    A failure is one upsert; the count is the sum of the buckets that started within the window (so
    the window is counted to within one bucket: a failure leaves it between ``window - bucket`` and
    ``window`` after it happened). Expired buckets are deleted, the address's own at each failure and
    everyone's at most once a bucket, so the table holds at most ``BUCKETS_PER_WINDOW + 1`` rows per
    scope and address that failed within the last window.
    """

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.name = self.table("campus_login_failures")
        self.window = core.settings.login_failures_window_minutes * 60
        self.bucket = max(1, self.window // BUCKETS_PER_WINDOW)
        self._swept_at = -math.inf
        statements = (
            f"CREATE TABLE IF NOT EXISTS {self.name} (scope TEXT NOT NULL, address TEXT NOT NULL,"
            f" bucket_start {self.big} NOT NULL, failures {self.big} NOT NULL,"
            f" pending {self.big} NOT NULL DEFAULT 0,"
            " PRIMARY KEY (scope, address, bucket_start))",
            f"CREATE INDEX IF NOT EXISTS campus_login_failures_by_bucket ON {self.name} (bucket_start)",
        )
        # Made at start-up, in the section one server at a time runs (servers starting together).
        with self.datastore.transaction(commit=True) as curs:
            for statement in statements:
                curs.execute(statement)

    def _seconds(self, now: datetime) -> int:
        return math.floor(now.timestamp())

    def bucket_of(self, instant: datetime) -> int:
        seconds = self._seconds(instant)
        return seconds - seconds % self.bucket

    def _horizon(self, now: datetime, since: int | None) -> int:
        """Buckets that started after this count: those of the window, none before `since`'s bucket."""
        horizon = self._seconds(now) - self.window
        return horizon if since is None else max(horizon, since - 1)

    def add(self, scopes: list[str], address: str, now: datetime) -> list[int]:
        """One more failure of `address` in each of `scopes`; the failures of each within the window."""
        _, _, bucket = self.reserve(scopes, address, now)
        return self.fail(scopes, address, bucket, now)

    def reserve(self, scopes: list[str], address: str, now: datetime,
                since: Mapping[str, int] | None = None) -> tuple[list[int], list[int], int]:
        """An attempt of `address` in each of `scopes`, in flight until :meth:`release` (it was right) or
        :meth:`fail` (it was a failure). Returns, per scope, the failures and the attempts in flight (this
        one included) within the window, and the bucket it counted in. `since`: per scope, count no bucket
        older than this one (the end of the address's last suspension)."""
        seconds = self._seconds(now)
        start, expired = self.bucket_of(now), seconds - self.window
        failures, pending = [], []
        with self.datastore.transaction(commit=True) as curs:
            for scope in scopes:
                curs.execute(self._sql(
                    f"INSERT INTO {self.name} AS f (scope, address, bucket_start, failures, pending)"
                    " VALUES (?, ?, ?, 0, 1)"
                    " ON CONFLICT (scope, address, bucket_start) DO UPDATE SET pending = f.pending + 1"),
                    (scope, address, start))
                curs.execute(self._sql(f"DELETE FROM {self.name} WHERE scope = ? AND address = ?"
                                       " AND bucket_start <= ?"), (scope, address, expired))
                curs.execute(self._sql(
                    f"SELECT COALESCE(SUM(failures), 0) AS n, COALESCE(SUM(pending), 0) AS p FROM {self.name}"
                    " WHERE scope = ? AND address = ? AND bucket_start > ?"),
                    (scope, address, self._horizon(now, (since or {}).get(scope))))
                row = curs.fetchone()
                failures.append(int(row["n"]))
                pending.append(int(row["p"]))
        if seconds - self._swept_at >= self.bucket:
            self._swept_at = seconds
            with self.datastore.transaction(commit=True) as curs:
                curs.execute(self._sql(f"DELETE FROM {self.name} WHERE bucket_start <= ?"), (expired,))
        return failures, pending, start

    def release(self, scopes: list[str], address: str, bucket_start: int) -> None:
        """An attempt :meth:`reserve` counted is over and was not a failure; a counter back at zero is
        deleted (a successful login leaves no row)."""
        with self.datastore.transaction(commit=True) as curs:
            for scope in scopes:
                key = (scope, address, bucket_start)
                curs.execute(self._sql(f"UPDATE {self.name} SET pending = pending - 1 WHERE scope = ?"
                                       " AND address = ? AND bucket_start = ? AND pending > 0"), key)
                curs.execute(self._sql(f"DELETE FROM {self.name} WHERE scope = ? AND address = ?"
                                       " AND bucket_start = ? AND failures <= 0 AND pending <= 0"), key)

    def fail(self, scopes: list[str], address: str, bucket_start: int, now: datetime,
             since: Mapping[str, int] | None = None) -> list[int]:
        """An attempt :meth:`reserve` counted was a failure; the failures of each scope within the window."""
        counts = []
        with self.datastore.transaction(commit=True) as curs:
            for scope in scopes:
                curs.execute(self._sql(
                    f"UPDATE {self.name} SET pending = pending - 1, failures = failures + 1 WHERE scope = ?"
                    " AND address = ? AND bucket_start = ?"), (scope, address, bucket_start))
                curs.execute(self._sql(f"SELECT COALESCE(SUM(failures), 0) AS n FROM {self.name}"
                                       " WHERE scope = ? AND address = ? AND bucket_start > ?"),
                             (scope, address, self._horizon(now, (since or {}).get(scope))))
                counts.append(int(curs.fetchone()["n"]))
        return counts

    def buckets(self, scope: str, address: str, now: datetime, since: int | None = None) -> list[tuple[int, int]]:
        """(bucket_start, failures) of `address` in `scope` within the window, oldest first."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._sql(f"SELECT bucket_start, failures FROM {self.name} WHERE scope = ?"
                                   " AND address = ? AND bucket_start > ? ORDER BY bucket_start"),
                         (scope, address, self._horizon(now, since)))
            return [(int(r["bucket_start"]), int(r["failures"])) for r in curs.fetchall()]

    def blocked_for(self, scope: str, address: str, now: datetime, limit: int, since: int | None = None) -> int | None:
        """Seconds until `address` has fewer than `limit` failures in `scope`'s window; None if it has."""
        buckets = self.buckets(scope, address, now, since)
        total = sum(n for _, n in buckets)
        if total < limit:
            return None
        for start, failures in buckets:  # the oldest buckets leave the window first
            total -= failures
            if total < limit:
                return max(1, math.ceil(start + self.window - now.timestamp()))
        return 1  # pragma: no cover - the loop always gets below the limit

    def forget(self, scope: str, address: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._sql(f"DELETE FROM {self.name} WHERE scope = ? AND address = ?"), (scope, address))


class LoginGuard(Service):
    """Failed authentications counted per address, suspensions and unblocking (hosting guide fiche 11)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "outbox")

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.login_failures = LoginFailures(core)  # its table is made here, at start-up

    def refuse_if_suspended(self, tenant: UUID, *, console: bool = False) -> None:
        """429 if the caller's address is suspended for `tenant`'s logins, or (`console`) has failed too
        many console logins of any school. Checked before anything else (no secret is checked)."""
        address = current_address()
        now = self.now()
        watch = self._client_address(tenant, address)
        if watch is not None and watch.is_suspended(now):
            raise self._suspended_error(watch, now)
        guard = self.login_failures
        # At the limit but not (yet) suspended: another server is recording the suspension, or could not.
        seconds = guard.blocked_for(str(tenant), address, now, self.settings.login_failures_max,
                                    self._since_suspension(watch))
        if seconds is not None:
            raise self._rate_limited_error("logins to this school", address, now, seconds)
        if console:
            seconds = guard.blocked_for(CONSOLE_SCOPE, address, now, self.settings.console_login_failures_max)
            if seconds is not None:
                raise self._rate_limited_error("console logins", address, now, seconds)

    def check_secret(self, tenant: UUID, stored_hash: str | None, secret: str, kind: str,
                     login: str | None, refusal: CampusError) -> None:
        """Verify `secret` against `stored_hash` (None: an unknown account, checked against a dummy hash all the
        same) as one attempt of the caller's address: counted before the check (429, unchecked, past a limit),
        taken back if right; if wrong, it is a failure: the address is suspended at the limit (429) or `refusal`
        is raised. Call it outside any command: the count must stay whatever a command does."""
        self._attempt(tenant, kind, login, refusal, lambda: verify_secret(stored_hash, secret))

    def authentication_failed(self, tenant: UUID, kind: str, login: str | None,
                              refusal: CampusError) -> NoReturn:
        """Count a failure found without :meth:`check_secret`, suspend the address at the limit, then raise
        `refusal` (or 429 if this very failure reached a limit)."""
        self._attempt(tenant, kind, login, refusal, lambda: False)
        raise AssertionError("unreachable")  # pragma: no cover

    def authenticate_operator(self, token: str) -> None:
        """The operator's bearer token, counted per address like a login: 429 once an address failed
        ``login_failures_max`` times within the window (even with the right token, until they age out)."""
        configured = self.settings.operator_token or ""
        # (a configured token too short to be a secret opens nothing; `campus serve` refuses to start with it)
        self._attempt(None, FailureKind.OPERATOR_TOKEN, None,
                      Unauthenticated("the operator token is wrong", code="invalid_token"),
                      lambda: len(configured) >= MIN_OPERATOR_TOKEN_LENGTH and self.accounts.check_operator_token(token))

    def _attempt(self, tenant: UUID | None, kind: str, login: str | None, refusal: CampusError,
                 check: Callable[[], bool]) -> None:
        """Reserve the attempt in its scopes, refuse past a limit, run `check`, keep the reservation as a failure.

        A school's count starts again after a suspension of the address: failures before it never count after
        it (``since``). The counters are not cleared when a suspension is recorded, so attempts that raced it
        find the count past the limit and are refused unchecked."""
        address = current_address()
        settings = self.settings
        now = self.now()
        since: dict[str, int] = {}
        if tenant is None:
            scopes, limits = [OPERATOR_SCOPE], [settings.login_failures_max]
        else:
            watch = self._client_address(tenant, address)
            if watch is not None and watch.is_suspended(now):
                raise self._suspended_error(watch, now)
            if (floor := self._since_suspension(watch)) is not None:
                since[str(tenant)] = floor
            scopes, limits = [str(tenant)], [settings.login_failures_max]
            if kind in CONSOLE_KINDS:
                scopes.append(CONSOLE_SCOPE)
                limits.append(settings.console_login_failures_max)
        guard = self.login_failures
        # Attempts in flight count against the limit with the failures, so however many arrive at once, on
        # however many servers, at most the limit's worth of secrets are checked; but an attempt refused
        # only because others are in flight waits for them (a school behind one address logging in at
        # 8:00) instead of being refused, and is refused only once the failures reach the limit.
        crowded_until = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
        while True:
            failures, pending, bucket = guard.reserve(scopes, address, now, since)
            full = [i for i, (count, limit) in enumerate(zip(failures, limits)) if count >= limit]
            crowded = [i for i, (count, busy, limit) in enumerate(zip(failures, pending, limits))
                       if count + busy > limit]
            if not full and not crowded:
                break
            guard.release(scopes, address, bucket)
            if full or time.monotonic() >= crowded_until:
                over = (full or crowded)[0]
                raise self._over_limit_error(tenant, scopes[over], address, now, limits[over], since.get(scopes[over]))
            time.sleep(IN_FLIGHT_PAUSE_SECONDS)
        try:
            right = check()
        except BaseException:
            guard.release(scopes, address, bucket)
            raise
        if right:
            guard.release(scopes, address, bucket)
            return
        counts = guard.fail(scopes, address, bucket, now, since)
        log.info("authentication_failed", kind=kind, failures=counts[0])
        if tenant is not None and counts[0] >= limits[0]:
            self._suspend(tenant, address, counts[0])
        for scope, count, limit in zip(scopes, counts, limits):
            if scope in (CONSOLE_SCOPE, OPERATOR_SCOPE) and count >= limit:
                log.warning("login_rate_limited", scope=scope, address=address, failures=count)
                raise self._over_limit_error(tenant, scope, address, now, limit) from None
        raise refusal

    def _since_suspension(self, watch: ClientAddress | None) -> int | None:
        """The first bucket a school's count may read: the one its address's last suspension ended in."""
        if watch is None or watch.suspended_until is None:
            return None
        return self.login_failures.bucket_of(watch.suspended_until)

    def _over_limit_error(self, tenant: UUID | None, scope: str, address: str, now: datetime,
                          limit: int, since: int | None = None) -> TooManyRequests:
        if scope in (OPERATOR_SCOPE, CONSOLE_SCOPE):
            what = "operator authentications" if scope == OPERATOR_SCOPE else "console logins"
            seconds = self.login_failures.blocked_for(scope, address, now, limit)
            return self._rate_limited_error(what, address, now, seconds or 1)
        assert tenant is not None
        watch = self._client_address(tenant, address)
        if watch is not None and watch.is_suspended(now):
            return self._suspended_error(watch, now)
        # The suspension is being recorded by the attempt that reached the limit (or recording it failed).
        seconds = self.login_failures.blocked_for(scope, address, now, limit, since)
        return self._rate_limited_error("logins to this school", address, now,
                                        seconds or self.settings.login_suspension_minutes * 60)

    def _suspend(self, tenant: UUID, address: str, failures: int) -> NoReturn:
        """Suspend `address` for `tenant`'s logins (an event, unless it already is), then raise 429. The
        failures before it stop counting (see :meth:`_since_suspension`)."""
        settings = self.settings

        def body() -> tuple[ClientAddress, datetime, bool]:
            now = self.now()
            watch = self._client_address(tenant, address) or ClientAddress(account_id=tenant, address=address)
            if watch.is_suspended(now):  # another server suspended it a moment ago
                return watch, now, False
            watch.suspend(suspended_at=now, until=now + timedelta(minutes=settings.login_suspension_minutes),
                          failures=failures)
            day = self._suspension_day(tenant, now.date()) or SuspensionDay(account_id=tenant, day=now.date())
            day.note(address=address)
            self.save(watch, day)
            return watch, now, True

        watch, now, new = self._run(tenant, body)
        if new and tenant in self.repository:  # a real school (not an unknown hosting number's)
            self.outbox.notify_manager(
                tenant, "security", f"address {address} suspended after failed logins",
                f"{failures} failed authentications came from {address} within "
                f"{settings.login_failures_window_minutes} minutes: its logins to your school are "
                f"suspended until {_iso(watch.suspended_until or now)}.\n"
                "Unblock it from the console (Security > suspended addresses) if it is one of yours.")
        raise self._suspended_error(watch, now) from None

    def list_suspended_addresses(self, account_id: UUID) -> list[ClientAddress]:
        """The addresses suspended now for this school, oldest suspension first."""
        now = self.now()
        horizon = now - timedelta(minutes=self.settings.login_suspension_minutes)
        addresses: list[str] = []
        day = horizon.date()
        while day <= now.date():
            index = self._suspension_day(account_id, day)
            addresses += [a for a in (index.addresses if index else ()) if a not in addresses]
            day += timedelta(days=1)
        watches = [w for w in (self._client_address(account_id, a) for a in addresses) if w and w.is_suspended(now)]
        return sorted(watches, key=lambda w: w.suspended_at or now)

    def unblock_address(self, account_id: UUID, address: str) -> ClientAddress:
        """Lift a suspension at once (an event) and forget the address's failures; 404 if it is not suspended."""
        try:
            parsed = ipaddress.ip_address(address.strip())
        except ValueError:
            raise Invalid.field("address", f"{address!r} is not an IPv4 or IPv6 address") from None
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        canonical = str(parsed)

        def body() -> ClientAddress:
            watch = self._client_address(account_id, canonical)
            if watch is None or not watch.is_suspended(self.now()):
                raise NotFound(f"the address {canonical} is not suspended")
            assert watch.suspended_until is not None
            watch.unblock(lifted_until=watch.suspended_until)
            self.save(watch)
            return watch

        watch = self._run(account_id, body)
        self.login_failures.forget(str(account_id), canonical)
        return watch

    def _client_address(self, tenant: UUID, address: str) -> ClientAddress | None:
        try:
            watch = self.repository.get(client_address_id_for(tenant, address))
        except AggregateNotFoundError:
            return None
        return watch if isinstance(watch, ClientAddress) and watch.account_id == tenant else None

    def _suspension_day(self, tenant: UUID, day: date) -> SuspensionDay | None:
        try:
            index = self.repository.get(suspension_day_id_for(tenant, day))
        except AggregateNotFoundError:
            return None
        return index if isinstance(index, SuspensionDay) and index.account_id == tenant else None

    @staticmethod
    def _suspended_error(watch: ClientAddress, now: datetime) -> TooManyRequests:
        assert watch.suspended_until is not None
        seconds = max(1, math.ceil((watch.suspended_until - now).total_seconds()))
        return TooManyRequests(
            f"too many failed authentications from {watch.address}: logins to this school from this "
            f"address are suspended until {_iso(watch.suspended_until)} (retry in {seconds} s); "
            "an administrator can unblock it in the console's security settings",
            retry_after=seconds, code="address_suspended")

    @staticmethod
    def _rate_limited_error(what: str, address: str, now: datetime, seconds: int) -> TooManyRequests:
        until = now + timedelta(seconds=seconds)
        return TooManyRequests(
            f"too many failed authentications from {address}: {what} from this address are refused "
            f"until {_iso(until)} (retry in {seconds} s)", retry_after=seconds, code="address_suspended")


__all__: list[Any] = ["CONSOLE_SCOPE", "OPERATOR_SCOPE", "FailureKind", "LoginFailures", "LoginGuard",
                      "current_address"]
