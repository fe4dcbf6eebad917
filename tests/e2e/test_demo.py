"""``campus demo`` builds a school with 30 days of activity that a real ``campus serve``
then serves: the printed credentials log in, the restore window goes back about 30
days, the past differs from now, the saves and archives are there, and a restore works.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

DEMO_TIMEOUT = 600  # a safety net for a stuck process, not a performance check


def run_demo(server: Any, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "campus", "demo", "--data-dir", str(server.data_dir), *extra],
                          env=server.env, cwd=server.workdir, capture_output=True, text=True, timeout=DEMO_TIMEOUT)


def printed(out: str, label: str) -> str:
    found = re.search(rf"^\s*{label}:\s+(\S+)\s*$", out, re.MULTILINE)
    assert found, f"{label!r} is not printed:\n{out}"
    return found.group(1)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url.path} -> {response.status_code}: {response.text}"
    return response.json()


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_campus_demo_then_serve(make_server) -> None:
    server = make_server(start=False)
    done = run_demo(server, "--seed", "7")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    hosting_number = printed(out, "hosting number")
    console_password = printed(out, "console password")
    invoice_number = printed(out, "invoice number")
    users = dict(re.findall(r"^\s{4}(prof\.martin|vie\.scolaire|inspection)\s+(\S+)\s", out, re.MULTILINE))
    assert set(users) == {"prof.martin", "vie.scolaire", "inspection"}, out
    assert f"campus serve --data-dir {server.data_dir}" in out
    assert "/restore-window" in out and "/base?as_of=" in out

    # A second run on the same data dir is refused: exit 2, a clear message, nothing touched.
    store = server.data_dir / "campus.sqlite3"
    before = store.stat().st_mtime_ns
    again = run_demo(server)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "already holds a campus store" in again.stderr and again.stdout == ""
    assert store.stat().st_mtime_ns == before

    server.start()
    http = server.client
    session = ok(http.post("/v1/console/sessions", json={
        "hosting_number": hosting_number, "password": console_password, "invoice_number": invoice_number}), 201)
    console = {"Authorization": f"Bearer {session['token']}"}
    planning = ok(http.get("/v1/console/plannings", headers=console))["plannings"][0]
    url = f"/v1/console/plannings/{planning['id']}"

    now = datetime.now(UTC)
    window = ok(http.get(f"{url}/restore-window", headers=console))
    earliest = instant(window["earliest"])
    assert now - timedelta(days=30, hours=1) < earliest < now - timedelta(days=29, hours=23), window

    current = ok(http.get(f"{url}/base", headers=console))
    assert current["server_state"] == "in_service"
    # In service with the .net licence: its spaces are published at the planning's own address.
    publication = ok(http.get(f"{url}/publication", headers=console))
    assert publication["state"] == "published"
    assert any((space.get("desktop_url") or "").startswith("https://college-demo-annee.")
               for space in publication["spaces"]), publication["spaces"]
    ten_days_ago = (now - timedelta(days=10)).isoformat()
    past = ok(http.get(f"{url}/base", headers=console, params={"as_of": ten_days_ago}))
    assert past["counts"] != current["counts"]
    assert sum(past["counts"].values()) < sum(current["counts"].values())
    assert past["counts"]["grades"] < current["counts"]["grades"]

    backups = ok(http.get(f"{url}/backups", headers=console))["backups"]
    saves = [b for b in backups if b["kind"] == "save"]
    archives = [b for b in backups if b["kind"] == "archive"]
    assert len(saves) >= 12 and len(archives) >= 29, [b["name"] for b in backups]
    assert {b["status"] for b in backups} == {"ok"}
    oldest = archives[-1]
    assert instant(oldest["taken_at"]) < now - timedelta(days=28)
    download = http.get(f"{url}/backups/{oldest['id']}/download", headers=console)
    assert download.status_code == 200 and len(download.content) == oldest["size"]

    # The users of several profiles log in with the printed passwords and read the records.
    for login, mode in (("prof.martin", "teacher"), ("vie.scolaire", "school_life"), ("inspection", "administrative")):
        token = ok(http.post("/v1/sessions", json={"domain": "college-demo", "login": login, "password": users[login],
                                                   "planning": planning["id"], "mode": mode}), 201)["token"]
        grades = ok(http.get(f"/v1/plannings/{planning['id']}/records/grades", params={"limit": 1000},
                             headers={"Authorization": f"Bearer {token}"}))["records"]
        assert len(grades) == current["counts"]["grades"]

    # Try a restore, as the printed instructions say: stop, restore to 10 days ago, undo.
    ok(http.put(f"{url}/server", headers=console, json={"state": "stopped"}))
    restored = ok(http.post(f"{url}/restores", headers=console,
                            json={"as_of": ten_days_ago, "confirm": True, "reason": "trying the demo"}), 201)
    assert restored["base"]["counts"] == past["counts"]
    undone = ok(http.post(f"{url}/restores", headers=console,
                          json={"as_of": restored["undo"]["as_of"], "confirm": True}), 201)
    assert undone["base"]["counts"] == current["counts"]
    from_archive = ok(http.post(f"{url}/restores", headers=console,
                                json={"backup_id": oldest["id"], "confirm": True}), 201)
    assert from_archive["source"] == "file" and from_archive["warning"] is None
    assert from_archive["base"]["counts"] == oldest["counts"]
