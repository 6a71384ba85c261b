"""Cases and their contacts' mail: queue the history searches, link what they find, and keep
the case's state (Syncing / Synced / Failed, with the reason) in step with the jobs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from integrations.models import Connection
from syncqueue import control, engine
from syncqueue.models import SyncJob
from workspace.models import Case, CaseContact, CaseMessage, history_mailboxes

State = SyncJob.State
HISTORICAL = SyncJob.Kind.HISTORICAL


def mailbox_connections(case: Case) -> list[Connection]:
    """The owner's mailbox connections that can search history, and the other mailboxes the
    case names."""
    own = Connection.objects.filter(history_mailboxes(), owner=case.owner, enabled=True)
    others = case.mailboxes.filter(enabled=True)
    return list({conn.pk: conn for conn in [*own, *others]}.values())


def queue_history(contact: CaseContact, user: Any = None) -> list[SyncJob]:
    """Search every mailbox of the case for mail with this contact."""
    case = contact.case
    connections = mailbox_connections(case)
    if not connections:
        _set_state(
            case,
            Case.SyncState.FAILED,
            f"{case.owner} has no mailbox that can search its history connected, so there "
            "is nowhere to search: connect one, then retry.",
        )
        return []
    jobs = [
        engine.enqueue(
            conn,
            HISTORICAL,
            payload={"case": case.pk, "contact": contact.pk},
            dedupe_key=f"history:{case.pk}:{contact.pk}",
            requested_by=user,
        )
        for conn in connections
    ]
    _set_state(case, Case.SyncState.SYNCING, "")
    return jobs


def retry(case: Case, user: Any = None) -> int:
    """Queue the case's failed history searches again (or search afresh if none exist)."""
    failed = SyncJob.objects.filter(kind=HISTORICAL, payload__case=case.pk, state=State.FAILED)
    retried = 0
    for job in failed.select_related("connection"):
        try:
            retried += control.retry_job(job)
        except (control.ControlError, engine.ConnectionDisabled):
            continue  # that mailbox waits for new credentials or was turned off
    if not retried and not history_jobs(case).exists():
        for contact in case.contacts.all():
            retried += len(queue_history(contact, user))
    if retried:
        _set_state(case, Case.SyncState.SYNCING, "")
    return retried


def link_messages(case_id: int, contact_id: int, message_ids: Iterable[int]) -> int:
    """Link messages to the case; a message already linked stays linked once."""
    links = [
        CaseMessage(case_id=case_id, message_id=mid, contact_id=contact_id) for mid in message_ids
    ]
    CaseMessage.objects.bulk_create(links, ignore_conflicts=True, batch_size=500)
    return len(links)


def history_jobs(case: Case):  # -> QuerySet[SyncJob]
    return SyncJob.objects.filter(kind=HISTORICAL, payload__case=case.pk)


def refresh_state(case: Case) -> None:
    """Syncing while any search waits or runs; Failed (with its reason) if the latest search of
    any contact in any mailbox failed; Synced otherwise."""
    jobs = history_jobs(case)
    if jobs.filter(state__in=SyncJob.ACTIVE).exists():
        _set_state(case, Case.SyncState.SYNCING, "")
        return
    latest: dict[tuple[int, Any], SyncJob] = {}
    for job in jobs.order_by("id"):
        latest[(job.connection_id, job.payload.get("contact"))] = job
    failures = [job for job in latest.values() if job.state == State.FAILED]
    if failures:
        reason = failures[-1].error_message or "A history search failed."
        _set_state(case, Case.SyncState.FAILED, reason)
    elif latest:
        _set_state(case, Case.SyncState.SYNCED, "", synced=True)


def _set_state(case: Case, state: str, error: str, synced: bool = False) -> None:
    case.sync_state, case.sync_error = state, error[:500]
    fields = ["sync_state", "sync_error"]
    if synced:
        case.synced_at = timezone.now()
        fields.append("synced_at")
    case.save(update_fields=fields)


# --- signal receivers (connected in WorkspaceConfig.ready) ------------------------------------


def contact_added(sender: Any, instance: CaseContact, created: bool, **kwargs: Any) -> None:
    if created:
        transaction.on_commit(lambda: queue_history(instance))


def job_finished(sender: Any, job: SyncJob, **kwargs: Any) -> None:
    if job.kind == HISTORICAL and job.payload.get("case"):
        case = Case.objects.filter(pk=job.payload["case"]).first()
        if case is not None:
            refresh_state(case)
