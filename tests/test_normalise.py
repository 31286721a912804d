"""Normalisers and the submission schema: DESIGN §4 field by field, then properties on any text.

The normalisers only ever return text, return None (nothing there) or raise
ValidationError, and normalising a normalised value changes nothing. The schema
keeps the four personal fields and drops everything else.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from ingest import normalise
from ingest.domain import Submission
from ingest.schemas import SubmissionSchema

# Moderate, and no example database written into the working tree.
PROPERTY = settings(max_examples=200, deadline=None, database=None)


def load(data: Any, region: str = "FI") -> Submission:
    result = SubmissionSchema(region).load(data)
    assert isinstance(result, Submission)
    return result


def phone_fi(value: str) -> str | None:
    return normalise.phone(value, "FI")


def fullwidth(text: str) -> str:
    """The same ASCII letters and digits in their full-width forms (as typed on CJK keyboards)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def email_of_length(length: int) -> str:
    """A syntactically valid address of exactly `length` characters (local part 64, labels <= 63)."""
    local = "a" * 64
    fixed = len(local) + 1 + 63 + 1 + 63 + 1 + 1 + 2  # local@x63.y63.<z>.fi
    return f"{local}@{'x' * 63}.{'y' * 63}.{'z' * (length - fixed)}.fi"


# --- name ------------------------------------------------------------------------------------


def test_a_name_is_trimmed_and_runs_of_spaces_fold_into_one():
    assert normalise.name("  Maija   Meikäläinen \t") == "Maija Meikäläinen"


def test_a_name_is_stored_in_unicode_nfc():
    decomposed = "Meika\u0308la\u0308inen"
    result = normalise.name(decomposed)
    assert result == "Meikäläinen"
    assert result == unicodedata.normalize("NFC", result)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mai\x00ja", "Maija"),
        ("Maija\x07\x1b", "Maija"),
        ("Maija\u0085 M", "Maija M"),
        ("Maija\nMeikäläinen", "Maija Meikäläinen"),
        ("Maija\r\nMeikäläinen", "Maija Meikäläinen"),
        ("\u202eMaija\u202c", "Maija"),
        ("\u2066Maija\u2069", "Maija"),
    ],
)
def test_control_characters_are_removed_from_a_name(raw, expected):
    assert normalise.name(raw) == expected


def test_a_name_keeps_the_zero_width_joiner_that_some_scripts_need():
    assert normalise.name("क्\u200dष") == "क्\u200dष"


def test_a_name_of_200_characters_is_kept_and_one_of_201_is_rejected():
    assert normalise.name("x" * 200) == "x" * 200
    with pytest.raises(ValidationError):
        normalise.name("x" * 201)


def test_the_name_limit_counts_characters_after_trimming_and_nfc():
    assert normalise.name("   " + "x" * 200 + "   ") == "x" * 200
    assert normalise.name("e\u0301" * 200) == "\u00e9" * 200


@pytest.mark.parametrize("raw", ["", "   ", "\t\n", "\x00\x01", "\u202e"])
def test_a_blank_name_is_absent(raw):
    assert normalise.name(raw) is None


# --- e-mail ----------------------------------------------------------------------------------


def test_an_email_domain_is_lower_cased_and_the_local_part_is_kept_as_given():
    assert normalise.email("Maija.Meikalainen@EXAMPLE.FI") == "Maija.Meikalainen@example.fi"


def test_an_email_is_trimmed_and_stripped_of_control_characters():
    assert normalise.email("  maija@example.fi \n") == "maija@example.fi"
    assert normalise.email("ma\x00ija@example.fi") == "maija@example.fi"
    assert normalise.email("\u202emaija@example.fi") == "maija@example.fi"


@pytest.mark.parametrize(
    "raw",
    [
        "maija@bücher.example",
        "maija@BÜCHER.example",
        "maija@xn--bcher-kva.example",
        "maija@XN--BCHER-KVA.EXAMPLE",
    ],
)
def test_an_idna_domain_is_stored_one_way_whichever_form_it_arrives_in(raw):
    assert normalise.email(raw) == "maija@bücher.example"


def test_a_full_width_domain_is_folded_by_idna():
    assert normalise.email(f"maija@{fullwidth('EXAMPLE')}.fi") == "maija@example.fi"


def test_an_internationalised_local_part_is_accepted():
    assert normalise.email("mäijä@example.fi") == "mäijä@example.fi"


def test_an_email_of_254_characters_is_kept_and_one_of_255_is_rejected():
    longest = email_of_length(254)
    assert len(longest) == 254
    assert normalise.email(longest) == longest
    too_long = email_of_length(255)
    assert len(too_long) == 255
    with pytest.raises(ValidationError):
        normalise.email(too_long)


