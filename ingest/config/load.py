"""Read ingest.toml and validate its top-level sections (purposes, consents, tokens, limits)."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import phonenumbers

from ingest.config.mail import double_opt_in, parse_mail
from ingest.config.model import (
    ADMIN_SCOPES,
    DEADLINE_RANGE,
    LAWFUL_BASES,
    LINK_DAYS_MAXIMUM,
    NOTICE_PURPOSES,
    AdminToken,
    Config,
    Limits,
    Purpose,
    consent_text,
)
from ingest.config.reader import Reader, check_public_url, url_value
from ingest.config.sources import Secrets, parse_sources
from ingest.domain import ConsentText
from ingest.errors import ConfigError
from ingest.secrets import (
    token_digest,
)

_CONSENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


def default_config_path() -> Path:
    """Return INGEST_CONFIG, else ./ingest.toml, else the packaged example."""
    env = os.environ.get("INGEST_CONFIG")
    if env:
        return Path(env)
    local = Path("ingest.toml")
    if local.is_file():
        return local
    return packaged_example()


def packaged_example() -> Path:
    """Locate the example config in a wheel (ingest/) or a checkout (deploy/)."""
    package = Path(__file__).resolve().parent.parent  # ingest/
    for candidate in (package / "ingest.example.toml", package.parent / "deploy" / "ingest.example.toml"):
        if candidate.is_file():
            return candidate
    raise ConfigError("no configuration file: set INGEST_CONFIG or create ingest.toml")


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    example_secrets_allowed: bool = False,
    require_secrets: bool = True,
) -> Config:
    """Read and validate the TOML file at `path`, resolving secrets from `environ`.

    `example_secrets_allowed`: the README's example secret is accepted (the embedded
    development database only). `require_secrets=False` (commands that never verify a
    delivery or a bearer token: the privacy chores, `ropa`, `try`): a source's secret is
    taken if set, unchecked, and admin tokens are not resolved.
    """
    path = path or default_config_path()
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    config = parse_config(
        raw, environ, example_secrets_allowed=example_secrets_allowed, require_secrets=require_secrets
    )
    return Config(**{**_fields(config), "path": str(path)})


def _fields(config: Config) -> dict[str, Any]:
    return {name: getattr(config, name) for name in Config.__dataclass_fields__}


def parse_config(
    raw: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    example_secrets_allowed: bool = False,
    require_secrets: bool = True,
) -> Config:
    """Validate an already-parsed TOML document."""
    top = Reader(dict(raw), "")
    notice_version = top.get("notice_version", str)
    if not notice_version.strip():
        raise ConfigError("notice_version: must not be empty")
    region = top.get("default_region", str, "FI")
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError("default_region: not a known ISO 3166 region code")
    notice_url = top.get("notice_url", str, None)
    public_url = url_value(top, "public_url")
    if public_url is not None:
        check_public_url(public_url)
    controller = _controller(top)
    purposes = _purposes(top.sub("purposes"))
    consents, confirm = _consents(top.sub("consents"), purposes)
    sources = parse_sources(
        top.sub("sources"), purposes, consents, Secrets(environ, example_secrets_allowed, require_secrets)
    )
    tokens = _admin_tokens(top.sub("admin_tokens"), environ, resolve=require_secrets)
    limits = _limits(top.sub("limits"))
    mail = parse_mail(top.sub("mail"), environ)
    top.reject_unknown()
    return Config(
        notice_version=notice_version,
        default_region=region,
        purposes=purposes,
        consents=consents,
        sources=sources,
        admin_tokens=tokens,
        limits=limits,
        notice_url=notice_url,
        public_url=public_url,
        controller=controller,
        double_opt_in=confirm,
        mail=mail,
    )


def _controller(top: Reader) -> str | None:
    name = top.get("controller", str, None)
    if name is not None and (not name.strip() or len(name) > 200 or not name.isprintable()):  # noqa: PLR2004
        raise ConfigError("controller: the controller's name, 1 to 200 printable characters")
    return cast("str | None", name)


def _purposes(table: Reader) -> dict[str, Purpose]:
    purposes = {}
    for name in table.table:
        if name not in NOTICE_PURPOSES:
            raise ConfigError(
                f"{table.key(name)}: not a purpose of the privacy notice ({', '.join(NOTICE_PURPOSES)})"
            )
        item = table.sub(name)
        basis = item.get("lawful_basis", str)
        if basis not in LAWFUL_BASES:
            raise ConfigError(f"{item.key('lawful_basis')}: one of {', '.join(LAWFUL_BASES)}")
        days = item.get("retention_days", int)
        if days < 1:
            raise ConfigError(f"{item.key('retention_days')}: must be at least 1")
        item.reject_unknown()
        purposes[name] = Purpose(name=name, lawful_basis=basis, retention_days=days)
    if not purposes:
        raise ConfigError("purposes: at least one purpose is required")
    return purposes


def _consents(
    table: Reader, purposes: Mapping[str, Purpose]
) -> tuple[dict[str, ConsentText], frozenset[str]]:
    consents = {}
    confirm = set()
    for consent_id in table.table:
        if not _CONSENT_ID_RE.match(consent_id):
            raise ConfigError(f"{table.key(consent_id)}: letters, digits and _.:- only")
        item = table.sub(consent_id)
        purpose = item.get("purpose", str)
        if purpose not in purposes:
            raise ConfigError(f"{item.key('purpose')}: no such purpose in [purposes]")
        text = item.get("text", str)
        if not text.strip():
            raise ConfigError(f"{item.key('text')}: must not be empty")
        if double_opt_in(item, purpose):
            confirm.add(consent_id)
        item.reject_unknown()
        consents[consent_id] = consent_text(consent_id, purpose, text)
    return consents, frozenset(confirm)


def _admin_tokens(table: Reader, environ: Mapping[str, str], *, resolve: bool) -> tuple[AdminToken, ...]:
    tokens = []
    for name in table.table:
        item = table.sub(name)
        env_name = item.get("token_sha256_env", str)
        if not resolve:
            item.string_list("scopes")
            item.reject_unknown()
            continue
        value = environ.get(env_name, "").strip()
        if not value:
            raise ConfigError(f"{item.key('token_sha256_env')}: environment variable {env_name} is not set")
        try:
            digest = token_digest(env_name, value)
        except ConfigError as exc:
            raise ConfigError(f"{item.key('token_sha256_env')}: {exc}") from None
        scopes = item.string_list("scopes")
        for scope in scopes:
            if scope not in ADMIN_SCOPES:
                raise ConfigError(f"{item.key('scopes')}: {scope!r} is not one of {', '.join(ADMIN_SCOPES)}")
        item.reject_unknown()
        tokens.append(AdminToken(name=name, sha256=digest, scopes=frozenset(scopes)))
    return tuple(tokens)


_LIMITS_MAY_BE_ZERO = frozenset({"trusted_proxy_hops", "batch_max_wait_ms"})


def _limits(table: Reader) -> Limits:
    defaults = Limits()
    values: dict[str, Any] = {}
    for name, default in ((f, getattr(defaults, f)) for f in Limits.__dataclass_fields__):
        kind: type | tuple[type, ...] = (int, float) if isinstance(default, float) else int
        value = table.get(name, kind, default)
        if value < 0 or (value == 0 and name not in _LIMITS_MAY_BE_ZERO):
            raise ConfigError(f"{table.key(name)}: must be positive")
        if name in LINK_DAYS_MAXIMUM and value > LINK_DAYS_MAXIMUM[name]:
            raise ConfigError(f"{table.key(name)}: at most {LINK_DAYS_MAXIMUM[name]} days")
        if name == "request_deadline_seconds" and not DEADLINE_RANGE[0] <= value <= DEADLINE_RANGE[1]:
            raise ConfigError(f"{table.key(name)}: from {DEADLINE_RANGE[0]} to {DEADLINE_RANGE[1]} seconds")
        values[name] = value
    table.reject_unknown()
    return Limits(**values)
