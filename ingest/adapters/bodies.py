"""The strict body parsers adapters share: media types, JSON, charsets, forms (pure: no I/O, no logging)."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import functools
import json
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ingest.errors import MalformedBody, UnsupportedMediaType, ValidationFailed

if TYPE_CHECKING:
    from ingest.adapters.base import Adapter
    from ingest.domain import InboundRequest


MAX_FORM_FIELDS = 200
MAX_MULTIPART_HEADER = 1024  # bytes of one part's header block (a browser's are ~100)
# A browser writes Content-Disposition and at most Content-Type, one line each, with
# two or three parameters; the mail parser's header parsing costs ~10 ms per
# KiB of hostile parameters, so a part header beyond these is refused unparsed.
MAX_PART_HEADER_LINES = 4
MAX_PART_HEADER_PARAMETERS = 8
# Longest Content-Type header read; real ones are under 100 bytes.
MAX_CONTENT_TYPE = 1024
_CACHED_HEADER_MAX = 200
_CHARSETS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "iso-8859-1": "latin-1",
    "latin-1": "latin-1",
    "latin1": "latin-1",
    "windows-1252": "cp1252",
    "cp1252": "cp1252",
}


@functools.lru_cache(maxsize=256)
def _media_type(content_type: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    msg = email.message.Message()
    msg["content-type"] = content_type
    params = tuple(
        # An RFC 2231 parameter (`charset*=utf-8''x`) comes back as a tuple: its text is the value.
        (k.lower(), email.utils.collapse_rfc2231_value(v))
        for k, v in msg.get_params(failobj=[])[1:]
    )
    return msg.get_content_type().lower(), params


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type header into its lower-cased media type and parameters.

    Senders repeat the same few headers, so the parse is cached (the header is not
    personal data); a header too long to be real is parsed without caching, and one
    over MAX_CONTENT_TYPE is refused unparsed (email's parameter split is quadratic
    in the number of `;` inside an open quote).
    """
    if len(content_type) > MAX_CONTENT_TYPE:
        raise UnsupportedMediaType
    parse = _media_type if len(content_type) <= _CACHED_HEADER_MAX else _media_type.__wrapped__
    kind, params = parse(content_type)
    return kind, dict(params)


def require_content_type(adapter: Adapter, request: InboundRequest) -> tuple[str, dict[str, str]]:
    """Refuse a body whose media type this adapter does not read."""
    kind, params = media_type(request.content_type or "")
    if kind not in adapter.content_types:
        raise UnsupportedMediaType
    return kind, params


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedBody
        result[key] = value
    return result


