"""Test connection: each kind of problem gets its own clear message."""

from __future__ import annotations

import pytest

from integrations.errors import AuthFailed, ConfigError, Permanent, Transient
from integrations.imap.connector import ImapConnector
from sandbox.dovecot import free_port

pytestmark = pytest.mark.django_db


def test_check_signs_in_and_lists_the_folders(make_imap_connection, dovecot, imap_user):
    dovecot.deliver(imap_user, [b"Subject: hi\r\n\r\nx\r\n"] * 2)
    result = make_imap_connection().build_connector().check()
    assert f"as {imap_user}" in result.message and "INBOX (2)" in result.message
    assert result.details["condstore"] is True


def test_wrong_password(make_imap_connection):
    with pytest.raises(AuthFailed, match="rejected the username or password"):
        make_imap_connection(password="wrong").build_connector().check()


def test_refused_connection(make_imap_connection):
    conn = make_imap_connection(port=free_port())
    with pytest.raises(Transient, match="refused the connection"):
        conn.build_connector().check()


def test_unknown_host(make_imap_connection):
    conn = make_imap_connection(host="no-such-host.invalid", security="ssl", port=993)
    with pytest.raises(Transient, match="could not be found"):
        conn.build_connector().check()


def test_tls_certificate_error(make_imap_connection, dovecot):
    conn = make_imap_connection(security="ssl", port=dovecot.tls_port)
    with pytest.raises(Permanent, match="certificate could not be verified"):
        conn.build_connector().check()


def test_missing_folder(make_imap_connection):
    conn = make_imap_connection(folders=["INBOX", "Archive/2019"])
    with pytest.raises(Permanent, match="'Archive/2019' does not exist"):
        conn.build_connector().check()


def test_plaintext_only_to_loopback(settings):
    config = {"host": "mail.example.com", "username": "u", "security": "none"}
    with pytest.raises(ConfigError, match="unencrypted"):
        ImapConnector.validate_config(config)
    settings.IMAP_ALLOW_PLAINTEXT = True
    assert ImapConnector.validate_config(config).effective_port == 143


def test_config_names_bad_fields():
    with pytest.raises(ConfigError, match="host") as info:
        ImapConnector.validate_config({"host": "imap://x", "username": "u", "history_days": 0})
    assert "history_days" in str(info.value)


def test_a_watched_mailbox_is_polled_less_often_when_configured(make_imap_connection, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.SYNC_SCHEDULE_JITTER = 0
    watched, unwatched = make_imap_connection(), make_imap_connection(idle=False)
    now = timezone.now()
    for conn in (watched, unwatched):
        conn.schedule = "every 15m"
        conn.push_until = now + timedelta(minutes=2)  # the listener saw it idling
    assert watched.compute_next_sync(now) == now + timedelta(minutes=15)  # default: as scheduled
    settings.SYNC_PUSHED_POLL_FACTOR = 4
    assert watched.compute_next_sync(now) == now + timedelta(minutes=60)  # IDLE brings mail
    assert unwatched.compute_next_sync(now) == now + timedelta(minutes=15)
    # no listener has seen it idling lately (not running, the session keeps dropping, no IDLE
    # on the server): polled as scheduled
    later = now + timedelta(minutes=3)
    assert watched.compute_next_sync(later) == later + timedelta(minutes=15)
    watched.push_until = None
    assert watched.compute_next_sync(now) == now + timedelta(minutes=15)


def test_idling_sessions_use_tcp_keepalive():
    """A watched session whose peer vanished without closing is found by keepalive probes
    within about 90 s, not at the next IDLE renewal."""
    import socket

    from integrations.imap.listener import KEEPALIVE_IDLE, keep_alive

    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    try:
        keep_alive(client)
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    finally:
        client.close()
        server.close()


def test_a_server_announcing_a_huge_answer_is_cut_off_before_it_is_read(make_imap_connection):
    """imaplib reads a literal in full, however large: a server anyone may name (a connection
    test runs in the web process) could make us hold gigabytes. It announces one of 1 GB in its
    CAPABILITY answer (RFC 3501 §4.3: "{size}" then the bytes) and sends a few bytes of it:
    before, the test waited for the rest until the read timeout; now it stops at once, with a
    message that says what happened."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    sent: list[int] = []

    def serve() -> None:
        peer, _ = server.accept()
        with peer:
            peer.sendall(b"* OK ready\r\n")
            tag = peer.recv(1024).split(b" ", 1)[0]  # the client's CAPABILITY
            assert tag
            head = b"* CAPABILITY {1000000000}\r\nIMAP4rev1 "
            peer.sendall(head)
            sent.append(len(head))
            peer.settimeout(30)
            peer.recv(1)  # until the client hangs up

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    conn = make_imap_connection(
        host="127.0.0.1", port=server.getsockname()[1], security="none", read_timeout=3
    )
    try:
        with pytest.raises(Permanent, match="far larger than anything asked for") as caught:
            conn.build_connector().check()
        assert caught.value.code == "imap_oversized_answer"
        assert "1000000000" in caught.value.detail
    finally:
        thread.join(timeout=30)
        server.close()
    assert sent  # the server did announce it
