"""Fixtures: a real PostgreSQL, a template database cloned per test, the real app factory.

The server is DATABASE_URL when set, else an embedded throwaway one; logs are captured.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import tempfile
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from ingest.logs import configure_logging
from ingest.store import migrations
from ingest.web.app import create_app
from tests.support import PEPPER, make_config, quote_db_name, with_database

# Mails the apps under test write as .eml files (no SMTP configured) go to a scratch
# directory, never into the checkout; served processes inherit it (tests/support.py).
os.environ.setdefault("INGEST_MAIL_DIR", tempfile.mkdtemp(prefix="ingest-test-mail-"))


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """The PostgreSQL server the tests use: DATABASE_URL, or an embedded throwaway one."""
    dsn = os.environ.get("DATABASE_URL")
    if dsn:
        yield dsn
        return
    from ingest.embedded import embedded_postgres

    with (
        tempfile.TemporaryDirectory(prefix="ingest-test-pg-") as tmp,
        embedded_postgres(Path(tmp)) as embedded,
    ):
        yield embedded


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    """A database migrated once per session, cloned by every test."""
    name = f"ingest_tpl_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_dsn, f"CREATE DATABASE {quote_db_name(name)}"))

    async def migrate() -> None:
        conn = await asyncpg.connect(with_database(server_dsn, name))
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(migrate())
    asyncio.run(_admin(server_dsn, *APP_ROLE_STATEMENTS))
    yield name
    asyncio.run(_admin(server_dsn, f"DROP DATABASE IF EXISTS {quote_db_name(name)} WITH (FORCE)"))


# The service connects as a login role that is only a member of ingest_runtime, as in
# production: the whole suite then shows the runtime role's privileges suffice.
APP_ROLE = "ingest_test_app"
APP_ROLE_STATEMENTS = (
    """
    DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ingest_test_app') THEN
            CREATE ROLE ingest_test_app LOGIN;
        END IF;
    END $$
    """,
    "GRANT ingest_runtime TO ingest_test_app",
)


def as_role(dsn: str, role: str) -> str:
    """The same database, connecting as another role (the test server trusts local connections)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{role}@{host}", parts.path, parts.query, parts.fragment))


@pytest.fixture
async def embedded_db() -> AsyncIterator[tuple[str, object, Path]]:
    """A private embedded PostgreSQL this test may stop, start or freeze (SIGSTOP)."""
    import warnings

    from embedded_postgres.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="ingest-fault-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pgdata = Path(tmp) / "pgdata"
        server = get_server(pgdata, cleanup_mode="stop")
        dsn = server.get_uri()
        conn = await asyncpg.connect(dsn)
        await migrations.migrate(conn)
        await conn.close()
        yield dsn, server, pgdata
        get_server(pgdata, cleanup_mode="stop").cleanup()


@pytest.fixture
def empty_db(server_dsn: str) -> Iterator[str]:
    """A fresh, unmigrated database."""
    name = f"ingest_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_dsn, f"CREATE DATABASE {quote_db_name(name)}"))
    yield with_database(server_dsn, name)
    asyncio.run(_admin(server_dsn, f"DROP DATABASE IF EXISTS {quote_db_name(name)} WITH (FORCE)"))


@pytest.fixture
def db_dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh migrated database for one test (cloned from the template)."""
    name = f"ingest_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(
        _admin(server_dsn, f"CREATE DATABASE {quote_db_name(name)} TEMPLATE {quote_db_name(template_db)}")
    )
    # Database-level privileges are not copied from a template.
    asyncio.run(_admin(with_database(server_dsn, name), migrations.DATABASE_PRIVILEGES))
    yield with_database(server_dsn, name)
    asyncio.run(_admin(server_dsn, f"DROP DATABASE IF EXISTS {quote_db_name(name)} WITH (FORCE)"))


@pytest.fixture
async def db(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the test database, for looking at what was stored."""
    conn = await asyncpg.connect(db_dsn)
    yield conn
    await conn.close()


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the service logs during the test, as JSON lines."""
    buffer = io.StringIO()
    configure_logging(buffer)
    yield buffer
    configure_logging(io.StringIO())


@pytest.fixture
def config():
    """The test configuration (tests may build their own with make_config)."""
    return make_config()


@pytest.fixture
def app_dsn(db_dsn: str) -> str:
    """The test's database, as the service's runtime role."""
    return as_role(db_dsn, APP_ROLE)


@pytest.fixture
async def client(aiohttp_client, app_dsn, config, log_output):
    """A test client for the app built by the real factory, on a fresh database, as the runtime role."""
    return await aiohttp_client(create_app(config, app_dsn, PEPPER))


@pytest.fixture
def make_client(aiohttp_client, app_dsn, log_output):
    """Build a test client for an app with the given config, on this test's database."""

    async def build(config):
        return await aiohttp_client(create_app(config, app_dsn, PEPPER))

    return build


# Test tiers (`pytest -m unit` is the inner loop; CI runs everything). A test's tier is chosen
# here unless it carries an explicit unit/db/e2e marker, which wins:
#   e2e   in a file that starts servers, browsers, private clusters, failovers or faults; a test
#         marked `embedded` or using `embedded_db`; or a test (or a fixture it uses, or a helper
#         of its module) that runs a subprocess;
#   db    a test that uses, directly or through other fixtures, the session PostgreSQL;
#   unit  everything else: no database, no network, no subprocess.
TIERS = ("unit", "db", "e2e")
E2E_MODULES = frozenset(
    {
        "test_bounded_waits",
        "test_browser",
        "test_cli",
        "test_deploy",
        "test_embedded",
        "test_failover",
        "test_faults",
        "test_fuzz",
        "test_serving",
    }
)
# Every other database fixture (template_db, db_dsn, db, app_dsn, client, make_client,
# empty_db, and the test files' own) reaches the server through server_dsn.
DB_FIXTURES = frozenset({"server_dsn"})
E2E_FIXTURES = frozenset({"embedded_db"})


def _source(obj: object) -> str:
    try:
        return inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""


_module_process_helpers: dict[str, frozenset[str]] = {}


def _process_helpers(module: types.ModuleType) -> frozenset[str]:
    """The names of a test module's own functions that run a subprocess."""
    if module.__name__ not in _module_process_helpers:
        _module_process_helpers[module.__name__] = frozenset(
            name
            for name, value in vars(module).items()
            if inspect.isfunction(value)
            and value.__module__ == module.__name__
            and "subprocess." in _source(value)
        )
    return _module_process_helpers[module.__name__]


def _runs_a_process(item: pytest.Function) -> bool:
    functions = [item.function]
    for name in item.fixturenames:
        definitions = item._fixtureinfo.name2fixturedefs.get(name) or ()
        functions.extend(definition.func for definition in definitions)
    helpers = _process_helpers(item.module)
    for function in functions:
        text = _source(function)
        if "subprocess." in text or any(f"{helper}(" in text for helper in helpers):
            return True
    return False


def tier_of(item: pytest.Item) -> str:
    """The tier a collected test belongs to."""
    explicit = [tier for tier in TIERS if item.get_closest_marker(tier)]
    if explicit:
        return explicit[0]
    names = set(getattr(item, "fixturenames", ()))
    module = item.module.__name__.rsplit(".", 1)[-1] if isinstance(item, pytest.Function) else ""
    if (
        module in E2E_MODULES
        or names & E2E_FIXTURES
        or item.get_closest_marker("embedded")
        or (isinstance(item, pytest.Function) and _runs_a_process(item))
    ):
        return "e2e"
    if names & DB_FIXTURES:
        return "db"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(tier_of(item))
