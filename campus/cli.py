"""The ``campus`` command."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, TextIO

from campus.infra.settings import Settings, operator_token


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from campus.api.app import create_app
    from campus.infra.logs import configure_logging

    settings = _startup_settings(args)  # one clear line and exit 1 for bad settings or an unusable data dir
    configure_logging(settings.log_format, settings.log_level)
    token, created = operator_token(settings)
    if created:
        # Printed once, to the terminal only, never through the log.
        print(
            f"campus: generated the operator token (kept in {settings.data_dir / 'operator-token'}, mode 0600):\n"
            f"  {token}\n"
            "campus: it is not shown again; set CAMPUS_OPERATOR_TOKEN to use your own.",
            file=sys.stderr, flush=True,
        )
    settings = Settings(**{**settings.__dict__, "operator_token": token})
    options: dict = {"host": args.host, "port": args.port, "access_log": False, "log_level": "warning",
                     "server_header": False, "proxy_headers": False, "timeout_graceful_shutdown": 10}
    if args.workers > 1:
        # Each worker is a process of its own, built by create_app as a factory from the environment:
        # hand it what the command line decided (the rest of the settings come from the same variables).
        os.environ.update({"CAMPUS_DATA_DIR": str(settings.data_dir),
                           "CAMPUS_SNAPSHOTS_DIR": str(settings.snapshots_dir),
                           "CAMPUS_OPERATOR_TOKEN": token})
        uvicorn.run("campus.api.app:create_app", factory=True, workers=args.workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
    return 0


def snapshots_verify(args: argparse.Namespace) -> int:
    """Check every saved or archived base file; 1 if anything is bad, missing or orphaned.

    Each file is read whole and checked as a load would (header, size and SHA-256
    of the body, every line): ``OK`` or ``BAD`` (with the reason). When the store
    exists, each file is also checked against the SHA-256 its backup recorded,
    and the folder against the store: ``MISSING`` (a live backup without its
    file), ``ORPHAN`` (a file no live backup records) and ``UNFINISHED`` (a
    ``.part`` left by an interrupted write); a server removes the last two at
    its next start. Nothing is changed.
    """
    from campus.rules.base_file_reader import read_base_file
    from campus.rules.export_format import SUFFIX, FormatError

    settings = _startup_settings(args, data_dir="read")
    folder = settings.snapshots_dir
    inventory = _inventory(settings)
    if inventory is None and not folder.is_dir():
        print(f"campus: no snapshots folder at {folder}", file=sys.stderr)
        return 1
    files = inventory.files if inventory else sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob(f"*{SUFFIX}") if p.is_file())
    bad = 0
    for name in files:
        problem = None
        try:
            with open(folder / name, "rb") as stream:
                read_base_file(stream)
        except (FormatError, OSError) as exc:
            problem = getattr(exc, "detail", str(exc))
        backup = inventory.recorded.get(name) if inventory else None
        if problem is None and backup is not None:
            from campus.infra.backup_files import file_digest

            if file_digest(folder / name) != (backup.sha256, backup.size):
                problem = "its size or SHA-256 is not what was recorded when it was taken"
        if problem:
            bad += 1
            print(f"BAD  {name}: {problem}", flush=True)
        else:
            print(f"OK   {name}", flush=True)
    missing = orphans = 0
    if inventory is not None:
        for backup in inventory.missing:
            print(f"MISSING {backup.file}: the file of {backup.kind} {backup.name!r} ({backup.id}) is missing",
                  flush=True)
        for name in inventory.orphans:
            print(f"ORPHAN {name}: no backup records this file (removed at the next start if its account is "
                  "in this store)", flush=True)
        for name in inventory.unfinished:
            print(f"UNFINISHED {name}: an interrupted write (removed at the next start)", flush=True)
        missing, orphans = len(inventory.missing), len(inventory.orphans) + len(inventory.unfinished)
    else:
        print(f"campus: no store at {settings.data_dir}: files checked alone (no orphan or missing check)",
              file=sys.stderr)
    print(f"{len(files)} file(s) checked, {bad} bad, {missing} missing, {orphans} orphan(s)", file=sys.stderr)
    return 1 if bad or missing or orphans else 0


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"data_dir": Path(args.data_dir) if args.data_dir else None,
                 "snapshots_dir": Path(getattr(args, "snapshots_dir", None)) if getattr(args, "snapshots_dir", None)
                 else None}
    return Settings.from_env(**overrides)


def _startup_settings(args: argparse.Namespace, data_dir: Literal["write", "read"] = "write") -> Settings:
    """The settings of a command, or SystemExit with one line saying what is wrong (exit status 1)."""
    try:
        settings = _settings(args)
    except ValueError as exc:
        raise SystemExit(f"campus: {exc}") from None
    require_data_dir(settings.data_dir, data_dir)
    return settings


def data_dir_problem(path: Path, mode: Literal["write", "read"] = "write") -> str | None:
    """Why `path` cannot serve as the data dir, in a few words; None if it can.

    "write" (serve, demo): the directory exists or can be created, and a file can be created in it.
    "read" (snapshots verify): if it exists it is a directory; if it holds a SQLite store, that store
    can be opened (SQLite writes its journal beside it).
    """
    if path.exists() and not path.is_dir():
        return "it is not a directory"
    if mode == "read":
        if not path.exists():
            return None
        if not os.access(path, os.R_OK | os.X_OK):
            return "it cannot be read (permission denied)"
        if not (path / "campus.sqlite3").is_file():
            return None
    else:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"it cannot be created ({exc.strerror or exc})"
    try:
        fd, probe = tempfile.mkstemp(prefix=".campus-probe-", dir=path)
    except OSError as exc:
        return f"nothing can be written in it ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None


def require_data_dir(path: Path, mode: Literal["write", "read"] = "write") -> None:
    problem = data_dir_problem(path, mode)
    if problem:
        raise SystemExit(f"campus: the data dir {path} is not usable: {problem}")


def _has_store(settings: Settings) -> bool:
    return settings.uses_postgres or (settings.data_dir / "campus.sqlite3").is_file()


def _inventory(settings: Settings):  # noqa: ANN202 - campus.services.backups.Inventory | None
    """The snapshots folder against the store, or None when there is no store to compare with."""
    if not _has_store(settings):
        return None
    from campus.application import CampusApplication

    app = CampusApplication(settings)
    try:
        return app.backups.snapshot_inventory()
    finally:
        app.close()


def demo(args: argparse.Namespace) -> int:
    """Create a demo school with 30 days of activity in an empty data dir (exit 2 if it holds a store)."""
    from campus.demo import DemoRefused, build_demo, instructions
    from campus.infra.logs import configure_logging

    data_dir = Path(args.data_dir)
    require_data_dir(data_dir)  # one clear line and exit 1 if it cannot be created or written
    snapshots_dir = Path(args.snapshots_dir) if args.snapshots_dir else None
    try:
        settings = Settings.from_env(data_dir=data_dir)
    except ValueError as exc:
        raise SystemExit(f"campus demo: {exc}") from None
    if snapshots_dir is None and "CAMPUS_SNAPSHOTS_DIR" not in os.environ:
        snapshots_dir = data_dir / "snapshots"  # next to the store, not in the current directory
    settings = Settings(**{**settings.__dict__, "snapshots_dir": snapshots_dir or settings.snapshots_dir})
    configure_logging(settings.log_format, "warning")
    if not settings.uses_postgres and (data_dir / "campus.sqlite3").exists():
        print(f"campus demo: {data_dir} already holds a campus store (campus.sqlite3); "
              "give an empty or new directory", file=sys.stderr)
        return 2
    print(f"campus demo: creating a demo school with {args.days} days of activity…", file=sys.stderr, flush=True)
    try:
        school = build_demo(settings, days=args.days, seed=args.seed)
    except DemoRefused as exc:
        print(f"campus demo: {exc}", file=sys.stderr)
        return 2
    print(instructions(school, str(data_dir), str(settings.snapshots_dir)), flush=True)
    return 0


# -- campus views rebuild [NAME] ----------------------------------------------------------------------
# ``campus views rebuild [NAME]``: project a view again from the whole event log.
#
# The views (``history``: the audit rows, the catalogue and the scopes;
# ``timeline``: every version of every base) are disposable: the events are the
# truth. A rebuild empties a view and projects every event again, printing its
# progress on stderr (events done / total: on a terminal a line updated twice a
# second, otherwise one line every :data:`QUIET_EVERY` seconds, and a last line
# with the rate).
#
# It runs under the view's lease, as a server's follower does, so it is never a
# second projector: when a running server holds the lease, it waits ``--wait``
# seconds (default 10) and gives up with exit status 1 and a line saying so (stop
# every ``campus serve`` on the store first; a server that stops hands its lease
# over at once, one that was killed within seconds). While a rebuild runs, reads of
# that view in other processes wait for it, then answer 503 ``view_behind``.

VIEWS = ("history", "timeline")
QUIET_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal
TTY_EVERY = 0.5
LEASE_POLL = 0.25


def add_views_command(sub: Any) -> None:
    """Register ``campus views …`` on the main parser's subcommands."""
    p_views = sub.add_parser("views", help="the read models projected from the events (history, timeline)")
    views_sub = p_views.add_subparsers(dest="views_command", required=True)
    p_rebuild = views_sub.add_parser("rebuild", help="empty a view and project the whole event log again")
    p_rebuild.add_argument("name", nargs="?", default="all", choices=(*VIEWS, "all"),
                           help="the view to rebuild (default: all)")
    p_rebuild.add_argument("--data-dir", default=None, help="the data dir (default ./var or CAMPUS_DATA_DIR)")
    p_rebuild.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                           help="how long to wait for a running server to hand over the view (default 10)")
    p_rebuild.set_defaults(func=rebuild_command)


