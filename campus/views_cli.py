"""``campus views rebuild [NAME]``: project a view again from the whole event log.

The views (``history``: the audit rows, the catalogue and the scopes;
``timeline``: every version of every base) are disposable: the events are the
truth. A rebuild empties a view and projects every event again, printing its
progress on stderr (events done / total: on a terminal a line updated twice a
second, otherwise one line every :data:`QUIET_EVERY` seconds, and a last line
with the rate).

It runs under the view's lease, as a server's follower does, so it is never a
second projector: when a running server holds the lease, it waits ``--wait``
seconds (default 10) and gives up with exit status 1 and a line saying so (stop
every ``campus serve`` on the store first; a server that stops hands its lease
over at once, one that was killed within seconds). While a rebuild runs, reads of
that view in other processes wait for it, then answer 503 ``view_behind``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

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
    from campus.cli import _has_store, _startup_settings
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
