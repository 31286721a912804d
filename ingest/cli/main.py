"""The `ingest` command line: serve, migrate, check-config and the privacy chores."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import structlog

from ingest import ropa, serving, snippet, trial
from ingest.adapters import check_sources
from ingest.cli import privacy
from ingest.cli.database import database_url, resolve_pepper, run_migrations, wait_for_database
from ingest.config import Config, load_config
from ingest.crm_tail import as_json, tail
from ingest.errors import ConfigError, Unavailable, ValidationFailed
from ingest.logs import configure_logging
from ingest.web.openapi import build_spec, render_markdown

log = structlog.get_logger("ingest.cli")


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    """Run the HTTP service."""
    # The service logs to stdout, from the arbiter and every worker (human lines: stderr).
    configure_logging(sys.stdout, final=True)
    try:
        # Bound first: a port in use is one line at once, before any database is started.
        listener = serving.listen(args.host, args.port)
    except serving.ListenError as exc:
        print(f"ingest serve: {exc}", file=sys.stderr)
        return 1
    with contextlib.closing(listener), database_url(args.data_dir) as (dsn, embedded):
        pepper = resolve_pepper(embedded, args.data_dir)
        if not args.no_migrate:
            applied = asyncio.run(run_migrations(dsn, args.wait_for_db))
            log.info("migrations_checked", count=len(applied))
        else:  # migrated by the owner elsewhere: still wait for a database that is not up yet
            asyncio.run(wait_for_database(dsn, args.wait_for_db))
        log.info("serving", host=args.host, port=args.port, workers=args.workers)
        return serving.serve(config, dsn, pepper, listener, args.workers)


def cmd_migrate(args: argparse.Namespace, _: Config | None) -> int:
    """Apply pending migrations."""
    with database_url(args.data_dir) as (dsn, _embedded):
        applied = asyncio.run(run_migrations(dsn, args.wait_for_db))
    print(f"applied {len(applied)} migration(s): {applied}" if applied else "database is up to date")
    return 0


def cmd_check_config(_: argparse.Namespace, config: Config) -> int:
    """Report that the configuration is valid."""
    print(
        f"{config.path}: OK ({len(config.sources)} sources, {len(config.purposes)} purposes, "
        f"{len(config.consents)} consents, {len(config.admin_tokens)} admin tokens)"
    )
    return 0


def cmd_crm_tail(args: argparse.Namespace, _: Config | None) -> int:
    """Print new submissions as JSON lines, resuming from a cursor file."""
    dsn = args.dsn or os.environ.get("DATABASE_URL")
    if not dsn:
        raise ConfigError("crm-tail: --dsn or DATABASE_URL is required")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await tail(dsn, args.cursor_file, lambda row: print(as_json(row), flush=True), stop)

    asyncio.run(run())
    return 0


def cmd_openapi(args: argparse.Namespace, config: Config) -> int:
    """Print the OpenAPI document of this configuration (JSON, or Markdown for docs/)."""
    document = build_spec(config)
    print(render_markdown(document) if args.markdown else json.dumps(document, indent=2) + "\n", end="")
    return 0


def cmd_ropa(_: argparse.Namespace, config: Config) -> int:
    """Print the record of processing activities."""
    print(ropa.render(config), end="")
    return 0


def _version() -> str:

    try:
        return version("qualitydesk-ingest")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def cmd_try(args: argparse.Namespace, config: Config) -> int:
    """Post a source's provider's documented sample, signed as the provider signs, to an instance."""
    return trial.run(config, args.source, args.url, args.sample)


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="ingest", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
    serve.add_argument(
        "--workers",
        type=_positive,
        default=os.cpu_count() or 1,
        help="worker processes, supervised by one parent on one socket (default: number of CPUs)",
    )
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")
    migrate = sub.add_parser("migrate", help="apply database migrations")
    for waits in (serve, migrate):
        waits.add_argument(
            "--wait-for-db",
            type=float,
            metavar="SECONDS",
            help="how long to wait for the database at start (default: $INGEST_DB_WAIT_SECONDS, else 60)",
        )
    sub.add_parser("check-config", help="validate the configuration file")
    subjects = sub.add_parser("subjects", help="data subject rights")
    subjects.add_argument("action", choices=["export", "erase", "opt-out", "request", "pending"])
    subjects.add_argument("--email")
    subjects.add_argument("--phone")
    subjects.add_argument(
        "--kind",
        choices=["access", "erasure", "objection"],
        default="access",
        help="with 'request': the kind of request received",
    )
    purge = sub.add_parser("purge", help="erase what is past its retention")
    purge.add_argument("--dry-run", action="store_true")
    audit = sub.add_parser("audit", help="the ledgers' chains: verify them, or print their heads")
    audit.add_argument("action", choices=["verify", "head"])
    audit.add_argument(
        "--expect-head",
        type=privacy.anchor,
        action="append",
        default=[],
        metavar="CHAIN=POSITION:HASH",
        help="with verify: a head printed by `ingest audit head` earlier, which must still be in its chain",
    )
    for name in ("unsubscribe-link", "confirm-link"):
        link = sub.add_parser(name, help=f"print a signed {name.split('-')[0]} URL")
        link.add_argument("--email", required=True)
        link.add_argument(
            "--days", type=int, help="how long the link works (default and maximum: [limits] *_link_days)"
        )
        link.add_argument("--base-url")
        link.add_argument("--consent", default="marketing-email-v1", help="with confirm-link: the consent id")
    sub.add_parser("ropa", help="print the record of processing activities (Art. 30)")
    snippet.add_parser(sub)
    openapi = sub.add_parser("openapi", help="print the OpenAPI document (as served at /openapi.json)")
    openapi.add_argument("--markdown", action="store_true", help="as Markdown, the form of docs/api.md")
    crm_tail = sub.add_parser("crm-tail", help="example CRM consumer: print new submissions as JSON lines")
    crm_tail.add_argument(
        "--dsn", help="connection string (a role granted crm_reader); default $DATABASE_URL"
    )
    crm_tail.add_argument("--cursor-file", type=Path, default=Path("crm-tail.cursor"))
    trial = sub.add_parser(
        "try", help="post a source's provider's documented sample, signed as the provider signs"
    )
    trial.add_argument("source", help="a source of the configuration")
    trial.add_argument("--url", default="http://127.0.0.1:8080", help="the instance (default: %(default)s)")
    trial.add_argument("--sample", help="which of the provider's samples (default: the first; --sample list)")
    return parser


COMMANDS = {
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "check-config": cmd_check_config,
    "crm-tail": cmd_crm_tail,
    "subjects": privacy.cmd_subjects,
    "purge": privacy.cmd_purge,
    "audit": privacy.cmd_audit,
    "unsubscribe-link": privacy.cmd_link,
    "confirm-link": privacy.cmd_link,
    "ropa": cmd_ropa,
    "form-snippet": snippet.command,
    "openapi": cmd_openapi,
    "try": cmd_try,
}
NEEDS_NO_CONFIG = frozenset({"migrate", "crm-tail", "audit"})
# Commands that verify no delivery and no bearer token: the database and the pepper are
# all they need, so sources' secrets and admin tokens are not required (`try` reads its
# one source's secret itself).
NEEDS_NO_SECRETS = frozenset(
    {"subjects", "purge", "ropa", "unsubscribe-link", "confirm-link", "openapi", "try", "form-snippet"}
)
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: the same command may succeed later


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ingest` command."""
    args = build_parser().parse_args(argv)
    configure_logging(sys.stderr)
    try:
        # The README's example secret is for the embedded development database only.
        embedded = not os.environ.get("DATABASE_URL")
        config = (
            None
            if args.command in NEEDS_NO_CONFIG
            else check_sources(
                load_config(
                    args.config,
                    example_secrets_allowed=embedded,
                    require_secrets=args.command not in NEEDS_NO_SECRETS,
                )
            )
        )
        return COMMANDS[args.command](args, config)  # type: ignore[arg-type]
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except ValidationFailed as exc:
        print(f"invalid input: {json.dumps(exc.fields)}", file=sys.stderr)
        return 2
    except Unavailable:
        print("the database is unavailable: try again later", file=sys.stderr)
        return EXIT_TEMPFAIL
