"""Tests for campus.infra.transcoder.MsgpackTranscoder."""

from __future__ import annotations

import enum
import http
from collections import OrderedDict
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import msgpack
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Transcoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campus.infra.transcoder import MsgpackTranscoder


class Colour(enum.Enum):
    RED = "red"
    GREEN = ("g", 2)  # a tuple value must come back as a tuple to find it


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2**70  # value outside the 64-bit range


class Mode(enum.StrEnum):
    DRAFT = "draft"
    FINAL = "final"


class Perm(enum.Flag):
    READ = 1
    WRITE = 2


ENUM_MEMBERS: list[enum.Enum] = [
    *Colour,
    *Level,
    *Mode,
    Perm.READ,
    Perm.READ | Perm.WRITE,
]

TRANSCODER = MsgpackTranscoder()


def roundtrip(obj: Any) -> Any:
    data = TRANSCODER.encode(obj)
    assert isinstance(data, bytes)
    return TRANSCODER.decode(data)


def assert_same(a: Any, b: Any, path: str = "$") -> None:
    """Asserts a and b are equal with identical types at every level."""
    assert type(a) is type(b), f"{path}: {type(a)!r} != {type(b)!r}"
    if isinstance(a, dict):
        assert len(a) == len(b), path
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            assert_same(ka, kb, f"{path}.key({ka!r})")
            assert_same(va, vb, f"{path}[{ka!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (xa, xb) in enumerate(zip(a, b)):
            assert_same(xa, xb, f"{path}[{i}]")
    elif isinstance(a, (set, frozenset)):
        assert a == b, path
        b_by_value = {x: x for x in b}
        for x in a:
            assert_same(x, b_by_value[x], f"{path}{{{x!r}}}")
    elif isinstance(a, Decimal):
        assert str(a) == str(b), path
    elif isinstance(a, float):
        assert repr(a) == repr(b), path  # NaN and -0.0 aware
    elif isinstance(a, (datetime, time)):
        assert a == b, path
        assert a.utcoffset() == b.utcoffset(), path
    elif isinstance(a, enum.Enum):
        assert a is b, path
    else:
        assert a == b, path


# Strategies ---------------------------------------------------------------

fixed_offsets = st.integers(min_value=-24 * 60 + 1, max_value=24 * 60 - 1).map(
    lambda m: timezone(timedelta(minutes=m))
)
big_ints = st.integers(min_value=-(2**200), max_value=2**200)
ints = st.one_of(
    st.integers(),
    big_ints,
    st.sampled_from([2**63 - 1, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64]),
)
decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            Decimal("-0"),
            Decimal("0E-30"),
            Decimal("NaN"),
            Decimal("-NaN"),
            Decimal("sNaN"),
            Decimal("NaN123"),
            Decimal("Infinity"),
            Decimal("-Infinity"),
            Decimal("1E+999999"),
            Decimal("-1.5E-999999"),
            Decimal("1.000"),
        ]
    ),
)
enums = st.sampled_from(ENUM_MEMBERS)

# Leaves that are hashable and equal to themselves (dict keys, set items).
hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.text(max_size=10),
    st.binary(max_size=10),
    st.uuids(),
    st.dates(),
    st.timedeltas(),
    enums,
)
hashables = st.recursive(
    hashable_leaves,
    lambda children: st.lists(children, max_size=3).map(tuple)
    | st.frozensets(hashable_leaves, max_size=3),
    max_leaves=6,
)
leaves = st.one_of(
    hashable_leaves,
    st.floats(),
    decimals,
    st.datetimes(),
    st.datetimes(timezones=fixed_offsets),
    st.times(),
    st.times(timezones=fixed_offsets),
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
        st.dictionaries(hashables, children, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=20,
)


# Property tests -----------------------------------------------------------


def test_is_a_transcoder() -> None:
    assert isinstance(TRANSCODER, Transcoder)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_roundtrip_nested_values(value: Any) -> None:
    assert_same(value, roundtrip(value))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), values, max_size=5))
def test_roundtrip_event_state_dicts(state: dict[str, Any]) -> None:
    assert_same(state, roundtrip(state))


# Example tests ------------------------------------------------------------


def test_realistic_event_state() -> None:
    state = {
        "timestamp": datetime(2024, 5, 17, 8, 30, 1, 123456, tzinfo=timezone.utc),
        "originator_topic": "campus.aggregates.billing:Invoice",
        "school_id": uuid4(),
        "amount": Decimal("1234.50"),
        "vat_rate": Decimal("0.20"),
        "due": date(2024, 6, 30),
        "lesson_start": time(9, 15),
        "duration": timedelta(minutes=45),
        "local_at": datetime(2024, 5, 17, 10, 30, tzinfo=timezone(timedelta(hours=2))),
        "naive_at": datetime(2024, 5, 17, 10, 30, 0, 1),
        "status": Mode.FINAL,
        "level": Level.HIGH,
        "colour": Colour.GREEN,
        "perms": Perm.READ | Perm.WRITE,
        "lines": (("maths", 3, Decimal("10.00")), ("art", 1, Decimal("5"))),
        "tags": ["a", "b"],
        "grades": {1: "A", 2: "B"},
        "by_pupil": {UUID(int=1): [date(2024, 1, 1)], (2024, "T1"): {"x": None}},
        "roles": frozenset({"admin", "teacher"}),
        "flags": {"x"},
        "counter": 2**100,
        "negative": -(2**100),
        "ratio": 0.1,
        "active": True,
        "photo": b"\x00\xff",
        "note": None,
    }
    decoded = roundtrip(state)
    assert_same(state, decoded)
    assert decoded["status"] is Mode.FINAL
    assert decoded["local_at"].utcoffset() == timedelta(hours=2)


