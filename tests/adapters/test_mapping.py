"""The shared field and consent mapping of form-provider adapters (pure functions)."""

from __future__ import annotations

import pytest

from ingest.adapters.mapping import (
    Answer,
    Option,
    check_mapping,
    compact_json,
    delivery_id,
    pick_consents,
    pick_fields,
)
from ingest.config import Source
from ingest.errors import ConfigError

TYPES = {"email": "email", "phone_number": "phone", "long_text": "message"}


def source(fields=None, consents=None, options=None) -> Source:
    return Source(
        name="s",
        channel="form",
        format="typeform",
        purposes=("contact",),
        field_map=fields or {},
        consent_fields=consents or {},
        options=options or {},
    )


def text(label: str, value: object, kind: str | None = "short_text", *more: str) -> Answer:
    return Answer(identifiers=(f"id-{label}", label, *more), type=kind, value=value)


def key(name: str) -> str:
    return f"sources.s.{name}"


def test_field_types_fill_email_phone_and_message_by_default():
    answers = [
        text("Work address", "a@example.fi", "email"),
        text("Reach you at", "+358401234567", "phone_number"),
        text("Anything else?", "Call me", "long_text"),
        text("Second e-mail", "b@example.fi", "email"),
    ]
    assert pick_fields(answers, source(), TYPES) == {
        "email": "a@example.fi",  # the first e-mail question
        "phone": "+358401234567",
        "message": "Call me",
    }


@pytest.mark.parametrize(
    ("label", "canonical"),
    [
        ("Name", "name"),
        ("Your name", "name"),
        ("What is your name?", "name"),
        ("Full Name", "name"),
        ("fullName", "name"),
        ("First Name", "first_name"),
        ("What is your first name?", "first_name"),
        ("firstName", "first_name"),
        ("first_name", "first_name"),
        ("Given name", "first_name"),
        ("Last name", "last_name"),
        ("Surname", "last_name"),
        ("family-name", "last_name"),
        ("Email", "email"),
        ("E-mail", "email"),
        ("Email 2", "email"),
        ("Email address", "email"),
        ("Phone Number", "phone"),
        ("Mobile", "phone"),
        ("Telephone", "phone"),
        ("Message", "message"),
        ("Your message", "message"),
        ("Comments", "message"),
        ("Company name", None),
        ("Username", None),
        ("Your company's name", None),
        ("iPhone model", None),
        ("Emailing frequency", None),
        ("question_3EKz4n", None),
        # Finnish and Swedish labels (the default region is FI)
        ("Sähköposti", "email"),
        ("Puhelinnumero", "phone"),
        ("Etunimi", "first_name"),
        ("Sukunimi", "last_name"),
        ("Nimi", "name"),
        ("Viesti", "message"),
        ("E-post", "email"),
        ("Telefon", "phone"),
        ("Förnamn", "first_name"),
        ("Efternamn", "last_name"),
        ("Meddelande", "message"),
        ("Yrityksen nimi", None),
    ],
)
def test_labels_and_refs_that_read_like_a_canonical_field_fill_it(label, canonical):
    picked = pick_fields([text(label, "value 1")], source(), TYPES)
    assert picked == ({canonical: "value 1"} if canonical else {})


def test_a_guess_needs_a_typed_in_text_not_a_yes_no_or_a_choice():
    answers = [
        Answer(("Can we email you?",), "yes_no", value=True),
        Answer(
            ("Email or phone?",),
            "multiple_choice",
            ["Email"],
            (Option(("Email",), selected=True), Option(("Phone",), selected=False)),
        ),
        Answer(("Phone",), "number", 358401234567),
    ]
    assert pick_fields(answers, source(), TYPES) == {"phone": 358401234567}


def test_empty_answers_are_skipped_and_the_next_candidate_is_used():
    answers = [
        text("Email", "  ", "email"),
        text("Email", None, "email"),
        text("Email", "c@example.fi", "email"),
    ]
    assert pick_fields(answers, source(), TYPES) == {"email": "c@example.fi"}


def test_each_answer_fills_one_field_only():
    answers = [text("Your name and e-mail", "Maija m@example.fi")]
    assert pick_fields(answers, source(), TYPES) == {"name": "Maija m@example.fi"}  # name comes first


def test_a_configured_identifier_matches_exactly_then_ignoring_case_then_by_type():
    answers = [
        Answer(("ref_a", "Who are you?"), "short_text", "by label"),
        Answer(("ref_b", "who are you?"), "short_text", "exact"),
        Answer(("ref_c", "Note"), "long_text", "by type"),
    ]
    picked = pick_fields(answers, source(fields={"name": "who are you?", "message": "LONG_TEXT"}), TYPES)
    assert picked == {"name": "exact", "message": "by type"}
    picked = pick_fields(answers, source(fields={"name": "WHO  ARE YOU?"}), TYPES)
    assert picked["name"] == "by label"


def test_a_configured_but_unanswered_field_is_not_guessed():
    answers = [text("Message", "guess me")]
    assert pick_fields(answers, source(fields={"message": "ref_missing"}), TYPES) == {}


def test_an_answer_kept_out_of_the_defaults_is_used_when_configured():
    payer = Answer(("question_wa9QBw_email", "Payment (email)"), "PAYMENT", "p@example.fi", by_default=False)
    assert pick_fields([payer], source(), {"PAYMENT": "email"}) == {}
    assert pick_fields([payer], source(fields={"email": "payment (email)"})) == {"email": "p@example.fi"}


