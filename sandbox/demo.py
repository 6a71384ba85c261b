"""The demo behind ``make demo`` (``manage.py demo``): the bundled local protocol servers,
a demo organization with people, connections, tasks and a case, and a little activity every few
seconds, so the admin dashboard, the settings page and the case page fill with real syncs.

Everything listens on 127.0.0.1: Graph + identity platform, Zendesk and Zimbra over HTTPS with a
private CA (``SYNC_CA_BUNDLE`` points the workers at it), and a private Dovecot when it is
installed. Nothing leaves the machine. ``stop()`` stops all of it.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from django.db import transaction

from sandbox.graph import CLIENT_ID, CLIENT_SECRET, FakeGraph
from sandbox.tls import make_ca
from sandbox.zendesk import Account, FakeZendesk
from sandbox.zimbra import ADMIN_NAME, ADMIN_PASSWORD, FakeZimbra

log = logging.getLogger(__name__)

DOMAIN = "northwind.test"
PASSWORD = "demo"  # noqa: S105 - the demo people's password, printed at start
PEOPLE = (("alice", "Alice Martin"), ("bob", "Bob Chen"))
CUSTOMERS = (
    ("carol@customer.test", "Carol Diaz"),
    ("dan@customer.test", "Dan Okafor"),
    ("erin@supplier.test", "Erin Walsh"),
)
SUBJECTS = (
    "Order 4471: delivery date",
    "Invoice question",
    "Damaged parcel",
    "Re: quote for 40 chairs",
    "Meeting next Tuesday",
    "Return label please",
    "Contract renewal",
)
TASKS = (
    ("Call Carol about the damaged parcel", "high", "inprogress", 30),
    ("Prepare the renewal offer", "normal", "need", 0),
    ("Check the supplier invoice", "normal", "need", 0),
    ("Book the Tuesday meeting room", "low", "completed", 100),
    ("Update the price list", "normal", "waiting", 10),
)


@dataclass
class Demo:
    """Start with ``start()`` (returns the environment the workers need), fill the database with
    ``seed()``, keep it busy with ``run_activity()``, and ``stop()`` at the end."""

    var_dir: Path
    every: float = 20.0
    graph: FakeGraph | None = None
    zendesk: FakeZendesk | None = None
    zimbra: FakeZimbra | None = None
    dovecot: Any = None
    notes: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _rng: random.Random = field(default_factory=lambda: random.Random(4471))
    _desk: Account | None = None

    # --- servers -------------------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        ca = make_ca(self.var_dir / "demo-ca")
        self.graph = FakeGraph(ca).start()
        self.zendesk = FakeZendesk(ca, rate=None).start()
        self.zimbra = FakeZimbra(ca).start()
        try:
            from sandbox.dovecot import Dovecot

            self.dovecot = Dovecot()
            self.dovecot.start()
        except (RuntimeError, OSError) as exc:  # not installed, or not root
            self.dovecot = None
            self.notes.append(f"IMAP left out of the demo: {exc}")
        return {
            "SYNC_CA_BUNDLE": str(ca.ca_file),
            "ZENDESK_BASE_URL": self.zendesk.base_url,
            # the demo people's own mailboxes live on this machine's Dovecot
            "SYNC_ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8,::1/128",
        }

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for server in (self.graph, self.zendesk, self.zimbra):
            if server is not None:
                server.stop()
        if self.dovecot is not None:
            self.dovecot.cleanup()

    # --- data ----------------------------------------------------------------------------------
    def seed(self) -> dict[str, Any]:
        """People, an organization, one connection per provider (and one with a wrong secret,
        so the dashboard has something to show), tasks and a case. Initial syncs are queued."""
        from django.contrib.auth import get_user_model

        from integrations.models import Connection, UserSwitch
        from integrations.zimbra.outbound import SWITCH
        from syncqueue import control
        from workspace import assignments
        from workspace.models import Case, CaseContact, Organization, Task

        assert self.graph and self.zendesk and self.zimbra, "start() first"
        users = get_user_model().objects
        people = {}
        for name, full in PEOPLE:
            first, last = full.split()
            person = users.create_user(
                name, f"{name}@{DOMAIN}", PASSWORD, first_name=first, last_name=last
            )
            people[name] = person
        alice, bob = people["alice"], people["bob"]
        org = Organization.objects.create(name="Northwind (demo)", slug="northwind")
        org.members.add(alice, bob)

        created: list[Connection] = []

        def connect(secrets: dict[str, str], **fields: Any) -> Connection:
            conn = Connection(**fields)
            conn.set_secrets(secrets)
            conn.save()
            created.append(conn)
            return conn

        # Microsoft 365: Alice's mailbox, with mail from customers over the last months
        box = self.graph.add_mailbox(f"alice@{DOMAIN}", "Alice Martin", folders=("Customers",))
        now = datetime.now(UTC)
        for n in range(60):
            sender, _ = CUSTOMERS[n % len(CUSTOMERS)]
            self.graph.add_message(
                box,
                folder="Customers" if n % 4 == 0 else "Inbox",
                subject=SUBJECTS[n % len(SUBJECTS)],
                sender=sender,
                received=now - timedelta(days=n * 3, hours=n),
                body=f"<p>Hello Alice,</p><p>message {n + 1} about our order.</p>",
                is_read=n > 5,
            )
        graph_config = {
            "tenant_id": self.graph.tenant,
            "client_id": CLIENT_ID,
            "authority_host": self.graph.url,
            "graph_url": self.graph.url,
        }
        connect(
            {"client_secret": CLIENT_SECRET},
            kind="msgraph",
            name="Alice's Microsoft 365 mailbox",
            owner=alice,
            config={**graph_config, "mailbox": box.upn},
            schedule="every 1m",
        )
        shared = self.graph.add_mailbox(f"support@{DOMAIN}", "Support")
        self.graph.add_message(shared, subject="Welcome", sender=f"bob@{DOMAIN}")
        connect(
            {"client_secret": "an-expired-client-secret"},
            kind="msgraph",
            name="Support shared mailbox (wrong secret)",
            owner=bob,
            config={**graph_config, "mailbox": shared.upn},
            schedule="every 1m",
        )

        # Zendesk: the organization's tickets
        self._desk = self.zendesk.add_account("northwind", f"admin@{DOMAIN}", "demo-zendesk-token")
        requesters = [self.zendesk.add_user(self._desk, n, e) for e, n in CUSTOMERS]
        for n in range(40):
            self.zendesk.add_ticket(
                self._desk,
                SUBJECTS[n % len(SUBJECTS)],
                requester=requesters[n % len(requesters)],
                status=("new", "open", "pending", "solved")[n % 4],
                generated=int(now.timestamp()) - 86400 * (n % 6) - 300,
            )
        connect(
            {"api_token": "demo-zendesk-token"},
            kind="zendesk",
            name="Northwind Zendesk",
            owner=None,
            organization=org,
            config={"subdomain": "northwind", "email": f"admin@{DOMAIN}"},
            schedule="every 1m",
        )

        # Zimbra: the company's server; both people want their tasks there
        for person in people.values():
            self.zimbra.add_account(person.email)
            UserSwitch.objects.create(user=person, key=SWITCH, enabled=True)
        connect(
            {"admin_password": ADMIN_PASSWORD},
            kind="zimbra",
            name="Northwind Zimbra",
            owner=None,
            config={
                "soap_url": self.zimbra.soap_url,
                "admin_url": self.zimbra.admin_url,
                "admin_name": ADMIN_NAME,
                "incoming": True,
            },
            schedule="every 1m",
        )

        # IMAP: Bob's mailbox on the private Dovecot
        if self.dovecot is not None:
            self.dovecot.add_user("bob")
            self.dovecot.deliver("bob", [self._mail(n) for n in range(40)])
            connect(
                {"password": self.dovecot.users["bob"]},
                kind="imap",
                name="Bob's mailbox",
                owner=bob,
                config=self.dovecot.connection_config("bob"),
                schedule="every 1m",
            )

        with transaction.atomic():
            for n, (title, priority, status, percent) in enumerate(TASKS):
                task = Task.objects.create(
                    title=title,
                    description="Created by the demo.",
                    due_date=date.today() + timedelta(days=2 + n),
                    priority=priority,
                    status=status,
                    percent_complete=percent,
                )
                assignments.assign(task, alice if n % 2 == 0 else bob)
                if n == 0:
                    assignments.assign(task, bob)
            case = Case.objects.create(title="Carol's damaged parcel", owner=alice)
            CaseContact.objects.create(case=case, email=CUSTOMERS[0][0], name=CUSTOMERS[0][1])
        for conn in created:
            control.after_save(conn, created=True)
        return {"people": [p.username for p in people.values()], "case": case.pk}

    def _mail(self, n: int) -> bytes:
        sender, name = CUSTOMERS[n % len(CUSTOMERS)]
        message = EmailMessage()
        message["From"] = f"{name} <{sender}>"
        message["To"] = f"Bob Chen <bob@{DOMAIN}>"
        message["Subject"] = SUBJECTS[n % len(SUBJECTS)]
        message["Date"] = format_datetime(datetime.now(UTC) - timedelta(hours=n * 7))
        message["Message-ID"] = make_msgid(domain="customer.test")
        message.set_content(f"Hello Bob,\n\nnote {n + 1} from {name}.\n")
        return message.as_bytes()

    # --- activity ------------------------------------------------------------------------------
    def run_activity(self) -> None:
        """Every ``every`` seconds something changes somewhere; the schedules pick it up."""

        def loop() -> None:
            while not self._stop.wait(self.every):
                try:
                    self.tick()
                except Exception:  # the demo goes on; the log says what happened
                    log.exception("Demo activity failed")

        self._thread = threading.Thread(target=loop, name="demo-activity", daemon=True)
        self._thread.start()

    def tick(self) -> None:
        from integrations.zimbra.models import TaskCopy
        from workspace.models import Task

        rng = self._rng
        sender, _ = rng.choice(CUSTOMERS)
        if self.graph is not None:
            box = self.graph.mailboxes[f"alice@{DOMAIN}"]
            self.graph.add_message(box, subject=rng.choice(SUBJECTS), sender=sender)
        if self.zendesk is not None and self._desk is not None:
            self.zendesk.add_ticket(self._desk, rng.choice(SUBJECTS), status="new")
        if self.dovecot is not None and "bob" in self.dovecot.users:
            self.dovecot.deliver("bob", [self._mail(rng.randrange(1000))])
        pushed = list(TaskCopy.objects.filter(state=TaskCopy.State.PUSHED, assignment__active=True))
        if self.zimbra is not None and pushed:
            # someone moves a task on in Zimbra: it comes back with the incoming sync
            assignment = rng.choice(pushed)
            remote = self.zimbra.mailboxes.get(assignment.account)
            if remote and assignment.uid in remote.tasks:
                percent = min(100, int(remote.tasks[assignment.uid].comp.get("percentComplete", 0)))
                percent = min(100, percent + 10)
                self.zimbra.edit_in_zimbra(
                    assignment.account,
                    assignment.uid,
                    status="COMP" if percent == 100 else "INPR",
                    percentComplete=str(percent),
                )
        task = Task.objects.order_by("?").first()
        if task is not None:  # and someone edits one here: it is pushed to Zimbra
            with transaction.atomic():
                task.due_date = (task.due_date or date.today()) + timedelta(days=1)
                task.save()
