"""The ledgers' integrity: verify the consent and audit chains, and read their heads to anchor."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from ingest.store import ledger, ledger_verify


async def verify_chains(
    pool: asyncpg.Pool, pepper: str, anchors: Sequence[ledger_verify.Anchor] = ()
) -> list[ledger_verify.ChainReport]:
    """Verify the consent and audit chains in one snapshot (store/ledger.py): one report per chain.

    `anchors`: heads recorded outside the database earlier (`ingest audit head`); each must
    still be in its chain, which shows a tail cut off even when the head was moved back.
    """
    key = ledger.chain_key(pepper)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        return [await ledger_verify.verify(conn, key, chain, anchors) for chain in ledger.CHAINS]


async def ledger_heads(pool: asyncpg.Pool) -> list[ledger_verify.Head]:
    """The chains' heads, for an operator to anchor outside the database."""
    async with pool.acquire() as conn:
        return await ledger_verify.heads(conn)
