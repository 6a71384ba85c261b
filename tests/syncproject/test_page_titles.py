"""Every sign-in and password page is the product's: Django's account pages extend the
admin's base template, whose title and header fall back to "Django site admin" and "Django
administration" when a view does not pass the admin site's names."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

pytestmark = pytest.mark.django_db


def _title(html: str) -> str:
    found = re.search(r"<title>(.*?)</title>", html, re.DOTALL)
    assert found, html[:300]
    return " ".join(found.group(1).split())


def _check(response) -> None:
    assert response.status_code == 200
    html = response.content.decode()
    assert "syncproject" in _title(html), _title(html)
    assert "Django site admin" not in html and "Django administration" not in html


@pytest.mark.parametrize(
    "url",
    [
        "/accounts/login/",
        "/admin/login/",
        "/accounts/password_reset/",
        "/accounts/password_reset/done/",
        "/accounts/reset/done/",
    ],
)
def test_pages_without_sign_in(client, url):
    _check(client.get(url))


def test_the_reset_link_page_and_the_signed_in_pages(client, owner):
    uid = urlsafe_base64_encode(force_bytes(owner.pk))
    token = default_token_generator.make_token(owner)
    _check(client.get(f"/accounts/reset/{uid}/{token}/", follow=True))  # the set-password form
    client.force_login(owner)
    _check(client.get("/accounts/password_change/"))
    _check(client.get("/accounts/password_change/done/"))
    _check(client.post("/accounts/logout/", follow=True))  # (to the sign-in page)
