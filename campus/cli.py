"""The ``campus`` command."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from campus.settings import Settings


def operator_token(settings: Settings) -> tuple[str, bool]:
    """The operator token: from the settings, else kept in the data dir (created once, mode 0600)."""
    if settings.operator_token:
        return settings.operator_token, False
    path = settings.data_dir / "operator-token"
    if path.exists():
        return path.read_text().strip(), False
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, True


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from campus.api.app import create_app
    from campus.logs import configure_logging

    settings = Settings.from_env(data_dir=Path(args.data_dir) if args.data_dir else None)
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
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning",
                server_header=False, proxy_headers=False, timeout_graceful_shutdown=10)
    return 0


def snapshots_verify(args: argparse.Namespace) -> int:
    """Check every saved or archived base file: OK or BAD (with the reason) per file; 1 if any is bad.

    Each file is read whole and checked as a load would (header, size and SHA-256
    of the body, every line); the store is not needed.
    """
    from campus.export_format import SUFFIX, FormatError, read_base_file

    overrides = {"data_dir": Path(args.data_dir) if args.data_dir else None,
                 "snapshots_dir": Path(args.snapshots_dir) if args.snapshots_dir else None}
    settings = Settings.from_env(**overrides)
    folder = settings.snapshots_dir
    if not folder.is_dir():
        print(f"campus: no snapshots folder at {folder}", file=sys.stderr)
        return 1
    files = sorted(p for p in folder.rglob(f"*{SUFFIX}") if p.is_file())
    bad = 0
    for path in files:
        name = path.relative_to(folder).as_posix()
        try:
            with open(path, "rb") as stream:
                read_base_file(stream)
        except (FormatError, OSError) as exc:
            bad += 1
            print(f"BAD  {name}: {getattr(exc, 'detail', exc)}", flush=True)
        else:
            print(f"OK   {name}", flush=True)
    print(f"{len(files)} file(s) checked, {bad} bad", file=sys.stderr)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="campus", description="campus hosting console server")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="start the HTTP server")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8000)
    p_serve.add_argument("--data-dir", default=None, help="where the SQLite store and operator token live (default ./var)")
    p_serve.set_defaults(func=serve)
    p_snap = sub.add_parser("snapshots", help="saves and archives of bases")
    snap_sub = p_snap.add_subparsers(dest="snapshots_command", required=True)
    p_verify = snap_sub.add_parser("verify", help="check every file under the snapshots folder")
    p_verify.add_argument("--data-dir", default=None, help="the data dir (default ./var or CAMPUS_DATA_DIR)")
    p_verify.add_argument("--snapshots-dir", default=None,
                          help="the snapshots folder (default ./snapshots or CAMPUS_SNAPSHOTS_DIR)")
    p_verify.set_defaults(func=snapshots_verify)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
