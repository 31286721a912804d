"""The wording of mails and self-service pages (ingest/mail/texts.py), and the language choice."""

from __future__ import annotations

import string
import time

import pytest

from ingest.mail import texts
from ingest.mail.texts import LANGUAGES, pick_language, text

# Every key and exactly its placeholders, as the mails and pages use them.
KEYS: dict[str, frozenset[str]] = {
    "confirm_subject": frozenset({"controller"}),
    "confirm_body": frozenset({"controller", "consent_text", "link", "days"}),
    "receipt_subject": frozenset({"controller"}),
    "receipt_body": frozenset(
        {"controller", "contact", "consent_text", "granted_at", "source", "unsubscribe_link", "access_link"}
    ),
    "access_subject": frozenset({"controller"}),
    "access_body": frozenset({"controller", "link", "minutes"}),
    "page_access_title": frozenset(),
    "page_access_intro": frozenset({"controller"}),
    "page_email_label": frozenset(),
    "page_access_submit": frozenset(),
    "page_access_sent_title": frozenset(),
    "page_access_sent_body": frozenset(),
    "page_view_title": frozenset(),
    "page_view_intro": frozenset({"controller"}),
    "page_download_json": frozenset(),
    "page_object_button": frozenset(),
    "page_erase_button": frozenset(),
    "page_objected": frozenset(),
    "page_erase_requested": frozenset({"due"}),
    "page_erased": frozenset(),
    "page_link_invalid": frozenset(),
    "page_rate_limited": frozenset(),
    "page_field_name": frozenset(),
    "page_field_email": frozenset(),
    "page_field_phone": frozenset(),
    "page_field_message": frozenset(),
    "page_field_received": frozenset(),
    "page_field_source": frozenset(),
    "page_field_consents": frozenset(),
    "page_marketing_suppressed": frozenset(),
}

# Distinct sample values, each easy to find in the rendered text.
VALUES = {
    "controller": "Esimerkki Oy",
    "contact": "privacy@example.fi",
    "consent_text": "I want news and offers by e-mail.",
    "link": "https://example.fi/confirm/abc123",
    "days": "7",
    "granted_at": "2025-03-01 12:00 UTC",
    "source": "contact-form",
    "unsubscribe_link": "https://example.fi/unsubscribe/def456",
    "access_link": "https://example.fi/my-data",
    "minutes": "15",
    "due": "2025-04-01",
}

EVERY = [(language, key) for language in LANGUAGES for key in KEYS]
WITH_PLACEHOLDERS = [(language, key) for language, key in EVERY if KEYS[key]]


def placeholders(wording: str) -> frozenset[str]:
    fields = [parsed for parsed in string.Formatter().parse(wording) if parsed[1] is not None]
    # Bare names only: no positional fields, attribute access, conversion or format spec.
    for _, name, spec, conversion in fields:
        assert name and name.isidentifier() and not spec and conversion is None, wording
    return frozenset(name for _, name, _, _ in fields if name)


def test_languages():
    assert LANGUAGES == ("fi", "sv", "en")


def test_the_keys_are_exactly_the_listed_ones():
    assert set(texts._TEXTS) == set(KEYS)


@pytest.mark.parametrize("key", list(KEYS))
def test_every_key_in_every_language_with_the_same_placeholders(key):
    wordings = texts._TEXTS[key]
    assert set(wordings) == set(LANGUAGES)
    found = {language: placeholders(wording) for language, wording in wordings.items()}
    assert found == dict.fromkeys(LANGUAGES, KEYS[key])


@pytest.mark.parametrize(("language", "key"), EVERY)
def test_renders_plain_text_with_every_value_in_it(language, key):
    values = {name: VALUES[name] for name in KEYS[key]}
    rendered = text(language, key, **values)
    assert rendered.strip()
    assert "{" not in rendered and "}" not in rendered
    assert "<" not in rendered and ">" not in rendered and "&" not in rendered  # no HTML
    for value in values.values():
        assert value in rendered


@pytest.mark.parametrize(("language", "key"), WITH_PLACEHOLDERS)
def test_a_missing_value_is_a_key_error(language, key):
    for missing in KEYS[key]:
        values = {name: VALUES[name] for name in KEYS[key] - {missing}}
        with pytest.raises(KeyError, match=missing):
            text(language, key, **values)


@pytest.mark.parametrize("language", LANGUAGES)
def test_values_are_not_read_as_templates(language):
    rendered = text(language, "page_erase_requested", due="{controller} {0} {due.__class__}")
    assert "{controller} {0} {due.__class__}" in rendered


