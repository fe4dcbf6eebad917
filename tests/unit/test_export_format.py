"""The campus-base file format: round trip to the exact Python types, and every
kind of damage detected (campus/rules/export_format.py, campus/rules/base_file_reader.py,
docs/EXPORT_FORMAT.md)."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campus.rules.base_file_reader import read_base_file, read_header
from campus.rules.export_format import (
    CHUNK_BYTES,
    Annex,
    BaseFile,
    FormatError,
    prepare,
    validate_connection_modes,
    write_chunks,
    write_file,
)
from campus.rules.grid import make_grid
from campus.rules.records import KINDS, validate_fields
from campus.rules.text import is_blank

GRID = make_grid(date(2026, 8, 31), date(2027, 7, 4), ["mon", "tue", "wed", "thu", "fri"], 12, 60, 2)
NOW = datetime(2026, 10, 1, 12, 30, tzinfo=UTC)

names = st.text(min_size=1, max_size=30).filter(lambda s: not is_blank(s))  # a name shows something (campus/rules/text.py)
offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
instants = st.builds(lambda d, tz: d.replace(tzinfo=tz),
                     st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)), offsets)
scores = st.decimals(min_value=0, max_value=20, places=2, allow_nan=False, allow_infinity=False)


@st.composite
def base_files(draw: Any) -> BaseFile:
    records: dict[str, dict[UUID, dict]] = {kind: {} for kind in KINDS}

    def add(kind: str, data: dict) -> UUID:
        record_id = uuid4()
        records[kind][record_id] = validate_fields(KINDS[kind], data)
        return record_id

    classes = [add("classes", {"name": draw(names), **({"level": draw(names)} if draw(st.booleans()) else {})})
               for _ in range(draw(st.integers(1, 3)))]
    subjects = [add("subjects", {"name": draw(names)}) for _ in range(draw(st.integers(1, 2)))]
    teacher = add("teachers", {"last_name": draw(names), "first_name": draw(names),
                               "civility": draw(st.sampled_from(["M.", "Mme"]))})
    students = []
    for _ in range(draw(st.integers(1, 4))):
        data = {"last_name": draw(names), "first_name": draw(names), "class_id": str(draw(st.sampled_from(classes)))}
        if draw(st.booleans()):
            data["birth_date"] = draw(st.dates(min_value=date(1990, 1, 1), max_value=date(2020, 1, 1))).isoformat()
        students.append(add("students", data))
    for _ in range(draw(st.integers(0, 5))):
        value = draw(scores)
        add("grades", {"student_id": str(draw(st.sampled_from(students))),
                       "subject_id": str(draw(st.sampled_from(subjects))), "value": str(value), "scale": "20",
                       **({"comment": draw(names)} if draw(st.booleans()) else {})})
    for _ in range(draw(st.integers(0, 3))):
        start = draw(instants)
        add("absences", {"student_id": str(draw(st.sampled_from(students))), "start": start.isoformat(),
                         "end": (start + timedelta(minutes=draw(st.integers(1, 600)))).isoformat(),
                         "justified": draw(st.booleans())})
    for _ in range(draw(st.integers(0, 2))):
        add("evaluations", {"student_id": str(draw(st.sampled_from(students))),
                            "subject_id": str(subjects[0]), "competence": draw(names),
                            "level": draw(st.sampled_from(["not_acquired", "in_progress", "acquired", "exceeded"]))})
    if draw(st.booleans()):
        add("courses", {"subject_id": str(subjects[0]), "teacher_id": str(teacher), "class_id": str(classes[0]),
                        "weekday": "wed", "start": "10:15", "duration_minutes": 50})
    annexes = {}
    for _ in range(draw(st.integers(0, 2))):
        data = draw(st.binary(max_size=300))
        annexes[draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"], exclude_characters="/\\"),
                             min_size=2, max_size=20))] = Annex("image/jpeg", hashlib.sha256(data).hexdigest(), data)
    modes = validate_connection_modes({"direction": {"client": True, "spaces": ["direction"]}}) \
        if draw(st.booleans()) else {}
    return BaseFile(base_id=uuid4(), name=draw(names).strip()[:100] or "x", origin="created", created_at=NOW,
                    last_entry_at=draw(st.none() | instants), grid=GRID, records=records,
                    annexes={k: v for k, v in annexes.items() if k.strip() not in ("", ".", "..")},
                    connection_modes=modes, position=draw(st.integers(0, 10**6)), exported_at=NOW)


def write(bf: BaseFile) -> bytes:
    return b"".join(write_chunks(bf))


def typed(records: Any) -> dict:
    return {kind: {rid: {f: (type(v), v, str(v)) for f, v in fields.items()} for rid, fields in by_id.items()}
            for kind, by_id in records.items() if by_id}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base_files())
def test_round_trip_gives_back_the_same_base_with_the_same_types(bf: BaseFile) -> None:
    data = write(bf)
    back = read_base_file(io.BytesIO(data))
    assert typed(back.records) == typed(bf.records)
    assert [(k, i) for k, i, _ in back.record_rows()] == [(k, i) for k, i, _ in bf.record_rows()]
    assert back.annexes == bf.annexes
    assert back.connection_modes == bf.connection_modes
    assert back.grid == bf.grid
    assert (back.base_id, back.name, back.origin, back.created_at, back.last_entry_at, back.position,
            back.exported_at) == (bf.base_id, bf.name, bf.origin, bf.created_at, bf.last_entry_at, bf.position,
                                  bf.exported_at)
    # Writing what was read gives the same bytes: the format is deterministic.
    assert write(back).split(b"\n", 1)[1] == data.split(b"\n", 1)[1]


def _sample() -> BaseFile:
    klass, student, subject = uuid4(), uuid4(), uuid4()
    records = {
        "classes": {klass: validate_fields(KINDS["classes"], {"name": "6A"})},
        "subjects": {subject: validate_fields(KINDS["subjects"], {"name": "Maths"})},
        "students": {student: validate_fields(KINDS["students"], {"last_name": "Bernard", "first_name": "Lucie",
                                                                  "class_id": str(klass)})},
        "grades": {uuid4(): validate_fields(KINDS["grades"], {"student_id": str(student), "subject_id": str(subject),
                                                              "value": "12.5"})},
    }
    return BaseFile(uuid4(), "Base 2026", "created", NOW, NOW, GRID, records,
                    {"a.txt": Annex("text/plain", hashlib.sha256(b"hello").hexdigest(), b"hello")}, {}, 7, NOW)


def code_of(data: bytes) -> str:
    with pytest.raises(FormatError) as caught:
        read_base_file(io.BytesIO(data))
    assert caught.value.status == 422 and caught.value.detail
    return caught.value.code or ""


def test_header_is_self_describing_and_checksums_exactly_the_body() -> None:
    data = write(_sample())
    header_line, _, body = data.partition(b"\n")
    header = json.loads(header_line)
    assert header["format"] == "campus-base" and header["version"] == 1
    assert header["body_bytes"] == len(body) and header["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert header["counts"]["grades"] == 1 and header["counts"]["rooms"] == 0 and header["annexes"] == 1
    assert header["position"] == 7 and header["grid"]["first_monday"] == "2026-08-31"
    assert read_header(io.BytesIO(data))["base"]["name"] == "Base 2026"
    grade = next(json.loads(line) for line in body.splitlines() if b'"grades"' in line)
    assert grade["fields"]["value"] == "12.5" and grade["fields"]["scale"] == "20"


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_any_changed_byte_of_the_body_is_detected(data: st.DataObject) -> None:
    original = write(_sample())
    start = original.index(b"\n") + 1
    at = data.draw(st.integers(start, len(original) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != original[at]))
    altered = original[:at] + bytes([new]) + original[at + 1:]
    assert code_of(altered) == "checksum_mismatch"


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_truncation_is_detected(data: st.DataObject) -> None:
    original = write(_sample())
    cut = data.draw(st.integers(0, len(original) - 1))
    assert code_of(original[:cut]) in ("truncated", "not_a_campus_file")


def _rewrite(data: bytes, body: bytes | None = None, **header_changes: Any) -> bytes:
    header_line, _, old_body = data.partition(b"\n")
    header = json.loads(header_line)
    body = old_body if body is None else body
    header.update({"body_sha256": hashlib.sha256(body).hexdigest(), "body_bytes": len(body)})
    header.update(header_changes)
    return orjson.dumps(header) + b"\n" + body


def test_malformed_headers_and_unknown_versions_are_refused() -> None:
    data = write(_sample())
    assert code_of(b"") == "not_a_campus_file"
    assert code_of(b"garbage\n") == "not_a_campus_file"
    assert code_of(b"[1, 2]\n") == "not_a_campus_file"
    assert code_of(_rewrite(data, format="campus-users")) == "not_a_campus_file"
    with pytest.raises(FormatError) as caught:
        read_base_file(io.BytesIO(_rewrite(data, version=2)))
    assert caught.value.code == "unsupported_version" and "version 2" in caught.value.detail
    assert caught.value.errors == [{"field": "header.version", "message": caught.value.detail.split(": ", 1)[1]}]
    assert code_of(_rewrite(data, version="1")) == "unsupported_version"
    with pytest.raises(FormatError) as caught:
        read_base_file(io.BytesIO(_rewrite(data, counts={"dragons": 1}, body_bytes=-1)))
    assert {e["field"] for e in caught.value.errors} == {"header.counts", "header.body_bytes"}


def test_records_are_checked_line_by_line() -> None:
    data = write(_sample())
    body = data.partition(b"\n")[2]
    lines = body.splitlines(keepends=True)

    def with_lines(new_lines: list[bytes]) -> bytes:
        new_body = b"".join(new_lines)
        counts = {k: 0 for k in KINDS}
        annexes = 0
        for line in new_lines:
            obj = json.loads(line)
            if "kind" in obj and obj["kind"] in counts:
                counts[obj["kind"]] += 1
            annexes += "annex" in obj
        return _rewrite(data, new_body, counts=counts, annexes=annexes)

    grade_line = next(line for line in lines if b'"grades"' in line)
    grade = json.loads(grade_line)
    # A grade whose student is not in the file.
    ghost = {**grade, "id": str(uuid4()), "fields": {**grade["fields"], "student_id": str(uuid4())}}
    with pytest.raises(FormatError) as caught:
        read_base_file(io.BytesIO(with_lines([*lines, orjson.dumps(ghost) + b"\n"])))
    assert caught.value.code == "unknown_reference" and "not in the file" in caught.value.detail
    assert caught.value.errors[0]["field"] == f"line {len(lines) + 2}.fields.student_id"
    # The same id twice, an unknown kind, fields breaking the kind's rules, not a JSON object.
    assert code_of(with_lines([*lines, grade_line])) == "duplicate_id"
    unknown = orjson.dumps({**grade, "id": str(uuid4()), "kind": "dragons"}) + b"\n"
    assert code_of(_rewrite(data, body + unknown)) == "invalid_record"
    too_high = orjson.dumps({**grade, "id": str(uuid4()), "fields": {**grade["fields"], "value": "25"}}) + b"\n"
    with pytest.raises(FormatError) as caught:
        read_base_file(io.BytesIO(with_lines([*lines, too_high])))
    assert caught.value.code == "invalid_record" and "scale" in caught.value.detail
    assert code_of(_rewrite(data, body + b"[]\n")) == "invalid_line"
    assert code_of(_rewrite(data, body + b'{"something": 1}\n')) == "invalid_line"
    # An annex whose data does not match its own checksum.
    annex_line = next(line for line in lines if b'"annex"' in line)
    annex = json.loads(annex_line)
    bad = orjson.dumps({**annex, "data_base64": "d29ybGQ="}) + b"\n"
    assert code_of(with_lines([line if line != annex_line else bad for line in lines])) == "checksum_mismatch"
    # Counts in the header that do not match the body.
    assert code_of(_rewrite(data, counts={**json.loads(data.partition(b"\n")[0])["counts"], "classes": 2})) \
        == "count_mismatch"


def test_writer_streams_in_chunks_and_writes_files_atomically(tmp_path: Path) -> None:
    klass = uuid4()
    records = {"classes": {klass: validate_fields(KINDS["classes"], {"name": "6A"})},
               "students": {uuid4(): validate_fields(KINDS["students"], {"last_name": f"Élève {n}",
                                                                         "first_name": "Lucie",
                                                                         "class_id": str(klass)})
                            for n in range(3000)}}
    bf = BaseFile(uuid4(), "Grande", "loaded", NOW, None, GRID, records, position=3001, exported_at=NOW)
    chunks = list(write_chunks(bf))
    assert len(chunks) > 3 and all(len(c) < 2 * CHUNK_BYTES for c in chunks[1:])
    prepared = prepare(bf)
    assert prepared.size == sum(len(c) for c in chunks)
    path = tmp_path / "000003001.campus"
    header = write_file(bf, path)
    assert header["position"] == 3001 and header["counts"]["students"] == 3000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000003001.campus"]
    with open(path, "rb") as stream:
        back = read_base_file(stream)
    assert len(back.records["students"]) == 3000 and back.last_entry_at is None


def test_connection_modes_are_checked() -> None:
    modes = validate_connection_modes({"parents": {"public": True, "spaces": ["parents", "common"]}})
    assert modes["parents"] == {"public": True, "client": False, "spaces": ["common", "parents"]}
    assert modes["academy"] == {"public": False, "client": False, "spaces": []}
    with pytest.raises(Exception) as caught:
        validate_connection_modes({"pirates": {}, "parents": {"public": "yes", "spaces": ["moon"], "x": 1}})
    fields = {e["field"] for e in caught.value.errors}  # type: ignore[attr-defined]
    assert fields == {"connection_modes.pirates", "connection_modes.parents.public",
                      "connection_modes.parents.spaces", "connection_modes.parents.x"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_damage_is_a_format_error_never_a_crash(data: st.DataObject) -> None:
    """Whatever the header or a line holds, the reader answers FormatError (a 422), nothing else."""
    original = write(_sample())
    header_line, _, body = original.partition(b"\n")
    header = json.loads(header_line)
    choice = data.draw(st.sampled_from(["header", "grid", "base", "line", "bytes"]))
    if choice == "bytes":
        damaged = data.draw(st.binary(max_size=200))
    elif choice == "line":
        line = json.dumps(data.draw(st.dictionaries(st.sampled_from(["kind", "id", "fields", "annex", "content_type",
                                                                       "sha256", "data_base64", "connection_modes"]),
                                                      json_values, max_size=4))).encode() + b"\n"
        damaged = _rewrite(original, body + line)
    else:
        target = header if choice == "header" else header[choice]
        key = data.draw(st.sampled_from(sorted(target)))
        target[key] = data.draw(json_values)
        damaged = json.dumps(header).encode() + b"\n" + body
    try:
        read_base_file(io.BytesIO(damaged))
    except FormatError as exc:
        assert exc.status == 422 and exc.detail
