"""The campus-base file: one base (grid, records, annexes, connection modes) as
one self-describing, checksummed, streamable file (docs/EXPORT_FORMAT.md).

    line 1   a JSON header: format, version, the base, its grid, the counts,
             the position (base version), body_sha256 and body_bytes
    line 2…  the body, JSON lines: one per record, one per annex, and one for
             the connection modes if they were set

The SHA-256 and the size cover exactly the body's bytes (everything after the
header's newline). :func:`write_chunks` yields byte chunks (the body is
generated twice from the in-memory snapshot: once to hash it, once to send
it, so nothing is buffered whole); :func:`read_base_file` reads a binary
file object in one pass and checks everything, raising :class:`FormatError`
(a 422 :class:`campus.errors.Invalid`) naming the first problems found.

Nothing here knows about HTTP or the store: exports, loads and (next) saves
and archives all use these functions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import orjson

from campus.errors import Invalid
from campus.rules.grid import grid_view, make_grid
from campus.rules.records import KINDS, validate_fields

FORMAT = "campus-base"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
MEDIA_TYPE = "application/x-campus-base"
SUFFIX = ".campus"

MAX_HEADER_BYTES = 1024 * 1024
MAX_ANNEX_BYTES = 10 * 1024 * 1024
# An annex line holds up to 10 MiB as base64 (4/3) plus its JSON keys.
MAX_LINE_BYTES = MAX_ANNEX_BYTES * 4 // 3 + 64 * 1024
CHUNK_BYTES = 64 * 1024
MAX_REPORTED = 20  # problems listed in one refusal

# -- connection modes (hosting guide fiche 5) ------------------------------------------
# Rows of the transfer's table: who may connect, and through what (public page,
# the installed client, the web spaces). Kept on the base for the publication.
CONNECTION_MODES = ("direction", "teachers", "school_life", "parents", "companions", "students", "company",
                    "academy")
SPACES = ("common", *CONNECTION_MODES, "registration")
ANNEX_NAME = re.compile(r"^[^\x00-\x1f\x7f/\\]{1,128}$")
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
                          r"(?:\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(?:[A-Za-z0-9!#$&^_.+-]+|\"[^\"\\\r\n]*\"))*$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class FormatError(Invalid):
    """The file is not a well-formed, intact campus-base file (422)."""

    def __init__(self, detail: str, *, errors: list[dict] | None = None, code: str = "invalid_file") -> None:
        super().__init__(detail, errors=errors, code=code)


def _problem(field_name: str, message: str, code: str) -> FormatError:
    return FormatError(f"{field_name}: {message}", errors=[{"field": field_name, "message": message}], code=code)


@dataclass(frozen=True)
class Annex:
    content_type: str
    sha256: str
    data: bytes


@dataclass(frozen=True)
class BaseFile:
    """What a campus-base file holds, in the Python types of the aggregates."""

    base_id: UUID
    name: str
    origin: str
    created_at: datetime
    last_entry_at: datetime | None
    grid: dict[str, Any]  # as made by campus.rules.grid.make_grid
    records: Mapping[str, Mapping[UUID, Mapping[str, Any]]]  # kind -> id -> fields, in order
    annexes: Mapping[str, Annex] = field(default_factory=dict)
    connection_modes: Mapping[str, Any] = field(default_factory=dict)
    position: int = 0  # the base's version the file was taken at
    exported_at: datetime | None = None

    def counts(self) -> dict[str, int]:
        return {kind: len(self.records.get(kind, {})) for kind in KINDS}

    def record_rows(self) -> Iterator[tuple[str, UUID, Mapping[str, Any]]]:
        for kind in KINDS:
            for record_id, fields in self.records.get(kind, {}).items():
                yield kind, record_id, fields


# -- values -------------------------------------------------------------------------------
def json_value(value: Any) -> Any:
    """A field value as JSON: UUID and Decimal as strings, dates and times ISO 8601."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    raise TypeError(f"a {type(value).__name__} cannot be written in a campus-base file")


def _line(obj: Any) -> bytes:
    return orjson.dumps(obj) + b"\n"


# -- writing --------------------------------------------------------------------------------
def _body_lines(bf: BaseFile) -> Iterator[bytes]:
    for kind, record_id, fields in bf.record_rows():
        yield _line({"kind": kind, "id": str(record_id), "fields": {k: json_value(v) for k, v in fields.items()}})
    for name in sorted(bf.annexes):
        annex = bf.annexes[name]
        yield _line({"annex": name, "content_type": annex.content_type, "sha256": annex.sha256,
                     "data_base64": base64.b64encode(annex.data).decode("ascii")})
    if bf.connection_modes:
        yield _line({"connection_modes": json_value(dict(bf.connection_modes))})


