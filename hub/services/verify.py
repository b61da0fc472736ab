"""Inbound signature checks, one function per provider's published scheme.

Every check works on the *raw* body bytes, compares in constant time, and accepts any of several
secrets (the current one and, during a rotation's overlap window, the previous ones). A failure raises
:class:`VerifyError` (→ 401 ``signature_missing`` / ``signature_invalid`` / ``signature_expired``);
nothing is started for a request that fails.

References (how the providers document their signatures):

- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``.
- Stripe: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>[,v1=…]``; 300 s tolerance.
- Slack: ``X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:<ts>:<body>")>`` with
  ``X-Slack-Request-Timestamp``; 5 minutes tolerance.
- Standard Webhooks: ``webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<ts>.<body>")> …`` (space
  separated, several allowed), ``webhook-id``, ``webhook-timestamp``; the secret is ``whsec_<base64 key>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["VerifyError", "verify_request", "DEFAULT_TOLERANCE", "standard_webhooks_key"]

DEFAULT_TOLERANCE = 300
_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


class VerifyError(Exception):
    """The request does not prove it comes from the sender. ``code`` is the API error code."""

    def __init__(self, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


def _mac(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, message, _ALGORITHMS[algorithm]).digest()


def _any_equal(expected: Sequence[bytes | str], given: Sequence[bytes | str]) -> bool:
    """Constant time per comparison; true when any given value matches any expected one."""
    found = False
    for e in expected:
        e_b = e.encode() if isinstance(e, str) else e
        for g in given:
            g_b = g.encode() if isinstance(g, str) else g
            found |= hmac.compare_digest(e_b, g_b)
    return found


def _require(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name.lower())
    if not value:
        raise VerifyError("signature_missing", f"the {name} header is missing")
    return value.strip()


def _check_age(timestamp: str, tolerance: float, now: float, what: str) -> None:
    try:
        ts = float(timestamp)
    except ValueError:
        raise VerifyError("signature_invalid", f"{what} is not a Unix timestamp: {timestamp[:40]!r}") from None
    if abs(now - ts) > tolerance:
        raise VerifyError("signature_expired",
                          f"{what} is {int(now - ts)} s away from now; at most {int(tolerance)} s is accepted")


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64); other text is used as-is."""
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return secret.encode()


def _github(cfg, headers, body, secrets, now):
    given = _require(headers, "X-Hub-Signature-256")
    expected = ["sha256=" + _mac(s.encode(), body).hex() for s in secrets]
    if not _any_equal(expected, [given.lower()]):
        raise VerifyError("signature_invalid", "X-Hub-Signature-256 does not match the body and secret")


def _stripe(cfg, headers, body, secrets, now):
    header = _require(headers, "Stripe-Signature")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    if not parts.get("t") or not parts.get("v1"):
        raise VerifyError("signature_invalid", "Stripe-Signature has no t= timestamp or no v1= signature")
    timestamp = parts["t"][0]
    signed = timestamp.encode() + b"." + body
    expected = [_mac(s.encode(), signed).hex() for s in secrets]
    if not _any_equal(expected, parts["v1"]):
        raise VerifyError("signature_invalid", "no v1 signature in Stripe-Signature matches the body and secret")
    _check_age(timestamp, cfg.get("tolerance_seconds") or DEFAULT_TOLERANCE, now, "the Stripe-Signature timestamp")


def _slack(cfg, headers, body, secrets, now):
    given = _require(headers, "X-Slack-Signature")
    timestamp = _require(headers, "X-Slack-Request-Timestamp")
    signed = b"v0:" + timestamp.encode() + b":" + body
    expected = ["v0=" + _mac(s.encode(), signed).hex() for s in secrets]
    if not _any_equal(expected, [given]):
        raise VerifyError("signature_invalid", "X-Slack-Signature does not match the body and signing secret")
    _check_age(timestamp, cfg.get("tolerance_seconds") or DEFAULT_TOLERANCE, now, "X-Slack-Request-Timestamp")


