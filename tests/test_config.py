"""Configuration (DESIGN §2): a bad file stops the service with a message naming the key.

Each test starts from the valid test config and breaks one thing, then checks that
the ConfigError begins with the dotted path of the key at fault.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from ingest.adapters import check_sources
from ingest.config import load_config, parse_config
from ingest.errors import ConfigError
from tests.support import PARTNER_SECRET, base_config_dict, secrets_environ

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "ingest.example.toml"


def config_error(raw: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    """The message of the ConfigError that parsing `raw` raises."""
    with pytest.raises(ConfigError) as info:
        check_sources(parse_config(raw, secrets_environ() if environ is None else environ))
    return str(info.value)


def assert_names(message: str, key_path: str) -> None:
    assert message.startswith(f"{key_path}:"), message


def test_the_base_test_config_is_valid_so_each_breakage_below_is_the_only_fault():
    config = parse_config(base_config_dict(), secrets_environ())
    assert set(config.sources) == {"website-contact", "partner-forms", "partner-chat"}
    assert config.sources["partner-forms"].secrets == (PARTNER_SECRET,)


# --- top level and purposes ------------------------------------------------------------------


def test_a_missing_notice_version_is_named():
    raw = base_config_dict()
    del raw["notice_version"]
    assert_names(config_error(raw), "notice_version")


def test_a_blank_notice_version_is_named():
    raw = base_config_dict()
    raw["notice_version"] = "   "
    assert_names(config_error(raw), "notice_version")


def test_an_unknown_top_level_key_is_named():
    raw = base_config_dict()
    raw["notice_verison"] = "2024-01"
    assert_names(config_error(raw), "notice_verison")


def test_a_purpose_that_is_not_in_the_privacy_notice_is_named():
    raw = base_config_dict()
    raw["purposes"]["marketing"] = {"lawful_basis": "consent", "retention_days": 365}
    assert_names(config_error(raw), "purposes.marketing")


@pytest.mark.parametrize("basis", ["because", "Consent", "legitimate interest", ""])
def test_a_lawful_basis_outside_the_gdpr_list_is_named(basis):
    raw = base_config_dict()
    raw["purposes"]["contact"]["lawful_basis"] = basis
    assert_names(config_error(raw), "purposes.contact.lawful_basis")


@pytest.mark.parametrize("days", [0, -1, True, False, 1.5, "730"])
def test_retention_days_must_be_a_positive_whole_number_not_zero_or_a_bool(days):
    raw = base_config_dict()
    raw["purposes"]["contact"]["retention_days"] = days
    assert_names(config_error(raw), "purposes.contact.retention_days")


def test_missing_retention_days_is_named():
    raw = base_config_dict()
    del raw["purposes"]["contact"]["retention_days"]
    assert_names(config_error(raw), "purposes.contact.retention_days")


# --- consents --------------------------------------------------------------------------------


def test_a_consent_for_a_purpose_not_defined_in_purposes_is_named():
    raw = base_config_dict()
    raw["consents"]["marketing-email-v1"]["purpose"] = "services"  # a notice purpose, but not configured
    assert_names(config_error(raw), "consents.marketing-email-v1.purpose")


def test_a_consent_without_its_words_is_named():
    raw = base_config_dict()
    raw["consents"]["marketing-email-v1"]["text"] = "  "
    assert_names(config_error(raw), "consents.marketing-email-v1.text")


# --- sources ---------------------------------------------------------------------------------


def test_a_source_with_an_unknown_format_is_named():
    raw = base_config_dict()
    raw["sources"]["partner-forms"]["format"] = "carrier-pigeon"
    assert_names(config_error(raw), "sources.partner-forms.format")


def test_an_html_source_on_the_chat_channel_is_a_channel_mismatch():
    raw = base_config_dict()
    raw["sources"]["website-contact"]["channel"] = "chat"
    assert_names(config_error(raw), "sources.website-contact.channel")


def test_a_channel_that_is_neither_form_nor_chat_is_named():
    raw = base_config_dict()
    raw["sources"]["partner-forms"]["channel"] = "email"
    assert_names(config_error(raw), "sources.partner-forms.channel")


def test_a_source_purpose_not_defined_in_purposes_is_named():
    raw = base_config_dict()
    raw["sources"]["partner-forms"]["purposes"] = ["contact", "services"]
    assert_names(config_error(raw), "sources.partner-forms.purposes")


def test_a_missing_secret_is_a_start_up_error():
    environ = secrets_environ()
    del environ["PARTNER_FORMS_SECRET"]
    message = config_error(base_config_dict(), environ)
    assert_names(message, "sources.partner-forms.secret_env")
    assert "PARTNER_FORMS_SECRET" in message


def test_a_blank_secret_is_a_start_up_error():
    environ = {**secrets_environ(), "PARTNER_FORMS_SECRET": "  \n"}
    assert_names(config_error(base_config_dict(), environ), "sources.partner-forms.secret_env")


def test_a_signed_source_without_secret_env_is_a_start_up_error():
    raw = base_config_dict()
    del raw["sources"]["partner-forms"]["secret_env"]
    assert_names(config_error(raw), "sources.partner-forms.secret_env")


def test_an_empty_secret_env_list_is_a_start_up_error():
    raw = base_config_dict()
    raw["sources"]["partner-forms"]["secret_env"] = []
    assert_names(config_error(raw), "sources.partner-forms.secret_env")


def test_a_secret_env_list_resolves_every_secret_in_order_for_rotation():
    raw = base_config_dict()
    raw["sources"]["partner-forms"]["secret_env"] = ["PARTNER_SECRET_OLD", "PARTNER_SECRET_NEW"]
    old, new = "whsec_" + "b2xk" * 8, "whsec_" + "bmV3" * 8  # 24 bytes each
    environ = {**secrets_environ(), "PARTNER_SECRET_OLD": old, "PARTNER_SECRET_NEW": f" {new}\n"}
    config = parse_config(raw, environ)
    assert config.sources["partner-forms"].secrets == (old, new)
    assert config.sources["partner-chat"].secrets == (PARTNER_SECRET,)


def test_a_secret_env_list_with_one_variable_unset_names_the_key_and_the_variable():
    raw = base_config_dict()
    raw["sources"]["partner-forms"]["secret_env"] = ["PARTNER_SECRET_OLD", "PARTNER_SECRET_NEW"]
    environ = {**secrets_environ(), "PARTNER_SECRET_OLD": "whsec_" + "b2xk" * 8}
    message = config_error(raw, environ)
    assert_names(message, "sources.partner-forms.secret_env")
    assert "PARTNER_SECRET_NEW" in message


@pytest.mark.parametrize("names", [[1], [""], {"a": "B"}, 42])
def test_a_secret_env_that_is_not_variable_names_is_named(names):
    raw = base_config_dict()
    raw["sources"]["partner-forms"]["secret_env"] = names
    assert_names(config_error(raw), "sources.partner-forms.secret_env")


@pytest.mark.parametrize("origins", [None, []])
def test_an_html_source_without_allowed_origins_is_named(origins):
    raw = base_config_dict()
    if origins is None:
        del raw["sources"]["website-contact"]["allowed_origins"]
    else:
        raw["sources"]["website-contact"]["allowed_origins"] = origins
    assert_names(config_error(raw), "sources.website-contact.allowed_origins")


@pytest.mark.parametrize(
    "origin",
    [
        "https://www.qualitydesk.com/",
        "https://www.qualitydesk.com/contact",
        "www.qualitydesk.com",
        "ftp://www.qualitydesk.com",
        "*",
        "https://",
        "https://www.quality desk.com",
    ],
)
def test_an_allowed_origin_that_is_not_scheme_host_port_is_named(origin):
    raw = base_config_dict()
    raw["sources"]["website-contact"]["allowed_origins"] = ["https://www.qualitydesk.com", origin]
    assert_names(config_error(raw), "sources.website-contact.allowed_origins")


def test_an_origin_with_a_port_is_accepted():
    raw = base_config_dict()
    raw["sources"]["website-contact"]["allowed_origins"] = ["http://localhost:8080"]
    config = parse_config(raw, secrets_environ())
    assert config.sources["website-contact"].allowed_origins == frozenset({"http://localhost:8080"})


def test_allowed_origins_that_is_not_a_list_of_strings_is_named():
    raw = base_config_dict()
    raw["sources"]["website-contact"]["allowed_origins"] = "https://www.qualitydesk.com"
    assert_names(config_error(raw), "sources.website-contact.allowed_origins")


def test_consent_fields_naming_an_unknown_consent_are_named_down_to_the_form_field():
    raw = base_config_dict()
    raw["sources"]["website-contact"]["consent_fields"] = {"marketing": "marketing-sms-v1"}
    assert_names(config_error(raw), "sources.website-contact.consent_fields.marketing")


def test_an_unknown_key_in_a_source_is_named_without_echoing_its_value():
    raw = base_config_dict()
    raw["sources"]["partner-forms"]["secret"] = "whsec_pasted-into-the-file"  # the classic mistake
    message = config_error(raw)
    assert_names(message, "sources.partner-forms.secret")
    assert "whsec_pasted-into-the-file" not in message


def test_a_success_url_that_is_not_an_absolute_url_is_named():
    raw = base_config_dict()
    raw["sources"]["website-contact"]["success_url"] = "/thanks"
    assert_names(config_error(raw), "sources.website-contact.success_url")


def test_a_source_name_with_upper_case_letters_is_named():
    raw = base_config_dict()
    raw["sources"]["Partner-Forms"] = raw["sources"].pop("partner-forms")
    assert_names(config_error(raw), "sources.Partner-Forms")


# --- admin tokens ----------------------------------------------------------------------------


def test_a_missing_admin_token_variable_is_a_start_up_error():
    environ = secrets_environ()
    del environ["INGEST_TOKEN_AUDITOR"]
    message = config_error(base_config_dict(), environ)
    assert_names(message, "admin_tokens.auditor.token_sha256_env")
    assert "INGEST_TOKEN_AUDITOR" in message


@pytest.mark.parametrize(
    "value",
    [
        "auditor-token",  # the token itself instead of its hash
        "ab" * 31,  # too short
        "ab" * 33,  # too long
        "g" * 64,  # not hex
        hashlib.sha1(b"auditor-token").hexdigest(),  # noqa: S324 - the wrong digest on purpose
    ],
)
def test_an_admin_token_variable_that_is_not_a_hex_sha256_is_named_without_echoing_it(value):
    environ = {**secrets_environ(), "INGEST_TOKEN_AUDITOR": value}
    message = config_error(base_config_dict(), environ)
    assert_names(message, "admin_tokens.auditor.token_sha256_env")
    assert value not in message


def test_an_admin_token_digest_in_upper_case_hex_is_accepted():
    digest = hashlib.sha256(b"auditor-token").hexdigest()
    environ = {**secrets_environ(), "INGEST_TOKEN_AUDITOR": digest.upper()}
    tokens = {t.name: t for t in parse_config(base_config_dict(), environ).admin_tokens}
    assert tokens["auditor"].sha256 == bytes.fromhex(digest)
    assert tokens["auditor"].scopes == frozenset({"export"})


def test_an_unknown_admin_scope_is_named():
    raw = base_config_dict()
    raw["admin_tokens"]["auditor"]["scopes"] = ["export", "read-everything"]
    assert_names(config_error(raw), "admin_tokens.auditor.scopes")


# --- limits ----------------------------------------------------------------------------------


def test_a_zero_limit_is_named():
    raw = base_config_dict()
    raw["limits"] = {"max_body_bytes": 0}
    assert_names(config_error(raw), "limits.max_body_bytes")


@pytest.mark.parametrize("limit", [0, -1, 17 * 1024 * 1024, "1MB"])
def test_a_source_body_limit_out_of_range_is_named(limit):
    raw = base_config_dict()
    raw["sources"]["website-contact"]["max_body_bytes"] = limit
    assert_names(config_error(raw), "sources.website-contact.max_body_bytes")


def test_a_boolean_for_a_time_limit_is_named():
    raw = base_config_dict()
    raw["limits"] = {"body_timeout_seconds": True}
    assert_names(config_error(raw), "limits.body_timeout_seconds")


# --- files -----------------------------------------------------------------------------------


def test_an_invalid_toml_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "ingest.toml"
    path.write_text('notice_version = "2024-01"\n[purposes.contact\nlawful_basis = "consent"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, secrets_environ())
    assert str(info.value).startswith(f"{path}:")
    assert "TOML" in str(info.value)


def test_a_file_that_is_not_utf8_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "ingest.toml"
    path.write_bytes(b'notice_version = "2024-01 \xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, secrets_environ())
    assert str(info.value).startswith(f"{path}:")


def test_a_missing_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, secrets_environ())
    assert str(info.value).startswith(f"{path}:")


def test_a_toml_file_is_validated_like_the_dict_and_names_the_key(tmp_path):
    path = tmp_path / "ingest.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8").replace('format = "json"', 'format = "xml"'))
    with pytest.raises(ConfigError) as info:
        load_config(path, {"PARTNER_FORMS_SECRET": PARTNER_SECRET})
    assert_names(str(info.value), "sources.partner-forms.format")


def test_the_packaged_example_loads_when_partner_forms_secret_is_set():
    config = load_config(EXAMPLE, {"PARTNER_FORMS_SECRET": PARTNER_SECRET})
    assert config.path == str(EXAMPLE)
    assert config.notice_version == "2024-01"
    assert config.default_region == "FI"
    assert set(config.purposes) == {
        "contact",
        "customer_relationship",
        "services",
        "business_development",
        "direct_marketing",
    }
    assert set(config.sources) >= {"website-contact", "partner-forms"}
    assert config.sources["partner-forms"].secrets == (PARTNER_SECRET,)
    assert config.sources["website-contact"].consent_fields == {"marketing": "marketing-email-v1"}
    assert config.consents["marketing-email-v1"].purpose == "direct_marketing"


def test_the_packaged_example_without_its_secret_is_a_start_up_error():
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, {})
    assert_names(str(info.value), "sources.partner-forms.secret_env")


# --- secrets: placeholders and values below their format's floor are refused -------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("x", "not a Standard Webhooks secret"),
        ("whsec_REPLACE", "placeholder"),
        ("whsec_changeme", "placeholder"),
        ("whsec_" + "QUFB", "decodes to 24-64 bytes"),  # 3 bytes: the 'whsec_REPLACE' class
        ("whsec_" + "A" * 100, "decodes to 24-64 bytes"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "README's example secret"),
    ],
)
def test_a_standard_webhooks_secret_below_its_floor_or_a_placeholder_is_refused_naming_the_variable(
    value, reason
):
    environ = {**secrets_environ(), "PARTNER_FORMS_SECRET": value}
    with pytest.raises(ConfigError, match=reason) as caught:
        parse_config(base_config_dict(), environ)
    assert "PARTNER_FORMS_SECRET" in str(caught.value)
    assert value not in str(caught.value).replace("PARTNER_FORMS_SECRET", "")


def test_the_readme_example_secret_is_accepted_only_where_the_embedded_default_allows_it():
    environ = {**secrets_environ(), "PARTNER_FORMS_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
    assert parse_config(base_config_dict(), environ, example_secrets_allowed=True).sources["partner-forms"]


@pytest.mark.parametrize("value", ["REPLACE_ME", "changeme-please", "short"])
def test_a_provider_secret_that_is_a_placeholder_or_too_short_is_refused(value):
    raw = base_config_dict()
    raw["sources"]["tawk"] = {
        "channel": "chat",
        "format": "tawkto",
        "secret_env": "TAWK_SECRET",
        "purposes": ["contact"],
    }
    with pytest.raises(ConfigError, match="TAWK_SECRET"):
        parse_config(raw, {**secrets_environ(), "TAWK_SECRET": value})


def test_an_admin_token_hash_pasted_from_sha256sum_is_accepted_and_an_empty_tokens_is_refused():
    digest = hashlib.sha256(b"a-real-admin-token").hexdigest()
    environ = {**secrets_environ(), "INGEST_TOKEN_AUDITOR": f"{digest}  -"}
    tokens = {t.name: t for t in parse_config(base_config_dict(), environ).admin_tokens}
    assert tokens["auditor"].sha256 == bytes.fromhex(digest)
    environ["INGEST_TOKEN_AUDITOR"] = hashlib.sha256(b"").hexdigest()
    with pytest.raises(ConfigError, match="INGEST_TOKEN_AUDITOR"):
        parse_config(base_config_dict(), environ)


@pytest.mark.parametrize("pepper", ["short", "REPLACE-with-a-long-random-value-0123456789"])
def test_a_weak_or_placeholder_pepper_is_refused(pepper):
    from ingest.secrets import check_pepper

    with pytest.raises(ConfigError, match="INGEST_PEPPER"):
        check_pepper(pepper)


def test_the_known_formats_are_the_registered_adapters():
    from ingest.adapters import ADAPTERS
    from ingest.config import FORMATS

    assert len(set(FORMATS)) == len(FORMATS)
    assert set(ADAPTERS) == set(FORMATS)
