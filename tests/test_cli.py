"""The command line, run as a user would: check-config, migrate, serve (embedded and not)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support import ORIGIN, PARTNER_SECRET, start_server, wait_ready

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "ingest.example.toml"


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd or ROOT,
        check=False,
    )


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "INGEST_CONFIG", "INGEST_PEPPER")}
    return env | {"PARTNER_FORMS_SECRET": PARTNER_SECRET} | extra


def test_check_config_accepts_the_example():
    result = run("--config", str(EXAMPLE), "check-config", env=base_env())
    assert result.returncode == 0, result.stderr
    assert "OK (2 sources" in result.stdout


def test_check_config_names_the_missing_secret(tmp_path):
    env = base_env()
    del env["PARTNER_FORMS_SECRET"]
    result = run("--config", str(EXAMPLE), "check-config", env=env)
    assert result.returncode == 2
    assert (
        "sources.partner-forms.secret_env: environment variable PARTNER_FORMS_SECRET is not set"
        in result.stderr
    )


def test_check_config_names_a_bad_key(tmp_path):
    bad = tmp_path / "ingest.toml"
    bad.write_text(EXAMPLE.read_text().replace('lawful_basis = "consent"', 'lawful_basis = "because"'))
    result = run("--config", str(bad), "check-config", env=base_env())
    assert result.returncode == 2
    assert "purposes.direct_marketing.lawful_basis" in result.stderr


def test_migrate_uses_database_url(empty_db):
    first = run("migrate", env=base_env(DATABASE_URL=empty_db))
    assert first.returncode == 0, first.stderr
    assert "applied 1 migration" in first.stdout or "applied" in first.stdout
    again = run("migrate", env=base_env(DATABASE_URL=empty_db))
    assert again.stdout.strip() == "database is up to date"


@pytest.mark.embedded
def test_migrate_without_database_url_starts_the_embedded_postgresql(tmp_path):
    result = run("--data-dir", str(tmp_path / "data"), "migrate", env=base_env())
    assert result.returncode == 0, result.stderr
    assert "embedded PostgreSQL: postgresql://" in result.stderr
    assert "applied" in result.stdout
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").is_file()


def _post_form(port: int) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/forms/website-contact",
        data=b"name=Maija&email=maija%40example.fi&message=Hello",
        headers={
            "Origin": ORIGIN,
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.status, json.loads(response.read())


def _serve(env: dict[str, str], log: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    return start_server(EXAMPLE, env, log, global_args=args, serve_args=())


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_serve_with_database_url_accepts_a_form_and_stops_on_sigterm(empty_db, tmp_path):
    process, port = _serve(base_env(DATABASE_URL=empty_db, INGEST_PEPPER="p" * 32), tmp_path / "log")
    try:
        wait_ready(port, process)
        status, body = _post_form(port)
        assert status == 201
        assert body["status"] == "created"
    finally:
        assert _stop(process) == 0


def test_serve_refuses_to_start_without_a_pepper_on_a_real_database(empty_db):
    result = run("--config", str(EXAMPLE), "serve", env=base_env(DATABASE_URL=empty_db))
    assert result.returncode == 2
    assert "INGEST_PEPPER" in result.stderr


@pytest.mark.embedded
def test_serve_without_database_url_runs_on_the_embedded_postgresql(tmp_path):
    data = tmp_path / "data"
    process, port = _serve(base_env(), tmp_path / "log", "--data-dir", str(data))
    try:
        wait_ready(port, process)
        status, _ = _post_form(port)
        assert status == 201
    finally:
        assert _stop(process) == 0
    assert (data / "pepper").is_file()  # development pepper kept beside the data
    assert not (data / "pgdata" / "postmaster.pid").exists()  # the server was stopped


def test_subjects_export_erase_and_audit_verify_from_the_command_line(empty_db):
    env = base_env(DATABASE_URL=empty_db, INGEST_PEPPER="p" * 32)
    assert run("migrate", env=env).returncode == 0
    exported = run("--config", str(EXAMPLE), "subjects", "export", "--email", "nobody@example.fi", env=env)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["contacts"] == []
    erased = run("--config", str(EXAMPLE), "subjects", "erase", "--email", "nobody@example.fi", env=env)
    assert json.loads(erased.stdout)["removed"]["contacts"] == 0
    opted = run("--config", str(EXAMPLE), "subjects", "opt-out", "--email", "nobody@example.fi", env=env)
    assert json.loads(opted.stdout)["recorded"]["suppression_entries_added"] == 1
    verify = run("audit", "verify", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit_log: OK (3 rows)" in verify.stdout
    bad = run("--config", str(EXAMPLE), "subjects", "export", "--email", "not-an-address", env=env)
    assert bad.returncode == 2
    assert "not-an-address" not in bad.stderr


def test_purge_dry_run_and_ropa_and_links_from_the_command_line(empty_db):
    env = base_env(DATABASE_URL=empty_db, INGEST_PEPPER="p" * 32)
    assert run("migrate", env=env).returncode == 0
    dry = run("--config", str(EXAMPLE), "purge", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["would_remove"]["contacts"] == 0
    ropa = run("--config", str(EXAMPLE), "ropa", env=env)
    assert "| direct_marketing | consent | 730 days |" in ropa.stdout
    link = run(
        "--config",
        str(EXAMPLE),
        "unsubscribe-link",
        "--email",
        "maija@example.fi",
        "--base-url",
        "https://ingest.example",
        env=env,
    )
    assert link.stdout.startswith("https://ingest.example/v1/unsubscribe?token=")
    assert "maija" not in link.stdout


def test_serve_with_two_workers_shares_the_port_and_stops_cleanly(empty_db, tmp_path):
    import psutil

    env = base_env(DATABASE_URL=empty_db, INGEST_PEPPER="p" * 32)
    process, port = start_server(
        EXAMPLE, env, tmp_path / "log", global_args=(), serve_args=("--workers", "2")
    )
    try:
        wait_ready(port, process)
        children = psutil.Process(process.pid).children()
        # spawn also starts multiprocessing's resource tracker, which is not a worker
        workers = [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]
        assert len(workers) == 2  # as asked, whatever the machine's CPU count
        statuses = {_post_form(port)[0] for _ in range(10)}
        assert statuses == {201}
    finally:
        assert _stop(process) == 0

    def alive(worker: psutil.Process) -> bool:
        try:
            return worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert not any(alive(w) for w in workers)
