"""Every URL of the URLconf, tried by every persona — generated, so a new URL is covered
without anyone remembering to add it.

Personas: anonymous, another user (``outsider``), staff without a single model permission
(``bare_staff``) and the owner of the objects in the URL. Each URL is called with GET and with
the state-changing methods (POST, and PATCH/DELETE for the JSON API), ids filled in with the
owner's objects. What must hold:

- nobody but the owner reads the owner's objects: anonymous callers, another user and bare
  staff get no 2xx answer for a URL that names the owner's objects, and bare staff get exactly
  what another user gets there (the API and pages use model permissions, not ``is_staff``);
- anonymous callers get no 2xx answer anywhere except the public pages listed below, and
  non-staff no 2xx answer in the admin; bare staff only the admin pages every staff member has;
- nothing an attacker persona sends changes the owner's data, and no answer to them contains
  the owner's private values;
- the owner reaches their own objects;
- every state-changing request without a CSRF token is refused with 403 (endpoints other
  servers post to, ``CSRF_EXEMPT``, refuse it for want of their own proof instead).

A URL this test cannot fill in (a new kind of path parameter) fails it, naming the parameter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core import signing
from django.db.models import Model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django_q.models import Schedule

from integrations.models import Connection, UserSwitch
from integrations.zimbra.models import TaskCopy
from portal.views import CONFIRM_SALT
from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog
from workspace.models import Assignment, Task

pytestmark = pytest.mark.django_db

# Pages anyone may see (they show nothing private): sign-in and password reset, the health
# check's status, the home redirect.
PUBLIC = {
    "home",
    "login",
    "logout",
    "password_reset",
    "password_reset_done",
    "password_reset_confirm",
    "password_reset_complete",
    "healthz",
    "admin:login",
}
# Admin pages every staff member may open, whatever their permissions.
ANY_STAFF = {
    "admin:index",
    "admin:password_change",
    "admin:password_change_done",
    "admin:logout",
    "admin:jsi18n",
}
# Pages any signed-in person may open: their own settings and the forms to add their own things.
ANY_USER = {
    "portal:settings",
    "portal:connect",
    "portal:api_task_create",
    "password_change",
    "password_change_done",
}
# Endpoints other servers post to, which cannot carry a CSRF token: each request proves itself
# instead (a Graph notification by its subscription's clientState), so a browser session
# forged into posting there achieves nothing either (asserted below: no 2xx).
CSRF_EXEMPT = {"graph-notifications"}
SECRET_VALUE = "owner-secret-password-4711"
MARKERS = [SECRET_VALUE, "Olivia's private mailbox", "olivia@example.com", "Olivia's private task"]


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    owners: bool  # names the owner's objects
    admin: bool


def _walk(
    patterns: list[Any], prefix: str = "", namespace: str = ""
) -> Iterator[tuple[Any, str, str]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(
                pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace
            )
        elif isinstance(pattern, URLPattern):
            full = prefix + str(pattern.pattern)
            name = f"{namespace}:{pattern.name}" if namespace and pattern.name else pattern.name
            yield pattern, full, name or f"(unnamed {full})"


def _fill(route: str, values: dict[str, str]) -> str:
    """Turn a route (``path()`` converters or ``re_path`` groups) into a concrete path."""

    def value(name: str) -> str:
        if name not in values:
            raise AssertionError(
                f"tests/security/test_every_url.py cannot fill the URL parameter {name!r} "
                f"(in {route!r}): add an owner's value for it to `values` in the `routes` fixture."
            )
        return values[name]

    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: value(m.group(1)), route)
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: value(m.group(1)), path)
    return "/" + path.replace("^", "").replace("$", "").replace("\\Z", "").replace("\\", "")


@pytest.fixture
def world(owner, make_connection) -> dict[str, Model]:
    owner.email = "olivia@example.com"
    owner.save()
    conn = make_connection(
        kind="imap",
        name="Olivia's private mailbox",
        config={"host": "imap.example.com", "username": "olivia"},
        secrets={"password": SECRET_VALUE},
    )
    job = engine.enqueue(conn, SyncJob.Kind.MANUAL)
    SyncLog.objects.create(job=job, connection=conn, message="private log line")
    task = Task.objects.create(title="Olivia's private task", created_by=owner)
    assignment = Assignment.objects.create(task=task, user=owner)
    TaskCopy.objects.create(assignment=assignment, uid="owner-task-uid", account=owner.email)
    UserSwitch.objects.create(user=owner, key="zimbra.tasks", enabled=True)
    make_connection(  # the company's Zimbra: its switch is offered only when one exists
        kind="zimbra",
        name="Company Zimbra",
        owner=None,
        config={
            "soap_url": "https://zimbra.example.com/service/soap",
            "admin_url": "https://zimbra.example.com:7071/service/admin/soap",
            "admin_name": "admin@example.com",
        },
        secrets={"admin_password": SECRET_VALUE},
        schedule="",
    )
    return {"connection": conn, "job": job, "task": task}


@pytest.fixture
def routes(world, owner) -> list[Route]:
    conn, job, task = world["connection"], world["job"], world["task"]
    token = signing.dumps(
        {"u": owner.pk, "k": "zimbra.tasks", "v": "olivia@elsewhere.example"},
        salt=CONFIRM_SALT,
        compress=True,
    )
    values = {
        "connection_id": str(conn.pk),
        "job_id": str(job.pk),
        "task_id": str(task.pk),
        "token": token,
        "kind": "imap",
        "action": "assign",
        "object_id": str(conn.pk),
        "content_type_id": str(ContentType.objects.get_for_model(Connection).pk),
        "app_label": "integrations",
        "uidb64": "MQ",
        "id": str(owner.pk),
        "url": "no-such-page/",
    }
    found = []
    for _pattern, route, name in _walk(get_resolver().url_patterns):
        if "<path:" in route and "static" in route:
            continue
        params = set(re.findall(r"<(?:\w+:)?(\w+)>", route)) | set(
            re.findall(r"\(\?P<(\w+)>", route)
        )
        owners = bool(params & {"connection_id", "job_id", "task_id", "token"}) and (
            name not in PUBLIC
        )
        found.append(Route(name, _fill(route, values), owners, route.startswith("admin/")))
    return found


def fingerprint(owner) -> str:
    """Everything of the owner's that an attacker must not be able to change."""
    user = (
        type(owner)
        .objects.filter(pk=owner.pk)
        .values("email", "password", "is_staff", "is_superuser", "is_active")
    )
    rows = [
        list(user),
        list(Connection.objects.filter(owner=owner).values().order_by("pk")),
        list(SyncJob.objects.filter(connection__owner=owner).values().order_by("pk")),
        list(Task.objects.filter(created_by=owner).values().order_by("pk")),
        list(Assignment.objects.filter(user=owner).values().order_by("pk")),
        list(TaskCopy.objects.filter(assignment__user=owner).values().order_by("pk")),
        list(UserSwitch.objects.filter(user=owner).values().order_by("pk")),
        list(Schedule.objects.values("name", "func", "args").order_by("pk")),
    ]
    return json.dumps(rows, default=str, sort_keys=True)


