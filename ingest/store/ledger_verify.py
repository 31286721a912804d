"""Verifying the ledgers' chains (store/ledger.py appends them), and their heads to anchor outside.

One pass per chain in the caller's snapshot: every position present and contiguous,
every link and every HMAC (legacy rows: the SHA-256 of migration 004, recomputed
here in Python, so that no function the database owner controls can answer for it),
the head the last row, with a valid MAC, and each anchor given still in the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ingest.store.connection import Conn
from ingest.store.ledger import CHAINS, GENESIS, audit_fields, consent_event_fields, head_mac, row_mac


@dataclass(frozen=True, slots=True)
class Head:
    """A chain's recorded head: what an operator anchors outside the database."""

    chain: str
    position: int
    head: str
    keyed_from: int
    head_mac: str | None
    updated_at: datetime

    def anchor(self) -> str:
        """The head as `audit verify --expect-head` takes it."""
        return f"{self.chain}={self.position}:{self.head}"

    def document(self) -> dict[str, object]:
        """The head as `ingest audit head` prints it."""
        return {
            "chain": self.chain,
            "position": self.position,
            "head": self.head,
            "keyed_from": self.keyed_from,
            "updated_at": self.updated_at.astimezone(UTC).isoformat(),
            "anchor": self.anchor(),
        }


