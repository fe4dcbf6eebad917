"""Point-in-time reads of a base with a million events, against a full replay (issue 4).

Builds, in a fresh store (SQLite in a temporary folder, or PostgreSQL in a
schema of its own with ``--postgres DSN``), one school base with 1,000,000
events spread evenly over 30 days: a population of subjects, teachers,
classes and students, then grades entered, corrected and deleted, absences
entered and justified, students moved between classes. The events are those
the application writes (the Base aggregate's own methods, saved in batches,
each event stamped by the one clock as it advances).

Measured in the same run, on the same machine and store:

* **as_of read**: what ``GET /v1/console/plannings/{id}/base?as_of=T`` and
  ``GET /v1/plannings/{id}/records/grades?as_of=T`` do (the service calls under
  those routes): the base at T (counts, grid, last entry) plus the first page
  of 100 grades at T, for random instants T of the history so far;
* **full replay**: reading the base by replaying its stream from the first
  event (``repository.get``), the baseline any event store offers.

Both are taken at several history lengths (1/16, 1/8, 1/4, 1/2 and all of the
events) for the plot of latency against history length. At a few instants the
as_of answer is checked against a replay to the same version. The projections
are caught up before reads are timed; their catch-up time is reported too.

Results: ``bench/results/as_of.json`` and ``bench/results/as_of.png``.

    .venv/bin/python bench/as_of.py [--events 1000000] [--reads 200] [--postgres DSN]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from campus.application import CampusApplication
from campus.infra.clock import ManualClock, reset_clock, use_clock
from campus.infra.settings import Settings

RESULTS = Path(__file__).parent / "results"
END = datetime(2026, 11, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
BATCH = 2000


def settings_for(folder: Path, postgres: str | None) -> Settings:
    if postgres is None:
        return Settings(data_dir=folder, snapshots_dir=folder / "snapshots")
    separator = "&" if "?" in postgres else "?"
    return Settings(data_dir=folder, snapshots_dir=folder / "snapshots",
                    postgres_dsn=f"{postgres}{separator}schema=bench_asof_{uuid4().hex[:8]}")


class Workload:
    """A school's month: mostly grades, some absences, a few class moves."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.subjects = [uuid4() for _ in range(20)]
        self.teachers = [uuid4() for _ in range(150)]
        self.classes = [uuid4() for _ in range(80)]
        self.students = [uuid4() for _ in range(2000)]
        self.grades: list[UUID] = []
        self.absences: list[UUID] = []

    def population(self) -> list[tuple[str, UUID, dict]]:
        rows: list[tuple[str, UUID, dict]] = []
        rows += [("subjects", s, {"name": f"Subject {i}", "short_name": f"S{i}"}) for i, s in enumerate(self.subjects)]
        rows += [("teachers", t, {"last_name": f"Teacher{i}", "first_name": "Ann"}) for i, t in enumerate(self.teachers)]
        rows += [("classes", c, {"name": f"{6 + i % 4}{chr(65 + i // 4)}"}) for i, c in enumerate(self.classes)]
        rows += [("students", s, {"last_name": f"Student{i}", "first_name": "Sam", "class_id": self.rng.choice(self.classes)})
                 for i, s in enumerate(self.students)]
        return rows

    def step(self, base: Any, at: datetime) -> None:
        roll = self.rng.random()
        if roll < 0.45 or not self.grades:
            record_id = uuid4()
            self.grades.append(record_id)
            base.add_record(kind="grades", record_id=record_id, at=at, fields={
                "student_id": self.rng.choice(self.students), "subject_id": self.rng.choice(self.subjects),
                "value": Decimal(self.rng.randint(0, 40)) / 2, "scale": Decimal(20), "coefficient": Decimal(1),
                "date": at.date()})
        elif roll < 0.70:
            base.change_record(kind="grades", record_id=self.rng.choice(self.grades), at=at,
                               changes={"value": Decimal(self.rng.randint(0, 40)) / 2})
        elif roll < 0.80:
            index = self.rng.randrange(len(self.grades))
            self.grades[index], self.grades[-1] = self.grades[-1], self.grades[index]
            base.remove_record(kind="grades", record_id=self.grades.pop(), at=at)
        elif roll < 0.90 or not self.absences:
            record_id = uuid4()
            self.absences.append(record_id)
            base.add_record(kind="absences", record_id=record_id, at=at, fields={
                "student_id": self.rng.choice(self.students), "start": at, "end": at + timedelta(hours=1),
                "justified": False})
        elif roll < 0.95:
            base.change_record(kind="absences", record_id=self.rng.choice(self.absences), at=at,
                               changes={"justified": True, "reason": "medical"})
        else:
            base.change_record(kind="students", record_id=self.rng.choice(self.students), at=at,
                               changes={"class_id": self.rng.choice(self.classes)})


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def as_of_read(app: CampusApplication, account_id: UUID, planning_id: UUID, instant: datetime) -> tuple[Any, list]:
    past = app.time_machine.base_as_of(account_id, planning_id, instant)
    page, _ = app.bases.list_records(account_id, planning_id, "grades", limit=100, as_of=instant)
    return past, page


def measure_reads(app: CampusApplication, account_id: UUID, planning_id: UUID, start: datetime, end: datetime,
                  count: int, rng: random.Random) -> list[float]:
    latencies = []
    for _ in range(count):
        instant = start + (end - start) * rng.random()
        seconds, _ = timed(lambda instant=instant: as_of_read(app, account_id, planning_id, instant))
        latencies.append(seconds * 1000)
    return latencies


