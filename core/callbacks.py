"""Which callback URLs a job may have: the policy both the gateway (at submit) and the workers (at send
time, against DNS rebinding) apply.

http(s) only, no credentials in the URL, and every address the host resolves to must be public: private,
loopback, link-local (cloud metadata), multicast, reserved and unspecified addresses are refused unless
the host name or the address is in PARETO_WEBHOOK_ALLOWLIST (host names, addresses or CIDR ranges).
An IPv6 address that embeds IPv4 addresses (6to4, Teredo, NAT64, IPv4-compatible or -mapped) is judged by
the IPv4 addresses it embeds: a tunnel or translator would deliver the request there.
A refusal never says what a host name resolved to (that would map the internal DNS for the caller).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from core.errors import ErrorCode, InvalidInput
from core.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
WELL_KNOWN_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated, but still tunnelled by some stacks (Linux sit0)


class CallbackRefused(InvalidInput):
    code, title = ErrorCode.callback_url_refused, "Callback URL refused"


def _allowlist(spec: str) -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    names, networks = set(), []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            names.add(item.lower().rstrip("."))
    return names, networks


def _nat64(addr: ipaddress.IPv6Address, prefix_len: int) -> ipaddress.IPv4Address:
    """The IPv4 address after a NAT64 prefix of this length (RFC 6052 2.2: bits 64-71 are never part of it)."""
    squeezed = (int(addr) >> 64 << 56) | (int(addr) & ((1 << 56) - 1))  # 120 bits, without bits 64-71
    start = prefix_len if prefix_len <= 64 else prefix_len - 8
    return ipaddress.IPv4Address((squeezed >> (120 - start - 32)) & 0xFFFFFFFF)


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses a request to `addr` would reach through a tunnel or a translator; None if none."""
    if addr.ipv4_mapped is not None:
        return [addr.ipv4_mapped]
    if addr.sixtofour is not None:
        return [addr.sixtofour]
    if addr.teredo is not None:
        return list(addr.teredo)  # the Teredo server and the client
    if addr in LOCAL_NAT64:
        # each network picks its own prefix length inside 64:ff9b:1::/48 (RFC 8215): read every layout
        return [_nat64(addr, n) for n in (48, 56, 64, 96)]
    if addr in WELL_KNOWN_NAT64 or addr in IPV4_COMPATIBLE:
        return [_nat64(addr, 96)]
    return None


def _public(addr: Address) -> bool:
    embedded = _embedded_ipv4(addr) if isinstance(addr, ipaddress.IPv6Address) else None
    if embedded is not None:
        return all(_public(a) for a in embedded)
    return not (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
                or addr.is_reserved or addr.is_unspecified or not addr.is_global)


def _refusal(host: str) -> CallbackRefused:
    """Names an address only when the URL gave it: what a name resolves to is the internal DNS's business."""
    try:
        ipaddress.ip_address(host.split("%")[0])
        what = f"callback_url address {host} is or embeds"
    except ValueError:
        what = f"callback_url host {host!r} resolves to"
    return CallbackRefused(f"{what} a private, loopback or link-local address; "
                           "only public addresses (or those in PARETO_WEBHOOK_ALLOWLIST) may receive callbacks")


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
                raise _refusal(host)
    return host, port, addresses


def check_callback_url(url: str, settings: Settings) -> None:
    """At submit: the URL is acceptable and webhooks are configured."""
    if not settings.webhook_secret:
        raise InvalidInput("callbacks are not configured on this server (PARETO_WEBHOOK_SECRET is unset)",
                           code=ErrorCode.webhooks_disabled)
    resolve_callback(url, settings)
