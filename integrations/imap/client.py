"""The one IMAP seam: connect with timeouts, TLS, login, map every library error to our error
classes, and always log out — including when the engine closes a sync generator early."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from integrations.errors import AuthFailed, Permanent, SyncError, Transient
from integrations.imap.config import ImapConfig


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


@contextlib.contextmanager
def open_session(config: ImapConfig, password: str) -> Iterator[IMAPClient]:
    """A logged-in session; errors in the block are mapped; logout happens in any case."""
    context = ssl.create_default_context()
    with imap_errors(config):
        client = IMAPClient(
            config.host,
            port=config.effective_port,
            ssl=config.security == "ssl",
            ssl_context=context,
            timeout=SocketTimeout(connect=config.connect_timeout, read=config.read_timeout),
        )
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
