"""The parse helper: a second process that reads mail exactly as the worker would, and that
never costs a message when it stops (mail/parse_helper.py). Real child processes throughout."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from mail import attachment_files, parse_helper
from mail.models import MailAttachment
from mail.parsing import ParsedMessage, parse_message
from mail.store import FetchedMessage, upsert_messages
from tests.mail.hostile import corpus as hostile_corpus
from tests.support.mailfactory import MALFORMED, message, realistic


@pytest.fixture
def helper() -> Iterator[parse_helper.ParseHelper]:
    started = parse_helper.ParseHelper()
    yield started
    started.close()


def corpus() -> list[tuple[bytes, int | None]]:
    rng = random.Random(5)
    items: list[tuple[bytes, int | None]] = [(raw, None) for raw in MALFORMED.values()]
    items += [(case.raw, None) for case in hostile_corpus()]
    items += [(realistic(i, rng), None) for i in range(40)]
    big = message(subject="cut", body="x" * 5000)
    items.append((big[:2000], len(big)))  # cut to the limit: marked truncated
    return items


def read_back(answers: list[ParsedMessage | None]) -> int:
    """Put back the bytes of the attachments the helper wrote to the file storage (checking
    each file holds exactly them); returns how many there were."""
    written = 0
    for parsed in answers:
        for attachment in parsed.attachments if parsed else ():
            if attachment.stored is not None:
                name, digest = attachment.stored
                with default_storage.open(name) as file:
                    attachment.data = file.read()
                assert hashlib.sha256(attachment.data).hexdigest() == digest
                assert name == f"attachments/{digest[:2]}/{digest}"
                attachment.stored = None
                written += 1
    return written


def test_the_helper_reads_mail_exactly_as_the_worker_does(helper, settings):
    items = corpus()
    ticket = helper.submit(items)
    answers = helper.collect(ticket)
    # the attachments' bodies are in the file storage, where the store would have put them
    assert read_back(answers) > 10
    assert answers == [parse_message(raw, cut_at=cut) for raw, cut in items]
    # the limits are the worker's as they are now, not as they were when the helper started
    settings.MAIL_MAX_ATTACHMENT_BYTES = 10
    settings.MAIL_MAX_BODY_CHARS = 1000
    ticket = helper.submit(items)
    answers = helper.collect(ticket)
    read_back(answers)
    assert answers == [parse_message(raw, cut_at=cut) for raw, cut in items]
    assert any(a.note for parsed in answers if parsed for a in parsed.attachments)


def test_the_helper_leaves_other_storages_to_the_worker(helper, settings):
    """Only Django's plain local-file storage is written from the helper: any other (remote,
    or a subclass with its own way of saving) gets the bytes back, for the worker to save."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    items = corpus()
    answers = helper.collect(helper.submit(items))
    assert read_back(answers) == 0
    assert answers == [parse_message(raw, cut_at=cut) for raw, cut in items]


@pytest.mark.parametrize(
    "there",
    [b"%PDF-1.4 whole", b"\0" * 2600],
    ids=["cut short", "right size, other bytes"],
)
def test_a_damaged_file_under_the_name_is_replaced(there):
    """A file left under a body's name by a write that failed (a full disk, a killed helper,
    zeros after a crash) is never taken for the attachment: it is written again, whole."""
    data = b"%PDF-1.4 whole attachment " * 100
    digest = hashlib.sha256(data).hexdigest()
    name = f"attachments/{digest[:2]}/{digest}"
    default_storage.delete(name)
    default_storage.save(name, ContentFile(there))
    assert attachment_files.keep(default_storage, data) == (name, digest)
    with default_storage.open(name) as file:
        assert file.read() == data
    directory = Path(default_storage.path(name)).parent
    assert not list(directory.glob(f"*{digest}*.part"))  # no temporary file left behind
    default_storage.delete(name)


