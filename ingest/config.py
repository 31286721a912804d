"""Load and validate ingest.toml once, into frozen objects; errors name the key path."""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import phonenumbers

from ingest.domain import Channel, ConsentText
from ingest.errors import ConfigError
from ingest.secrets import (
    EXAMPLE_SECRETS,
    SHARED_SECRET_MIN_CHARS,
    check_shared_secret,
    check_standard_webhooks_secret,
    token_digest,
)

NOTICE_PURPOSES = (
    "contact",
    "customer_relationship",
    "services",
    "business_development",
    "direct_marketing",
)
LAWFUL_BASES = (
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interest",
)
ADMIN_SCOPES = ("export", "erase", "opt-out", "purge")
CANONICAL_FIELDS = ("name", "first_name", "last_name", "email", "phone", "message")


# The `format` a source may name: one adapter each in ingest.adapters.ADAPTERS (a test keeps
# the two equal), listed here so the format is checked without importing the adapters.
@dataclass(frozen=True, slots=True)
class Format:
    """What a config `format` needs of a source; its adapter (ingest/adapters/) reads the same.

    secret_kind: how the secrets are checked, "standard_webhooks" (whsec_, 24-64 bytes) or
    "shared" (a provider-issued or chosen secret: no placeholder, long enough).
    """

    channels: frozenset[Channel]
    needs_secret: bool = True  # html: browsers cannot hold one; the Origin is checked instead
    needs_origin: bool = False
    secret_kind: str = "shared"  # noqa: S105 - a kind of secret, not a secret


_FORM: frozenset[Channel] = frozenset({"form"})
_CHAT: frozenset[Channel] = frozenset({"chat"})
# Every format, checked here without importing an adapter; ingest/adapters/__init__.py maps
# each to its adapter (a test checks the two agree).
FORMATS: Mapping[str, Format] = {
    "crisp": Format(_CHAT),
    "html": Format(_FORM, needs_secret=False, needs_origin=True),
    "hubspot": Format(_FORM, secret_kind="standard_webhooks"),  # noqa: S106 - a kind, not a secret
    "intercom": Format(_CHAT),
    "jotform": Format(_FORM),
    "json": Format(_FORM | _CHAT, secret_kind="standard_webhooks"),  # noqa: S106 - a kind, not a secret
    "livechat": Format(_CHAT),
    "netlify": Format(_FORM),
    "tally": Format(_FORM),
    "tawkto": Format(_CHAT),
    "typeform": Format(_FORM),
    "webflow": Format(_FORM),
    "zendesk": Format(_CHAT),
}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_CONSENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


@dataclass(frozen=True, slots=True)
class Purpose:
    """A purpose of the privacy notice and how long its data may be kept."""

    name: str
    lawful_basis: str
    retention_days: int


@dataclass(frozen=True, slots=True)
class Source:
    """One place submissions come from: a form or a chat integration."""

    name: str
    channel: Channel
    format: str
    purposes: tuple[str, ...]
    secrets: tuple[str, ...] = ()
    # The names in secret_env (no values): `ingest try` and messages name the variable.
    secret_envs: tuple[str, ...] = ()
    allowed_origins: frozenset[str] = frozenset()
    consent_fields: Mapping[str, str] = field(default_factory=dict)
    field_map: Mapping[str, str] = field(default_factory=dict)
    success_url: str | None = None
    error_url: str | None = None
    honeypot_field: str = "_gotcha"
    min_fill_seconds: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)
    max_body_bytes: int | None = None  # None: the format's default, else [limits] max_body_bytes
    # Deliveries are signed or carry a shared secret (every format but html): only such a
    # source may change a known contact's name or phone (see ingest/store/submissions.py).
    authenticated: bool = True


@dataclass(frozen=True, slots=True)
class AdminToken:
    """A named admin bearer token: only its SHA-256 is known to the service."""

    name: str
    sha256: bytes
    scopes: frozenset[str]


