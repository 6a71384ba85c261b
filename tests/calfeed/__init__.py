"""A fifth provider, written only against the connector contract: iCalendar feeds (RFC 5545)
fetched over HTTPS with HTTP Basic authentication and ``ETag`` / ``If-None-Match``.

It lives in the test tree as the proof that a provider is one package plus two lines — its
registry line (``SYNC_EXTRA_CONNECTORS``) and its ``INSTALLED_APPS`` entry, both in
``tests/settings.py`` — and it passes the same ``ConnectorContract`` as the four shipped ones.
"""
