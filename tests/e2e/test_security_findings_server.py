"""Issue 9, point 4, against a real ``campus serve``: what only a real server shows.

* the live history stream ends with its session: before sending an event, and within
  ``CAMPUS_HISTORY_SESSION_CHECK_SECONDS`` while quiet;
* a client gone in the middle of its body is one log line, status 499, no traceback;
* an upload that fills the disk (a real, small tmpfs mounted as ``<data dir>/tmp``) answers 507
  with ``Retry-After`` and leaves no partial file;
* an unusable data dir (a file, a path under a file, a read-only mount) and a short operator
  token stop ``campus serve`` (and ``demo``, ``snapshots verify``) with one clear line.

Mounting needs root (CAP_SYS_ADMIN): where the kernel refuses, those tests are skipped and say why.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_tools import tmpfs

pytestmark = pytest.mark.e2e

STREAM = "/v1/console/history/stream"
QUIET = {"CAMPUS_HISTORY_HEARTBEAT_SECONDS": "600"}  # no keep-alive (nor its session check) within a test


def ready_console(guide) -> None:  # noqa: ANN001
    guide.read_operator_token()
    guide.open_account()
    guide.login(invoice=True)
    guide.accept_licence()


def sse_lines(response: httpx.Response) -> Iterator[str]:
    yield from response.iter_lines()


def read_messages(lines: Iterator[str], count: int) -> list[dict]:
    """`count` SSE messages (comments skipped); fails if the stream ends first."""
    messages, fields = [], {}
    for line in lines:
        if line.startswith(":"):
            continue
        if line == "":
            if "data" in fields:
                messages.append(json.loads(fields["data"]))
                if len(messages) == count:
                    return messages
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    raise AssertionError(f"the stream ended after {len(messages)} of {count} messages")


def rest_of_stream(lines: Iterator[str]) -> list[str]:
    """The lines until the server ends the stream, or up to the first line that is not blank (httpx raises
    ReadTimeout if the stream neither ends nor sends anything)."""
    rest = []
    for line in lines:
        rest.append(line)
        if line.strip():
            break
    return rest


# -- 3. the live history stream and its session ---------------------------------------------------------------
def test_the_stream_sends_nothing_once_its_session_is_closed(make_server, guide_for) -> None:
    # Given an auditor following the history, with no keep-alive nor periodic session check for ten minutes
    server = make_server(extra_env={**QUIET, "CAMPUS_HISTORY_SESSION_CHECK_SECONDS": "600"})
    guide = guide_for(server)
    ready_console(guide)
    auditor = guide.token
    backlog = guide.history()
    with server.new_client(timeout=30.0) as http, \
            http.stream("GET", STREAM, headers=guide.console(auditor)) as response:
        assert response.status_code == 200
        lines = sse_lines(response)
        assert [m["position"] for m in read_messages(lines, len(backlog))] == [e["position"] for e in backlog]
        # When that console session is closed, and the manager works in another one
        closed = server.client.delete("/v1/console/sessions/current", headers=guide.console(auditor))
        assert closed.status_code == 204, closed.text
        guide.login(certificate=guide.certificate)
        guide.bind_controller("monecole")
        assert [e for e in guide.history() if e["type"] == "Controller.DomainBound"]
        # Then the stream ends without sending that event (or anything else): checked before sending
        rest = rest_of_stream(lines)
    assert not [line for line in rest if line.strip()], f"sent after the session was closed: {rest}"


def test_a_quiet_stream_ends_within_the_check_interval_after_logout(make_server, guide_for) -> None:
    # Given a quiet stream (no keep-alive for ten minutes) whose session is checked every second
    server = make_server(extra_env={**QUIET, "CAMPUS_HISTORY_SESSION_CHECK_SECONDS": "1"})
    guide = guide_for(server)
    ready_console(guide)
    backlog = guide.history()
    with server.new_client(timeout=30.0) as http, \
            http.stream("GET", STREAM, headers=guide.console()) as response:
        lines = sse_lines(response)
        read_messages(lines, len(backlog))
        # When the session is closed while nothing happens
        assert server.client.delete("/v1/console/sessions/current", headers=guide.console()).status_code == 204
        # Then the server ends the stream by itself (long before a keep-alive or the client's timeout)
        rest = rest_of_stream(lines)
    assert not [line for line in rest if line.strip()], rest


# -- 4. a client gone in the middle of its body ------------------------------------------------------------------
def send_part_of_a_body(server, method: str, path: str, headers: dict[str, str], declared: int,  # noqa: ANN001
                        sent: bytes) -> None:
    """Open a socket, send the headers and `sent` of a body declared `declared` bytes long, hang up."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode() + sent)
        time.sleep(0.3)  # the server is reading the body when the client goes
        sock.shutdown(socket.SHUT_RDWR)


