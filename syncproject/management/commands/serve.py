"""``manage.py serve``: the embedded product in one command — web server and workers.

Applies migrations, makes sure an admin account exists (first run: ``admin`` with a generated
password kept in ``var/admin-password``), starts gunicorn and ``qcluster``, prints where to log
in, and stops both on Ctrl-C / SIGTERM (workers get time to finish their slice).

It supervises the workers the way the systemd unit in ``docs/deployment.md`` does: ``qcluster``
proves it takes work by pinging a watchdog socket (``$NOTIFY_SOCKET``, see
``syncqueue.watchdog``). When it exits, or stays silent for ``SYNC_WATCHDOG_SECONDS``, its whole
process group is killed and it is started again (a killed slice is rescued from its
checkpoint), and the command says so. If the web server dies, everything stops and the command
exits non-zero: no silent half-running product.

The port is checked first: if it is taken the command says so and starts nothing (no second
set of workers). ``manage.py demo`` (``make demo``, in the sandbox app) runs the same with local
demo servers and data.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection

from syncqueue import watchdog

GRACE_SECONDS = 30
START_GRACE = 60  # seconds a starting qcluster gets before its first watchdog ping


def database_unreachable(exc: Exception) -> str:
    """One plain line for a database that cannot be reached, with what to do."""
    db = connection.settings_dict
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
    if connection.vendor == "sqlite":
        return f"Cannot open the SQLite database {db['NAME']}: {reason}. Check SYNC_VAR_DIR."
    where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db['NAME']}"
    return (
        f"Cannot reach the database {where} ({reason}). Start PostgreSQL there or fix "
        "DATABASE_URL (docs/deployment.md, 'Database: PostgreSQL'); unset DATABASE_URL to use "
        "the embedded SQLite database."
    )


def admin_password_file() -> Path:
    """``var/admin-password`` for the default SQLite database; another database gets its own
    file, so a run on PostgreSQL never shows the password of the SQLite one (or back)."""
    db = connection.settings_dict
    default = Path(settings.VAR_DIR) / "db.sqlite3"
    if connection.vendor == "sqlite" and Path(str(db["NAME"])).resolve() == default.resolve():
        return Path(settings.VAR_DIR) / "admin-password"
    identity = f"{connection.vendor}:{db.get('HOST')}:{db.get('PORT')}:{db['NAME']}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return Path(settings.VAR_DIR) / f"admin-password-{connection.vendor}-{digest}"


class Command(BaseCommand):
    help = "Start the web server and the sync workers (embedded set-up); Ctrl-C stops both."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.SERVE_HOST)
        parser.add_argument("--port", type=int, default=settings.SERVE_PORT)
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args: Any, **options: Any) -> None:
        self.check_port(options["host"], options["port"])
        try:
            connection.ensure_connection()
        except DatabaseError as exc:
            raise CommandError(database_unreachable(exc)) from None
        call_command("migrate", interactive=False, verbosity=0)
        login = self.ensure_admin()
        self.run(options, login)

    def check_port(self, host: str, port: int) -> None:
        """Refuse to start anything when the port is taken (another ``make run``?)."""
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # as gunicorn binds: a previous run's connections in TIME_WAIT do not count
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise CommandError(
                    f"Port {port} on {host} is in use ({exc.strerror}): another 'make run' may "
                    f"be running. Stop it, or choose another port: PORT={port + 1} make run"
                ) from None

    def run(self, options: dict[str, Any], login: str) -> None:
        web = [
            sys.executable,
            "-m",
            "gunicorn",
            "syncproject.wsgi",
            "--bind",
            f"{options['host']}:{options['port']}",
            "--workers",
            str(options["web_workers"]),
            "--threads",
            "4",
            "--access-logfile",
            "-",
            "--graceful-timeout",
            "10",
        ]
        # Each in its own process group, so stopping reaches the workers qcluster forks too.
        # This command has run the system checks and shown their warnings: once is enough.
        manage = [sys.executable, "-m", "syncproject"]
        processes = {
            "workers": Workers([*manage, "qcluster", "--skip-checks"], self.stderr),
            "web": Process(web),
            # IMAP IDLE: new mail within seconds (polling carries on without it)
            "listener": Restarting(
                [*manage, "sync_listen", "--skip-checks"], "IMAP listener", self.stderr
            ),
        }
        url = f"http://{options['host']}:{options['port']}"
        self.stdout.write(
            self.style.SUCCESS(
                f"\nsyncproject is running.\n  Admin:    {url}/admin/   ({login})\n"
                f"  Health:   {url}/healthz\n"
                "Press Ctrl-C to stop web server, workers and the IMAP listener.\n"
            )
        )
        self.supervise(processes)

    def notify(self) -> None:
        """Alert mails from this process too (``syncqueue.notifications``; rate-limited)."""
        from syncqueue import notifications

        try:
            notifications.run_due()
        except Exception:  # mail is a side channel; the product keeps running
            logging.getLogger(__name__).exception("Notifications failed")

    def ensure_admin(self) -> str:
        """Create the first superuser if there is none; return how to log in. The generated
        password is kept per database, and shown only while it is still admin's password."""
        users = get_user_model().objects
        password_file = admin_password_file()
        if not users.filter(is_superuser=True).exists():
            password = settings.SERVE_ADMIN_PASSWORD or secrets.token_urlsafe(12)
            users.create_superuser("admin", "admin@localhost", password)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        if password_file.exists():
            password = password_file.read_text().strip()
            admin = users.filter(username="admin", is_superuser=True).first()
            if admin is not None and admin.check_password(password):
                return f"user admin, password {password}"
        return "log in with your superuser account"

    def stopping_words(self) -> str:
        """What Ctrl-C waits for, said at once (not 12 silent seconds)."""
        try:
            from syncqueue.models import SyncJob

            running = list(
                SyncJob.objects.filter(state=SyncJob.State.RUNNING)
                .select_related("connection")
                .values_list("connection__name", flat=True)[:5]
            )
        except DatabaseError:
            running = []
        if not running:
            return "Stopping the web server and the workers…"
        return (
            f"Stopping: waiting up to {GRACE_SECONDS} s for the running sync(s) to reach a "
            f"checkpoint ({', '.join(running)}); they continue from there on the next start…"
        )

    def supervise(self, processes: dict[str, Any]) -> None:
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        failed = None
        next_notice = 0.0
        try:
            while not stopping and failed is None:
                for name, proc in processes.items():
                    if not proc.healthy():
                        failed = name
                if time.monotonic() >= next_notice:
                    self.notify()  # also when the workers are down: that is an alert too
                    next_notice = time.monotonic() + 30
                time.sleep(0.5)
        finally:
            self.stdout.write(self.stopping_words())
            for proc in processes.values():
                proc.terminate()
            deadline = time.monotonic() + GRACE_SECONDS
            for proc in processes.values():
                if not proc.wait(max(0.1, deadline - time.monotonic())):
                    self.stderr.write(
                        f"Process {proc.pid} did not stop in {GRACE_SECONDS}s; killed."
                    )
                proc.kill_group()
                proc.close()
        if failed:
            raise CommandError(f"The {failed} process stopped unexpectedly; everything stopped.")
        self.stdout.write("Stopped.")


