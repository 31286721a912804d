"""The `ingest` command line: serve, migrate, check-config and the privacy chores."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import structlog

from ingest import migrations, repository_subjects, rights, ropa
from ingest.config import Config, load_config
from ingest.errors import ConfigError, Unavailable, ValidationFailed
from ingest.links import make_token
from ingest.logs import configure_logging
from ingest.pseudonyms import email_key
from ingest.secrets import check_pepper as check_pepper_value
from ingest.store.settings import check_pepper

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
        print(f"embedded PostgreSQL: {embedded_dsn}", file=sys.stderr)
        yield embedded_dsn, True


def resolve_pepper(embedded: bool, data_dir: Path) -> str:
    """INGEST_PEPPER, or a kept development pepper on the embedded database."""
    pepper = os.environ.get("INGEST_PEPPER", "").strip()
    if pepper:
        check_pepper_value(pepper)
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
    from ingest import serving  # noqa: PLC0415 - the web stack is only needed to serve

    with database_url(args.data_dir) as (dsn, embedded):
        pepper = resolve_pepper(embedded, args.data_dir)
        if not args.no_migrate:
            applied = asyncio.run(run_migrations(dsn))
            log.info("migrations_checked", count=len(applied))
        log.info("serving", host=args.host, port=args.port, workers=args.workers)
        return serving.serve(config, dsn, pepper, args.host, args.port, args.workers)


def cmd_migrate(args: argparse.Namespace, _: Config | None) -> int:
    """Apply pending migrations."""
    with database_url(args.data_dir) as (dsn, _embedded):
        applied = asyncio.run(run_migrations(dsn))
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
        await tail(dsn, args.cursor_file, lambda row: print(as_json(row), flush=True), stop)

    asyncio.run(run())
    return 0


@contextlib.asynccontextmanager
async def _pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


def _with_database(args: argparse.Namespace, work: Callable[[asyncpg.Pool, str], Awaitable[int]]) -> int:
    """Run `work(pool, pepper)` against DATABASE_URL or the embedded server (migrated)."""
    with database_url(args.data_dir) as (dsn, embedded):
        pepper = resolve_pepper(embedded, args.data_dir)
        if embedded:
            asyncio.run(run_migrations(dsn))

        async def run() -> int:
            async with _pool(dsn) as pool:
                async with pool.acquire() as conn:
                    await check_pepper(conn, pepper)
                return await work(pool, pepper)

        return asyncio.run(run())


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def cmd_subjects(args: argparse.Namespace, config: Config) -> int:
    """Export, erase, opt-out, record a request, or list pending requests."""
    actor = "cli"
    if args.action == "pending":

        async def pending(pool: asyncpg.Pool, _: str) -> int:
            async with pool.acquire() as conn:
                rows = await repository_subjects.open_requests(conn)
            _print_json([dict(r) for r in rows])
            return 1 if any(r["overdue"] for r in rows) else 0

        return _with_database(args, pending)
    subject = rights.subject_from(config, args.email, args.phone)

    async def act(pool: asyncpg.Pool, pepper: str) -> int:
        if args.action == "export":
            _print_json(await rights.export(pool, subject, pepper, actor))
        elif args.action == "erase":
            _print_json({"status": "erased", "removed": await rights.erase(pool, subject, pepper, actor)})
        elif args.action == "opt-out":
            _print_json(
                {"status": "opted_out", "recorded": await rights.opt_out(pool, subject, pepper, actor)}
            )
        else:
            request_id = await rights.record_request(pool, subject, args.kind, pepper, actor)
            _print_json({"status": "recorded", "request_id": request_id, "kind": args.kind})
        return 0

    return _with_database(args, act)


def cmd_purge(args: argparse.Namespace, _: Config) -> int:
    """Erase contacts past retention and expired chat pieces."""

    def progress(done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        print(
            f"\rpurge: [{'#' * filled}{'.' * (width - filled)}] {done}/{total} contacts",
            end="",
            file=sys.stderr,
            flush=True,
        )

    async def work(pool: asyncpg.Pool, _: str) -> int:
        report = await rights.purge(pool, datetime.now(UTC), "cli", dry_run=args.dry_run, progress=progress)
        print(file=sys.stderr)  # end the progress line
        _print_json({"dry_run": args.dry_run, "removed" if not args.dry_run else "would_remove": report})
        return 0

    return _with_database(args, work)


def cmd_audit(args: argparse.Namespace, _: Config | None) -> int:
    """Verify the consent and audit hash chains."""

    async def work(pool: asyncpg.Pool, _: str) -> int:
        lines = await rights.verify_chains(pool)
        print("\n".join(lines))
        return 0 if all(": OK" in line for line in lines) else 1

    return _with_database(args, work)


def cmd_link(args: argparse.Namespace, config: Config) -> int:
    """Print a signed, expiring unsubscribe or confirmation URL for an e-mail address."""
    subject = rights.subject_from(config, args.email)
    if args.command == "confirm-link" and args.consent not in config.consents:
        raise ConfigError(f"consents.{args.consent}: no such consent in the configuration")
    action = "unsubscribe" if args.command == "unsubscribe-link" else "confirm"
    # The configured lifetime is also the longest the service accepts: a longer link
    # would only be refused when the person opens it.
    key = f"{action}_link_days"
    cap = config.limits.confirm_link_days if action == "confirm" else config.limits.unsubscribe_link_days
    days = cap if args.days is None else args.days
    if not 0 < days <= cap:
        print(f"--days: from 1 to {cap} (limits.{key} in the configuration)", file=sys.stderr)
        return 2
    base = (args.base_url or config.public_url or "http://127.0.0.1:8080").rstrip("/")
    with (
        database_url(args.data_dir)
        if not os.environ.get("INGEST_PEPPER")
        else contextlib.nullcontext(("", False)) as (_, embedded)
    ):
        pepper = resolve_pepper(embedded, args.data_dir)
    assert subject.email is not None  # noqa: S101 - subject_from with an e-mail only
    email_hash = email_key(pepper, subject.email)
    token = make_token(
        pepper,
        action,
        email_hash,
        datetime.now(UTC),
        days,
        consent_id=args.consent if action == "confirm" else None,
    )
    print(f"{base}/v1/{action}?token={token}")
    return 0


def cmd_openapi(args: argparse.Namespace, config: Config) -> int:
    """Print the OpenAPI document of this configuration (JSON, or Markdown for docs/)."""
    from ingest.web.openapi import build_spec, render_markdown  # noqa: PLC0415 - only this command

    document = build_spec(config)
    print(render_markdown(document) if args.markdown else json.dumps(document, indent=2) + "\n", end="")
    return 0


def cmd_ropa(_: argparse.Namespace, config: Config) -> int:
    """Print the record of processing activities."""
    print(ropa.render(config), end="")
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
    serve.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes sharing the port (default: number of CPUs)",
    )
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")
    sub.add_parser("migrate", help="apply database migrations")
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
    audit = sub.add_parser("audit", help="audit log tools")
    audit.add_argument("action", choices=["verify"])
    for name in ("unsubscribe-link", "confirm-link"):
        link = sub.add_parser(name, help=f"print a signed {name.split('-')[0]} URL")
        link.add_argument("--email", required=True)
        link.add_argument(
            "--days", type=int, help="how long the link works (default and maximum: [limits] *_link_days)"
        )
        link.add_argument("--base-url")
        link.add_argument("--consent", default="marketing-email-v1", help="with confirm-link: the consent id")
    sub.add_parser("ropa", help="print the record of processing activities (Art. 30)")
    openapi = sub.add_parser("openapi", help="print the OpenAPI document (as served at /openapi.json)")
    openapi.add_argument("--markdown", action="store_true", help="as Markdown, the form of docs/api.md")
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
    "subjects": cmd_subjects,
    "purge": cmd_purge,
    "audit": cmd_audit,
    "unsubscribe-link": cmd_link,
    "confirm-link": cmd_link,
    "ropa": cmd_ropa,
    "openapi": cmd_openapi,
}
NEEDS_NO_CONFIG = frozenset({"migrate", "crm-tail", "audit"})
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
            else load_config(args.config, example_secrets_allowed=embedded)
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
