"""The admin password never travels over plain HTTP to another host."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from integrations.zimbra.config import ZimbraConfig


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://mail.example.com/service/soap", True),
        ("http://127.0.0.1:7070/service/soap", True),
        ("http://mail.example.com/service/soap", False),
        ("mail.example.com", False),
    ],
)
def test_urls(url: str, accepted: bool) -> None:
    make = lambda: ZimbraConfig(soap_url=url, admin_url=url, admin_name="admin@example.com")  # noqa: E731
    if accepted:
        assert make().soap_url == url
    else:
        with pytest.raises(ValidationError, match="https://"):
            make()
