"""Provider adapters: one module per config `format`, each exporting `ADAPTER`.

The registry is the explicit mapping below: a new provider module is added here
by hand, and its format name to `ingest.config.FORMATS` (a test checks the two agree).

Config is read in two steps: ingest.config parses and checks everything it can
without an adapter (the format's channels, secrets and origins are in FORMATS), then
`check_sources` asks each source's adapter about its own settings (options, mappings).
Whatever loads a config to use it calls both: `ingest/cli/main.py`, and
`create_app` (ingest/web/app.py) checks again, so no unchecked config serves.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ingest.adapters import (
    crisp,
    html,
    hubspot,
    intercom,
    jotform,
    livechat,
    netlify,
    tally,
    tawkto,
    typeform,
    webflow,
    zendesk,
)
from ingest.adapters import json as json_adapter

if TYPE_CHECKING:
    from ingest.adapters.base import Adapter
    from ingest.config import Config

ADAPTERS: dict[str, Adapter] = {
    "crisp": crisp.ADAPTER,
    "html": html.ADAPTER,
    "hubspot": hubspot.ADAPTER,
    "intercom": intercom.ADAPTER,
    "jotform": jotform.ADAPTER,
    "json": json_adapter.ADAPTER,
    "livechat": livechat.ADAPTER,
    "netlify": netlify.ADAPTER,
    "tally": tally.ADAPTER,
    "tawkto": tawkto.ADAPTER,
    "typeform": typeform.ADAPTER,
    "webflow": webflow.ADAPTER,
    "zendesk": zendesk.ADAPTER,
}

for _format, _adapter in ADAPTERS.items():
    if _adapter.name != _format:
        raise RuntimeError(f"adapter {_adapter.name!r} is registered as format {_format!r}")


def check_sources(config: Config) -> Config:
    """Ask each source's adapter whether its settings can work; ConfigError naming the key if not."""
    for source in config.sources.values():
        ADAPTERS[source.format].check_source(source, functools.partial(_key, f"sources.{source.name}"))
    return config


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}"