@pytest.mark.parametrize(
    "raw",
    [
        "nope",
        "maija",
        "@example.fi",
        "maija@",
        "maija@@example.fi",
        "maija example.fi",
        "maija@exa mple.fi",
        "maija@example..fi",
        "maija@.example.fi",
        "maija@example.fi.",
        "maija@-example.fi",
        "maija@example",
        "maija@xn--zz.fi",
        "maija.@example.fi",
        "maija@exam<ple>.fi",
    ],
)
def test_an_email_that_is_not_an_address_is_rejected(raw):
    with pytest.raises(ValidationError):
        normalise.email(raw)


def test_an_email_check_does_no_dns_look_up(monkeypatch):
    import socket

    import dns.resolver

    def no_network(*_: object, **__: object) -> None:
        raise AssertionError("a DNS look-up was made")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(dns.resolver, "resolve", no_network)
    monkeypatch.setattr(dns.resolver.Resolver, "resolve", no_network)
    assert normalise.email("maija@no-such-domain-qualitydesk-test.fi") == (
        "maija@no-such-domain-qualitydesk-test.fi"
    )


@pytest.mark.parametrize("raw", ["", "  ", "\x00"])
def test_a_blank_email_is_absent(raw):
    assert normalise.email(raw) is None


# --- phone -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("040 123 4567", "FI", "+358401234567"),
        ("0401234567", "FI", "+358401234567"),
        ("040-123 45 67", "FI", "+358401234567"),
        ("+358 40 123 4567", "FI", "+358401234567"),
        ("00358 40 123 4567", "FI", "+358401234567"),
        (fullwidth("040 123 4567"), "FI", "+358401234567"),
        ("070 123 45 67", "SE", "+46701234567"),
        ("07400 123456", "GB", "+447400123456"),
        ("(202) 555-0143", "US", "+12025550143"),
        ("+1 202 555 0143", "FI", "+12025550143"),
        ("+358 40 123 4567", "SE", "+358401234567"),
        ("040 123 4567", "SE", "+46401234567"),
    ],
)
def test_a_phone_number_is_stored_as_e164_using_the_default_region_for_national_numbers(
    raw, region, expected
):
    assert normalise.phone(raw, region) == expected


@pytest.mark.parametrize(
    "raw",
    ["123", "abc", "040", "+999 1234", "+358 40", "040 123 4567 8901 2345 6789", "9" * 70, "+", "phone me"],
)
def test_a_phone_number_that_is_not_valid_is_rejected(raw):
    with pytest.raises(ValidationError):
        normalise.phone(raw, "FI")


@pytest.mark.parametrize("raw", ["", "   ", "\x00"])
def test_a_blank_phone_number_is_absent(raw):
    assert normalise.phone(raw, "FI") is None


@pytest.mark.parametrize("value", [358401234567, 358401234567.0, "358401234567", "+358401234567"])
def test_a_phone_number_sent_as_a_json_number_reads_as_its_digits(value):
    assert load({"phone": value}).phone == "+358401234567"


def test_the_schema_parses_national_numbers_with_its_default_region():
    assert load({"phone": "070 123 45 67"}, region="SE").phone == "+46701234567"
    assert load({"phone": 2025550143}, region="US").phone == "+12025550143"
    assert load({"phone": "040 123 4567"}).phone == "+358401234567"


@pytest.mark.parametrize("value", [1.5, float("nan"), float("inf"), 1e300, 12, 0])
def test_a_phone_number_that_is_a_number_but_not_a_phone_number_is_rejected(value):
    with pytest.raises(ValidationError) as info:
        load({"phone": value})
    assert set(info.value.messages) == {"phone"}


def test_a_number_too_long_to_print_is_a_validation_error():
    with pytest.raises(ValidationError):
        load({"phone": 10**5000})


# --- message ---------------------------------------------------------------------------------


def test_a_message_keeps_its_newlines():
    text = "Hello,\nplease call me tomorrow.\n\nMaija"
    assert normalise.message(text) == text


def test_a_message_has_windows_and_old_mac_line_endings_made_newlines():
    assert normalise.message("one\r\ntwo\rthree") == "one\ntwo\nthree"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\x00b\x07c\x1bd", "abcd"),
        ("call\x0b me\x0c", "call me"),
        ("please\u0085 call", "please call"),
        ("\u202eplease call", "please call"),
        ("please\tcall", "please call"),
    ],
)
def test_control_characters_other_than_newline_are_removed_from_a_message(raw, expected):
    assert normalise.message(raw) == expected


def test_a_message_is_trimmed():
    assert normalise.message("  \n Hello \n\n") == "Hello"


