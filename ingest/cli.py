"""The `ingest` command line: serve, migrate, check-config and the privacy chores."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import structlog

from ingest import migrations, repository_subjects, rights, ropa, snippet
from ingest.config import Config, load_config
from ingest.errors import ConfigError, Unavailable, ValidationFailed
from ingest.links import make_token
from ingest.logs import configure_logging
from ingest.pseudonyms import email_key
from ingest.secrets import check_pepper as check_pepper_value
from ingest.store import ledger
from ingest.store.settings import check_pepper

log = structlog.get_logger("ingest.cli")


def require_embedded_database(data_dir: Path) -> None:
    """Without DATABASE_URL, a command that reads stored data needs the embedded database to exist.

    Creating an empty one would answer an access request with "nothing stored".
    """
    from ingest.embedded import has_database  # noqa: PLC0415

    if not has_database(data_dir):
        raise ConfigError(
            f"no database: DATABASE_URL is not set and {data_dir.resolve()} holds no embedded database; "
            "set DATABASE_URL, run from the directory where `ingest serve` keeps .ingest-data, "
            "or name it before the command: `ingest --data-dir DIR <command> ...`"
        )


@contextlib.contextmanager
def _stop_on_hangup() -> Iterator[None]:
    """SIGHUP (the terminal closed) and SIGTERM end the command through its `with` blocks.

    By default both kill the process on the spot, and the embedded server under it was
    left running. A server loop that handles SIGTERM itself (graceful shutdown) gets
    SIGHUP as a SIGTERM.
    """

    def hang_up(_signum: int, _frame: object) -> None:
        signal.raise_signal(signal.SIGTERM)

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM)}
    signal.signal(signal.SIGHUP, hang_up)
    if previous[signal.SIGTERM] == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def database_url(data_dir: Path, *, existing: bool = False) -> Iterator[tuple[str, bool]]:
    """DATABASE_URL if set; otherwise an embedded server for the duration. Yields (dsn, embedded).

    `existing`: the embedded database must already exist (commands that read stored data).
    """
    dsn = os.environ.get("DATABASE_URL")
    if dsn:
        yield dsn, False
        return
    if existing:
        require_embedded_database(data_dir)
    from ingest.embedded import embedded_server  # noqa: PLC0415

    with _stop_on_hangup(), embedded_server(data_dir) as server:
        if server.started:
            log.info("embedded_postgres_started", data_dir=str(data_dir))
        else:
            log.info("embedded_postgres_attached", data_dir=str(data_dir))
        # The DSN names a local socket directory and no password: safe to show so
        # that psql or a CRM can connect.
        print(f"embedded PostgreSQL: {server.dsn}", file=sys.stderr)
        yield server.dsn, True


def resolve_pepper(embedded: bool, data_dir: Path, *, create: bool = True) -> str:
    """INGEST_PEPPER, or a kept development pepper on the embedded database (made if `create`)."""
    pepper = os.environ.get("INGEST_PEPPER", "").strip()
    if pepper:
        check_pepper_value(pepper)
        return pepper
    if embedded:
        from ingest.embedded import development_pepper  # noqa: PLC0415

        return development_pepper(data_dir, create=create)
    raise ConfigError("INGEST_PEPPER: required (the secret key of the suppression hashes)")


async def run_migrations(dsn: str, wait_for_db: float | None = None) -> list[int]:
    """Connect (waiting `--wait-for-db` / INGEST_DB_WAIT_SECONDS for the database), apply migrations."""
    conn = await migrations.connect_when_up(dsn, migrations.db_wait_seconds(wait_for_db))
    try:
        return await migrations.migrate(conn)
    finally:
        await conn.close()


async def wait_for_database(dsn: str, wait_for_db: float | None = None) -> None:
    """Wait (`--wait-for-db` / INGEST_DB_WAIT_SECONDS) until the database takes a connection."""
    conn = await migrations.connect_when_up(dsn, migrations.db_wait_seconds(wait_for_db))
    await conn.close()


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    """Run the HTTP service."""
    from ingest import serving  # noqa: PLC0415 - the web stack is only needed to serve

    # The service logs to stdout, from the arbiter and every worker (human lines: stderr).
    configure_logging(sys.stdout)
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
    """Run `work(pool, pepper)` against DATABASE_URL or the existing embedded database (migrated)."""
    with database_url(args.data_dir, existing=True) as (dsn, embedded):
        pepper = resolve_pepper(embedded, args.data_dir, create=False)
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

    async def work(pool: asyncpg.Pool, pepper: str) -> int:
        report = await rights.purge(
            pool, datetime.now(UTC), "cli", pepper, dry_run=args.dry_run, progress=progress
        )
        print(file=sys.stderr)  # end the progress line
        _print_json({"dry_run": args.dry_run, "removed" if not args.dry_run else "would_remove": report})
        return 0

    return _with_database(args, work)


def cmd_audit(args: argparse.Namespace, _: Config | None) -> int:
    """Verify the ledgers' keyed chains (exit 1 if one is broken), or print their heads to anchor."""

    async def work(pool: asyncpg.Pool, pepper: str) -> int:
        reports = await rights.verify_chains(pool, pepper, args.expect_head)
        if args.action == "head":
            # Only a verified head is worth anchoring: one moved back or forged would
            # make the anchor vouch for the tampering.
            if not all(report.ok for report in reports):
                print("\n".join(report.line for report in reports), file=sys.stderr)
                print("audit head: a chain does not verify; not printing heads to anchor", file=sys.stderr)
                return 1
            _print_json([head.document() for head in await rights.ledger_heads(pool)])
            return 0
        print("\n".join(report.line for report in reports))
        return 0 if all(report.ok for report in reports) else 1

    return _with_database(args, work)


def _anchor(text: str) -> ledger.Anchor:
    try:
        return ledger.parse_anchor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    # The kept development pepper sits beside the embedded database: no server needed.
    embedded = not os.environ.get("DATABASE_URL") and not os.environ.get("INGEST_PEPPER")
    if embedded:
        require_embedded_database(args.data_dir)
    pepper = resolve_pepper(embedded, args.data_dir, create=False)
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("qualitydesk-ingest")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def cmd_try(args: argparse.Namespace, config: Config) -> int:
    """Post a source's provider's documented sample, signed as the provider signs, to an instance."""
    from ingest import trial  # noqa: PLC0415 - only this command

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
        type=_anchor,
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
    "subjects": cmd_subjects,
    "purge": cmd_purge,
    "audit": cmd_audit,
    "unsubscribe-link": cmd_link,
    "confirm-link": cmd_link,
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
            else load_config(
                args.config,
                example_secrets_allowed=embedded,
                require_secrets=args.command not in NEEDS_NO_SECRETS,
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
