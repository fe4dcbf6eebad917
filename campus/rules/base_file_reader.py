"""Reading a campus-base file (docs/EXPORT_FORMAT.md; hosting guide fiche 7: a base loaded, and
saves and archives read back): it reads only the stream it is given (no path, no store, no HTTP).

:func:`read_base_file` reads a binary file object in one pass and checks everything, raising
:class:`~campus.rules.export_format.FormatError` (a 422 :class:`campus.errors.Invalid`) naming the first
problems found; :func:`read_header` checks the header alone. The format itself, and writing it, are in
:mod:`campus.rules.export_format`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import date, datetime
from typing import IO, Any
from uuid import UUID

import orjson

from campus.errors import Invalid
from campus.rules.export_format import (
    FORMAT,
    MAX_ANNEX_BYTES,
    SUPPORTED_VERSIONS,
    Annex,
    BaseFile,
    FormatError,
    validate_annex_name,
    validate_connection_modes,
    validate_content_type,
)
from campus.rules.grid import make_grid
from campus.rules.records import KINDS, validate_fields

MAX_HEADER_BYTES = 1024 * 1024
# An annex line holds up to 10 MiB as base64 (4/3) plus its JSON keys.
MAX_LINE_BYTES = MAX_ANNEX_BYTES * 4 // 3 + 64 * 1024
MAX_REPORTED = 20  # problems listed in one refusal
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def _problem(field_name: str, message: str, code: str) -> FormatError:
    return FormatError(f"{field_name}: {message}", errors=[{"field": field_name, "message": message}], code=code)


# -- reading --------------------------------------------------------------------------------
def read_header(stream: IO[bytes]) -> dict[str, Any]:
    """The checked header (format, version, fields), leaving ``stream`` at the body."""
    line = stream.readline(MAX_HEADER_BYTES + 1)
    if not line:
        raise _problem("header", "the file is empty; a campus-base file starts with a JSON header line",
                       "not_a_campus_file")
    if not line.endswith(b"\n"):
        if len(line) > MAX_HEADER_BYTES:
            raise _problem("header", f"the first line is longer than {MAX_HEADER_BYTES} bytes: "
                           "this is not a campus-base file", "not_a_campus_file")
        raise _problem("header", "the file ends inside its header line (truncated?)", "truncated")
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _problem("header", f"the first line is not JSON ({exc.msg}): this is not a campus-base file",
                       "not_a_campus_file") from None
    if not isinstance(header, dict):
        raise _problem("header", "the first line is not a JSON object: this is not a campus-base file",
                       "not_a_campus_file")
    fmt = header.get("format")
    if fmt != FORMAT:
        what = f"a {fmt!r} file" if isinstance(fmt, str) else "a file without a format name"
        raise _problem("header.format", f"this is {what}, not a {FORMAT!r} file", "not_a_campus_file")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _problem("header.version", "must be an integer", "unsupported_version")
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise _problem("header.version", f"version {version} of the {FORMAT} format is not supported; "
                       f"this server reads version {supported}", "unsupported_version")
    errors: list[dict] = []

    def need(path: str, ok: bool, message: str) -> None:
        if not ok:
            errors.append({"field": f"header.{path}", "message": message})

    base = header.get("base")
    need("base", isinstance(base, dict), "must be an object")
    base = base if isinstance(base, dict) else {}
    need("base.id", _is_uuid(base.get("id")), "must be a UUID")
    need("base.name", isinstance(base.get("name"), str) and 1 <= len(base["name"].strip()) <= 100,
         "must be a name of 1 to 100 characters")
    need("base.origin", isinstance(base.get("origin"), str), "must be a string")
    need("base.created_at", _is_instant(base.get("created_at")), "must be an ISO 8601 instant with an offset")
    need("base.last_entry_at", base.get("last_entry_at") is None or _is_instant(base.get("last_entry_at")),
         "must be null or an ISO 8601 instant with an offset")
    need("grid", isinstance(header.get("grid"), dict), "must be an object")
    counts = header.get("counts")
    need("counts", isinstance(counts, dict) and all(k in KINDS and _is_count(v) for k, v in counts.items()),
         f"must map record kinds ({', '.join(KINDS)}) to counts")
    need("annexes", _is_count(header.get("annexes")), "must be a count")
    need("exported_at", header.get("exported_at") is None or _is_instant(header.get("exported_at")),
         "must be null or an ISO 8601 instant with an offset")
    need("position", _is_count(header.get("position")), "must be a count (the base's version)")
    need("body_sha256", isinstance(header.get("body_sha256"), str) and bool(SHA256_HEX.match(header["body_sha256"])),
         "must be 64 lowercase hexadecimal digits")
    need("body_bytes", _is_count(header.get("body_bytes")), "must be a count of bytes")
    if errors:
        raise FormatError("the header is not valid: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                          errors=errors, code="invalid_header")
    _grid(header["grid"])
    return header


def _grid(data: dict) -> dict[str, Any]:
    errors = []
    values: dict[str, Any] = {}
    for name in ("first_monday", "last_sunday"):
        try:
            values[name] = date.fromisoformat(data.get(name))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            errors.append({"field": f"header.grid.{name}", "message": "must be an ISO 8601 date"})
    days = data.get("working_days")
    if not isinstance(days, list) or not all(isinstance(d, str) for d in days):
        errors.append({"field": "header.grid.working_days", "message": "must be a list of days (mon…sun)"})
    for name in ("sequences_per_day", "sequence_minutes", "split"):
        if not _is_count(data.get(name)):
            errors.append({"field": f"header.grid.{name}", "message": "must be a whole number"})
    if errors:
        raise FormatError("the header's grid is not valid: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                          errors=errors, code="invalid_header")
    try:
        return make_grid(values["first_monday"], values["last_sunday"], days, data["sequences_per_day"],
                         data["sequence_minutes"], data["split"])
    except Invalid as exc:
        errors = [{"field": f"header.grid.{e['field']}", "message": e["message"]} for e in exc.errors]
        raise FormatError("the header's grid breaks a rule: " + "; ".join(f"{e['field']}: {e['message']}"
                                                                           for e in errors),
                          errors=errors, code="invalid_header") from None


def read_base_file(stream: IO[bytes], *, max_line_bytes: int = MAX_LINE_BYTES) -> BaseFile:
    """Read and check a whole campus-base file from a binary stream (one pass).

    Checked: the header; the body's size and SHA-256 against the header
    (truncation and alteration are reported before anything else, since they
    explain every other problem); every line's shape, kind and fields (through
    :func:`campus.rules.records.validate_fields`, which gives back the exact Python
    types); duplicate ids and annex names; references between records (a
    grade's student must be in the file); the header's counts.
    """
    header = read_header(stream)
    declared_size, declared_sha = header["body_bytes"], header["body_sha256"]
    digest = hashlib.sha256()
    size = 0
    number = 1  # the header is line 1
    problems: list[dict] = []
    codes: list[str] = []
    records: dict[str, dict[UUID, dict[str, Any]]] = {kind: {} for kind in KINDS}
    lines_of: dict[UUID, int] = {}
    annexes: dict[str, Annex] = {}
    modes: dict[str, Any] = {}
    modes_seen = False

    def report(where: str, message: str, code: str) -> None:
        if len(problems) < MAX_REPORTED:
            problems.append({"field": where, "message": message})
            codes.append(code)

    while True:
        line = stream.readline(max_line_bytes + 1)
        if not line:
            break
        number += 1
        size += len(line)
        digest.update(line)
        if size > declared_size:
            break  # longer than declared: no need to read further
        if problems:
            continue  # keep hashing: a damaged file is reported as damaged, not by its symptoms
        where = f"line {number}"
        if len(line) > max_line_bytes:
            report(where, f"longer than {max_line_bytes} bytes", "invalid_line")
            continue
        if not line.endswith(b"\n"):
            report(where, "does not end with a newline (truncated?)", "truncated")
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            report(where, f"not JSON ({exc.msg})", "invalid_line")
            continue
        if not isinstance(obj, dict):
            report(where, "not a JSON object", "invalid_line")
        elif "kind" in obj:
            _read_record(obj, where, number, records, lines_of, report)
        elif "annex" in obj:
            _read_annex(obj, where, annexes, report)
        elif "connection_modes" in obj:
            if modes_seen:
                report(where, "a second connection_modes line", "invalid_line")
            elif set(obj) != {"connection_modes"}:
                report(where, "a connection_modes line holds only connection_modes", "invalid_line")
            else:
                modes_seen = True
                try:
                    modes = validate_connection_modes(obj["connection_modes"], f"{where}.connection_modes")
                except Invalid as exc:
                    for e in exc.errors:
                        report(e["field"], e["message"], "invalid_line")
        else:
            report(where, "neither a record (kind), an annex nor connection_modes", "invalid_line")

    if size < declared_size:
        raise _problem("body", f"the file is truncated: its body has {size} of the {declared_size} bytes "
                       "the header declares", "truncated")
    if size > declared_size:
        raise _problem("body", f"the body is longer than the {declared_size} bytes the header declares",
                       "size_mismatch")
    if digest.hexdigest() != declared_sha:
        raise _problem("body", f"the body's SHA-256 is {digest.hexdigest()} but the header declares "
                       f"{declared_sha}: the file was altered or damaged", "checksum_mismatch")
    if not problems:
        _check_references(records, lines_of, report)
        counts = header["counts"]
        for kind in KINDS:
            declared, found = counts.get(kind, 0), len(records[kind])
            if declared != found:
                report(f"header.counts.{kind}", f"the header counts {declared} but the body holds {found}",
                       "count_mismatch")
        if header["annexes"] != len(annexes):
            report("header.annexes", f"the header counts {header['annexes']} annexes but the body holds "
                   f"{len(annexes)}", "count_mismatch")
    if problems:
        detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise FormatError(f"the file cannot be loaded: {detail}", errors=problems, code=codes[0])
    base = header["base"]
    return BaseFile(
        base_id=UUID(base["id"]),
        name=base["name"].strip(),
        origin=base["origin"],
        created_at=datetime.fromisoformat(base["created_at"]),
        last_entry_at=datetime.fromisoformat(base["last_entry_at"]) if base.get("last_entry_at") else None,
        grid=_grid(header["grid"]),
        records=records,
        annexes=annexes,
        connection_modes=modes,
        position=header["position"],
        exported_at=datetime.fromisoformat(header["exported_at"]) if header.get("exported_at") else None,
    )


def _read_record(obj: dict, where: str, number: int, records: dict, lines_of: dict, report: Any) -> None:
    if set(obj) != {"kind", "id", "fields"}:
        report(where, "a record line holds exactly kind, id and fields", "invalid_line")
        return
    kind = KINDS.get(obj["kind"]) if isinstance(obj["kind"], str) else None
    if kind is None:
        report(f"{where}.kind", f"unknown kind {obj['kind']!r}; kinds are: {', '.join(KINDS)}", "invalid_record")
        return
    if not _is_uuid(obj["id"]):
        report(f"{where}.id", "must be a UUID", "invalid_record")
        return
    record_id = UUID(obj["id"])
    if record_id in lines_of:
        report(f"{where}.id", f"duplicate id {record_id} (already on line {lines_of[record_id]})", "duplicate_id")
        return
    try:
        fields = validate_fields(kind, obj["fields"])
    except Invalid as exc:
        for e in exc.errors or [{"field": "fields", "message": exc.detail}]:
            report(f"{where}.fields.{e['field']}", f"{kind.singular} {record_id}: {e['message']}", "invalid_record")
        return
    records[kind.name][record_id] = fields
    lines_of[record_id] = number


def _read_annex(obj: dict, where: str, annexes: dict, report: Any) -> None:
    if set(obj) != {"annex", "content_type", "sha256", "data_base64"}:
        report(where, "an annex line holds exactly annex, content_type, sha256 and data_base64", "invalid_line")
        return
    name, content_type, sha, data64 = obj["annex"], obj["content_type"], obj["sha256"], obj["data_base64"]
    try:
        name = validate_annex_name(name, f"{where}.annex")
        content_type = validate_content_type(content_type, f"{where}.content_type")
    except Invalid as exc:
        for e in exc.errors:
            report(e["field"], e["message"], "invalid_annex")
        return
    if name in annexes:
        report(f"{where}.annex", f"a second annex named {name!r}", "duplicate_id")
        return
    if not isinstance(sha, str) or not SHA256_HEX.match(sha):
        report(f"{where}.sha256", "must be 64 lowercase hexadecimal digits", "invalid_annex")
        return
    try:
        data = base64.b64decode(data64, validate=True) if isinstance(data64, str) else None
    except (binascii.Error, ValueError):
        data = None
    if data is None:
        report(f"{where}.data_base64", "must be base64", "invalid_annex")
        return
    if len(data) > MAX_ANNEX_BYTES:
        report(f"{where}.data_base64", f"annex {name!r} is over {MAX_ANNEX_BYTES} bytes", "invalid_annex")
        return
    if hashlib.sha256(data).hexdigest() != sha:
        report(f"{where}.sha256", f"annex {name!r}: its data does not match its SHA-256", "checksum_mismatch")
        return
    annexes[name] = Annex(content_type, sha, data)


def _check_references(records: dict, lines_of: dict, report: Any) -> None:
    for kind in KINDS.values():
        if not kind.references:
            continue
        for record_id, fields in records[kind.name].items():
            for field_name, target in kind.references.items():
                value = fields.get(field_name)
                if value is not None and value not in records[target]:
                    report(f"line {lines_of[record_id]}.fields.{field_name}",
                           f"{kind.singular} {record_id} refers to {KINDS[target].singular} {value}, "
                           "which is not in the file", "unknown_reference")


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        UUID(value)
    except ValueError:
        return False
    return True


def _is_instant(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