def lines_of(server, request_id: str, timeout: float = 10.0) -> list[dict]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in server.json_lines() if r.get("request_id") == request_id]
        if any(r.get("event") == "request" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_client_gone_mid_body_is_one_log_line_with_status_499(make_server, guide_for) -> None:
    server = make_server()
    guide = guide_for(server)
    ready_console(guide)
    planning = guide.planning(1)
    cases = {
        # a JSON body (read under the body cap, before the credentials)
        "json": ("POST", "/v1/operator/accounts", {"Content-Type": "application/json"}, 5000, b'{"establishment": '),
        # an upload, spooled to a temporary file
        "upload": ("POST", f"/v1/console/plannings/{planning['id']}/bases/load",
                   {"Authorization": f"Bearer {guide.token}", "Content-Type": "application/octet-stream"},
                   10_000_000, b"x" * 200_000),
    }
    for name, (method, path, headers, declared, sent) in cases.items():
        request_id = f"gone-{name}-{uuid.uuid4().hex[:8]}"
        send_part_of_a_body(server, method, path, {**headers, "X-Request-ID": request_id}, declared, sent)
        found = lines_of(server, request_id)
        # Then exactly one line for that request: the request line, status 499
        assert [(r.get("event"), r.get("status")) for r in found] == [("request", 499)], (name, found)
    # And nothing of it in the log looks like a failure of ours
    logs = server.logs()
    assert "Traceback" not in logs and "Exception in ASGI application" not in logs
    assert not [r for r in server.json_lines() if r.get("level") in ("error", "critical")]
    assert not list((server.data_dir / "tmp").glob("*")), "the partial upload was left behind"
    # And the server goes on answering
    assert server.client.get("/healthz").status_code == 200


# -- 5. a full disk while an upload is spooled ---------------------------------------------------------------------
def test_an_upload_that_fills_the_disk_answers_507_and_leaves_no_partial_file(make_server, guide_for) -> None:
    # Given a server whose upload folder (<data dir>/tmp) is a 1 MB filesystem
    server = make_server(start=False)
    with tmpfs(server.data_dir / "tmp", size="1m") as folder:
        server.start()
        guide = guide_for(server)
        ready_console(guide)
        planning = guide.planning(1)
        # When a 3 MB base file is uploaded
        r = server.client.post(f"/v1/console/plannings/{planning['id']}/bases/load", headers={
            **guide.console(), "Content-Type": "application/octet-stream"}, content=os.urandom(3 * 1024 * 1024))
        # Then the answer is a problem 507 naming the problem, with Retry-After
        assert r.status_code == 507, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert body["status"] == 507 and body["code"] == "insufficient_storage"
        assert "no space left" in body["detail"] and "nothing was changed" in body["detail"]
        assert int(r.headers["Retry-After"]) > 0
        # And no partial file is left: the folder is empty and its space free again
        assert list(folder.iterdir()) == []
        assert os.statvfs(folder).f_bfree == os.statvfs(folder).f_blocks
        # And the server goes on: a small upload is spooled and read (a bad file: 422, not 500)
        small = server.client.post(f"/v1/console/plannings/{planning['id']}/bases/load", headers={
            **guide.console(), "Content-Type": "application/octet-stream"}, content=b"not a campus file")
        assert small.status_code in (409, 422), small.text
        logs = server.logs()
        assert "Traceback" not in logs
        assert not [line for line in server.json_lines() if line.get("level") in ("error", "critical")]
        server.stop()


# -- 6 and 9. refusals at start-up ------------------------------------------------------------------------------------
def campus(*args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CAMPUS_", "POSTGRES_"))}
    base["PYTHONUNBUFFERED"] = "1"
    try:
        return subprocess.run([sys.executable, "-m", "campus", *args], env={**base, **(env or {})}, cwd=cwd,
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"campus {' '.join(args)} was still running after 30 s instead of refusing to start: "
                    f"{exc.stderr!r}")


def assert_one_clear_line(result: subprocess.CompletedProcess, *parts: str) -> None:
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    for part in parts:
        assert part.lower() in lines[0].lower(), f"{part!r} not in {lines[0]!r}"


def test_an_unusable_data_dir_stops_the_commands_with_one_clear_line(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("a regular file")
    under_a_file = a_file / "data"
    cases: list[tuple[list[str], tuple[str, ...]]] = [
        (["serve", "--data-dir", str(a_file)], (str(a_file), "not a directory")),
        (["serve", "--data-dir", str(under_a_file)], (str(under_a_file), "cannot be created")),
        (["demo", "--data-dir", str(a_file)], (str(a_file), "not a directory")),
        (["demo", "--data-dir", str(under_a_file)], (str(under_a_file), "cannot be created")),
        (["snapshots", "verify", "--data-dir", str(a_file)], (str(a_file), "not a directory")),
    ]
    for args, parts in cases:
        assert_one_clear_line(campus(*args, cwd=tmp_path), *parts)


def test_a_read_only_data_dir_stops_serve_with_one_clear_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", size="1m", read_only=True) as read_only:
        assert_one_clear_line(campus("serve", "--data-dir", str(read_only), cwd=tmp_path),
                              str(read_only), "read-only")
        assert_one_clear_line(campus("serve", "--data-dir", str(read_only / "var"), cwd=tmp_path),
                              str(read_only / "var"), "read-only")


def test_a_short_operator_token_stops_serve_with_one_clear_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = campus("serve", "--data-dir", str(data), env={"CAMPUS_OPERATOR_TOKEN": "x"}, cwd=tmp_path)
    assert_one_clear_line(result, "CAMPUS_OPERATOR_TOKEN", "32")
    # The same for a token file someone wrote by hand
    data.mkdir(exist_ok=True)
    (data / "operator-token").write_text("short-token\n")
    result = campus("serve", "--data-dir", str(data), cwd=tmp_path)
    assert_one_clear_line(result, str(data / "operator-token"), "32")


def test_a_long_enough_operator_token_is_accepted(make_server: Any) -> None:
    token = "t" * 32
    server = make_server(extra_env={"CAMPUS_OPERATOR_TOKEN": token})
    r = server.client.post("/v1/operator/accounts", headers={"Authorization": f"Bearer {token}"},
                           json={"establishment": "E", "manager": {"name": "N", "email": "n@e.fr"}})
    assert r.status_code == 201, r.text
