"""Where a host typed in by an ordinary user may point: the public internet only.

A person who connects their own mailbox names the server. Without a rule, "Test connection"
would let anyone make this server open connections inside its own network (loopback, the
database's subnet, the cloud metadata address) and read the answers from error messages. So a
host entered by a non-staff user must resolve to public addresses only; an operator can allow
private ranges (e.g. the company's own mail server on 10.0.0.0/8) with
``SYNC_ALLOWED_PRIVATE_NETWORKS``.

The check resolves the name once and returns the address to connect to, so the connection goes
to the address that was checked (a second lookup could answer differently: DNS rebinding).
Refusals never depend on the port, and nothing is sent to a refused address, so the message
cannot tell "closed" from "filtered".
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

from django.conf import settings

from integrations.errors import Permanent, Transient

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (a name or an address; no lookup)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HostNotAllowed(Permanent):
    """A user-supplied host resolves to an address outside the public internet."""


@lru_cache(maxsize=8)
def _allowed_networks(spec: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in spec)


def allowed_networks() -> tuple[Network, ...]:
    """The private ranges an operator allowed (``SYNC_ALLOWED_PRIVATE_NETWORKS``: a list, or
    the comma-separated text of the environment variable)."""
    spec = settings.SYNC_ALLOWED_PRIVATE_NETWORKS
    if isinstance(spec, str):
        spec = [item.strip() for item in spec.split(",") if item.strip()]
    return _allowed_networks(tuple(spec))


#: IPv6 ranges that carry an IPv4 address in their last 32 bits and reach it (a translator or a
#: tunnel on the way delivers there): NAT64's well-known prefix (RFC 6052), the IPv4-translated
#: (RFC 2765) and the deprecated IPv4-compatible (RFC 4291) forms. Python's ``is_global`` counts
#: them as global, whatever IPv4 address they carry.
_EMBEDS_IPV4_LAST_32 = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("::/96"),
)
#: NAT64 prefixes a network chooses for itself (RFC 8215): where they lead is local, never public
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def reached(address: IPAddress) -> IPAddress:
    """The address a connection to ``address`` reaches in the end: the IPv4 address inside an
    IPv4-mapped, NAT64, 6to4 (RFC 3056), IPv4-translated or IPv4-compatible IPv6 address; the
    address itself otherwise. A check that looked only at the IPv6 form would let
    ``64:ff9b::a00:1`` through to 10.0.0.1 on a network with NAT64."""
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if int(address) > 1 and any(address in network for network in _EMBEDS_IPV4_LAST_32):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address  # (:: and ::1 are themselves, not IPv4-compatible forms)


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address, judged by the address it reaches."""
    if isinstance(address, ipaddress.IPv6Address) and address in _LOCAL_NAT64:
        return False
    final = reached(address)
    if final is not address and isinstance(final, ipaddress.IPv4Address):
        return is_public(final)
    return address.is_global and not address.is_multicast


def address_allowed(address: IPAddress) -> bool:
    if is_public(address):
        return True
    return any(address in network or reached(address) in network for network in allowed_networks())


def checked_address(host: str, port: int) -> str:
    """Resolve ``host`` and return an address to connect to, if every address it resolves to is
    allowed. Raises ``HostNotAllowed`` (the same text whatever the port), or ``Transient`` when
    the name does not resolve."""
    refusal = HostNotAllowed(
        f"The server {host} is not allowed: it points into a private network. Use the mail "
        "server's public name, or ask your administrator.",
        code="host_not_allowed",
    )
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        if not address_allowed(literal):
            raise refusal
        return str(literal)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Transient(
            f"The server {host} could not be found. Check the name.", detail=str(exc)
        ) from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in found]
    # Every address must pass: a name that also resolves inside the network is refused as a
    # whole, so which address a later connection picks cannot matter.
    if not addresses or not all(address_allowed(a) for a in addresses):
        raise refusal
    return str(addresses[0])
