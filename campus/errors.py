"""Domain and application errors. The HTTP layer maps each class to one status
in one place (:mod:`campus.api.problems`); nothing else catches them."""

from __future__ import annotations


class CampusError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, errors: list[dict] | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.code = code


class Invalid(CampusError):
    """A value breaks a rule (422)."""

    status = 422
    title = "Invalid value"

    @classmethod
    def field(cls, field: str, message: str) -> "Invalid":
        return cls(f"{field}: {message}", errors=[{"field": field, "message": message}])


class Unauthenticated(CampusError):
    status = 401
    title = "Authentication required"


class Forbidden(CampusError):
    status = 403
    title = "Forbidden"


class NotFound(CampusError):
    status = 404
    title = "Not found"


class Conflict(CampusError):
    status = 409
    title = "Conflict"


class PreconditionFailed(CampusError):
    status = 412
    title = "Precondition failed"


class TooManyRequests(CampusError):
    """Refused for a while (429); `retry_after` seconds become the Retry-After header."""

    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = max(1, int(retry_after))
        self.headers = {"Retry-After": str(self.retry_after)}


class TooLarge(CampusError):
    status = 413
    title = "Request body too large"


class Malformed(CampusError):
    status = 400
    title = "Malformed request"


class StoreUnavailable(CampusError):
    """The store refused or could not take the command (503): unreachable, busy, full, or an error of
    the database. Nothing of the command was kept; `retry_after` seconds become the Retry-After header."""

    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1, code: str | None = "store_unavailable") -> None:
        super().__init__(detail, code=code)
        self.retry_after = max(1, int(retry_after))
        self.headers = {"Retry-After": str(self.retry_after)}
