"""Graph change notifications against the local Graph, which does what the documentation says
(docs/protocols.md): validation handshake, notifications and lifecycle events posted to our
endpoint (the test web server), expiry, 409 for a duplicate, 404 for a subscription it no
longer has. The dispatcher makes and renews subscriptions; a notification queues a sync."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from integrations.msgraph import push
from integrations.msgraph.models import RetiredSubscription, Subscription
from mail.models import MailMessage
from syncqueue import dispatcher, engine
from syncqueue.models import SyncJob, WorkerHeartbeat
from tests.support.cluster import FAST_CLUSTER
from tests.support.processes import qcluster, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
Kind = SyncJob.Kind


@pytest.fixture
def push_on(settings: Any, live_server: Any) -> str:
    settings.SYNC_PUBLIC_URL = live_server.url
    return f"{live_server.url}/hooks/graph/"


def notified(conn: Any) -> int:
    return SyncJob.objects.filter(connection=conn, kind=Kind.NOTIFIED).count()


def subscribed(graph: Any, mailbox: Any, make_graph_connection: Any) -> tuple[Any, Subscription]:
    conn = make_graph_connection()
    dispatcher.dispatch()
    sub = Subscription.objects.get(connection=conn)
    assert sub.subscription_id in graph.subscriptions
    return conn, sub


def test_the_validation_handshake_echoes_the_decoded_token(client: Any) -> None:
    response = client.post("/hooks/graph/?validationToken=Validation%3A%20a%2Bb%20c")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == "Validation: a+b c"


def test_the_dispatcher_subscribes_and_a_new_message_queues_a_sync(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    remote = graph.subscriptions[sub.subscription_id]
    assert remote.notification_url == remote.lifecycle_url == push_on
    assert graph.validations == [push_on, push_on]  # both endpoints were validated
    assert remote.resource == f"users/{conn.config['mailbox']}/messages"
    assert len(sub.client_state_hash) == 64 and remote.client_state not in sub.client_state_hash
    graph.add_message(mailbox, subject="pushed")
    wait_for(lambda: notified(conn), 10, "a notified sync")
    # a burst joins the waiting job instead of queueing one per notification
    for i in range(5):
        graph.add_message(mailbox, subject=f"burst {i}")
    wait_for(lambda: len(graph.deliveries) >= 6, 10, "the burst's notifications")
    assert notified(conn) == 1


def test_a_forged_notification_is_refused(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any, client: Any
) -> None:
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    forged = {
        "value": [
            {
                "subscriptionId": sub.subscription_id,
                "clientState": "guessed",
                "changeType": "created",
                "resource": "Users/x/Messages/y",
            }
        ]
    }
    response = client.post("/hooks/graph/", forged, content_type="application/json")
    assert response.status_code == 403
    # the right secret of another subscription does not work for this one either
    other = graph.subscriptions[sub.subscription_id].client_state
    forged["value"][0].update(clientState=other, subscriptionId="someone-else")
    response = client.post("/hooks/graph/", forged, content_type="application/json")
    assert response.status_code == 403
    assert notified(conn) == 0
    assert client.post("/hooks/graph/", "{", content_type="application/json").status_code == 400
    # hostile bodies get a plain refusal, never a server error
    deep = "[" * 100_000 + "]" * 100_000
    assert client.post("/hooks/graph/", deep, content_type="application/json").status_code == 400
    for shape in ("[1, 2]", '{"value": 5}', '"text"', "{}"):  # JSON, but not a collection
        answer = client.post("/hooks/graph/", shape, content_type="application/json")
        assert answer.status_code == 400, shape
    surrogate = '{"value": [{"clientState": "\\ud800", "subscriptionId": "x"}]}'
    answer = client.post("/hooks/graph/", surrogate, content_type="application/json")
    assert answer.status_code == 403
    many = {"value": [{"clientState": f"guess {i}", "subscriptionId": "x"} for i in range(5000)]}
    assert client.post("/hooks/graph/", many, content_type="application/json").status_code == 403


def test_each_item_of_a_batch_is_judged_on_its_own(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    """Graph may batch notifications of several subscriptions, lifecycle events among them, in
    one POST. Unproven items (forged, or a subscription we no longer know) must not hide the
    genuine ones; a deleted mailbox's subscription, still being deleted at Graph, is
    acknowledged, not refused (a refusal is resent for hours)."""
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    graph.add_mailbox("adele@contoso.test", "Adele Vance")
    other = make_graph_connection(mailbox="adele@contoso.test")
    dispatcher.dispatch()
    other_sub = Subscription.objects.get(connection=other)
    forged = [
        {"subscriptionId": f"unknown-{i}", "clientState": f"guess {i}", "changeType": "created"}
        for i in range(6)
    ]
    graph.deliver(push_on, {"value": [*forged, graph.change_item(sub.subscription_id, "m1")]}, True)
    assert graph.deliveries[-1][2] == 202 and notified(conn) == 1
    removed = graph.lifecycle_item(other_sub.subscription_id, "subscriptionRemoved")
    batch = [graph.change_item(sub.subscription_id, "m2"), *forged, removed]
    graph.deliver(push_on, {"value": batch}, True)
    assert graph.deliveries[-1][2] == 202
    assert Subscription.objects.get(pk=other_sub.pk).subscription_id is None
    assert notified(other) == 1 and notified(conn) == 1  # (joined the waiting one)
    assert Subscription.objects.get(pk=sub.pk).notifications == 2
    # a deleted mailbox's subscription that Graph has not deleted yet
    graph.fault(r"/v1\.0/subscriptions/", status=503, method="DELETE")
    conn.delete()
    dispatcher.dispatch()
    assert sub.subscription_id in graph.subscriptions
    graph.deliver(push_on, {"value": [graph.change_item(sub.subscription_id, "m3")]}, True)
    assert graph.deliveries[-1][2] == 202
    graph.deliver(push_on, {"value": forged}, True)
    assert graph.deliveries[-1][2] == 403


def test_a_reauthorized_subscription_syncs_what_the_pause_held_back(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    """After reauthorizationRequired, Graph pauses delivery until the subscription is
    reauthorized, and changes meanwhile are lost: the renewal queues the delta sync that finds
    them."""
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    quiet_schedule(conn)
    graph.lifecycle(sub.subscription_id, "reauthorizationRequired")
    delivered = len(graph.deliveries)
    graph.add_message(mailbox, subject="during the pause")
    assert len(graph.deliveries) == delivered  # not told
    assert notified(conn) == 0
    conn.refresh_from_db()
    assert conn.push_until is None  # paused: polled as scheduled until renewed
    dispatcher.dispatch()  # renews (which reauthorizes), then syncs
    assert not Subscription.objects.get(pk=sub.pk).renew_now
    assert notified(conn) == 1
    conn.refresh_from_db()
    assert conn.push_until == Subscription.objects.get(pk=sub.pk).expires_at
    run_queued()
    assert MailMessage.objects.filter(connection=conn, subject="during the pause").exists()


def test_a_reauthorization_whose_move_fails_still_syncs(
    push_on: str,
    graph: Any,
    mailbox: Any,
    make_graph_connection: Any,
    settings: Any,
    live_server: Any,
) -> None:
    """The PATCH reauthorized the subscription and named the old address; the move that
    follows fails. What the pause held back is still synced."""
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    Subscription.objects.filter(pk=sub.pk).update(notification_url="")  # from before it was kept
    move_public_url(settings, live_server)
    graph.lifecycle(sub.subscription_id, "reauthorizationRequired")
    graph.fault(r"/v1\.0/subscriptions/", status=503, method="DELETE")
    dispatcher.dispatch()
    assert "not moved" in Subscription.objects.get(pk=sub.pk).last_error
    assert notified(conn) == 1


def test_a_connection_set_to_another_mailbox_subscribes_to_that_one(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    """Renewing would keep the old mailbox's subscription alive (and its polls stretched)."""
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    graph.add_mailbox("adele@contoso.test", "Adele Vance")
    conn.config = {**conn.config, "mailbox": "adele@contoso.test"}
    conn.save()
    conn.refresh_from_db()
    assert conn.push_until is None  # watching the old mailbox is not push for this one
    dispatcher.dispatch()
    again = Subscription.objects.get(connection=conn)
    assert sub.subscription_id not in graph.subscriptions
    assert list(graph.subscriptions) == [again.subscription_id]
    assert graph.subscriptions[again.subscription_id].upn == "adele@contoso.test"
    assert again.resource == "users/adele@contoso.test/messages"
    conn.refresh_from_db()
    assert conn.push_until == again.expires_at


