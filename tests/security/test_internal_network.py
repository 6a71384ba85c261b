"""A mail server typed in by an ordinary user cannot make this server probe its own network:
loopback, private, link-local and other non-public addresses are refused (unless the operator
allows a range), the refusal reads the same for an open and a closed port, nothing is sent to a
refused address, and the connection goes to the address that was checked."""

from __future__ import annotations

import socket

import pytest

from integrations import netguard
from integrations.imap.client import PinnedIMAPClient
from integrations.imap.config import ImapConfig
from tests.support.listener import Listener

pytestmark = pytest.mark.django_db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def imap_form(host: str, port: int, password: str = "pw-user-1") -> dict[str, str]:
    return {
        "name": "Mail",
        "host": host,
        "security": "none",
        "port": str(port),
        "username": "olivia",
        "password": password,
        "folders": "INBOX",
        "history": "30",
    }


def test_private_addresses_are_refused_alike_for_open_and_closed_ports(client, owner, settings):
    settings.SYNC_ALLOWED_PRIVATE_NETWORKS = []
    client.force_login(owner)
    with Listener() as listener:
        answers = []
        for port in (listener.port, free_port()):
            response = client.post("/settings/sync/connect/imap/", imap_form("127.0.0.1", port))
            answers.append(" ".join(response.context["form"].non_field_errors()))
        assert listener.connections == 0
    assert answers[0] == answers[1]
    assert "not allowed: it points into a private network" in answers[0]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "10.1.2.3",
        "192.168.0.10",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
        # IPv6 forms that reach a private IPv4 address (Python counts them as global)
        "64:ff9b::a00:1",  # NAT64 (RFC 6052) to 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 to the cloud metadata address
        "64:ff9b:1::808:808",  # a network's own NAT64 prefix (RFC 8215): local
        "2002:a00:1::1",  # 6to4 (RFC 3056) from 10.0.0.1
        "::a00:1",  # IPv4-compatible (RFC 4291)
        "::ffff:0:a00:1",  # IPv4-translated (RFC 2765)
        "[::]",
    ],
)
def test_non_public_hosts_are_refused(host, settings):
    settings.SYNC_ALLOWED_PRIVATE_NETWORKS = []
    with pytest.raises(netguard.HostNotAllowed):
        netguard.checked_address(host, 993)


def test_public_addresses_and_allowed_ranges_pass(settings):
    settings.SYNC_ALLOWED_PRIVATE_NETWORKS = ["10.1.2.0/24"]
    assert netguard.checked_address("93.184.215.14", 993) == "93.184.215.14"
    assert netguard.checked_address("10.1.2.3", 993) == "10.1.2.3"
    # the IPv4 address inside decides, for public and for allowed addresses
    assert netguard.checked_address("64:ff9b::5db8:d70e", 993) == "64:ff9b::5db8:d70e"
    assert netguard.checked_address("2002:5db8:d70e::1", 993) == "2002:5db8:d70e::1"
    assert netguard.checked_address("64:ff9b::a01:203", 993) == "64:ff9b::a01:203"
    with pytest.raises(netguard.HostNotAllowed):
        netguard.checked_address("10.1.3.3", 993)


def test_a_name_with_any_private_address_is_refused(monkeypatch, settings):
    """A name that resolves to a public and a private address is refused as a whole, so the
    address a later connection picks cannot matter."""
    settings.SYNC_ALLOWED_PRIVATE_NETWORKS = []

    def resolve(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(netguard.socket, "getaddrinfo", resolve)
    with pytest.raises(netguard.HostNotAllowed):
        netguard.checked_address("mixed.example", 993)


def test_the_connection_goes_to_the_checked_address(dovecot, imap_user):
    """No second lookup: the pinned client reaches the server through the address alone (the
    host name here resolves nowhere), which is what defeats DNS rebinding."""
    client = PinnedIMAPClient(
        "imap.invalid", address="127.0.0.1", port=dovecot.port, ssl=False, timeout=5
    )
    try:
        client.login(imap_user, dovecot.users[imap_user])
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0
    finally:
        client.logout()


def test_staff_owned_and_allowed_connections_reach_local_servers(
    make_imap_connection, staff, settings
):
    settings.SYNC_ALLOWED_PRIVATE_NETWORKS = []
    conn = make_imap_connection()
    with pytest.raises(netguard.HostNotAllowed):  # an ordinary user's mailbox on loopback
        conn.build_connector().check()
    conn.owner = staff  # staff set up the company's own server
    conn.save()
    assert "Signed in" in conn.build_connector().check().message


def test_a_connection_test_is_bounded_and_one_at_a_time(client, owner, settings):
    """A server that accepts and never answers holds a test only for the test timeout, and a
    person cannot run a second test while one runs (another web process would see the mark)."""
    from django.core.cache import cache

    settings.SYNC_CONNECTION_TEST_TIMEOUT = 0.5
    client.force_login(owner)
    cache.add(f"sync.running.connection_test.{owner.pk}", 1, timeout=30)
    response = client.post("/settings/sync/connect/imap/", imap_form("127.0.0.1", free_port()))
    assert "still running: wait for its result" in response.content.decode()
    cache.delete(f"sync.running.connection_test.{owner.pk}")

    with Listener(hold=30) as silent:  # accepts, never greets, never closes
        response = client.post("/settings/sync/connect/imap/", imap_form("127.0.0.1", silent.port))
    assert "did not answer in time" in response.content.decode()  # the test's own bound
    assert silent.connections == 1


def test_config_validation_keeps_urls_out_of_the_host_field():
    with pytest.raises(ValueError, match="only the host name"):
        ImapConfig(host="http://127.0.0.1:8000/", username="x")