MAX_BODY_BYTES_CAP = 16 * 1024 * 1024  # a body is held in memory whole
# The documented maxima of the link lifetimes in [limits] (see Limits).
LINK_DAYS_MAXIMUM = {"confirm_link_days": 30, "unsubscribe_link_days": 365}
DEADLINE_RANGE = (0.5, 60.0)  # [limits] request_deadline_seconds, in seconds


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits and batching knobs."""

    max_body_bytes: int = 64 * 1024
    body_timeout_seconds: float = 10.0
    batch_max_rows: int = 200
    batch_max_wait_ms: float = 2.0
    rate_per_client_per_minute: int = 60
    rate_per_source_per_second: int = 500
    max_concurrent_requests: int = 512
    # Per worker, per client address: requests in progress (taken before the body is
    # read, so one address trickling bodies cannot hold the whole worker), and failed
    # authentications (bad signature or secret, or a body refused before it could be
    # checked; admin API: a bad bearer token) before that address gets 429 unread.
    max_concurrent_per_client: int = 32
    auth_failures_per_client_per_minute: int = 60
    pending_chat_ttl_hours: int = 24
    maintenance_interval_seconds: int = 3600
    # Every submission, admin and link request is answered within this long of its
    # arrival: committed, or 503 + Retry-After (DESIGN §8). From 0.5 to 60 seconds.
    request_deadline_seconds: float = 3.0
    # Behind a reverse proxy: how many X-Forwarded-For hops to trust for the client
    # address used by the per-client rate limit (0: the TCP peer).
    trusted_proxy_hops: int = 0
    # Signed links (`ingest confirm-link` / `unsubscribe-link`): the lifetime they get by
    # default, and the longest the service accepts (a link made to last longer is refused).
    # confirm_link_days: default 7, at most 30 (it lifts an objection, so it should not linger);
    # unsubscribe_link_days: default 60, at most 365 (it stays idempotent, but still expires).
    confirm_link_days: int = 7
    unsubscribe_link_days: int = 60


@dataclass(frozen=True, slots=True)
class Config:
    """The validated configuration."""

    notice_version: str
    default_region: str
    purposes: Mapping[str, Purpose]
    consents: Mapping[str, ConsentText]
    sources: Mapping[str, Source]
    admin_tokens: tuple[AdminToken, ...]
    limits: Limits
    notice_url: str | None = None
    public_url: str | None = None
    # Who is responsible for the data (GDPR controller), as pages and `ingest ropa` name it.
    controller: str | None = None
    path: str | None = None


def consent_text(consent_id: str, purpose: str, text: str) -> ConsentText:
    """Build a content-addressed consent text (NFC-normalised words and their SHA-256)."""
    words = unicodedata.normalize("NFC", text)
    digest = hashlib.sha256(words.encode("utf-8")).hexdigest()
    return ConsentText(consent_id=consent_id, purpose=purpose, text=words, text_sha256=digest)


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
    here = Path(__file__).resolve().parent
    for candidate in (here / "ingest.example.toml", here.parent / "deploy" / "ingest.example.toml"):
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


class _Reader:
    """Typed access to one TOML table that reports errors by key path."""

    def __init__(self, table: object, path: str) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{path or 'top level'}: must be a table")
        self.table = cast("dict[str, Any]", table)
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(name)
        if name not in self.table:
            if default is ...:
                raise ConfigError(f"{self.key(name)}: required")
            return default
        value = self.table[name]
        # bool is an int in Python; a count given as `true` is a mistake.
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"{self.key(name)}: expected {_kind_name(kind)}")
        return value

    def string_list(self, name: str, default: Any = ...) -> list[str]:
        value = self.get(name, list, default)
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{self.key(name)}: expected a list of strings")
        return list(value)

    def string_map(self, name: str) -> dict[str, str]:
        value = self.get(name, dict, {})
        for sub, item in value.items():
            if not isinstance(item, str):
                raise ConfigError(f"{self.key(name)}.{sub}: expected a string")
        return dict(value)

    def sub(self, name: str) -> _Reader:
        self.used.add(name)
        return _Reader(self.table.get(name, {}), self.key(name))

    def reject_unknown(self, allowed_extra: tuple[str, ...] = ()) -> None:
        unknown = sorted(set(self.table) - self.used - set(allowed_extra))
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a table",
        bool: "true or false",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_config(
    raw: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    example_secrets_allowed: bool = False,
    require_secrets: bool = True,
) -> Config:
    """Validate an already-parsed TOML document."""
    top = _Reader(dict(raw), "")
    notice_version = top.get("notice_version", str)
    if not notice_version.strip():
        raise ConfigError("notice_version: must not be empty")
    region = top.get("default_region", str, "FI")
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError("default_region: not a known ISO 3166 region code")
    notice_url = top.get("notice_url", str, None)
    public_url = _url(top, "public_url")
    if public_url is not None:
        check_public_url(public_url)
    controller = _controller(top)
    purposes = _purposes(top.sub("purposes"))
    consents = _consents(top.sub("consents"), purposes)
    sources = _sources(
        top.sub("sources"), purposes, consents, _Secrets(environ, example_secrets_allowed, require_secrets)
    )
    tokens = _admin_tokens(top.sub("admin_tokens"), environ, resolve=require_secrets)
    limits = _limits(top.sub("limits"))
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
    )


def _controller(top: _Reader) -> str | None:
    name = top.get("controller", str, None)
    if name is not None and (not name.strip() or len(name) > 200 or not name.isprintable()):  # noqa: PLR2004
        raise ConfigError("controller: the controller's name, 1 to 200 printable characters")
    return cast("str | None", name)


def _purposes(table: _Reader) -> dict[str, Purpose]:
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


def _consents(table: _Reader, purposes: Mapping[str, Purpose]) -> dict[str, ConsentText]:
    consents = {}
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
        item.reject_unknown()
        consents[consent_id] = consent_text(consent_id, purpose, text)
    return consents


def _sources(
    table: _Reader,
    purposes: Mapping[str, Purpose],
    consents: Mapping[str, ConsentText],
    environ: _Secrets,
) -> dict[str, Source]:
    sources = {}
    for name in table.table:
        if not _NAME_RE.match(name):
            raise ConfigError(f"{table.key(name)}: lower-case letters, digits, - and _ only")
        sources[name] = _source(name, table.sub(name), purposes, consents, environ)
    return sources


def _source(
    name: str,
    item: _Reader,
    purposes: Mapping[str, Purpose],
    consents: Mapping[str, ConsentText],
    environ: _Secrets,
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
        success_url=_url(item, "success_url"),
        error_url=_url(item, "error_url"),
        honeypot_field=item.get("honeypot_field", str, "_gotcha"),
        min_fill_seconds=float(item.get("min_fill_seconds", (int, float), 0)),
        options=item.get("options", dict, {}),
        max_body_bytes=_body_limit(item),
        authenticated=rules.needs_secret,
    )
    item.reject_unknown()
    return source


def _body_limit(item: _Reader) -> int | None:
    limit = item.get("max_body_bytes", int, None)
    if limit is not None and not 0 < limit <= MAX_BODY_BYTES_CAP:
        raise ConfigError(f"{item.key('max_body_bytes')}: from 1 to {MAX_BODY_BYTES_CAP} bytes")
    return cast("int | None", limit)


def _source_purposes(item: _Reader, purposes: Mapping[str, Purpose]) -> tuple[str, ...]:
    names = item.string_list("purposes")
    if not names:
        raise ConfigError(f"{item.key('purposes')}: at least one purpose")
    for purpose in names:
        if purpose not in purposes:
            raise ConfigError(f"{item.key('purposes')}: {purpose!r} is not defined in [purposes]")
    return tuple(names)


def _consent_fields(item: _Reader, consents: Mapping[str, ConsentText]) -> dict[str, str]:
    mapping = item.string_map("consent_fields")
    for form_field, consent_id in mapping.items():
        if consent_id not in consents:
            raise ConfigError(
                f"{item.key('consent_fields')}.{form_field}: no consent {consent_id!r} in [consents]"
            )
    return mapping


def _field_map(item: _Reader) -> dict[str, str]:
    mapping = item.string_map("fields")
    for canonical in mapping:
        if canonical not in CANONICAL_FIELDS:
            raise ConfigError(f"{item.key('fields')}.{canonical}: one of {', '.join(CANONICAL_FIELDS)}")
    return mapping


def _origins(item: _Reader) -> frozenset[str]:
    origins = item.string_list("allowed_origins", [])
    for origin in origins:
        if not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(
                f"{item.key('allowed_origins')}: {origin!r} is not an origin (scheme://host[:port])"
            )
    return frozenset(origins)


# The service's own address: scheme, host[:port] and a plain path, nothing a page or a
# link could read as markup or as another part of a URL (it is pasted into HTML).
_PUBLIC_URL = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~\-/]*)?$")


def check_public_url(value: str, key: str = "public_url") -> str:
    """`value` if it is a plain http(s) base address (no query, fragment, quotes or markup)."""
    if not _PUBLIC_URL.match(value):
        raise ConfigError(f"{key}: must be a plain absolute http(s) address, e.g. https://ingest.example.com")
    return value


def _url(item: _Reader, key: str) -> str | None:
    url = item.get(key, str, None)
    if url is not None and not re.match(r"^https?://\S+$", url):
        raise ConfigError(f"{item.key(key)}: must be an absolute http(s) URL")
    return cast("str | None", url)


@dataclass(frozen=True, slots=True)
class _Secrets:
    """Where source secrets come from, and whether the README's example secret may be one."""

    environ: Mapping[str, str]
    example_allowed: bool
    required: bool = True  # False: take what is set, unchecked (commands that verify nothing)


def _secret_envs(item: _Reader) -> tuple[str, ...]:
    names = item.table.get("secret_env", ())
    return (names,) if isinstance(names, str) else tuple(n for n in names if isinstance(n, str))


def _secrets(item: _Reader, environ: _Secrets, *, required: bool, kind: str) -> tuple[str, ...]:
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


def _check_secret(item: _Reader, environ: _Secrets, env_name: str, value: str, kind: str) -> None:
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


def _admin_tokens(table: _Reader, environ: Mapping[str, str], *, resolve: bool) -> tuple[AdminToken, ...]:
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


def _limits(table: _Reader) -> Limits:
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
