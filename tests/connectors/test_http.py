"""The http connector, run in-process against real servers on loopback."""

from __future__ import annotations

import base64
import email.utils
import time
from typing import Any

import pytest

from connectors.http import Http, _retry_after
from hub.sdk import ConnectorError, Context, RetryableError


def run(config: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return Http().run(config, ctx)


def echo(server, ctx, **config: Any) -> dict[str, Any]:
    out = run({"url": server.url("/echo"), **config}, ctx)
    assert out["status"] == 200
    return out["body"]


# --- requests ------------------------------------------------------------------------------


def test_get_json_response_is_parsed(server, ctx):
    out = run({"url": server.url("/echo")}, ctx)
    assert out["status"] == 200
    assert out["headers"]["content-type"] == "application/json"
    assert out["body"]["method"] == "GET"
    assert out["url"] == server.url("/echo")


def test_text_response_stays_text(server, ctx):
    assert run({"url": server.url("/text")}, ctx)["body"] == "plain ünïcode text"


def test_invalid_json_is_returned_as_text(server, ctx):
    assert run({"url": server.url("/badjson")}, ctx)["body"] == "{not json"


def test_binary_response_is_base64(server, ctx):
    out = run({"url": server.url("/binary")}, ctx)
    assert out["body_encoding"] == "base64"
    assert base64.b64decode(out["body"]) == bytes(range(256))


def test_post_json(server, ctx):
    seen = echo(server, ctx, method="post", json={"a": [1, 2], "b": None})
    assert seen["method"] == "POST"
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["body"] == '{"a": [1, 2], "b": null}'


def test_post_form(server, ctx):
    seen = echo(server, ctx, method="POST", form={"a": "1", "b": ["x", "y"], "c": True})
    assert seen["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert seen["body"] == "a=1&b=x&b=y&c=true"


def test_put_raw_body(server, ctx):
    seen = echo(server, ctx, method="PUT", body="<xml/>", headers={"Content-Type": "application/xml"})
    assert seen["method"] == "PUT"
    assert seen["headers"]["content-type"] == "application/xml"
    assert seen["body"] == "<xml/>"


@pytest.mark.parametrize("method", ["PATCH", "DELETE", "OPTIONS"])
def test_other_methods(server, ctx, method):
    assert echo(server, ctx, method=method)["method"] == method


def test_head_has_no_body(server, ctx):
    out = run({"url": server.url("/text"), "method": "HEAD"}, ctx)
    assert out["status"] == 200
    assert out["body"] == ""
    assert server.requests[-1].method == "HEAD"


def test_headers_and_query(server, ctx):
    seen = echo(
        server,
        ctx,
        headers={"X-Trace": "abc"},
        query={"q": "a b", "n": 3, "many": ["1", "2"], "skip": None},
    )
    assert seen["headers"]["x-trace"] == "abc"
    assert seen["headers"]["user-agent"].startswith("hookhub-http/")
    assert seen["query"] == {"q": ["a b"], "n": ["3"], "many": ["1", "2"]}


def test_query_is_added_to_the_url_query(server, ctx):
    out = run({"url": server.url("/echo?x=1"), "query": {"y": "2"}}, ctx)
    assert out["body"]["query"] == {"x": ["1"], "y": ["2"]}


def test_idempotency_key_is_sent(server, context_for):
    key = "3f" * 32
    seen = echo(server, context_for("127.0.0.0/8", key=key))
    assert seen["headers"]["idempotency-key"] == key


def test_user_idempotency_key_wins(server, ctx):
    seen = echo(server, ctx, headers={"idempotency-key": "mine"})
    assert seen["headers"]["idempotency-key"] == "mine"


def test_bearer_auth(server, ctx):
    seen = echo(server, ctx, auth={"type": "bearer", "token": "t0k"})
    assert seen["headers"]["authorization"] == "Bearer t0k"


def test_basic_auth(server, ctx):
    seen = echo(server, ctx, auth={"type": "basic", "username": "ann", "password": "s3cret"})
    assert seen["headers"]["authorization"] == "Basic " + base64.b64encode(b"ann:s3cret").decode()


def test_header_auth(server, ctx):
    seen = echo(server, ctx, auth={"type": "header", "name": "X-Api-Key", "value": "k1"})
    assert seen["headers"]["x-api-key"] == "k1"


def test_auth_replaces_a_hand_written_authorization_header(server, ctx):
    seen = echo(server, ctx, headers={"authorization": "old"}, auth={"type": "bearer", "token": "new"})
    assert seen["headers"]["authorization"] == "Bearer new"


# --- status classification -----------------------------------------------------------------


def test_500_is_retryable(server, ctx):
    with pytest.raises(RetryableError) as err:
        run({"url": server.url("/status/500?body=database+is+down")}, ctx)
    assert "500" in err.value.message and "database is down" in err.value.message
    assert err.value.retry_after is None


@pytest.mark.parametrize("code", [408, 429, 502, 503])
def test_transient_statuses_are_retryable(server, ctx, code):
    with pytest.raises(RetryableError):
        run({"url": server.url(f"/status/{code}")}, ctx)


def test_429_retry_after_seconds(server, ctx):
    with pytest.raises(RetryableError) as err:
        run({"url": server.url("/status/429?retry_after=7")}, ctx)
    assert err.value.retry_after == 7


def test_503_retry_after_http_date(server, ctx):
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    with pytest.raises(RetryableError) as err:
        run({"url": server.url("/status/503"), "query": {"retry_after": when}}, ctx)
    assert 100 < err.value.retry_after <= 120


def test_retry_after_parsing():
    assert _retry_after(None) is None
    assert _retry_after("1.5") == 1.5
    assert _retry_after("-3") == 0
    assert _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past


def test_404_is_fatal_with_an_excerpt(server, ctx):
    with pytest.raises(ConnectorError) as err:
        run({"url": server.url("/nowhere")}, ctx)
    assert not isinstance(err.value, RetryableError)
    assert "404" in err.value.message and "no such route" in err.value.message


def test_long_error_bodies_are_cut(server, ctx):
    with pytest.raises(ConnectorError) as err:
        run({"url": server.url("/status/400"), "query": {"body": "x" * 5000}}, ctx)
    assert len(err.value.message) < 400


def test_fail_on_status_false_returns_the_response(server, ctx):
    out = run({"url": server.url("/status/503"), "fail_on_status": False}, ctx)
    assert out["status"] == 503
    assert out["body"] == "status 503"


# --- timeouts, size, redirects -------------------------------------------------------------


def test_timeout_is_retryable(server, ctx):
    started = time.monotonic()
    with pytest.raises(RetryableError, match="timed out"):
        run({"url": server.url("/slow?sleep=3"), "timeout_seconds": 0.3}, ctx)
    assert time.monotonic() - started < 2


def test_whole_response_deadline(server, ctx):
    """A server dripping a byte at a time never trips a read timeout; the deadline still holds."""
    started = time.monotonic()
    with pytest.raises(RetryableError, match="timed out"):
        run({"url": server.url("/drip?n=50&every=0.1"), "timeout_seconds": 0.5}, ctx)
    assert time.monotonic() - started < 2


def test_connection_refused_is_retryable(ctx):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetryableError, match="connection failed"):
        run({"url": f"http://127.0.0.1:{port}/"}, ctx)


@pytest.mark.parametrize("length", ["0", "1"])
def test_oversized_response_is_refused(server, ctx, length):
    with pytest.raises(ConnectorError, match="max_response_bytes=100000") as err:
        run({"url": server.url(f"/big?n=5000000&length={length}"), "max_response_bytes": 100_000}, ctx)
    assert not isinstance(err.value, RetryableError)


def test_response_at_the_cap_is_fine(server, ctx):
    out = run({"url": server.url("/big?n=1000"), "max_response_bytes": 1000}, ctx)
    assert len(base64.b64decode(out["body"])) == 1000 if "body_encoding" in out else len(out["body"]) == 1000


def test_redirects_are_followed(server, ctx):
    out = run({"url": server.url("/redirect"), "query": {"to": server.url("/echo")}}, ctx)
    assert out["status"] == 200
    assert out["url"] == server.url("/echo")


def test_redirects_can_be_returned(server, ctx):
    out = run({"url": server.url("/redirect"), "query": {"to": "/echo"}, "follow_redirects": False}, ctx)
    assert out["status"] == 302
    assert out["headers"]["location"] == "/echo"


def test_redirect_loop_stops(server, ctx):
    with pytest.raises(ConnectorError, match="redirects") as err:
        run({"url": server.url("/loop")}, ctx)
    assert not isinstance(err.value, RetryableError)
    assert len(server.requests) == 6  # the first request and 5 redirects


def test_max_redirects_zero_refuses_a_redirect(server, ctx):
    with pytest.raises(ConnectorError, match="redirects"):
        run({"url": server.url("/loop"), "max_redirects": 0}, ctx)


def test_auth_header_dropped_on_cross_origin_redirect(server, other_server, context_for):
    ctx = context_for("127.0.0.0/8")
    run(
        {
            "url": server.url("/redirect"),
            "query": {"to": other_server.url("/echo")},
            "auth": {"type": "header", "name": "X-Api-Key", "value": "secret"},
        },
        ctx,
    )
    assert server.requests[0].headers.get("X-Api-Key") == "secret"
    assert "X-Api-Key" not in other_server.requests[0].headers


# --- SSRF guard ----------------------------------------------------------------------------


def test_loopback_refused_without_allowance(server, context_for, connects):
    with pytest.raises(ConnectorError) as err:
        run({"url": server.url("/echo")}, context_for())
    message = err.value.message
    assert not isinstance(err.value, RetryableError)
    assert "127.0.0.1" in message and "HOOKHUB_ALLOW_PRIVATE_NETWORKS" in message
    assert server.requests == []
    assert connects == []


def test_loopback_allowed_with_allowance(server, context_for):
    assert run({"url": server.url("/echo")}, context_for("127.0.0.0/8"))["status"] == 200


def test_star_allows_everything(server, context_for):
    assert run({"url": server.url("/echo")}, context_for("*"))["status"] == 200


def test_hostname_is_checked_after_resolution(server, context_for, connects):
    """localhost is a name, not an address: it is refused once it resolves to loopback."""
    with pytest.raises(ConnectorError, match="127.0.0.1.*HOOKHUB_ALLOW_PRIVATE_NETWORKS"):
        run({"url": f"http://localhost:{server.port}/echo"}, context_for())
    assert connects == []
    out = run({"url": f"http://localhost:{server.port}/echo"}, context_for("127.0.0.0/8"))
    assert out["status"] == 200


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1:8080/",
        "http://[::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://100.64.0.1/",
    ],
)
def test_private_targets_refused_before_connecting(url, ctx, connects):
    with pytest.raises(ConnectorError, match="HOOKHUB_ALLOW_PRIVATE_NETWORKS") as err:
        run({"url": url, "timeout_seconds": 1}, ctx)
    assert not isinstance(err.value, RetryableError)
    assert connects == []