def test_enum_members_roundtrip_to_the_same_member() -> None:
    for member in [*ENUM_MEMBERS, http.HTTPStatus.NOT_FOUND]:
        assert roundtrip(member) is member


def test_decimal_special_values() -> None:
    for text in ["NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "-0", "-0.00", "1E+999999"]:
        decoded = roundtrip(Decimal(text))
        assert type(decoded) is Decimal
        assert str(decoded) == str(Decimal(text))
        assert decoded.compare_total(Decimal(text)) == Decimal(0)


def test_wire_format_is_stable() -> None:
    """Stored events depend on these bytes: this test must never be edited."""
    value = {
        "big": 2**64,
        "uuid": UUID(int=1),
        "dt": datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5))),
        "d": date(2024, 1, 2),
        "t": time(3, 4, 5),
        "td": timedelta(days=-1, seconds=2, microseconds=3),
        "dec": Decimal("-1.50"),
        "enum": http.HTTPStatus.OK,
        "tuple": (1, "a"),
        "set": {7},
        "frozenset": frozenset({8}),
    }
    encoded = TRANSCODER.encode(value)
    # Compare against a readable dump of the ext values rather than one opaque
    # hex blob, so a failure shows which type changed.
    raw = msgpack.unpackb(encoded, ext_hook=lambda c, d: (c, d), strict_map_key=False)
    assert raw == {
        "big": (1, b"\x01\x00\x00\x00\x00\x00\x00\x00\x00"),
        "uuid": (2, b"\x00" * 15 + b"\x01"),
        "dt": (3, b"2024-01-02T03:04:05.000006-05:00"),
        "d": (4, b"2024-01-02"),
        "t": (5, b"03:04:05"),
        "td": (6, b"\xff\xff\xff\xff\x00\x00\x00\x02\x00\x00\x00\x03"),
        "dec": (7, b"-1.50"),
        "enum": (8, msgpack.packb(["http:HTTPStatus", 200])),
        "tuple": (9, msgpack.packb([1, "a"])),
        "set": (10, msgpack.packb([7])),
        "frozenset": (11, msgpack.packb([8])),
    }
    assert_same(value, TRANSCODER.decode(encoded))


class Unsupported:
    pass


class MyStr(str):
    pass


@pytest.mark.parametrize(
    "obj",
    [Unsupported(), {"nested": [Unsupported()]}, OrderedDict(a=1), MyStr("x"), 1 + 2j],
    ids=["object", "nested", "dict-subclass", "str-subclass", "complex"],
)
def test_unsupported_type_raises_type_error(obj: Any) -> None:
    with pytest.raises(TypeError) as excinfo:
        TRANSCODER.encode(obj)
    expected = {
        Unsupported: "Unsupported",
        dict: "Unsupported",
        OrderedDict: "OrderedDict",
        MyStr: "MyStr",
        complex: "complex",
    }[type(obj)]
    assert expected in str(excinfo.value)


def test_bytearray_and_memoryview_decode_as_bytes() -> None:
    # msgpack packs these natively as bin, even with strict_types=True.
    assert_same(roundtrip(bytearray(b"ab")), b"ab")
    assert_same(roundtrip(memoryview(b"cd")), b"cd")


def test_unknown_ext_code_raises_value_error() -> None:
    data = msgpack.packb(msgpack.ExtType(99, b""))
    with pytest.raises(ValueError, match="99"):
        TRANSCODER.decode(data)


# Integration with eventsourcing ---------------------------------------------


class Invoice(Aggregate):
    @event("Created")
    def __init__(
        self,
        school_id: UUID,
        amount: Decimal,
        due: date,
        lines: tuple[tuple[str, int], ...],
        mode: Mode,
    ) -> None:
        self.school_id = school_id
        self.amount = amount
        self.due = due
        self.lines = lines
        self.mode = mode

    @event("Finalised")
    def finalise(self, amount: Decimal, level: Level) -> None:
        self.amount = amount
        self.mode = Mode.FINAL
        self.level = level


class Invoices(Application):
    def construct_transcoder(self) -> Transcoder:
        return MsgpackTranscoder()


def test_application_roundtrip_with_sqlite(tmp_path: Path) -> None:
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(tmp_path / "e.db"),
    }
    school_id = uuid4()
    lines = (("maths", 3), ("art", 1))

    app = Invoices(env=env)
    try:
        invoice = Invoice(school_id, Decimal("99.90"), date(2024, 6, 30), lines, Mode.DRAFT)
        invoice.finalise(Decimal("-0.00"), Level.HIGH)
        app.save(invoice)
        invoice_id = invoice.id
    finally:
        app.close()

    app = Invoices(env=env)
    try:
        copy = app.repository.get(invoice_id)
        stored = list(app.recorder.select_events(invoice_id))
    finally:
        app.close()

    assert copy.version == 2
    assert_same(copy.school_id, school_id)
    assert_same(copy.amount, Decimal("-0.00"))
    assert_same(copy.due, date(2024, 6, 30))
    assert_same(copy.lines, lines)
    assert copy.mode is Mode.FINAL
    assert copy.level is Level.HIGH
    assert copy.created_on.utcoffset() == timedelta(0)

    # The stored state really is msgpack, not the default JSON.
    assert len(stored) == 2
    state = MsgpackTranscoder().decode(stored[0].state)
    assert_same(state["amount"], Decimal("99.90"))
    assert_same(state["lines"], lines)
    assert state["mode"] is Mode.DRAFT
