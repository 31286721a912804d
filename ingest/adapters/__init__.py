"""Provider adapters: one module per config `format`, each exporting `ADAPTER`.

The registry is every module of this package that defines `ADAPTER`; its
`name` is the `format` a source names in the config.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.adapters.base import Adapter


def _discover() -> dict[str, Adapter]:
    found: dict[str, Adapter] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        adapter = getattr(module, "ADAPTER", None)
        if adapter is not None:
            if adapter.name in found:
                raise RuntimeError(f"two adapters are named {adapter.name!r}")
            found[adapter.name] = adapter
    return found


ADAPTERS: dict[str, Adapter] = _discover()