def test_a_file_changed_after_it_was_checked_is_checked_again():
    """A body seen again is not read back each time (a logo on every message), but a file
    changed since this process checked it is compared again, and rewritten."""
    data = b"logo " * 500
    name, digest = attachment_files.keep(default_storage, data)
    path = Path(default_storage.path(name))
    assert attachment_files.keep(default_storage, data) == (name, digest)
    time.sleep(0.05)  # past the kernel's clock tick: the change gets a later mtime
    with path.open("r+b") as file:  # same size, other bytes, after the check
        file.write(b"X" * 10)
    assert attachment_files.keep(default_storage, data) == (name, digest)
    assert path.read_bytes() == data
    default_storage.delete(name)


def test_a_file_named_by_the_helper_is_checked_before_a_row_names_it(make_connection):
    """The store checks each file the helper says it wrote (its name is the digest's, its size
    the attachment's); one that is not there makes the worker read the attachments again."""
    raw = message(subject="with a file", attachments=[("a.pdf", "application/pdf", b"%PDF" * 99)])
    parsed = parse_message(raw)
    [attachment] = parsed.attachments
    assert attachment.data is not None
    name, digest = attachment_files.keep(default_storage, attachment.data)
    assert attachment_files.present(default_storage, (name, digest), attachment.size)
    assert not attachment_files.present(default_storage, (name, digest), attachment.size + 1)
    assert not attachment_files.present(default_storage, ("../../etc/passwd", digest), 1)
    default_storage.delete(name)  # gone between the helper's answer and the insert
    attachment.stored, attachment.data = (name, digest), None
    conn = make_connection(kind="imap", config={"host": "imap.example.com", "username": "u"})
    item = FetchedMessage(
        folder="INBOX", uidvalidity=1, uid=1, parsed=parsed, size=len(raw), raw=raw
    )
    assert upsert_messages(conn, [item]).created == 1
    [row] = MailAttachment.objects.filter(message__connection=conn)
    assert (row.file.name, row.sha256) == (name, digest)
    with row.file.open() as file:
        assert hashlib.sha256(file.read()).hexdigest() == digest


def test_a_batch_given_up_on_does_not_hold_up_the_next(helper):
    """A slice that stops early leaves its last batch with the helper; the next batch is
    still answered, and with its own messages."""
    first = [(message(subject=f"old {i}", body="x" * 2000), None) for i in range(300)]
    helper.submit(first)  # never collected
    second = [(message(subject=f"new {i}"), None) for i in range(3)]
    answers = helper.collect(helper.submit(second))
    assert [a.subject for a in answers if a] == ["new 0", "new 1", "new 2"]