def test_a_message_of_5000_characters_is_kept_and_one_of_5001_is_rejected():
    assert normalise.message("m" * 5000) == "m" * 5000
    with pytest.raises(ValidationError):
        normalise.message("m" * 5001)


@pytest.mark.parametrize("raw", ["", "  ", "\n\n\n", "\x00\r\n"])
def test_a_blank_message_is_absent(raw):
    assert normalise.message(raw) is None


# --- the schema ------------------------------------------------------------------------------


def test_the_schema_stores_only_name_email_phone_and_message():
    assert {f.name for f in dataclasses.fields(Submission)} == {"name", "email", "phone", "message"}


def test_unknown_keys_and_nested_objects_are_dropped():
    submission = load(
        {
            "name": " Maija ",
            "email": "maija@EXAMPLE.fi",
            "phone": "040 123 4567",
            "message": "Please call me.",
            "ip": "203.0.113.77",
            "user_agent": "Mozilla/5.0",
            "utm_source": "newsletter",
            "meta": {"ip": "192.0.2.1", "deep": {"fbclid": "x", "list": [1, {"a": 2}]}},
            "consents": {"marketing-email-v1": True},
            "tags": ["a", "b"],
        }
    )
    assert submission == Submission(
        name="Maija", email="maija@example.fi", phone="+358401234567", message="Please call me."
    )


def test_a_nested_value_in_a_personal_field_is_rejected_never_stored():
    with pytest.raises(ValidationError) as info:
        load({"name": {"first": "Maija"}, "email": ["maija@example.fi"], "message": True})
    assert set(info.value.messages) == {"name", "email", "message"}


def test_absent_and_null_fields_are_none():
    assert load({}) == Submission(name=None, email=None, phone=None, message=None)
    assert load({"name": None, "email": None, "phone": None, "message": None}) == load({})


def test_first_name_and_last_name_are_joined_into_the_name():
    assert load({"first_name": " Maija ", "last_name": "Meikäläinen"}).name == "Maija Meikäläinen"
    assert load({"first_name": "Maija"}).name == "Maija"
    assert load({"last_name": "Meikäläinen"}).name == "Meikäläinen"
    assert load({"first_name": "  ", "last_name": "Meikäläinen"}).name == "Meikäläinen"


def test_a_name_given_outright_wins_over_first_and_last_name():
    assert load({"name": "Maija M", "first_name": "Other", "last_name": "Person"}).name == "Maija M"


def test_a_joined_name_over_200_characters_is_rejected_as_the_name():
    assert len(load({"first_name": "a" * 100, "last_name": "b" * 99}).name or "") == 200
    with pytest.raises(ValidationError) as info:
        load({"first_name": "a" * 150, "last_name": "b" * 150})
    assert set(info.value.messages) == {"name"}


def test_every_invalid_field_is_reported_under_its_own_name():
    with pytest.raises(ValidationError) as info:
        load({"name": "x" * 201, "email": "nope", "phone": "abc", "message": "m" * 5001})
    assert set(info.value.messages) == {"name", "email", "phone", "message"}


@pytest.mark.parametrize("data", [None, [], ["email"], "maija@example.fi", 42])
def test_a_body_that_is_not_an_object_is_a_validation_error(data):
    with pytest.raises(ValidationError):
        load(data)


# --- properties ------------------------------------------------------------------------------

NORMALISERS = pytest.mark.parametrize(
    "normaliser",
    [normalise.name, normalise.email, phone_fi, normalise.message],
    ids=["name", "email", "phone", "message"],
)
ANY_TEXT = st.text()
LATIN1_TEXT = st.binary().map(lambda b: b.decode("latin-1"))
# Random text is almost never a valid address or number; these make the idempotence
# checks reach the code that builds one.
PLAUSIBLE = st.one_of(
    st.emails(),
    st.builds(lambda e, pad: pad + e.upper() + pad, st.emails(), st.sampled_from(["", " ", "\t"])),
    st.builds(
        lambda local, label, tld: f"{local}@{label}.{tld}",
        st.text(min_size=1, max_size=12),
        st.text(st.characters(categories=["Ll", "Lu", "Lo", "Nd", "Mn"]), min_size=1, max_size=10),
        st.sampled_from(["fi", "COM", fullwidth("COM"), "рф"]),
    ),
    st.builds(
        lambda prefix, separator, digits: prefix + separator + separator.join(digits),
        st.sampled_from(
            ["040", "050", "+35840", "00358 50", "+1 202", "+46 70", "+44 7400", fullwidth("040"), ""]
        ),
        st.sampled_from(["", " ", "-", ".", "\t"]),
        st.lists(st.sampled_from("0123456789" + fullwidth("05") + "\u0663"), min_size=5, max_size=9),
    ),
)


