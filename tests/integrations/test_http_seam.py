"""The one HTTP seam: transport failures and "slow down / try later" statuses mean the same
for every provider spoken to over HTTP, Zimbra's SOAP included."""

from __future__ import annotations

import pytest
import requests

from integrations.errors import Permanent, RateLimited, Transient
from integrations.http import overload_error, transport_errors
from integrations.zimbra.soap import _answer


def response(status: int, body: bytes = b"", **headers: str) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer._content = body
    answer.headers.update(headers)
    return answer


@pytest.mark.parametrize(
    "raised,expected",
    [
        (requests.exceptions.SSLError("bad cert"), Permanent),
        (requests.exceptions.ConnectTimeout("slow"), Transient),
        (requests.exceptions.ConnectionError("reset"), Transient),
        (requests.exceptions.ChunkedEncodingError("cut"), Transient),
        (requests.exceptions.TooManyRedirects("loop"), Transient),
    ],
)
def test_transport_failures_map_to_one_class_each(raised, expected):
    with pytest.raises(expected) as caught, transport_errors("the Zimbra server"):
        raise raised
    assert "the zimbra server" in caught.value.message.lower()


def test_slow_down_and_try_later_statuses():
    limited = overload_error(response(429, **{"Retry-After": "7"}), "Zimbra")
    assert isinstance(limited, RateLimited) and limited.retry_after == 7
    assert isinstance(overload_error(response(503, **{"Retry-After": "2"}), "x"), RateLimited)
    assert type(overload_error(response(503), "Zimbra")) is Transient
    assert overload_error(response(500), "Zimbra") is None  # Zimbra's faults come as 500


def test_zimbra_answers_that_are_not_soap_say_what_is_wrong():
    html = b"<html><body>Not Found</body></html"
    with pytest.raises(Permanent, match="No Zimbra SOAP service answers at this address"):
        _answer(response(404, html))
    with pytest.raises(Permanent, match="in front of Zimbra refused"):
        _answer(response(403, b"Forbidden"))
    with pytest.raises(Transient, match="unreadable answer"):
        _answer(response(500, b"<oops"))
    with pytest.raises(RateLimited):
        _answer(response(429, b""))
