"""Credentials at rest: encryption, rotation, and clear errors for missing or wrong keys."""

from __future__ import annotations

import logging
from io import StringIO

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from integrations import crypto
from integrations.models import Connection
from syncqueue import engine
from syncqueue.models import SyncJob

KEY_A, KEY_B = crypto.generate_key(), crypto.generate_key()


def test_secrets_are_encrypted_at_rest(make_connection):
    conn = make_connection(secrets={"password": "correct horse battery"})
    stored = Connection.objects.values_list("secret", flat=True).get(pk=conn.pk)
    assert "correct horse" not in stored
    assert conn.get_secrets() == {"password": "correct horse battery"}


def test_blank_secret_values_keep_the_stored_ones(make_connection):
    conn = make_connection(secrets={"password": "one", "token": "two"})
    conn.set_secrets({"password": "", "token": "three"})
    assert conn.get_secrets() == {"password": "one", "token": "three"}


def test_first_key_encrypts_and_every_key_decrypts(settings):
    settings.SYNC_ENCRYPTION_KEYS = [KEY_A]
    token = crypto.encrypt_secrets({"p": "x"})
    settings.SYNC_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    assert crypto.decrypt_secrets(token) == {"p": "x"}
    settings.SYNC_ENCRYPTION_KEYS = [KEY_B]
    with pytest.raises(crypto.SecretsUnavailable, match="cannot be decrypted"):
        crypto.decrypt_secrets(token)


def test_rotation_command_re_encrypts_under_the_newest_key(make_connection, settings):
    settings.SYNC_ENCRYPTION_KEYS = [KEY_A]
    conn = make_connection(secrets={"password": "rotate-me"})
    settings.SYNC_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    out = StringIO()
    call_command("rotate_secrets", stdout=out)
    assert "Re-encrypted 1" in out.getvalue()
    settings.SYNC_ENCRYPTION_KEYS = [KEY_B]  # the old key can go now
    conn.refresh_from_db()
    assert conn.get_secrets() == {"password": "rotate-me"}


def test_rotation_includes_credentials_kept_to_delete_a_graph_subscription(
    make_connection, settings
):
    """A deleted Graph connection's credentials are kept (encrypted) until its subscription is
    deleted at Graph (integrations.msgraph.push.retire): rotation covers them too."""
    from integrations.msgraph.models import RetiredSubscription

    settings.SYNC_ENCRYPTION_KEYS = [KEY_A]
    conn = make_connection(secrets={"client_secret": "rotate-me"})
    retired = RetiredSubscription.objects.create(
        subscription_id="sub-1", name=conn.name, config=conn.config, secret=conn.secret
    )
    settings.SYNC_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    out = StringIO()
    call_command("rotate_secrets", stdout=out)
    assert "Re-encrypted 2" in out.getvalue()
    settings.SYNC_ENCRYPTION_KEYS = [KEY_B]
    retired.refresh_from_db()
    assert crypto.open_secrets(retired.secret)[0] == {"client_secret": "rotate-me"}


def test_rotation_names_connections_it_cannot_read(make_connection, settings):
    settings.SYNC_ENCRYPTION_KEYS = [KEY_A]
    conn = make_connection()
    settings.SYNC_ENCRYPTION_KEYS = [KEY_B]
    with pytest.raises(CommandError, match=rf"ids \[{conn.pk}\]"):
        call_command("rotate_secrets", stdout=StringIO())


def test_malformed_key_is_a_clear_configuration_error_without_the_key(settings):
    settings.SYNC_ENCRYPTION_KEYS = [KEY_A, "not-a-key-shh"]
    with pytest.raises(ImproperlyConfigured) as info:
        crypto.encrypt_secrets({"p": "x"})
    assert "entry 2 is not a valid Fernet key" in str(info.value)
    assert "not-a-key-shh" not in str(info.value)
    assert crypto.check_keys() is not None


@pytest.mark.django_db(transaction=True)
def test_job_with_an_undecryptable_secret_fails_clearly_and_logs_nothing_secret(
    make_connection, work, settings, caplog
):
    settings.SYNC_ENCRYPTION_KEYS = [KEY_A]
    conn = make_connection(secrets={"password": "top-secret-pw"})
    settings.SYNC_ENCRYPTION_KEYS = [KEY_B]  # the key was swapped without rotation

    class NeedsSecret(conn.connector_class):  # a connector that reads its password
        def sync(self, ctx):
            assert self.secrets
            yield from ()

    from tests.support import connector as module

    original = module.FakeConnector.sync
    module.FakeConnector.sync = NeedsSecret.sync
    caplog.set_level(logging.DEBUG)
    try:
        job = engine.enqueue(conn, SyncJob.Kind.MANUAL)
        work()
    finally:
        module.FakeConnector.sync = original
    job.refresh_from_db()
    assert job.state == SyncJob.State.FAILED and job.error_class == "Permanent"
    assert "cannot be decrypted" in job.error_message
    assert "top-secret-pw" not in caplog.text
    assert KEY_A not in caplog.text and KEY_B not in caplog.text


def test_dev_key_is_created_once_with_a_warning(settings, tmp_path, caplog):
    settings.SYNC_ENCRYPTION_KEYS = []
    settings.DATABASE_URL = ""  # the embedded SQLite: a development key is allowed there
    settings.SYNC_DEV_ENCRYPTION_KEY_FILE = tmp_path / "dev.key"
    with caplog.at_level(logging.WARNING):
        token = crypto.encrypt_secrets({"p": "x"})
    assert "development encryption key" in caplog.text
    assert (tmp_path / "dev.key").stat().st_mode & 0o777 == 0o600
    assert crypto.decrypt_secrets(token) == {"p": "x"}
    from integrations.checks import check_encryption_keys

    assert [m.id for m in check_encryption_keys()] == ["integrations.W001"]


def test_generate_key_prints_a_usable_key():
    out = StringIO()
    call_command("rotate_secrets", "--generate-key", stdout=out)
    assert len(out.getvalue().strip()) == 44


def test_no_development_key_on_a_shared_database(settings, tmp_path):
    settings.SYNC_ENCRYPTION_KEYS = []
    settings.DATABASE_URL = "postgres://db.example/sync"
    settings.SYNC_DEV_ENCRYPTION_KEY_FILE = tmp_path / "dev.key"
    with pytest.raises(ImproperlyConfigured, match="SYNC_ENCRYPTION_KEYS is not set"):
        crypto.encrypt_secrets({"p": "x"})
    assert not (tmp_path / "dev.key").exists()
    from integrations.checks import check_encryption_keys

    assert [m.id for m in check_encryption_keys()] == ["integrations.E002"]