def call(client: Client, method: str, path: str, owner) -> Any:
    form = {
        "enabled": "on",
        "action": "trigger",
        "user": owner.pk,
        "title": "changed",
        "name": "changed",
        "switch-zimbra.tasks": "on",
        "value-zimbra.tasks": "attacker@example.com",
        "reason": "changed",
    }
    if method == "get":
        return client.get(path)
    if path.startswith("/api/"):
        return getattr(client, method)(path, json.dumps(form), content_type="application/json")
    if method == "post":
        return client.post(path, form)
    return getattr(client, method)(path)


def methods_for(route: Route) -> list[str]:
    return ["get", "post", "patch", "delete"] if route.path.startswith("/api/") else ["get", "post"]


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_every_url_as_every_persona(routes, owner, outsider, bare_staff) -> None:
    assert len(routes) > 100  # the URLconf really was walked (admin included)
    problems: list[str] = []
    for route in routes:
        for method in methods_for(route):
            answers = {}
            for persona, user in (
                ("anonymous", None),
                ("outsider", outsider),
                ("bare_staff", bare_staff),
            ):
                before = fingerprint(owner)
                response = call(client_for(user), method, route.path, owner)
                answers[persona] = response.status_code
                where = f"{method.upper()} {route.path} ({route.name}) as {persona}"
                body = response.content.decode(errors="replace") if response.content else ""
                if fingerprint(owner) != before:
                    problems.append(f"{where}: changed the owner's data")
                leaked = [m for m in MARKERS if m in body]
                if leaked:
                    problems.append(f"{where}: answer contains {leaked}")
                ok = 200 <= response.status_code < 300
                if not ok:
                    continue
                if persona == "anonymous" and route.name not in PUBLIC:
                    problems.append(f"{where}: {response.status_code} for an anonymous caller")
                elif route.owners:
                    problems.append(f"{where}: {response.status_code} on the owner's objects")
                elif route.admin and persona == "outsider" and route.name != "admin:login":
                    problems.append(f"{where}: {response.status_code} in the admin for non-staff")
                elif (
                    route.admin
                    and persona == "bare_staff"
                    and route.name not in ANY_STAFF | {"admin:login"}
                ):
                    problems.append(f"{where}: {response.status_code} without a permission")
                elif not route.admin and route.name not in PUBLIC | ANY_USER:
                    problems.append(f"{where}: {response.status_code}; not a page for anyone")
            if route.owners and not route.admin and answers["outsider"] != answers["bare_staff"]:
                problems.append(
                    f"{method.upper()} {route.path}: bare staff got {answers['bare_staff']}, "
                    f"another user {answers['outsider']} (must be the same answer)"
                )
    assert not problems, "\n".join(problems)


def test_the_owner_reaches_their_own_objects(routes, owner):
    client = client_for(owner)
    for route in routes:
        if not route.owners or route.admin:
            continue
        response = client.get(route.path)
        assert response.status_code in (200, 302, 405), (route.path, response.status_code)
        if response.status_code == 302:
            assert "/login" not in response["Location"], route.path


def test_every_state_change_needs_a_csrf_token(routes, owner, staff):
    for user in (owner, staff):
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        for route in routes:
            for method in methods_for(route)[1:]:
                response = call(client, method, route.path, owner)
                if route.name in CSRF_EXEMPT:
                    assert not 200 <= response.status_code < 300, (method, route.path)
                    continue
                assert response.status_code == 403, (method, route.path, user.username)
