"""The command line, run as a user would: check-config, migrate, serve (embedded and not)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ORIGIN, PARTNER_SECRET, free_port, start_server, wait_ready

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "ingest.example.toml"


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if cwd is not None:  # `-m ingest` from elsewhere: this checkout's package
        env = (os.environ.copy() if env is None else env) | {"PYTHONPATH": str(ROOT)}
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


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A data directory outside pytest's tmp_path.

    Each pytest session makes /tmp/pytest-of-root private again (0700), and as root
    PostgreSQL runs as the wheel's system user, which must reach its data directory.
    """
    parent = Path(tempfile.mkdtemp(prefix="ingest-cli-test-"))
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.embedded
def test_migrate_without_database_url_starts_the_embedded_postgresql(embedded_dir):
    result = run("--data-dir", str(embedded_dir / "data"), "migrate", env=base_env())
    assert result.returncode == 0, result.stderr
    assert "embedded PostgreSQL: postgresql://" in result.stderr
    assert "applied" in result.stdout
    assert (embedded_dir / "data" / "pgdata" / "PG_VERSION").is_file()


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
def test_serve_without_database_url_runs_on_the_embedded_postgresql(tmp_path, embedded_dir):
    data = embedded_dir / "data"
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


def test_serve_with_two_workers_serves_and_stops_cleanly(empty_db, tmp_path):
    import psutil

    env = base_env(DATABASE_URL=empty_db, INGEST_PEPPER="p" * 32)
    process, port = start_server(
        EXAMPLE, env, tmp_path / "log", global_args=(), serve_args=("--workers", "2")
    )
    try:
        wait_ready(port, process)  # the first worker up answers: wait for the second too
        deadline = time.monotonic() + 20
        while len(workers := psutil.Process(process.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
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


def test_version_prints_the_package_version():
    from importlib.metadata import version

    result = run("--version", env=base_env())
    assert result.returncode == 0
    assert result.stdout.strip() == f"ingest {version('qualitydesk-ingest')}"


PRIVACY_COMMANDS = [
    ("subjects", "export", "--email", "maija@example.fi"),
    ("subjects", "erase", "--email", "maija@example.fi"),
    ("subjects", "opt-out", "--email", "maija@example.fi"),
    ("subjects", "request", "--kind", "access", "--email", "maija@example.fi"),
    ("subjects", "pending"),
    ("purge", "--dry-run"),
    ("audit", "verify"),
    ("unsubscribe-link", "--email", "maija@example.fi"),
    ("confirm-link", "--email", "maija@example.fi"),
]


@pytest.mark.parametrize("command", PRIVACY_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_privacy_command_without_a_database_says_what_is_missing_and_creates_none(tmp_path, command):
    # Run from a directory without .ingest-data and without DATABASE_URL: answering from a
    # new empty database would tell the person nothing is stored.
    result = run("--config", str(EXAMPLE), *command, env=base_env(), cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "no database" in line
    assert "DATABASE_URL" in line
    assert "--data-dir" in line
    assert "maija" not in line
    assert not (tmp_path / ".ingest-data").exists()


def test_privacy_commands_need_the_database_and_the_pepper_but_no_webhook_secret(empty_db):
    env = base_env(DATABASE_URL=empty_db, INGEST_PEPPER="p" * 32)
    assert run("migrate", env=env).returncode == 0
    del env["PARTNER_FORMS_SECRET"]
    for command in [*PRIVACY_COMMANDS, ("ropa",)]:
        result = run("--config", str(EXAMPLE), *command, env=env)
        assert result.returncode == 0, (command, result.stderr)
        assert "secret_env" not in result.stderr
    # Whatever verifies deliveries still refuses to start without the secret.
    for command in (("check-config",), ("serve", "--port", str(free_port()))):
        refused = run("--config", str(EXAMPLE), *command, env=env)
        assert refused.returncode == 2
        assert "PARTNER_FORMS_SECRET is not set" in refused.stderr


def test_check_config_refuses_a_secret_of_the_wrong_format_naming_the_variable():
    result = run("--config", str(EXAMPLE), "check-config", env=base_env(PARTNER_FORMS_SECRET="x"))
    assert result.returncode == 2
    assert "sources.partner-forms.secret_env: PARTNER_FORMS_SECRET: not a Standard Webhooks secret" in (
        result.stderr
    )


def test_check_config_accepts_the_admin_token_recipe_as_pasted(tmp_path):
    config = tmp_path / "ingest.toml"
    config.write_text(
        EXAMPLE.read_text()
        + '\n[admin_tokens.privacy-officer]\ntoken_sha256_env = "INGEST_TOKEN_OFFICER"\nscopes = ["export"]\n'
    )
    # The README's recipe, run as written: sha256sum prints "<hex>  -".
    pasted = subprocess.run(
        ["sh", "-c", 'printf %s "$TOKEN" | sha256sum'],
        capture_output=True,
        text=True,
        env={"TOKEN": "a-long-random-officer-token-0123456789", "PATH": os.environ["PATH"]},
        check=True,
    ).stdout
    assert pasted.rstrip("\n").endswith("  -")
    result = run("--config", str(config), "check-config", env=base_env(INGEST_TOKEN_OFFICER=pasted))
    assert result.returncode == 0, result.stderr
    assert "1 admin tokens" in result.stdout
    weak = run("--config", str(config), "check-config", env=base_env(INGEST_TOKEN_OFFICER="abc  -"))
    assert weak.returncode == 2
    assert "INGEST_TOKEN_OFFICER: must hold a hex SHA-256" in weak.stderr


def _pytest(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """The suite's browser and kubectl tests on a PATH holding neither chromium nor kubectl."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "INGEST_REQUIRE_ALL_TESTS"} | {"PATH": str(empty)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/test_browser.py",
            "tests/test_deploy.py::test_the_kustomization_builds_and_validates_against_the_kubernetes_schemas",
        ],
        capture_output=True,
        text=True,
        env=env | extra,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_without_chromium_or_kubectl_those_tests_skip_saying_how_to_enable_them_unless_required(tmp_path):
    result = _pytest(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "failed" not in result.stdout
    assert "apt-get install chromium" in result.stdout
    assert "install kubectl >= 1.27" in result.stdout
    # CI sets INGEST_REQUIRE_ALL_TESTS=1: the same tests fail there instead.
    required = _pytest(tmp_path, INGEST_REQUIRE_ALL_TESTS="1")
    assert required.returncode == 1
    assert "skipped" not in required.stdout.splitlines()[-1]
    assert "INGEST_REQUIRE_ALL_TESTS=1" in required.stdout