class Process:
    """A child in its own process group (stopping it reaches everything it forked)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv, self.env = argv, env
        self.popen: subprocess.Popen[bytes] | None = self.spawn()

    def spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv, start_new_session=True, env=self.env)

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen else 0

    def healthy(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def terminate(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, seconds: float) -> bool:
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill_group(self) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # whatever is left of its group
        self.popen.wait()

    def close(self) -> None:
        pass


class Restarting(Process):
    """A helper process restarted when it exits (1, 2, 4 … 60 s apart while it keeps failing),
    never reported upwards as failed: without it the product still works, only less quickly."""

    def __init__(self, argv: list[str], what: str, out: Any) -> None:
        self.what, self.out = what, out
        self.restarts: list[float] = []
        self.restart_at = 0.0
        super().__init__(argv)

    def healthy(self) -> bool:
        if self.popen is None:
            if time.monotonic() >= self.restart_at:
                self.popen = self.spawn()
            return True
        code = self.popen.poll()
        if code is not None:
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < 600] + [now]
            pause = min(60.0, 2.0 ** (len(self.restarts) - 1))
            self.out.write(
                f"The {self.what} stopped (exit status {code}); restarting in {pause:.0f}s."
            )
            self.popen, self.restart_at = None, now + pause
        return True


class Workers(Process):
    """``qcluster`` under a watchdog: restarted when it exits or stops proving it works
    (``SYNC_WATCHDOG_SECONDS`` without a ``WATCHDOG=1`` ping), with a growing pause when it
    keeps failing. Never reported upwards as failed: the workers heal, the web server stays."""

    def __init__(self, argv: list[str], out: Any) -> None:
        self.listener = watchdog.Listener()
        self.out = out
        self.restarts: list[float] = []
        self.restart_at = 0.0
        super().__init__(argv, {**os.environ, watchdog.ENV: self.listener.path})
        self.started = time.monotonic()

    def healthy(self) -> bool:
        self.listener.drain()
        if self.popen is None:
            if time.monotonic() >= self.restart_at:
                self.listener.reset()
                self.popen = self.spawn()
                self.started = time.monotonic()
            return True
        code = self.popen.poll()
        silent = self.listener.silent_for(self.started)
        # Like systemd, the watchdog counts from the first READY=1; starting gets a minute more.
        limit = settings.SYNC_WATCHDOG_SECONDS + (0 if self.listener.ready else START_GRACE)
        if code is not None:
            self.restart(f"The workers stopped (exit status {code})")
        elif silent > limit:
            self.restart(f"The workers have not proved they work for {silent:.0f}s (watchdog)")
        return True

    def restart(self, why: str) -> None:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 600] + [now]
        pause = min(60.0, 2.0 ** (len(self.restarts) - 1))  # 1, 2, 4 ... s when it keeps failing
        message = (
            f"{why}; restarting them in {pause:.0f}s (restart {len(self.restarts)} within 10 "
            "minutes). Interrupted syncs continue from their checkpoints."
        )
        self.out.write(message)
        logging.getLogger("syncqueue.serve").critical(message)
        self.kill_group()
        self.popen = None
        self.restart_at = now + pause

    def close(self) -> None:
        self.listener.close()
