"""The figures of issue 11, each beside its baseline, measured in one run on this machine.

    .venv/bin/python bench/ratios.py [--quick] [--seconds N] [--records N] [--skip-postgres]

Baselines, same run:

- a hello-JSON Starlette app under uvicorn with the options ``campus serve`` uses (read from
  campus/cli.py), loaded with ``wrk`` (2 threads, 32 connections): req/s and p99;
- raw SQLite durable commits (WAL, ``synchronous=FULL``, one row inserted and committed per
  transaction) in a file of the same temporary folder as campus's store: one thread (the baseline),
  and 32 threads sharing the connection through a lock;
- raw psycopg commits: one connection, one 1-row INSERT + commit per transaction, in a scratch table
  of a fresh schema of ``--postgres-dsn`` (dropped after);
- a raw fetch + decode + fold of the stored event rows of the loaded base (sqlite3, the msgpack
  transcoder, a dict): events/s; and a raw select + encode of the school's history rows: rows/s.

campus: a real ``campus serve`` (SQLite, fresh data dir) set up through the HTTP API as
bench/large_school.py does (account, controller, superadministrator, a base in service, a user with
the modification profile), a population (subjects, classes, students), then ``--records`` grades
preloaded through the API by wrk. Then, with wrk at 32 connections: grade writes to one school and
spread over 4 schools (the loaded one and 3 small ones; a unique body per request), reads (one
record, the base dashboard, the plannings list); a page of the history with a type filter (the
largest ``limit`` the API accepts, up to 1,000), the history export (rows/s and the server's RSS
growth, sampled every 50 ms), the server's RSS; then, server stopped: a full replay of the base
in-process (``repository.get``, no cache) against the raw fold of the same rows, ``campus views
rebuild`` (events/s per view), and the first dashboard read after a restart. Last, the same
one-school write measurement with ``campus serve`` on PostgreSQL (fresh schema ``bench_<hex>``,
dropped after) against raw psycopg commits.

The machine may be shared (its fsync rate moved 10x between samples a minute apart): each campus
figure is compared with a baseline sample measured just before it, every sample is kept, and the CPU
the rest of the machine used during the run is reported. A measurement that fails is recorded with its
reason and the others still run.

Writes ``bench/results/ratios.json`` (every raw figure, its baseline and the ratio, machine, date,
commit, the working tree's changed files) and the section "ratios.py — issue 11" of
``bench/README.md`` (``--quick`` writes ``$TMPDIR/ratios-quick.json`` and leaves the README alone;
``--render JSON`` rewrites the section from a saved run). Everything it starts is stopped at the end,
even on error or SIGTERM (and its children get SIGTERM if it dies): servers, wrk, temporary folders,
schemas.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
LUA = BENCH / "wrk_scripts"
README = BENCH / "README.md"
README_BEGIN = "<!-- ratios.py: begin (written by bench/ratios.py) -->"
README_END = "<!-- ratios.py: end -->"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CONNECTIONS = 32
WRK_THREADS = 2
WRK_TIMEOUT = "30s"  # a slower answer is a wrk timeout, not a latency: far above any p99 we expect
STARTUP_TIMEOUT = 60.0
GRID = {"name": "Base ratios", "first_monday": "2026-08-31", "last_sunday": "2027-07-04",
        "working_days": ["mon", "tue", "wed", "thu", "fri"], "sequences_per_day": 10, "sequence_minutes": 55,
        "split": 1}
SUPERADMIN_PASSWORD = "Bench-Campus-2026!"
HISTORY_LIMIT_WANTED = 1000  # issue 11: "limit up to 1,000"
DENSE_TYPE = "Base.RecordAdded"  # nearly every row of the loaded school
SPARSE_TYPE = "Base.Created"  # one row per base: without an index on type, the filter reads every row of the school
# campus serve's uvicorn options (campus/cli.py), used when they cannot be read from its source.
FALLBACK_UVICORN_OPTIONS = {"access_log": False, "log_level": "warning", "server_header": False,
                            "proxy_headers": False, "timeout_graceful_shutdown": 10}


# -- small things ----------------------------------------------------------------------------------------
def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


try:  # loaded once here: the child of a fork must not import (another thread may hold the import lock)
    import ctypes

    _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError, ImportError):
    _PRCTL = None


def die_with_parent() -> None:
    """preexec_fn of every child (servers, wrk, the rebuild): SIGTERM when this script dies, even by SIGKILL or a
    crash, so that nothing it started outlives it (Linux prctl PR_SET_PDEATHSIG; elsewhere a no-op)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expect(response: Any, status: int) -> Any:
    if response.status_code != status:
        raise SystemExit(f"{response.request.method} {response.request.url.path} -> {response.status_code}"
                         f" (wanted {status}): {response.text[:1000]}")
    return response.json() if response.content else None


def proc_status_kib(pid: int, field_name: str) -> int | None:
    """VmRSS / VmHWM of a process, KiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """VmRSS of a process every `interval` seconds in a thread: the value before, and the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.before = proc_status_kib(pid, "VmRSS") or 0
        self.peak = self.before
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.peak = max(self.peak, rss)
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.after = proc_status_kib(self.pid, "VmRSS") or 0

    def report(self) -> dict[str, Any]:
        return {"before_mib": self.before / 1024, "peak_mib": self.peak / 1024, "after_mib": self.after / 1024,
                "growth_mib": (self.peak - self.before) / 1024, "samples": self.samples,
                "interval_ms": self.interval * 1e3}


def summarise_ms(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))] * 1e3

    return {"n": len(ordered), "median_ms": statistics.median(ordered) * 1e3, "p90_ms": pct(90),
            "p99_ms": pct(99), "min_ms": ordered[0] * 1e3, "max_ms": ordered[-1] * 1e3}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = proc_meminfo_mib("MemTotal")
    versions = {}
    for module in ("uvicorn", "starlette", "eventsourcing", "psycopg", "msgpack", "orjson", "uvloop", "httptools",
                   "httpx"):
        try:
            from importlib.metadata import version

            versions[module] = version(module)
        except Exception:  # noqa: BLE001 - not installed
            versions[module] = None
    dirty = [line.strip() for line in git("status", "--porcelain").splitlines() if line.strip()]
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        banner = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout
        found = re.search(r"wrk (\S+)", banner)
        wrk_version = f"wrk {found.group(1)}" if found else banner.strip()[:40]
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu_model": cpu, "mem_total_mib": mem, "versions": versions, "wrk": wrk_version,
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty_files": len(dirty),
            "git_dirty": dirty[:50],  # the working tree measured: others may be changing campus meanwhile
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python", "bench/ratios.py", *sys.argv[1:]]),
            "loadavg_at_start": loadavg()}


