"""``manage.py env_docs``: the environment variables, as Markdown generated from the code.

Every setting is read through ``syncproject/env.py``, which records name, default and meaning in
``REGISTRY``; this command renders that registry. ``--write PATH`` replaces the block between the
``<!-- env-vars:start -->`` and ``<!-- env-vars:end -->`` markers of a document, ``--check PATH``
fails when that block differs from what the code says (the test suite runs it on
``docs/deployment.md``).

Only registered defaults are printed, never a value from the current environment; a secret's
default column says "(secret)" whatever is recorded for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from syncproject.env import REGISTRY, EnvVar

START = "<!-- env-vars:start -->"
END = "<!-- env-vars:end -->"
HIDDEN_DEFAULT = "(secret)"
REGENERATE = "python manage.py env_docs --write {path}"

# Groups by name prefix; the longest matching prefix wins, so "SYNC_TASK_" beats "SYNC_".
# A variable matching none lands in "Other" (still listed: nothing is ever left out).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Web and Django",
        ("DJANGO_", "SITE_URL", "SYNC_BASE_URL", "TIME_ZONE", "LOG_LEVEL"),
    ),
    ("Database and local files", ("DATABASE_URL", "DB_", "SQLITE_", "SYNC_VAR_DIR", "MEDIA_")),
    ("Credentials encryption", ("SYNC_ENCRYPTION_",)),
    (
        "Workers (django-q2)",
        ("SYNC_QUEUE_", "SYNC_WORKERS", "SYNC_TASK_", "SYNC_SLICE_", "SYNC_LEASE_", "SYNC_Q_"),
    ),
    ("Sync engine: retries, schedules, retention", ("SYNC_",)),
    (
        "Monitoring and notifications",
        (
            "SYNC_ALERT_",
            "SYNC_HEARTBEAT_",
            "SYNC_METRICS_",
            "SYNC_NOTIFY_",
            "EMAIL_",
            "DEFAULT_FROM_EMAIL",
        ),
    ),
    ("Providers", ("MAIL_", "IMAP_", "MSGRAPH_", "GRAPH_", "ZENDESK_", "ZIMBRA_", "SYNC_CA_")),
)
OTHER = "Other"


def group_of(name: str) -> str:
    """The title of the group a variable belongs to (see ``GROUPS``)."""
    best, length = OTHER, 0
    for title, prefixes in GROUPS:
        for prefix in prefixes:
            if name.startswith(prefix) and len(prefix) > length:
                best, length = title, len(prefix)
    return best


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _default_cell(var: EnvVar) -> str:
    if var.secret:
        return HIDDEN_DEFAULT
    if var.default == "":
        return "(empty)"
    return f"`{_cell(var.default).replace('`', '')}`"


def render(registry: Mapping[str, EnvVar]) -> str:
    """Markdown tables of ``registry``, grouped (``GROUPS`` order) and sorted by name.

    Secrets never show a default; the output depends only on the registry, so it is the same on
    every machine.
    """
    titles = [title for title, _ in GROUPS] + [OTHER]
    grouped: dict[str, list[EnvVar]] = {title: [] for title in titles}
    for var in registry.values():
        grouped[group_of(var.name)].append(var)
    parts = [
        "_Generated from the code by `python manage.py env_docs`; do not edit by hand.\n"
        'Secrets have no default: "(secret)" marks them, and each can also be given as\n'
        "`NAME_FILE`, the path of a file holding the value._"
    ]
    for title in titles:
        rows = sorted(grouped[title], key=lambda var: var.name)
        if not rows:
            continue
        lines = [f"### {title}", "", "| Variable | Default | Meaning |", "|---|---|---|"]
        lines += [f"| `{v.name}` | {_default_cell(v)} | {_cell(v.help)} |" for v in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def replace_block(document: str, block: str) -> str:
    """``document`` with the text between the markers replaced by ``block``.

    Raises ``ValueError`` when the markers are missing, repeated or out of order.
    """
    if document.count(START) != 1 or document.count(END) != 1:
        raise ValueError(f"needs exactly one {START} and one {END} line")
    head, _, rest = document.partition(START)
    _, _, tail = rest.partition(END)
    if END in head:
        raise ValueError(f"{END} comes before {START}")
    return f"{head}{START}\n\n{block}\n{END}{tail}"


def load_registry() -> Mapping[str, EnvVar]:
    """The registry after the project's settings module has run (it fills the registry).

    Settings modules that extend the project's (such as the test settings) import it first, so
    this import finds it already run; it never runs twice in one process.
    """
    importlib.import_module("syncproject.settings")
    return REGISTRY


class Command(BaseCommand):
    # Documentation is generated from the registry alone; a configuration problem the checks
    # would report (e.g. a missing key) must not stop it.
    requires_system_checks: list[str] = []
    help = (
        "Print the environment variables as Markdown (name, default, meaning). --write PATH "
        "updates the block between <!-- env-vars:start --> and <!-- env-vars:end --> in PATH; "
        "--check PATH exits with status 1 when that block is out of date."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--write", metavar="PATH", help="Update the marked block in PATH.")
        target.add_argument(
            "--check", metavar="PATH", help="Fail when the marked block in PATH is out of date."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        block = render(load_registry())
        path_text = options["write"] or options["check"]
        if not path_text:
            self.stdout.write(block, ending="")
            return
        path = Path(path_text)
        try:
            document = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        try:
            updated = replace_block(document, block)
        except ValueError as exc:
            raise CommandError(f"{path}: {exc}.") from None
        if options["check"]:
            if updated != document:
                raise CommandError(
                    f"{path}: the list of environment variables is out of date with the code. "
                    f"Regenerate it with: {REGENERATE.format(path=path_text)}"
                )
            self.stdout.write(f"{path}: the list of environment variables is up to date.")
            return
        if updated != document:
            path.write_text(updated, encoding="utf-8")
            self.stdout.write(f"Updated the environment variables in {path}.")
        else:
            self.stdout.write(f"{path} was already up to date.")
