"""The built-in ``email`` connector: send one message over SMTP per attempt.

The standard library does the protocol (``smtplib``) and the message (``email``). What this module
adds is policy:

- the SMTP host goes through the same private-network guard as ``http`` (``connectors._net``):
  the name is resolved once, every address checked, and the socket connected to a checked one;
- credentials are never sent over a plain connection unless the node says so
  (``smtp.allow_plaintext_auth``);
- failures are classified: 4xx replies, timeouts and dropped connections are retryable, 5xx
  replies, bad credentials and TLS verification failures are not;
- the ``Message-ID`` is derived from the run and node, so every attempt of one node sends the
  *same* message id and mail systems can drop a duplicate left by a retry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, parseaddr
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from connectors._net import GuardError, guarded_connect, refusal
from hub.sdk import Connector, ConnectorError, Context, RetryableError, hookimpl

__all__ = ["Email", "hookhub_connectors"]

SECURITY = ("none", "starttls", "ssl")
DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}
MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
DEFAULT_FROM = "hookhub@localhost"
# Without `smtp`, mail goes to a local MTA, the Unix convention (cron, sendmail); reaching it needs
# the operator's HOOKHUB_ALLOW_PRIVATE_NETWORKS like any loopback target.
LOCAL_MTA: dict[str, Any] = {
    "host": "127.0.0.1", "port": 25, "security": "none", "password": "", "timeout_seconds": 30.0,
    "verify_tls": True, "allow_plaintext_auth": False,
}


def _no_newlines(value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValidationError("Must not contain line breaks.")


def _address(value: str) -> None:
    _no_newlines(value)
    _name, addr = parseaddr(value)
    if not addr or "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ValidationError(f"{value!r} is not an email address.")


_ADDRESSES_SCHEMA = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}


class _Addresses(fields.Field):
    """One address, a comma-separated string of them, or a list of them."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["metadata"] = {**_ADDRESSES_SCHEMA, **kwargs.get("metadata", {})}  # for the JSON schema
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if isinstance(value, str):
            items = [f"{n} <{a}>" if n else a for n, a in getaddresses([value])] if value.strip() else []
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = [v.strip() for v in value if v.strip()]
        else:
            raise ValidationError("Must be an email address or a list of them.")
        for item in items:
            _address(item)
        return items


class SmtpSchema(Schema):
    class Meta:
        unknown = "raise"

    host = fields.String(required=True, validate=[validate.Length(min=1, max=253), _no_newlines])
    port = fields.Integer(
        validate=validate.Range(min=1, max=65535),
        metadata={"description": "Default: 587 for starttls, 465 for ssl, 25 for none."},
    )
    security = fields.String(
        load_default="starttls",
        validate=validate.OneOf(SECURITY),
        metadata={"description": "starttls (default), ssl (implicit TLS) or none."},
    )
    username = fields.String(validate=_no_newlines)
    password = fields.String(load_default="")
    timeout_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=0, max=300, min_inclusive=False))
    verify_tls = fields.Boolean(load_default=True)
    ca_cert = fields.String(metadata={"description": "PEM certificate(s) to trust instead of the system CAs."})
    allow_plaintext_auth = fields.Boolean(
        load_default=False, metadata={"description": "Send username/password even when security is none."}
    )


class AttachmentSchema(Schema):
    class Meta:
        unknown = "raise"

    filename = fields.String(required=True, validate=[validate.Length(min=1, max=255), _no_newlines])
    content = fields.String(required=True, metadata={"description": "Text, or base64 with encoding: base64."})
    content_type = fields.String(
        validate=validate.Regexp(r"^[\w.+-]+/[\w.+-]+$"),
        metadata={"description": "Default: guessed from the filename."},
    )
    encoding = fields.String(load_default="text", validate=validate.OneOf(["text", "base64"]))