def check(app: CampusApplication, account_id: UUID, planning_id: UUID, base_id: UUID, instant: datetime) -> None:
    """The as_of answer equals a replay to the same version (counts, last entry, the first page of grades)."""
    past, page = as_of_read(app, account_id, planning_id, instant)
    replayed = app.repository.get(base_id, version=past.base.version)
    if past.base.counts() != replayed.counts() or past.base.last_entry_at != replayed.last_entry_at:
        raise SystemExit(f"as_of disagrees with the replay at {instant}")
    if page != list(replayed.records["grades"].items())[:100]:
        raise SystemExit(f"as_of records page disagrees with the replay at {instant}")


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = [p["events"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot(lengths, [p["full_replay_ms"] for p in points], "o-", label="full replay from the first event")
    ax.plot(lengths, [p["as_of_median_ms"] for p in points], "o-", label="as_of read (median)")
    ax.fill_between(lengths, [p["as_of_p5_ms"] for p in points], [p["as_of_p95_ms"] for p in points], alpha=0.25,
                    label="as_of read (5th–95th percentile)")
    ax.axhline(50, color="grey", linestyle=":", label="50 ms target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events in the base's history")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("Reading a base as of an instant vs replaying it")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=200, help="as_of reads timed on the whole history")
    parser.add_argument("--postgres", help="postgresql://user@host:port/db (default: SQLite in a temp folder)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS / "as_of.json")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="campus-bench-asof-"))
    clock = ManualClock(END - SPAN)
    app = CampusApplication(settings_for(folder, args.postgres), clock=clock)
    try:
        opened = app.accounts.open_account("Bench school", "Bench manager", "manager@example.org")
        account_id, planning_id = opened.account.id, opened.account.planning_ids[0]
        password = "Bench-superadmin-2026!"
        app.users.create_first_superadministrator(account_id, first_name="Ada", last_name="Admin", login="admin",
                                            password=password, password_confirmation=password)
        _, created = app.bases.create_base(account_id, planning_id, name="Bench base", first_monday=date(2026, 8, 31),
                                     last_sunday=date(2027, 7, 4), working_days=["mon", "tue", "wed", "thu", "fri"],
                                     sequences_per_day=8, sequence_minutes=55, split=1)
        base_id = created.id
        workload = Workload(rng)
        step = SPAN / args.events
        checkpoints = sorted({args.events // 16, args.events // 8, args.events // 4, args.events // 2, args.events})
        points: list[dict] = []
        write_seconds = projection_seconds = 0.0
        token = use_clock(clock)  # every event reads the manual clock: its own instant, 30 days / n apart
        try:
            base = app.repository.get(base_id)
            population = workload.population()
            for i in range(0, len(population), 500):
                base.import_records(records=tuple(population[i:i + 500]), last_entry_at=clock.now())
            app.save(base)
            for target in checkpoints:
                started = time.perf_counter()
                while base.version < target:
                    for _ in range(min(BATCH, target - base.version)):
                        workload.step(base, clock.now())
                        clock.advance(step)
                    app.save(base)
                write_seconds += time.perf_counter() - started
                seconds, _ = timed(lambda: (app.history.catch_up(), app.timeline.catch_up()))
                projection_seconds += seconds
                first, last = app.repository.get(base_id, version=1).created_on, clock.now()
                if target == checkpoints[1]:
                    for _ in range(3):
                        check(app, account_id, planning_id, base_id, first + (last - first) * rng.random())
                reads = measure_reads(app, account_id, planning_id, first, last,
                                      args.reads if target == checkpoints[-1] else 50, rng)
                replay_seconds, replayed = timed(lambda: app.repository.get(base_id))
                cuts = statistics.quantiles(reads, n=20)
                point = {"events": base.version, "records": sum(replayed.counts().values()),
                         "full_replay_ms": round(replay_seconds * 1000, 1),
                         "as_of_median_ms": round(statistics.median(reads), 2),
                         "as_of_p5_ms": round(cuts[0], 2), "as_of_p95_ms": round(cuts[-1], 2),
                         "as_of_max_ms": round(max(reads), 2), "reads": len(reads)}
                points.append(point)
                print(json.dumps(point), flush=True)
        finally:
            reset_clock(token)
        final = points[-1]
        speedup = final["full_replay_ms"] / final["as_of_median_ms"]
        results = {
            "what": "as_of read (base at T + first 100 grades at T) vs full replay of the base, same run",
            "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                        "cpus": __import__("os").cpu_count()},
            "store": "postgres" if args.postgres else "sqlite",
            "events": final["events"],
            "span_days": SPAN.days,
            "records_at_end": final["records"],
            "write_seconds": round(write_seconds, 1),
            "projection_catch_up_seconds": round(projection_seconds, 1),
            "final": final,
            "speedup_median_vs_full_replay": round(speedup, 1),
            "targets": {"median_le_50_ms": final["as_of_median_ms"] <= 50, "speedup_ge_500": speedup >= 500},
            "points": points,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        plot(points, args.out.with_suffix(".png"))
        print(json.dumps({k: results[k] for k in ("events", "final", "speedup_median_vs_full_replay", "targets")},
                         indent=2))
    finally:
        app.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