def _chunked(lines: Iterator[bytes]) -> Iterator[bytes]:
    buffer: list[bytes] = []
    size = 0
    for line in lines:
        buffer.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


@dataclass(frozen=True)
class PreparedFile:
    """A file ready to be streamed: its header is known (the body was hashed once)."""

    header: dict[str, Any]
    header_line: bytes
    source: BaseFile

    @property
    def size(self) -> int:
        return len(self.header_line) + self.header["body_bytes"]

    def chunks(self) -> Iterator[bytes]:
        yield self.header_line
        yield from _chunked(_body_lines(self.source))


def prepare(bf: BaseFile) -> PreparedFile:
    """Hash the body (first pass) and build the header; stream with ``.chunks()``."""
    digest = hashlib.sha256()
    size = 0
    for line in _body_lines(bf):
        digest.update(line)
        size += len(line)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "base": {
            "id": str(bf.base_id),
            "name": bf.name,
            "origin": bf.origin,
            "created_at": bf.created_at.isoformat(),
            "last_entry_at": bf.last_entry_at.isoformat() if bf.last_entry_at else None,
        },
        "grid": {k: json_value(v) for k, v in grid_view(bf.grid).items()},
        "counts": bf.counts(),
        "annexes": len(bf.annexes),
        "exported_at": bf.exported_at.isoformat() if bf.exported_at else None,
        "position": bf.position,
        "body_sha256": digest.hexdigest(),
        "body_bytes": size,
    }
    return PreparedFile(header, _line(header), bf)


def write_chunks(bf: BaseFile) -> Iterator[bytes]:
    """The whole file as byte chunks (header line first)."""
    yield from prepare(bf).chunks()


def write_file(bf: BaseFile, path: Path) -> dict[str, Any]:
    """Write the file atomically (``<path>.part``, fsync, rename); return its header."""
    prepared = prepare(bf)
    partial = path.with_name(path.name + ".part")
    try:
        with open(partial, "wb") as out:
            out.writelines(prepared.chunks())
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return prepared.header


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


# -- shared checks ----------------------------------------------------------------------------
def validate_annex_name(name: Any, field_name: str = "name") -> str:
    if not isinstance(name, str) or not ANNEX_NAME.match(name) or name.strip() in ("", ".", ".."):
        raise Invalid.field(field_name, "an annex name is 1 to 128 characters, without / \\ or control "
                                        "characters, and not . or ..")
    return name


def validate_content_type(value: Any, field_name: str = "content_type") -> str:
    if not isinstance(value, str) or not CONTENT_TYPE.match(value.strip()):
        raise Invalid.field(field_name, "must be a media type such as image/jpeg or application/pdf")
    return value.strip()


def validate_connection_modes(data: Any, field_name: str = "connection_modes") -> dict[str, dict[str, Any]]:
    """Every mode's rights: {mode: {"public": bool, "client": bool, "spaces": [space, …]}}.

    Modes left out may use nothing; unknown modes, keys or spaces are refused.
    """
    if not isinstance(data, dict):
        raise Invalid.field(field_name, "must be an object mapping connection modes to their rights")
    errors: list[dict] = []
    modes = {mode: {"public": False, "client": False, "spaces": []} for mode in CONNECTION_MODES}
    for mode, rights in data.items():
        where = f"{field_name}.{mode}"
        if mode not in CONNECTION_MODES:
            errors.append({"field": where, "message": f"unknown connection mode; modes are: {', '.join(CONNECTION_MODES)}"})
            continue
        if not isinstance(rights, dict):
            errors.append({"field": where, "message": 'must be an object {"public", "client", "spaces"}'})
            continue
        for key in rights:
            if key not in ("public", "client", "spaces"):
                errors.append({"field": f"{where}.{key}", "message": "unknown; use public, client and spaces"})
        for key in ("public", "client"):
            if key in rights and not isinstance(rights[key], bool):
                errors.append({"field": f"{where}.{key}", "message": "must be true or false"})
            elif key in rights:
                modes[mode][key] = rights[key]
        spaces = rights.get("spaces", [])
        if not isinstance(spaces, list):
            errors.append({"field": f"{where}.spaces", "message": "must be a list of spaces"})
            continue
        unknown = [s for s in spaces if s not in SPACES]
        if unknown:
            errors.append({"field": f"{where}.spaces",
                           "message": f"unknown spaces {unknown}; spaces are: {', '.join(SPACES)}"})
        elif len(set(spaces)) != len(spaces):
            errors.append({"field": f"{where}.spaces", "message": "a space is listed twice"})
        else:
            modes[mode]["spaces"] = [s for s in SPACES if s in spaces]
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
    return modes


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