def proc_meminfo_mib(name: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


SHARED_THRESHOLD = 0.10  # other processes' share of the machine's CPU above which the README says it was shared


class CpuUsage:
    """CPU time of the whole machine (/proc/stat) minus this process's and its children's (getrusage)."""

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.busy = self._machine_busy()
        self.own = self._own()
        self.postgres = self._postgres()

    @staticmethod
    def _postgres() -> float:
        """CPU seconds of the local PostgreSQL: every live postgres process, and the postmaster's ended
        children. This run's commits are in it, but so are other sessions' (tests use the same server)."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            name = text[text.index("(") + 1:text.rindex(")")]
            if name != "postgres" and not name.startswith("postgres:"):
                continue
            fields = text[text.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            try:
                is_child = Path(f"/proc/{fields[1]}/comm").read_text().strip().startswith("postgres")
            except OSError:
                is_child = False
            if not is_child:  # the postmaster: add its reaped children
                ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _machine_busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (no guest: in user)
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        import resource

        me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime

    def report(self) -> dict[str, Any]:
        wall = time.monotonic() - self.wall
        busy = self._machine_busy() - self.busy
        own = self._own() - self.own
        postgres = self._postgres() - self.postgres
        other = max(0.0, busy - own - postgres)
        return {"wall_seconds": wall, "machine_busy_cpu_seconds": busy, "this_run_cpu_seconds": own,
                "postgres_cpu_seconds": postgres, "other_cpu_seconds": other,
                "share_of_machine": other / (wall * (os.cpu_count() or 1)),
                "how": "/proc/stat busy time minus this process and its ended children (servers, wrk) minus every"
                       " postgres process (this run's and other sessions')"}


# -- wrk ------------------------------------------------------------------------------------------------------
def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("bench/ratios.py needs wrk (a compiled HTTP load generator, so the client does not take"
                         " the server's CPU): install it with `sudo apt-get install -y wrk` and run again")
    log("wrk is missing: apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        done = subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True, text=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit(f"could not install wrk with apt-get: {done.stderr[-1000:]}")
    return found


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def post_prelude(targets: list[dict[str, Any]], quota: int = 0, marker: str = "") -> str:
    """Globals of post_records.lua: one target per school."""
    lines = ["targets = {"]
    for t in targets:
        students = ", ".join(lua_string(s) for s in t["students"])
        subjects = ", ".join(lua_string(s) for s in t["subjects"])
        lines.append(f"  {{path = {lua_string(t['path'])}, auth = {lua_string(t['auth'])},"
                     f" students = {{{students}}}, subjects = {{{subjects}}}}},")
    lines.append("}")
    lines.append(f"nonce = {lua_string(secrets.token_hex(4))}  -- this run's: bodies differ from every other run's too")
    lines.append(f"quota = {int(quota)}")
    lines.append(f"marker = {lua_string(marker)}")
    return "\n".join(lines) + "\n"


class Wrk:
    """wrk runs, each with bench/wrk_scripts/report.lua (and a generated script) for a JSON report."""

    def __init__(self, binary: str, workdir: Path, stack: ExitStack) -> None:
        self.binary, self.workdir, self.stack = binary, workdir, stack
        self.runs = 0

    def _script(self, prelude: str, *files: str) -> Path:
        self.runs += 1
        path = self.workdir / f"wrk-{self.runs}.lua"
        parts = [prelude, (LUA / "report.lua").read_text(), *((LUA / f).read_text() for f in files)]
        path.write_text("\n".join(parts))
        return path

    def run(self, url: str, seconds: float, *, headers: dict[str, str] | None = None, prelude: str = "",
            scripts: tuple[str, ...] = (), connections: int = CONNECTIONS, threads: int = WRK_THREADS,
            until_markers: tuple[str, int] | None = None, max_seconds: float | None = None) -> dict[str, Any]:
        """One run; with `until_markers` (prefix, count) it ends once that many threads left their marker."""
        script = self._script(prelude, *scripts)
        duration = max_seconds if until_markers else seconds
        command = [self.binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
                   f"--timeout={WRK_TIMEOUT}", "-s", str(script)]
        for name, value in (headers or {}).items():
            command += ["-H", f"{name}: {value}"]
        command.append(url)
        load_before = loadavg()
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        self.stack.callback(_kill, process)
        if until_markers:
            prefix, count = until_markers
            while process.poll() is None:
                if sum(1 for n in range(threads) if Path(f"{prefix}{n}").exists()) >= count:
                    process.send_signal(signal.SIGINT)  # wrk stops, reports what it did
                    break
                time.sleep(0.2)
        try:
            out, err = process.communicate(timeout=duration + 120)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            raise SystemExit(f"wrk did not end: {err[-1000:]}") from None
        line = next((l for l in out.splitlines() if l.startswith("WRK_JSON ")), None)
        if line is None:
            raise SystemExit(f"wrk gave no report (exit {process.returncode}): {out[-1500:]} {err[-1500:]}")
        report = json.loads(line[len("WRK_JSON "):])
        seconds_run = report["duration_us"] / 1e6
        lat = report["latency_us"]
        statuses = {k: int(v) for k, v in (report.get("statuses") or {}).items()}
        errors = {k: int(v) for k, v in report["errors"].items()}
        result = {
            "url_path": url.split("/", 3)[-1] if url.count("/") >= 3 else url,
            "connections": connections, "threads": threads, "seconds": seconds_run,
            "wall_seconds": time.monotonic() - started,
            "requests": int(report["requests"]), "req_per_s": report["requests"] / seconds_run,
            "latency_ms": {k: lat[k] / 1e3 for k in ("p50", "p90", "p99", "p999", "mean", "max", "stdev")},
            "errors": errors, "statuses": statuses, "loadavg_before": load_before, "loadavg_after": loadavg(),
        }
        if statuses:
            result["ok_per_s"] = sum(n for s, n in statuses.items() if s.startswith("2")) / seconds_run
            result["non_2xx"] = {s: n for s, n in statuses.items() if not s.startswith("2")}
        if err.strip():
            result["wrk_stderr"] = err.strip()[-500:]
        return result


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


# -- the hello-JSON baseline --------------------------------------------------------------------------------------
def campus_uvicorn_options() -> tuple[dict[str, Any], str]:
    """The constant options campus serve passes to uvicorn.run, read from campus/cli.py (not imported: its
    serve() builds the options inline); the fallback copy if the source no longer has them."""
    try:
        tree = ast.parse((ROOT / "campus" / "cli.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "serve":
                for stmt in ast.walk(node):
                    target = getattr(stmt, "target", None) or (getattr(stmt, "targets", None) or [None])[0]
                    if (isinstance(stmt, (ast.Assign, ast.AnnAssign)) and isinstance(target, ast.Name)
                            and target.id == "options" and isinstance(stmt.value, ast.Dict)):
                        return ({k.value: v.value for k, v in zip(stmt.value.keys, stmt.value.values)
                                 if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)},
                                "campus/cli.py serve()")
    except (OSError, SyntaxError):
        pass
    return dict(FALLBACK_UVICORN_OPTIONS), "fallback copy in bench/ratios.py"


def serve_hello(port: int) -> None:
    """The baseline server (run as `bench/ratios.py --serve-hello PORT`): one JSON route, campus's uvicorn options."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def hello(request: Any) -> JSONResponse:
        return JSONResponse({"hello": "world"})

    app = Starlette(routes=[Route("/", hello), Route("/healthz", hello)])
    options, _ = campus_uvicorn_options()
    uvicorn.run(app, host="127.0.0.1", port=port, **options)


def wait_healthy(base_url: str, process: subprocess.Popen, path: str, what: str, stderr_file: Path) -> float:
    import httpx

    started = time.perf_counter()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(base_url=base_url, timeout=5.0) as probe:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{what} exited with {process.returncode}: "
                                 f"{stderr_file.read_text(errors='replace')[-2000:]}")
            try:
                if probe.get(path).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise SystemExit(f"{what} did not answer {path} within {STARTUP_TIMEOUT}s")


class HelloServer:
    """The hello-JSON baseline server, started once and measured beside each campus run that compares to it."""

    def __init__(self, workdir: Path, stack: ExitStack) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        err = workdir / "hello.stderr.log"
        with open(err, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--serve-hello", str(self.port)],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        stack.callback(_stop_process, self.process)
        wait_healthy(f"http://127.0.0.1:{self.port}", self.process, "/", "the hello-JSON server", err)

    def measure(self, wrk: Wrk, seconds: float, warmup: float) -> dict[str, Any]:
        wrk.run(self.url, warmup)
        result = wrk.run(self.url, seconds)
        result["rss_mib"] = (proc_status_kib(self.process.pid, "VmRSS") or 0) / 1024
        return result


def _stop_process(process: subprocess.Popen, timeout: float = 30.0) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


# -- raw store baselines ---------------------------------------------------------------------------------------
ROW_STATE = os.urandom(300)  # about the size of a grade's stored event state


def sqlite_commits(seconds: float, folder: Path, threads: int = 1) -> dict[str, Any]:
    """Durable 1-row commits in a WAL database with synchronous=FULL, in `folder` (campus's temporary folder):
    one thread, or `threads` threads sharing the connection through a lock. The file is removed after."""
    path = folder / f"raw-commits-{secrets.token_hex(4)}.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    journal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, originator_id TEXT NOT NULL,"
                 " originator_version INTEGER NOT NULL, topic TEXT NOT NULL, state BLOB NOT NULL)")

    def commit_one(n: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO events (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
                     (uuid.uuid4().hex, n, "campus.aggregates.school_base:Base.RecordAdded", ROW_STATE))
        conn.execute("COMMIT")

    lock, counts, stop = threading.Lock(), [0] * threads, threading.Event()

    def worker(k: int) -> None:
        while not stop.is_set():
            with lock:
                commit_one(counts[k])
            counts[k] += 1

    workers = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)] if threads > 1 else []
    try:
        started = time.perf_counter()
        if threads == 1:
            deadline = started + seconds
            while time.perf_counter() < deadline:
                commit_one(counts[0])
                counts[0] += 1
        else:
            for w in workers:
                w.start()
            time.sleep(seconds)
            stop.set()
            for w in workers:
                w.join()
        elapsed = time.perf_counter() - started
    finally:
        stop.set()  # also when interrupted: no thread may use the connection once it is closed
        for w in workers:
            if w.is_alive():
                w.join()
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {"threads": threads, "commits": sum(counts), "seconds": elapsed, "commits_per_s": sum(counts) / elapsed,
            "journal_mode": journal, "synchronous": "FULL", "row_bytes": len(ROW_STATE)}


