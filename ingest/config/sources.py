"""The [sources] tables: each source's channel, format, purposes, mappings, origins and secrets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from ingest.config.model import CANONICAL_FIELDS, FORMATS, MAX_BODY_BYTES_CAP, Purpose, Source
from ingest.config.reader import NAME_RE, Reader, url_value
from ingest.domain import Channel, ConsentText
from ingest.errors import ConfigError
from ingest.secrets import (
    EXAMPLE_SECRETS,
    SHARED_SECRET_MIN_CHARS,
    check_shared_secret,
    check_standard_webhooks_secret,
)


def parse_sources(  # noqa: D103 - the [sources] table, as the module says
    table: Reader,
    purposes: Mapping[str, Purpose],
    consents: Mapping[str, ConsentText],
    environ: Secrets,
) -> dict[str, Source]:
    sources = {}
    for name in table.table:
        if not NAME_RE.match(name):
            raise ConfigError(f"{table.key(name)}: lower-case letters, digits, - and _ only")
        sources[name] = _source(name, table.sub(name), purposes, consents, environ)
    return sources


def _source(
    name: str,
    item: Reader,
    purposes: Mapping[str, Purpose],
    consents: Mapping[str, ConsentText],
    environ: Secrets,
) -> Source:
    channel = item.get("channel", str)
    if channel not in ("form", "chat"):
        raise ConfigError(f"{item.key('channel')}: form or chat")
    fmt = item.get("format", str)
    if fmt not in FORMATS:
        raise ConfigError(f"{item.key('format')}: unknown format (known: {', '.join(sorted(FORMATS))})")
    # The adapter's own checks of a source's settings come after: ingest.adapters.check_sources.
    rules = FORMATS[fmt]
    if channel not in rules.channels:
        served = "/".join(sorted(rules.channels))
        raise ConfigError(f"{item.key('channel')}: format {fmt} serves {served}")
    origins = _origins(item)
    if rules.needs_origin and not origins:
        raise ConfigError(f"{item.key('allowed_origins')}: required for format {fmt}")
    source = Source(
        name=name,
        channel=cast("Channel", channel),
        format=fmt,
        purposes=_source_purposes(item, purposes),
        secrets=_secrets(item, environ, required=rules.needs_secret, kind=rules.secret_kind),
        secret_envs=_secret_envs(item),
        allowed_origins=origins,
        consent_fields=_consent_fields(item, consents),
        field_map=_field_map(item),
        success_url=url_value(item, "success_url"),
        error_url=url_value(item, "error_url"),
        honeypot_field=item.get("honeypot_field", str, "_gotcha"),
        min_fill_seconds=float(item.get("min_fill_seconds", (int, float), 0)),
        options=item.get("options", dict, {}),
        max_body_bytes=_body_limit(item),
        authenticated=rules.needs_secret,
        double_opt_in=item.get("double_opt_in", bool, not rules.needs_secret),
    )
    item.reject_unknown()
    return source


def _body_limit(item: Reader) -> int | None:
    limit = item.get("max_body_bytes", int, None)
    if limit is not None and not 0 < limit <= MAX_BODY_BYTES_CAP:
        raise ConfigError(f"{item.key('max_body_bytes')}: from 1 to {MAX_BODY_BYTES_CAP} bytes")
    return cast("int | None", limit)


def _source_purposes(item: Reader, purposes: Mapping[str, Purpose]) -> tuple[str, ...]:
    names = item.string_list("purposes")
    if not names:
        raise ConfigError(f"{item.key('purposes')}: at least one purpose")
    for purpose in names:
        if purpose not in purposes:
            raise ConfigError(f"{item.key('purposes')}: {purpose!r} is not defined in [purposes]")
    return tuple(names)


def _consent_fields(item: Reader, consents: Mapping[str, ConsentText]) -> dict[str, str]:
    mapping = item.string_map("consent_fields")
    for form_field, consent_id in mapping.items():
        if consent_id not in consents:
            raise ConfigError(
                f"{item.key('consent_fields')}.{form_field}: no consent {consent_id!r} in [consents]"
            )
    return mapping


def _field_map(item: Reader) -> dict[str, str]:
    mapping = item.string_map("fields")
    for canonical in mapping:
        if canonical not in CANONICAL_FIELDS:
            raise ConfigError(f"{item.key('fields')}.{canonical}: one of {', '.join(CANONICAL_FIELDS)}")
    return mapping


def _origins(item: Reader) -> frozenset[str]:
    origins = item.string_list("allowed_origins", [])
    for origin in origins:
        if not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(
                f"{item.key('allowed_origins')}: {origin!r} is not an origin (scheme://host[:port])"
            )
    return frozenset(origins)


@dataclass(frozen=True, slots=True)
class Secrets:
    """Where source secrets come from, and whether the README's example secret may be one."""

    environ: Mapping[str, str]
    example_allowed: bool
    required: bool = True  # False: take what is set, unchecked (commands that verify nothing)


def _secret_envs(item: Reader) -> tuple[str, ...]:
    names = item.table.get("secret_env", ())
    return (names,) if isinstance(names, str) else tuple(n for n in names if isinstance(n, str))


def _secrets(item: Reader, environ: Secrets, *, required: bool, kind: str) -> tuple[str, ...]:
    """Resolve secret_env: one variable name or a list (old and new, for rotation); check each value."""
    names = item.get("secret_env", (str, list), None)
    if names is None:
        if required:
            raise ConfigError(
                f"{item.key('secret_env')}: required (the environment variable holding the secret)"
            )
        return ()
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ConfigError(f"{item.key('secret_env')}: name at least one environment variable")
    secrets = []
    for env_name in names:
        if not isinstance(env_name, str) or not env_name:
            raise ConfigError(f"{item.key('secret_env')}: environment variable names")
        value = environ.environ.get(env_name, "").strip()
        if environ.required:
            _check_secret(item, environ, env_name, value, kind)
        if value:
            secrets.append(value)
    return tuple(secrets)


def _check_secret(item: Reader, environ: Secrets, env_name: str, value: str, kind: str) -> None:
    if not value:
        raise ConfigError(f"{item.key('secret_env')}: environment variable {env_name} is not set")
    try:
        standard = kind == "standard_webhooks"  # its own floor: 24-64 bytes once decoded
        check_shared_secret(
            env_name,
            value,
            example_allowed=environ.example_allowed,
            min_chars=0 if standard else SHARED_SECRET_MIN_CHARS,
        )
        if standard and value not in EXAMPLE_SECRETS:
            check_standard_webhooks_secret(env_name, value)
    except ConfigError as exc:
        raise ConfigError(f"{item.key('secret_env')}: {exc}") from None
