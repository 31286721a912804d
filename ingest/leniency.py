"""Validation with the leniency policy: what a delivery may lose and still be stored.

Chats are lenient: an invalid field is dropped rather than refusing the callback
(providers retry or disable hooks that fail), so a chat with a mistyped e-mail but a
good phone still counts. Form providers' deliveries (`drop_invalid`) are lenient too,
as long as an e-mail or phone survives. A form posted by a browser is strict: a 422
that says which field to correct.
"""

from __future__ import annotations

from marshmallow import ValidationError

from ingest.domain import RawSubmission, Submission
from ingest.errors import ValidationFailed
from ingest.schemas import SubmissionSchema, load_submission


def _field_messages(exc: ValidationError) -> dict[str, list[str]]:
    """Flatten marshmallow's messages to field -> list of strings (no values)."""
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    flat: dict[str, list[str]] = {}
    for name, value in messages.items():
        items = list(value.values()) if isinstance(value, dict) else value
        flat[str(name)] = [str(v) for v in items] if isinstance(items, list) else [str(items)]
    return flat


def validate(schema: SubmissionSchema, raw: RawSubmission) -> Submission:
    """Validate and minimise `raw`'s fields; drop invalid ones where the delivery allows it."""
    try:
        return load_submission(schema, raw.fields)
    except ValidationError as exc:
        messages = _field_messages(exc)
        if not (raw.optional_contact or raw.drop_invalid):
            raise ValidationFailed(messages) from None
        bad = set(messages)
        if "name" in bad:
            bad |= {"first_name", "last_name"}
        kept = {k: v for k, v in raw.fields.items() if k not in bad}
        try:
            submission = load_submission(schema, kept)
        except ValidationError:
            submission = Submission(name=None, email=None, phone=None, message=None)
        if not raw.optional_contact and submission.email is None and submission.phone is None:
            raise ValidationFailed(messages) from None  # says why the contact fields failed
        return submission