def baseline_psycopg(seconds: float, dsn: str) -> dict[str, Any]:
    """One connection, one 1-row INSERT + commit per transaction, in a scratch table of a fresh schema."""
    import psycopg

    schema = f"bench_raw_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        with psycopg.connect(dsn) as conn:
            conn.execute(f'CREATE TABLE "{schema}".events (id BIGSERIAL PRIMARY KEY, originator_id UUID NOT NULL,'
                         " originator_version INTEGER NOT NULL, topic TEXT NOT NULL, state BYTEA NOT NULL)")
            conn.commit()
            settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                        for name in ("synchronous_commit", "fsync", "wal_sync_method", "server_version")}
            insert = (f'INSERT INTO "{schema}".events (originator_id, originator_version, topic, state)'
                      " VALUES (%s, %s, %s, %s)")
            n, started = 0, time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                conn.execute(insert, (uuid.uuid4(), n, "campus.aggregates.school_base:Base.RecordAdded", ROW_STATE))
                conn.commit()
                n += 1
            elapsed = time.perf_counter() - started
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return {"commits": n, "seconds": elapsed, "commits_per_s": n / elapsed, "server": settings,
            "schema": f"{schema} (dropped)"}


class Baselines:
    """Every baseline sample of the run, by name, each with the campus run it stands beside (`label`).

    The machine is shared and its fsync rate moves a lot from one minute to the next: each campus
    figure is compared with a baseline measured just before it (paired), and every sample is kept.
    """

    def __init__(self, args: argparse.Namespace, wrk: Wrk, workdir: Path, stack: ExitStack) -> None:
        self.args, self.wrk, self.workdir = args, wrk, workdir
        self.samples: dict[str, list[dict[str, Any]]] = {"hello_json": [], "sqlite_commits": [],
                                                         "psycopg_commits": []}
        log("baseline: hello-JSON Starlette under uvicorn (kept running, measured beside each campus run)")
        self.hello_server = HelloServer(workdir, stack)

    def _keep(self, name: str, label: str, sample: dict[str, Any]) -> dict[str, Any]:
        sample = {"label": label, **sample}
        self.samples[name].append(sample)
        return sample

    def close(self) -> None:
        _stop_process(self.hello_server.process)

    def hello(self, label: str) -> dict[str, Any]:
        log(f"baseline: hello-JSON ({label})")
        return self._keep("hello_json", label,
                          self.hello_server.measure(self.wrk, self.args.seconds, self.args.warmup))

    def sqlite(self, label: str, threads: int = 1) -> dict[str, Any]:
        log(f"baseline: raw SQLite durable commits, {threads} thread(s) ({label})")
        return self._keep("sqlite_commits", label, sqlite_commits(self.args.seconds, self.workdir, threads))

    def psycopg(self, label: str) -> dict[str, Any]:
        log(f"baseline: raw psycopg commits ({label})")
        return self._keep("psycopg_commits", label, baseline_psycopg(self.args.seconds, self.args.postgres_dsn))

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, samples in self.samples.items():
            if name == "hello_json":
                single = [x["req_per_s"] for x in samples]
            else:
                single = [x["commits_per_s"] for x in samples if x.get("threads", 1) == 1]
            out[name] = {"samples": samples,
                         "spread": {"min": min(single), "max": max(single), "n": len(single)} if single else None}
        return out


def events_table(db: Path) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if "stored_events" in names:  # the eventsourcing library's SQLite recorder (an Application without a name prefix)
        return "stored_events"
    candidates = [n for n in names if n.endswith("_events") and "snapshot" not in n and not n.startswith("campus_")]
    if len(candidates) != 1:
        raise SystemExit(f"cannot tell the events table among {names}")
    return candidates[0]


def raw_fold(db: Path, table: str, base_id: str, repeats: int) -> dict[str, Any]:
    """Fetch the base's rows with sqlite3, decode each state with campus's msgpack transcoder, fold into a dict."""
    from campus.infra.transcoder import MsgpackTranscoder
    from campus.rules.records import KINDS

    decode = MsgpackTranscoder().decode
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        # The library stores the id as text; which spelling (hex or with dashes) is its business: ask for both.
        rows = conn.execute(f"SELECT originator_version, topic, state FROM {table} WHERE originator_id IN (?, ?)"
                            " ORDER BY originator_version", (uuid.UUID(base_id).hex, str(uuid.UUID(base_id)))
                            ).fetchall()
        conn.close()
        fetched = time.perf_counter()
        state: dict[str, Any] = {}
        records: dict[str, dict] = {}
        revisions: dict[Any, int] = {}
        for version, topic, blob in rows:
            data = decode(blob)
            name = topic.rsplit(".", 1)[-1]
            if name == "RecordAdded":
                records[data["kind"]][data["record_id"]] = dict(data["fields"])
                revisions[data["record_id"]] = version
            elif name == "RecordChanged":
                record = records[data["kind"]][data["record_id"]]
                record.update(data["changes"])
                for key in [k for k, v in data["changes"].items() if v is None]:
                    del record[key]
                revisions[data["record_id"]] = version
            elif name == "RecordRemoved":
                del records[data["kind"]][data["record_id"]]
                revisions.pop(data["record_id"], None)
            elif name == "RecordsImported":
                for kind, record_id, fields in data["records"]:
                    records[kind][record_id] = dict(fields)
                    revisions[record_id] = version
            elif name == "Created":
                state.update(data)
                records = {k: {} for k in KINDS}
            else:
                state.update(data)
            state["version"] = version
        elapsed = time.perf_counter() - started
        runs.append({"seconds": elapsed, "fetch_seconds": fetched - started, "events": len(rows),
                     "records": sum(len(v) for v in records.values())})
    best = min(runs, key=lambda r: r["seconds"])
    return {"runs": runs, "events": best["events"], "best_seconds": best["seconds"],
            "events_per_s": best["events"] / best["seconds"],
            "median_events_per_s": statistics.median(r["events"] / r["seconds"] for r in runs)}


def raw_export(db: Path, tenant: str, repeats: int = 2) -> dict[str, Any]:
    """The school's history rows selected with sqlite3 and encoded as JSON lines (orjson), as the export's body."""
    import orjson

    columns = ("position, timestamp, type, aggregate_id, aggregate_type, version, actor, request_id,"
               " client_address, reason, data")
    names = [c.strip() for c in columns.split(",")]
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        lines = []
        for row in conn.execute(f"SELECT {columns} FROM campus_history WHERE tenant = ? ORDER BY position",
                                (tenant,)):
            event = dict(zip(names, row))
            event["data"] = orjson.loads(event["data"])
            lines.append(orjson.dumps(event))
        body = b"".join(line + b"\n" for line in lines)
        conn.close()
        elapsed = time.perf_counter() - started
        runs.append({"rows": len(lines), "seconds": elapsed, "bytes": len(body)})
    best = min(runs, key=lambda r: r["seconds"])
    return {"runs": runs, "rows": best["rows"], "rows_per_s": best["rows"] / best["seconds"]}


