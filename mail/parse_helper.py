"""Parsing mail in a second process, beside the worker that fetches and stores it.

Reading a message into what the store keeps (``mail.parsing.parse_message``) is pure Python,
about 0.2 ms of CPU per message, and it held the worker's only thread for 40 % of a large
first sync; the rest is fetching and storing, which wait on the server and the database. A
``ParseHelper`` is a child process (``python -m mail.parse_helper``) that runs the same
function on messages sent to it, so the worker stores one batch while the helper reads the next
one: on a machine with a second core, a large import takes about as long as its fetching and
storing alone.

- **Same results.** The helper calls ``parse_message`` with the worker's limits (sent with
  each batch, so settings changed at run time apply); a message whose parsing raises comes back
  as ``None`` and is parsed again in the worker, where the error is recorded as it always was.
- **Never in the way.** If the helper cannot start, dies or answers nonsense, the worker
  parses in-process from then on and logs one warning; nothing is lost and nothing is parsed
  twice into the store. The helper dies with the worker (``PR_SET_PDEATHSIG``) and exits when
  its input closes.
- **Bounded memory.** One batch (the engine's, at most ``BATCH_BYTES`` of mail) is with the
  helper at a time, sent and answered as one pickled frame each way.
- Only for large fetches (``MAIL_PARSE_HELPER_FROM`` messages or more, and a machine with more
  than one CPU): starting the helper costs about 0.1 s, once per worker process.

Mail content crosses a pipe between two processes of the same user and is not logged: the
helper's standard error is discarded so that no traceback can carry mail content into the logs.
When the worker's file storage is Django's plain ``FileSystemStorage``, the helper also writes
the attachments' files there, with the store's own code (``mail.attachment_files``), so that
creating them is off the worker's thread too; the store checks each one before a row names it.
It writes nothing else (a batch the worker then gives up on may leave files no row names yet;
they are the ones its messages get when they are fetched again). Its environment holds none of
the worker's secrets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.core.files.storage import Storage

from mail import attachment_files
from mail.parsing import ParsedMessage, parse_message

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent

# (raw message bytes, the server's full size when cut to the limit)
Item = tuple[bytes, int | None]


def limits() -> dict[str, Any]:
    """The settings ``parse_message`` reads, as the worker has them now."""
    from django.conf import settings

    return {
        "MAIL_MAX_BODY_CHARS": settings.MAIL_MAX_BODY_CHARS,
        "MAIL_MAX_ATTACHMENT_BYTES": settings.MAIL_MAX_ATTACHMENT_BYTES,
    }


#: what the helper's environment keeps of the worker's: nothing else (no keys, no database URL)
_PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "PYTHONHASHSEED")


def helper_environment() -> dict[str, str]:
    """The helper's environment: where to find Python and this code, the locale and nothing
    more. It needs no setting but the limits it is sent, so the worker's secrets
    (``SYNC_ENCRYPTION_KEYS``, ``DJANGO_SECRET_KEY``, ``DATABASE_URL``) stay out of it."""
    env = {name: os.environ[name] for name in _PASSED_ON if name in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


@dataclass
class Ticket:
    """A batch sent to the helper."""

    number: int
    size: int


class HelperGone(Exception):
    """The helper stopped or answered out of turn; the caller parses in-process."""


class ParseHelper:
    """The worker's side of one helper process.

    One batch at a time is with the helper: ``submit`` sends a batch (and first reads and
    drops the answer to one given up on, when a slice stopped early), ``collect`` reads its
    answer. Both directions are one pickled frame, so neither side ever waits on a full pipe
    while the other does (the helper reads a whole batch before it parses, and the worker
    reads a whole answer before it sends the next batch).
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mail.parse_helper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=helper_environment(),
            cwd=ROOT,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        self.numbers = 0
        self.outstanding: Ticket | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def submit(self, items: list[Item]) -> Ticket:
        """Send ``items`` for parsing; returns once the helper has read them."""
        if self.outstanding is not None:
            self.collect(self.outstanding)  # given up on; read so the helper can go on
        self.numbers += 1
        ticket = Ticket(self.numbers, len(items))
        try:
            frame = (ticket.number, limits(), attachment_files.local_files(), items)
            pickle.dump(frame, self.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.stdin.flush()
        except (OSError, ValueError) as exc:  # a broken pipe: the helper has gone
            raise HelperGone(f"{type(exc).__name__}: {exc}") from exc
        self.outstanding = ticket
        return ticket

    def collect(self, ticket: Ticket) -> list[ParsedMessage | None]:
        """Wait for the answer to ``ticket``. Raises ``HelperGone`` if the helper stops or
        answers anything but that."""
        if self.outstanding is not ticket:
            raise HelperGone(f"batch {ticket.number} is not with the helper")
        self.outstanding = None
        try:
            # our own child's answer, on a pipe nothing else writes to
            number, results = pickle.load(self.stdout)  # noqa: S301
        except Exception as exc:  # EOF, a broken pipe or a garbled frame
            raise HelperGone(f"{type(exc).__name__}: {exc}") from exc
        if number != ticket.number or len(results) != ticket.size:
            raise HelperGone(f"answer {number} ({len(results)} messages) out of turn")
        if not all(r is None or isinstance(r, ParsedMessage) for r in results):
            raise HelperGone("an answer that is not a parsed message")
        return list(results)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stdout.close()


_helpers: dict[int, ParseHelper | None] = {}


def shared() -> ParseHelper | None:
    """This process's helper, started on first use; None when none can run (it failed to
    start or died before: the process then parses in-process)."""
    pid = os.getpid()
    if pid in _helpers:
        helper = _helpers[pid]
        if helper is None or helper.alive():
            return helper
        give_up(helper, f"it exited with code {helper.proc.poll()}")
        return None
    try:
        _helpers[pid] = ParseHelper()
    except (OSError, TypeError, ValueError) as exc:  # TypeError: no sys.executable (embedded)
        logger.warning("Parsing mail in the worker: the parse helper did not start (%s).", exc)
        _helpers[pid] = None
    return _helpers[pid]


def wanted(messages: int) -> bool:
    """Whether a fetch of ``messages`` is worth a helper: ``MAIL_PARSE_HELPER_FROM`` or more,
    and at least two CPUs' worth of time for this process: CPUs it may run on (affinity and
    cpusets) and, in a container or service with a CPU limit, its cgroup's quota (``cpu_quota``).
    Worker and helper each keep about a core busy; on one CPU's worth the helper would only
    add the cost of sending the mail across."""
    from django.conf import settings

    threshold = settings.MAIL_PARSE_HELPER_FROM
    if not threshold or messages < threshold:
        return False
    usable: float = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    quota = cpu_quota()
    if quota is not None:
        usable = min(usable, quota)
    return usable >= 2


CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_MEMBERSHIP = Path("/proc/self/cgroup")


def cpu_quota(root: Path | None = None, membership: Path | None = None) -> float | None:
    """How many CPUs' worth of time this process may use by its cgroup's CPU limit (Docker's
    ``--cpus``, Kubernetes' CPU limit, systemd's ``CPUQuota=``), or None without a limit or
    when it cannot be read. cgroup v2: ``cpu.max`` (``quota period``, or ``max``) of this
    process's cgroup and of every one above it, the smallest; cgroup v1: ``cpu.cfs_quota_us``
    over ``cpu.cfs_period_us`` (-1: none), likewise up the tree. Inside a container the
    cgroup files are those of the container itself, at the top of ``root`` (default
    ``CGROUP_ROOT``)."""
    root = root or CGROUP_ROOT
    try:
        lines = (membership or CGROUP_MEMBERSHIP).read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        number, controllers, path = [*line.split(":", 2), "", ""][:3]
        inside = Path(path.strip().lstrip("/"))
        if number == "0" and not controllers:  # v2: one hierarchy
            limits += _up_the_tree(root, inside, _v2_limit)
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's hierarchy
            base = next((b for b in (root / controllers, root / "cpu") if b.is_dir()), None)
            if base is not None:
                limits += _up_the_tree(base, inside, _v1_limit)
    return min(limits) if limits else None


def _up_the_tree(base: Path, inside: Path, limit_of: Callable[[Path], float | None]) -> list[float]:
    """The limits of the cgroup ``inside`` of hierarchy ``base`` and of every one above it."""
    places = [base / inside, *(base / up for up in inside.parents)]
    return [found for found in map(limit_of, places) if found is not None]


def _v2_limit(directory: Path) -> float | None:
    try:
        quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
        return int(quota) / int(period) if quota != "max" and int(period) > 0 else None
    except (OSError, ValueError):
        return None


def _v1_limit(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def give_up(helper: ParseHelper, why: str) -> None:
    """Stop using ``helper`` in this process and parse in-process from now on; says so once
    (a helper already given up on is not mentioned again)."""
    pid = os.getpid()
    if _helpers.get(pid) is helper:
        logger.warning(
            "Parsing mail in the worker from now on: the parse helper stopped (%s).", why
        )
        _helpers[pid] = None
    with contextlib.suppress(OSError):
        helper.proc.kill()
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        helper.proc.wait(timeout=5)  # reaped: no zombie for the worker's life


def submit(helper: ParseHelper | None, items: list[Item]) -> Ticket | None:
    """Send ``items`` to ``helper``; None (parse in-process) when there is none or it stopped."""
    if helper is None:
        return None
    try:
        return helper.submit(items)
    except HelperGone as exc:
        give_up(helper, str(exc))
        return None


def collect(helper: ParseHelper | None, ticket: Ticket | None, size: int) -> list[Any]:
    """The helper's answers to ``ticket`` (``size`` messages), or all ``None`` (parse
    in-process) when there is no helper or it stopped."""
    if helper is None or ticket is None:
        return [None] * size
    try:
        return helper.collect(ticket)
    except HelperGone as exc:
        give_up(helper, str(exc))
        return [None] * size


# --- the helper process ----------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: have the kernel kill this process when the worker that started it dies, even
    if this one is busy in a long parse and never sees its input close."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the closed input still ends it
        pass


def _write_files(storage: Storage, parsed: ParsedMessage) -> None:
    """Write the attachments of ``parsed`` into ``storage`` as the store would, and answer
    with their names instead of their bytes. One that cannot be written keeps its bytes: the
    worker writes it, and meets (and records) the error itself."""
    for attachment in parsed.attachments:
        if attachment.data is None:
            continue
        try:
            attachment.stored = attachment_files.keep(storage, attachment.data)
        except Exception:  # noqa: S112  # the worker tries again and reports what it meets
            continue
        attachment.data = None


def main() -> None:
    _die_with_parent()
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    # answers go to a copy of the pipe; anything printed by mistake goes to standard error
    stdout = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    stdin = sys.stdin.buffer
    # files are created on a thread of their own (the kernel's work releases the GIL) while
    # this one parses the next messages; all of a batch's are written before it is answered
    writer = ThreadPoolExecutor(max_workers=1)
    while True:
        try:
            number, values, files, items = pickle.load(stdin)  # noqa: S301  # from our worker
        except EOFError:
            return
        for name, value in values.items():
            setattr(settings, name, value)
        storage = attachment_files.storage_for(files) if files else None
        results: list[ParsedMessage | None] = []
        writing = []
        for raw, cut_at in items:
            try:
                parsed = parse_message(raw, cut_at=cut_at)
            except Exception:  # parsed again in the worker, which records what went wrong
                results.append(None)
                continue
            results.append(parsed)
            if storage is not None and parsed.attachments:
                writing.append(writer.submit(_write_files, storage, parsed))
        del items
        for done in writing:
            done.result()
        pickle.dump((number, results), stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()


if __name__ == "__main__":
    main()
