"""Read one sample of the app's /metrics, as Prometheus would scrape it."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families


async def metric_value(client: Any, name: str, **labels: str) -> float:
    """The value of sample `name` with exactly these labels, 0 when it was never set."""
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0
