"""The users file (the ``.profils`` of hosting guide fiche 7): its format, pure, no input/output.

A JSON document ``{"format": "campus-users", "version": 1, "establishment", "exported_at", "users":
[...], "assignments": {planning name: {profile: [login, ...]}}, "sha256"}``: the directory users with
their password hashes (never their passwords) and the profiles they hold on each planning, its
SHA-256 over the canonical JSON of the rest. :func:`parse_users_file` checks a whole file, each user
against the model of one entry the caller gives (:class:`campus.services.exchange.UserEntry`, which
carries the aggregates' statuses); the use cases are in :mod:`campus.services.exchange`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from campus.rules.export_format import FormatError
from campus.rules.transfer import MAX_TRANSFER_ERRORS

USERS_FORMAT = "campus-users"
USERS_VERSION = 1
E = TypeVar("E", bound=BaseModel)


def users_file_digest(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of everything but ``sha256``."""
    content = {k: v for k, v in document.items() if k != "sha256"}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def parse_users_file(raw: bytes, entry_model: type[E], profiles: Sequence[str]
                     ) -> tuple[list[E], dict[str, dict[str, list[str]]]]:
    """The checked entries (each an `entry_model`, which has a ``login``) and assignments (by planning
    name, then by one of `profiles`) of a users file; FormatError (422) otherwise."""
    def refuse(where: str, message: str, code: str) -> FormatError:
        return FormatError(f"{where}: {message}", errors=[{"field": where, "message": message}], code=code)

    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise refuse("file", f"not JSON ({exc.msg}): this is not a {USERS_FORMAT} file", "not_a_users_file") from None
    if not isinstance(document, dict) or document.get("format") != USERS_FORMAT:
        fmt = document.get("format") if isinstance(document, dict) else None
        what = f"a {fmt!r} file" if isinstance(fmt, str) else "a file without a format name"
        raise refuse("format", f"this is {what}, not a {USERS_FORMAT!r} file", "not_a_users_file")
    version = document.get("version")
    if version != USERS_VERSION or isinstance(version, bool):
        raise refuse("version", f"version {version!r} of the {USERS_FORMAT} format is not supported; this server "
                     f"reads version {USERS_VERSION}", "unsupported_version")
    declared = document.get("sha256")
    if not isinstance(declared, str):
        raise refuse("sha256", "missing: the file must carry its SHA-256", "checksum_mismatch")
    if users_file_digest(document) != declared:
        raise refuse("sha256", "does not match the file's content: the file was altered or damaged",
                     "checksum_mismatch")
    errors: list[dict] = []
    users = document.get("users")
    entries: list[E] = []
    if not isinstance(users, list):
        errors.append({"field": "users", "message": "must be a list"})
        users = []
    seen: dict[str, int] = {}
    for index, item in enumerate(users):
        try:
            entry = entry_model.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                loc = ".".join(str(p) for p in err["loc"])
                errors.append({"field": f"users[{index}]" + (f".{loc}" if loc else ""),
                               "message": err["msg"].removeprefix("Value error, ")})
            continue
        key = entry.login.casefold()
        if key in seen:
            errors.append({"field": f"users[{index}].login",
                           "message": f"{entry.login!r} is already users[{seen[key]}] (logins ignore case)"})
            continue
        seen[key] = index
        entries.append(entry)
    assignments = document.get("assignments", {})
    if not isinstance(assignments, dict):
        errors.append({"field": "assignments", "message": "must map planning names to profiles"})
        assignments = {}
    for planning_name, by_profile in assignments.items():
        where = f"assignments.{planning_name}"
        if not isinstance(by_profile, dict):
            errors.append({"field": where, "message": f"must map profiles ({', '.join(profiles)}) to logins"})
            continue
        for profile, logins in by_profile.items():
            if profile not in profiles:
                errors.append({"field": f"{where}.{profile}", "message": f"unknown profile; use {', '.join(profiles)}"})
            elif not isinstance(logins, list) or not all(isinstance(x, str) for x in logins):
                errors.append({"field": f"{where}.{profile}", "message": "must be a list of logins"})
    if errors:
        shown = errors[:MAX_TRANSFER_ERRORS]
        raise FormatError("the users file cannot be imported: " + "; ".join(f"{e['field']}: {e['message']}"
                                                                            for e in shown),
                          errors=shown, code="invalid_users_file")
    return entries, assignments