class Progress:
    """Events done / total of one view on `stream`, not more often than a terminal or a log wants."""

    def __init__(self, name: str, stream: TextIO) -> None:
        self.name, self.stream = name, stream
        self.tty = stream.isatty()
        self.every = TTY_EVERY if self.tty else QUIET_EVERY
        self.started = time.monotonic()
        self.shown = self.started
        self.done = self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        now = time.monotonic()
        if done and now - self.shown < self.every:
            return
        self.shown = now
        percent = 100 * done // total if total else 100
        line = f"campus views rebuild: {self.name}: {done:,}/{total:,} events ({percent}%)"
        self.stream.write(f"\r{line}" if self.tty else f"{line}\n")
        self.stream.flush()

    def finish(self) -> None:
        seconds = time.monotonic() - self.started
        rate = f", {self.done / seconds:,.0f} events/s" if seconds > 0 and self.done else ""
        end = "\n" if self.tty else ""
        self.stream.write(f"{end}campus views rebuild: {self.name} rebuilt from {self.done:,} events"
                          f" in {seconds:.1f} s{rate}\n")
        self.stream.flush()


def rebuild_command(args: argparse.Namespace) -> int:
    from campus.infra.logs import configure_logging

    settings = _startup_settings(args, data_dir="read")
    configure_logging(settings.log_format, "warning")
    if not _has_store(settings):
        print(f"campus views rebuild: no store at {settings.data_dir}", file=sys.stderr)
        return 1
    from campus.application import CampusApplication

    names = VIEWS if args.name == "all" else (args.name,)
    app = CampusApplication(settings)
    views = [getattr(app, name) for name in names]
    taken: list[Any] = []
    try:
        for view in views:
            if not _take_lease(view.lease, args.wait):
                print(f"campus views rebuild: a running server keeps the {view.name} view up to date (it has held"
                      f" the view's lease for {args.wait:g} s); stop every `campus serve` on this store, then"
                      " run the rebuild again. Nothing was changed.", file=sys.stderr)
                return 1
            taken.append(view.lease)
        for view in views:
            progress = Progress(view.name, sys.stderr)
            view.rebuild(progress)
            progress.finish()
        return 0
    finally:
        for lease in taken:
            lease.release()
        app.close()


