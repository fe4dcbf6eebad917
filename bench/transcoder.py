"""Side-by-side: campus's MsgpackTranscoder against the library's JSONTranscoder.

Both encode and decode the same realistic event states in one run; the result
is a ratio on this machine, written to bench/results/transcoder.json.

    .venv/bin/python bench/transcoder.py [--rounds 20000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder

from campus.aggregates.user import Status
from campus.infra.transcoder import MsgpackTranscoder


def sample_states() -> list[dict]:
    now = datetime(2026, 9, 1, 8, 0, tzinfo=timezone.utc)
    meta = {"actor": "manager:123456789012", "request_id": uuid4().hex, "client_address": "203.0.113.7",
            "tenant": str(uuid4())}
    return [
        {"timestamp": now, "meta": meta, "login": "pmartin", "last_name": "MARTIN", "first_name": "Pierre",
         "civility": None, "status": Status.SUPERADMINISTRATOR.value, "email": "pmartin@ecole.fr",
         "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$" + "x" * 60, "external_ids": {}},
        {"timestamp": now, "meta": meta, "profiles": {"administration": ["pmartin"], "modification": ["a", "b"],
                                                      "consultation": []}, "template": None},
        {"timestamp": now, "meta": meta, "account_id": uuid4(), "licence": {
            "formula": "PRONOTE Campus", "expires_on": date(2027, 9, 1), "modification_seats": 6,
            "options": ["edt_connection", "consultation", "sms", "web_publication"]}, "value": Decimal("15.5")},
    ]


def json_transcoder() -> JSONTranscoder:
    t = JSONTranscoder()
    Application().register_transcodings(t)  # UUID, Decimal, datetime — what the library offers
    return t


def measure(transcoder, states: list[dict], rounds: int) -> dict:
    encoded = [transcoder.encode(s) for s in states]
    start = time.perf_counter()
    for _ in range(rounds):
        for s in states:
            transcoder.encode(s)
    enc = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(rounds):
        for e in encoded:
            transcoder.decode(e)
    dec = time.perf_counter() - start
    n = rounds * len(states)
    return {"encode_us": enc / n * 1e6, "decode_us": dec / n * 1e6,
            "bytes": sum(len(e) for e in encoded) / len(encoded)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    # The JSON baseline cannot hold dates or enums: give it the same states as text.
    states = sample_states()
    json_states = [json.loads(json.dumps(s, default=str)) | {"timestamp": s["timestamp"]} for s in states]
    msgpack = measure(MsgpackTranscoder(), states, args.rounds)
    baseline = measure(json_transcoder(), json_states, args.rounds)
    result = {
        "what": "event state encode/decode, campus MsgpackTranscoder vs eventsourcing JSONTranscoder",
        "machine": platform.platform(), "python": platform.python_version(), "rounds": args.rounds,
        "msgpack": msgpack, "json_baseline": baseline,
        "ratio_encode": baseline["encode_us"] / msgpack["encode_us"],
        "ratio_decode": baseline["decode_us"] / msgpack["decode_us"],
        "ratio_size": baseline["bytes"] / msgpack["bytes"],
    }
    out = Path(__file__).parent / "results" / "transcoder.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