# -- campus serve ------------------------------------------------------------------------------------------------
class Server:
    """One `python -m campus serve` on 127.0.0.1, restartable on the same data dir / schema / port."""

    def __init__(self, workdir: Path, stack: ExitStack, postgres_dsn: str | None = None) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.operator_token = secrets.token_urlsafe(32)
        self.schema = f"bench_{secrets.token_hex(6)}" if postgres_dsn else None
        self.postgres_dsn = postgres_dsn
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CAMPUS_", "POSTGRES_", "SQLITE_", "PERSISTENCE_"))}
        env.update({"CAMPUS_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", "CAMPUS_OPERATOR_TOKEN": self.operator_token,
                    "CAMPUS_SNAPSHOTS_DIR": str(workdir / "snapshots")})
        if postgres_dsn:
            env["CAMPUS_POSTGRES_DSN"] = f"{postgres_dsn}{'&' if '?' in postgres_dsn else '?'}schema={self.schema}"
        self.env = env
        self.process: subprocess.Popen | None = None
        self.runs = 0
        stack.callback(self.drop_schema)
        stack.callback(self.stop)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> float:
        err_path = self.workdir / f"stderr.{self.runs}.log"
        with open(self.workdir / f"stdout.{self.runs}.log", "wb") as out, open(err_path, "wb") as err:
            self.runs += 1
            self.process = subprocess.Popen(
                [sys.executable, "-m", "campus", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--data-dir", str(self.data_dir)],
                env=self.env, cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        return wait_healthy(self.base_url, self.process, "/healthz", "campus serve", err_path)

    def stop(self) -> int | None:
        process, self.process = self.process, None
        return None if process is None else _stop_process(process)

    def server_errors(self) -> dict[str, int]:
        """Answers with a 5xx status and error lines, counted in the servers' JSON logs."""
        counts = {"5xx": 0, "error_lines": 0}
        for n in range(self.runs):
            path = self.workdir / f"stderr.{n}.log"
            if not path.exists():
                continue
            with open(path, errors="replace") as lines:
                for line in lines:
                    if '"level": "error"' in line or '"level":"error"' in line:
                        counts["error_lines"] += 1
                    if re.search(r'"status":\s*5\d\d', line):
                        counts["5xx"] += 1
        return counts

    def drop_schema(self) -> None:
        if not self.schema or not self.postgres_dsn:
            return
        import psycopg

        with psycopg.connect(self.postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        self.schema = None


@dataclass
class School:
    console: str
    planning: str
    user_token: str
    domain: str
    subjects: list[str] = field(default_factory=list)
    students: list[str] = field(default_factory=list)
    base_id: str | None = None

    def target(self) -> dict[str, Any]:
        return {"path": f"/v1/plannings/{self.planning}/records/grades", "auth": f"Bearer {self.user_token}",
                "students": self.students, "subjects": self.subjects}


def set_up_school(http: Any, server: Server, domain: str, students: int) -> School:
    """bench/large_school.py's set_up_school (fiches 1-6: account, console session, licence, controller domain,
    superadministrator, activation, a base in service on planning01, a user with the modification profile),
    then that user's session and a population: 12 subjects, 8 classes, `students` students."""
    account = expect(http.post("/v1/operator/accounts", headers=bearer(server.operator_token), json={
        "establishment": f"Cité scolaire {domain}", "manager": {"name": "Claire Dupont", "email": "c@bench.fr"}}), 201)
    console = expect(http.post("/v1/console/sessions", json={
        "hosting_number": account["hosting_number"], "password": account["console_password"],
        "invoice_number": account["invoice_number"]}), 201)["token"]
    h = bearer(console)
    expect(http.post("/v1/console/licence-agreement", headers=h), 200)
    expect(http.put("/v1/console/controller/domain", headers=h, json={"name": domain}), 200)
    expect(http.post("/v1/console/superadministrator", headers=h, json={
        "first_name": "Pierre", "last_name": "MARTIN", "login": "pmartin", "password": SUPERADMIN_PASSWORD,
        "password_confirmation": SUPERADMIN_PASSWORD}), 201)
    expect(http.post("/v1/console/controller/activation", headers=h), 200)
    plannings = expect(http.get("/v1/console/plannings", headers=h), 200)["plannings"]
    p1 = next(p["id"] for p in plannings if p["number"] == 1)
    base = expect(http.post(f"/v1/console/plannings/{p1}/bases", headers=h, json=GRID), 201)
    if base["server_state"] != "in_service":
        expect(http.put(f"/v1/console/plannings/{p1}/server", headers=h, json={"state": "in_service"}), 200)
    user = expect(http.post("/v1/console/users", headers=h, json={
        "login": "chargement", "last_name": "CHARGEMENT", "first_name": "Robot"}), 201)
    expect(http.put(f"/v1/console/plannings/{p1}/profiles/modification", headers=h,
                    json={"logins": ["chargement"]}), 200)
    token = expect(http.post("/v1/sessions", json={
        "domain": domain, "login": "chargement", "password": user["password"], "planning": p1,
        "mode": "administrative"}), 201)["token"]
    school = School(console=console, planning=p1, user_token=token, domain=domain,
                    base_id=str(base.get("id")) if base.get("id") else None)
    records = f"/v1/plannings/{p1}/records"
    u = bearer(token)
    school.subjects = [expect(http.post(f"{records}/subjects", headers=u, json={
        "name": f"Matière {i:02d}", "short_name": f"M{i:02d}"}), 201)["id"] for i in range(12)]
    classes = [expect(http.post(f"{records}/classes", headers=u, json={
        "name": f"{6 - i % 4}e{i:02d}", "level": f"{6 - i % 4}e"}), 201)["id"] for i in range(8)]
    school.students = [expect(http.post(f"{records}/students", headers=u, json={
        "last_name": f"ELEVE{i:05d}", "first_name": "Prénom", "class_id": classes[i % len(classes)],
        "birth_date": f"{2010 + i % 8}-0{1 + i % 9}-15"}), 201)["id"] for i in range(students)]
    if school.base_id is None:
        school.base_id = expect(http.get(f"/v1/console/plannings/{p1}/base", headers=h), 200).get("id")
    return school


def write_figure(result: dict[str, Any]) -> dict[str, Any]:
    """The headline of a write run: grades stored (201) per second and the p99 of every answer."""
    return {"writes_per_s": result.get("ok_per_s", 0.0), "p99_ms": result["latency_ms"]["p99"],
            "p50_ms": result["latency_ms"]["p50"], "non_2xx": result.get("non_2xx", {}),
            "socket_errors": {k: v for k, v in result["errors"].items() if v and k != "status"}}


def history_pages(http: Any, school: School, type_filter: str, limit: int, requests: int) -> dict[str, Any]:
    """`requests` GETs of the history filtered by type, walking the pages (back to the first at the end)."""
    h = bearer(school.console)
    # The first read waits for the view to hold every event committed before it (the writes just made).
    started = time.perf_counter()
    first = http.get("/v1/console/history", headers=h, params={"type": type_filter, "limit": limit})
    first_s = time.perf_counter() - started
    expect(first, 200)
    times, sizes, statuses = [], [], {}
    after = None
    for _ in range(requests):
        params = {"type": type_filter, "limit": limit, **({"after": after} if after is not None else {})}
        started = time.perf_counter()
        response = http.get("/v1/console/history", headers=h, params=params)
        times.append(time.perf_counter() - started)
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
        if response.status_code != 200:
            after = None
            continue
        page = response.json()
        sizes.append(len(page["events"]))
        after = page["next"]
    return {"type": type_filter, "limit": limit, "first_request_ms": first_s * 1e3, **summarise_ms(times),
            "events_per_page_median": statistics.median(sizes) if sizes else 0,
            "events_per_page_max": max(sizes) if sizes else 0, "statuses": statuses}


def history_limit(http: Any, school: School) -> dict[str, Any]:
    """The largest `limit` the history accepts, up to 1,000: the documented maximum, then checked."""
    documented = None
    spec = expect(http.get("/openapi.json"), 200)
    for parameter in spec.get("paths", {}).get("/v1/console/history", {}).get("get", {}).get("parameters", []):
        if parameter.get("name") == "limit":
            documented = parameter.get("schema", {}).get("maximum")
    wanted = HISTORY_LIMIT_WANTED
    answer = http.get("/v1/console/history", headers=bearer(school.console), params={"limit": wanted})
    used = wanted if answer.status_code == 200 else min(wanted, documented or 100)
    return {"wanted": wanted, "documented_maximum": documented, "status_with_wanted": answer.status_code,
            "used": used}


def export_history(http: Any, server: Server, school: School) -> dict[str, Any]:
    """GET /v1/console/history/export, streamed and counted, with the server's RSS sampled every 50 ms."""
    with RssSampler(server.pid) as rss:
        started = time.perf_counter()
        first_byte = None
        rows = size = 0
        with http.stream("GET", "/v1/console/history/export", headers=bearer(school.console)) as response:
            status = response.status_code
            for chunk in response.iter_bytes():
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                rows += chunk.count(b"\n")
                size += len(chunk)
        elapsed = time.perf_counter() - started
    return {"status": status, "rows": rows, "bytes": size, "seconds": elapsed, "rows_per_s": rows / elapsed,
            "first_byte_ms": (first_byte or 0) * 1e3, "rss": rss.report()}


def replay_in_process(data_dir: Path, workdir: Path, base_id: str, repeats: int) -> dict[str, Any]:
    """A full replay of the base with the Python API, server stopped: `repository.get` of the base in a fresh
    CampusApplication each time, so that no cache of campus (nor of the library) can answer it."""
    from campus.application import CampusApplication
    from campus.infra.settings import Settings

    settings = Settings(data_dir=data_dir, snapshots_dir=workdir / "snapshots", operator_token="x" * 43,
                        log_level="warning")
    runs = []
    for _ in range(repeats):
        app = CampusApplication(settings)
        try:
            repository = app.repository
            caches = {name: type(getattr(repository, name)).__name__ for name in ("cache", "memory")
                      if getattr(repository, name, None) is not None}
            # Every event from the first: a library snapshot of the base (taken in the background by the
            # server, campus/services/base_snapshots.py) must not shorten the replay measured here. The
            # first read after a restart (with the snapshot) is measured apart.
            if hasattr(repository, "snapshot_topics"):
                repository.snapshot_topics = frozenset()
            started = time.perf_counter()
            base = repository.get(uuid.UUID(base_id))
            elapsed = time.perf_counter() - started
            runs.append({"seconds": elapsed, "events": base.version})
            del base
        finally:
            app.close()
    best = min(runs, key=lambda r: r["seconds"])
    return {"runs": runs, "events": best["events"], "best_seconds": best["seconds"],
            "events_per_s": best["events"] / best["seconds"],
            "median_events_per_s": statistics.median(r["events"] / r["seconds"] for r in runs),
            "how": "app.repository.get(base_id) in a fresh CampusApplication per run (empty caches, no snapshot)",
            "repository": f"{type(repository).__module__}.{type(repository).__qualname__}",
            "repository_caches_present": caches}


def rebuild_views(server: Server) -> dict[str, Any]:
    """`campus views rebuild` (all views) on the stopped server's store: its own rate line per view."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "campus", "views", "rebuild", "--data-dir", str(server.data_dir)],
                          env=server.env, cwd=ROOT, capture_output=True, text=True, timeout=3600,
                          preexec_fn=die_with_parent)
    wall = time.perf_counter() - started
    views = {}
    for line in done.stderr.splitlines():
        found = re.search(r"rebuild: (\w+) rebuilt from ([\d,]+) events in ([\d.]+) s(?:, ([\d,]+) events/s)?", line)
        if found:
            events, seconds = int(found.group(2).replace(",", "")), float(found.group(3))
            rate = float(found.group(4).replace(",", "")) if found.group(4) else None  # from unrounded seconds
            views[found.group(1)] = {"events": events, "seconds": seconds,
                                     "events_per_s": rate or (events / seconds if seconds else None)}
    result = {"returncode": done.returncode, "wall_seconds": wall, "views": views}
    if done.returncode != 0 or not views:
        result["stderr"] = done.stderr[-2000:]
    return result


def preload(wrk: Wrk, server: Server, school: School, records: int, workdir: Path) -> dict[str, Any]:
    """`records` grades POSTed by wrk at 32 connections (each thread stops at its share)."""
    marker = str(workdir / f"preload-{secrets.token_hex(4)}-")
    share = -(-records // WRK_THREADS)
    result = wrk.run(server.base_url, 0, prelude=post_prelude([school.target()], quota=share, marker=marker),
                     scripts=("post_records.lua",), until_markers=(marker, WRK_THREADS),
                     max_seconds=max(120.0, records / 20))
    result["records_stored"] = result["statuses"].get("201", 0)
    return result


# -- the campus phases -----------------------------------------------------------------------------------------
def settle(http: Any, school: School) -> dict[str, Any]:
    """Wait until the views hold every event written so far (a history read and an as_of read wait for
    them: 503 view_behind after CAMPUS_VIEW_WAIT_SECONDS, then asked again), so that no follower still
    catching up runs beside the next measurement. Returns how long each took."""
    h = bearer(school.console)
    waits: dict[str, Any] = {}
    for name, path, params in (
            ("history", "/v1/console/history", {"limit": 1}),
            ("timeline", f"/v1/console/plannings/{school.planning}/base",
             {"as_of": dt.datetime.now(dt.timezone.utc).isoformat()})):
        started, statuses = time.perf_counter(), []
        for _ in range(30):
            status = http.get(path, headers=h, params=params).status_code
            statuses.append(status)
            if status != 503:
                break
        waits[name] = {"seconds": time.perf_counter() - started, "statuses": statuses}
    return waits


class Stopped(BaseException):
    """SIGTERM / SIGINT: the run ends at once (and cleans up), no phase swallows it."""


class PhaseFailed(Exception):
    """A phase the rest depends on failed: the other phases of that store are skipped."""


class Phases:
    """Runs each measurement on its own: one that fails (a refusal, a bug of the moment in campus) is
    recorded under `errors` with its reason, and the others still run."""

    def __init__(self, out: dict[str, Any], store: str) -> None:
        self.out, self.store = out, store
        out.setdefault("errors", {})

    def __call__(self, name: str, fn: Any, *, fatal: bool = False) -> Any:
        try:
            return fn()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - expect() raises SystemExit on a refusal
            reason = f"{type(exc).__name__}: {exc}"
            self.out["errors"][name] = reason[-2000:]
            log(f"  {self.store}: {name} failed: {reason[-300:]}")
            if fatal:
                raise PhaseFailed(name) from exc
            return None


def measure_campus_sqlite(args: argparse.Namespace, wrk: Wrk, baselines: Baselines, workdir: Path,
                          stack: ExitStack, out: dict[str, Any]) -> None:
    import httpx

    phase = Phases(out, "campus (SQLite)")
    server = Server(workdir / "campus-sqlite", stack)
    server.workdir.mkdir()
    try:
        out["server_start_s"] = phase("start", server.start, fatal=True)
        http = stack.enter_context(httpx.Client(base_url=server.base_url, timeout=300.0))
        log("campus (SQLite): setting up the loaded school")
        main = phase("set_up", lambda: set_up_school(http, server, "ratios", args.students), fatal=True)
        log(f"campus (SQLite): preloading {args.records:,} grades through the API (wrk, {CONNECTIONS} connections)")
        out["preload"] = phase("preload", lambda: preload(wrk, server, main, args.records, workdir), fatal=True)
        log(f"  {out['preload']['records_stored']:,} grades stored at {out['preload'].get('ok_per_s', 0):.0f}/s")
        out["views_settle_after_preload"] = phase("settle", lambda: settle(http, main))
    except PhaseFailed:
        server.stop()
        out["server_log_errors"] = server.server_errors()
        return

    def write_run(targets: list[dict[str, Any]]) -> dict[str, Any]:
        wrk.run(server.base_url, args.warmup, prelude=post_prelude(targets), scripts=("post_records.lua",))
        return wrk.run(server.base_url, args.seconds, prelude=post_prelude(targets), scripts=("post_records.lua",))

    def writes_one_school() -> dict[str, Any]:
        paired = {"sqlite_commits": baselines.sqlite("beside writes, one school"),
                  "hello_json": baselines.hello("beside writes, one school")}
        log("campus (SQLite): writes, one school")
        return {**write_run([main.target()]), "paired_baselines": paired}

    out["writes_one_school"] = phase("writes_one_school", writes_one_school)

    def writes_four_schools() -> dict[str, Any]:
        log("campus (SQLite): setting up 3 more schools")
        schools = [main, *(set_up_school(http, server, f"ratios{n}", args.students) for n in range(2, 5))]
        settle(http, main)
        paired = {"sqlite_commits": baselines.sqlite("beside writes, 4 schools"),
                  "hello_json": (out.get("writes_one_school") or {}).get("paired_baselines", {}).get("hello_json")
                  or baselines.hello("beside writes, 4 schools")}
        log("campus (SQLite): writes spread over 4 schools")
        return {**write_run([s.target() for s in schools]), "paired_baselines": paired,
                "schools": "the loaded school and 3 schools with only their population"}

    out["writes_four_schools"] = phase("writes_four_schools", writes_four_schools)
    out["views_settle_after_writes"] = phase("settle_after_writes", lambda: settle(http, main))

    def reads() -> dict[str, Any]:
        log("campus (SQLite): reads")
        grade = expect(http.get(f"/v1/plannings/{main.planning}/records/grades", headers=bearer(main.user_token),
                                params={"limit": 1}), 200)["records"][0]["id"]
        paths = {"one_record": (f"/v1/plannings/{main.planning}/records/grades/{grade}", main.user_token),
                 "dashboard": (f"/v1/console/plannings/{main.planning}/base", main.console),
                 "plannings": ("/v1/console/plannings", main.console)}
        out["reads_paired_hello"] = baselines.hello("beside reads")
        runs = {}
        for name, (path, token) in paths.items():
            expect(http.get(path, headers=bearer(token)), 200)
            wrk.run(server.base_url + path, args.warmup, headers=bearer(token))
            runs[name] = wrk.run(server.base_url + path, args.seconds, headers=bearer(token))
        return runs

    out["reads"] = phase("reads", reads)

    def history() -> None:
        log("campus (SQLite): history pages")
        out["history_limit"] = limit = history_limit(http, main)
        out["history_page"] = history_pages(http, main, DENSE_TYPE, limit["used"], args.history_requests)
        out["history_page_sparse"] = history_pages(http, main, SPARSE_TYPE, limit["used"], args.history_requests)

    phase("history_pages", history)
    log("campus (SQLite): history export")
    out["export"] = phase("export", lambda: export_history(http, server, main))

    def at_the_end() -> None:
        dashboard = expect(http.get(f"/v1/console/plannings/{main.planning}/base", headers=bearer(main.console)), 200)
        out["base_counts"] = dashboard.get("counts")

    phase("dashboard_at_the_end", at_the_end)
    out["rss_end"] = {"rss_mib": (proc_status_kib(server.pid, "VmRSS") or 0) / 1024,
                      "hwm_mib": (proc_status_kib(server.pid, "VmHWM") or 0) / 1024}
    http.close()
    out["server_stop_returncode"] = server.stop()

    db = server.data_dir / "campus.sqlite3"

    def store() -> tuple[str, str]:
        table = events_table(db)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            out["store"] = {"events_table": table,
                            "events_total": conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0],
                            "file_mib": sum(f.stat().st_size for f in server.data_dir.glob("campus.sqlite3*")) / 2**20}
            tenant = conn.execute("SELECT tenant FROM campus_history WHERE aggregate_id IN (?, ?) LIMIT 1",
                                  (main.base_id, uuid.UUID(main.base_id).hex)).fetchone()[0]
        return table, tenant

    found = phase("store", store)
    if found:
        table, tenant = found
        log("raw select + encode of the school's history rows")
        out["raw_export"] = phase("raw_export", lambda: raw_export(db, tenant))
        log("replay of the base: campus in-process, then the raw fold")
        out["replay"] = phase("replay", lambda: replay_in_process(server.data_dir, server.workdir, main.base_id,
                                                                  args.replays))
        out["raw_fold"] = phase("raw_fold", lambda: raw_fold(db, table, main.base_id, args.replays))
    log("view catch-up: campus views rebuild")
    out["views_rebuild"] = phase("views_rebuild", lambda: rebuild_views(server))

    def restart() -> dict[str, Any]:
        log("restart: first dashboard read")
        start_s = server.start()
        with httpx.Client(base_url=server.base_url, timeout=300.0) as fresh:
            started = time.perf_counter()
            expect(fresh.get(f"/v1/console/plannings/{main.planning}/base", headers=bearer(main.console)), 200)
            first = time.perf_counter() - started
            started = time.perf_counter()
            expect(fresh.get(f"/v1/console/plannings/{main.planning}/base", headers=bearer(main.console)), 200)
            second = time.perf_counter() - started
        return {"start_to_healthy_s": start_s, "first_dashboard_ms": first * 1e3,
                "second_dashboard_ms": second * 1e3, "events_of_base": (out.get("replay") or {}).get("events"),
                "rss_mib_after": (proc_status_kib(server.pid, "VmRSS") or 0) / 1024}

    out["restart"] = phase("restart", restart)
    server.stop()
    out["server_log_errors"] = server.server_errors()
    for key in [k for k, v in out.items() if v is None]:
        del out[key]  # failed: the reason is under errors


def measure_campus_postgres(args: argparse.Namespace, wrk: Wrk, baselines: Baselines, workdir: Path,
                            stack: ExitStack, out: dict[str, Any]) -> None:
    import httpx

    phase = Phases(out, "campus (PostgreSQL)")
    server = Server(workdir / "campus-postgres", stack, postgres_dsn=args.postgres_dsn)
    server.workdir.mkdir()
    out["schema"] = f"{server.schema} (dropped)"

    def writes() -> None:
        out["server_start_s"] = server.start()
        with httpx.Client(base_url=server.base_url, timeout=300.0) as http:
            log("campus (PostgreSQL): setting up one school")
            school = set_up_school(http, server, "ratiospg", args.students)
            settle(http, school)
        target = [school.target()]
        paired = {"psycopg_commits": baselines.psycopg("beside PostgreSQL writes")}
        log("campus (PostgreSQL): writes, one school")
        wrk.run(server.base_url, args.warmup, prelude=post_prelude(target), scripts=("post_records.lua",))
        out["writes_one_school"] = {**wrk.run(server.base_url, args.seconds, prelude=post_prelude(target),
                                              scripts=("post_records.lua",)), "paired_baselines": paired}
        out["rss_end_mib"] = (proc_status_kib(server.pid, "VmRSS") or 0) / 1024

    phase("writes_one_school", writes)
    server.stop()
    out["server_log_errors"] = server.server_errors()
    phase("drop_schema", server.drop_schema)


# -- the table ----------------------------------------------------------------------------------------------------
def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the table: figure, campus, baseline, ratio, the issue's target (each with its numbers).
    Each campus figure is compared with the baseline sample measured just before it (paired)."""
    b, c, p = r["baselines"], r.get("campus_sqlite", {}), r.get("campus_postgres", {})
    rows: list[dict[str, Any]] = []

    def add(figure: str, campus: str, baseline: str, ratios: dict[str, float | None], target: str,
            values: dict[str, Any]) -> None:
        rows.append({"figure": figure, "campus": campus, "baseline": baseline, "ratios": ratios, "target": target,
                     "values": values})

    def not_201(w: dict[str, Any]) -> str:
        bad = sum(w["non_2xx"].values()) + sum(w["socket_errors"].values())
        return f" ({bad:,} not 201: {w['non_2xx'] or w['socket_errors']})" if bad else ""

    for key, label in (("writes_one_school", "record writes, one school"),
                       ("writes_four_schools", "record writes spread over 4 schools")):
        if key in c:
            w = write_figure(c[key])
            paired = c[key]["paired_baselines"]
            commits = paired["sqlite_commits"]["commits_per_s"]
            hello_p99 = paired["hello_json"]["latency_ms"]["p99"]
            add(label, f"{w['writes_per_s']:,.0f}/s, p99 {w['p99_ms']:,.1f} ms{not_201(w)}",
                f"raw SQLite 1-row durable commits {commits:,.0f}/s; hello-JSON p99 {hello_p99:.2f} ms",
                {"writes_vs_sqlite_commits": ratio(w["writes_per_s"], commits),
                 "p99_vs_hello_p99": ratio(w["p99_ms"], hello_p99)},
                "≥ 1.0; p99 ≤ 10×", {**w, "baseline_commits_per_s": commits, "baseline_p99_ms": hello_p99})
    if "reads" in c:
        hello_rps = c["reads_paired_hello"]["req_per_s"]
        rps = {k: v["req_per_s"] for k, v in c["reads"].items()}
        bad = sum(v["errors"]["status"] for v in c["reads"].values())
        order = ("one_record", "dashboard", "plannings")
        add("GET one record / base dashboard / plannings",
            " / ".join(f"{rps[k]:,.0f}" for k in order) + " req/s (p99 "
            + " / ".join(f"{c['reads'][k]['latency_ms']['p99']:,.0f}" for k in order) + " ms)"
            + (f" ({bad:,} non-2xx)" if bad else ""),
            f"hello-JSON {hello_rps:,.0f} req/s",
            {f"{k}_vs_hello": ratio(v, hello_rps) for k, v in rps.items()}, "≥ 0.5 each",
            {"req_per_s": rps, "p99_ms": {k: v["latency_ms"]["p99"] for k, v in c["reads"].items()},
             "baseline_req_per_s": hello_rps})
    if "replay" in c and "raw_fold" in c:
        rp, rf = c["replay"], c["raw_fold"]
        add(f"full replay of a {rp['events']:,}-event base",
            f"{rp['events_per_s']:,.0f} events/s ({rp['best_seconds']:.2f} s)",
            f"sqlite3 + msgpack + fold of the same rows: {rf['events_per_s']:,.0f} events/s",
            {"replay_vs_raw_fold": ratio(rp["events_per_s"], rf["events_per_s"])}, "≥ 0.5",
            {"campus_events_per_s": rp["events_per_s"], "baseline_events_per_s": rf["events_per_s"]})
    if "restart" in c:
        rs = c["restart"]
        add(f"first dashboard read after a restart ({rs['events_of_base'] or 0:,}-event base)",
            f"{rs['first_dashboard_ms']:,.0f} ms (then {rs['second_dashboard_ms']:,.1f} ms)", "—", {},
            "≤ 1 s at 1,000,000 events", rs)
    if "writes_one_school" in p:
        w = write_figure(p["writes_one_school"])
        pg = p["writes_one_school"]["paired_baselines"]["psycopg_commits"]["commits_per_s"]
        add("PostgreSQL writes, one school", f"{w['writes_per_s']:,.0f}/s, p99 {w['p99_ms']:,.1f} ms{not_201(w)}",
            f"raw psycopg 1-row commits, one connection: {pg:,.0f}/s",
            {"writes_vs_psycopg_commits": ratio(w["writes_per_s"], pg)}, "≥ 1.0",
            {**w, "baseline_commits_per_s": pg})
    if "history_page" in c and "history_page_sparse" in c:
        h, s = c["history_page"], c["history_page_sparse"]
        add(f"history page, type={h['type']}, limit={h['limit']} ({h['events_per_page_median']:.0f} events/page)",
            f"median {h['median_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms (n={h['n']})", "—", {},
            "≤ 10 ms for 1,000 events", h)
        add(f"history page, type={s['type']}, limit={s['limit']} (sparse: {s['events_per_page_max']:.0f} matching"
            " event among the school's rows; without an index on type the filter reads them all)",
            f"median {s['median_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms (n={s['n']})", "—", {}, "—", s)
    if "export" in c and "raw_export" in c:
        e, re_ = c["export"], c["raw_export"]
        add(f"history export, {e['rows']:,} rows",
            f"{e['rows_per_s']:,.0f} rows/s, RSS +{e['rss']['growth_mib']:,.0f} MiB"
            + (f" (status {e['status']})" if e["status"] != 200 else ""),
            f"raw select + orjson of the same rows: {re_['rows_per_s']:,.0f} rows/s",
            {"export_vs_raw": ratio(e["rows_per_s"], re_["rows_per_s"])}, "≥ 200,000 rows/s; RSS ≤ +50 MiB",
            {"rows_per_s": e["rows_per_s"], "rss_growth_mib": e["rss"]["growth_mib"],
             "baseline_rows_per_s": re_["rows_per_s"]})
    if "views_rebuild" in c:
        v = c["views_rebuild"]["views"]
        add("view catch-up (`campus views rebuild`)",
            " / ".join(f"{name} {x['events_per_s']:,.0f} events/s ({x['events']:,} in {x['seconds']:.1f} s)"
                       for name, x in v.items()) or f"failed: {c['views_rebuild'].get('stderr', '')[-200:]}",
            "—", {}, "≥ 20,000 events/s", v)
    if "rss_end" in c and "store" in c:
        hello_rss = b["hello_json"]["samples"][-1].get("rss_mib", 0) if b["hello_json"]["samples"] else 0
        add("server RSS at the end",
            f"{c['rss_end']['rss_mib']:,.0f} MiB (peak {c['rss_end']['hwm_mib']:,.0f} MiB), "
            f"{c['store']['events_total']:,} events over 4 schools",
            f"hello-JSON server {hello_rss:,.0f} MiB", {},
            "≤ 300 MB at 1,000,000 events over 100 schools", {**c["rss_end"], "events": c["store"]["events_total"]})
    for store, part in (("SQLite", c), ("PostgreSQL", p)):
        for name, reason in (part.get("errors") or {}).items():
            add(f"{store}: {name} FAILED", reason.replace("|", "\\|").replace("\n", " ")[-300:], "—", {}, "—",
                {"error": reason})
    return rows


def format_ratios(ratios: dict[str, float | None]) -> str:
    parts = []
    for name, value in ratios.items():
        if value is None:
            continue
        if name.startswith("p99"):
            parts.append(f"p99 {value:,.1f}×")
        else:
            parts.append(f"{value:.3f}" if value < 10 else f"{value:,.1f}")
    return " / ".join(parts) if parts else "—"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| figure | campus | baseline, same run | ratio | issue 11 target |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['figure']} | {row['campus']} | {row['baseline']} | {format_ratios(row['ratios'])}"
                     f" | {row['target']} |")
    return "\n".join(lines)


def readme_section(result: dict[str, Any]) -> str:
    m = result["machine"]
    c = result.get("campus_sqlite", {})
    b = result["baselines"]
    notes = [
        f"Run {m['date']} on commit `{m['git_commit'][:12]}`"
        + (f" plus the working tree's changes to {', '.join(f'`{d.split(maxsplit=1)[-1]}`' for d in m['git_dirty'] if d.split(maxsplit=1)[-1].startswith('campus/'))}"
           if any(d.split(maxsplit=1)[-1].startswith("campus/") for d in m["git_dirty"]) else "")
        + f", {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['wrk']}: "
        f"`{m['command']}` ({result['options']['seconds']:g} s per wrk run, {CONNECTIONS} connections,"
        f" {WRK_THREADS} wrk threads; load average {m['loadavg_at_start'][0]:.1f} at start,"
        f" {result['loadavg_at_end'][0]:.1f} at end; {result['wall_seconds'] / 60:.1f} min in all).",
    ]
    if c:
        pre = c["preload"]
        notes.append(
            f"The loaded school: {pre['records_stored']:,} grades preloaded through the API"
            f" ({pre.get('ok_per_s', 0):,.0f}/s) on 12 subjects, 8 classes and {result['options']['students']}"
            f" students; {c['store']['events_total']:,} events in the store at the end. Writes are grades with a"
            " unique body per request; p99 is wrk's, of every answer. Each ratio uses the baseline measured just"
            " before its campus figure (every sample is in the JSON). Raw SQLite commits with 32 threads sharing"
            " one connection through a lock: "
            + ", ".join(f"{x['commits_per_s']:,.0f}/s" for x in b["sqlite_commits"]["samples"] if x["threads"] > 1)
            + "; single-thread samples: "
            + ", ".join(f"{x['commits_per_s']:,.0f}/s ({x['label']})" for x in b["sqlite_commits"]["samples"]
                        if x["threads"] == 1) + ".")
        lim = c.get("history_limit", {})
        if lim and lim.get("used") != lim.get("wanted"):
            notes.append(f"History pages use limit={lim['used']}: the API refuses limit={lim['wanted']}"
                         f" ({lim['status_with_wanted']}; documented maximum {lim['documented_maximum']}).")
        page = c.get("history_page", {})
        if page and page.get("events_per_page_max", 0) < page.get("limit", 0):
            notes.append(f"History pages asked for limit={page['limit']} held at most"
                         f" {page['events_per_page_max']} events: the server caps the page.")
    if result.get("campus_postgres", {}).get("skipped"):
        notes.append(f"PostgreSQL: skipped ({result['campus_postgres']['skipped']}).")
    if result.get("shared_machine_note"):
        notes.append(result["shared_machine_note"])
    return "\n".join([
        "### `ratios.py` — issue 11", "",
        "`.venv/bin/python bench/ratios.py [--quick] [--seconds 10] [--records N] [--skip-postgres]"
        " [--postgres-dsn DSN]`: every figure of issue 11 beside its baseline, in one run on this machine, with"
        " `wrk` as the client (installed with apt-get when missing; Lua in `wrk_scripts/`). Baselines: a"
        " hello-JSON Starlette app under uvicorn with `campus serve`'s options, raw SQLite durable commits"
        " (WAL, synchronous=FULL, one row per transaction), raw psycopg 1-row commits on one connection, a raw"
        " sqlite3 + msgpack + fold of the base's rows, a raw select + orjson of the school's history rows."
        " Results: `results/ratios.json` (every raw figure and baseline sample, machine, commit; `--quick`, ~1-3"
        " minutes, writes `$TMPDIR/ratios-quick.json` and leaves this section alone). A default run takes ~5"
        " minutes on 2 cores.", "",
        markdown_table(result["table"]), "",
        *[f"{note}\n" for note in notes],
    ]).rstrip() + "\n"


def update_readme(section: str) -> None:
    text = README.read_text()
    block = f"{README_BEGIN}\n{section}{README_END}\n"
    if README_BEGIN in text and README_END in text:
        head, rest = text.split(README_BEGIN, 1)
        tail = rest.split(README_END, 1)[1].lstrip("\n")
        text = head + block + (("\n" + tail) if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    README.write_text(text)


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    for row in rows:
        print(f"{row['figure']}\n    campus:   {row['campus']}\n    baseline: {row['baseline']}\n"
              f"    ratio:    {format_ratios(row['ratios'])}    (target {row['target']})")


# -- main -------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, workdir: Path, stack: ExitStack) -> dict[str, Any]:
    started = time.monotonic()
    wrk = Wrk(ensure_wrk(), workdir, stack)
    result: dict[str, Any] = {
        "what": "issue 11: campus figures beside their baselines, one run, same machine; wrk as the client",
        "machine": machine_info(args),
        "options": {"quick": args.quick, "seconds": args.seconds, "warmup_seconds": args.warmup,
                    "records": args.records, "students": args.students, "connections": CONNECTIONS,
                    "wrk_threads": WRK_THREADS, "history_requests": args.history_requests, "replays": args.replays,
                    "postgres": None if args.skip_postgres else args.postgres_dsn},
        "baselines": {},
    }
    postgres_problem = None
    if not args.skip_postgres:
        try:
            import psycopg

            with psycopg.connect(args.postgres_dsn, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any reason PostgreSQL cannot be used
            postgres_problem = f"{args.postgres_dsn} not reachable: {exc}"
            log(f"PostgreSQL skipped: {postgres_problem}")

    usage = CpuUsage()
    baselines = Baselines(args, wrk, workdir, stack)
    baselines.hello("start")
    baselines.sqlite("start")
    baselines.sqlite("start", threads=CONNECTIONS)

    result["campus_sqlite"] = {}
    measure_campus_sqlite(args, wrk, baselines, workdir, stack, result["campus_sqlite"])

    if args.skip_postgres:
        result["campus_postgres"] = {"skipped": "--skip-postgres"}
    elif postgres_problem:
        result["campus_postgres"] = {"skipped": postgres_problem}
    else:
        result["campus_postgres"] = {}
        measure_campus_postgres(args, wrk, baselines, workdir, stack, result["campus_postgres"])

    baselines.close()  # its CPU time counts as this run's once it has ended
    result["baselines"] = baselines.report()
    result["baselines"]["raw_fold"] = result["campus_sqlite"].get("raw_fold")
    result["baselines"]["raw_export"] = result["campus_sqlite"].get("raw_export")
    result["loadavg_at_end"] = loadavg()
    result["wall_seconds"] = time.monotonic() - started
    result["cpu_of_other_work"] = usage.report()
    if result["cpu_of_other_work"]["share_of_machine"] > SHARED_THRESHOLD:
        result["shared_machine_note"] = (
            f"The machine was shared: other processes used {result['cpu_of_other_work']['share_of_machine']:.0%}"
            f" of its {os.cpu_count()} CPUs during the run (/proc/stat minus this run's own processes), and its"
            " fsync rate moved between samples (raw SQLite commits"
            f" {result['baselines']['sqlite_commits']['spread']['min']:,.0f}–"
            f"{result['baselines']['sqlite_commits']['spread']['max']:,.0f}/s): each ratio uses the baseline"
            " measured just before its campus figure.")
    result["table"] = figures(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (3 s per wrk run, 3,000 preloaded grades): ~2-3 minutes, to try the script")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per wrk run (default 10; quick 3)")
    parser.add_argument("--records", type=int, default=None,
                        help="grades preloaded through the API before the measurements (default 60,000; quick 3,000)")
    parser.add_argument("--skip-postgres", action="store_true", help="no PostgreSQL baseline nor campus on PostgreSQL")
    parser.add_argument("--postgres-dsn", default=DEFAULT_DSN,
                        help=f"PostgreSQL for the raw commits and campus (fresh schemas, dropped after; {DEFAULT_DSN})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (stores, server logs)")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default bench/results/ratios.json)")
    parser.add_argument("--no-readme", action="store_true", help="do not write the section of bench/README.md")
    parser.add_argument("--render", type=Path, metavar="JSON", default=None,
                        help="only rewrite the README section (and print the table) from a saved results file")
    parser.add_argument("--serve-hello", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hello:
        serve_hello(args.serve_hello)
        return
    if args.render:
        result = json.loads(args.render.read_text())
        result["table"] = figures(result)
        print(markdown_table(result["table"]))
        if not args.no_readme:
            update_readme(readme_section(result))
            print(f"section of {README.relative_to(ROOT)} written from {args.render}")
        return
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.records = args.records if args.records is not None else (3000 if args.quick else 60_000)
    args.warmup = 1.0 if args.quick else 2.0
    args.students = 100 if args.quick else 200
    args.history_requests = 20 if args.quick else 50
    args.replays = 2 if args.quick else 3
    if args.seconds <= 0 or args.records < 1:
        parser.error("--seconds and --records must be positive")
    # A quick run is a try of the script: its figures stay out of the repository unless --out says where.
    out = args.out or (Path(tempfile.gettempdir()) / "ratios-quick.json" if args.quick
                       else BENCH / "results" / "ratios.json")
    sys.path.insert(0, str(ROOT))

    def terminate(signum: int, frame: object) -> None:
        raise Stopped(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    workdir = Path(tempfile.mkdtemp(prefix="campus-ratios-"))
    with ExitStack() as stack:
        if args.keep:
            stack.callback(lambda: print(f"kept {workdir}", file=sys.stderr))
        else:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        result = run(args, workdir, stack)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print_table(result["table"])
    print()
    print(markdown_table(result["table"]))
    print(f"\nwritten to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    if not args.quick and not args.no_readme and out == BENCH / "results" / "ratios.json":
        update_readme(readme_section(result))
        print(f"section of {README.relative_to(ROOT)} written")


if __name__ == "__main__":
    main()
