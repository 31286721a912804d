"""Issue 16: provider deliveries that can never be stored are acknowledged as ignored, and counted.

End to end through the app, on the providers' documented payload shapes (the fixtures named in
tests/adapters/test_<provider>.py): the status the provider counts as delivered, an `ignored`
body with its reason, and ingest_ignored_deliveries_total{source, reason} incremented. Then the
dashboard and the alert that watch those counters (promtool when it is installed).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingest.metrics import create_metrics
from tests.adapters import test_intercom, test_tally, test_tawkto, test_typeform, test_webflow
from tests.adapters._metrics import metric_value

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def webflow_blank_email_and_bad_phone() -> tuple[str, bytes, dict[str, str]]:
    # The case: e-mail left blank, a phone that does not parse (the sample's 555 number).
    payload = test_webflow.contact_us(email="")
    body = test_webflow.compact(payload)
    return test_webflow.URL, body, test_webflow.sign(body)


def tally_without_contact_fields() -> tuple[str, bytes, dict[str, str]]:
    payload = test_tally.sample()
    payload["data"]["fields"] = [
        f for f in payload["data"]["fields"] if f["type"] not in ("INPUT_EMAIL", "INPUT_PHONE_NUMBER")
    ]
    body, headers = test_tally.signed(payload)
    return test_tally.URL, body, headers


def typeform_with_an_invalid_email() -> tuple[str, bytes, dict[str, str]]:
    payload = test_typeform.sample()
    for answer in payload["form_response"]["answers"]:
        if answer["type"] == "email":
            answer["email"] = "laura at example"
    body, headers = test_typeform.signed(payload)
    return test_typeform.URL, body, headers


def intercom_item_in_no_known_version() -> tuple[str, bytes, dict[str, str]]:
    payload = copy.deepcopy(test_intercom.API1)
    del payload["data"]["item"]["conversation_message"]
    body = json.dumps(payload).encode()
    return test_intercom.URL, body, test_intercom.signed(body)


def tawk_prechat_with_the_option_off() -> tuple[str, bytes, dict[str, str]]:
    body = test_tawkto.CHAT_START_PRECHAT
    return test_tawkto.URL, body, test_tawkto.signed(body)


CASES: list[tuple[Callable[[], Any], Callable[[], tuple[str, bytes, dict[str, str]]], str, int, str]] = [
    (
        test_webflow.webflow_config,
        webflow_blank_email_and_bad_phone,
        "webflow-contact",
        200,
        "invalid_contact_details",
    ),
    (test_tally.tally_config, tally_without_contact_fields, "tally-contact", 202, "no_contact_details"),
    (
        test_typeform.typeform_config,
        typeform_with_an_invalid_email,
        "city-survey",
        202,
        "invalid_contact_details",
    ),
    (
        test_intercom.intercom_config,
        intercom_item_in_no_known_version,
        "intercom",
        202,
        "unsupported_payload_version",
    ),
    (test_tawkto.tawk_config, tawk_prechat_with_the_option_off, "tawk", 202, "no_contact_details"),
]


@pytest.mark.parametrize(
    ("config", "delivery", "source", "status", "reason"),
    CASES,
    ids=["webflow", "tally", "typeform", "intercom", "tawkto"],
)
async def test_a_delivery_that_can_never_succeed_is_acknowledged_ignored_and_counted(
    make_client, db, config, delivery, source, status, reason
):
    client = await make_client(config())
    url, body, headers = delivery()
    response = await client.post(url, data=body, headers=headers)
    assert response.status == status  # what the provider counts as delivered: it will not retry
    assert await response.json() == {"status": "ignored", "reason": reason}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0
    assert await metric_value(client, "ingest_ignored_deliveries_total", source=source, reason=reason) == 1
    channel = "chat" if url.startswith("/v1/chats/") else "form"
    labels = {"source": source, "channel": channel, "outcome": "ignored"}
    assert await metric_value(client, "ingest_submissions_total", **labels) == 1
    # The same delivery again is acknowledged again (nothing was stored to be a duplicate of).
    assert (await client.post(url, data=body, headers=headers)).status == status
    assert await metric_value(client, "ingest_ignored_deliveries_total", source=source, reason=reason) == 2


async def test_browser_and_canonical_json_sources_stay_strict(client):
    # DESIGN §8: their sender is a person or a partner who can fix the input.
    from tests.support import sign_standard

    body = json.dumps({"name": "Maija", "email": "not-an-address"}).encode()
    response = await client.post("/v1/forms/partner-forms", data=body, headers=sign_standard(body))
    assert response.status == 422


def test_the_dashboard_and_the_alert_watch_the_new_counters_by_their_exported_names():
    # Labelled counters export no sample before their first increment: check the families.
    families = {m.name for m in create_metrics().registry.collect()}
    assert {"ingest_ignored_deliveries", "ingest_mapped_field_absent"} <= families
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert "ingest_ignored_deliveries_total" in exprs
    assert "ingest_mapped_field_absent_total" in exprs
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    groups = yaml.safe_load((DEPLOY / "prometheus-alerts.yaml").read_text())["groups"]
    [drops] = [g for g in groups if g["name"] == "qualitydesk-ingest-provider-drops"]
    alerts = {r["alert"]: r for r in drops["rules"] if "alert" in r}
    assert set(alerts) == {"IngestIgnoredShareJump", "IngestMappedFieldAbsentJump"}
    assert all(r["labels"]["severity"] and r["annotations"]["summary"] for r in alerts.values())


PROMTOOL = shutil.which("promtool") or os.environ.get("PROMTOOL")
PROMTOOL_MISSING = "promtool not installed (apt-get install prometheus, or PROMTOOL=/path/to/promtool)"
# CI (.ci/run) sets INGEST_REQUIRE_ALL_TESTS=1 and fetches promtool: there it runs or fails.
needs_promtool = pytest.mark.skipif(
    not (PROMTOOL and Path(PROMTOOL).is_file()) and os.environ.get("INGEST_REQUIRE_ALL_TESTS") != "1",
    reason=PROMTOOL_MISSING,
)


@needs_promtool
def test_the_alert_rules_pass_promtool():
    assert PROMTOOL and Path(PROMTOOL).is_file(), f"{PROMTOOL_MISSING} (INGEST_REQUIRE_ALL_TESTS=1)"
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(DEPLOY / "prometheus-alerts.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _series(
    source: str, created_per_minute: int, ignored_per_minute: int, minutes: int, jump_at: int
) -> list:
    """Counter series: steady traffic, and from `jump_at` on, half of it ignored."""
    created, ignored = [], []
    total_created = total_ignored = 0
    for minute in range(minutes):
        if minute >= jump_at:
            total_ignored += ignored_per_minute
        total_created += created_per_minute
        created.append(str(total_created))
        ignored.append(str(total_ignored))
    return [
        {
            "series": f'ingest_submissions_total{{source="{source}",channel="form",outcome="created"}}',
            "values": " ".join(created),
        },
        {
            "series": f'ingest_submissions_total{{source="{source}",channel="form",outcome="ignored"}}',
            "values": " ".join(ignored),
        },
        {
            "series": f'ingest_ignored_deliveries_total{{source="{source}",reason="invalid_contact_details"}}',
            "values": " ".join(ignored),
        },
    ]


@needs_promtool
def test_the_ignored_share_alert_fires_on_a_jump_and_not_on_a_steady_source(tmp_path):
    assert PROMTOOL and Path(PROMTOOL).is_file(), f"{PROMTOOL_MISSING} (INGEST_REQUIRE_ALL_TESTS=1)"
    minutes = 240
    test = {
        "rule_files": [str(DEPLOY / "prometheus-alerts.yaml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                # webflow: 10 a minute, ignored from minute 120 on; steady: never ignored.
                "input_series": _series("webflow", 10, 10, minutes, 120)
                + _series("steady", 10, 0, minutes, 0),
                "alert_rule_test": [
                    {"eval_time": "100m", "alertname": "IngestIgnoredShareJump", "exp_alerts": []},
                    {
                        "eval_time": "230m",
                        "alertname": "IngestIgnoredShareJump",
                        "exp_alerts": [
                            {
                                "exp_labels": {"source": "webflow", "severity": "ticket"},
                                "exp_annotations": {
                                    "summary": "webflow ignores 50% of its deliveries, twice its usual share:"
                                    " did the provider change its payload? (ingest_ignored_deliveries_total by reason)"
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "ignored_share_test.yaml"
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