@pytest.mark.parametrize(
    ("language", "key", "error"),
    [
        ("fi", "no_such_key", KeyError),
        ("en", "", KeyError),
        ("de", "confirm_subject", ValueError),
        ("FI", "confirm_subject", ValueError),
        ("", "confirm_subject", ValueError),
        ("fi-FI", "confirm_subject", ValueError),
    ],
)
def test_unknown_key_or_language(language, key, error):
    with pytest.raises(error):
        text(language, key, controller="Esimerkki Oy")


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_access_sent_page_does_not_tell_whether_the_address_is_known(language):
    wording = texts._TEXTS["page_access_sent_body"][language]
    assert placeholders(wording) == frozenset()
    known = text(language, "page_access_sent_body", email="known@example.fi", controller="Esimerkki Oy")
    unknown = text(language, "page_access_sent_body", email="nobody@example.fi")
    assert known == unknown == text(language, "page_access_sent_body") == wording


@pytest.mark.parametrize(
    ("language", "consent"),
    [("fi", "\u201dX\u201d"), ("sv", "\u201dX\u201d"), ("en", "\u201cX\u201d")],
)
def test_the_receipt_quotes_the_words_and_names_the_attachment(language, consent):
    values = {name: VALUES[name] for name in KEYS["receipt_body"]} | {"consent_text": "X"}
    rendered = text(language, "receipt_body", **values)
    assert consent in rendered
    assert "consent-receipt.json" in rendered


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        ("fi-FI,fi;q=0.9,en;q=0.8", "en", "fi"),
        ("sv-SE", "en", "sv"),
        ("de,en;q=0.5", "fi", "en"),
        ("de", "fi", "fi"),
        ("de", "sv", "sv"),
        ("en;q=0,fi;q=0.1", "en", "fi"),
        ("en;q=0", "sv", "sv"),
        ("*", "sv", "sv"),
        ("*;q=0.5,en", "fi", "en"),
        ("de,*;q=0.1,en;q=0", "en", "en"),  # nothing left but the default
        ("", "fi", "fi"),
        (None, "sv", "sv"),
        (";;;q=abc,,", "fi", "fi"),
        ("en;q=abc", "fi", "fi"),
        ("en;q=1.5", "fi", "fi"),
        ("en;q=0.1234", "fi", "fi"),
        ("en;q=0.5;q=0.6", "fi", "fi"),
        ("en;foo", "fi", "fi"),
        ("en;", "fi", "fi"),
        ("e n,fi?", "sv", "sv"),
        ("en-", "fi", "fi"),
        ("fi\u00e4,en", "sv", "en"),  # non-ASCII tags are malformed
        ("  EN-gb ; Q=0.7 , SV ; q=0.6", "fi", "en"),
        ("sv;q=0.5,en;q=0.5", "fi", "sv"),  # equal q: the earlier entry
        ("en;q=0.8,sv;q=0.9", "fi", "sv"),
        ("en;q=1.000,sv", "fi", "en"),
        ("fi-FI;q=0.9,fi;q=0.1,sv;q=0.5", "en", "sv"),  # the exact 'fi' entry wins over 'fi-FI'
        ("fi-FI;q=0,fi", "en", "fi"),
        ("fi;q=0,fi-FI", "en", "en"),
        ("en-US;q=0.2,en-GB;q=0.7,sv;q=0.5", "fi", "en"),
        ("x-private,i-klingon,sv", "fi", "sv"),
        (",".join(["de"] * 32 + ["sv"]), "fi", "fi"),  # only the first 32 entries
        (",".join(["de"] * 31 + ["sv"]), "fi", "sv"),
        (" " * 4100 + "sv", "fi", "fi"),  # only the first 4096 characters
        (" " * 4000 + "sv", "fi", "sv"),
    ],
)
def test_pick_language(header, default, expected):
    assert pick_language(header, default) == expected


@pytest.mark.parametrize(
    "header",
    [
        "a" * 1_000_000,
        "," * 1_000_000,
        ";" * 1_000_000,
        "en;q=" + "0" * 1_000_000,
        "fi-" * 333_333,
        "en;q=0.5," * 111_111,
        "\u00e4\u0000\ufffd" * 333_333,
    ],
)
def test_a_huge_header_is_cheap_and_never_raises(header):
    started = time.perf_counter()
    assert pick_language(header, "fi") in LANGUAGES
    assert time.perf_counter() - started < 0.5
