"""kill -9 during a save leaves either the old or the new file, never a torn one.

A small writer process (the script below) imports campus once and forks, on
request, children that overwrite one target path in a loop with campus's own
writer (:func:`campus.services.backups.atomic_backup_file`, what every save and archive
goes through), each file a little different. The test SIGKILLs each child at a
random moment, then reads the target as a load would: it must be a complete
campus-base file (its body matches the size and SHA-256 in its header) holding
the last write the child finished or the one it was doing. The interrupted
writes (``.part``) a dead writer leaves are removed by the next ``campus serve``;
one a live writer holds is never touched.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from campus.rules.base_file_reader import read_base_file
from campus.services.backups import remove_unfinished_writes

WRITER = textwrap.dedent('''
    """Forks writers on request (one line on stdin each); answers on stdout."""
    import fcntl, hashlib, os, signal, sys
    from datetime import UTC, date, datetime
    from pathlib import Path
    from uuid import UUID

    from campus.services.backups import atomic_backup_file
    from campus.rules.export_format import Annex, BaseFile
    from campus.rules.grid import make_grid

    GRID = make_grid(date(2026, 8, 31), date(2027, 7, 4), ["mon", "tue"], 8, 60, 1)

    def snapshot(i):
        data = i.to_bytes(4, "big") * (256 * 1024 + i)  # about 1 MiB, different at each write
        return BaseFile(base_id=UUID(int=1), name="Crash test", origin="created",
                        created_at=datetime(2026, 9, 1, tzinfo=UTC), last_entry_at=None, grid=GRID,
                        records={"classes": {UUID(int=n + 1): {"name": f"C{n}-{i}"} for n in range(i % 40)}},
                        annexes={"blob": Annex("application/octet-stream", hashlib.sha256(data).hexdigest(), data)},
                        position=i)

    def write_forever(target, first, progress):
        done = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        i = first
        while True:
            with atomic_backup_file(snapshot(i), Path(target)):
                pass
            os.write(done, b"%d\\n" % i)  # after the rename: the target holds i from now on
            i += 1

    def hold(path, ready):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a live writer holds on its .part
        os.write(ready, b"x")
        signal.pause()

    for line in sys.stdin:
        command, *args = line.split()
        if command == "wait":
            _, status = os.waitpid(int(args[0]), 0)
            print(f"signal {os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0}", flush=True)
            continue
        ready, holding = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                write_forever(*args[:1], int(args[1]), args[2]) if command == "write" else hold(args[0], holding)
            finally:
                os._exit(0)
        # Only this process writes to stdout, one whole line at a time (a child writing too could
        # land in the middle of a line).
        os.write(1, b"%d\\n" % pid)
        if command == "hold":
            os.read(ready, 1)
            os.write(1, b"held\\n")
        os.close(ready)
        os.close(holding)
''')

ROUNDS = 30


class Writer:
    """The writer process: forks a child per request."""

    def __init__(self, script: Path) -> None:
        self.process = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)

    def ask(self, line: str) -> str:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer, f"the writer process ended (exit {self.process.poll()})"
        return answer

    def fork(self, *args: object) -> int:
        return int(self.ask(" ".join(str(a) for a in args)))

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        assert self.ask(f"wait {pid}") == f"signal {signal.SIGKILL.value}"

    def close(self) -> None:
        assert self.process.stdin
        self.process.stdin.close()
        self.process.wait(10)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    w = Writer(script)
    yield w
    w.close()


def position_of(path: Path) -> int:
    """The position in the file's header, after checking the whole file as a load does."""
    with open(path, "rb") as stream:
        return read_base_file(stream).position


def test_kill_9_during_saves_leaves_the_old_or_the_new_file_never_a_torn_one(
        writer: Writer, make_server, tmp_path: Path) -> None:
    server = make_server(start=False)
    folder = server.workdir / "snapshots" / str(uuid4())  # an account folder this store does not know
    folder.mkdir(parents=True)
    target, progress = folder / f"{uuid4()}.campus", tmp_path / "progress"
    partial = target.with_name(target.name + ".part")
    rng = random.Random(os.environ.get("CRASH_SEED", "campus"))

    last = -1  # the position the target holds (-1: no file yet)
    torn_moments = 0
    for _ in range(ROUNDS):
        partial.unlink(missing_ok=True)  # so that a .part seen below is this round's
        child = writer.fork("write", target, last + 1, progress)
        time.sleep(rng.uniform(0.0, 0.12))  # a random moment: before, inside or between writes
        writer.kill(child)
        finished = [int(n) for n in progress.read_text().split()] if progress.exists() else []
        done = max([last, *finished])  # the newest write known complete
        if not target.exists():
            assert done == -1, "the target vanished after a complete write"
            continue
        held = position_of(target)  # raises if the file is torn
        assert held in (done, done + 1), f"the target holds write {held}; the child had finished {done}"
        last = held
        torn_moments += partial.exists()
    assert last >= 1, "no write ever completed: the kills came too early to test anything"
    # At least one kill landed inside a write (the .part was left behind), with overwhelming probability.
    assert torn_moments >= 1, "no kill landed inside a write: nothing was tested"

    # A live writer's .part is never touched; a dead writer's is.
    held_part = folder / f"{uuid4()}.campus.part"
    holder = writer.fork("hold", held_part)
    assert writer.process.stdout.readline().strip() == "held"
    if not partial.exists():  # the last kill fell between writes: leave one as a crash does
        partial.write_bytes(target.read_bytes()[:1000])
    assert remove_unfinished_writes(server.workdir / "snapshots") == [partial]
    assert held_part.exists() and not partial.exists()
    partial.write_bytes(target.read_bytes()[:1000])
    writer.kill(holder)

    # The next start removes what the dead writers left; the complete file stays.
    server.start()
    assert not partial.exists() and not held_part.exists()
    assert position_of(target) == last
    removed = {r["file"] for r in server.json_lines() if r.get("event") == "snapshot_unfinished_write_removed"}
    rel = server.workdir / "snapshots"
    assert removed == {partial.relative_to(rel).as_posix(), held_part.relative_to(rel).as_posix()}
