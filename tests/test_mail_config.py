"""[mail] and double opt-in in the configuration (pure): what is refused, and the defaults."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.errors import ConfigError
from tests.support import base_config_dict, make_config, secrets_environ, with_double_opt_in


def _config(mail: dict[str, Any] | None = None, environ: dict[str, str] | None = None, **top: Any):
    raw = with_double_opt_in(base_config_dict()) | top
    if mail is not None:
        raw["mail"] = mail
    return make_config(raw, (secrets_environ() | (environ or {})))


def test_the_defaults_write_files_in_english_with_receipts_and_double_opt_in_for_marketing():
    config = _config()
    assert config.mail.smtp_host is None and config.mail.language == "en" and config.mail.receipts
    assert config.double_opt_in == {"marketing-email-v1"}  # the direct-marketing consent
    assert config.sources["website-contact"].double_opt_in is True  # html: cannot vouch for the address
    assert config.sources["partner-forms"].double_opt_in is False  # signed: the partner confirmed it


@pytest.mark.parametrize(
    ("mail", "environ", "key"),
    [
        ({"from": "not an address"}, {}, "mail.from"),
        ({"from": "a@b.example\r\nBcc: x@y.example"}, {}, "mail.from"),  # no header injection
        ({"from": "a@b.example\n"}, {}, "mail.from"),
        ({"smtp_host": "relay.example\n"}, {}, "mail.smtp_host"),
        ({"language": "de"}, {}, "mail.language"),
        ({"erasure": "never"}, {}, "mail.erasure"),
        ({"access_link_minutes": 2}, {}, "mail.access_link_minutes"),
        ({"smtp_port": 0}, {}, "mail.smtp_port"),
        ({"smtp_security": "ssl"}, {}, "mail.smtp_security"),
        ({"smtp_host": "bad host!"}, {}, "mail.smtp_host"),
        ({"smtp_username": "u"}, {}, "mail.smtp_username"),  # a user without a password variable
        ({"smtp_username": "u", "smtp_password_env": "SMTP_PW"}, {}, "mail.smtp_password_env"),  # unset
        (
            {
                "smtp_host": "relay",
                "smtp_security": "none",
                "smtp_username": "u",
                "smtp_password_env": "SMTP_PW",
            },
            {"SMTP_PW": "s3cret-password"},
            "mail.smtp_security",  # a password never goes without TLS
        ),
        ({"poll_seconds": 0}, {}, "mail.poll_seconds"),
        ({"surprise": 1}, {}, "mail"),  # unknown keys are refused
    ],
)
def test_a_mail_setting_that_cannot_work_is_refused_naming_its_key(mail, environ, key):
    with pytest.raises(ConfigError) as info:
        _config(mail, environ)
    assert str(info.value).startswith(key), str(info.value)
    assert "s3cret" not in str(info.value)


def test_the_smtp_password_comes_from_the_environment_and_is_not_printed():
    config = _config(
        {"smtp_host": "smtp.example.com", "smtp_username": "ingest", "smtp_password_env": "SMTP_PW"},
        {"SMTP_PW": "s3cret-password"},
    )
    assert config.mail.smtp_password == "s3cret-password"
    assert "s3cret" not in repr(config.mail)


def test_double_opt_in_can_be_turned_off_per_consent_and_on_for_a_signed_source():
    raw = base_config_dict()
    raw["consents"]["marketing-email-v1"]["double_opt_in"] = False
    raw["sources"]["partner-forms"]["double_opt_in"] = True
    config = make_config(raw)
    assert config.double_opt_in == frozenset()
    assert config.sources["partner-forms"].double_opt_in is True
