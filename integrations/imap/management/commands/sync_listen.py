"""``manage.py sync_listen``: the IMAP IDLE listener (``integrations.imap.listener``).

Run one beside the workers (``make run`` does; docs/deployment.md has its systemd unit). It
stops on SIGTERM or Ctrl-C; polling carries on without it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand

from integrations.imap.listener import Listener


class Command(BaseCommand):
    help = "Watch IMAP mailboxes with IDLE and queue their sync when new mail arrives."

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        Listener().run(stop)
