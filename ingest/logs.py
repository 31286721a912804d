"""Structured JSON logs through an allow-list: only known, non-personal keys ever leave."""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Hashable, MutableMapping
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
        "seconds_left",
        "detail",
        "consent_ids",
        "kind",
        "token_name",
        "message_template",
        "directory",  # where the embedded default writes its mails (a path, not a person's)
        "mail_id",
        "attempts",
    }
)


def allow_list(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop every key that is not on the allow-list."""
    for key in [k for k in event_dict if k not in ALLOWED_KEYS]:
        del event_dict[key]
    return event_dict


class LineWriter:
    """A structlog logger that writes each record as one complete line in one `os.write`.

    Several worker processes share one stdout: a record written in pieces (the text,
    then the newline, or a buffer flushed half-way) can be split by another process's
    record, and a collector then reads two JSON objects on one line. One write of the
    whole line per record keeps every line whole (a pipe write of up to PIPE_BUF,
    4096 bytes, is atomic; our records are a few hundred bytes). A stream without a
    file descriptor (a test's StringIO) is written as a text stream.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self._fd = None

    def msg(self, message: str) -> None:
        """Write `message` and its newline at once."""
        line = message + "\n"
        with self._lock:
            if self._fd is None:
                self._stream.write(line)
                return
            data = memoryview(line.encode("utf-8"))
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except OSError:
                # The reader went away (a closed terminal or pipe): a log line must not
                # turn a request into an error, and there is nowhere left to report it.
                return

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def configure_logging(
    stream: TextIO | None = None, level: int = logging.INFO, *, final: bool = False
) -> None:
    """Send one JSON object per line to `stream` (stdout by default), each line written whole.

    `final`: this configuration lasts for the life of the process (`ingest serve`), so
    each logger is bound once, on its first use, rather than on every call (tests
    reconfigure, and leave it off).
    """
    writer = LineWriter(stream or sys.stdout)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            allow_list,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=final,
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


class RepeatLimiter:
    """At most `per_second` log lines a second of each kind; a count of the rest once the second is over.

    A flood of refused requests (bad signatures, unknown sources, rate limits) would
    otherwise write a line for each: the logs would grow as fast as an attacker sends,
    and writing them would cost more than refusing. Kinds are a closed set (route,
    status, error and reason codes, source name). Every refusal is still counted in
    /metrics; the lines left out in a second are reported by `ended` afterwards.
    """

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._window = int(clock())
        self._used: dict[Hashable, int] = {}
        self._left_out: dict[Hashable, int] = {}  # in the current second
        self._ended: dict[Hashable, int] = {}  # in seconds that are over, not yet reported

    def allow(self, kind: Hashable) -> bool:
        """Whether a line of `kind` may be written now (else it is counted as left out)."""
        self._roll()
        used = self._used.get(kind, 0)
        if used >= self.per_second:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return False
        self._used[kind] = used + 1
        return True

    def ended(self) -> dict[Hashable, int]:
        """How many lines of each kind were left out in the seconds now over (each told once)."""
        self._roll()
        if not self._ended:
            return {}
        ended, self._ended = self._ended, {}
        return ended

    def _roll(self) -> None:
        window = int(self._clock())
        if window != self._window:
            self._window = window
            self._used.clear()
            for kind, count in self._left_out.items():
                self._ended[kind] = self._ended.get(kind, 0) + count
            self._left_out.clear()


def where(exc: BaseException) -> str:
    """Where an exception was raised (file:line of the innermost frame), without its message."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown"
    code = tb.tb_frame.f_code
    return f"{code.co_filename.rsplit('/', 2)[-1]}:{tb.tb_lineno}:{code.co_name}"
