"""The validators' fast paths give exactly what the full paths give, over a generated corpus.

`normalise.email` checks the common address (an ASCII dot-atom at an ASCII domain)
with a regex and a cached verdict on its domain; `normalise.email_full` sends every
address through email-validator. Both must agree on every input: the same value, or
the same error message. The corpus mixes what real forms send with every edge the
library checks (lengths at and past each limit, dots, quotes, role mailboxes,
special-use and numeric domains, IDNA labels, bad punycode, Unicode look-alikes).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from marshmallow import ValidationError

from ingest import normalise, schemas
from ingest.schemas import SubmissionSchema, load_submission

ATEXT = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-"
ODD = [
    "..",
    ".",
    '"',
    " ",
    "@",
    "(",
    ")",
    ",",
    ":",
    ";",
    "<",
    ">",
    "[",
    "]",
    "\\",
    "ä",
    "ß",
    "İ",
    "\uff46",
    "\u200b",
]
ROLES = ["postmaster", "PostMaster", "ABUSE", "Info", "sales", "support", "www", "webmaster", "noc"]
LABELS = [
    "example", "Example", "qualitydesk", "mail", "a", "x1", "a-b", "-ab", "ab-", "a_b", "123",
    "xn--bcher-kva", "XN--BCHER-KVA", "xn--zz", "xn--", "bücher", "\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25", "münchen", "i̇", "ǅ",
]  # fmt: skip
TLDS = [
    "fi", "FI", "com", "se", "museum", "test", "localhost", "invalid", "local", "onion", "arpa",
    "example", "internal", "home", "123", "1a", "xn--p1ai", "a", "co.uk", "", "fi.",
]  # fmt: skip


def outcome(check: Callable[[str], str | None], address: str) -> tuple[str, str | None]:
    try:
        return "ok", check(address)
    except ValidationError as exc:
        return "error", str(exc.messages)


def local_part(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        return rng.choice(ROLES)
    if roll < 0.2:
        return "a" * rng.choice([1, 62, 63, 64, 65, 70]) + rng.choice(["", ".b"])
    if roll < 0.3:
        return '"' + "".join(rng.choice(ATEXT + " @.") for _ in range(rng.randint(0, 10))) + '"'
    parts = ["".join(rng.choice(ATEXT) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(1, 3))]
    text = ".".join(parts)
    if rng.random() < 0.3:
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(ODD) + text[at:]
    return text


def domain(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(["[192.0.2.1]", "192.0.2.1", "[IPv6:2001:db8::1]", "", "."])
    if roll < 0.15:  # at and past the label (63) and name (253) limits
        label = "a" * rng.choice([62, 63, 64])
        return ".".join([label] * rng.randint(1, 4)) + ".fi"
    labels = [rng.choice(LABELS) for _ in range(rng.randint(1, 3))]
    name = ".".join(labels) + "." + rng.choice(TLDS)
    if rng.random() < 0.05:
        name = name.replace(".", "..", 1)
    return name


def corpus(seed: int, size: int) -> list[str]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible corpus, not a secret
    addresses = [f"{local_part(rng)}@{domain(rng)}" for _ in range(size)]
    # Whole addresses at and around the 254-character limit, ASCII and not.
    wide = ("\u65e5\u672c\u8a9e" * 6).encode("idna").decode()  # 32 ASCII bytes, 54 in UTF-8
    for total in (*range(225, 256, 3), 253, 254, 255):
        for tail in ("example.fi", "bücher.example", "xn--bcher-kva.example", f"{wide}.{wide}.example"):
            local = "b" * 60
            middle = "c" * max(1, total - len(local) - len(tail) - 2)
            labels = ".".join(middle[i : i + 60] for i in range(0, len(middle), 60))
            addresses.append(f"{local}@{labels}.{tail}")
    addresses += ["", "   ", "plain", "@example.fi", "maija@", "maija@@example.fi", " Maija@Example.FI "]
    return addresses


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_email_fast_path_agrees_with_the_full_check_on_every_address(seed: int) -> None:
    normalise._domain_verdict.cache_clear()
    addresses = corpus(seed, 6000)
    fast_hits = 0
    for address in addresses:
        for _ in range(2):  # a cold and a warm domain cache give the same answer
            assert outcome(normalise.email, address) == outcome(normalise.email_full, address), address
        if normalise._COMMON_EMAIL.fullmatch(address.strip()):
            fast_hits += 1
    # Not vacuous: many addresses took the fast path, and it accepted and refused some.
    assert fast_hits > len(addresses) // 3
    results = {outcome(normalise.email, a)[0] for a in addresses if normalise._COMMON_EMAIL.fullmatch(a)}
    assert results == {"ok", "error"}


def test_the_domain_cache_is_bounded_and_a_miss_costs_one_full_check() -> None:
    normalise._domain_verdict.cache_clear()
    for i in range(normalise._DOMAIN_CACHE_SIZE + 100):
        normalise.email(f"maija@host{i}.example.fi")
    info = normalise._domain_verdict.cache_info()
    assert info.currsize == normalise._DOMAIN_CACHE_SIZE
    assert info.misses == normalise._DOMAIN_CACHE_SIZE + 100


TEXTS = [
    "Maija Meikäläinen", "  Pekka   Puu  ", "", "   ", "Anna\u202eevil", "x" * 200, "x" * 201, "y" * 120,
    "maija@example.fi", "Maija@Example.FI", "not an address", "a@localhost", "+358 40 123 4567",
    "040 123 4567", "12", "+1 202 555 0100", "Hei!\n\n\n\nSoita minulle.", "m" * 5001, "\u0000\u0007",
    "o\u0308", "\uff46\uff55\uff4c\uff4c",
]  # fmt: skip
ODD_VALUES: list[object] = [
    None,
    0,
    358401234567,
    358401234567.0,
    1.5,
    float("nan"),
    True,
    False,
    [],
    {},
    ["a"],
]
KEYS = ["name", "first_name", "last_name", "email", "phone", "message", "company", "consents"]


def raw_fields(rng: random.Random) -> dict[str, object]:
    fields: dict[str, object] = {}
    for key in rng.sample(KEYS, rng.randint(0, len(KEYS))):
        fields[key] = rng.choice(ODD_VALUES) if rng.random() < 0.15 else rng.choice(TEXTS)
    return fields


def schema_outcome(load: Callable[[], object]) -> tuple[str, object]:
    try:
        return "ok", load()
    except ValidationError as exc:
        return "error", exc.messages


@pytest.mark.parametrize("region", ["FI", "US"])
def test_the_schema_fast_path_agrees_with_marshmallow_on_every_delivery(region: str) -> None:
    schema = SubmissionSchema(region)
    rng = random.Random(region)  # noqa: S311 - a reproducible corpus, not a secret
    deliveries = [raw_fields(rng) for _ in range(4000)]
    fast = 0
    for fields in deliveries:
        expected = schema_outcome(lambda f=fields: schema.load(dict(f)))
        assert schema_outcome(lambda f=fields: load_submission(schema, f)) == expected, fields
        fast += schemas._load_common(region, fields) is not None
    # Not vacuous: the fast path answered a good share, and the schema the rest.
    assert len(deliveries) // 4 < fast < len(deliveries)
