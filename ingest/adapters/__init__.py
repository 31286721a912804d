"""Provider adapters: one module per config `format`, registered by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest.adapters.html import HtmlAdapter
from ingest.adapters.json import JsonAdapter

if TYPE_CHECKING:
    from ingest.adapters.base import Adapter

ADAPTERS: dict[str, Adapter] = {
    adapter.name: adapter
    for adapter in (
        HtmlAdapter(),
        JsonAdapter(),
    )
}