def _standard(cfg, headers, body, secrets, now):
    msg_id = _require(headers, "webhook-id")
    timestamp = _require(headers, "webhook-timestamp")
    signatures = _require(headers, "webhook-signature").split()
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = [base64.b64encode(_mac(standard_webhooks_key(s), signed)) for s in secrets]
    given = [sig.split(",", 1)[1].encode() for sig in signatures if sig.startswith("v1,")]
    if not _any_equal(expected, given):
        raise VerifyError("signature_invalid", "no v1 signature in webhook-signature matches the body and secret")
    _check_age(timestamp, cfg.get("tolerance_seconds") or DEFAULT_TOLERANCE, now, "webhook-timestamp")


def _hmac(cfg, headers, body, secrets, now):
    name = cfg.get("header") or "X-Signature"
    given = _require(headers, name)
    algorithm = cfg.get("algorithm") or "sha256"
    prefix = cfg.get("prefix") or ""
    signed = body
    ts_header = cfg.get("timestamp_header")
    if ts_header:
        timestamp = _require(headers, ts_header)
        signed = timestamp.encode() + (cfg.get("timestamp_separator") or ".").encode() + body
    expected = []
    for s in secrets:
        digest = _mac(s.encode(), signed, algorithm)
        text = base64.b64encode(digest).decode() if cfg.get("encoding") == "base64" else digest.hex()
        expected.append(prefix + text)
    candidates = [given] if cfg.get("encoding") == "base64" else [given, given.lower()]
    if not _any_equal(expected, candidates):
        raise VerifyError("signature_invalid", f"{name} does not match the body and secret")
    if ts_header:
        _check_age(timestamp, cfg.get("tolerance_seconds") or DEFAULT_TOLERANCE, now, ts_header)


def _header(cfg, headers, body, secrets, now):
    name = cfg.get("header") or "X-Webhook-Secret"
    given = _require(headers, name)
    if not _any_equal(list(secrets), [given]):
        raise VerifyError("signature_invalid", f"{name} does not carry this webhook's secret")


def _basic(cfg, headers, body, secrets, now):
    challenge = {"WWW-Authenticate": 'Basic realm="hookhub webhook"'}
    value = headers.get("authorization", "")
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise VerifyError("signature_missing", "Basic credentials are missing", challenge)
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise VerifyError("signature_invalid", "the Basic credentials are malformed", challenge) from None
    ok_user = hmac.compare_digest(user.encode(), (cfg.get("username") or "").encode())
    if not (sep and ok_user and _any_equal(list(secrets), [password])):
        raise VerifyError("signature_invalid", "wrong username or password", challenge)


_SCHEMES = {
    "github": _github,
    "stripe": _stripe,
    "slack": _slack,
    "standard-webhooks": _standard,
    "hmac": _hmac,
    "header": _header,
    "basic": _basic,
}


def verify_request(cfg: Mapping[str, Any], headers: Mapping[str, str], body: bytes, secrets: Sequence[str],
                   now: float | None = None) -> None:
    """Check one request against a trigger's ``verify`` settings.

    :param cfg: the trigger's ``verify`` settings (``scheme`` and the scheme's options)
    :param headers: request headers, names lower-cased
    :param body: the raw body bytes, exactly as received
    :param secrets: the secrets currently accepted (several during a rotation overlap)
    :param now: Unix time (injected by tests)
    :raises VerifyError: when the request is not proven authentic
    """
    check = _SCHEMES.get(cfg.get("scheme", ""))
    if check is None:
        raise VerifyError("signature_invalid", f"unknown verification scheme {cfg.get('scheme')!r}")
    if not secrets:
        raise VerifyError("signature_invalid", "this webhook has no verification secret configured")
    check(cfg, headers, body, list(secrets), time.time() if now is None else now)
