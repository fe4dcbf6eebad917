"""MessagePack transcoder for stored event state.

:class:`MsgpackTranscoder` encodes the state of domain events with msgpack.
Types msgpack has no exact equivalent for are written as msgpack "ext"
values, using the ``EXT_*`` codes below.  Stored events depend on these
codes and payload formats, so once shipped they must never change: add new
codes, never reuse or renumber old ones.

Types are matched exactly (``type(obj) is ...``) because decoding cannot
rebuild subclasses; the one exception is :class:`enum.Enum`, whose members
are stored by class topic and value and looked up again when decoded.
Anything else raises :class:`TypeError`.  Aware datetimes and times come
back with a fixed-offset :class:`datetime.timezone` that has the same UTC
offset (a ``zoneinfo`` zone name and ``fold`` are not kept).  msgpack
itself writes ``bytearray`` and ``memoryview`` as binary, so they decode as
``bytes``.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID, SafeUUID

import msgpack
from eventsourcing.persistence import Transcoder
from eventsourcing.utils import get_topic, resolve_topic

# Ext type codes (0-127 is msgpack's application range). NEVER CHANGE THESE.
EXT_BIGINT = 1  # int outside msgpack's 64-bit range: signed big-endian bytes
EXT_UUID = 2  # uuid.UUID: the 16 raw bytes
EXT_DATETIME = 3  # datetime (naive or aware): UTF-8 isoformat()
EXT_DATE = 4  # date: UTF-8 isoformat()
EXT_TIME = 5  # time (naive or aware): UTF-8 isoformat()
EXT_TIMEDELTA = 6  # timedelta: struct ">iII" of (days, seconds, microseconds)
EXT_DECIMAL = 7  # decimal.Decimal: UTF-8 str()
EXT_ENUM = 8  # enum member: msgpack [class topic, member value]
EXT_TUPLE = 9  # tuple: msgpack array of its items
EXT_SET = 10  # set: msgpack array of its items
EXT_FROZENSET = 11  # frozenset: msgpack array of its items

_TIMEDELTA = struct.Struct(">iII")


def _pack(obj: Any) -> bytes:
    return msgpack.packb(
        obj,
        default=_default,
        use_bin_type=True,
        strict_types=True,
        datetime=False,
    )


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(
        data,
        ext_hook=_ext_hook,
        raw=False,
        strict_map_key=False,
    )


def _encode_bigint(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)


def _encode_timedelta(td: timedelta) -> bytes:
    return _TIMEDELTA.pack(td.days, td.seconds, td.microseconds)


def _encode_items(items: tuple[Any, ...] | set[Any] | frozenset[Any]) -> bytes:
    return _pack(list(items))


_ENCODERS: dict[type, tuple[int, Callable[[Any], bytes]]] = {
    int: (EXT_BIGINT, _encode_bigint),
    UUID: (EXT_UUID, lambda u: u.bytes),
    datetime: (EXT_DATETIME, lambda d: d.isoformat().encode()),
    date: (EXT_DATE, lambda d: d.isoformat().encode()),
    time: (EXT_TIME, lambda t: t.isoformat().encode()),
    timedelta: (EXT_TIMEDELTA, _encode_timedelta),
    Decimal: (EXT_DECIMAL, lambda d: str(d).encode()),
    tuple: (EXT_TUPLE, _encode_items),
    set: (EXT_SET, _encode_items),
    frozenset: (EXT_FROZENSET, _encode_items),
}

def _decode_uuid(b: bytes) -> UUID:
    """UUID(bytes=b) without its argument checks (the 16 bytes come from our own encoder): a third of
    the time, and a replay decodes millions of them."""
    uuid = object.__new__(UUID)
    object.__setattr__(uuid, "int", int.from_bytes(b, "big"))
    object.__setattr__(uuid, "is_safe", SafeUUID.unknown)
    return uuid


# Values that repeat (instants, dates, amounts, enum members: immutable) are parsed once per payload.
_cached = functools.lru_cache(maxsize=65_536)

_DECODERS: dict[int, Callable[[bytes], Any]] = {
    EXT_BIGINT: lambda b: int.from_bytes(b, "big", signed=True),
    EXT_UUID: _decode_uuid,
    EXT_DATETIME: _cached(lambda b: datetime.fromisoformat(b.decode())),
    EXT_DATE: _cached(lambda b: date.fromisoformat(b.decode())),
    EXT_TIME: _cached(lambda b: time.fromisoformat(b.decode())),
    EXT_TIMEDELTA: lambda b: timedelta(*_TIMEDELTA.unpack(b)),
    EXT_DECIMAL: _cached(lambda b: Decimal(b.decode())),
    EXT_ENUM: _cached(lambda b: _decode_enum(*_unpack(b))),
    EXT_TUPLE: lambda b: tuple(_unpack(b)),
    EXT_SET: lambda b: set(_unpack(b)),
    EXT_FROZENSET: lambda b: frozenset(_unpack(b)),
}


def _decode_enum(topic: str, value: Any) -> Enum:
    enum_cls = resolve_topic(topic)
    return enum_cls(value)  # type: ignore[no-any-return]


def _default(obj: Any) -> msgpack.ExtType:
    # Called by msgpack for every object it will not pack natively: with
    # strict_types=True that includes tuples and subclasses of builtins (so
    # StrEnum/IntEnum members arrive here), and ints out of 64-bit range.
    try:
        code, encode = _ENCODERS[type(obj)]
    except KeyError:
        if isinstance(obj, Enum):
            payload = _pack([get_topic(type(obj)), obj.value])
            return msgpack.ExtType(EXT_ENUM, payload)
        msg = (
            f"Object of type {type(obj).__module__}.{type(obj).__qualname__} "
            f"is not supported by {MsgpackTranscoder.__name__}"
        )
        raise TypeError(msg) from None
    return msgpack.ExtType(code, encode(obj))


def _ext_hook(code: int, data: bytes) -> Any:
    decode = _DECODERS.get(code)
    if decode is None:
        msg = f"Unknown msgpack ext type code {code} in stored data"
        raise ValueError(msg)
    return decode(data)


class MsgpackTranscoder(Transcoder):
    """Encodes event state as msgpack, round-tripping domain value types."""

    def encode(self, obj: Any) -> bytes:
        """Encodes obj as msgpack bytes; raises TypeError if unsupported."""
        return _pack(obj)

    def decode(self, data: bytes) -> Any:
        """Decodes msgpack bytes produced by :meth:`encode`."""
        return _unpack(data)
