"""The one IMAP seam: connect with timeouts, TLS, login, map every library error to our error
classes, and always log out — including when the engine closes a sync generator early."""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from imapclient import IMAPClient, SocketTimeout, tls
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.imap4 import IMAP4WithTimeout

from integrations.errors import AuthFailed, Permanent, SyncError, Transient
from integrations.imap.config import ImapConfig
from integrations.netguard import checked_address


class FolderMissing(Permanent):
    """A configured folder does not exist on the server."""


def _where(config: ImapConfig) -> str:
    return f"{config.host}:{config.effective_port}"


@contextlib.contextmanager
def imap_errors(config: ImapConfig) -> Iterator[None]:
    """Translate socket, TLS and IMAP exceptions raised inside the block."""
    where = _where(config)
    try:
        yield
    except SyncError:
        raise
    except LoginError as exc:
        raise AuthFailed(
            "The mail server rejected the username or password.", detail=str(exc)[:300]
        ) from exc
    except ssl.SSLCertVerificationError as exc:
        raise Permanent(
            f"The mail server's TLS certificate could not be verified ({exc.verify_message}). "
            "Check the host name; the server needs a certificate valid for it.",
            detail=str(exc)[:300],
        ) from exc
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
        raise Transient(
            "The mail server closed the encrypted connection.", detail=str(exc)
        ) from exc
    except ssl.SSLError as exc:
        raise Permanent(
            f"Could not start an encrypted connection to {where} ({exc.reason}). Check the port "
            "and the security setting (SSL on 993, STARTTLS on 143).",
            detail=str(exc)[:300],
        ) from exc
    except socket.gaierror as exc:
        raise Transient(
            f"The mail server {config.host} could not be found. Check the host name.",
            detail=str(exc),
        ) from exc
    except ConnectionRefusedError as exc:
        raise Transient(
            f"The mail server {where} refused the connection. Check the host, port and "
            "security setting.",
            detail=str(exc),
        ) from exc
    except TimeoutError as exc:
        raise Transient(
            f"The mail server {where} did not answer in time.", detail=str(exc)
        ) from exc
    except IMAPClientAbortError as exc:
        raise Transient("The mail server closed the connection.", detail=str(exc)[:300]) from exc
    except IMAPClientError as exc:
        text = str(exc)
        if "AUTHENTICATIONFAILED" in text.upper():
            raise AuthFailed(
                "The mail server rejected the username or password.", detail=text[:300]
            ) from exc
        raise Transient("The mail server reported an error.", detail=text[:300]) from exc
    except OSError as exc:
        raise Transient(
            f"Network error talking to the mail server {where}.", detail=repr(exc)
        ) from exc


#: Headroom above the largest literal this client asks for (a message body, up to
#: ``MAIL_MAX_MESSAGE_BYTES``): what a server may add around it
LITERAL_SLACK = 64 * 1024


def literal_limit() -> int:
    """The longest literal a session accepts. Every body is asked for with an upper bound, and
    the other answers carry short strings, so only a broken or hostile server goes past it."""
    return int(settings.MAIL_MAX_MESSAGE_BYTES) + LITERAL_SLACK


class _BoundedLiterals:
    """imaplib reads a literal in full, however large the server says it is: a server chosen
    by anyone who may add a mailbox could announce gigabytes in its greeting and make the web
    process (a connection test) or the worker hold them. Here a literal larger than
    ``literal_limit()`` ends the session before anything is read."""

    file: Any

    def read(self, size: int) -> bytes:
        if size > literal_limit():
            # not one of imaplib's errors, which it would catch and re-word: ours reaches the
            # seam (imap_errors) as it is, and the session is closed without reading on
            raise Permanent(
                "The mail server sent an answer far larger than anything asked for, so the "
                "connection was closed. Check that the host is a mail server.",
                detail=f"a literal of {size} bytes; the limit is {literal_limit()}",
                code="imap_oversized_answer",
            )
        data: bytes = self.file.read(size)
        return data


class _BoundedTLS(_BoundedLiterals, tls.IMAP4_TLS):
    pass


