"""The record of processing activities (GDPR Art. 30), generated from the configuration."""

from __future__ import annotations

from ingest.config import Config

CATEGORIES = (
    "Identification and contact data: first and last name, e-mail address, phone number",
    "The content of the person's message (form or first chat message)",
    "Consent records: which consent text was shown, granted or not, when, through which source",
)
SECURITY_MEASURES = (
    (
        "Minimisation at intake: every field but name, e-mail, phone and message is dropped "
        "before storage or logging"
    ),
    "Each source authenticated (HMAC signatures or shared secrets, constant-time comparison, replay window)",
    "Browser forms accepted only from configured origins; honeypot and rate limits against abuse",
    "Secrets only from the environment; admin API with named bearer tokens (SHA-256 stored) and scopes",
    "CRM access through read-only views with a dedicated role (crm_reader); no access to raw tables",
    "Logs, metrics and error bodies carry no personal data (allow-list logging, tested)",
    "Append-only, hash-chained consent events and audit log; `ingest audit verify` detects tampering",
    "Direct-marketing objections kept as keyed hashes (HMAC with a secret pepper), honoured after erasure",
    "Retention enforced by `ingest purge` (periodic, one replica at a time)",
)


UNNAMED_CONTROLLER = "not configured (set `controller` in the configuration)"


def render(config: Config) -> str:
    """The record as Markdown; the controller is the configuration's `controller`."""
    controller = config.controller or UNNAMED_CONTROLLER
    lines = [
        "# Record of processing activities (GDPR Art. 30)",
        "",
        f"Controller: {controller}. Processing: website contact forms and live chat, via QualityDesk Ingest.",
        f"Privacy notice version: {config.notice_version}"
        + (f" ({config.notice_url})" if config.notice_url else ""),
        "",
        "## Purposes, lawful bases and retention",
        "",
        "| purpose | lawful basis | retention after last activity |",
        "|---|---|---|",
    ]
    lines += [f"| {p.name} | {p.lawful_basis} | {p.retention_days} days |" for p in config.purposes.values()]
    lines += [
        "",
        "## Categories of data subjects",
        "",
        "- Website visitors who submit a contact form",
        "- Chat visitors who leave an e-mail or phone number",
        "- Existing and prospective customers",
        "",
        "## Categories of personal data",
        "",
    ]
    lines += [f"- {c}" for c in CATEGORIES]
    lines += ["", "## Consent texts", ""]
    lines += [
        f'- `{c.consent_id}` ({c.purpose}): "{c.text}" (sha256 {c.text_sha256[:16]}...)'
        for c in config.consents.values()
    ] or ["- none configured"]
    lines += [
        "",
        "## Sources (collection points)",
        "",
        "| source | channel | format | purposes |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s.name} | {s.channel} | {s.format} | {', '.join(s.purposes)} |" for s in config.sources.values()
    ]
    providers = sorted({s.format for s in config.sources.values()} - {"html", "json"})
    lines += [
        "",
        "## Recipients",
        "",
        (
            f"- The CRM of {config.controller or 'the controller'} (entitled staff), "
            "through the read-only `crm` views"
        ),
        "- Processors delivering the data to us: " + (", ".join(providers) if providers else "none"),
        "",
        "## Transfers to third countries",
        "",
        "- None by this service; see each processor's terms for the providers listed above.",
        "",
        "## Technical and organisational security measures (Art. 32)",
        "",
    ]
    lines += [f"- {m}" for m in SECURITY_MEASURES]
    return "\n".join(lines) + "\n"
