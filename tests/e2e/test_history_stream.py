"""The live history over a real ``campus serve``: Server-Sent Events read with httpx.

An auditor opens ``GET /v1/console/history/stream``, gets the school's history so
far, then sees each new event arrive as the manager works; after a disconnection
``Last-Event-ID`` brings exactly the missed events, no duplicate. The stream
keeps to its school and its filters, ends when its console session ends, and
never holds up a shutdown.

The servers run with ``CAMPUS_HISTORY_HEARTBEAT_SECONDS=1`` so a quiet stream
shows its keep-alive comments (and checks its session) within a test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

STREAM = "/v1/console/history/stream"
HEARTBEAT_ENV = {"CAMPUS_HISTORY_HEARTBEAT_SECONDS": "1"}
EVENT_FIELDS = {"position", "timestamp", "type", "aggregate_id", "aggregate_type", "version", "actor",
                "request_id", "client_address", "reason", "data"}


class SseReader:
    """Reads an open ``text/event-stream`` answer message by message (the SSE wire format)."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()
        self.comments: list[str] = []
        self.raw: list[str] = []  # every line received, to look for secrets
        self.ended = False

    def next_message(self, max_comments: int | None = None) -> dict[str, Any] | None:
        """The next message (id, event, data decoded), or None when the server ended the stream.

        With `max_comments`, fails once that many comments came and neither a message nor the end.
        """
        fields: dict[str, str] = {}
        comments = 0
        for line in self.lines:
            self.raw.append(line)
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                comments += 1
                assert max_comments is None or comments <= max_comments, \
                    f"the stream is still open after {max_comments} keep-alives"
            elif line == "":
                if "data" in fields:
                    return {"id": fields.get("id"), "event": fields.get("event"), "data": json.loads(fields["data"])}
                fields = {}
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        self.ended = True
        return None

    def messages(self, count: int) -> list[dict[str, Any]]:
        got = []
        for _ in range(count):
            message = self.next_message()
            assert message is not None, f"the stream ended after {len(got)} of {count} messages"
            got.append(message)
        return got

    def next_comment(self) -> str:
        """Skip to the next comment line (a keep-alive); fails if a message comes first."""
        seen = len(self.comments)
        for line in self.lines:
            self.raw.append(line)
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                return self.comments[seen]
            assert line == "", f"a message arrived while the history was quiet: {line!r}"
        raise AssertionError("the stream ended")


@contextmanager
def open_stream(server, headers: dict[str, str],  # noqa: ANN001
                **params: Any) -> Iterator[tuple[httpx.Response, SseReader]]:
    with server.new_client() as http, http.stream("GET", STREAM, headers=headers, params=params) as response:
        yield response, SseReader(response)


def as_messages(events: list[dict]) -> list[dict]:
    """What the stream must send for these events of the list."""
    return [{"id": str(e["position"]), "event": e["type"], "data": e} for e in events]


def ready_console(guide) -> None:  # noqa: ANN001
    guide.read_operator_token()
    guide.open_account()
    guide.login(invoice=True)
    guide.accept_licence()


# -- following live, then resuming ---------------------------------------------------------------------------

@pytest.mark.parametrize("store", [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)])
def test_stream_sends_the_history_then_new_events_and_resumes_after_last_event_id(
        make_server, guide_for, store: str) -> None:
    # Given a school whose manager has opened the console
    server = make_server(store, extra_env=HEARTBEAT_ENV)
    guide = guide_for(server)
    ready_console(guide)
    backlog = guide.history()
    assert len(backlog) >= 4

    # When an auditor opens the stream
    with open_stream(server, guide.console()) as (response, reader):
        # Then it is an event stream that first sends the whole history so far, as the list shows it
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        first = reader.messages(len(backlog))
        assert first == as_messages(backlog)
        assert set(first[0]["data"]) == EVENT_FIELDS

        # And the manager's next actions arrive as they are recorded
        last = backlog[-1]["position"]
        guide.bind_controller("monecole")
        guide.create_user("afilaire", "FILAIRE", "Alain")
        live = guide.history(after=last)
        assert {"Controller.DomainBound", "DirectoryUser.Created"} <= {e["type"] for e in live}
        assert reader.messages(len(live)) == as_messages(live)
        # And while nothing happens, keep-alive comments flow
        assert reader.next_comment() == "keep-alive"
        seen_until = live[-1]["position"]
    # (the auditor disconnects)

    # When the manager works while nobody listens
    guide.create_user("bsimon", "SIMON", "Berthe")
    planning = guide.planning(1)
    guide.update_planning(planning["id"], name="Année en cours")
    missed = guide.history(after=seen_until)
    assert len(missed) >= 2

    # And the auditor reconnects with the id of the last event it got (which wins over the URL's `after`,
    # as an EventSource reconnects to the same URL)
    with open_stream(server, {**guide.console(), "Last-Event-ID": str(seen_until)}, after=0) as (response, reader):
        # Then it gets exactly the missed events
        assert response.status_code == 200
        assert reader.messages(len(missed)) == as_messages(missed)
        # And nothing else before the next new event (no duplicate, no gap)
        guide.create_user("cdurand", "DURAND", "Claire")
        newest = guide.history(after=missed[-1]["position"])
        assert reader.messages(len(newest)) == as_messages(newest)
        # And no secret ever crossed the stream
        text = "\n".join(reader.raw)
        for what, secret in guide.secrets().items():
            assert secret not in text, f"the {what} is in the stream"
        assert '"password_hash":"[redacted]"' in text