class _BoundedPlain(_BoundedLiterals, IMAP4WithTimeout):
    pass


class _PinnedTLS(_BoundedTLS):
    """imapclient's TLS transport, connecting to an address checked beforehand while the
    certificate is still verified for the host name."""

    pinned: str

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = socket.create_connection(
            (self.pinned, self.port), timeout=timeout if timeout is not None else self._timeout
        )
        return tls.wrap_socket(sock, self.ssl_context, self.host)


class _PinnedPlain(_BoundedPlain):
    pinned: str

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return socket.create_connection(
            (self.pinned, self.port), timeout if timeout is not None else self._timeout
        )


class QuietIMAPClient(IMAPClient):
    """``IMAPClient`` without imaplib's debug level 5, which imapclient always turns on to
    route imaplib's messages to its logger: at that level imaplib builds ``repr()`` of every
    response — literals included — whether or not anything logs it. For a 25 MB message that
    is three times its size in memory and most of the CPU a FETCH costs. The level stays on
    when the ``imapclient.imaplib`` logger is set to DEBUG."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
            self._imap.debug = 0

    def _create_IMAP4(self) -> Any:
        """imapclient's transports, with literals bounded (``_BoundedLiterals``)."""
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _BoundedTLS(self.host, self.port, self.ssl_context, connect_timeout)
        return _BoundedPlain(self.host, self.port, connect_timeout)


class PinnedIMAPClient(QuietIMAPClient):
    """``IMAPClient`` that connects to ``address`` (already resolved and checked) instead of
    resolving ``host`` again; TLS and STARTTLS still verify the certificate for ``host``."""

    def __init__(self, host: str, *, address: str, **kwargs: Any) -> None:
        self._address = address
        super().__init__(host, **kwargs)

    def _create_IMAP4(self) -> Any:
        connect_timeout = getattr(self._timeout, "connect", None)
        transport: type[_PinnedTLS] | type[_PinnedPlain]
        if self.ssl:
            transport = type("Pinned", (_PinnedTLS,), {"pinned": self._address})
            return transport(self.host, self.port, self.ssl_context, connect_timeout)
        transport = type("Pinned", (_PinnedPlain,), {"pinned": self._address})
        return transport(self.host, self.port, connect_timeout)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: each loads the system's CA bundle (about 1 MB),
    and the IDLE listener holds hundreds of sessions. Contexts are safe to share."""
    return ssl.create_default_context()


@contextlib.contextmanager
def open_session(
    config: ImapConfig,
    password: str,
    *,
    public_only: bool = False,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
) -> Iterator[IMAPClient]:
    """A logged-in session; errors in the block are mapped; logout happens in any case.

    ``public_only`` (a server typed in by an ordinary user): the host must resolve to public
    addresses (or a range the operator allowed), and the connection goes to the address that
    was checked (``integrations.netguard``).
    """
    context = tls_context()
    with imap_errors(config):
        timeout = SocketTimeout(
            connect=connect_timeout or config.connect_timeout,
            read=read_timeout or config.read_timeout,
        )
        options: dict[str, Any] = {
            "port": config.effective_port,
            "ssl": config.security == "ssl",
            "ssl_context": context,
            "timeout": timeout,
        }
        if public_only:
            address = checked_address(config.host, config.effective_port)
            client: IMAPClient = PinnedIMAPClient(config.host, address=address, **options)
        else:
            client = QuietIMAPClient(config.host, **options)
        try:
            if config.security == "starttls":
                client.starttls(context)
            client.login(config.username, password)
            client.normalise_times = False  # aware datetimes for INTERNALDATE
            yield client
        except GeneratorExit:  # the engine stopped early (slice budget): a polite goodbye
            _close(client, logout=True)
            raise
        except BaseException:  # the connection may be unusable: do not wait on it again
            _close(client, logout=False)
            raise
        else:
            _close(client, logout=True)


def _close(client: IMAPClient, *, logout: bool) -> None:
    if logout:
        with contextlib.suppress(Exception):  # best effort: the session is over anyway
            client.logout()
            return
    with contextlib.suppress(Exception):
        client.shutdown()
