"""Where a request's CPU time goes: each pipeline stage timed alone, in microseconds.

Run: .venv/bin/python bench/stages.py. No database or network: the stages a
request passes through before the commit, against the bare handler's own work
(parse JSON, build a JSON answer), so the ratios say what validation costs.
"""

from __future__ import annotations

import io
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog  # noqa: E402
from standardwebhooks import Webhook  # noqa: E402

from ingest import consent, normalise  # noqa: E402
from ingest.adapters.json import ADAPTER as JSON_ADAPTER  # noqa: E402
from ingest.config import parse_config  # noqa: E402
from ingest.domain import InboundRequest  # noqa: E402
from ingest.logs import configure_logging  # noqa: E402
from ingest.schemas import SubmissionSchema, load_submission  # noqa: E402
from ingest.service import IngestService  # noqa: E402

SECRET = "whsec_" + "YmVuY2htYXJrLXNlY3JldC1ub3QtZm9yLXByb2R1Y3Rpb24="  # the benchmark's own
CONFIG = parse_config(
    {
        "notice_version": "bench",
        "purposes": {
            "contact": {"lawful_basis": "legitimate_interest", "retention_days": 730},
            "direct_marketing": {"lawful_basis": "consent", "retention_days": 730},
        },
        "consents": {"marketing-email-v1": {"purpose": "direct_marketing", "text": "Yes, news by e-mail."}},
        "sources": {
            "bench": {"channel": "form", "format": "json", "secret_env": "S", "purposes": ["contact"]}
        },
    },
    {"S": SECRET},
)
PAYLOAD = {
    "name": "Maija Meikäläinen",
    "email": "maija@example.fi",
    "phone": "040 123 4567",
    "message": "Please call me about the offer.",
    "consents": {"marketing-email-v1": True},
}
BODY = json.dumps(PAYLOAD).encode()
NOW = datetime.now(UTC)


def timed(label: str, work: Callable[[], object], n: int = 20_000) -> float:
    for _ in range(n // 10):
        work()
    start = time.perf_counter()
    for _ in range(n):
        work()
    per_call = (time.perf_counter() - start) / n * 1e6
    print(f"{label:<44}{per_call:>9.1f} us")
    return per_call


def main() -> None:
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": Webhook(SECRET).sign("msg_1", datetime.now(UTC), BODY.decode()),
    }
    inbound = InboundRequest(
        headers=headers, query={}, body=BODY, content_type="application/json", received_at=datetime.now(UTC)
    )
    source = CONFIG.sources["bench"]
    schema = SubmissionSchema("FI")
    raw = JSON_ADAPTER.parse(source, inbound)[0]
    service = IngestService(CONFIG, None, "p" * 64)  # type: ignore[arg-type] # no pool: nothing is written
    submission = load_submission(schema, raw.fields)
    configure_logging(io.StringIO())
    log = structlog.get_logger("bench")

    print("stage (one request's worth of work)                  time")
    bare = timed(
        "bare: json.loads + json.dumps answer",
        lambda: json.dumps({"status": "created", "submission_id": str(uuid.uuid4())}) and json.loads(BODY),
    )
    stages = {
        "signature (Standard Webhooks verify)": lambda: Webhook(SECRET).verify(
            BODY, headers, json_parse=False
        ),
        "json adapter (verify + strict parse + pick)": lambda: JSON_ADAPTER.parse(source, inbound),
        "schema load (all four fields), marshmallow": lambda: schema.load(dict(raw.fields)),
        "validation as served (the fast path)": lambda: load_submission(schema, raw.fields),
        "  of which e-mail, email-validator": lambda: normalise.email_full("maija@example.fi"),
        "  of which e-mail, fast path (cached domain)": lambda: normalise.email("maija@example.fi"),
        "  of which phone (phonenumbers)": lambda: normalise.phone("040 123 4567", "FI"),
        "  of which name + message": lambda: (
            normalise.name("Maija Meikäläinen"),
            normalise.message("Please call me about the offer."),
        ),
        "consent + purposes": lambda: consent.decide(CONFIG, source, raw),
        "envelope (consent, mail plan, pseudonyms)": lambda: service.envelope(source, raw, submission, NOW),
        "request log line (structlog JSON)": lambda: log.info(
            "request", route="/v1/forms/{source}", status=201, latency_ms=1.0, source="bench"
        ),
    }
    total = 0.0
    for label, work in stages.items():
        cost = timed(label, work, 5_000)
        if not label.startswith(("  ", "signature", "schema load", "consent")):
            total += cost
    print(
        f"\nvalidation pipeline total (adapter + validation + envelope + log): {total:.0f} us "
        f"= {total / bare:.0f}x the bare handler's own work ({bare:.1f} us)"
    )
    print(
        "The bare handler's request also pays aiohttp's HTTP parsing and response, which the "
        "service pays too; the commit runs on PostgreSQL, largely outside this process."
    )


if __name__ == "__main__":
    main()