class Email(Connector):
    """Send an email over SMTP."""

    name = "email"
    version = "1.0.0"
    description = "Send an email over SMTP (STARTTLS/SSL, auth, cc/bcc, HTML, attachments)."
    permissions = {"network": True}

    class Config(Connector.Config):
        to = _Addresses(required=True, metadata={"description": "Recipient(s)."})
        cc = _Addresses(load_default=list)
        bcc = _Addresses(load_default=list, metadata={"description": "Recipients not shown in the headers."})
        from_ = fields.String(
            data_key="from",
            load_default=DEFAULT_FROM,
            validate=_address,
            metadata={"description": f"The sender; default {DEFAULT_FROM}."},
        )
        reply_to = fields.String(validate=_address)
        subject = fields.String(load_default="", validate=_no_newlines)
        text = fields.String(metadata={"description": "Plain-text body."})
        html = fields.String(metadata={"description": "HTML body (sent as an alternative to text)."})
        attachments = fields.List(fields.Nested(AttachmentSchema), load_default=list)
        headers = fields.Dict(
            keys=fields.String(validate=validate.Regexp(r"^[A-Za-z0-9-]+$")),
            values=fields.String(validate=_no_newlines),
            load_default=dict,
            metadata={"description": "Extra headers, e.g. X-Priority."},
        )
        smtp = fields.Nested(
            SmtpSchema,
            load_default=lambda: dict(LOCAL_MTA),
            metadata={"description": "The SMTP server; default a local MTA at 127.0.0.1:25 (security none)."},
        )

        @validates_schema
        def _recipients(self, data: dict[str, Any], **_: Any) -> None:
            if not (data.get("to") or data.get("cc") or data.get("bcc")):
                raise ValidationError("At least one recipient is needed.", "to")

    def run(self, config: dict[str, Any], ctx: Context) -> dict[str, Any]:
        cfg = config  # validated and loaded (defaults filled in) by the sandbox
        message = _message(cfg, ctx)
        recipients = [parseaddr(a)[1] for a in cfg["to"] + cfg["cc"] + cfg["bcc"]]
        sender = parseaddr(cfg["from_"])[1]
        refused = _send(cfg["smtp"], message, sender, recipients, ctx)
        accepted = [r for r in recipients if r not in refused]
        ctx.log.info("sent %s to %d recipient(s) via %s", message["Message-ID"], len(accepted), cfg["smtp"]["host"])
        return {
            "message_id": message["Message-ID"],
            "accepted": accepted,
            "refused": {k: f"{v[0]} {_text(v[1])}" for k, v in refused.items()},
        }


@hookimpl
def hookhub_connectors() -> list[type[Connector]]:
    return [Email]


# --- message ---------------------------------------------------------------------------------


def _message(cfg: dict[str, Any], ctx: Context) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = cfg["from_"]
    if cfg["to"]:
        msg["To"] = ", ".join(cfg["to"])
    if cfg["cc"]:
        msg["Cc"] = ", ".join(cfg["cc"])
    if cfg.get("reply_to"):
        msg["Reply-To"] = cfg["reply_to"]
    msg["Subject"] = cfg["subject"]
    msg["Date"] = formatdate(localtime=False)
    domain = parseaddr(cfg["from_"])[1].rpartition("@")[2] or "hookhub.invalid"
    # one id per node of a run, the same on every attempt: a retry after a lost reply is a duplicate
    # that receivers can recognise
    digest = hashlib.sha256(f"{ctx.run_id}:{ctx.node_id}".encode()).hexdigest()[:32]
    msg["Message-ID"] = f"<hookhub.{digest}@{domain}>"
    for key, value in cfg["headers"].items():
        if key.lower() in {"from", "to", "cc", "bcc", "subject", "message-id", "date"}:
            raise ConnectorError(f"email: set {key} with its own option, not in headers")
        msg[key] = value

    text, html = cfg.get("text"), cfg.get("html")
    if text is not None or html is None:
        msg.set_content(text or "")
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html, subtype="html")

    total = 0
    for i, att in enumerate(cfg["attachments"]):
        data = _attachment_bytes(att, i)
        total += len(data)
        if total > MAX_ATTACHMENT_BYTES:
            raise ConnectorError(f"email: attachments exceed {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MiB")
        ctype = att.get("content_type") or mimetypes.guess_type(att["filename"])[0] or "application/octet-stream"
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=att["filename"])
    return msg


