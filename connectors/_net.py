"""Outbound network guard for connectors that fetch user-supplied URLs (SSRF).

Built on `ssrfguard <https://pypi.org/project/ssrfguard/>`_, whose ``requests`` adapter pins at
urllib3's ``HTTPConnection._new_conn``: a host name is resolved once, *every* answer is checked
against the policy, and the socket is connected to an address that was checked — there is no
second lookup an attacker could rebind. TLS still verifies the certificate against the host
name. Each redirect hop goes through the same seam, so a redirect to a private address is
refused before anything connects to it.

Hookhub's policy on top of ssrfguard's defaults: any port (webhook targets live on 8080, 8443, …),
no proxy from the environment, at most 5 redirects, and the operator's
``HOOKHUB_ALLOW_PRIVATE_NETWORKS`` (``ctx.allowed_private_networks``) as the allow-list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

import requests
from ssrfguard import (
    BlockedAddressError,
    BlockedURLError,
    Policy,
    ProxyUnsupportedError,
    SSRFGuardError,
    TooManyRedirectsError,
)
from ssrfguard.requests import Session

from hub.sdk import ConnectorError

__all__ = ["ALLOW_ENV", "GuardError", "NetworkPolicyError", "guarded_session", "policy", "refusal"]

ALLOW_ENV = "HOOKHUB_ALLOW_PRIVATE_NETWORKS"
GuardError = SSRFGuardError
_ALL_PORTS = frozenset(range(1, 65536))
_EVERYTHING = ("0.0.0.0/0", "::/0")


class NetworkPolicyError(ConnectorError):
    """An outbound request was refused by the network policy (never retryable)."""


def policy(
    allowed_private_networks: Iterable[str] = (),
    *,
    max_redirects: int = 5,
    sensitive_headers: Iterable[str] = (),
) -> Policy:
    """The ssrfguard policy for one request.

    :param allowed_private_networks: CIDRs (or ``"*"``) that may be reached although the address
        table denies them.
    :raises NetworkPolicyError: an allowance is not a network.
    """
    networks: list[str] = []
    for entry in allowed_private_networks:
        entry = entry.strip()
        if not entry:
            continue
        if entry == "*":
            networks.extend(_EVERYTHING)
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise NetworkPolicyError(
                f"{ALLOW_ENV}: {entry!r} is not a CIDR network ({exc}); use e.g. 10.0.0.0/8 or *"
            ) from exc
        networks.append(entry)
    try:
        return Policy(
            allowed_networks=tuple(networks),
            allowed_ports=_ALL_PORTS,
            max_redirects=max_redirects,
            sensitive_headers=frozenset(
                {"authorization", "proxy-authorization", "cookie", *sensitive_headers}
            ),
        )
    except ValueError as exc:
        raise NetworkPolicyError(f"{ALLOW_ENV}: {exc}") from exc


def guarded_session(
    allowed_private_networks: Iterable[str] = (),
    *,
    max_redirects: int = 5,
    sensitive_headers: Iterable[str] = (),
) -> requests.Session:
    """A ``requests.Session`` that refuses (before connecting) what the policy does not permit.

    It ignores proxy and ``.netrc`` settings from the environment (``trust_env = False``): a proxy
    would resolve the name itself and so defeat the pinning. Catch :data:`GuardError` around its
    calls and turn it into a connector error with :func:`refusal`.
    """
    session = Session(
        policy=policy(
            allowed_private_networks, max_redirects=max_redirects, sensitive_headers=sensitive_headers
        )
    )
    session.trust_env = False
    return session


def refusal(exc: SSRFGuardError, method: str, url: str) -> NetworkPolicyError:
    """A clear, actionable connector error for what the guard refused."""
    where = f"{method} {url.split('?', 1)[0]}"
    address = None
    if isinstance(exc, BlockedAddressError):
        address = exc.address
    elif isinstance(exc, BlockedURLError):
        address = _literal_host(exc.url)
    if address is not None:
        reason = getattr(exc, "reason", str(exc))
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            address = f"::ffff:{ip.ipv4_mapped}"  # as people write it
        network = f"{address}/{ip.max_prefixlen}"
        return NetworkPolicyError(
            f"{where}: refused to connect to {address} ({reason}). Outbound connectors may not reach "
            f"private, loopback, link-local, multicast, reserved or unspecified addresses; an operator "
            f"can allow them by setting {ALLOW_ENV} to comma-separated CIDRs (e.g. {network}) or *"
        )
    if isinstance(exc, TooManyRedirectsError):
        return NetworkPolicyError(f"{where}: more than {exc.limit} redirects ({' -> '.join(exc.chain)})")
    if isinstance(exc, ProxyUnsupportedError):
        return NetworkPolicyError(f"{where}: proxies are not supported by the http connector ({exc.proxy})")
    return NetworkPolicyError(f"{where}: refused: {exc}")


def _literal_host(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


# --- raw sockets (SMTP and other non-HTTP protocols) ------------------------------------------


def guarded_connect(
    host: str,
    port: int,
    allowed_private_networks: Iterable[str] = (),
    *,
    scheme: str,
    timeout: float | None = None,
):
    """A TCP socket to ``host:port`` under the same policy as :func:`guarded_session`.

    The name is resolved once, every answer is checked, and the socket is connected to an address
    that was checked (ssrfguard's ``resolve`` + ``connect``). ``scheme`` only names the protocol
    in errors (``smtp``, ``smtps``). Raises :data:`GuardError` for a refused address, ``OSError``
    (``socket.gaierror``, ``TimeoutError``, …) for network failures.
    """
    import dataclasses

    import ssrfguard

    base = policy(allowed_private_networks)
    rule = dataclasses.replace(base, allowed_schemes=frozenset({scheme}))
    literal = f"[{host}]" if ":" in host and not host.startswith("[") else host
    target = rule.check_url(f"{scheme}://{literal}:{int(port)}/")
    addresses = ssrfguard.resolve(target, policy=rule)
    return ssrfguard.connect(addresses, policy=rule, timeout=timeout)
