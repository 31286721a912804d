"""Allow-list schemas: only name, e-mail, phone and message survive validation."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validates_schema

from ingest import normalise
from ingest.domain import Submission


class Text(fields.Field):  # type: ignore[type-arg]
    """A scalar text answer: strings, or numbers that providers send for phone fields."""

    default_error_messages = {"invalid": "Not a valid string."}  # noqa: RUF012 - marshmallow API

    def __init__(self, normaliser: Callable[[str], str | None], **kwargs: Any) -> None:
        super().__init__(load_default=None, allow_none=True, **kwargs)
        self.normaliser = normaliser

    def _deserialize(
        self,
        value: Any,
        attr: str | None,
        data: Mapping[str, Any] | None,
        **kwargs: Any,
    ) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.make_error("invalid")
        return self.normaliser(value if isinstance(value, str) else _number_text(value))


class Phone(Text):
    """A phone number, parsed with the schema's default region."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self._unused, **kwargs)

    @staticmethod
    def _unused(value: str) -> str | None:  # pragma: no cover - _deserialize overrides
        return value

    def _deserialize(
        self,
        value: Any,
        attr: str | None,
        data: Mapping[str, Any] | None,
        **kwargs: Any,
    ) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.make_error("invalid")
        text = value if isinstance(value, str) else _number_text(value)
        return normalise.phone(text, getattr(self.parent, "default_region", "FI"))


def _number_text(value: float) -> str:
    # 358401234567.0 from a JSON float must read as digits, not "3.58e+11".
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError("Not a valid string.")
        if value.is_integer():
            value = int(value)
    try:
        return str(value)
    except ValueError:  # an integer past Python's 4300-digit conversion limit
        raise ValidationError("Not a valid string.") from None


class SubmissionSchema(Schema):
    """The canonical submission; every other key, at any depth, is excluded."""

    class Meta:
        """Unknown keys are dropped, never stored."""

        unknown = EXCLUDE

    name = Text(normalise.name)
    first_name = Text(normalise.name)
    last_name = Text(normalise.name)
    email = Text(normalise.email)
    phone = Phone()
    message = Text(normalise.message)

    def __init__(self, default_region: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.default_region = default_region

    @validates_schema
    def _full_name_fits(self, data: Mapping[str, Any], **_: Any) -> None:
        if not data.get("name") and (data.get("first_name") or data.get("last_name")):
            full = " ".join(p for p in (data.get("first_name"), data.get("last_name")) if p)
            if len(full) > normalise.NAME_MAX:
                raise ValidationError(f"Longer than {normalise.NAME_MAX} characters.", "name")

    @post_load
    def _to_submission(self, data: Mapping[str, Any], **_: Any) -> Submission:
        full_name = (
            data.get("name")
            or " ".join(part for part in (data.get("first_name"), data.get("last_name")) if part)
            or None
        )
        return Submission(
            name=full_name,
            email=data.get("email"),
            phone=data.get("phone"),
            message=data.get("message"),
        )


CONTACT_REQUIRED = "An e-mail address or a phone number is required."


def load_submission(schema: SubmissionSchema, raw: Mapping[str, object]) -> Submission:
    """Validate raw fields; raise ValidationError with per-field messages."""
    submission = schema.load(dict(raw))
    if not isinstance(submission, Submission):  # pragma: no cover - post_load guarantees it
        raise TypeError("schema returned an unexpected type")
    return submission