def _attachment_bytes(att: dict[str, Any], index: int) -> bytes:
    if att["encoding"] == "text":
        return att["content"].encode("utf-8")
    try:
        return base64.b64decode(att["content"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConnectorError(f"email: attachments[{index}] ({att['filename']}) is not valid base64: {exc}") from exc


# --- transport -------------------------------------------------------------------------------


class _GuardedMixin:
    """Connects through the SSRF guard instead of ``socket.create_connection``."""

    allowed: tuple[str, ...] = ()
    scheme = "smtp"

    def _get_socket(self, host: str, port: int, timeout: float | None) -> socket.socket:
        return guarded_connect(host, port, self.allowed, scheme=self.scheme, timeout=timeout)


class _SMTP(_GuardedMixin, smtplib.SMTP):
    pass


class _SMTPSSL(_GuardedMixin, smtplib.SMTP_SSL):
    scheme = "smtps"

    def _get_socket(self, host: str, port: int, timeout: float | None) -> socket.socket:
        return self.context.wrap_socket(super()._get_socket(host, port, timeout), server_hostname=self._host)


def _tls_context(smtp: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=smtp["ca_cert"] if smtp.get("ca_cert") else None)
    if not smtp["verify_tls"]:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _send(smtp: dict[str, Any], msg: EmailMessage, sender: str, recipients: list[str], ctx: Context) -> dict:
    host, security = smtp["host"], smtp["security"]
    port = smtp.get("port") or DEFAULT_PORTS[security]
    where = f"SMTP {host}:{port}"
    username = smtp.get("username")
    if username and security == "none" and not smtp["allow_plaintext_auth"]:
        raise ConnectorError(
            f"{where}: refusing to send credentials over an unencrypted connection; use security: starttls "
            "or ssl (or set allow_plaintext_auth: true for a trusted relay)"
        )
    try:
        context = _tls_context(smtp)
    except ssl.SSLError as exc:
        raise ConnectorError(f"{where}: ca_cert is not a usable PEM certificate: {exc}") from exc
    cls = _SMTPSSL if security == "ssl" else _SMTP
    kwargs: dict[str, Any] = {"timeout": smtp["timeout_seconds"]}
    if security == "ssl":
        kwargs["context"] = context
    client = cls(**kwargs)
    client.allowed = tuple(ctx.allowed_private_networks)
    client._host = host  # what TLS verifies and sends as SNI; smtplib sets it only when __init__ connects
    try:
        try:
            client.connect(host, port)
            client.ehlo_or_helo_if_needed()
            if security == "starttls":
                client.starttls(context=context)
                client.ehlo()
            if username:
                client.login(username, smtp["password"])
            return client.send_message(msg, from_addr=sender, to_addrs=recipients)
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
    except GuardError as exc:
        raise refusal(exc, "SMTP", f"{cls.scheme}://{host}:{port}") from exc
    except smtplib.SMTPNotSupportedError as exc:
        if "auth" in str(exc).lower():
            raise ConnectorError(
                f"{where} does not offer AUTH on this connection; check smtp.security, or leave out "
                "smtp.username for a relay that needs no login"
            ) from exc
        raise ConnectorError(
            f"{where} does not offer STARTTLS; use security: ssl if it speaks implicit TLS, or none for a "
            "trusted relay"
        ) from exc
    except smtplib.SMTPAuthenticationError as exc:
        raise ConnectorError(
            f"{where}: authentication failed for {username!r} ({exc.smtp_code} {_text(exc.smtp_error)}); check "
            "smtp.username and smtp.password"
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {code for code, _ in exc.recipients.values()}
        detail = "; ".join(f"{r}: {c} {_text(m)}" for r, (c, m) in exc.recipients.items())
        error = RetryableError if all(400 <= c < 500 for c in codes) else ConnectorError
        raise error(f"{where} refused every recipient: {detail}") from exc
    except smtplib.SMTPResponseException as exc:  # sender refused, data refused, other replies
        error = RetryableError if 400 <= exc.smtp_code < 500 else ConnectorError
        raise error(f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except ssl.SSLCertVerificationError as exc:
        raise ConnectorError(
            f"{where}: TLS certificate not trusted: {exc.verify_message}; pass the server's certificate as "
            "smtp.ca_cert (or verify_tls: false)"
        ) from exc
    except ssl.SSLError as exc:
        raise ConnectorError(f"{where}: TLS error: {exc}") from exc
    except smtplib.SMTPHeloError as exc:
        raise RetryableError(f"{where} refused our greeting: {exc}") from exc
    except socket.gaierror as exc:
        raise RetryableError(f"{where}: cannot resolve {host}: {exc.strerror}") from exc
    except TimeoutError as exc:
        raise RetryableError(f"{where} timed out after {smtp['timeout_seconds']:g} s") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise RetryableError(f"{where}: connection failed: {exc}") from exc


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())
