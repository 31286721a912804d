"""`ingest try`: a provider's packaged sample, signed as the provider signs, against a live instance."""

from __future__ import annotations

import asyncio
import json

import pytest

from ingest import trial
from ingest.config import Source, parse_config
from ingest.errors import ConfigError
from ingest.web.app import create_app
from tests.support import PARTNER_SECRET, PEPPER, base_config_dict, make_config, secrets_environ

TAWK_SECRET = "tawk-webhook-secret-0123456789abcdef"
LIVECHAT_SECRET = "livechat-webhook-secret-0123456789"
TYPEFORM_SECRET = "typeform-webhook-secret-0123456789"


def trial_config():
    raw = base_config_dict()
    raw["sources"] |= {
        "tawk": {"channel": "chat", "format": "tawkto", "secret_env": "TAWK_SECRET", "purposes": ["contact"]},
        "livechat": {
            "channel": "chat",
            "format": "livechat",
            "secret_env": "LIVECHAT_SECRET",
            "purposes": ["contact"],
        },
        "typeform": {
            "channel": "form",
            "format": "typeform",
            "secret_env": "TYPEFORM_SECRET",
            "purposes": ["contact"],
        },
    }
    environ = secrets_environ() | {
        "TAWK_SECRET": TAWK_SECRET,
        "LIVECHAT_SECRET": LIVECHAT_SECRET,
        "TYPEFORM_SECRET": TYPEFORM_SECRET,
    }
    return make_config(raw, environ)


@pytest.fixture
async def instance(aiohttp_server, app_dsn, log_output):
    config = trial_config()
    server = await aiohttp_server(create_app(config, app_dsn, PEPPER))
    return config, str(server.make_url("/"))


async def try_source(config, url, source, sample=None):
    return await asyncio.to_thread(trial.run, config, source, url, sample)


@pytest.mark.parametrize(
    ("source", "stored"),
    [
        ("partner-forms", "maija@example.fi"),
        ("tawk", "hello@test.com"),
        ("livechat", "t.anderson@example.com"),
    ],
)
async def test_the_sample_of_a_source_is_accepted_and_stored(instance, db, capsys, source, stored):
    config, url = instance
    assert await try_source(config, url, source) == 0
    status, _, body = capsys.readouterr().out.strip().partition(" ")
    assert status in {"200", "201"}  # chats answer 200 (a piece may only wait), forms 201
    assert json.loads(body)["status"] == "created"
    assert await db.fetchval("SELECT count(*) FROM crm.contacts WHERE email = $1", stored) == 1


async def test_the_same_sample_again_is_a_duplicate_for_a_provider_that_names_its_deliveries(
    instance, capsys
):
    config, url = instance
    assert await try_source(config, url, "tawk") == 0
    assert await try_source(config, url, "tawk") == 0
    printed = capsys.readouterr()
    second = printed.out.strip().splitlines()[-1]
    assert second.startswith("200 ")
    assert json.loads(second.partition(" ")[2])["status"] == "duplicate"
    assert "was not exercised" in printed.err  # a changed mapping would not show: say so


async def test_another_sample_can_be_chosen_and_the_answer_is_shown_as_is(instance, capsys):
    config, url = instance
    # The typeform sample's answers are not mapped by this source: the service says which field.
    rc = await try_source(config, url, "typeform", "form_response.json")
    out = capsys.readouterr().out.strip()
    assert out.split(" ", 1)[0] in {"201", "422"}
    assert rc == (0 if out.startswith("201") else 1)


async def test_a_secret_other_than_the_instances_gets_401(instance, capsys):
    config, url = instance
    tawk = config.sources["tawk"]
    other = Source(**{**{f: getattr(tawk, f) for f in Source.__slots__}, "secrets": ("another-secret-1234",)})
    config = type(config)(**{**{f: getattr(config, f) for f in config.__slots__}, "sources": {"tawk": other}})
    assert await try_source(config, url, "tawk") == 1
    printed = capsys.readouterr()
    assert printed.out.startswith('401 {"error": "invalid_signature"}')
    assert "secret here differs" in printed.err


