"""The privacy officer's commands: subject rights, the retention purge, the ledgers' audit, links.

Each answers from the database that holds the data (DATABASE_URL, or the embedded one
that must already exist) and needs no provider secrets; a database that is down ends
the command with exit 75 (try again later).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime

import asyncpg

from ingest import audit, retention, rights
from ingest.cli.database import require_embedded_database, resolve_pepper, with_database
from ingest.config import Config
from ingest.errors import ConfigError
from ingest.links import make_token
from ingest.pseudonyms import email_key
from ingest.store import ledger_verify
from ingest.store.requests import open_requests


def print_json(document: object) -> None:
    """Print a JSON document for the operator (or a script) to read."""
    print(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def cmd_subjects(args: argparse.Namespace, config: Config) -> int:
    """Export, erase, opt-out, record a request, or list pending requests."""
    actor = "cli"
    if args.action == "pending":

        async def pending(pool: asyncpg.Pool, _: str) -> int:
            async with pool.acquire() as conn:
                rows = await open_requests(conn)
            print_json([dict(r) for r in rows])
            return 1 if any(r["overdue"] for r in rows) else 0

        return with_database(args, pending)
    subject = rights.subject_from(config, args.email, args.phone)

    async def act(pool: asyncpg.Pool, pepper: str) -> int:
        if args.action == "export":
            print_json(await rights.export(pool, subject, pepper, actor))
        elif args.action == "erase":
            print_json({"status": "erased", "removed": await rights.erase(pool, subject, pepper, actor)})
        elif args.action == "opt-out":
            print_json(
                {"status": "opted_out", "recorded": await rights.opt_out(pool, subject, pepper, actor)}
            )
        else:
            request_id = await rights.record_request(pool, subject, args.kind, pepper, actor)
            print_json({"status": "recorded", "request_id": request_id, "kind": args.kind})
        return 0

    return with_database(args, act)


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
        report = await retention.purge(
            pool, datetime.now(UTC), "cli", pepper, dry_run=args.dry_run, progress=progress
        )
        print(file=sys.stderr)  # end the progress line
        print_json({"dry_run": args.dry_run, "removed" if not args.dry_run else "would_remove": report})
        return 0

    return with_database(args, work)


def cmd_audit(args: argparse.Namespace, _: Config | None) -> int:
    """Verify the ledgers' keyed chains (exit 1 if one is broken), or print their heads to anchor."""

    async def work(pool: asyncpg.Pool, pepper: str) -> int:
        reports = await audit.verify_chains(pool, pepper, args.expect_head)
        if args.action == "head":
            # Only a verified head is worth anchoring: one moved back or forged would
            # make the anchor vouch for the tampering.
            if not all(report.ok for report in reports):
                print("\n".join(report.line for report in reports), file=sys.stderr)
                print("audit head: a chain does not verify; not printing heads to anchor", file=sys.stderr)
                return 1
            print_json([head.document() for head in await audit.ledger_heads(pool)])
            return 0
        print("\n".join(report.line for report in reports))
        return 0 if all(report.ok for report in reports) else 1

    return with_database(args, work)


def anchor(text: str) -> ledger_verify.Anchor:
    """An --expect-head value (CHAIN=POSITION:HASH), or argparse's usage error."""
    try:
        return ledger_verify.parse_anchor(text)
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
