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
    """Validate raw fields; raise ValidationError with per-field messages.

    The common case (every field a string, or absent or null, and all of them valid)
    is checked by calling the fields' normalisers directly; anything else, and every
    failure with its messages, goes through the schema itself. Both give the same
    result on every input (tests/test_normalise_fast.py, over a generated corpus).
    """
    fast = _load_common(schema.default_region, raw)
    if fast is not None:
        return fast
    submission = schema.load(dict(raw))
    if not isinstance(submission, Submission):  # pragma: no cover - post_load guarantees it
        raise TypeError("schema returned an unexpected type")
    return submission


_TEXT_FIELDS: tuple[tuple[str, Callable[[str], str | None]], ...] = (
    ("name", normalise.name),
    ("first_name", normalise.name),
    ("last_name", normalise.name),
    ("email", normalise.email),
    ("message", normalise.message),
)


def _load_common(default_region: str, raw: Mapping[str, object]) -> Submission | None:
    """SubmissionSchema.load for a valid delivery of strings; None for anything else."""
    values: dict[str, str | None] = {}
    try:
        for key, normaliser in _TEXT_FIELDS:
            value = raw.get(key)
            if value is not None and type(value) is not str:
                return None
            values[key] = None if value is None else normaliser(value)
        phone = raw.get("phone")
        if phone is not None and type(phone) is not str:
            return None
        values["phone"] = None if phone is None else normalise.phone(phone, default_region)
    except ValidationError:
        return None  # the schema says what is wrong, in its own words
    first, last = values["first_name"], values["last_name"]
    full_name = values["name"] or " ".join(part for part in (first, last) if part) or None
    if not values["name"] and full_name is not None and len(full_name) > normalise.NAME_MAX:
        return None
    return Submission(name=full_name, email=values["email"], phone=values["phone"], message=values["message"])
