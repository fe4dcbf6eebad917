"""A large school loaded through the HTTP API of a real ``campus serve`` (issue 3).

Starts ``python -m campus serve`` on 127.0.0.1 (temporary data dir; SQLite, or
PostgreSQL in a schema of its own with ``--postgres DSN``), sets up a school
(controller active, superadministrator, a base in service on planning01, a user
with the modification profile) and loads, through
``POST /v1/plannings/{id}/records/{kind}`` with a pool of client threads (httpx,
keep-alive, one user session each): subjects, 150 teachers, 80 classes,
2,000 students and 60,000 grades.

"Loading must not hold the server's other requests for more than a second at a
time": a prober (a separate process, so that the loaders' own GIL does not
count against the server) sends ``GET /healthz``, a cheap console read
(``GET /v1/console/plannings``) and the base dashboard
(``GET /v1/console/plannings/{id}/base``, which takes the school's lock) every
50 ms from start to end. Its latencies are compared, in the same run, between
the idle server (the baseline, before the load) and each phase: the API load,
putting planning01's server back in service (the history catches up), the export, the load of the file into planning02.

Also timed: the dashboard read of the loaded base, the export and the file load
(skipped while those routes are not in ``/openapi.json``), the restart and the
first read after it. Results go to ``bench/results/large_school.json``.

    .venv/bin/python bench/large_school.py [--scale 0.1] [--threads 8] [--postgres DSN]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULT = Path(__file__).parent / "results" / "large_school.json"

FULL = {"subjects": 12, "teachers": 150, "classes": 80, "students": 2000, "grades": 60000}
GRID = {"name": "Grand établissement", "first_monday": "2026-08-31", "last_sunday": "2027-07-04",
        "working_days": ["mon", "tue", "wed", "thu", "fri"], "sequences_per_day": 10, "sequence_minutes": 55,
        "split": 1}
SUPERADMIN_PASSWORD = "Bench-Campus-2026!"
EXPORT_PATH = "/v1/console/plannings/{planning_id}/base/export"
LOAD_PATH = "/v1/console/plannings/{planning_id}/bases/load"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
MAX_RETRIES = 5  # per request, on 503 (store busy) and transport errors
MAX_ERRORS = 20  # refusals before the load gives up
MAX_PAGES = 10_000


# -- the server ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One ``campus serve`` subprocess on 127.0.0.1, restartable on the same data dir / schema / port."""

    def __init__(self, workdir: Path, postgres_dsn: str | None, extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.operator_token = secrets.token_urlsafe(32)
        self.schema = f"campus_bench_{uuid.uuid4().hex[:12]}" if postgres_dsn else None
        self.postgres_dsn = postgres_dsn
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CAMPUS_", "POSTGRES_", "SQLITE_", "PERSISTENCE_"))}
        env.update({"CAMPUS_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", "CAMPUS_OPERATOR_TOKEN": self.operator_token})
        if postgres_dsn:
            env["CAMPUS_POSTGRES_DSN"] = f"{postgres_dsn}{'&' if '?' in postgres_dsn else '?'}schema={self.schema}"
        env.update(extra_env or {})
        self.env = env
        self.process: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> float:
        """Start and wait for /healthz; returns the seconds it took."""
        out = open(self.workdir / f"stdout.{self.runs}.log", "wb")  # noqa: SIM115 - owned by the process
        err = open(self.workdir / f"stderr.{self.runs}.log", "wb")  # noqa: SIM115
        self.runs += 1
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "campus", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.workdir / "data")],
            env=self.env, cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        out.close()
        err.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(base_url=self.base_url, timeout=5.0) as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise SystemExit(f"campus serve exited with {self.process.returncode}: {self.stderr()[-2000:]}")
                try:
                    if probe.get("/healthz").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise SystemExit(f"campus serve did not answer /healthz within {STARTUP_TIMEOUT}s: {self.stderr()[-2000:]}")

    def stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return process.returncode

    def stderr(self) -> str:
        return "".join((self.workdir / f"stderr.{n}.log").read_text(errors="replace") for n in range(self.runs))

    def drop_schema(self) -> None:
        if not self.schema or not self.postgres_dsn:
            return
        import psycopg

        with psycopg.connect(self.postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def expect(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise SystemExit(f"{response.request.method} {response.request.url.path} -> {response.status_code}"
                         f" (wanted {status}): {response.text[:2000]}")
    return response.json() if response.content else None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the school ----------------------------------------------------------------------------------------
@dataclass
class School:
    console: str
    p1: str
    p2: str
    user_password: str
    domain: str = "bench"
    user: str = "chargement"


def set_up_school(server: Server) -> School:
    """Fiches 1-6 of the Campus guide, the short way: a base in service on planning01 and a loader user."""
    with httpx.Client(base_url=server.base_url, timeout=60.0) as http:
        account = expect(http.post("/v1/operator/accounts", headers=bearer(server.operator_token), json={
            "establishment": "Cité scolaire Bench", "manager": {"name": "Claire Dupont", "email": "c@bench.fr"}}), 201)
        console = expect(http.post("/v1/console/sessions", json={
            "hosting_number": account["hosting_number"], "password": account["console_password"],
            "invoice_number": account["invoice_number"]}), 201)["token"]
        h = bearer(console)
        expect(http.post("/v1/console/licence-agreement", headers=h), 200)
        expect(http.put("/v1/console/controller/domain", headers=h, json={"name": "bench"}), 200)
        expect(http.post("/v1/console/superadministrator", headers=h, json={
            "first_name": "Pierre", "last_name": "MARTIN", "login": "pmartin", "password": SUPERADMIN_PASSWORD,
            "password_confirmation": SUPERADMIN_PASSWORD}), 201)
        expect(http.post("/v1/console/controller/activation", headers=h), 200)
        plannings = expect(http.get("/v1/console/plannings", headers=h), 200)["plannings"]
        p1, p2 = (next(p["id"] for p in plannings if p["number"] == n) for n in (1, 2))
        base = expect(http.post(f"/v1/console/plannings/{p1}/bases", headers=h, json=GRID), 201)
        if base["server_state"] != "in_service":
            expect(http.put(f"/v1/console/plannings/{p1}/server", headers=h, json={"state": "in_service"}), 200)
        user = expect(http.post("/v1/console/users", headers=h, json={
            "login": "chargement", "last_name": "CHARGEMENT", "first_name": "Robot"}), 201)
        for planning in (p1, p2):
            expect(http.put(f"/v1/console/plannings/{planning}/profiles/modification", headers=h,
                            json={"logins": ["chargement"]}), 200)
    return School(console=console, p1=p1, p2=p2, user_password=user["password"])


def user_login(http: httpx.Client, school: School, planning: str) -> str:
    return expect(http.post("/v1/sessions", json={
        "domain": school.domain, "login": school.user, "password": school.user_password, "planning": planning,
        "mode": "administrative"}), 201)["token"]


def counts_for(scale: float) -> dict[str, int]:
    counts = {kind: max(1, round(n * scale)) for kind, n in FULL.items()}
    counts["subjects"] = max(2, counts["subjects"])
    return counts


# -- the loaders -----------------------------------------------------------------------------------------
@dataclass
class LoadStats:
    latencies: list[float] = field(default_factory=list)
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Loaders:
    """A pool of client threads, each with its own keep-alive httpx client and user session."""

    def __init__(self, server: Server, school: School, threads: int, deadline: float) -> None:
        self.server, self.school, self.threads, self.deadline = server, school, threads, deadline
        self.clients = [httpx.Client(base_url=server.base_url, timeout=60.0,
                                     limits=httpx.Limits(max_keepalive_connections=1, max_connections=1))
                        for _ in range(threads)]
        self.tokens = [user_login(c, school, school.p1) for c in self.clients]
        self.stats = LoadStats()
        self.requests = 0

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def post_all(self, kind: str, bodies: list[dict]) -> list[str]:
        """POST every body (split round-robin over the threads); the new records' ids, in order."""
        ids: list[str | None] = [None] * len(bodies)
        path = f"/v1/plannings/{self.school.p1}/records/{kind}"

        def work(k: int) -> None:
            client, headers = self.clients[k], bearer(self.tokens[k])
            for i in range(k, len(bodies), self.threads):
                if time.monotonic() > self.deadline or len(self.stats.errors) >= MAX_ERRORS:
                    return
                ids[i] = self._post(client, headers, path, bodies[i])

        workers = [threading.Thread(target=work, args=(k,), name=f"loader-{k}") for k in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        self.requests += len(bodies)
        if len(self.stats.errors) >= MAX_ERRORS:
            raise SystemExit(f"too many refusals while loading {kind}: {self.stats.errors[:5]}")
        if any(i is None for i in ids):
            raise TimeoutError(f"the load passed its deadline while loading {kind}")
        return ids  # type: ignore[return-value]

    def _post(self, client: httpx.Client, headers: dict, path: str, body: dict) -> str | None:
        for attempt in range(MAX_RETRIES):
            started = time.perf_counter()
            try:
                response = client.post(path, headers=headers, json=body)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                elapsed = time.perf_counter() - started
                if response.status_code == 201:
                    with self.stats.lock:
                        self.stats.latencies.append(elapsed)
                    return response.json()["id"]
                error = f"{response.status_code} {response.text[:300]}"
                if response.status_code != 503:
                    break
            with self.stats.lock:
                self.stats.retries += 1
            time.sleep(0.1 * (attempt + 1))
        with self.stats.lock:
            self.stats.errors.append(error)
        return None


def load_school(loaders: Loaders, counts: dict[str, int]) -> dict[str, Any]:
    phases: dict[str, float] = {}

    def timed(kind: str, bodies: list[dict]) -> list[str]:
        started = time.perf_counter()
        ids = loaders.post_all(kind, bodies)
        phases[kind] = time.perf_counter() - started
        return ids

    subjects = timed("subjects", [{"name": f"Matière {i:02d}", "short_name": f"M{i:02d}"} for i in range(counts["subjects"])])
    timed("teachers", [{"last_name": f"PROF{i:04d}", "first_name": "Enseignant", "civility": ("M.", "Mme")[i % 2]}
                       for i in range(counts["teachers"])])
    classes = timed("classes", [{"name": f"{6 - i % 4}e{i:02d}", "level": f"{6 - i % 4}e"}
                                for i in range(counts["classes"])])
    students = timed("students", [{"last_name": f"ELEVE{i:05d}", "first_name": "Prénom",
                                   "class_id": classes[i % len(classes)], "birth_date": f"{2010 + i % 8}-0{1 + i % 9}-15"}
                                  for i in range(counts["students"])])
    timed("grades", [{"student_id": students[i % len(students)], "subject_id": subjects[(i // len(students)) % len(subjects)],
                      "value": str((i * 7) % 21), "scale": "20", "coefficient": "1", "date": "2026-11-16"}
                     for i in range(counts["grades"])])
    return phases


# -- the prober (a separate process) ---------------------------------------------------------------------------
def probe_loop(base_url: str, console: str, planning: str, interval: float, stop: Any, conn: Any,
               max_seconds: float) -> None:
    """Every `interval`: /healthz, a console read, the dashboard; (target, start, seconds, status) each."""
    targets = {"healthz": ("/healthz", {}), "console_plannings": ("/v1/console/plannings", bearer(console)),
               "dashboard": (f"/v1/console/plannings/{planning}/base", bearer(console))}
    samples: list[tuple[str, float, float, int]] = []
    end = time.monotonic() + max_seconds
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        while not stop.is_set() and time.monotonic() < end:
            round_start = time.monotonic()
            for name, (path, headers) in targets.items():
                started = time.monotonic()
                try:
                    status = http.get(path, headers=headers).status_code
                except httpx.TransportError:
                    status = 0
                samples.append((name, started, time.monotonic() - started, status))
            stop.wait(max(0.0, interval - (time.monotonic() - round_start)))
    conn.send(samples)
    conn.close()


class Prober:
    def __init__(self, server: Server, school: School, interval: float, max_seconds: float) -> None:
        ctx = mp.get_context("spawn")
        self.stop_event = ctx.Event()
        self.receiver, sender = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=probe_loop, name="prober", daemon=True, args=(
            server.base_url, school.console, school.p1, interval, self.stop_event, sender, max_seconds))
        self.process.start()
        sender.close()

    def stop(self) -> list[tuple[str, float, float, int]]:
        self.stop_event.set()
        samples = self.receiver.recv() if self.receiver.poll(60) else []
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
        return samples


def summarise(latencies: list[float]) -> dict[str, Any]:
    if not latencies:
        return {"n": 0}
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    return {"n": len(ordered), "p50_ms": pct(50) * 1e3, "p99_ms": pct(99) * 1e3, "max_ms": ordered[-1] * 1e3,
            "over_1s": sum(1 for x in ordered if x > 1.0)}


def probe_report(samples: list[tuple[str, float, float, int]], windows: dict[str, tuple[float, float]]) -> dict:
    report: dict[str, Any] = {}
    for phase, (start, end) in windows.items():
        report[phase] = {"seconds": end - start}
        for target in ("healthz", "console_plannings", "dashboard"):
            # a probe counts in a phase if it was under way at any time during it
            chosen = [s for s in samples if s[0] == target and s[1] < end and s[1] + s[2] > start]
            report[phase][target] = {**summarise([s[2] for s in chosen]),
                                     "failed": sum(1 for s in chosen if s[3] != 200)}
    return report


# -- the run -------------------------------------------------------------------------------------------------
def timed_call(fn: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = fn()
    return time.perf_counter() - started, response


def route_built(http: httpx.Client, documented: dict, template: str, planning_id: str) -> bool:
    """The route is in /openapi.json, or the server routes its path (a 405 to another method, not "no route")."""
    if template in documented:
        return True
    answer = http.request("DELETE", template.format(planning_id=planning_id))
    return not (answer.status_code == 404 and "no route for" in answer.text)


def all_records(http: httpx.Client, token: str, planning: str, kind: str) -> list[dict]:
    records: list[dict] = []
    after = None
    for _ in range(MAX_PAGES):
        page = expect(http.get(f"/v1/plannings/{planning}/records/{kind}", headers=bearer(token),
                               params={"limit": 1000, **({"after": after} if after else {})}), 200)
        records += page["records"]
        after = page["next"]
        if after is None:
            return records
    raise SystemExit(f"paging {kind} did not end")


def exchange_phases(http: httpx.Client, school: School, dashboard: dict, windows: dict, export: dict,
                    file_load: dict, verify: bool) -> None:
    """Export planning01's base, load the file into planning02, read and compare; fills `export`, `file_load`."""
    console = bearer(school.console)
    start = time.monotonic()
    windows["export"] = (start, float("inf"))
    elapsed, response = timed_call(lambda: http.get(EXPORT_PATH.format(planning_id=school.p1), headers=console))
    windows["export"] = (start, time.monotonic())
    export.update({"status": response.status_code, "seconds": elapsed, "bytes": len(response.content)})
    if response.status_code != 200:
        export["refusal"] = response.text[:500]
        return
    export_file = response.content
    start = time.monotonic()
    windows["file_load"] = (start, float("inf"))
    elapsed, loaded = timed_call(lambda: http.post(
        LOAD_PATH.format(planning_id=school.p2), content=export_file,
        headers={**console, "Content-Type": "application/octet-stream"}))
    windows["file_load"] = (start, time.monotonic())
    file_load.update({"status": loaded.status_code, "seconds": elapsed,
                      "records_per_s": sum(dashboard["counts"].values()) / elapsed})
    if loaded.status_code != 201:
        file_load["refusal"] = loaded.text[:500]
        return
    file_load["counts_identical"] = loaded.json().get("counts") == dashboard["counts"]
    elapsed, response = timed_call(lambda: http.get(f"/v1/console/plannings/{school.p2}/base", headers=console))
    file_load["dashboard2_first_read_ms"] = elapsed * 1e3
    if expect(response, 200)["server_state"] != "in_service":
        elapsed, response = timed_call(lambda: http.put(
            f"/v1/console/plannings/{school.p2}/server", headers=console, json={"state": "in_service"}))
        expect(response, 200)
        file_load["put_in_service_ms"] = elapsed * 1e3
    if verify:
        token1 = user_login(http, school, school.p1)
        token2 = user_login(http, school, school.p2)
        started = time.perf_counter()
        same = all(all_records(http, token1, school.p1, k) == all_records(http, token2, school.p2, k)
                   for k in ("subjects", "teachers", "classes", "students", "grades"))
        file_load["records_identical"] = same
        file_load["verify_seconds"] = time.perf_counter() - started


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    counts = counts_for(args.scale)
    server = Server(workdir, args.postgres, dict(args.server_env))
    result: dict[str, Any] = {
        "what": "a large school loaded through the HTTP API of a real campus serve; probe latencies of other"
                " requests during the load vs the idle server (baseline), same run",
        "machine": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "store": "postgres" if args.postgres else "sqlite", "scale": args.scale, "threads": args.threads,
        "server_env": dict(args.server_env),
        "probe_interval_ms": args.probe_interval * 1e3, "records_wanted": counts,
        "loadavg_at_start": os.getloadavg(),  # a shared machine shows here: the baseline is measured in this run
    }
    prober: Prober | None = None
    windows: dict[str, tuple[float, float]] = {}
    try:
        result["server_start_s"] = server.start()
        school = set_up_school(server)
        http = httpx.Client(base_url=server.base_url, timeout=args.request_timeout)
        console = bearer(school.console)
        documented = expect(http.get("/openapi.json"), 200)["paths"]
        routes_built = (route_built(http, documented, EXPORT_PATH, school.p1)
                        and route_built(http, documented, LOAD_PATH, school.p2))

        prober = Prober(server, school, args.probe_interval, max_seconds=args.max_minutes * 60 + 600)
        time.sleep(1.0)  # the prober's interpreter starts
        start = time.monotonic()
        time.sleep(args.baseline_seconds)
        windows["baseline_idle"] = (start, time.monotonic())

        # -- the load through the API --------------------------------------------------------------------------------
        loaders = Loaders(server, school, args.threads, deadline=time.monotonic() + args.max_minutes * 60)
        start = time.monotonic()
        try:
            phases = load_school(loaders, counts)
            complete = True
        except TimeoutError as exc:
            phases, complete = {}, False
            result["load_incomplete"] = str(exc)
        seconds = time.monotonic() - start
        windows["api_load"] = (start, time.monotonic())
        loaders.close()
        records = len(loaders.stats.latencies)
        result["api_load"] = {"complete": complete, "seconds": seconds, "records": records,
                              "records_per_s": records / seconds, "seconds_per_kind": phases,
                              "write_latency": summarise(loaders.stats.latencies), "retries": loaders.stats.retries,
                              "refusals": loaders.stats.errors[:10]}

        # -- reads of the loaded base ------------------------------------------------------------------------------
        dashboard_times = []
        for _ in range(5):
            elapsed, response = timed_call(lambda: http.get(f"/v1/console/plannings/{school.p1}/base", headers=console))
            dashboard_times.append(elapsed)
        dashboard = expect(response, 200)
        result["dashboard_read"] = {"first_ms": dashboard_times[0] * 1e3,
                                    "median_ms": sorted(dashboard_times)[2] * 1e3, "counts": dashboard["counts"],
                                    "counts_as_wanted": all(dashboard["counts"][k] == n for k, n in counts.items())}
        # Stopping and restarting planning01's server: putting it in service checks for a superadministrator,
        # which reads the users list, which first projects every event of the load into the history.
        server_url = f"/v1/console/plannings/{school.p1}/server"
        start = time.monotonic()
        stop_s, response = timed_call(lambda: http.put(server_url, headers=console, json={"state": "stopped"}))
        expect(response, 200)
        in_service_s, response = timed_call(lambda: http.put(server_url, headers=console,
                                                             json={"state": "in_service"}))
        expect(response, 200)
        windows["server_back_in_service"] = (start, time.monotonic())
        users_s, response = timed_call(lambda: http.get("/v1/console/users", headers=console))
        expect(response, 200)
        result["history_catch_up"] = {
            "what": "PUT planning01's server stopped, then in_service, after the load: in service needs a"
                    " superadministrator, read from the users list, which first projects into the history every"
                    " event the load appended; then the users list",
            "stop_ms": stop_s * 1e3, "in_service_ms": in_service_s * 1e3, "users_read_after_ms": users_s * 1e3}

        # -- export, and load of the file into planning02 ------------------------------------------------------------
        if not routes_built:
            result["export"] = result["file_load"] = {
                "skipped": "export/load routes not built yet (not in /openapi.json, not routed)"}
        else:
            result["export"], result["file_load"] = {}, {}
            try:
                exchange_phases(http, school, dashboard, windows, result["export"], result["file_load"], args.verify)
            except httpx.TimeoutException:
                phase = "file_load" if "status" in result["export"] else "export"
                windows[phase] = (windows[phase][0], time.monotonic())
                result[phase]["error"] = (f"no answer within {args.request_timeout:.0f} s; the server was stopped"
                                          " (SIGTERM, then SIGKILL) before the restart")
        http.close()
        samples = prober.stop()
        prober = None
        result["probes"] = probe_report(samples, windows)

        # -- restart -------------------------------------------------------------------------------------------------
        returncode = server.stop()
        restart_s = server.start()
        with httpx.Client(base_url=server.base_url, timeout=args.request_timeout) as http:
            first, response = timed_call(lambda: http.get(f"/v1/console/plannings/{school.p1}/base", headers=console))
            after = expect(response, 200)
            second, _ = timed_call(lambda: http.get(f"/v1/console/plannings/{school.p1}/base", headers=console))
        result["restart"] = {"stop_returncode": returncode, "start_to_healthy_s": restart_s,
                             "first_dashboard_read_ms": first * 1e3, "second_dashboard_read_ms": second * 1e3,
                             "counts_as_left": after["counts"] == dashboard["counts"]}
    finally:
        if prober is not None:
            prober.stop()
        server.stop()
        server.drop_schema()

    result["loadavg_at_end"] = os.getloadavg()
    base = result["probes"]["baseline_idle"]
    load = result["probes"]["api_load"]
    result["ratios_load_vs_idle"] = {
        target: {"p99": load[target].get("p99_ms", 0) / base[target]["p99_ms"] if base[target].get("p99_ms") else None,
                 "max": load[target].get("max_ms", 0) / base[target]["max_ms"] if base[target].get("max_ms") else None}
        for target in ("healthz", "console_plannings", "dashboard")}
    worst = max((phase[t].get("max_ms", 0), name, t) for name, phase in result["probes"].items()
                for t in ("healthz", "console_plannings", "dashboard"))
    result["longest_hold"] = {"ms": worst[0], "phase": worst[1], "probe": worst[2],
                              "under_1s": worst[0] < 1000.0}
    return result


def print_summary(r: dict[str, Any]) -> None:
    load = r["api_load"]
    print(f"\nlarge school, {r['store']}, scale {r['scale']}, {r['threads']} client threads, {r['cpus']} CPUs"
          f" (load average {r['loadavg_at_start'][0]:.1f} at start, {r['loadavg_at_end'][0]:.1f} at end)")
    print(f"  API load: {load['records']} records in {load['seconds']:.1f} s = {load['records_per_s']:.0f} records/s"
          f" (write p50 {load['write_latency'].get('p50_ms', 0):.1f} ms, p99 {load['write_latency'].get('p99_ms', 0):.1f}"
          f" ms, max {load['write_latency'].get('max_ms', 0):.0f} ms; {load['retries']} retries)")
    print(f"  probes (ms)            {'healthz p99/max':>24} {'console p99/max':>24} {'dashboard p99/max':>24}")
    for phase, report in r["probes"].items():
        cells = [f"{report[t]['p99_ms']:.1f}/{report[t]['max_ms']:.1f} (n={report[t]['n']})" if report[t]["n"]
                 else "no probe" for t in ("healthz", "console_plannings", "dashboard")]
        print(f"  {phase:<22} {cells[0]:>24} {cells[1]:>24} {cells[2]:>24}")
    print(f"  longest hold: {r['longest_hold']['ms']:.0f} ms ({r['longest_hold']['probe']} during"
          f" {r['longest_hold']['phase']}); under 1 s: {r['longest_hold']['under_1s']}")
    d = r["dashboard_read"]
    print(f"  dashboard read: first {d['first_ms']:.1f} ms, median {d['median_ms']:.1f} ms;"
          f" counts as wanted: {d['counts_as_wanted']}")
    print(f"  server back in service after the load (history catch-up inside): "
          f"{r['history_catch_up']['in_service_ms']:.0f} ms; users read after: "
          f"{r['history_catch_up']['users_read_after_ms']:.0f} ms")
    print(f"  export: {r['export']}")
    print(f"  file load: {r['file_load']}")
    print(f"  restart: {r['restart']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full school (0.1: a quick run)")
    parser.add_argument("--threads", type=int, default=8, help="client threads loading records")
    parser.add_argument("--postgres", metavar="DSN", default=None,
                        help="run on PostgreSQL (a schema of its own, dropped afterwards) instead of SQLite")
    parser.add_argument("--server-env", metavar="NAME=VALUE", action="append", default=[],
                        type=lambda text: tuple(text.split("=", 1)) if "=" in text else parser.error(
                            f"--server-env wants NAME=VALUE, not {text!r}"),
                        help="an environment variable for the server (repeatable), e.g. POSTGRES_ENABLE_DB_FUNCTIONS=y")
    parser.add_argument("--probe-interval", type=float, default=0.05, help="seconds between probe rounds")
    parser.add_argument("--baseline-seconds", type=float, default=5.0, help="idle probing before the load")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="give up the load after this long")
    parser.add_argument("--request-timeout", type=float, default=300.0,
                        help="seconds to wait for one answer (the export, the file load…) before giving up on it")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip comparing every record of planning01 and planning02 after the file load")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir and server logs")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    if not 0 < args.scale <= 1 or args.threads < 1:
        parser.error("--scale must be in (0, 1] and --threads at least 1")
    workdir = Path(tempfile.mkdtemp(prefix="campus-bench-"))
    try:
        result = run(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