def test_a_source_without_its_secret_set_names_the_variable():
    raw = base_config_dict()
    raw["sources"]["tawk"] = {
        "channel": "chat",
        "format": "tawkto",
        "secret_env": "TAWK_SECRET",
        "purposes": ["contact"],
    }
    config = parse_config(raw, secrets_environ(), require_secrets=False)
    with pytest.raises(ConfigError, match=r"sources\.tawk\.secret_env: set TAWK_SECRET"):
        trial.build(config.sources["tawk"])


def test_every_provider_format_has_a_packaged_default_sample():
    from ingest.adapters import ADAPTERS

    assert set(trial.SIGNERS) == set(ADAPTERS)
    for fmt, name in trial.DEFAULT_SAMPLES.items():
        assert name in trial.samples(fmt), fmt
        # each provider's samples say where they come from
        assert fmt in {"json", "html"} or (trial._directory(fmt) / "README.md").is_file()


def test_an_unknown_source_or_sample_is_a_configuration_error():
    config = trial_config()
    with pytest.raises(ConfigError, match="no such source"):
        trial.run(config, "nope", "http://127.0.0.1:1", None)
    with pytest.raises(ConfigError, match="--sample: tawkto has"):
        trial.run(config, "tawk", "http://127.0.0.1:1", "nope.json")


def test_an_instance_that_is_not_running_is_one_line(capsys):
    from tests.support import free_port

    assert trial.run(trial_config(), "tawk", f"http://127.0.0.1:{free_port()}", None) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("could not reach http://127.0.0.1:")


def test_the_command_needs_only_its_own_sources_secret(tmp_path):
    import os
    import subprocess
    import sys

    from tests.support import PARTNER_SECRET, ROOT, free_port

    def ingest_try(**extra):
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PARTNER_", "INGEST_"))
        }
        return subprocess.run(
            [
                *(sys.executable, "-m", "ingest", "--config", str(ROOT / "deploy" / "ingest.example.toml")),
                *("try", "partner-forms", "--url", f"http://127.0.0.1:{free_port()}"),
            ],
            capture_output=True,
            text=True,
            env=env | extra,
            cwd=ROOT,
            timeout=60,
            check=False,
        )

    missing = ingest_try()
    assert missing.returncode == 2
    assert "sources.partner-forms.secret_env: set PARTNER_FORMS_SECRET" in missing.stderr
    unreachable = ingest_try(PARTNER_FORMS_SECRET=PARTNER_SECRET)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("could not reach http://127.0.0.1:")
    assert PARTNER_SECRET not in unreachable.stdout + unreachable.stderr


@pytest.mark.parametrize("fmt", sorted(trial.DEFAULT_SAMPLES))
def test_every_formats_default_sample_is_signed_and_verified_by_its_adapter(fmt):
    from datetime import UTC, datetime

    from ingest.adapters import ADAPTERS
    from ingest.adapters.base import InboundRequest

    adapter = ADAPTERS[fmt]
    source = Source(
        name="trial",
        channel=min(adapter.channels),
        format=fmt,
        purposes=("contact",),
        secrets=("trial-secret-0123456789abcdef",) if fmt not in {"json", "hubspot"} else (PARTNER_SECRET,),
        allowed_origins=frozenset({"https://www.example.com"}),
    )
    delivery = trial.build(source)
    request = InboundRequest(
        headers={k.lower(): v for k, v in delivery.headers.items()},
        query=delivery.query,
        body=delivery.body,
        content_type=delivery.headers["Content-Type"],
        received_at=datetime.now(UTC),
    )
    # The adapter's own verification accepts it (an InvalidSignature would raise here).
    assert adapter.parse(source, request)


async def test_a_redirect_is_reported_and_never_followed_with_the_signed_delivery(aiohttp_server, capsys):
    # A 302 to another host would carry the signature (or a provider's API key) there.
    from aiohttp import web

    seen: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(request.headers.get("webhook-signature", ""))
        return web.Response(text="ok")

    async def redirector(_: web.Request) -> web.Response:
        raise web.HTTPFound(str(other.make_url("/catch")))

    catcher = web.Application()
    catcher.router.add_route("*", "/catch", elsewhere)
    other = await aiohttp_server(catcher)
    bouncing = web.Application()
    bouncing.router.add_route("*", "/{tail:.*}", redirector)
    server = await aiohttp_server(bouncing)
    rc = await try_source(trial_config(), str(server.make_url("/")), "partner-forms")
    assert rc == 1
    assert capsys.readouterr().out.startswith("302 ")
    assert seen == []
