"""``manage.py qcluster``: django-q2's command, starting our self-healing cluster.

This app is listed before ``django_q`` in ``INSTALLED_APPS``, so this command replaces
django-q2's everywhere (``make run``, systemd units, the docs, the tests). Differences:

- the sentinel is :class:`syncqueue.cluster.SafeSentinel` (heals the frozen-cluster bug,
  django-q2 #23; proves work through heartbeats and ``$NOTIFY_SOCKET`` watchdog pings; runs the
  dispatcher loop);
- the command waits for the cluster and exits with its status: 0 after a normal stop, 3 when the
  cluster gave up healing itself, 128+N when the sentinel died of signal N — so that systemd
  (``Restart=on-failure``) or ``make run`` restarts it. Stock ``qcluster`` exits 0 whatever
  happened to its sentinel.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django_q.management.commands import qcluster

from syncqueue.cluster import SafeCluster


class Command(qcluster.Command):
    help = "Start a sync worker cluster (django-q2, self-healing); Ctrl-C or SIGTERM stops it."

    def handle(self, *args: Any, **options: Any) -> None:
        settings.SECRET_KEY  # noqa: B018 - refuse to start without a signing key, as django-q2
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        cluster = SafeCluster()
        cluster.start()
        if options.get("run_once", False):
            cluster.stop()
            return
        sentinel = cluster.sentinel
        if sentinel is None:
            return
        while sentinel.exitcode is None:
            sentinel.join(1.0)  # wakes up for signals; SIGTERM/SIGINT run cluster.stop()
        code = sentinel.exitcode
        if code:
            status = code if code > 0 else 128 - code
            self.stderr.write(f"The worker cluster ended with status {code}; exiting {status}.")
            sys.exit(status)
