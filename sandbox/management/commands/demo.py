"""``manage.py demo`` (``make demo``): the product with the bundled local servers and demo data.

Starts local Graph, Zendesk and Zimbra servers (and a private Dovecot when installed) on
127.0.0.1, fills an empty database with a demo organization (``sandbox/demo.py``), keeps
changing things a little, and runs web server and workers as ``manage.py serve`` does; Ctrl-C
stops everything, the demo servers too. The workers learn where the demo servers are from
their environment; nothing leaves the machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.models import Connection
from integrations.netguard import is_loopback
from sandbox.demo import PASSWORD, Demo


class Command(BaseCommand):
    help = "Run the product with local demo servers and demo data (an empty database; 127.0.0.1)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.SERVE_HOST)
        parser.add_argument("--port", type=int, default=settings.SERVE_PORT)

    def handle(self, *args: Any, **options: Any) -> None:
        host = options["host"]
        if not is_loopback(host):
            raise CommandError(
                f"The demo's passwords are public: it only listens on 127.0.0.1 (not {host})."
            )
        call_command("migrate", interactive=False, verbosity=0)
        if Connection.objects.exists():
            raise CommandError(
                "The demo needs an empty database: run it with 'make demo' (it uses var/demo)."
            )
        demo = Demo(Path(settings.VAR_DIR))
        try:
            os.environ.update(demo.start())  # the web server and the workers inherit it
            seeded = demo.seed()
            demo.run_activity()
            people = ", ".join(seeded["people"])
            self.stdout.write(
                f"Demo: local Graph, Zendesk and Zimbra servers are running on 127.0.0.1"
                f"{' with a private Dovecot' if demo.dovecot else ''}.\n"
                f"  People: {people} (password '{PASSWORD}') — their page is /settings/sync/\n"
                f"  Case:   /admin/workspace/case/{seeded['case']}/change/\n"
            )
            for note in demo.notes:
                self.stdout.write(self.style.WARNING(f"  {note}"))
            call_command("serve", host=host, port=options["port"])
        finally:
            demo.stop()
