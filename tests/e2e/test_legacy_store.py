"""A store written by earlier code is served unchanged by the current code (issue 10's third "Done when").

tests/fixtures/legacy-2026-12-02 was written on 2026-12-02 by tests/fixtures/make_legacy_store.py
with the code of main before issue 10 moved every use case into services: a demo school with a day of
records, saves and archives, a restore and its undo, a delegation, a mail account, user sessions and a
suspended address, and what the API answered about it. A real `campus serve` of today's code on a copy
of that store must answer the same: the console logs in with the same secrets, every read gives the
same JSON, the history starts with the same events (the scheduler may add saves and archives after),
and every stored event decodes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-2026-12-02"


def without_the_clock(answer: object) -> object:
    """An answer without what is computed from the clock at read time (whether a mail account's code has
    expired): the rest comes from the store alone."""
    if isinstance(answer, dict):
        return {k: without_the_clock(v) for k, v in answer.items() if k != "expired"}
    if isinstance(answer, list):
        return [without_the_clock(v) for v in answer]
    return answer


def test_a_store_written_before_is_served_unchanged(make_server, tmp_path: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    data = tmp_path / "legacy-data"
    shutil.copytree(FIXTURE / "data", data)
    server = make_server("sqlite", data_dir=data, extra_env={
        "CAMPUS_OPERATOR_TOKEN": expected["operator_token"], "CAMPUS_SNAPSHOTS_DIR": str(data / "snapshots")})
    http = server.client

    # The console logs in with the secrets of then
    login = http.post("/v1/console/sessions", json={
        "hosting_number": expected["hosting_number"], "password": expected["console_password"],
        "certificate": expected["certificate"]})
    assert login.status_code == 201, login.text
    console = {"Authorization": f"Bearer {login.json()['token']}"}
    user = http.post("/v1/sessions", json={"domain": "college-demo", "login": "direction",
                                           "password": expected["passwords"]["direction"],
                                           "planning": expected["planning_id"], "mode": "administrative"})
    assert user.status_code == 201, user.text
    as_user = {"Authorization": f"Bearer {user.json()['token']}"}

    # Every read answers what it answered then
    for path, answer in expected["reads"].items():
        headers = as_user if path.startswith("/v1/plannings/") else console
        now = http.get(path, headers=headers)
        assert now.status_code == 200, (path, now.text)
        assert without_the_clock(now.json()) == without_the_clock(answer), path

    # The history starts with the same events, in the same order, at the same positions
    history, after = [], None
    while True:
        page = http.get("/v1/console/history", headers=console,
                        params={"limit": 500, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        history += page.json()["events"]
        after = page.json()["next"]
        if after is None:
            break
    assert history[:len(expected["history"])] == expected["history"]
    added = {e["type"] for e in history[len(expected["history"]):]}
    assert added <= {"ConsoleSession.Opened", "UserSession.Opened",
                     "ConnectionBoard.Started", "ConnectionBoard.ConnectionOpened", "Backup.Taken",
                     "Backup.Discarded"}, added
    assert "Traceback" not in server.stderr()