def _reject_constant(_: str) -> None:
    raise MalformedBody


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON object strictly: UTF-8, no duplicate keys, no NaN, bounded depth."""
    try:
        text = body.decode("utf-8-sig" if body.startswith(b"\xef\xbb\xbf") else "utf-8")
        value = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers JSONDecodeError and ints over Python's digit limit.
        raise MalformedBody from None
    if not isinstance(value, dict):
        raise MalformedBody
    return value


def _charset(params: Mapping[str, str]) -> str:
    charset = _CHARSETS.get(params.get("charset", "utf-8").strip().lower())
    if charset is None:
        raise UnsupportedMediaType
    return charset


def _decode(body: bytes, charset: str) -> str:
    try:
        return body.decode(charset)
    except UnicodeDecodeError:
        raise MalformedBody from None


def decode_text(body: bytes, params: Mapping[str, str]) -> str:
    """Decode a text body by its declared charset (UTF-8 when none)."""
    return _decode(body, _charset(params))


def parse_urlencoded(body: bytes, params: Mapping[str, str]) -> list[tuple[str, str]]:
    """Parse application/x-www-form-urlencoded into ordered pairs.

    Percent-escapes stand for bytes in the declared charset too (`%E9` is é in latin-1).
    """
    charset = _charset(params)
    text = _decode(body, charset)
    try:
        return urllib.parse.parse_qsl(
            text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, encoding=charset, errors="strict"
        )
    except (ValueError, UnicodeDecodeError):
        raise MalformedBody from None


def _plain_form_data(body: bytes, content_type: str) -> bool:
    """Cheap checks before the e-mail parser, which takes seconds on hostile headers.

    A browser's form-data has at most MAX_FORM_FIELDS parts, short one-line part
    headers and no nested multipart parts (which we refuse anyway): anything else
    is refused unparsed. One pass over the lines, split as the e-mail parser splits
    them (CR, LF or CRLF), so the work is linear in the body.
    """
    if len(content_type) > MAX_MULTIPART_HEADER:
        return False
    boundary = media_type(content_type)[1].get("boundary", "").strip('"')
    if not boundary or len(boundary) > 70 or not boundary.isascii():  # noqa: PLR2004 - RFC 2046
        return False
    delimiter = b"--" + boundary.encode("ascii")
    parts = 0
    header_lines = -1  # lines of the part header being read; -1 outside a part header
    header_bytes = 0
    for line in body.splitlines():
        rest = line[len(delimiter) :] if line.startswith(delimiter) else None
        # The mail parser's boundary line: the delimiter, an optional "--", then blanks.
        if rest is not None and not rest.removeprefix(b"--").strip(b" \t"):
            if rest.startswith(b"--"):
                return True  # what follows is the epilogue, never parsed into parts
            parts += 1
            if parts > MAX_FORM_FIELDS:
                return False
            header_lines, header_bytes = 0, 0
        elif header_lines < 0:
            continue  # preamble or a part's content
        elif not line:
            header_lines = -1  # the blank line that ends a part header
        else:
            header_lines += 1
            header_bytes += len(line) + 2
            if (
                header_lines > MAX_PART_HEADER_LINES
                or header_bytes > MAX_MULTIPART_HEADER
                or line.startswith((b" ", b"\t"))  # obsolete line folding
                or line.count(b";") > MAX_PART_HEADER_PARAMETERS
                or b"multipart/" in line.lower()
            ):
                return False
    return True


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """Parse multipart/form-data text fields; file parts are refused."""
    if not _plain_form_data(body, content_type):  # also: no boundary, no parse
        raise MalformedBody
    # compat32 keeps header values as text: email.policy.HTTP's header parser costs
    # tens of ms on a 1 KiB header of many words, superlinear in its length.
    parser = email.parser.BytesParser(policy=email.policy.compat32)
    try:
        message = parser.parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    except (ValueError, UnicodeError, IndexError, TypeError, RecursionError):
        raise MalformedBody from None
    if not message.is_multipart():
        raise MalformedBody
    parts = message.get_payload()
    if not isinstance(parts, list) or not parts or len(parts) > MAX_FORM_FIELDS:
        raise MalformedBody
    return [_text_field(part) for part in parts]


def _text_field(part: object) -> tuple[str, str]:
    """One form-data part's name and text; a file part is refused."""
    if not isinstance(part, email.message.Message) or part.is_multipart():
        raise MalformedBody
    headers = _readable_headers(part)
    if headers.get_content_disposition() != "form-data":
        raise MalformedBody
    name = _param(headers, "name")
    if name is None:
        raise MalformedBody
    if _param(headers, "filename") is not None:
        raise ValidationFailed({"file": ["File uploads are not accepted."]})  # its name is not echoed
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise MalformedBody
    charset = headers.get_content_charset() or "utf-8"
    return name, decode_text(payload, {"charset": charset})


def _readable_headers(part: email.message.Message) -> email.message.Message:
    """A part's headers as text: the parser keeps their raw bytes as surrogates, browsers send UTF-8."""
    headers = email.message.Message()
    for key, value in part.raw_items():
        headers[key] = value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    return headers


def _param(headers: email.message.Message, name: str) -> str | None:
    """One Content-Disposition parameter; an RFC 2231 one (`name*=utf-8''...`) decoded."""
    value = headers.get_param(name, header="content-disposition")
    if value is None:
        return None
    return email.utils.collapse_rfc2231_value(value)


def form_pairs(adapter: Adapter, request: InboundRequest) -> list[tuple[str, str]]:
    """Parse a urlencoded or multipart body into (name, value) pairs."""
    kind, params = require_content_type(adapter, request)
    if kind == "multipart/form-data":
        return parse_multipart(request.body, request.content_type)
    return parse_urlencoded(request.body, params)


def text_bytes(value: str) -> bytes:
    """UTF-8 of a header or query value, which may hold surrogates (undecodable bytes)."""
    return value.encode("utf-8", "surrogatepass")
