"""The email connector against a real SMTP server (aiosmtpd) on 127.0.0.1: STARTTLS, SSL, AUTH."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator

import pytest

from connectors.email import Email
from hub.sdk import ConnectorError, RetryableError
from hub.testing import make_context, run_connector, run_inline
from tests.connectors.smtp_server import PASSWORD, WARN_AUTH, SmtpServer


@pytest.fixture
def starttls(tmp_path) -> Iterator[SmtpServer]:
    server = SmtpServer("starttls", tmp_path)
    yield server
    server.stop()


@pytest.fixture
def implicit_tls(tmp_path) -> Iterator[SmtpServer]:
    server = SmtpServer("ssl", tmp_path)
    yield server
    server.stop()


@pytest.fixture
def plain(tmp_path) -> Iterator[SmtpServer]:
    server = SmtpServer("plain", tmp_path)
    yield server
    server.stop()


def send(server: SmtpServer, smtp: dict | None = None, ctx=None, **config):
    doc = {"from": "Hookhub <hub@example.com>", "to": "ops@example.com", "subject": "Paid", "text": "hello",
           "smtp": smtp or server.config()}
    doc.update(config)
    ctx = ctx or make_context(run_id=3, node_id="notify")
    return Email().run(Email.Config().load(doc), ctx)


def test_starttls_auth_cc_bcc_html_and_attachments(starttls):
    csv_text = "id,amount\n1,12.5\n"
    png = bytes(range(256))
    out = send(
        starttls,
        to=["ops@example.com", "Finance <fin@example.com>"],
        cc="boss@example.com",
        bcc=["audit@example.com"],
        html="<p>hello <b>there</b></p>",
        attachments=[
            {"filename": "orders.csv", "content": csv_text},
            {"filename": "pixel.png", "content": base64.b64encode(png).decode(), "encoding": "base64"},
        ],
    )
    assert out["accepted"] == ["ops@example.com", "fin@example.com", "boss@example.com", "audit@example.com"]
    assert out["refused"] == {}
    [delivery] = starttls.deliveries
    assert delivery.tls and delivery.authenticated == "hookhub"
    assert delivery.sender == "hub@example.com"
    assert sorted(delivery.recipients) == sorted(out["accepted"])
    msg = delivery.message
    assert msg["Subject"] == "Paid" and msg["Cc"] == "boss@example.com"
    assert msg["Bcc"] is None and b"audit@" not in delivery.data  # bcc stays off the headers
    assert msg["Message-ID"] == out["message_id"]
    assert msg.get_body(("plain",)).get_content().strip() == "hello"
    assert "<b>there</b>" in msg.get_body(("html",)).get_content()
    attachments = {a.get_filename(): a for a in msg.iter_attachments()}
    assert attachments["orders.csv"].get_content_type() == "text/csv"
    assert attachments["orders.csv"].get_payload(decode=True) == csv_text.encode()
    assert attachments["pixel.png"].get_content_type() == "image/png"
    assert attachments["pixel.png"].get_payload(decode=True) == png


def test_every_attempt_of_a_node_sends_the_same_message_id(starttls):
    first = send(starttls, ctx=make_context(run_id=9, node_id="notify", attempt=1))
    second = send(starttls, ctx=make_context(run_id=9, node_id="notify", attempt=2))
    other = send(starttls, ctx=make_context(run_id=10, node_id="notify", attempt=1))
    assert first["message_id"] == second["message_id"] != other["message_id"]


@pytest.mark.filterwarnings(WARN_AUTH)
def test_implicit_tls(implicit_tls):
    out = send(implicit_tls)
    assert out["accepted"] == ["ops@example.com"]
    assert implicit_tls.deliveries[0].tls


def test_bad_credentials_are_a_clear_fatal_error(starttls):
    with pytest.raises(ConnectorError) as info:
        send(starttls, starttls.config(password="wrong"))
    assert not info.value.retryable
    assert "authentication failed" in info.value.message and "smtp.password" in info.value.message
    assert PASSWORD not in info.value.message and "wrong" not in info.value.message
    assert starttls.deliveries == []


def test_untrusted_certificate_is_fatal_and_names_ca_cert(starttls):
    smtp = starttls.config()
    del smtp["ca_cert"]
    with pytest.raises(ConnectorError) as info:
        send(starttls, smtp)
    assert not info.value.retryable and "ca_cert" in info.value.message


def test_starttls_against_a_server_without_it(plain):
    with pytest.raises(ConnectorError, match="does not offer STARTTLS") as info:
        send(plain, plain.config(security="starttls"))
    assert not info.value.retryable


def test_no_credentials_over_plaintext(plain):
    with pytest.raises(ConnectorError, match="unencrypted"):
        send(plain, plain.config(username="u", password="p"))
    assert plain.deliveries == []


def test_refused_recipients(plain):
    plain.handler.refuse = {"gone@example.com": "550 5.1.1 no such user", "full@example.com": "452 4.2.2 full"}
    out = send(plain, to=["ops@example.com", "gone@example.com"])
    assert out["accepted"] == ["ops@example.com"]
    assert out["refused"] == {"gone@example.com": "550 5.1.1 no such user"}
    with pytest.raises(ConnectorError) as fatal:
        send(plain, to="gone@example.com")
    assert not fatal.value.retryable and "gone@example.com: 550" in fatal.value.message
    with pytest.raises(RetryableError) as transient:
        send(plain, to="full@example.com")
    assert "452" in transient.value.message


def test_temporary_data_failure_is_retryable(plain):
    plain.handler.data_replies = ["451 4.3.0 try again later"]
    with pytest.raises(RetryableError, match="451"):
        send(plain)
    assert send(plain)["accepted"] == ["ops@example.com"]  # the next attempt gets through


def test_nothing_listening_is_retryable(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetryableError, match="connection failed"):
        run_inline(Email, {"from": "a@b.c", "to": "d@e.f", "text": "x",
                           "smtp": {"host": "127.0.0.1", "port": port, "security": "none"}})


def test_silent_server_times_out(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(RetryableError, match="timed out"):
            run_inline(Email, {"from": "a@b.c", "to": "d@e.f", "text": "x",
                               "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "timeout_seconds": 0.5}})


def test_private_network_refused_without_the_operators_allowance(plain, connects):
    with pytest.raises(ConnectorError, match="HOOKHUB_ALLOW_PRIVATE_NETWORKS") as info:
        send(plain, ctx=make_context(allowed_private_networks=()))
    assert not info.value.retryable
    assert not any(addr[:2] == ("127.0.0.1", plain.port) for addr in connects)
    assert plain.deliveries == []


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"to": "not-an-address"}, "to"),
        ({"subject": "two\nlines"}, "subject"),
        ({"smtp": {"host": "x", "security": "tls"}}, "smtp"),
        ({"to": [], "cc": []}, "to"),
        ({"attachments": [{"content": "x"}]}, "attachments"),
    ],
)
def test_config_errors_name_the_field(config, field):
    doc = {"from": "a@b.c", "to": "d@e.f", "smtp": {"host": "mail.example.com"}} | config
    assert field in Email.Config().validate(doc)


def test_spec_example_validates_and_defaults_to_a_local_mta():
    """SPEC §3's node `{to, subject, text}` is a valid config: smtp defaults to 127.0.0.1:25."""
    loaded = Email.Config().load({"to": "ops@example.com", "subject": "Paid", "text": "..."})
    assert loaded["smtp"]["host"] == "127.0.0.1" and loaded["smtp"]["port"] == 25
    assert loaded["smtp"]["security"] == "none" and loaded["from_"] == "hookhub@localhost"
    with pytest.raises(ConnectorError, match="HOOKHUB_ALLOW_PRIVATE_NETWORKS"):
        Email().run(loaded, make_context(allowed_private_networks=()))


def test_in_the_subprocess_sandbox(starttls):
    result = run_connector("email", {"from": "hub@example.com", "to": "ops@example.com", "subject": "sandboxed",
                                     "text": "hi", "smtp": starttls.config()})
    assert result.ok, result.error
    assert starttls.deliveries[0].message["Subject"] == "sandboxed"
    assert any("sent <hookhub." in line for line in result.logs)