def test_allowance_is_exact(server, other_server, context_for, connects):
    """127.0.0.1/32 lets 127.0.0.1 through and nothing next to it."""
    ctx = context_for("127.0.0.1/32")
    assert run({"url": server.url("/echo")}, ctx)["status"] == 200
    with pytest.raises(ConnectorError, match="127.0.0.2"):
        run({"url": other_server.url("/echo")}, ctx)
    assert other_server.requests == []


def test_ipv6_loopback_allowed_by_its_own_cidr(server6, context_for):
    with pytest.raises(ConnectorError, match="::1"):
        run({"url": server6.url("/echo")}, context_for("127.0.0.0/8"))
    assert run({"url": server6.url("/echo")}, context_for("::1/128"))["status"] == 200


def test_redirect_to_private_address_refused(server, other_server, context_for, connects):
    """Every hop is checked: an allowed server cannot bounce us to an address that is not."""
    ctx = context_for("127.0.0.1/32")
    with pytest.raises(ConnectorError, match="127.0.0.2.*HOOKHUB_ALLOW_PRIVATE_NETWORKS"):
        run({"url": server.url("/redirect"), "query": {"to": other_server.url("/echo")}}, ctx)
    assert len(server.requests) == 1
    assert other_server.requests == []
    assert all(addr[0] != "127.0.0.2" for addr in connects)


