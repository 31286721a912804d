"""What a secret must be before the service starts with it: no placeholder, no value below its format's floor.

Every check names the environment variable and never prints the value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from ingest.errors import ConfigError

# Words that only a template or an example holds (compared case-insensitively, anywhere in the value).
PLACEHOLDER_WORDS = (
    "replace",
    "changeme",
    "change-me",
    "change_me",
    "placeholder",
    "example",
    "dummy",
    "todo",
)
# The README's example secret: fine for the embedded development default, refused everywhere else.
EXAMPLE_SECRETS = frozenset({"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
PEPPER_MIN_CHARS = 32
# A shared secret below this length is guessable; providers issue longer ones (32+ characters).
SHARED_SECRET_MIN_CHARS = 8
# Standard Webhooks: "secrets should be between 24 bytes and 64 bytes" (whsec_ + base64).
WHSEC_MIN_BYTES, WHSEC_MAX_BYTES = 24, 64
# The SHA-256 of an empty token, and of a token that is a placeholder word, never verify a real caller.
_WEAK_TOKEN_HASHES = frozenset(
    hashlib.sha256(word.encode()).hexdigest() for word in ("", *PLACEHOLDER_WORDS, "token", "secret", "admin")
)


def _placeholder(value: str) -> bool:
    folded = value.casefold()
    return any(word in folded for word in PLACEHOLDER_WORDS)


def check_shared_secret(
    env_name: str, value: str, *, example_allowed: bool, min_chars: int = SHARED_SECRET_MIN_CHARS
) -> None:
    """A provider's or a partner's secret: not a placeholder, not the README's example, long enough."""
    if value in EXAMPLE_SECRETS:
        if example_allowed:
            return
        raise ConfigError(
            f"{env_name}: holds the README's example secret, which is public; "
            'generate one (printf whsec_%s "$(openssl rand -base64 32)")'
        )
    if _placeholder(value):
        raise ConfigError(f"{env_name}: holds a placeholder, not a secret")
    if len(value) < min_chars:
        raise ConfigError(f"{env_name}: shorter than {min_chars} characters")


def check_standard_webhooks_secret(env_name: str, value: str) -> None:
    """A Standard Webhooks secret: whsec_ (optional) + base64 of 24 to 64 bytes."""
    encoded = value.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{env_name}: not a Standard Webhooks secret (whsec_ + base64)") from None
    if not WHSEC_MIN_BYTES <= len(key) <= WHSEC_MAX_BYTES:
        raise ConfigError(
            f"{env_name}: a Standard Webhooks secret decodes to {WHSEC_MIN_BYTES}-{WHSEC_MAX_BYTES} bytes, "
            f"this one to {len(key)}"
        )


def check_pepper(value: str) -> None:
    """INGEST_PEPPER: at least 32 characters, not a placeholder."""
    if _placeholder(value) or value in EXAMPLE_SECRETS:
        raise ConfigError("INGEST_PEPPER: holds a placeholder, not a secret (openssl rand -hex 32)")
    if len(value) < PEPPER_MIN_CHARS:
        raise ConfigError(f"INGEST_PEPPER: shorter than {PEPPER_MIN_CHARS} characters (openssl rand -hex 32)")


def token_digest(env_name: str, value: str) -> bytes:
    """An admin token's hex SHA-256, as `sha256sum` prints it or bare; refused when it is a known weak one."""
    digest = value.strip().lower().removesuffix("-").strip()  # `printf %s "$T" | sha256sum` adds "  -"
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):  # noqa: PLR2004 - hex SHA-256
        raise ConfigError(f'{env_name}: must hold a hex SHA-256 (printf %s "$TOKEN" | sha256sum)')
    if digest in _WEAK_TOKEN_HASHES:
        raise ConfigError(f"{env_name}: the SHA-256 of an empty or placeholder token")
    return bytes.fromhex(digest)
