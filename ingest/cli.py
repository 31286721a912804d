"""The `ingest` command line: serve, migrate, check-config and the privacy chores."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import asyncpg
import structlog
from aiohttp import web

from ingest import migrations
from ingest.config import Config, load_config
from ingest.errors import ConfigError
from ingest.logs import configure_logging

log = structlog.get_logger("ingest.cli")


@contextlib.contextmanager
def database_url(data_dir: Path) -> Iterator[tuple[str, bool]]:
    """DATABASE_URL if set; otherwise an embedded server for the duration. Yields (dsn, embedded)."""
    dsn = os.environ.get("DATABASE_URL")
    if dsn:
        yield dsn, False
        return
    from ingest.embedded import embedded_postgres  # noqa: PLC0415

    with embedded_postgres(data_dir) as embedded_dsn:
        log.info("embedded_postgres_started", data_dir=str(data_dir))
        # The DSN names a local socket directory and no password: safe to show so
        # that psql or a CRM can connect.
        print(f"embedded PostgreSQL: {embedded_dsn}", file=sys.stderr)  # noqa: T201
        yield embedded_dsn, True


def resolve_pepper(embedded: bool, data_dir: Path) -> str:
    """INGEST_PEPPER, or a kept development pepper on the embedded database."""
    pepper = os.environ.get("INGEST_PEPPER", "").strip()
    if pepper:
        return pepper
    if embedded:
        from ingest.embedded import development_pepper  # noqa: PLC0415

        return development_pepper(data_dir)
    raise ConfigError("INGEST_PEPPER: required (the secret key of the suppression hashes)")


async def run_migrations(dsn: str) -> list[int]:
    """Connect once and apply pending migrations."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrations.migrate(conn)
    finally:
        await conn.close()


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    """Run the HTTP service."""
    from ingest.web.app import create_app  # noqa: PLC0415

    with database_url(args.data_dir) as (dsn, embedded):
        pepper = resolve_pepper(embedded, args.data_dir)
        if not args.no_migrate:
            applied = asyncio.run(run_migrations(dsn))
            log.info("migrations_checked", count=len(applied))
        app = create_app(config, dsn, pepper)
        log.info("serving", host=args.host, port=args.port)
        web.run_app(
            app,
            host=args.host,
            port=args.port,
            print=None,
            access_log=None,
            shutdown_timeout=30,
            reuse_port=args.workers > 1,
        )
    return 0


def cmd_migrate(args: argparse.Namespace, _: Config | None) -> int:
    """Apply pending migrations."""
    with database_url(args.data_dir) as (dsn, _embedded):
        applied = asyncio.run(run_migrations(dsn))
    print(f"applied {len(applied)} migration(s): {applied}" if applied else "database is up to date")  # noqa: T201
    return 0


def cmd_check_config(_: argparse.Namespace, config: Config) -> int:
    """Report that the configuration is valid."""
    print(  # noqa: T201
        f"{config.path}: OK ({len(config.sources)} sources, {len(config.purposes)} purposes, "
        f"{len(config.consents)} consents, {len(config.admin_tokens)} admin tokens)"
    )
    return 0


def cmd_crm_tail(args: argparse.Namespace, _: Config | None) -> int:
    """Print new submissions as JSON lines, resuming from a cursor file."""
    import signal  # noqa: PLC0415

    from ingest.crm_tail import as_json, tail  # noqa: PLC0415

    dsn = args.dsn or os.environ.get("DATABASE_URL")
    if not dsn:
        raise ConfigError("crm-tail: --dsn or DATABASE_URL is required")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await tail(dsn, args.cursor_file, lambda row: print(as_json(row), flush=True), stop)  # noqa: T201

    asyncio.run(run())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="ingest", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML file (default: $INGEST_CONFIG, ./ingest.toml)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".ingest-data"),
        help="embedded PostgreSQL data directory (when DATABASE_URL is unset)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("check-config", help="validate the configuration file")
    crm_tail = sub.add_parser("crm-tail", help="example CRM consumer: print new submissions as JSON lines")
    crm_tail.add_argument(
        "--dsn", help="connection string (a role granted crm_reader); default $DATABASE_URL"
    )
    crm_tail.add_argument("--cursor-file", type=Path, default=Path("crm-tail.cursor"))
    return parser


COMMANDS = {
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "check-config": cmd_check_config,
    "crm-tail": cmd_crm_tail,
}
NEEDS_NO_CONFIG = frozenset({"migrate", "crm-tail"})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ingest` command."""
    args = build_parser().parse_args(argv)
    configure_logging(sys.stderr)
    try:
        config = None if args.command in NEEDS_NO_CONFIG else load_config(args.config)
        return COMMANDS[args.command](args, config)  # type: ignore[arg-type]
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
