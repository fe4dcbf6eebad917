"""`campus serve --workers 2`: two worker processes on one port, one store (issue 9, "Many processes").

Both workers start (two ``started`` lines, two process ids); a school is set up
through the one port; concurrent renames of its two plannings to one name,
spread over both workers by the kernel, never leave two plannings with the same
name; and a write answered by one worker is in the history read right after,
whichever worker answers the read. On SQLite (the workers share the data dir's
file and lock files) and on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from server_tools import open_console

pytestmark = pytest.mark.e2e


def wait_for_workers(server, count: int, timeout: float = 30.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        pids = {line["pid"] for line in server.json_lines() if line.get("event") == "started" and "pid" in line}
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)


def test_two_workers_on_one_store(make_server, store: str) -> None:
    server = make_server(store, extra_args=["--workers", "2"],
                         extra_env={"CAMPUS_OPERATOR_TOKEN": "workers-operator-token-0123456789abcdef"})
    assert len(wait_for_workers(server, 2)) == 2, server.stderr()

    http = server.client
    _, console = open_console(http, "workers-operator-token-0123456789abcdef", "École Deux")
    plannings = [p["id"] for p in http.get("/v1/console/plannings", headers=console).json()["plannings"]]

    # Concurrent renames of both plannings to one name, on fresh connections (spread over the workers)
    def rename(planning_id: str, name: str, barrier: threading.Barrier) -> int:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            barrier.wait()
            return client.patch(f"/v1/console/plannings/{planning_id}", headers=console,
                                json={"name": name}).status_code

    with ThreadPoolExecutor(2) as pool:
        for round_ in range(8):
            barrier = threading.Barrier(2)
            statuses = sorted(pool.map(lambda p: rename(p, f"Même nom {round_}", barrier), plannings))
            assert statuses == [200, 409], statuses
            names = [p["name"] for p in http.get("/v1/console/plannings", headers=console).json()["plannings"]]
            assert len(set(names)) == 2, names

    # A write answered by one worker is in the history read right after, on any worker
    for i in range(6):
        with httpx.Client(base_url=server.base_url, timeout=30) as writer:
            bound = writer.put("/v1/console/controller/domain", headers=console, json={"name": f"deux-{i}"})
            assert bound.status_code == 200, bound.text
        with httpx.Client(base_url=server.base_url, timeout=30) as reader:
            page = reader.get("/v1/console/history", headers=console,
                              params={"type": "Controller.DomainBound", "limit": 100})
            assert page.status_code == 200, page.text
            assert [e["data"]["label"] for e in page.json()["events"]][-1] == f"deux-{i}"
    assert "Traceback" not in server.stderr()