def test_a_helper_that_dies_means_parsing_in_the_worker(caplog):
    parse_helper._helpers.pop(os.getpid(), None)
    try:
        helper = parse_helper.shared()
        assert helper is not None and parse_helper.shared() is helper  # one per process
        items = [(message(subject="kept"), None)]
        ticket = parse_helper.submit(helper, items)
        helper.proc.kill()
        helper.proc.wait()
        # what it had not answered comes back empty: the caller parses those itself
        assert parse_helper.collect(helper, ticket, 1) == [None]
        assert parse_helper.shared() is None
        assert parse_helper.submit(None, items) is None
        assert parse_helper.collect(None, None, 1) == [None]
        warnings = [r.getMessage() for r in caplog.records if r.name == "mail.parse_helper"]
        assert len(warnings) == 1 and "parse helper stopped" in warnings[0]
    finally:
        parse_helper._helpers.pop(os.getpid(), None)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_helper_dies_with_its_worker():
    """A worker killed by a timeout (SIGKILL) takes its helper with it at once, even while the
    helper is busy with a batch that takes it many seconds (it would see its input close only
    after that)."""
    script = textwrap.dedent(
        """
        import sys
        from tests.support.mailfactory import message
        from mail.parse_helper import ParseHelper
        helper = ParseHelper()
        helper.submit([(message(body="x" * 3000), None)] * 60_000)
        print(helper.proc.pid, flush=True)
        sys.stdin.read()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(parse_helper.ROOT)}
    worker = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=parse_helper.ROOT,
    )
    assert worker.stdout is not None
    helper_pid = int(worker.stdout.readline())
    assert running(helper_pid)  # parsing 60,000 messages: about ten seconds of work
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 5  # the batch alone takes ~10 s
    while running(helper_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if running(helper_pid):
        os.kill(helper_pid, signal.SIGKILL)
        pytest.fail("the helper outlived its worker")


def test_a_helper_only_for_large_fetches_on_more_than_one_cpu(settings, monkeypatch):
    settings.MAIL_PARSE_HELPER_FROM = 1000
    monkeypatch.setattr(parse_helper, "CGROUP_MEMBERSHIP", Path("/nonexistent"))  # no CPU limit
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert parse_helper.wanted(1000) and not parse_helper.wanted(999)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # pinned to one CPU
    assert not parse_helper.wanted(50_000)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    settings.MAIL_PARSE_HELPER_FROM = 0
    assert not parse_helper.wanted(50_000)


def cgroup_files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("membership", "files", "cpus"),
    [
        # cgroup v2 in a container (docker --cpus=1.5): its own cgroup at the top
        ("0::/\n", {"cpu.max": "150000 100000\n"}, 1.5),
        # v2 under systemd: the service has no limit, its slice does (the smallest counts)
        (
            "0::/work.slice/sync.service\n",
            {
                "work.slice/sync.service/cpu.max": "max 100000\n",
                "work.slice/cpu.max": "100000 100000\n",
            },
            1.0,
        ),
        # v2 without a cgroup namespace: the path names the host's cgroup, not found here
        ("0::/docker/0123abcd\n", {"cpu.max": "400000 100000\n"}, 4.0),
        ("0::/\n", {"cpu.max": "max 100000\n"}, None),  # no limit
        # cgroup v1 (hybrid hosts, older Docker)
        (
            "4:cpu,cpuacct:/docker/0123abcd\n0::/\n",
            {
                "cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
                "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            },
            2.0,
        ),
        # v1 under systemd: the slice's limit counts for the service below it
        (
            "3:cpu,cpuacct:/work.slice/sync.service\n",
            {
                "cpu,cpuacct/work.slice/sync.service/cpu.cfs_quota_us": "-1\n",
                "cpu,cpuacct/work.slice/sync.service/cpu.cfs_period_us": "100000\n",
                "cpu,cpuacct/work.slice/cpu.cfs_quota_us": "100000\n",
                "cpu,cpuacct/work.slice/cpu.cfs_period_us": "100000\n",
            },
            1.0,
        ),
        (
            "3:cpu:/\n1:memory:/x\n0::/\n",
            {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
            None,
        ),
        ("0::/\n", {}, None),  # nothing to read
        ("garbage\n", {"cpu.max": "nonsense"}, None),
    ],
)
def test_the_cpu_limit_of_the_cgroup_is_read(tmp_path, membership, files, cpus):
    root = cgroup_files(tmp_path / "cgroup", files)
    (tmp_path / "membership").write_text(membership)
    assert parse_helper.cpu_quota(root, tmp_path / "membership") == cpus


def test_no_helper_under_a_cpu_limit_of_less_than_two(settings, monkeypatch, tmp_path):
    """Two CPUs on the machine, but a container limited to 1.5 CPUs' worth: the helper would
    only add the cost of sending the mail across."""
    settings.MAIL_PARSE_HELPER_FROM = 1000
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    (tmp_path / "membership").write_text("0::/\n")
    monkeypatch.setattr(parse_helper, "CGROUP_MEMBERSHIP", tmp_path / "membership")
    monkeypatch.setattr(
        parse_helper, "CGROUP_ROOT", cgroup_files(tmp_path, {"cpu.max": "150000 100000"})
    )
    assert not parse_helper.wanted(50_000)
    (tmp_path / "cpu.max").write_text("200000 100000")
    assert parse_helper.wanted(50_000)


def test_the_helper_is_given_none_of_the_workers_secrets(monkeypatch):
    monkeypatch.setenv("SYNC_ENCRYPTION_KEYS", "k-not-for-the-helper")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p-not-for-the-helper@db/x")
    child = parse_helper.ParseHelper()
    try:
        answers = child.collect(child.submit([(message(subject="works"), None)]))
        assert answers[0] is not None and answers[0].subject == "works"
        environ = Path(f"/proc/{child.proc.pid}/environ").read_bytes()  # running by now
        assert b"not-for-the-helper" not in environ and b"PYTHONPATH=" in environ
    finally:
        child.close()