def test_stream_keeps_to_its_school_and_its_filters_and_ends_with_its_session(make_server, guide_for) -> None:
    # Given two schools on one server
    server = make_server(extra_env=HEARTBEAT_ENV)
    school_a, school_b = guide_for(server), guide_for(server)
    ready_console(school_a)
    school_b.read_operator_token()
    school_b.open_account()
    school_b.login(invoice=True)
    school_b.accept_licence()
    a1, a2 = school_a.planning(1), school_a.planning(2)
    b2 = school_b.planning(2)
    start = school_a.history()[-1]["position"]

    # When school A's auditor follows planning02 only, from now on (?after=)
    with open_stream(server, school_a.console(), planning_id=a2["id"], after=start) as (response, reader):
        assert response.status_code == 200
        # And events happen on A's planning01, A's planning02 and B's planning02
        school_a.update_planning(a1["id"], time_zone="Europe/Paris")
        school_b.update_planning(b2["id"], time_zone="Europe/Paris")
        school_a.update_planning(a2["id"], time_zone="Indian/Reunion")
        school_b.update_planning(b2["id"], name="Suivante B")
        school_a.update_planning(a2["id"], name="Suivante A")
        # Then only A's planning02 events arrive, in order, as the filtered list has them
        expected = school_a.history(after=start, planning_id=a2["id"])
        assert [e["type"] for e in expected] == ["Planning.TimeZoneChanged", "Planning.Renamed"]
        assert {e["aggregate_id"] for e in expected} == {a2["id"]}
        assert reader.messages(len(expected)) == as_messages(expected)

        # When the manager closes that console session
        closed = server.client.delete("/v1/console/sessions/current", headers=school_a.console())
        assert closed.status_code == 204, closed.text
        # Then the stream ends (at its next keep-alive), having sent nothing else
        assert reader.next_message(max_comments=3) is None and reader.ended

    # And a closed session cannot open a stream again
    refused = server.client.get(STREAM, headers=school_a.console())
    assert refused.status_code == 401


# -- shutdown ---------------------------------------------------------------------------------------------

def test_sigterm_with_an_open_stream_stops_the_server_promptly(make_server, guide_for) -> None:
    # Given an auditor following the history (the default 15 s keep-alive: the stream is quiet)
    server = make_server()
    guide = guide_for(server)
    ready_console(guide)
    backlog = guide.history()
    with open_stream(server, guide.console()) as (response, reader):
        assert reader.messages(len(backlog)) == as_messages(backlog)

        # When the server receives SIGTERM while the stream is open
        code = server.stop(close_clients=False)

        # Then the server ended the stream cleanly (the body is complete, nothing more came)
        assert reader.next_message() is None and reader.ended
    # And it exited by itself, without waiting out the graceful-shutdown timeout
    assert code in (0, -15), server.stderr()
    logs = server.logs()
    assert "timeout graceful shutdown exceeded" not in logs
    assert "Traceback" not in logs
    assert not [r for r in server.json_lines() if r.get("level") in ("error", "critical")]

    # And after a restart the stream resumes where it stopped
    server.start()
    guide.create_user("afilaire", "FILAIRE", "Alain")
    missed = guide.history(after=backlog[-1]["position"])
    with open_stream(server, {**guide.console(), "Last-Event-ID": str(backlog[-1]["position"])}) as (_, reader):
        assert reader.messages(len(missed)) == as_messages(missed)
