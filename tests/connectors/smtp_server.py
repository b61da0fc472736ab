"""A real SMTP server on 127.0.0.1 (aiosmtpd) with STARTTLS, implicit TLS and AUTH, for connector tests."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port

USER, PASSWORD = "hookhub", "s3cret-pass"
WARN_AUTH = "ignore:Requiring AUTH while not requiring TLS:UserWarning"


def self_signed(directory: Path) -> tuple[Path, Path, str]:
    """A certificate for localhost/127.0.0.1 made here: (cert file, key file, cert PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(pem)
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file, pem.decode()


@dataclass
class Delivery:
    sender: str
    recipients: list[str]
    data: bytes
    tls: bool
    authenticated: str | None

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class Handler:
    deliveries: list[Delivery] = field(default_factory=list)
    #: address -> reply for RCPT TO, e.g. "550 5.1.1 no such user"
    refuse: dict[str, str] = field(default_factory=dict)
    #: replies for DATA, used one per message before accepting
    data_replies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            self.deliveries.append(
                Delivery(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content or envelope.content,
                    session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                    session.auth_data.decode() if isinstance(session.auth_data, bytes) else None,
                )
            )
        return "250 Message accepted for delivery"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


class SmtpServer:
    """``mode``: "starttls" (STARTTLS required, AUTH required), "ssl" (implicit TLS, AUTH) or "plain"."""

    def __init__(self, mode: str, directory: Path) -> None:
        self.mode = mode
        self.handler = Handler()
        self.cert_file, self.key_file, self.cert_pem = self_signed(directory)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.cert_file, self.key_file)
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if mode == "starttls":
            kwargs = dict(tls_context=tls, require_starttls=True, auth_required=True, authenticator=_authenticator)
        elif mode == "ssl":
            # aiosmtpd counts only STARTTLS as TLS for AUTH; implicit TLS is encrypted from the first byte.
            # It warns on every connection: tests using this mode ignore that UserWarning (WARN_AUTH).
            kwargs = dict(ssl_context=tls, auth_required=True, authenticator=_authenticator, auth_require_tls=False)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    @property
    def deliveries(self) -> list[Delivery]:
        return self.handler.deliveries

    def config(self, **overrides: Any) -> dict[str, Any]:
        smtp: dict[str, Any] = {"host": "127.0.0.1", "port": self.port}
        if self.mode in ("starttls", "ssl"):
            smtp.update(security=self.mode, username=USER, password=PASSWORD, ca_cert=self.cert_pem)
        else:
            smtp["security"] = "none"
        smtp.update(overrides)
        return smtp

    def stop(self) -> None:
        self.controller.stop()