def test_saving_a_connection_does_not_bring_back_a_removed_subscriptions_push(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    stale = type(conn).objects.get(pk=conn.pk)  # an edit page opened while it was live
    assert stale.push_until is not None
    graph.lifecycle(sub.subscription_id, "subscriptionRemoved")
    stale.name = "Renamed"
    stale.save()
    conn.refresh_from_db()
    assert conn.name == "Renamed" and conn.push_until is None


def test_a_challenge_during_a_failed_renewal_is_not_lost(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    _conn, sub = subscribed(graph, mailbox, make_graph_connection)
    graph.lifecycle(sub.subscription_id, "reauthorizationRequired")
    graph.fault(r"/v1\.0/subscriptions/", status=503, method="PATCH")
    dispatcher.dispatch()
    kept = Subscription.objects.get(pk=sub.pk)
    assert kept.renew_now and kept.failures == 1


def test_turning_push_off_deletes_the_subscriptions_at_graph(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any, settings: Any
) -> None:
    """Without a public URL our endpoint refuses notifications: Graph would go on posting
    (and resending) until the subscriptions expire, days later."""
    conn, _sub = subscribed(graph, mailbox, make_graph_connection)
    settings.SYNC_PUBLIC_URL = ""
    dispatcher.dispatch()
    assert not graph.subscriptions and not Subscription.objects.exists()
    conn.refresh_from_db()
    assert conn.push_until is None


def test_subscriptions_are_renewed_before_they_expire(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any, settings: Any
) -> None:
    _conn, sub = subscribed(graph, mailbox, make_graph_connection)
    remote = graph.subscriptions[sub.subscription_id]
    first = remote.expires
    dispatcher.dispatch()  # days left: nothing to do
    assert graph.subscriptions[sub.subscription_id].expires == first
    soon = timezone.now() + timedelta(hours=2)
    remote.expires = soon
    Subscription.objects.filter(pk=sub.pk).update(expires_at=soon)
    dispatcher.dispatch()
    sub.refresh_from_db()
    assert graph.subscriptions[sub.subscription_id].expires > soon + timedelta(days=1)
    assert sub.expires_at is not None and sub.expires_at > soon + timedelta(days=1)
    # one Graph dropped (it expired, or was deleted) is made again on renewal
    del graph.subscriptions[sub.subscription_id]
    Subscription.objects.filter(pk=sub.pk).update(expires_at=soon)
    dispatcher.dispatch()
    sub.refresh_from_db()
    assert sub.subscription_id in graph.subscriptions


def test_mailboxes_graph_keeps_refusing_do_not_hold_up_renewals(
    push_on: str,
    graph: Any,
    mailbox: Any,
    make_graph_connection: Any,
    monkeypatch: Any,
) -> None:
    """A pass renews a share of the due subscriptions (``PER_PASS``). Mailboxes whose
    subscription Graph refused (waiting before the next try) must not take that share: the
    working subscriptions would expire one pass after another."""
    monkeypatch.setattr(push, "PER_PASS", 2)
    refused = [make_graph_connection() for _ in range(3)]
    for conn in refused:  # made first: the oldest rows, which an unordered query returns first
        Subscription.objects.create(connection=conn, failures=3, last_error="GraphError: 403")
    _conn, sub = subscribed(graph, mailbox, make_graph_connection)
    soon = timezone.now() + timedelta(hours=2)
    graph.subscriptions[sub.subscription_id].expires = soon
    Subscription.objects.filter(pk=sub.pk).update(expires_at=soon)
    dispatcher.dispatch()
    sub.refresh_from_db()
    assert sub.expires_at is not None and sub.expires_at > soon + timedelta(days=1)
    assert graph.subscriptions[sub.subscription_id].expires > soon + timedelta(days=1)
    # the refused ones are tried again once their wait is over
    waited = timezone.now() - timedelta(minutes=9)
    Subscription.objects.filter(connection__in=refused).update(updated_at=waited)
    dispatcher.dispatch()
    assert Subscription.objects.filter(connection__in=refused, failures=3).count() == 1
    assert Subscription.objects.filter(connection__in=refused).exclude(failures=3).count() == 2


def test_lifecycle_events(push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any):
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    graph.lifecycle(sub.subscription_id, "missed")  # missed -> a delta sync catches up
    assert notified(conn) == 1
    graph.lifecycle(sub.subscription_id, "reauthorizationRequired")
    assert Subscription.objects.get(pk=sub.pk).renew_now
    dispatcher.dispatch()
    assert not Subscription.objects.get(pk=sub.pk).renew_now
    old = sub.subscription_id
    graph.lifecycle(old, "subscriptionRemoved")  # -> forgotten, made again on the next pass
    assert Subscription.objects.get(connection=conn).subscription_id is None
    dispatcher.dispatch()
    again = Subscription.objects.get(connection=conn)
    assert again.subscription_id != old and again.subscription_id in graph.subscriptions
    statuses = [status for _, _, status in graph.deliveries]
    assert statuses == [202, 202, 202]


def test_only_a_mailbox_with_a_live_subscription_has_its_polls_stretched(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any, settings: Any
) -> None:
    """SYNC_PUSHED_POLL_FACTOR makes the poll the slower safety net of a mailbox Graph really
    reports on: not of one whose subscription Graph refused, or removed."""
    settings.SYNC_PUSHED_POLL_FACTOR, settings.SYNC_SCHEDULE_JITTER = 4, 0
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    graph.add_mailbox("adele@contoso.test", "Adele Vance")
    graph.fault(r"/v1\.0/subscriptions", status=403, method="POST")
    refused = make_graph_connection(mailbox="adele@contoso.test")
    dispatcher.dispatch()
    assert Subscription.objects.get(connection=refused).last_error
    type(conn).objects.filter(pk__in=[conn.pk, refused.pk]).update(schedule="every 15m")

    def next_poll(connection: Any) -> timedelta:
        connection.refresh_from_db()
        now = timezone.now()
        return connection.compute_next_sync(now) - now

    assert next_poll(conn) == timedelta(minutes=60)
    assert conn.push_until == sub.expires_at
    assert next_poll(refused) == timedelta(minutes=15)
    graph.lifecycle(sub.subscription_id, "subscriptionRemoved")
    assert next_poll(conn) == timedelta(minutes=15)
    dispatcher.dispatch()  # made again
    assert next_poll(conn) == timedelta(minutes=60)
    # lapsed (no dispatcher renewed it): as scheduled again
    assert conn.push_until is not None
    lapsed = conn.push_until + timedelta(seconds=1)
    assert conn.compute_next_sync(lapsed) == lapsed + timedelta(minutes=15)


def quiet_schedule(conn: Any) -> None:
    """Synced once, and no scheduled sync for a day: whatever runs now was queued by push."""
    engine.enqueue(conn, Kind.INITIAL)
    engine.process_ticket()
    type(conn).objects.filter(pk=conn.pk).update(
        next_sync_at=timezone.now() + timedelta(days=1), schedule="every 1d"
    )


def run_queued() -> None:
    while SyncJob.objects.filter(state=SyncJob.State.QUEUED).exists():
        engine.process_ticket()


def test_mail_that_arrives_while_graph_has_no_subscription_is_synced_once_there_is_one(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    """Graph removed the subscription: nothing reports the changes until the next pass makes
    a new one, and that one reports changes from then on. The docs' order is "subscribe
    again, then resync": a message that arrived in between is stored without the schedule."""
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    quiet_schedule(conn)
    graph.lifecycle(sub.subscription_id, "subscriptionRemoved")
    run_queued()  # the sync the removal queued: nothing new yet
    delivered = len(graph.deliveries)
    graph.add_message(mailbox, subject="while nobody listened")
    assert len(graph.deliveries) == delivered  # no subscription: no notification
    dispatcher.dispatch()  # subscribes again
    assert Subscription.objects.get(connection=conn).subscription_id in graph.subscriptions
    run_queued()
    assert MailMessage.objects.filter(connection=conn, subject="while nobody listened").exists()


def move_public_url(settings: Any, live_server: Any) -> str:
    """``SYNC_PUBLIC_URL`` set to the same test server under another address (a new domain in
    production); returns it."""
    moved = live_server.url.replace("localhost", "127.0.0.1")
    assert moved != live_server.url
    settings.SYNC_PUBLIC_URL = moved
    return moved


def test_a_changed_public_url_moves_the_subscriptions(
    push_on: str,
    graph: Any,
    mailbox: Any,
    make_graph_connection: Any,
    settings: Any,
    live_server: Any,
) -> None:
    """Renewal PATCHes the expiry only, so a subscription made before ``SYNC_PUBLIC_URL``
    changed would post to the old address for as long as it is renewed. The next pass deletes
    it and subscribes again at the new address (validated there), then syncs once."""
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    assert sub.notification_url == push_on
    quiet_schedule(conn)
    moved = move_public_url(settings, live_server)
    WorkerHeartbeat.objects.create(name="cluster:test:1", seen_at=timezone.now())
    out = StringIO()
    call_command("sync_doctor", stdout=out)
    assert "0 of 1 mailboxes subscribed" in out.getvalue()
    dispatcher.dispatch()
    sub = Subscription.objects.get(connection=conn)
    assert sub.notification_url == f"{moved}/hooks/graph/"
    assert list(graph.subscriptions) == [sub.subscription_id]  # the old one is deleted
    remote = graph.subscriptions[sub.subscription_id]
    assert remote.notification_url == remote.lifecycle_url == f"{moved}/hooks/graph/"
    assert graph.validations[-2:] == [f"{moved}/hooks/graph/"] * 2
    assert notified(conn) == 1  # the sync that covers the move
    run_queued()
    graph.add_message(mailbox, subject="told to the new address")
    wait_for(lambda: notified(conn) == 2, 10, "a notification at the new address")
    assert {url for url, _, _ in graph.deliveries} == {f"{moved}/hooks/graph/"}
    run_queued()
    assert MailMessage.objects.filter(connection=conn, subject="told to the new address").exists()


def test_a_subscription_graph_would_not_delete_is_moved_later_not_lost(
    push_on: str,
    graph: Any,
    mailbox: Any,
    make_graph_connection: Any,
    settings: Any,
    live_server: Any,
) -> None:
    """The old subscription is deleted before the new one is made. If Graph cannot be told,
    the row keeps its id (it still posts, to the old address) and the move is tried again
    after the backoff, instead of the id being forgotten while Graph keeps it."""
    _conn, sub = subscribed(graph, mailbox, make_graph_connection)
    moved = move_public_url(settings, live_server)
    graph.fault(r"/v1\.0/subscriptions/", status=503, method="DELETE")
    assert push.maintain() == {"created": 0, "renewed": 0, "forgotten": 0, "failed": 1}
    kept = Subscription.objects.get(pk=sub.pk)
    assert kept.subscription_id == sub.subscription_id and kept.failures == 1
    assert "not moved" in kept.last_error
    assert list(graph.subscriptions) == [sub.subscription_id]
    Subscription.objects.filter(pk=sub.pk).update(updated_at=timezone.now() - timedelta(minutes=3))
    assert push.maintain()["renewed"] == 1
    again = Subscription.objects.get(pk=sub.pk)
    assert list(graph.subscriptions) == [again.subscription_id] != [sub.subscription_id]
    assert again.notification_url == f"{moved}/hooks/graph/" and again.failures == 0


def test_an_address_in_another_spelling_is_the_same_address() -> None:
    same = push._same_address
    assert same(
        "https://Sync.Example.COM/hooks/graph/", "HTTPS://sync.example.com:443/hooks/graph/"
    )
    assert same("http://127.0.0.1:80/hooks/graph/", "http://127.0.0.1/hooks/graph/")
    assert not same("https://sync.example.com/hooks/graph/", "https://new.example.com/hooks/graph/")
    assert not same(
        "https://sync.example.com/hooks/graph/", "https://sync.example.com:8443/hooks/graph/"
    )
    assert not same(
        "https://sync.example.com/a/hooks/graph/", "https://sync.example.com/hooks/graph/"
    )


def test_a_subscription_made_before_its_address_was_kept_is_checked_on_the_next_pass(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any, settings: Any
) -> None:
    """Rows from before ``notification_url`` existed say nothing: the next pass renews them,
    and Graph's answer names the address; one that matches today's stays as it is."""
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    Subscription.objects.filter(pk=sub.pk).update(notification_url="")
    WorkerHeartbeat.objects.create(name="cluster:test:1", seen_at=timezone.now())
    out = StringIO()
    call_command("sync_doctor", stdout=out)  # not known yet is not "down"
    assert "1 of 1 mailboxes subscribed" in out.getvalue()
    dispatcher.dispatch()
    again = Subscription.objects.get(pk=sub.pk)
    assert again.subscription_id == sub.subscription_id  # renewed, not made again
    assert again.notification_url == push_on
    assert notified(conn) == 0


def test_a_turned_off_connection_is_not_notified_and_loses_its_subscription(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    conn, _sub = subscribed(graph, mailbox, make_graph_connection)
    type(conn).objects.filter(pk=conn.pk).update(enabled=False)
    graph.add_message(mailbox, subject="while off")
    wait_for(lambda: graph.deliveries, 10, "the notification")
    assert notified(conn) == 0
    dispatcher.dispatch()
    assert not Subscription.objects.filter(connection=conn).exists()
    assert graph.subscriptions == {}


def test_a_subscription_graph_could_not_delete_is_deleted_on_a_later_pass(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    """Graph posts to a subscription's address until it expires: one whose DELETE failed is
    not forgotten here (it was, and Graph kept posting for days), but tried again after the
    renewal backoff; the row goes once Graph has deleted it, or once it has expired."""
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    type(conn).objects.filter(pk=conn.pk).update(enabled=False)
    graph.fault(r"/v1\.0/subscriptions/", status=503, method="DELETE")
    assert push.maintain() == {"created": 0, "renewed": 0, "forgotten": 0, "failed": 1}
    kept = Subscription.objects.get(pk=sub.pk)
    assert kept.failures == 1 and "not deleted" in kept.last_error
    assert sub.subscription_id in graph.subscriptions
    dispatcher.dispatch()  # waiting out the backoff: not tried again at once
    assert Subscription.objects.get(pk=sub.pk).failures == 1
    Subscription.objects.filter(pk=sub.pk).update(updated_at=timezone.now() - timedelta(minutes=3))
    dispatcher.dispatch()
    assert not Subscription.objects.filter(pk=sub.pk).exists()
    assert graph.subscriptions == {}
    # one Graph cannot be told about past its expiry is simply dropped
    other = make_graph_connection()
    dispatcher.dispatch()
    lapsed = Subscription.objects.get(connection=other)
    type(other).objects.filter(pk=other.pk).update(enabled=False)
    Subscription.objects.filter(pk=lapsed.pk).update(expires_at=timezone.now())
    graph.fault(r"/v1\.0/subscriptions/", status=503, method="DELETE")
    dispatcher.dispatch()
    assert not Subscription.objects.filter(pk=lapsed.pk).exists()


def test_deleting_a_connection_deletes_its_subscription_at_graph(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    """The row cascades with the connection, and with it the credentials to tell Graph; the
    deletion keeps them (still encrypted) for the next pass, which deletes the subscription at
    Graph, trying again after a failure."""
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    secret = conn.get_secrets()["client_secret"]
    graph.fault(r"/v1\.0/subscriptions/", status=503, method="DELETE")
    conn.delete()
    retired = RetiredSubscription.objects.get(subscription_id=sub.subscription_id)
    assert secret not in retired.secret and secret not in str(retired.config)
    assert retired.expires_at is not None and sub.expires_at is not None
    assert retired.expires_at >= sub.expires_at  # (or a renewal made that moment: later)
    dispatcher.dispatch()  # Graph answers 503: kept, with the failure
    retired.refresh_from_db()
    assert retired.failures == 1 and "503" in retired.last_error
    assert sub.subscription_id in graph.subscriptions
    # the doctor says so, also once no Graph mailbox is left (and then only that of Graph)
    WorkerHeartbeat.objects.create(name="cluster:test:1", seen_at=timezone.now())
    stuck = "1 subscription(s) of deleted mailboxes not deleted at Graph yet"
    out = StringIO()
    call_command("sync_doctor", stdout=out)
    assert stuck in out.getvalue() and "mailboxes subscribed" not in out.getvalue()
    graph.add_mailbox("adele@contoso.test", "Adele Vance")
    make_graph_connection(mailbox="adele@contoso.test")
    out = StringIO()
    call_command("sync_doctor", stdout=out)
    assert stuck in out.getvalue() and "mailboxes subscribed" in out.getvalue()
    RetiredSubscription.objects.filter(pk=retired.pk).update(
        updated_at=timezone.now() - timedelta(minutes=3)
    )
    dispatcher.dispatch()
    assert sub.subscription_id not in graph.subscriptions
    assert not RetiredSubscription.objects.exists()
    # a delete request reached Graph with the deleted connection's credentials, and only Graph
    deletes = [t for m, t in graph.requests if m == "DELETE"]
    assert deletes == [f"/v1.0/subscriptions/{sub.subscription_id}"] * 2


def test_subscriptions_of_deleted_connections_go_with_push_off_and_expired_ones_at_once(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any, settings: Any
) -> None:
    conn, sub = subscribed(graph, mailbox, make_graph_connection)
    lapsed = RetiredSubscription.objects.create(
        subscription_id="lapsed",
        name="an older deletion",
        config=conn.config,
        secret=conn.secret,
        expires_at=timezone.now() - timedelta(minutes=1),
        failures=5,  # waiting out a backoff: expired all the same, its credentials go now
    )
    conn.delete()
    settings.SYNC_PUBLIC_URL = ""  # push turned off since: Graph still posts until expiry
    dispatcher.dispatch()
    assert graph.subscriptions == {}
    assert not RetiredSubscription.objects.filter(pk=lapsed.pk).exists()
    assert not RetiredSubscription.objects.exists()
    assert [t for m, t in graph.requests if m == "DELETE"] == [
        f"/v1.0/subscriptions/{sub.subscription_id}"
    ]


def test_without_a_public_url_push_is_off_and_the_doctor_says_so(
    graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    make_graph_connection()
    dispatcher.dispatch()
    assert not Subscription.objects.exists() and graph.subscriptions == {}
    WorkerHeartbeat.objects.create(name="cluster:test:1", seen_at=timezone.now())
    out = StringIO()
    call_command("sync_doctor", stdout=out)
    assert "SYNC_PUBLIC_URL" in out.getvalue()


@pytest.mark.process
def test_a_new_message_is_stored_by_push_with_a_real_qcluster(
    push_on: str, graph: Any, mailbox: Any, make_graph_connection: Any
) -> None:
    conn, _ = subscribed(graph, mailbox, make_graph_connection)
    engine.enqueue(conn, Kind.INITIAL)
    engine.process_ticket()
    type(conn).objects.filter(pk=conn.pk).update(
        next_sync_at=timezone.now() + timedelta(days=1), schedule="every 1d"
    )
    env = {**FAST_CLUSTER, "SYNC_CA_BUNDLE": str(graph.ca.ca_file)}
    with qcluster("graph-push", **env):
        graph.add_message(mailbox, subject="pushed over Graph")
        wait_for(
            lambda: MailMessage.objects.filter(
                connection=conn, subject="pushed over Graph"
            ).exists(),
            30,
            "the pushed message to be stored",
        )
    kinds = set(SyncJob.objects.filter(connection=conn).values_list("kind", flat=True))
    assert kinds == {Kind.INITIAL, Kind.NOTIFIED}
