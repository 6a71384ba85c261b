"""The smaller holes found by trying the product as an attacker would, one test each."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from integrations.errors import AuthFailed
from integrations.models import Connection
from integrations.zimbra.config import ZimbraConfig
from integrations.zimbra.soap import ZimbraSoap
from sandbox.zimbra import ADMIN_NAME, ADMIN_PASSWORD
from syncqueue import control, engine
from syncqueue.models import SyncJob
from tests.support.processes import ROOT

pytestmark = pytest.mark.django_db


def test_zimbra_user_tokens_are_keyed_by_the_admin_credentials_that_made_them(zimbra):
    zimbra.add_account("ann@corp.test")
    config = ZimbraConfig(
        soap_url=zimbra.soap_url, admin_url=zimbra.admin_url, admin_name=ADMIN_NAME
    )
    good = ZimbraSoap(config, {"admin_password": ADMIN_PASSWORD})
    good.call("ann@corp.test", "Sync", l="15")  # caches ann's delegated token
    wrong = ZimbraSoap(config, {"admin_password": "not-the-admin-password"})
    with pytest.raises(AuthFailed):
        wrong.call("ann@corp.test", "Sync", l="15")


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "syncproject.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_shared_database_without_encryption_keys_stops_start_up(tmp_path):
    env = {
        "DATABASE_URL": "postgres://nobody@127.0.0.1:9/none",
        "SYNC_VAR_DIR": str(tmp_path),
    }
    result = run_manage("check", **env)
    assert result.returncode != 0
    assert "integrations.E002" in result.stderr and "rotate_secrets --generate-key" in result.stderr
    web = subprocess.run(
        [sys.executable, "-c", "import syncproject.wsgi"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "syncproject.settings",
            "SYNC_ENCRYPTION_KEYS": "",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert web.returncode != 0 and "Refusing to start" in web.stderr
    key = run_manage("rotate_secrets", "--generate-key", **env)  # the way out still works
    assert key.returncode == 0 and len(key.stdout.strip()) == 44


def test_check_deploy_is_clean_with_a_production_environment(tmp_path):
    env = {
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_BEHIND_TLS_PROXY": "1",
        "DJANGO_ALLOWED_HOSTS": "sync.example.com",
        "SYNC_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24=",
        "SYNC_VAR_DIR": str(tmp_path),
    }
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.fixture
def bad_key_connection(make_graph_connection):
    conn = make_graph_connection(certificate_thumbprint="AB12CD34EF56AB12CD34EF56AB12CD34EF56AB12")
    conn.set_secrets({"private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n"}, replace=True)
    conn.save()
    return conn


def test_a_malformed_graph_private_key_is_a_plain_credential_error_once(
    bad_key_connection, client, staff, work
):
    with pytest.raises(AuthFailed, match="private key cannot be read"):
        bad_key_connection.build_connector().check()

    client.force_login(staff)
    answer = client.post(
        reverse("admin:integrations_connection_changelist"),
        {"action": "test_connection", "_selected_action": [bad_key_connection.pk]},
        follow=True,
    )
    assert answer.status_code == 200
    assert any("private key cannot be read" in str(m) for m in answer.context["messages"])

    out = StringIO()
    with pytest.raises(CommandError):  # a reported problem, not a crash
        call_command("sync_doctor", "--live", stdout=out)
    assert "AuthFailed: The certificate's private key cannot be read" in out.getvalue()

    job = engine.enqueue(bad_key_connection, SyncJob.Kind.MANUAL)
    work()
    job.refresh_from_db()
    bad_key_connection.refresh_from_db()
    assert (job.state, job.error_class, job.attempts) == ("failed", "AuthFailed", 1)
    assert bad_key_connection.status == Connection.Status.AUTH_REQUIRED


def test_an_owner_cannot_switch_on_what_staff_switched_off(client, owner, staff, make_connection):
    conn = make_connection()
    client.force_login(staff)
    client.post(
        reverse("admin:integrations_connection_changelist"),
        {
            "action": "disable",
            "_selected_action": [conn.pk],
            "reason": "Mailbox migrated to Microsoft 365",
        },
    )
    conn.refresh_from_db()
    assert not conn.enabled and conn.disabled_by_staff

    client.force_login(owner)
    page = client.get("/settings/sync/").content.decode()
    assert "An administrator turned this connection off" in page
    assert "Ask your administrator" in page
    answer = client.post(f"/settings/sync/{conn.pk}/enabled/", {"enabled": "on"}, follow=True)
    assert "Ask your administrator to turn it on again" in answer.content.decode()
    conn.refresh_from_db()
    assert not conn.enabled and conn.disabled_reason == "Mailbox migrated to Microsoft 365"
    with pytest.raises(control.ControlError):
        control.disable(conn, "Turned off by you.", by_staff=False)  # nor overwrite the reason

    control.disable(conn, "x", by_staff=True)
    control.enable(conn)  # staff turn it on again: the owner is free again
    control.disable(conn, "Turned off by you.", by_staff=False)
    control.enable(conn, by_staff=False)
    conn.refresh_from_db()
    assert conn.enabled


def test_django_q_admin_is_read_only_for_staff_who_are_not_superusers(client, django_user_model):
    clerk = django_user_model.objects.create_user("clerk", "c@example.com", "pw", is_staff=True)
    clerk.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_q",
            codename__in=["add_schedule", "change_schedule", "view_schedule", "delete_schedule"],
        )
    )
    client.force_login(clerk)
    assert client.get(reverse("admin:django_q_schedule_changelist")).status_code == 200
    assert client.get(reverse("admin:django_q_schedule_add")).status_code == 403
    created = client.post(
        reverse("admin:django_q_schedule_add"),
        {"name": "x", "func": "os.system", "args": "'id'", "schedule_type": "O", "repeats": -1},
    )
    assert created.status_code == 403
    from django_q.models import Schedule

    assert not Schedule.objects.filter(func="os.system").exists()