def test_redirect_to_metadata_refused_before_connecting(server, ctx, connects):
    with pytest.raises(ConnectorError, match="169.254.169.254"):
        run({"url": server.url("/redirect"), "query": {"to": "http://169.254.169.254/latest/"}}, ctx)
    assert [addr[0] for addr in connects] == ["127.0.0.1"]


def test_bad_allowance_is_a_clear_error(server, context_for):
    with pytest.raises(ConnectorError, match="HOOKHUB_ALLOW_PRIVATE_NETWORKS.*not-a-cidr"):
        run({"url": server.url("/echo")}, context_for("not-a-cidr"))


# --- config --------------------------------------------------------------------------------


def validate(config: Any) -> dict[str, Any]:
    return Http.Config().validate(config)


def test_config_defaults():
    cfg = Http.Config().load({"url": "https://example.com/"})
    assert cfg["method"] == "GET"
    assert cfg["timeout_seconds"] == 30
    assert cfg["verify_tls"] is True
    assert cfg["follow_redirects"] is True
    assert cfg["fail_on_status"] is True
    assert cfg["max_response_bytes"] == 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({}, "url"),
        ({"url": "ftp://example.com/"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "https://user:pw@example.com/"}, "url"),
        ({"url": "https://example.com/", "method": "TRACE"}, "method"),
        ({"url": "https://example.com/", "timeout_seconds": 301}, "timeout_seconds"),
        ({"url": "https://example.com/", "timeout_seconds": 0}, "timeout_seconds"),
        ({"url": "https://example.com/", "max_redirects": 6}, "max_redirects"),
        ({"url": "https://example.com/", "headers": {"X": 1}}, "headers"),
        ({"url": "https://example.com/", "headers": {"X": "a\r\nInjected: 1"}}, "headers"),
        ({"url": "https://example.com/", "headers": {"Bad Name": "a"}}, "headers"),
        ({"url": "https://example.com/", "query": {"a": {"nested": 1}}}, "query"),
        ({"url": "https://example.com/", "json": {}, "body": "x"}, "json"),
        ({"url": "https://example.com/", "body": "x", "form": {}}, "form"),
        ({"url": "https://example.com/", "auth": {"type": "bearer"}}, "auth"),
        ({"url": "https://example.com/", "auth": {"type": "digest"}}, "auth"),
        ({"url": "https://example.com/", "auth": {"type": "basic", "username": "a", "token": "t"}}, "auth"),
        ({"url": "https://example.com/", "surprise": 1}, "surprise"),
    ],
)
def test_config_errors(config, field):
    assert field in validate(config)


def test_valid_configs():
    assert validate({"url": "http://localhost:8080/x", "method": "post", "json": None}) == {}
    assert validate({"url": "https://[2001:db8::1]/", "auth": {"type": "basic", "username": "u"}}) == {}
    assert (
        validate({"url": "https://example.com/", "auth": {"type": "header", "name": "X-K", "value": "v"}})
        == {}
    )
