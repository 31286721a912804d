"""Load and validate ingest.toml once, into frozen objects; errors name the key path.

model.py     what a configuration is (the types, FORMATS, the purposes of the notice)
load.py      reading the file and its top-level sections (purposes, consents, tokens, limits)
sources.py   the [sources] tables (secrets checked as each format needs)
reader.py    typed access to a TOML table, naming the key path in every error

Each adapter's own checks of a source's settings come after: ingest.adapters.check_sources.
"""

from ingest.config.load import default_config_path, load_config, packaged_example, parse_config
from ingest.config.model import (
    ADMIN_SCOPES,
    CANONICAL_FIELDS,
    DEADLINE_RANGE,
    FORMATS,
    LAWFUL_BASES,
    LINK_DAYS_MAXIMUM,
    MAX_BODY_BYTES_CAP,
    NOTICE_PURPOSES,
    AdminToken,
    Config,
    Format,
    Limits,
    Purpose,
    Source,
    consent_text,
)
from ingest.config.reader import check_public_url

__all__ = [
    "ADMIN_SCOPES",
    "CANONICAL_FIELDS",
    "DEADLINE_RANGE",
    "FORMATS",
    "LAWFUL_BASES",
    "LINK_DAYS_MAXIMUM",
    "MAX_BODY_BYTES_CAP",
    "NOTICE_PURPOSES",
    "AdminToken",
    "Config",
    "Format",
    "Limits",
    "Purpose",
    "Source",
    "check_public_url",
    "consent_text",
    "default_config_path",
    "load_config",
    "packaged_example",
    "parse_config",
]
