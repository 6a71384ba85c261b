"""A scripted IMAP server that answers like Gmail (X-GM-EXT-1, labels as folders, an \\All
folder), enough for the commands the connector sends. It records every command it receives, so
a test can prove what the client did and did not do."""

from __future__ import annotations

import re
import socketserver
import threading
from dataclasses import dataclass, field

ALL_MAIL = "[Gmail]/All Mail"
CAPS = "IMAP4rev1 X-GM-EXT-1 ENABLE CONDSTORE UIDPLUS SPECIAL-USE LITERAL+ ID"
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|\(([^)]*)\)|(\S+)')


@dataclass
class GmailMessage:
    raw: bytes
    labels: list[str]
    msgid: int
    flags: list[str] = field(default_factory=list)
    #: misbehaving on purpose: the RFC822.SIZE it announces (None: the true one) or whether
    #: it leaves RFC822.SIZE out, whether it answers a body FETCH without the body, and
    #: whether its answers leave out its UID (against RFC 3501 6.4.8)
    announced_size: int | None = None
    size_left_out: bool = False
    withheld: bool = False
    uid_left_out: bool = False


def _tokens(text: str) -> list[str]:
    return [a or b or c for a, b, c in _TOKEN.findall(text)]


class FakeGmail:
    """``with FakeGmail(messages) as server:`` listens on ``server.port`` (127.0.0.1)."""

    def __init__(self, messages: list[GmailMessage], password: str = "app-password"):  # noqa: S107 - a fake server
        self.messages = {uid: m for uid, m in enumerate(messages, start=1)}
        self.password = password
        self.commands: list[str] = []
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                fake.serve(self)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def __enter__(self) -> FakeGmail:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve(self, handler: socketserver.StreamRequestHandler) -> None:
        write = handler.wfile.write
        write(f"* OK [CAPABILITY {CAPS}] Gimap ready\r\n".encode())
        while line := handler.rfile.readline():
            text = line.decode().rstrip("\r\n")
            self.commands.append(text)
            tag, _, rest = text.partition(" ")
            verb, _, args = rest.partition(" ")
            verb = verb.upper()
            if verb == "UID":
                verb, _, args = args.partition(" ")
                verb = "UID " + verb.upper()
            if not self.answer(write, tag, verb, args):
                return

    def answer(self, write, tag: str, verb: str, args: str) -> bool:
        ok = f"{tag} OK Success\r\n".encode()
        if verb == "CAPABILITY":
            write(f"* CAPABILITY {CAPS}\r\n".encode() + ok)
        elif verb == "LOGIN":
            _user, password = _tokens(args)[:2]
            if password != self.password:
                write(f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials\r\n".encode())
            else:
                write(ok)
        elif verb == "ENABLE":
            write(b"* ENABLED CONDSTORE\r\n" + ok)
        elif verb == "LIST":
            write(
                b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
                b'* LIST (\\HasNoChildren) "/" "Work"\r\n'
                b'* LIST (\\All \\HasNoChildren) "/" "[Gmail]/All Mail"\r\n' + ok
            )
        elif verb == "STATUS":
            top = max(self.messages, default=0)
            write(
                f'* STATUS "{ALL_MAIL}" (UIDVALIDITY 7 UIDNEXT {top + 1} MESSAGES '
                f"{len(self.messages)} HIGHESTMODSEQ 100)\r\n".encode()
                + ok
            )
        elif verb in ("EXAMINE", "SELECT"):
            top = max(self.messages, default=0)
            write(
                f"* {len(self.messages)} EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\n"
                f"* OK [UIDNEXT {top + 1}] Predicted next UID\r\n"
                "* OK [HIGHESTMODSEQ 100]\r\n".encode()
                + f"{tag} OK [READ-ONLY] {ALL_MAIL} selected\r\n".encode()
            )
        elif verb == "UID SEARCH":
            write(f"* SEARCH {' '.join(map(str, sorted(self.messages)))}\r\n".encode() + ok)
        elif verb == "UID FETCH":
            uid_set, _, items = args.partition(" ")
            wanted: set[int] = set()
            for part in uid_set.split(","):  # a sequence set: 4,7:9 (RFC 3501 section 9)
                low, _, high = part.partition(":")
                first, last = sorted((int(low), int(high or low)))
                wanted.update(uid for uid in self.messages if first <= uid <= last)
            for uid in sorted(wanted):
                self.fetch(write, uid, items.upper())
            write(ok)
        elif verb == "LOGOUT":
            write(b"* BYE LOGOUT Requested\r\n" + ok)
            return False
        else:
            write(ok)
        return True

    def fetch(self, write, uid: int, items: str) -> None:
        message = self.messages[uid]
        labels = " ".join(f'"{label}"' for label in message.labels)
        parts = [] if message.uid_left_out else [f"UID {uid}"]
        if "FLAGS" in items:
            parts.append(f"FLAGS ({' '.join(message.flags)})")
        if "INTERNALDATE" in items:
            parts.append('INTERNALDATE "23-Nov-2026 10:00:00 +0000"')
        if "RFC822.SIZE" in items and not message.size_left_out:
            size = len(message.raw) if message.announced_size is None else message.announced_size
            parts.append(f"RFC822.SIZE {size}")
        if "X-GM-MSGID" in items:
            parts.append(f"X-GM-MSGID {message.msgid}")
        if "X-GM-LABELS" in items:
            parts.append(f"X-GM-LABELS ({labels})")
        head = f"* {uid} FETCH (" + " ".join(parts)
        partial = re.search(r"BODY\.PEEK\[\]<0\.(\d+)>", items)
        if message.withheld:
            write(f"{head})\r\n".encode())
        elif partial:  # like a real server: the first N bytes, labelled with the origin
            body = message.raw[: int(partial.group(1))]
            write(f"{head} BODY[]<0> {{{len(body)}}}\r\n".encode() + body + b")\r\n")
        elif "BODY.PEEK[]" in items:
            write(f"{head} BODY[] {{{len(message.raw)}}}\r\n".encode() + message.raw + b")\r\n")
        else:
            write(f"{head})\r\n".encode())
