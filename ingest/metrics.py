"""Prometheus metrics: labels are source names, routes, codes, never personal data.

Under `ingest serve` the values live in prometheus-client's multiprocess directory
(every worker's, summed or combined per gauge by its `multiprocess_mode`); in-process
(tests) each app keeps its own registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class Metrics:
    """The service's metrics, in a registry of its own (one per app)."""

    registry: CollectorRegistry
    submissions: Counter
    requests: Counter
    latency: Histogram
    batch_size: Histogram
    pool_in_use: Gauge
    signature_failures: Counter
    pending_chats: Gauge
    overdue_requests: Gauge
    purge_runs: Counter
    purge_last_completed: Gauge
    ledger_head_updated: Gauge
    ignored: Counter
    mapped_field_absent: Counter
    outbox_depth: Gauge
    outbox_oldest_age: Gauge
    mails: Counter
    # Labelled children already looked up, by metric and label values: the request path
    # asks for the same few on every request, and `labels()` validates and locks each time.
    # Bounded as the metrics' own children are: values are routes, codes and source names.
    _children: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict, repr=False)

    def child(self, metric: Counter | Histogram, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found


def create_metrics() -> Metrics:
    """Build a fresh registry with every metric."""
    registry = CollectorRegistry()
    return Metrics(
        registry=registry,
        submissions=Counter(
            "ingest_submissions",
            "Deliveries by source, channel and outcome (created, duplicate, ignored, decoy, rejected_<code>)",
            ["source", "channel", "outcome"],
            registry=registry,
        ),
        requests=Counter(
            "ingest_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=registry,
        ),
        latency=Histogram(
            "ingest_http_request_duration_seconds",
            "Request latency by route",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        ),
        batch_size=Histogram(
            "ingest_commit_batch_size",
            "Submissions committed per transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=registry,
        ),
        pool_in_use=Gauge(
            "ingest_db_pool_in_use",
            "Database connections in use",
            multiprocess_mode="livesum",  # served: the live workers' connections added up
            registry=registry,
        ),
        signature_failures=Counter(
            "ingest_signature_failures",
            "Requests refused for a bad signature, by source",
            ["source"],
            registry=registry,
        ),
        pending_chats=Gauge(
            "ingest_pending_chats",
            "Chat sessions waiting for contact details",
            # Every worker samples the same database: the latest sample of a live worker.
            multiprocess_mode="livemostrecent",
            registry=registry,
        ),
        overdue_requests=Gauge(
            "ingest_subject_requests_overdue",
            "Access/erasure/objection requests past their deadline",
            multiprocess_mode="livemostrecent",
            registry=registry,
        ),
        purge_runs=Counter(
            "ingest_purge_runs",
            "Retention purges by result (done, skipped, failed)",
            ["result"],
            registry=registry,
        ),
        purge_last_completed=Gauge(
            "ingest_purge_last_completed_timestamp_seconds",
            "When a retention purge last ran to completion, on any replica (Unix time)",
            multiprocess_mode="max",
            registry=registry,
        ),
        ledger_head_updated=Gauge(
            "ingest_ledger_head_timestamp_seconds",
            "When each ledger chain's head last moved, on any replica (Unix time); label: the chain's name",
            ["chain"],
            multiprocess_mode="max",
            registry=registry,
        ),
        ignored=Counter(
            "ingest_ignored_deliveries",
            "Deliveries acknowledged and not stored, by source and reason (a closed set of codes)",
            ["source", "reason"],
            registry=registry,
        ),
        mapped_field_absent=Counter(
            "ingest_mapped_field_absent",
            "Deliveries missing a field the source's mapping names, by source and config key (never a value)",
            ["source", "field"],
            registry=registry,
        ),
        outbox_depth=Gauge(
            "ingest_outbox_depth",
            "Mails waiting in the outbox (every replica sees the same table)",
            multiprocess_mode="max",
            registry=registry,
        ),
        outbox_oldest_age=Gauge(
            "ingest_outbox_oldest_age_seconds",
            "Age of the oldest mail still waiting to be handed over (0: none waits)",
            multiprocess_mode="max",
            registry=registry,
        ),
        mails=Counter(
            "ingest_mails",
            "Mails by kind (confirm, receipt, access) and outcome (sent, retry, failed)",
            ["kind", "outcome"],
            registry=registry,
        ),
    )
