"""The hostile corpus (tests/mail/hostile.py): every message parses without raising, each field
is read right or carries a truthful defect note — and through a real Dovecot and a real qcluster
every message is stored, with its raw bytes, and a second sync stores nothing twice."""

from __future__ import annotations

import pytest

from mail.models import MailMessage, MailSource
from mail.parsing import ParsedMessage, parse_message
from syncqueue import engine
from syncqueue.models import SyncJob
from tests.mail.hostile import Case, corpus
from tests.support.cluster import FAST_CLUSTER, wait_finished
from tests.support.processes import qcluster

CASES = corpus()
# The server rewrites these on the way out (line ends to CRLF, NUL to 0x80), so only the
# parser-level check holds them to their exact fields.
SERVER_REWRITES = {
    "bare_cr_only",
    "lf_only",
    "mixed_line_ends",
    "subject_nul",
    "body_utf16",
    "body_nul_bytes",
    "header_bare_cr",
    "no_blank_line",
    "headers_only",
    "only_marker",
    "garbage_bytes",
    "header_nul_in_name",
    "empty_lines_first",
}


def check(case: Case, found: ParsedMessage | MailMessage, attachments: list[str]) -> None:
    """What the case promises about the stored (or parsed) message."""
    where = f"case {case.name}"
    defects = list(found.defects or [])
    if case.subject is not None:
        assert found.subject == case.subject, (where, found.subject[:200], defects)
    if case.subject_has is not None:
        assert case.subject_has in found.subject, (where, found.subject)
    if case.from_address is not None:
        assert found.from_address == case.from_address, (where, found.from_address, defects)
    if case.from_name is not None:
        assert found.from_name == case.from_name, (where, found.from_name, defects)
    if case.text_has is not None:
        assert case.text_has in found.text_body, (where, found.text_body[:200], defects)
    if case.html_has is not None:
        assert case.html_has in found.html_body, (where, found.html_body[:200])
    for expected in case.defects_have:
        assert any(expected in d for d in defects), (where, expected, defects)
    if case.clean:
        assert defects == [], (where, defects)
    if case.sent is not None:
        assert (found.sent_at is not None) == case.sent, (where, found.sent_at, defects)
    if case.message_id is not None:
        assert found.message_id == case.message_id, (where, found.message_id)
    if case.attachments is not None:
        assert attachments == case.attachments, (where, attachments, defects)
    if case.attachment_count is not None:
        assert len(attachments) == case.attachment_count, (where, attachments)
    if case.truncated is not None:
        assert found.truncated == case.truncated, (where, defects)
    if case.verify is not None:
        case.verify(found)


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 60
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_hostile_message_parses_right_or_says_what_it_guessed(case):
    parsed = parse_message(case.raw)
    check(case, parsed, [a.filename for a in parsed.attachments])
    for text in (parsed.subject, parsed.text_body, parsed.html_body, parsed.from_name):
        assert "\x00" not in text  # storable in PostgreSQL text and JSON


@pytest.mark.django_db(transaction=True)
@pytest.mark.process
def test_the_corpus_through_dovecot_and_a_real_qcluster(
    dovecot, imap_user, make_imap_connection
) -> None:
    dovecot.drop(imap_user, [case.raw for case in CASES])
    conn = make_imap_connection(batch_size=25)
    first = engine.enqueue(conn, SyncJob.Kind.INITIAL)
    env = {**FAST_CLUSTER, "MAIL_MAX_ATTACHMENT_BYTES": 10_000_000}
    with qcluster("hostile", **env):
        job = wait_finished(first, 120, every=0.5)
    assert (job.state, job.error_class, job.skipped_items) == ("succeeded", "", 0), (
        job.error_message
    )
    assert MailMessage.objects.filter(connection=conn).count() == len(CASES)
    assert job.created_count == len(CASES)

    owner: dict[str, list[MailSource]] = {case.name: [] for case in CASES}
    for source in MailSource.objects.filter(message__connection=conn).select_related("message"):
        data = bytes(source.data)
        # the longest marker found: "subject_x_8bit" also contains "subject_x"
        name = max((c.name for c in CASES if c.marker in data), key=len, default=None)
        assert name is not None, data[:200]
        owner[name].append(source)
    for case in CASES:
        assert len(owner[case.name]) == 1, (case.name, len(owner[case.name]))
        source = owner[case.name][0]
        message = source.message
        assert source.size == len(bytes(source.data)) > 0
        assert message.size == source.size or message.truncated, case.name  # the server's size
        if case.name not in SERVER_REWRITES:
            names = list(message.attachments.order_by("id").values_list("filename", flat=True))
            check(case, message, names)

    again = engine.enqueue(conn, SyncJob.Kind.MANUAL)
    with qcluster("hostile-again", **env):
        again = wait_finished(again, 60, dispatch=False)
    assert again.state == "succeeded" and again.created_count == 0
    assert MailMessage.objects.filter(connection=conn).count() == len(CASES)
