"""A private Dovecot IMAP server on 127.0.0.1 for tests and benchmarks.

It runs from a temporary directory with its own configuration, passwd-file users and Maildirs,
listens on a free port (plain IMAP; the product allows that only to loopback) and on a second
port with TLS and a self-signed certificate (to test certificate errors), and is stopped
afterwards. Mail is delivered through IMAP APPEND, so UIDs are assigned as a real server would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from imapclient import IMAPClient

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
MAIL_UID = 65534  # nobody: Dovecot will not run mail processes as root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-a-trusted-server.invalid")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Dovecot:
    """Start with ``start()``, stop with ``stop()``; any user name is an account whose password
    is ``pw-<name>``."""

    def __init__(self, capabilities: str | None = None, mail_format: str = "maildir") -> None:
        """``capabilities``: what the server advertises instead of Dovecot's own list (a
        server without QRESYNC or CONDSTORE, say). ``mail_format``: how Dovecot stores mail,
        ``maildir`` (one file per message; what ``drop`` writes into) or ``sdbox`` (Dovecot's
        own single-dbox format, whose folders it opens without reading a directory)."""
        if mail_format not in ("maildir", "sdbox"):
            raise ValueError(f"unknown mail format {mail_format!r}")
        self.mail_format = mail_format
        if not Path(DOVECOT).exists():
            raise RuntimeError(
                "Dovecot is not installed: run the test command as root (it installs "
                "dovecot-imapd) or 'apt-get install dovecot-imapd'."
            )
        # Directly under /tmp and world-traversable: the mail processes run as 'nobody'.
        self.root = Path(tempfile.mkdtemp(prefix="syncproject-dovecot-", dir="/tmp"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.tls_port = free_port()
        (self.root / "mail").mkdir()
        os.chown(self.root / "mail", MAIL_UID, MAIL_UID)
        cert, key = _self_signed(self.root)
        store = "Maildir" if mail_format == "maildir" else "sdbox"
        self.config = self.root / "dovecot.conf"
        self.config.write_text(
            f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
instance_name = syncproject-{self.port}
listen = 127.0.0.1
protocols = imap
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests log in with wrong passwords on purpose: answer at once.
auth_failure_delay = 0
log_path = {self.root}/dovecot.log
mail_location = {mail_format}:{self.root}/mail/%u/{store}
first_valid_uid = 1
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
mail_max_userip_connections = 100
shutdown_clients = yes
# An idling client hears of new mail through inotify; past the kernel's inotify instance limit
# (fs.inotify.max_user_instances, often 128 per user) Dovecot falls back to looking every
# mailbox_idle_check_interval (30 s by default): 1 s here, as an installation with many IDLE
# sessions would set (or raise the limit).
mailbox_idle_check_interval = 1 secs
{f"imap_capability = {capabilities}" if capabilities else ""}
# Every account exists; its password is "pw-" + the user name (no passdb file to reload).
passdb {{
  driver = static
  args = password=pw-%u
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_UID} home={self.root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
  chroot =
}}
service imap {{
  # one process per session, as by default; more than the default 100 sessions (the IDLE
  # listener holds one per watched folder)
  process_limit = 1024
}}
# What each session's client sent, for tests that check which commands a sync uses: Dovecot
# writes a rawlog only where the directory exists (record_commands creates it).
protocol imap {{
  rawlog_dir = %h/rawlog
}}
service anvil {{
  chroot =
  # No per-IP penalty after failed logins: tests fail logins on purpose from 127.0.0.1.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
        )
        self.users: dict[str, str] = {}

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        # The daemon keeps inherited file descriptors: never give it a pipe we wait on.
        with (self.root / "startup.log").open("ab") as out:
            subprocess.run([DOVECOT, "-c", str(self.config)], check=True, stdout=out, stderr=out)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"Dovecot did not start; see {self.root}/dovecot.log")

    def _instance_pids(self) -> list[int]:
        """The master (its command line names our config) and its children (their titles
        carry our instance name)."""
        markers = (f"dovecot-syncproject-{self.port}/".encode(), str(self.config).encode())
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if any(marker in cmdline for marker in markers):
                    pids.append(int(entry.name))
        return pids

    def kill(self) -> None:
        """Abrupt outage: every process of this server dies at once, sessions included."""
        deadline = time.monotonic() + 10
        while (pids := self._instance_pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        # The dead master may linger as an unreaped zombie, which makes Dovecot believe it is
        # still running: drop the stale pid file, as an operator would after a crash.
        (self.root / "run" / "master.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        """Orderly shutdown, then make sure no session of this server survives."""
        subprocess.run(
            [DOVEADM, "-c", str(self.config), "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.kill()

    def is_running(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- accounts and mail -------------------------------------------------------------------
    def add_user(self, name: str) -> str:
        """Register an account for the helpers; returns its password ("pw-<name>")."""
        self.users[name] = f"pw-{name}"
        return self.users[name]

    def connection_config(self, user: str) -> dict[str, Any]:
        """An IMAP connection's settings for ``user`` on this server: plain IMAP on loopback,
        all mail (no history window). The password is ``self.users[user]``."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "security": "none",
            "username": user,
            "history_days": None,
        }

    def client(self, user: str) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=30)
        client.login(user, self.users[user])
        return client

    def deliver(
        self,
        user: str,
        messages: Iterable[bytes],
        folder: str = "INBOX",
        flags: tuple[bytes, ...] = (),
        when: dt.datetime | None = None,
    ) -> list[int]:
        """APPEND messages; returns their UIDs."""
        client = self.client(user)
        try:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            uids = []
            for raw in messages:
                response = client.append(folder, raw, flags=flags, msg_time=when)
                uids.append(int(response.split(b"]")[0].split()[-1]))
            return uids
        finally:
            client.logout()

    def drop(self, user: str, messages: Iterable[bytes], folder: str = "INBOX") -> None:
        """Deliver as a mail server's local delivery does: each message written as it is into
        the Maildir's ``new/`` (RFC-breaking bytes included: bare CR, NUL, 8-bit headers, which
        IMAP APPEND may refuse). Dovecot assigns UIDs when it next looks at the folder."""
        if self.mail_format != "maildir":
            raise RuntimeError("drop() writes into a Maildir: start this server with maildir")
        home = self.root / "mail" / user / "Maildir"
        box = home if folder == "INBOX" else home / f".{folder}"
        for sub in ("tmp", "new", "cur"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        for directory in (self.root / "mail" / user, home, *home.rglob("*")):
            if directory.is_dir():
                os.chown(directory, MAIL_UID, MAIL_UID)
        stamp = time.time()
        for number, raw in enumerate(messages):
            # unique, as Maildir requires: two drops within one second must not share a name
            name = f"{int(stamp)}.M{number}P{os.getpid()}Q{uuid.uuid4().hex[:12]}.syncproject"
            temporary = box / "tmp" / name
            temporary.write_bytes(raw)
            os.chown(temporary, MAIL_UID, MAIL_UID)
            temporary.rename(box / "new" / name)  # atomic, as Maildir delivery requires

    def deliver_many(
        self, user: str, messages: Iterable[bytes], folder: str = "INBOX", chunk: int = 500
    ) -> None:
        """Fast bulk delivery with MULTIAPPEND (one command per chunk)."""
        client = self.client(user)
        try:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            batch: list[bytes] = []
            for raw in messages:
                batch.append(raw)
                if len(batch) == chunk:
                    client.multiappend(folder, batch)
                    batch = []
            if batch:
                client.multiappend(folder, batch)
        finally:
            client.logout()

    def import_maildir(self, user: str, maildir: Path) -> None:
        """Copy every message of a Maildir built outside the server (``maildir/cur``) into
        ``user``'s INBOX, whatever this server's mail format: Dovecot reads the files as they
        are, malformed ones included, and assigns UIDs in file-name order."""
        for path in [maildir, *maildir.rglob("*")]:
            os.chown(path, MAIL_UID, MAIL_UID)
        self.doveadm("import", "-u", user, f"maildir:{maildir}", "", "all")

    def add_flags(
        self, user: str, uids: list[int], flags: list[bytes], folder: str = "INBOX"
    ) -> None:
        """Another client sets ``flags`` on messages (read-write session)."""
        client = self.client(user)
        try:
            client.select_folder(folder)
            client.add_flags(uids, flags)
        finally:
            client.logout()

    def expunge(self, user: str, uids: list[int], folder: str = "INBOX") -> None:
        """Another client deletes messages for good (\\Deleted, then EXPUNGE)."""
        client = self.client(user)
        try:
            client.select_folder(folder)
            client.delete_messages(uids)
            client.expunge()
        finally:
            client.logout()

    def doveadm(self, *args: str) -> str:
        result = subprocess.run(
            [DOVEADM, "-c", str(self.config), *args], check=True, capture_output=True, text=True
        )
        return result.stdout

    def record_commands(self, user: str) -> None:
        """From now on, Dovecot records what each new session of ``user`` sends (its rawlog);
        ``commands`` reads it. Sessions opened before are not recorded."""
        home = self.root / "mail" / user
        for path in (home, home / "rawlog"):
            path.mkdir(exist_ok=True)
            os.chown(path, MAIL_UID, MAIL_UID)
        for old in (home / "rawlog").iterdir():
            old.unlink()

    def commands(self, user: str) -> list[str]:
        """The commands ``user``'s recorded sessions sent, in order, without timestamps and
        tags (``EXAMINE "INBOX" (QRESYNC (1 5))``); LOGIN lines are left out."""
        found = []
        for path in sorted((self.root / "mail" / user / "rawlog").glob("*.in")):
            for line in path.read_text("utf-8", "replace").splitlines():
                parts = line.split(" ", 2)  # timestamp, tag, command
                if len(parts) == 3 and not parts[2].upper().startswith(("LOGIN", "AUTHENTICATE")):
                    found.append(parts[2])
        return found

    def bump_uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        current = int(
            self.doveadm(
                "-f", "flow", "mailbox", "status", "-u", user, "uidvalidity", folder
            ).split("=")[1]
        )
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(current + 1), folder)
        return current + 1

    def server_view(self, user: str, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        """UID -> flags as the server has them (read-only)."""
        client = self.client(user)
        try:
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            return {uid: data[b"FLAGS"] for uid, data in client.fetch(uids, ["FLAGS"]).items()}
        finally:
            client.logout()
