"""The serving pool releases a connection without a reset query, and no session state is left to reset."""

from __future__ import annotations

import ast
import asyncio
import json
import re
from pathlib import Path

from ingest.web.keys import POOL
from tests.conftest import APP_ROLE
from tests.support import sign_standard

URL = "/v1/forms/partner-forms"
INGEST = Path(__file__).resolve().parents[1] / "ingest"
# The functions that take what a reset would undo (an advisory lock, LISTEN), each on a
# connection of its own; the rest of their modules (migrations.is_current runs on the
# serving pool) is scanned like any other code.
OWN_CONNECTIONS = {("store/migrations.py", "migrate"), ("crm_tail.py", "tail")}
# What would outlive a transaction on a pooled connection (asyncpg's default reset undoes
# it), as it appears in the SQL strings of the code.
SESSION_STATE = re.compile(
    r"set_config\((?![^)]*,\s*true\s*\))"  # a setting not for the transaction only
    r"|(?:\A|;)\s*(?:--[^\n]*\n\s*)*SET\s+(?!LOCAL\b)"  # SET, SET SESSION, SET ROLE
    r"|\bLISTEN\b|pg_(?:try_)?advisory_lock|\bWITH\s+HOLD\b|\bDISCARD\b|\bPREPARE\s+\w"
    r"|\bCREATE\s+(?:GLOBAL\s+|LOCAL\s+)?TEMP|\bINTO\s+TEMP",
)  # SQL keywords in capitals, as the code writes them; the runtime test below sees the rest


def session_state_in(source: str) -> list[tuple[str, str]]:
    """Each SQL string (docstrings left out) or listener call of `source` that leaves session state.

    As (function, what): the innermost function it is in, "" at module level.
    """
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if SESSION_STATE.search(node.value):
                found.append((function, node.value))
        elif isinstance(node, ast.Attribute) and node.attr == "add_listener":
            found.append((function, "add_listener"))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "")
    return found


async def _submit(client) -> None:
    body = json.dumps({"name": "Maija", "email": "maija@example.fi", "message": "Call me."}).encode()
    response = await client.post(URL, data=body, headers=sign_standard(body))
    assert response.status == 201


async def _idle_app_backends(db, tries: int = 100) -> list[str]:
    """The last query of each of the app role's backends, once none is running one."""
    rows = []
    for _ in range(tries):
        rows = await db.fetch(
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() AND usename = $1",
            APP_ROLE,
        )
        if rows and all(r["state"] == "idle" for r in rows):
            return [r["query"] for r in rows]
        await asyncio.sleep(0.02)
    raise AssertionError(f"the app's connections did not go idle: {rows}")


async def test_a_released_connection_was_not_sent_a_reset_query(client, db):
    await _submit(client)
    last = await _idle_app_backends(db)
    # Before: every release sent `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`.
    assert not [q for q in last if "RESET ALL" in q or "UNLISTEN" in q], last
    assert any(q.strip().rstrip(";").upper() == "COMMIT" for q in last), last


async def test_the_next_user_of_a_pooled_connection_finds_the_session_as_it_connected(client):
    await _submit(client)
    assert (await client.post(URL, data=b"{}", headers={"Content-Type": "application/json"})).status == 401
    assert (await client.get("/readyz")).status == 200
    async with client.app[POOL].acquire() as conn:
        # The writer bounds its lock waits with set_config(..., true): for its transaction only.
        assert await conn.fetchval("SELECT current_setting('lock_timeout')") == "0"
        changed = await conn.fetch(
            "SELECT name FROM pg_settings WHERE source = 'session' AND name <> 'jit'"
        )  # asyncpg's type introspection turns jit off and back, at session level, by design
        assert changed == []
        assert await conn.fetchval("SELECT current_user = session_user")
        assert await conn.fetchval("SELECT count(*) FROM pg_cursors WHERE name <> ''") == 0
        assert await conn.fetchval("SELECT count(*) FROM pg_prepared_statements WHERE from_sql") == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()") == 0
        )
        assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        assert not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"
        )


def test_the_serving_code_leaves_no_session_state_on_a_pooled_connection():
    found = {}
    for path in sorted(INGEST.rglob("*.py")):
        relative = path.relative_to(INGEST).as_posix()
        hits = [
            (f, what)
            for f, what in session_state_in(path.read_text())
            if (relative, f) not in OWN_CONNECTIONS
        ]
        if hits:
            found[relative] = hits
    # Anything found here must run on a connection of its own, or the pool's reset
    # (ingest.web.app.keep_session) must undo it.
    assert found == {}


def _calling(sql: str) -> str:
    return f'async def f(conn):\n    """LISTEN, SET x = 1: a docstring."""\n    await conn.execute({sql!r})\n'


def test_the_scan_finds_what_it_looks_for():
    for statement in (
        "SELECT set_config('search_path', $1, false)",
        "SELECT set_config($1, $2, $3)",
        "SET statement_timeout = 0",
        "-- a comment\nSET ROLE someone",
        "BEGIN; SET SESSION lock_timeout TO 5",
        "LISTEN crm_submission",
        "SELECT pg_advisory_lock($1)",
        "SELECT pg_try_advisory_lock($1)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "PREPARE q AS SELECT 1",
        "CREATE TEMP TABLE t (x int)",
        "SELECT 1 INTO TEMP t",
    ):
        assert session_state_in(_calling(statement)), statement
    assert session_state_in("async def f(conn):\n    await conn.add_listener('c', print)\n")
    # migrate takes an advisory lock (on a connection of its own), and only migrate
    hits = session_state_in((INGEST / "store" / "migrations.py").read_text())
    assert hits and {f for f, _ in hits} == {"migrate"}
    assert [f for f, _ in session_state_in("def g():\n    def h():\n        return 'LISTEN c'\n")] == ["h"]
    for harmless in (
        "SELECT set_config('lock_timeout', $1, true)",
        "SELECT pg_advisory_xact_lock($1)",
        "UPDATE t\n   SET x = 1",
        "SET LOCAL x = 1",
    ):
        assert not session_state_in(_calling(harmless)), harmless
