"""`ingest try`: post a provider's documented sample to an instance, signed as that provider signs.

Before a provider is wired to a source, this shows what the instance answers to that
provider's own payload (201 stored, 202 ignored, 401 a secret mismatch, 422 a field
mapping to fix). The samples are packaged in `ingest/samples/<format>/`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable

from standardwebhooks import Webhook

from ingest.config import Config, Source
from ingest.errors import ConfigError

# The sample posted when --sample is not given: one that a source with default options stores.
DEFAULT_SAMPLES = {
    "json": "partner_submission.json",
    "html": "contact_form.json",
    "hubspot": "submit_form-legacy_example.json",
    "tawkto": "chat_start.json",
    "livechat": "incoming_chat-reconstructed.json",
    "crisp": "session_set_email.json",
    "intercom": "conversation_user_created.json",
    "zendesk": "conversation_create-full_user.json",
    "typeform": "form_response.json",
    "webflow": "form_submission.json",
    "tally": "form_response.json",
    "netlify": "submission.json",
    "jotform": "minimal_submission.json",
}
TIMEOUT_SECONDS = 30


@dataclass
class Delivery:
    """One HTTP request as the provider would send it."""

    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    query: dict[str, str] = field(default_factory=dict)


def _hmac(secret: str, message: bytes, digest: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), message, digest).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _standard_webhooks(body: bytes, _: Source, secret: str) -> Delivery:
    # The verifier's own library signs too.
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, now, body.decode("utf-8"))
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    return Delivery(body, {"Content-Type": "application/json"} | headers)


def _tawkto(body: bytes, _: Source, secret: str) -> Delivery:
    headers = {"Content-Type": "application/json", "X-Tawk-Signature": _hmac(secret, body, "sha1").hex()}
    return Delivery(body, headers)


def _livechat(body: bytes, _: Source, secret: str) -> Delivery:
    payload = json.loads(body)
    payload["secret_key"] = secret  # LiveChat signs nothing: the registered secret rides in the body
    return Delivery(json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def _crisp(body: bytes, source: Source, secret: str) -> Delivery:
    if source.options.get("hook", "website") == "plugin":
        timestamp = str(int(time.time() * 1000))
        signature = _hmac(secret, b"[" + timestamp.encode() + b";" + body + b"]", "sha256").hex()
        headers = {"X-Crisp-Request-Timestamp": timestamp, "X-Crisp-Signature": signature}
        return Delivery(body, {"Content-Type": "application/json"} | headers)
    return Delivery(body, query={str(source.options.get("key_parameter", "key")): secret})


def _intercom(body: bytes, _: Source, secret: str) -> Delivery:
    signature = "sha1=" + _hmac(secret, body, "sha1").hex()
    return Delivery(body, {"Content-Type": "application/json", "X-Hub-Signature": signature})


def _zendesk(body: bytes, _: Source, secret: str) -> Delivery:
    return Delivery(body, {"Content-Type": "application/json", "X-API-Key": secret})


def _typeform(body: bytes, _: Source, secret: str) -> Delivery:
    signature = "sha256=" + _b64(_hmac(secret, body, "sha256"))
    return Delivery(body, {"Content-Type": "application/json", "Typeform-Signature": signature})


def _webflow(body: bytes, _: Source, secret: str) -> Delivery:
    timestamp = str(int(time.time() * 1000))
    signature = _hmac(secret, timestamp.encode() + b":" + body, "sha256").hex()
    headers = {"x-webflow-timestamp": timestamp, "x-webflow-signature": signature}
    return Delivery(body, {"Content-Type": "application/json"} | headers)


def _tally(body: bytes, _: Source, secret: str) -> Delivery:
    return Delivery(
        body, {"Content-Type": "application/json", "Tally-Signature": _b64(_hmac(secret, body, "sha256"))}
    )


def _netlify(body: bytes, _: Source, secret: str) -> Delivery:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"iss": "netlify", "sha256": hashlib.sha256(body).hexdigest()}).encode())
    token = f"{header}.{claims}.{_b64url(_hmac(secret, f'{header}.{claims}'.encode(), 'sha256'))}"
    return Delivery(body, {"Content-Type": "application/json", "X-Webhook-Signature": token})


def _form_body(body: bytes) -> bytes:
    fields = json.loads(body)
    return urllib.parse.urlencode(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    ).encode()


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _jotform(body: bytes, _: Source, secret: str) -> Delivery:
    return Delivery(_form_body(body), dict(_FORM), query={"key": secret})


def _html(body: bytes, source: Source, _: str) -> Delivery:
    # A browser's post: from an allowed origin, asking for the JSON answer.
    headers = _FORM | {"Accept": "application/json"}
    if source.allowed_origins:
        headers["Origin"] = min(source.allowed_origins)
    return Delivery(_form_body(body), headers)


SIGNERS: dict[str, Callable[[bytes, Source, str], Delivery]] = {
    "json": _standard_webhooks,
    "hubspot": _standard_webhooks,
    "tawkto": _tawkto,
    "livechat": _livechat,
    "crisp": _crisp,
    "intercom": _intercom,
    "zendesk": _zendesk,
    "typeform": _typeform,
    "webflow": _webflow,
    "tally": _tally,
    "netlify": _netlify,
    "jotform": _jotform,
    "html": _html,
}


def samples(fmt: str) -> list[str]:
    """The packaged sample names of a format."""
    directory = _directory(fmt)
    return sorted(item.name for item in directory.iterdir() if item.name.endswith(".json"))


def _directory(fmt: str) -> Traversable:
    return resources.files("ingest") / "samples" / fmt


def build(source: Source, sample: str | None = None) -> Delivery:
    """The request the provider of `source` would send with its sample `sample` (default: the usual one)."""
    signer = SIGNERS.get(source.format)
    if signer is None:
        raise ConfigError(
            f"sources.{source.name}.format: `ingest try` has no sample of format {source.format}"
        )
    name = sample or DEFAULT_SAMPLES[source.format]
    if name not in samples(source.format):
        raise ConfigError(f"--sample: {source.format} has {', '.join(samples(source.format))}")
    secret = ""
    if source.format != "html":
        if not source.secrets:
            names = " or ".join(source.secret_envs) or "its secret_env"
            raise ConfigError(f"sources.{source.name}.secret_env: set {names} (the secret the instance has)")
        secret = source.secrets[-1]  # during a rotation the list is old, new: a provider signs with the new
    return signer(_directory(source.format).joinpath(name).read_bytes(), source, secret)


def url_of(base: str, source: Source, delivery: Delivery) -> str:
    """Where the provider posts: the source's intake URL on `base`, with the query the scheme needs."""
    path = f"/v1/{'forms' if source.channel == 'form' else 'chats'}/{source.name}"
    query = f"?{urllib.parse.urlencode(delivery.query)}" if delivery.query else ""
    return base.rstrip("/") + path + query