def _take_lease(lease: Any, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while not lease.try_acquire():
        if time.monotonic() >= deadline:
            return False
        time.sleep(LEASE_POLL)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="campus", description="campus hosting console server")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="start the HTTP server")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8000)
    p_serve.add_argument("--data-dir", default=None, help="where the SQLite store and operator token live (default ./var)")
    p_serve.add_argument("--snapshots-dir", default=None,
                         help="where saves and archives are written (default ./snapshots or CAMPUS_SNAPSHOTS_DIR)")
    p_serve.add_argument("--workers", type=int, default=1, metavar="N",
                         help="serve with N worker processes on one port (default 1); they share the store")
    p_serve.set_defaults(func=serve)
    p_demo = sub.add_parser("demo", help="create a demo school with 30 days of activity, to try restores at once")
    p_demo.add_argument("--data-dir", required=True, help="an empty or new directory for the demo's store")
    p_demo.add_argument("--snapshots-dir", default=None,
                        help="where its saves and archives go (default CAMPUS_SNAPSHOTS_DIR, else DATA_DIR/snapshots)")
    p_demo.add_argument("--days", type=int, default=30, choices=range(1, 31), metavar="1-30",
                        help="days of activity, ending now (default 30)")
    p_demo.add_argument("--seed", type=int, default=None, help="seed of the simulated activity (default: random)")
    p_demo.set_defaults(func=demo)
    p_snap = sub.add_parser("snapshots", help="saves and archives of bases")
    snap_sub = p_snap.add_subparsers(dest="snapshots_command", required=True)
    p_verify = snap_sub.add_parser("verify", help="check every file under the snapshots folder")
    p_verify.add_argument("--data-dir", default=None, help="the data dir (default ./var or CAMPUS_DATA_DIR)")
    p_verify.add_argument("--snapshots-dir", default=None,
                          help="the snapshots folder (default ./snapshots or CAMPUS_SNAPSHOTS_DIR)")
    p_verify.set_defaults(func=snapshots_verify)
    add_views_command(sub)  # campus views rebuild [NAME]
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
