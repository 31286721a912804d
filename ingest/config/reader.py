"""Typed access to a TOML table that names the key path in every error, and shared value checks."""

from __future__ import annotations

import re
from typing import Any, cast

from ingest.errors import ConfigError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Reader:
    """Typed access to one TOML table that reports errors by key path."""

    def __init__(self, table: object, path: str) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{path or 'top level'}: must be a table")
        self.table = cast("dict[str, Any]", table)
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        """The key path of `name` in this table, as errors name it."""
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        """The value of `name`, of `kind`; `default` if absent (required when no default)."""
        self.used.add(name)
        if name not in self.table:
            if default is ...:
                raise ConfigError(f"{self.key(name)}: required")
            return default
        value = self.table[name]
        # bool is an int in Python; a count given as `true` is a mistake.
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"{self.key(name)}: expected {kind_name(kind)}")
        return value

    def string_list(self, name: str, default: Any = ...) -> list[str]:
        """A list of strings."""
        value = self.get(name, list, default)
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{self.key(name)}: expected a list of strings")
        return list(value)

    def string_map(self, name: str) -> dict[str, str]:
        """A table of strings (empty if absent)."""
        value = self.get(name, dict, {})
        for sub, item in value.items():
            if not isinstance(item, str):
                raise ConfigError(f"{self.key(name)}.{sub}: expected a string")
        return dict(value)

    def sub(self, name: str) -> Reader:
        """The sub-table `name` (empty if absent)."""
        self.used.add(name)
        return Reader(self.table.get(name, {}), self.key(name))

    def reject_unknown(self, allowed_extra: tuple[str, ...] = ()) -> None:
        """Refuse keys that nothing read: a misspelt key is an error, not a silent default."""
        unknown = sorted(set(self.table) - self.used - set(allowed_extra))
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key")


def kind_name(kind: type | tuple[type, ...]) -> str:
    """How an error names an expected TOML type."""
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


# The service's own address: scheme, host[:port] and a plain path, nothing a page or a
# link could read as markup or as another part of a URL (it is pasted into HTML).
_PUBLIC_URL = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~\-/]*)?$")


def check_public_url(value: str, key: str = "public_url") -> str:
    """`value` if it is a plain http(s) base address (no query, fragment, quotes or markup)."""
    if not _PUBLIC_URL.match(value):
        raise ConfigError(f"{key}: must be a plain absolute http(s) address, e.g. https://ingest.example.com")
    return value


def url_value(item: Reader, key: str) -> str | None:
    """An optional http(s) URL."""
    url = item.get(key, str, None)
    if url is not None and not re.match(r"^https?://\S+$", url):
        raise ConfigError(f"{item.key(key)}: must be an absolute http(s) URL")
    return cast("str | None", url)