def outcome(normaliser: Any, value: str) -> str | None:
    """The normaliser's result, None when it rejected; anything but ValidationError propagates."""
    try:
        result = normaliser(value)
    except ValidationError:
        return None
    assert result is None or isinstance(result, str)
    return result


def assert_idempotent(normaliser: Any, value: str) -> None:
    once = outcome(normaliser, value)
    if once is not None:
        assert normaliser(once) == once


@NORMALISERS
@PROPERTY
@given(value=ANY_TEXT)
def test_a_normaliser_returns_text_or_none_or_raises_validation_error_for_any_unicode_text(normaliser, value):
    outcome(normaliser, value)


@NORMALISERS
@PROPERTY
@given(value=LATIN1_TEXT)
def test_a_normaliser_returns_text_or_none_or_raises_validation_error_for_any_latin1_bytes(normaliser, value):
    outcome(normaliser, value)


@NORMALISERS
@PROPERTY
@given(value=ANY_TEXT)
def test_normalising_a_normalised_unicode_text_changes_nothing(normaliser, value):
    assert_idempotent(normaliser, value)


@NORMALISERS
@PROPERTY
@given(value=LATIN1_TEXT)
def test_normalising_a_normalised_latin1_text_changes_nothing(normaliser, value):
    assert_idempotent(normaliser, value)


@NORMALISERS
@PROPERTY
@given(value=PLAUSIBLE)
def test_normalising_a_normalised_address_or_number_changes_nothing(normaliser, value):
    assert_idempotent(normaliser, value)


@PROPERTY
@given(value=st.one_of(ANY_TEXT, LATIN1_TEXT))
def test_a_normalised_name_is_nfc_trimmed_single_line_and_free_of_control_characters(value):
    result = outcome(normalise.name, value)
    if result is not None:
        assert result == unicodedata.normalize("NFC", result)
        assert result == result.strip()
        assert 0 < len(result) <= normalise.NAME_MAX
        assert not any(unicodedata.category(c) == "Cc" for c in result)


@PROPERTY
@given(value=st.one_of(ANY_TEXT, LATIN1_TEXT))
def test_a_normalised_message_is_nfc_trimmed_and_free_of_control_characters_but_newlines(value):
    result = outcome(normalise.message, value)
    if result is not None:
        assert result == unicodedata.normalize("NFC", result)
        assert result == result.strip()
        assert 0 < len(result) <= normalise.MESSAGE_MAX
        assert not any(unicodedata.category(c) == "Cc" and c != "\n" for c in result)


@PROPERTY
@given(value=st.one_of(PLAUSIBLE, ANY_TEXT))
def test_a_normalised_phone_number_is_e164(value):
    result = outcome(phone_fi, value)
    if result is not None:
        assert result.startswith("+")
        assert result[1:].isascii()
        assert result[1:].isdigit()
        assert len(result) <= 16


JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
SCHEMA_FIELDS = ("name", "first_name", "last_name", "email", "phone", "message")


@pytest.mark.parametrize("field", SCHEMA_FIELDS)
@PROPERTY
@given(value=JSON_LIKE)
def test_the_schema_raises_nothing_but_validation_error_for_any_json_value_in_a_field(field, value):
    try:
        result = SubmissionSchema("FI").load({field: value})
    except ValidationError as exc:
        messages = exc.messages
    else:
        assert isinstance(result, Submission)
        return
    assert set(messages) <= {field, "name"}


@PROPERTY
@given(data=st.dictionaries(st.sampled_from(SCHEMA_FIELDS) | st.text(max_size=8), JSON_LIKE, max_size=8))
def test_the_schema_raises_nothing_but_validation_error_for_any_json_object(data):
    try:
        result = SubmissionSchema("FI").load(data)
    except ValidationError:
        return
    assert isinstance(result, Submission)


def per_character_clean(value: str, *, keep_newline: bool) -> str:
    """The rule _clean implements, one character at a time (its fast path must agree)."""
    value = value.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    if not keep_newline:
        value = value.replace("\n", " ")
    kept = "".join(
        c
        for c in value
        if c == "\n"
        or not (unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") or c in normalise._BIDI_CONTROLS)
    )
    return unicodedata.normalize("NFC", kept)


@PROPERTY
@given(value=st.one_of(ANY_TEXT, LATIN1_TEXT, st.text(alphabet=st.characters(max_codepoint=0x7F))))
def test_the_ascii_fast_path_cleans_exactly_like_the_per_character_rule(value):
    for keep_newline in (True, False):
        assert normalise._clean(value, keep_newline=keep_newline) == per_character_clean(
            value, keep_newline=keep_newline
        )
