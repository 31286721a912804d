"""Purposes and consent decisions for one submission, from the source config and the person's choices."""

from __future__ import annotations

from collections.abc import Mapping

from ingest.config import Config, Source, consent_text
from ingest.domain import ConsentDecision, ConsentText, PurposeRecord, RawSubmission
from ingest.errors import ValidationFailed

# The words of a ticked checkbox or a "yes" answer (also read by adapters.mapping).
YES_WORDS = frozenset({"on", "true", "1", "yes", "y", "checked", "granted"})
_NO = frozenset({"", "off", "false", "0", "no", "n", "unchecked", "denied"})


def answer(value: object) -> bool | None:
    """Read a checkbox or boolean answer; None when it is neither."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in YES_WORDS:
            return True
        if text in _NO:
            return False
    if isinstance(value, list) and len(value) <= 1:
        return answer(value[0]) if value else False
    return None


def decide(config: Config, source: Source, raw: RawSubmission) -> tuple[ConsentDecision, ...]:
    """Return one decision per consent item shown (`purposes_for` turns them into purposes).

    Shown items are the source's configured consents plus any the payload names.
    Absent means not granted: marketing is never assumed.
    """
    texts: dict[str, ConsentText] = {cid: config.consents[cid] for cid in source.consent_fields.values()}
    errors: dict[str, list[str]] = {}
    for consent_id in raw.consents:
        if consent_id in texts:
            continue
        if consent_id in config.consents:
            texts[consent_id] = config.consents[consent_id]
        elif consent_id in raw.inline_consent_texts:
            purpose, words = raw.inline_consent_texts[consent_id]
            texts[consent_id] = consent_text(consent_id, purpose, words)
        else:
            errors["consents"] = ["Unknown consent id."]  # the id is theirs: not echoed
    decisions = []
    for consent_id, text in texts.items():
        granted = answer(raw.consents.get(consent_id))
        if granted is None:
            errors[f"consents.{consent_id[:100]}"] = ["Must be true or false."]
            continue
        decisions.append(ConsentDecision(consent=text, granted=granted))
    if errors:
        raise ValidationFailed(errors)
    return tuple(decisions)


def purposes_for(
    config: Config, source_purposes: tuple[str, ...], decisions: list[ConsentDecision]
) -> tuple[PurposeRecord, ...]:
    """The source's purposes plus the purpose of every consent granted."""
    names = list(source_purposes)
    names += [d.consent.purpose for d in decisions if d.granted and d.consent.purpose not in names]
    return tuple(_record(config.purposes, name) for name in names if name in config.purposes)


def _record(purposes: Mapping[str, object], name: str) -> PurposeRecord:
    purpose = purposes[name]
    return PurposeRecord(
        purpose=name,
        lawful_basis=getattr(purpose, "lawful_basis", "consent"),
        retention_days=getattr(purpose, "retention_days", 1),
    )
