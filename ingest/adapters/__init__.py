"""Provider adapters: one module per config `format`, each exporting `ADAPTER`.

The registry is the explicit mapping below: a new provider module is added here
by hand, and its format name to `ingest.config.FORMATS` (a test checks the two agree).
"""

from __future__ import annotations

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
