"""``manage.py env_docs``: the environment variable list in docs/deployment.md is generated from
``syncproject.env.REGISTRY``, complete, the same on every machine, and never shows a secret."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from syncproject.env import REGISTRY, EnvVar
from syncproject.management.commands.env_docs import END, HIDDEN_DEFAULT, START, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def run(*args: str) -> str:
    out = StringIO()
    call_command("env_docs", *args, stdout=out)
    return out.getvalue()


def test_deployment_guide_lists_the_current_variables() -> None:
    # Fails after a setting is added or changed: run `python manage.py env_docs --write
    # docs/deployment.md` and commit the result.
    assert "up to date" in run("--check", str(DOC))


def test_every_registered_variable_is_listed() -> None:
    output = run()
    assert len(REGISTRY) > 40
    for name in REGISTRY:
        assert f"| `{name}` |" in output, name


def test_check_fails_on_a_stale_block_and_write_repairs_it(tmp_path: Path) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text(f"# Guide\n\nBefore.\n\n{START}\n| `OLD_VAR` | `1` | Gone. |\n{END}\n\nAfter.\n")

    with pytest.raises(CommandError, match=r"out of date.*env_docs --write"):
        run("--check", str(doc))

    run("--write", str(doc))
    text = doc.read_text()
    assert "OLD_VAR" not in text
    assert text.startswith("# Guide\n\nBefore.\n\n") and text.endswith(f"{END}\n\nAfter.\n")
    assert "| `SYNC_WORKERS` |" in text
    assert "up to date" in run("--check", str(doc))
    run("--write", str(doc))
    assert doc.read_text() == text  # writing again changes nothing


def test_a_document_without_markers_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text("# No markers here\n")
    with pytest.raises(CommandError, match="env-vars:start"):
        run("--check", str(doc))
    with pytest.raises(CommandError, match="env-vars:start"):
        run("--write", str(doc))
    assert doc.read_text() == "# No markers here\n"


def test_a_secret_is_shown_as_a_placeholder_only() -> None:
    registry = {
        "SYNC_FAKE_TOKEN": EnvVar(
            name="SYNC_FAKE_TOKEN",
            default="hunter2-must-not-leak",
            help="A token (or SYNC_FAKE_TOKEN_FILE: a file holding it)",
            secret=True,
        ),
        "SYNC_FAKE_LEVEL": EnvVar(name="SYNC_FAKE_LEVEL", default="3", help="A number."),
    }
    output = render(registry)
    assert "hunter2" not in output
    assert f"| `SYNC_FAKE_TOKEN` | {HIDDEN_DEFAULT} | A token" in output
    assert "| `SYNC_FAKE_LEVEL` | `3` | A number. |" in output


def test_registered_secrets_are_placeholders_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The environment is never read by the command (settings have already run), but make sure.
    secrets = [var for var in REGISTRY.values() if var.secret]
    assert {"DJANGO_SECRET_KEY", "SYNC_ENCRYPTION_KEYS"} <= {var.name for var in secrets}
    for var in secrets:
        monkeypatch.setenv(var.name, f"leaked-{var.name}-value")
    output = run()
    for var in secrets:
        assert f"leaked-{var.name}" not in output
        assert f"| `{var.name}` | {HIDDEN_DEFAULT} |" in output


def test_defaults_do_not_depend_on_the_machine() -> None:
    output = run()
    assert str(Path(__file__).resolve().parents[2]) not in output  # no absolute project path
    assert "| `SQLITE_PATH` | `$SYNC_VAR_DIR/db.sqlite3` |" in output
    assert "| `SYNC_TASK_RETRY` | `SYNC_TASK_TIMEOUT + 120` |" in output


def test_unknown_prefixes_are_listed_under_other() -> None:
    output = render({"ACME_THING": EnvVar(name="ACME_THING", default="", help="Pipe | inside.")})
    assert "### Other" in output
    assert "| `ACME_THING` | (empty) | Pipe \\| inside. |" in output