def post(url: str, delivery: Delivery) -> tuple[int, str]:
    """POST the delivery; the status and body, also of an error answer."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError("--url: an http(s) URL")
    request = urllib.request.Request(url, data=delivery.body, headers=delivery.headers, method="POST")  # noqa: S310 - checked above
    try:
        with _OPENER.open(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, never followed.

    Following it would send the signed delivery and its secret-bearing headers (an API
    key, a query key) to another host.
    """

    def redirect_request(self, *_: object, **__: object) -> None:
        return None


# Straight to the instance named: no redirects, and no proxy from the environment
# (a delivery carries a provider's signature, or its key in a header or the query).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)


def run(config: Config, source_name: str, base_url: str, sample: str | None) -> int:
    """The `ingest try` command: 0 when the instance answered 2xx."""
    source = config.sources.get(source_name)
    if source is None:
        raise ConfigError(
            f"sources.{source_name}: no such source (known: {', '.join(sorted(config.sources))})"
        )
    if sample == "list":
        print("\n".join(samples(source.format)))  # noqa: T201 - a command's output
        return 0
    delivery = build(source, sample)
    url = url_of(base_url, source, delivery)
    try:
        status, body = post(url, delivery)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(  # noqa: T201 - a command's output
            f"could not reach {base_url}: {reason} (is `ingest serve` running there? --url names it)",
            file=sys.stderr,
        )
        return 1
    print(f"{status} {body}")  # noqa: T201 - a command's output
    hint = _hint(status, body)
    if hint:
        print(hint, file=sys.stderr)  # noqa: T201 - a command's output
    return 0 if 200 <= status < 300 else 1  # noqa: PLR2004 - the 2xx range


def _hint(status: int, body: str) -> str | None:
    # What a newcomer should do next; the answer itself is printed as it came.
    if status == 401:  # noqa: PLR2004 - HTTP status
        return "hint: the secret here differs from the instance's (the same secret_env variable, both sides)"
    if '"duplicate"' in body:
        return (
            "note: this sample was stored before (its delivery id is fixed), so a changed mapping "
            "was not exercised: erase it (ingest subjects erase --email ...) or try another --sample"
        )
    return None
