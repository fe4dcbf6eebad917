"""The documented HAProxy configuration, for real, in front of two servers on one PostgreSQL schema.

docs/deploy/haproxy.cfg is read as shipped; only its `bind` and `server` lines are
replaced by local ones (and the health-check interval shortened). Through the
proxy a hosting manager sets a school up; requests are spread over both
servers; one server is killed (SIGKILL) and every later request still succeeds
(connection failures are redispatched, the health check takes it out); the
live history stream works through the proxy.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_tools import open_console

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CONFIG = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "haproxy.cfg"
TOKEN = "cluster-operator-token-0123456789abcdef"  # make_cluster's shared operator token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_config(ports: list[int], listen: int) -> str:
    text = CONFIG.read_text()
    text = re.sub(r"(?m)^\s*bind :80\s*$", f"    bind 127.0.0.1:{listen}", text)
    assert f"bind 127.0.0.1:{listen}" in text, "the documented config has no `bind :80` line any more"
    servers = [line for line in text.splitlines() if line.strip().startswith("server ")]
    assert len(servers) >= 2, "the documented config lists at least two servers"
    text = re.sub(r"(?m)^\s*server .*\n", "", text)
    text = text.replace("default-server check inter 2s", "default-server check inter 300ms")
    assert "inter 300ms" in text
    text += "".join(f"    server campus{i} 127.0.0.1:{port}\n" for i, port in enumerate(ports, 1))
    return text


@pytest.fixture
def haproxy(tmp_path: Path):
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.skip("haproxy is not installed (the Makefile's set-up installs it with apt-get when run as root)")
    started: list[subprocess.Popen] = []

    def start(ports: list[int]) -> str:
        listen = free_port()
        path = tmp_path / "haproxy.cfg"
        path.write_text(local_config(ports, listen))
        check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        process = subprocess.Popen([binary, "-db", "-f", str(path)], stdout=subprocess.DEVNULL,
                                   stderr=open(tmp_path / "haproxy.log", "wb"))
        started.append(process)
        url = f"http://127.0.0.1:{listen}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail("haproxy did not answer: " + (tmp_path / "haproxy.log").read_text())

    yield start
    for process in started:
        process.terminate()
        process.wait(5)


def test_two_servers_behind_the_documented_haproxy(make_cluster, haproxy) -> None:
    servers = make_cluster(2, "postgres", extra_env={"CAMPUS_TRUSTED_PROXIES": "127.0.0.1"})
    url = haproxy([s.port for s in servers])
    with httpx.Client(base_url=url, timeout=15) as http:
        # A hosting manager sets a school up through the proxy
        _, console = open_console(http, TOKEN, "École Proxy")
        for i in range(20):
            answer = http.get("/v1/console/plannings", headers=console)
            assert answer.status_code == 200, answer.text
        # Then requests went to both servers
        for server in servers:
            assert server.wait_for_request_lines(3), f"{server.base_url} received no request"

        # The live history stream goes through the proxy
        received: list[str] = []

        def follow() -> None:
            with httpx.Client(base_url=url, timeout=15) as stream_client, stream_client.stream(
                    "GET", "/v1/console/history/stream", headers=console) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:") and "DomainBound" in line:
                        received.append(line)
                        return

        listener = threading.Thread(target=follow, daemon=True)
        listener.start()
        time.sleep(0.5)
        bound = http.put("/v1/console/controller/domain", headers=console, json={"name": "ecole-proxy"})
        assert bound.status_code == 200, bound.text
        listener.join(15)
        assert received, "the DomainBound event never reached the stream through the proxy"

        # When one server is killed, every later request still succeeds
        servers[0].kill()
        for i in range(30):
            answer = http.patch(f"/v1/console/plannings/{http.get('/v1/console/plannings', headers=console).json()['plannings'][0]['id']}",
                                headers=console, json={"name": f"Planning {i}"})
            assert answer.status_code == 200, answer.text
        assert http.get("/v1/console/plannings", headers=console).json()["plannings"][0]["name"] == "Planning 29"