async def heads(conn: Conn) -> list[Head]:
    """Every chain's head, in `CHAINS` order."""
    rows = await conn.fetch(
        """
        SELECT chain, position, head, keyed_from, head_mac, updated_at FROM ingest.chain_heads
         ORDER BY array_position(ARRAY['consent_events', 'audit_log'], chain)
        """
    )
    return [Head(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class Anchor:
    """A head recorded outside the database earlier: that row must still be in the chain."""

    chain: str
    position: int
    head: str


_ANCHOR_RE = re.compile(r"^(?P<chain>[a-z_]+)=(?P<position>[0-9]{1,18}):(?P<head>[0-9a-f]{64}|genesis)$")


def parse_anchor(text: str) -> Anchor:
    """`chain=position:hash`, as `ingest audit head` prints it under "anchor"; ValueError otherwise."""
    match = _ANCHOR_RE.match(text.strip())
    if match is None or match["chain"] not in CHAINS:
        raise ValueError(
            f"expected CHAIN=POSITION:HASH with CHAIN one of {', '.join(CHAINS)} and HASH the 64 hex "
            "characters of the head (copy the `anchor` that `ingest audit head` prints)"
        )
    return Anchor(match["chain"], int(match["position"]), match["head"])


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of verifying one chain."""

    chain: str
    rows: int
    legacy_rows: int
    head: Head
    problem: str | None

    @property
    def ok(self) -> bool:
        """Whether the chain verified."""
        return self.problem is None

    @property
    def line(self) -> str:
        """One line for `ingest audit verify`."""
        legacy = f", {self.legacy_rows} of them legacy SHA-256" if self.legacy_rows else ""
        if self.problem is not None:
            return f"{self.chain}: BROKEN {self.problem} ({self.rows} rows{legacy})"
        return f"{self.chain}: OK ({self.rows} rows{legacy}) head {self.head.position}:{self.head.head}"


# Each row in position order. The legacy SHA-256 of 004 is recomputed here in Python,
# not in SQL: the owner could put functions of their own ahead of pg_catalog's on the
# search_path (ALTER DATABASE ... SET search_path) and have SQL "recompute" anything.
_CONSENT_ROWS = """
SELECT e.chain_pos AS pos, e.event_id AS id, e.prev_hash, e.row_hash, e.consent_id, e.purpose, e.granted,
       e.text_sha256, e.source, e.notice_version, e.recorded_at
  FROM ingest.consent_events e
 WHERE e.chain_pos IS NOT NULL
 ORDER BY e.chain_pos, e.event_id
"""


_AUDIT_ROWS = """
SELECT a.chain_pos AS pos, a.audit_id AS id, a.prev_hash, a.row_hash, a.at, a.actor, a.action,
       a.details::text AS details
  FROM ingest.audit_log a
 WHERE a.chain_pos IS NOT NULL
 ORDER BY a.chain_pos, a.audit_id
"""


def legacy_sha256(chain: str, row: Mapping[str, Any]) -> str:
    """Migration 004's digest of a row, as its trigger computed it in SQL.

    concat_ws('|', ...) of the fields (NULLs skipped), the time as to_char(... AT TIME ZONE
    'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'); the audit details as jsonb's own text output.
    """
    if chain == "consent_events":
        parts = [row["prev_hash"], str(row["id"]), row["consent_id"], row["purpose"],
                 "true" if row["granted"] else "false", row["text_sha256"], row["source"],
                 row["notice_version"] or "", _legacy_time(row["recorded_at"])]  # fmt: skip
    else:
        parts = [row["prev_hash"], str(row["id"]), row["actor"], row["action"], row["details"],
                 _legacy_time(row["at"])]  # fmt: skip
    text = "|".join(p for p in parts if p is not None)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _legacy_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


_UNPLACED = {
    "consent_events": "SELECT count(*), min(event_id) FROM ingest.consent_events WHERE chain_pos IS NULL",
    "audit_log": "SELECT count(*), min(audit_id) FROM ingest.audit_log WHERE chain_pos IS NULL",
}


def _fields(chain: str, row: Mapping[str, Any]) -> list[object]:
    if chain == "consent_events":
        return consent_event_fields(
            row["id"],
            row["consent_id"],
            row["purpose"],
            row["granted"],
            row["text_sha256"],
            row["source"],
            row["notice_version"],
            row["recorded_at"],
        )
    return audit_fields(row["id"], row["at"], row["actor"], row["action"], json.loads(row["details"]))


@dataclass(slots=True)
class _Walk:
    """The state of a walk along one chain, row by row in position order."""

    key: bytes
    chain: str
    keyed_from: int
    anchors: dict[int, str]
    position: int = 0
    previous: str = GENESIS
    rows: int = 0
    legacy: int = 0
    problem: str | None = None

    def step(self, row: Mapping[str, Any]) -> None:
        """Check the next row; record the first problem."""
        self.rows += 1
        if self.problem is not None:
            return
        where = f"at position {row['pos']} (id {row['id']})"
        pos = row["pos"]
        if pos <= self.position:
            self.problem = f"{where}: position {pos} appears twice"
        elif pos != self.position + 1:
            self.problem = f"{where}: positions {self.position + 1}..{pos - 1} are missing"
        elif row["row_hash"] is None or row["prev_hash"] is None:
            self.problem = f"{where}: the row has no hash"
        elif row["prev_hash"] != self.previous:
            self.problem = f"{where}: the row does not link to the one before"
        elif pos < self.keyed_from:
            self.legacy += 1
            if not hmac.compare_digest(legacy_sha256(self.chain, row), row["row_hash"]):
                self.problem = f"{where}: the row's (legacy SHA-256) hash does not verify"
        else:
            expected = row_mac(self.key, self.chain, pos, row["prev_hash"], _fields(self.chain, row))
            if not hmac.compare_digest(expected, row["row_hash"]):
                self.problem = f"{where}: the row's HMAC does not verify (edited, or another key)"
        anchored = self.anchors.get(pos)
        if self.problem is None and anchored is not None and anchored != row["row_hash"]:
            self.problem = f"{where}: not the anchored head {pos}:{anchored} (rewritten)"
        self.position, self.previous = pos, row["row_hash"]

    def finish(self, head: Head) -> str | None:
        """The first problem, including those only visible at the end: the head and the anchors."""
        if self.problem is not None:
            return self.problem
        missing = sorted(p for p in self.anchors if p > self.position)
        if missing:
            return f"after position {self.position}: the anchored position {missing[0]} is gone (truncated)"
        if head.position != self.position or head.head != self.previous:
            return (
                f"after position {self.position}: the recorded head ({head.position}) "
                "is not the chain's last row"
            )
        return None if head.position == 0 else self._head_mac_problem(head)

    def _head_mac_problem(self, head: Head) -> str | None:
        # Always required: without it, an owner could recompute every row as a legacy
        # SHA-256 row and move keyed_from past them. The legacy prefix of an upgraded
        # database is sealed by the first row appended after migration 008.
        where = f"at the head ({head.position})"
        if head.head_mac is None:
            return f"{where}: it carries no MAC (no row appended with the key since migration 008?)"
        expected = head_mac(self.key, head.chain, head.position, head.head, head.keyed_from)
        if not hmac.compare_digest(expected, head.head_mac):
            return f"{where}: its MAC does not verify (moved, or another key)"
        return None


async def verify(conn: Conn, key: bytes, chain: str, anchors: Sequence[Anchor] = ()) -> ChainReport:
    """Walk one chain from genesis in one snapshot; the caller runs this in a repeatable-read transaction."""
    if chain not in CHAINS:
        raise ValueError("unknown chain")
    [head] = [h for h in await heads(conn) if h.chain == chain]
    expected = {a.position: a.head for a in anchors if a.chain == chain}
    walk = _Walk(key, chain, head.keyed_from, expected)
    unplaced = await conn.fetchrow(_UNPLACED[chain])
    query = _CONSENT_ROWS if chain == "consent_events" else _AUDIT_ROWS
    async for row in conn.cursor(query, prefetch=1000):
        walk.step(row)
    problem = walk.finish(head)
    if unplaced is not None and unplaced[0]:
        problem = f"at id {unplaced[1]}: {unplaced[0]} row(s) without a chain position"
        walk.rows += unplaced[0]
    return ChainReport(chain, walk.rows, walk.legacy, head, problem)
