"""How the sync cuts a mailbox's bodies into FETCHes (integrations/imap/sync.py
``_body_rounds``): every message in exactly one, memory bounded whatever sizes the server
announces, and read in UID order with at most one FETCH of each kind open at a time."""

from __future__ import annotations

import pytest
from django.conf import settings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from integrations.imap import sync

sizes = st.lists(
    st.one_of(
        st.integers(0, 70_000),  # ordinary mail (0: no size given)
        st.integers(70_000, 30_000_000),  # attachments, and over the limit
        st.sampled_from([b"nonsense", -5, None]),
    ),
    max_size=300,
)


# sizes whose FETCHes only the count bound keeps small: many messages announced tiny beside one
# wide one (a server announcing sizes far too small costs a cap each, not the announced bytes)
CROWDED = [
    [100] * 999 + [60_000],
    [7_000_000] + [70_000] * 12,
    [60_000] + [10] * 700,
]


@pytest.mark.parametrize("announced", CROWDED)
def test_crowded_fetches_are_split(announced: list) -> None:
    rounds = sync._body_rounds(*_mailbox(announced))
    assert len(rounds) > 1
    assert all(len(each) == 1 or len(each) * cap <= sync.FETCH_MAX_BYTES for each, cap in rounds)


def _mailbox(announced: list) -> tuple[list[int], dict[int, dict[bytes, object]]]:
    uids = list(range(1, len(announced) + 1))
    return uids, {uid: {b"RFC822.SIZE": size} for uid, size in zip(uids, announced, strict=True)}


@hypothesis_settings(max_examples=200, deadline=None, derandomize=True)
@given(sizes)
def test_every_message_once_and_every_answer_bounded(announced: list) -> None:
    uids, meta = _mailbox(announced)
    rounds = sync._body_rounds(uids, meta)
    assert sorted(uid for each, _ in rounds for uid in each) == uids
    limit = settings.MAIL_MAX_MESSAGE_BYTES
    open_now: set[int] = set()
    round_of = {uid: number for number, (each, _) in enumerate(rounds) for uid in each}
    last_of = {number: each[-1] for number, (each, _) in enumerate(rounds)}
    for each, cap in rounds:
        assert each == sorted(each) and 0 < cap <= limit
        assert len(each) == 1 or len(each) * cap <= sync.FETCH_MAX_BYTES
        # a message without a size is planned as ordinary mail (a longer one is fetched again)
        assert all(min(sync._size(meta[uid]) or sync.SMALL_BYTES, limit) <= cap for uid in each)
    for uid in uids:  # reading in UID order: rounds open at their first UID, close at their last
        open_now.add(round_of[uid])
        assert len(open_now) <= 2
        if last_of[round_of[uid]] == uid:
            open_now.discard(round_of[uid])
