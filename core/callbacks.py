"""Which callback URLs a job may have: the policy both the gateway (at submit) and the workers (at send
time, against DNS rebinding) apply.

http(s) only, no credentials in the URL, and every address the host resolves to must be public: private,
loopback, link-local (cloud metadata), multicast, reserved and unspecified addresses are refused unless
the host name or the address is in PARETO_WEBHOOK_ALLOWLIST (host names, addresses or CIDR ranges).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from core.errors import InvalidInput
from core.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackRefused(InvalidInput):
    code, title = "callback_url_refused", "Callback URL refused"


def _allowlist(spec: str) -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    names, networks = set(), []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            names.add(item.lower().rstrip("."))
    return names, networks


def _public(addr: Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return not (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
                or addr.is_reserved or addr.is_unspecified or not addr.is_global)


def resolve_callback(url: str, settings: Settings) -> tuple[str, int, list[str]]:
    """(host, port, addresses) of an acceptable callback URL; CallbackRefused with the reason otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("callback_url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise CallbackRefused("callback_url must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CallbackRefused("callback_url has an invalid port") from None
    host = parts.hostname.lower().rstrip(".")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise CallbackRefused(f"callback_url host {host!r} does not resolve ({e})") from None
    addresses = sorted({info[4][0] for info in infos})
    names, networks = _allowlist(settings.webhook_allowlist)
    if host not in names:
        for a in addresses:
            addr = ipaddress.ip_address(a.split("%")[0])
            if not _public(addr) and not any(addr in n for n in networks):
                raise CallbackRefused(
                    f"callback_url host {host!r} resolves to {a}, a private, loopback or link-local address; "
                    "only public addresses (or those in PARETO_WEBHOOK_ALLOWLIST) may receive callbacks")
    return host, port, addresses


def check_callback_url(url: str, settings: Settings) -> None:
    """At submit: the URL is acceptable and webhooks are configured."""
    if not settings.webhook_secret:
        raise InvalidInput("callbacks are not configured on this server (PARETO_WEBHOOK_SECRET is unset)",
                           code="webhooks_disabled")
    resolve_callback(url, settings)