def test_chosen_options_are_joined_and_structured_values_are_dropped():
    answers = [
        Answer(("topic",), "choices", ["Sales", "Support"]),
        Answer(("upload",), "file", [{"url": "https://x"}]),
        Answer(("address",), "address", {"city": "Oulu"}),
    ]
    picked = pick_fields(answers, source(fields={"message": "topic", "name": "upload", "phone": "address"}))
    assert picked == {"message": "Sales, Support"}


def test_a_consent_answer_never_fills_a_contact_field():
    answers = [text("Email me news", "yes please")]
    assert pick_fields(answers, source(consents={"Email me news": "marketing-email-v1"}), TYPES) == {}


@pytest.mark.parametrize(
    ("value", "granted"),
    [
        (True, True),
        ("true", True),
        ("on", True),
        ("Yes", True),
        ("yes, send me news", True),
        (1, True),
        (False, False),
        ("false", False),
        ("", False),
        (None, False),
        (0, False),
        ("no", False),
        ("maybe", False),
        (["on"], True),
        (["I agree to receive the newsletter"], True),
        (["Kyllä, lähettäkää uutiskirje"], True),
        (["I disagree"], False),
        ([], False),
        ({"checked": True}, False),
    ],
)
def test_a_named_checkbox_grants_only_when_ticked(value, granted):
    answers = [Answer(("legal",), "legal", value)]
    assert pick_consents(answers, source(consents={"legal": "c1"})) == {"c1": granted}


def test_an_absent_consent_field_is_not_granted():
    assert pick_consents([], source(consents={"legal": "c1", "news": "c2"})) == {"c1": False, "c2": False}


def options(*chosen: str) -> tuple[Option, ...]:
    return tuple(
        Option((f"id-{x}", x), x in chosen) for x in ("Yes, send me news", "No thanks", "Only on Sundays")
    )


@pytest.mark.parametrize(
    ("name", "chosen", "granted"),
    [
        ("Yes, send me news", ["Yes, send me news"], True),
        ("id-Yes, send me news", ["Yes, send me news"], True),
        ("YES, SEND ME NEWS", ["Yes, send me news"], True),
        ("Yes, send me news", ["No thanks"], False),
        ("Newsletter", ["Yes, send me news"], True),  # the field: every chosen option reads "yes"
        ("Newsletter", ["No thanks"], False),
        ("Newsletter", ["Only on Sundays"], False),
        ("Newsletter", ["Yes, send me news", "Only on Sundays"], False),
        ("Newsletter", [], False),
    ],
)
def test_choice_consents_are_granted_by_a_chosen_option(name, chosen, granted):
    answers = [Answer(("q1", "Newsletter"), "MULTIPLE_CHOICE", chosen, options(*chosen))]
    assert pick_consents(answers, source(consents={name: "c1"})) == {"c1": granted}


@pytest.mark.parametrize(("chosen", "granted"), [(True, True), (False, False)])
def test_a_lone_checkbox_option_named_by_its_field_grants_when_ticked(chosen, granted):
    answer = Answer(
        ("q1", "Marketing"), "CHECKBOXES", ["I agree"] if chosen else [], (Option(("o1", "I agree"), chosen),)
    )
    assert pick_consents([answer], source(consents={"marketing": "c1"})) == {"c1": granted}


def test_option_texts_are_matched_when_the_payload_lists_only_the_chosen_ones():
    answers = [Answer(("q1",), "picture_choice", ["London", "Sydney"])]
    assert pick_consents(answers, source(consents={"sydney": "c1", "Paris": "c2"})) == {
        "c1": True,
        "c2": False,
    }


def test_any_of_several_fields_mapped_to_one_consent_grants_it():
    answers = [Answer(("a",), "legal", value=False), Answer(("b",), "legal", value=True)]
    assert pick_consents(answers, source(consents={"a": "c1", "b": "c1"})) == {"c1": True}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fields": {"email": ""}}, "sources.s.fields.email: must name a provider field"),
        ({"fields": {"email": "  "}}, "sources.s.fields.email: must name a provider field"),
        (
            {"fields": {"name": "Who", "message": "who"}},
            "sources.s.fields.message: the same provider field as fields.name",
        ),
        ({"consents": {" ": "c1"}}, 'sources.s.consent_fields."": must name'),
        (
            {"fields": {"email": "Legal"}, "consents": {"legal": "c1"}},
            "sources.s.consent_fields.legal: also mapped",
        ),
        ({"options": {"mode": 1}}, "sources.s.options.mode: unknown option for format typeform"),
    ],
)
def test_check_mapping_names_the_key_that_cannot_work(settings, message):
    with pytest.raises(ConfigError) as caught:
        check_mapping(source(**settings), key)
    assert str(caught.value).startswith(message)


def test_check_mapping_accepts_a_working_mapping_and_known_options():
    check_mapping(
        source({"email": "ref_email"}, {"ref_legal": "c1"}, {"mode": 1}), key, allowed_options=("mode",)
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("LtWXD3crgy", "LtWXD3crgy"),
        (" a4cb511e ", "a4cb511e"),
        (42, "42"),
        ("x" * 200, "x" * 200),
        ("x" * 201, None),
        ("", None),
        ("bad\x00id", None),
        (True, None),
        (None, None),
        (["id"], None),
        (4.2, None),
    ],
)
def test_a_delivery_id_is_a_short_printable_string(value, expected):
    assert delivery_id(value) == expected


def test_compact_json_is_what_json_stringify_writes():
    assert compact_json({"a": [1, "ä/☃"], "b": None}) == '{"a":[1,"ä/☃"],"b":null}'.encode()


def test_compact_json_escapes_a_lone_surrogate_as_json_stringify_does():
    # A "\ud800" escape in a body decodes to a lone surrogate, which UTF-8 cannot encode.
    assert compact_json({"a": "x\ud800y"}) == b'{"a":"x\\ud800y"}'
