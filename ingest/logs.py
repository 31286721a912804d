"""Structured JSON logs through an allow-list: only known, non-personal keys ever leave."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

# Keys a log line may carry. Values are ids, codes, counts and timings set by our
# own code; anything else (a stray kwarg, an exception message) is dropped.
ALLOWED_KEYS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "request_id",
        "method",
        "route",
        "status",
        "latency_ms",
        "source",
        "channel",
        "format",
        "outcome",
        "error",
        "reason",
        "submission_id",
        "count",
        "version",
        "exc_type",
        "where",
        "host",
        "port",
        "workers",
        "pid",
        "data_dir",
        "dsn_host",
        "removed",
        "dry_run",
        "batch_size",
        "attempt",
        "consent_ids",
        "kind",
        "token_name",
    }
)


def allow_list(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop every key that is not on the allow-list."""
    for key in [k for k in event_dict if k not in ALLOWED_KEYS]:
        del event_dict[key]
    return event_dict


def configure_logging(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Send one JSON object per line to `stream` (stdout by default)."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            allow_list,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    # aiohttp's own access log would print client IPs: keep it off. Other libraries'
    # records (warning and above) become JSON lines naming the logger, the level and
    # the exception type only: their messages and tracebacks quote raw requests
    # (aiohttp's "Error handling request" carries the request line, headers, body).
    logging.getLogger("aiohttp.access").disabled = True
    logging.basicConfig(level=logging.WARNING, handlers=[LibraryHandler()], force=True)


class LibraryHandler(logging.Handler):
    """Re-emit a library's log record without its message, arguments or traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        """One allow-listed JSON line: logger, level, exception type."""
        # No handleError() fallback: it would print the record's message and arguments.
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info and record.exc_info[0] is not None:
            fields["exc_type"] = record.exc_info[0].__name__
        structlog.get_logger(record.name).log(record.levelno, "library_log", **fields)


def where(exc: BaseException) -> str:
    """Where an exception was raised (file:line of the innermost frame), without its message."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown"
    code = tb.tb_frame.f_code
    return f"{code.co_filename.rsplit('/', 2)[-1]}:{tb.tb_lineno}:{code.co_name}"
