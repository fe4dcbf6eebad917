"""The campus-base file: one base (grid, records, annexes, connection modes) as
one self-describing, checksummed, streamable file (docs/EXPORT_FORMAT.md;
hosting guide fiche 7: a base exported and loaded, saves and archives).

    line 1   a JSON header: format, version, the base, its grid, the counts,
             the position (base version), body_sha256 and body_bytes
    line 2…  the body, JSON lines: one per record, one per annex, and one for
             the connection modes if they were set

The SHA-256 and the size cover exactly the body's bytes (everything after the
header's newline). This module holds the format (its names, what a file holds:
:class:`BaseFile`, the checks of annexes and connection modes, :class:`FormatError`)
and writing it: :func:`write_chunks` yields byte chunks (the body is generated
twice from the in-memory snapshot: once to hash it, once to send it, so
nothing is buffered whole). Reading and checking a file is
:mod:`campus.rules.base_file_reader`.

Nothing here knows about HTTP or the store: exports, loads, saves and archives
all use these functions.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson

from campus.errors import Invalid
from campus.rules.grid import grid_view
from campus.rules.records import KINDS

FORMAT = "campus-base"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
MEDIA_TYPE = "application/x-campus-base"
SUFFIX = ".campus"

MAX_ANNEX_BYTES = 10 * 1024 * 1024
CHUNK_BYTES = 64 * 1024

# -- connection modes (hosting guide fiche 5) ------------------------------------------
# Rows of the transfer's table: who may connect, and through what (public page,
# the installed client, the web spaces). Kept on the base for the publication.
CONNECTION_MODES = ("direction", "teachers", "school_life", "parents", "companions", "students", "company",
                    "academy")
SPACES = ("common", *CONNECTION_MODES, "registration")
ANNEX_NAME = re.compile(r"^[^\x00-\x1f\x7f/\\]{1,128}$")
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
                          r"(?:\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(?:[A-Za-z0-9!#$&^_.+-]+|\"[^\"\\\r\n]*\"))*$")


class FormatError(Invalid):
    """The file is not a well-formed, intact campus-base file (422)."""

    def __init__(self, detail: str, *, errors: list[dict] | None = None, code: str = "invalid_file") -> None:
        super().__init__(detail, errors=errors, code=code)


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
