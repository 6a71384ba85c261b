"""Microsoft Graph change notifications: new mail within seconds, polling as the safety net.

With ``SYNC_PUBLIC_URL`` set, each enabled Graph mailbox gets a subscription on its messages
(created, updated, deleted) whose notifications and lifecycle notifications go to
``<SYNC_PUBLIC_URL>/hooks/graph/`` (:func:`integrations.msgraph.views.notifications`). Without
it push is off and the schedule carries on alone (``sync_doctor`` says so).

- **Made and renewed by the dispatcher** (:func:`maintain`, on every full pass): missing
  subscriptions are created, ones expiring within ``SYNC_GRAPH_RENEW_BEFORE_MINUTES`` (or that
  Graph asked to reauthorize) are renewed with a PATCH, one Graph no longer knows (404) is made
  again, and those of connections turned off or waiting for credentials are deleted.
- **Posting where we are now**: each subscription remembers its ``notificationUrl``. After
  ``SYNC_PUBLIC_URL`` changed (a new domain, a moved proxy), the next pass deletes the ones
  posting to the old address and makes them anew, validated at the new one; renewing alone
  would keep them posting to the old address for as long as they are renewed.
- **Deleted with its mailbox**: deleting a Graph connection keeps what is needed to delete its
  subscription at Graph (:class:`~integrations.msgraph.models.RetiredSubscription`: the
  settings and the still-encrypted credentials), and the next pass does, retrying after
  failures until Graph has it no more or it has expired; otherwise Graph would post to us for
  days, for a mailbox nobody syncs.
- **No gap when one is made again** (after ``subscriptionRemoved``, a 404 on renewal, a moved
  address, failures): a new subscription reports changes from its creation on, so a sync is
  queued once it exists, to pick up what changed while there was none (the docs' order for
  ``subscriptionRemoved``: subscribe again, then resync).
- **Verified**: every subscription gets its own random ``clientState``; only its SHA-256 is
  stored. A notification whose clientState matches no subscription (or belongs to another
  subscription id) is refused and changes nothing; one of a deleted mailbox's subscription
  that Graph has not deleted yet is acknowledged and dropped. Each item of a batch is judged
  on its own.
- **A hint, not the truth**: a notification queues a ``notified`` sync of the mailbox (a burst
  joins the waiting job); the delta query finds what changed. ``missed`` queues one as well
  (the delta token still knows everything since the last sync); ``subscriptionRemoved``
  forgets Graph's id (the next pass makes a new one, then queues another sync) and queues a
  sync;
  ``reauthorizationRequired`` renews on the next pass (a renewal also reauthorizes), then
  queues a sync for what Graph held back while delivery was paused.
- **Push is live** while a subscription is: the mailbox's ``push_until`` is its expiry (none
  while Graph has paused or removed it), the only time ``SYNC_PUSHED_POLL_FACTOR`` stretches
  its polls. With ``SYNC_PUBLIC_URL`` cleared the subscriptions are deleted at Graph.

Protocol notes and sources: docs/protocols.md, "Microsoft Graph".
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from integrations.errors import SyncError
from integrations.models import Connection
from integrations.msgraph.client import GraphClient
from integrations.msgraph.models import RetiredSubscription, Subscription
from syncqueue.engine import enqueue_notified

log = logging.getLogger("integrations.msgraph.push")

NOTIFY_PATH = "/hooks/graph/"
CHANGE_TYPES = "created,updated,deleted"
PER_PASS = 50  # subscriptions made or renewed per dispatcher pass (the rest: next pass)
PASS_SECONDS = 30.0  # and no longer than this (a create waits for Graph's validation call)
MAX_ITEMS = 100  # notifications looked at per request; Graph batches far fewer
_EXISTING = re.compile(r"Subscription Id ([0-9a-fA-F-]{36}) already exists")


def notification_url() -> str:
    """Where Graph posts; empty when push is off."""
    base = settings.SYNC_PUBLIC_URL.rstrip("/")
    return f"{base}{NOTIFY_PATH}" if base else ""


def _hash(client_state: str) -> str:
    # surrogatepass: JSON may carry lone surrogates; they hash (and match nothing) instead of
    # raising
    return hashlib.sha256(client_state.encode("utf-8", "surrogatepass")).hexdigest()


def watched() -> Any:
    """The Graph connections that should have a subscription."""
    return Connection.objects.filter(kind="msgraph", enabled=True).exclude(
        status=Connection.Status.AUTH_REQUIRED
    )


def _client(conn: Connection) -> GraphClient:
    connector = conn.build_connector()
    return GraphClient(connector.config, connector.secrets)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _expiry(now: datetime) -> datetime:
    return now + timedelta(minutes=settings.SYNC_GRAPH_SUBSCRIPTION_MINUTES)


def _answered_expiry(reply: dict[str, Any], asked: datetime) -> datetime:
    found = parse_datetime(str(reply.get("expirationDateTime") or ""))
    return found or asked


def create(conn: Connection, now: datetime | None = None) -> Subscription:
    """Make the mailbox's subscription (replacing any we had). The clientState's hash is
    stored before Graph is asked, so a notification that arrives before the answer is
    already recognised."""
    now = now or timezone.now()
    client = _client(conn)
    state = secrets.token_urlsafe(64)[:100]  # Graph allows 128 characters
    sub, first = Subscription.objects.update_or_create(
        connection=conn,
        defaults={"subscription_id": None, "client_state_hash": _hash(state), "renew_now": False},
    )
    _push_until(conn.pk, None)  # any earlier one is gone: polled as scheduled until this works
    config = client.config
    resource = _resource(config.mailbox)
    asked = _expiry(now)
    url = notification_url()
    body = {
        "changeType": CHANGE_TYPES,
        "notificationUrl": url,
        "lifecycleNotificationUrl": url,
        "resource": resource,
        "expirationDateTime": _iso(asked),
        "clientState": state,
    }
    try:
        try:
            reply = client.call("POST", f"{config.api}/subscriptions", body)
        except SyncError as exc:
            # 409: Graph still holds one for this mailbox that we lost track of: replace it
            existing = _EXISTING.search(exc.detail or "")
            if existing is None:
                raise
            client.call("DELETE", f"{config.api}/subscriptions/{existing.group(1)}")
            reply = client.call("POST", f"{config.api}/subscriptions", body)
    finally:
        client.close()
    # Only if the row still holds this run's secret: another dispatcher (whose pass outlived
    # its lock) may have made one meanwhile; ours then goes, so hash and id always match.
    expires = _answered_expiry(reply, asked)
    kept = Subscription.objects.filter(pk=sub.pk, client_state_hash=_hash(state)).update(
        subscription_id=str(reply["id"]),
        resource=resource,
        notification_url=url,
        expires_at=expires,
        last_error="",
        failures=0,
    )
    if not kept:
        forget(Subscription(connection=conn, subscription_id=str(reply["id"])), local=False)
        log.info("%s: a concurrent pass made the subscription; ours deleted.", conn.name)
    else:
        _push_until(conn.pk, expires)
        log.info("%s: Graph subscription made.", conn.name)
        if not first:  # one made again: changes while there was none reached nobody
            enqueue_notified(conn.pk, "Graph subscription made again")
    sub.refresh_from_db()
    return sub


def renew(sub: Subscription, now: datetime | None = None) -> Subscription:
    """PATCH a new expiry (which also reauthorizes); made again if Graph no longer has it, or
    if it posts anywhere but to today's ``notification_url`` (PATCH renews; it would not move
    it: the old address would keep getting the notifications)."""
    now = now or timezone.now()
    conn = sub.connection
    if not sub.subscription_id:
        return create(conn, now)
    url = notification_url()
    if sub.notification_url and not _same_address(sub.notification_url, url):
        return _moved(sub, now)
    client = _client(conn)
    if sub.resource and sub.resource != _resource(client.config.mailbox):
        client.close()  # the connection now names another mailbox: subscribe to that one
        return _moved(sub, now, f"watches {sub.resource}, not the mailbox set now")
    asked = _expiry(now)
    # Taken before the PATCH, so a challenge that arrives meanwhile sets it again
    reauthorizing = sub.renew_now
    if reauthorizing:
        Subscription.objects.filter(pk=sub.pk).update(renew_now=False)
    try:
        reply = client.call(
            "PATCH",
            f"{client.config.api}/subscriptions/{sub.subscription_id}",
            {"expirationDateTime": _iso(asked)},
        )
    except Exception as exc:
        if isinstance(exc, SyncError) and _not_found(exc):
            client.close()
            return create(conn, now)
        if reauthorizing:
            Subscription.objects.filter(pk=sub.pk).update(renew_now=True)
        raise
    finally:
        client.close()
    # a subscription from before its address was kept: Graph's answer names it
    posts_to = reply.get("notificationUrl") if isinstance(reply, dict) else None
    if isinstance(posts_to, str) and posts_to and not _same_address(posts_to, url):
        if reauthorizing:  # the PATCH reauthorized it, whatever becomes of the move
            enqueue_notified(conn.pk, "Graph subscription reauthorized")
        sub.notification_url = posts_to
        return _moved(sub, now)
    expires = _answered_expiry(reply, asked)
    Subscription.objects.filter(pk=sub.pk).update(
        expires_at=expires, notification_url=url, last_error="", failures=0
    )
    _push_until(conn.pk, expires)
    if reauthorizing:
        # Graph pauses delivery until a subscription is reauthorized, and what changed
        # meanwhile is not sent later (lifecycle events page): the delta query finds it
        enqueue_notified(conn.pk, "Graph subscription reauthorized")
    sub.refresh_from_db()
    return sub


def _push_until(connection_id: int, until: datetime | None) -> None:
    """Graph reports this mailbox's changes until ``until`` (a live subscription's expiry;
    None: no subscription), which is what lets SYNC_PUSHED_POLL_FACTOR stretch its polls."""
    Connection.objects.filter(pk=connection_id).update(push_until=until)


def _same_address(one: str, other: str) -> bool:
    """Whether two notification URLs name the same endpoint (scheme and host in any case, a
    default port written or not), so that Graph echoing one back in its own spelling is not
    taken for a move."""

    def key(url: str) -> tuple[str, str, int | None, str, str]:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            port = None
        if port == {"https": 443, "http": 80}.get(scheme):
            port = None
        return scheme, (parts.hostname or "").lower(), port, parts.path, parts.query

    return key(one) == key(other)


def _resource(mailbox: str) -> str:
    return f"users/{mailbox}/messages"


def _moved(sub: Subscription, now: datetime, why: str = "") -> Subscription:
    """``SYNC_PUBLIC_URL`` (or the connection's mailbox) changed since ``sub`` was made: delete
    it at Graph, then make a new one, validated at the new address (``create`` queues the sync
    that covers the gap). If Graph could not be told to delete it, it stays ours (still posting
    to the old address) and the move is tried again after the backoff: a subscription is never
    lost track of."""
    why = why or f"posts to {sub.notification_url}, not {notification_url()}"
    log.info("%s: the Graph subscription %s: subscribing again.", sub.connection.name, why)
    failure = _delete_remote(sub)
    if failure is not None:
        _failed(sub, failure, "Graph subscription not moved to the new address")
        _push_until(sub.connection_id, None)  # it posts to the old address: not push here
        sub.refresh_from_db()
        return sub
    return create(sub.connection, now)


def forget(sub: Subscription, *, local: bool = True, now: datetime | None = None) -> bool:
    """Delete at Graph and (``local``) here; returns whether the row went.

    A subscription Graph could not be told about (a network error, a 5xx, credentials it
    refuses) keeps its row, with the failure counted: Graph would go on posting to us until it
    expires, so the next passes try again (after the same backoff as a failed renewal). Once
    Graph no longer has it (404) or its expiry has passed, the row goes."""
    now = now or timezone.now()
    failure = _delete_remote(sub)
    if not local:
        if failure is not None:  # it lapses at its expiry; its posts no longer prove anything
            log.info("%s: Graph subscription not deleted (%s).", sub.connection.name, failure)
        return False
    if failure is not None and sub.expires_at is not None and sub.expires_at > now:
        _failed(sub, failure, "Graph subscription not deleted (tried again on the next passes)")
        return False
    sub.delete()
    _push_until(sub.connection_id, None)
    return True


def _delete_remote(sub: Subscription) -> Exception | None:
    """DELETE ``sub`` at Graph; what went wrong, or None once Graph no longer has it."""
    if not sub.subscription_id:
        return None
    return _delete_at_graph(sub.connection, sub.subscription_id)


def _delete_at_graph(conn: Connection, subscription_id: str) -> Exception | None:
    """DELETE a subscription at Graph with ``conn``'s credentials; what went wrong, or None
    once Graph no longer has it (deleted now, or before: 404)."""
    try:
        client = _client(conn)
        try:
            client.call("DELETE", f"{client.config.api}/subscriptions/{subscription_id}")
        finally:
            client.close()
    except Exception as exc:
        return None if _not_found(exc) else exc
    return None


def _not_found(exc: Exception) -> bool:
    """Graph's answer for a subscription it no longer has (expired, or deleted already)."""
    return isinstance(exc, SyncError) and (
        exc.code == "ResourceNotFound" or "HTTP 404" in (exc.detail or "")
    )


def _failed(
    sub_or_conn: Subscription | Connection, exc: Exception, what: str = "Graph push not set up"
) -> None:
    conn = sub_or_conn if isinstance(sub_or_conn, Connection) else sub_or_conn.connection
    message = exc.message if isinstance(exc, SyncError) else type(exc).__name__
    Subscription.objects.update_or_create(
        connection=conn,
        defaults={"last_error": f"{what}: {type(exc).__name__}: {message}"[:500]},
    )
    Subscription.objects.filter(connection=conn).update(failures=F("failures") + 1)
    log.warning("%s: %s: %s", conn.name, what, message)


BACKOFF_STEPS = 9  # after n failures, wait 2**n minutes (at most 6 hours) before trying again


def _backoff(failures: int) -> timedelta:
    return timedelta(minutes=min(360, 2 ** min(failures, BACKOFF_STEPS)))


def _ready(now: datetime) -> Q:
    """Subscriptions not waiting after failures (``_backoff``), as a query: the wait is left
    out before a pass takes its share, so mailboxes Graph keeps refusing cannot fill every pass
    while the working subscriptions expire."""
    ready = Q(failures=0) | Q(
        failures__gte=BACKOFF_STEPS, updated_at__lte=now - _backoff(BACKOFF_STEPS)
    )
    for failures in range(1, BACKOFF_STEPS):
        ready |= Q(failures=failures, updated_at__lte=now - _backoff(failures))
    return ready


def settings_saved(sender: Any, instance: Connection, created: bool, **kwargs: Any) -> None:
    """``post_save`` of a connection: one that now names another mailbox has its subscription
    moved on the next pass (it watches the old mailbox until then: not push for this one)."""
    if created or instance.kind != "msgraph":
        return
    mailbox = str((instance.config or {}).get("mailbox") or "")
    moved = (
        Subscription.objects.filter(connection=instance)
        .exclude(resource="")
        .exclude(resource=_resource(mailbox))
        .update(renew_now=True)
    )
    if moved:
        _push_until(instance.pk, None)


def retire(sender: Any, instance: Connection, **kwargs: Any) -> None:
    """``pre_delete`` of a connection: keep what deleting its subscription at Graph needs (the
    row and the connection's credentials go with the connection), for the next pass."""
    if instance.kind != "msgraph" or not instance.secret:
        return
    sub = Subscription.objects.filter(connection=instance, subscription_id__isnull=False).first()
    if sub is None or sub.subscription_id is None:
        return
    now = timezone.now()
    # kept no longer than Graph can keep the subscription: the later of its known expiry and
    # that of a renewal made this moment (one a concurrent pass may be making)
    expires = max(sub.expires_at or now, _expiry(now))
    RetiredSubscription.objects.update_or_create(
        subscription_id=sub.subscription_id,
        defaults={
            "name": instance.name[:200],
            "config": instance.config,
            "secret": instance.secret,  # as stored: encrypted, sealed for its destination
            "expires_at": expires,
            "client_state_hash": sub.client_state_hash,
        },
    )


RETIRED_PER_PASS = 10  # deletions of deleted connections' subscriptions per pass (and PASS_SECONDS)


def _delete_retired(now: datetime, ends: float) -> tuple[int, int]:
    """DELETE at Graph the subscriptions of deleted connections (``retire``), at most
    ``RETIRED_PER_PASS`` and until the monotonic time ``ends``; returns (deleted, failed). A
    row goes once Graph no longer has it, or once it has expired (whatever its backoff: its
    credentials are kept no longer than needed)."""
    deleted = failed = 0
    RetiredSubscription.objects.filter(
        Q(expires_at__lte=now) | Q(expires_at__isnull=True)
    ).delete()  # Graph has deleted those itself
    ready = RetiredSubscription.objects.filter(_ready(now)).order_by("pk")
    for retired in ready[:RETIRED_PER_PASS]:
        if time.monotonic() > ends:
            break
        # the deleted connection as it was (never saved): its settings and sealed credentials
        gone = Connection(
            kind="msgraph", name=retired.name, config=retired.config, secret=retired.secret
        )
        failure = _delete_at_graph(gone, retired.subscription_id)
        if failure is not None:
            message = failure.message if isinstance(failure, SyncError) else type(failure).__name__
            RetiredSubscription.objects.filter(pk=retired.pk).update(
                failures=F("failures") + 1,
                last_error=f"{type(failure).__name__}: {message}"[:500],
                updated_at=now,
            )
            log.warning(
                "Graph subscription of deleted connection %s not deleted at Graph yet (%s); "
                "tried again later.",
                retired.name,
                message,
            )
            failed += 1
            continue
        retired.delete()
        deleted += 1
    return deleted, failed


def maintain(now: datetime | None = None, **kwargs: Any) -> dict[str, int]:
    """The dispatcher's part (``syncqueue.signals.dispatcher_pass``): make, renew, forget;
    then, with the pass's time left, delete those of deleted connections at Graph (push on
    or off: Graph would post to us until they expire)."""
    now = now or timezone.now()
    done = {"created": 0, "renewed": 0, "forgotten": 0, "failed": 0}
    ends = time.monotonic() + PASS_SECONDS
    if notification_url():
        _subscriptions(now, ends, done)
    else:  # push turned off: Graph would post to an endpoint that refuses, for days
        _forget(Subscription.objects.filter(_ready(now)), now, done)
    deleted, failed = _delete_retired(now, ends)
    done["forgotten"] += deleted
    done["failed"] += failed
    return done


def _subscriptions(now: datetime, ends: float, done: dict[str, int]) -> None:
    """The watched mailboxes' subscriptions: forget, make and renew, until ``ends``."""
    _forget(Subscription.objects.exclude(connection__in=watched()).filter(_ready(now)), now, done)
    missing = watched().filter(graph_subscription__isnull=True)[:PER_PASS]
    # The soonest to expire first: a live subscription that lapses stops push until it is
    # made again; one that failed to be made can wait for the next pass.
    due = (
        Subscription.objects.filter(connection__in=watched())
        .filter(
            Q(subscription_id__isnull=True)
            | Q(renew_now=True)
            | Q(expires_at__isnull=True)
            | Q(expires_at__lt=now + timedelta(minutes=settings.SYNC_GRAPH_RENEW_BEFORE_MINUTES))
            | ~Q(notification_url=notification_url())  # moved, or not known yet
        )
        .filter(_ready(now))
        .order_by(F("expires_at").asc(nulls_last=True), "pk")
        .select_related("connection")[:PER_PASS]
    )
    for conn in missing:
        if time.monotonic() > ends:
            return  # the rest on the next pass
        try:
            create(conn, now)
            done["created"] += 1
        except Exception as exc:
            _failed(conn, exc)
            done["failed"] += 1
    for sub in due:
        if time.monotonic() > ends:
            return
        try:
            # a move Graph would not let us make records its failure and returns the old one
            done["failed" if renew(sub, now).last_error else "renewed"] += 1
        except Exception as exc:
            _failed(sub, exc)
            done["failed"] += 1


def _forget(subs: QuerySet[Subscription], now: datetime, done: dict[str, int]) -> None:
    """Delete ``subs`` at Graph and here (at most ``PER_PASS``), counting into ``done``."""
    for sub in subs.select_related("connection")[:PER_PASS]:
        done["forgotten" if forget(sub, now=now) else "failed"] += 1


def handle(payload: Any) -> tuple[int, int]:
    """Act on a POSTed changeNotificationCollection; returns (accepted, refused).

    Graph may put notifications of several subscriptions in one request, lifecycle events
    among them: each item is judged on its own, with one lookup for the whole request (so a
    flood of forgeries costs one query, and an unproven item never hides a genuine one). Those
    of a deleted mailbox's subscription, which Graph may send until it is deleted there, are
    accepted and dropped. A mailbox's items queue one sync, however many there are."""
    items = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return 0, 1
    claims = [_claim(item) for item in items[:MAX_ITEMS]]
    digests = {claim[1] for claim in claims if claim}
    subs = {
        sub.client_state_hash: sub
        for sub in Subscription.objects.filter(client_state_hash__in=digests)
    }
    retired = set(
        RetiredSubscription.objects.filter(client_state_hash__in=digests - subs.keys())
        .exclude(client_state_hash="")
        .values_list("client_state_hash", "subscription_id")
    )
    accepted = refused = 0
    counts: dict[int, int] = {}
    syncs: dict[int, str] = {}  # connection id -> why its one sync is queued
    for claim in claims:
        if claim is None:
            refused += 1
            continue
        item, digest, sub_id = claim
        sub = subs.get(digest)
        if sub is not None and sub.subscription_id in (None, sub_id):
            accepted += 1
            counts[sub.pk] = counts.get(sub.pk, 0) + 1
            why = _act(sub, item, sub_id)
            if why:
                syncs.setdefault(sub.connection_id, why)
        elif (digest, sub_id) in retired:
            accepted += 1  # a deleted mailbox's: nothing to do here
        else:
            refused += 1  # unknown, or the right secret for another subscription
    now = timezone.now()
    for pk, count in counts.items():
        Subscription.objects.filter(pk=pk).update(
            notifications=F("notifications") + count, last_notified_at=now
        )
    for connection_id, why in syncs.items():
        enqueue_notified(connection_id, why)
    return accepted, refused


def _claim(item: Any) -> tuple[dict[str, Any], str, str] | None:
    """(the item, the hash of its clientState, its subscription id), if it is shaped as a
    notification of one of our subscriptions would be."""
    if not isinstance(item, dict):
        return None
    state, sub_id = item.get("clientState"), item.get("subscriptionId")
    if not isinstance(state, str) or not state or not isinstance(sub_id, str) or not sub_id:
        return None
    return item, _hash(state), sub_id


def _act(sub: Subscription, item: dict[str, Any], sub_id: str) -> str | None:
    """What one proven item does; returns why to sync its mailbox, if it should be."""
    event = item.get("lifecycleEvent")
    if event == "reauthorizationRequired":
        # renewed on the next pass, which then syncs what the pause held back; delivery is
        # paused meanwhile, so the mailbox is polled as scheduled until the renewal works
        Subscription.objects.filter(pk=sub.pk).update(renew_now=True)
        _push_until(sub.connection_id, None)
        return None
    if event == "subscriptionRemoved":
        # gone at Graph; the next dispatcher pass makes a new one (and syncs once it has)
        # (only the one removed: a pass may have made a new one a moment ago)
        if Subscription.objects.filter(pk=sub.pk, subscription_id=sub_id).update(
            subscription_id=None
        ):
            _push_until(sub.connection_id, None)
        return "Graph removed the subscription"
    if event == "missed":
        return "Graph missed notifications"
    return f"Graph: message {item.get('changeType')}"


def doctor_notes() -> list[tuple[str, str, str]]:
    """What ``sync_doctor`` says about Graph push: nothing but the deleted mailboxes'
    subscriptions while no Graph mailbox is enabled."""
    if not Connection.objects.filter(kind="msgraph", enabled=True).exists():
        return _retired_notes()
    failing = [
        ("warn", f"graph push {sub.connection.name}", sub.last_error)
        for sub in Subscription.objects.exclude(last_error="").select_related("connection")[:5]
    ]
    if not notification_url():  # (failing: subscriptions not deleted at Graph yet)
        off = (
            "warn",
            "graph push",
            "off: Graph mail arrives on the schedule only. Set SYNC_PUBLIC_URL to the "
            "public https:// address Microsoft Graph can reach for change notifications.",
        )
        return [off, *failing, *_retired_notes()]
    wanted = watched().count()
    active = Subscription.objects.filter(
        connection__in=watched(),
        subscription_id__isnull=False,
        expires_at__gt=timezone.now(),
        # today's address, or not known yet (from before it was kept: checked on the next pass)
        notification_url__in=[notification_url(), ""],
    ).count()
    summary = (
        "ok" if active == wanted else "warn",
        "graph push",
        f"{active} of {wanted} mailboxes subscribed; notifications to {notification_url()}",
    )
    return [summary, *failing, *_retired_notes()]


def _retired_notes() -> list[tuple[str, str, str]]:
    stuck = RetiredSubscription.objects.exclude(last_error="").count()
    if not stuck:
        return []
    return [
        (
            "warn",
            "graph push",
            f"{stuck} subscription(s) of deleted mailboxes not deleted at Graph yet: tried again "
            "on later passes (each expires by itself within days)",
        )
    ]
