"""What ``make run`` says before it starts anything: the admin password of *this* database
only, and one plain line for a database it cannot reach."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from sandbox.dovecot import free_port
from syncproject.management.commands.serve import Command, admin_password_file
from tests.support.processes import ROOT


@pytest.mark.django_db
def test_the_password_shown_is_this_databases_admin_password(settings: Any, tmp_path: Any) -> None:
    settings.VAR_DIR = tmp_path
    settings.SERVE_ADMIN_PASSWORD = ""
    path = admin_password_file()
    # the test database is not var/db.sqlite3: its own file, named after it
    assert path.parent == tmp_path and path.name.startswith(f"admin-password-{connection.vendor}-")
    login = Command().ensure_admin()
    password = path.read_text().strip()
    assert login == f"user admin, password {password}"
    admin = get_user_model().objects.get(username="admin")
    assert admin.check_password(password)

    admin.set_password("changed-since")  # e.g. the file belongs to another run's database
    admin.save()
    assert Command().ensure_admin() == "log in with your superuser account"


@pytest.mark.process
def test_an_unreachable_database_is_one_plain_line(tmp_path: Any) -> None:
    port = free_port()  # nothing listens there
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "syncproject.settings",
        "DATABASE_URL": f"postgres://sync@127.0.0.1:{port}/syncproject",
        "SYNC_ENCRYPTION_KEYS": "Z2dnZ2dnZ2dnZ2dnZ2dnZ2dnZ2dnZ2dnZ2dnZ2dnZ2c=",
        "DJANGO_SECRET_KEY": "a-test-secret-key-that-is-long-enough-for-the-checks-0123456789",
        "SYNC_VAR_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"CommandError: Cannot reach the database 127.0.0.1:{port}/syncproject ("
        + lines[0].split("(", 1)[1]
    ]
    assert "Traceback" not in done.stderr
    assert "Start PostgreSQL there or fix DATABASE_URL" in lines[0]
    assert not (tmp_path / "db.sqlite3").exists()
