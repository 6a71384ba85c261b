"""Peak worker memory on hostile mail against ordinary mail. Prints one JSON object.

    python bench/hostile_memory.py [--ordinary 2000] [--hostile 10]

Two private-Dovecot mailboxes synced by a fresh worker-like process each:

- ``ordinary``: realistic mail (bench/imap_sync.py's mix);
- ``hostile``: the same mix plus, every so often, a 1,000-level nested multipart and a message
  with a 20 MiB attachment (``--hostile`` of each).

The promise is that hostile sizes keep a worker under the same ceiling as ordinary mail:
``hostile_peak_rss_mb`` close to ``ordinary_peak_rss_mb`` (target: within 30 MB, and both
under 170 MB).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def hostile_messages(count: int) -> list[bytes]:
    from tests.mail.hostile import file_part, mail, multipart, nested, text_part

    found = []
    for i in range(count):
        deep = nested(1000)
        head, body = deep.split(b"\r\n\r\n", 1)
        found.append(mail(f"nested_{i}", [b"MIME-Version: 1.0", *head.split(b"\r\n")], body))
        found.append(
            multipart(
                f"big_{i}",
                [
                    text_part(b"a big file"),
                    file_part(
                        b'Content-Disposition: attachment; filename="big.bin"',
                        random.Random(i).randbytes(20 * 1024 * 1024),
                    ),
                ],
            )
        )
    return found


def sync_mailbox(dovecot: object, user: str, extra: list[bytes], ordinary: int) -> dict:
    from bench.harness import job_phase_child
    from bench.imap_sync import build_maildir
    from integrations.models import Connection

    dovecot.add_user(user)  # type: ignore[attr-defined]
    maildir = dovecot.root / "mail" / user / "Maildir"  # type: ignore[attr-defined]
    build_maildir(maildir, ordinary)
    if extra:
        dovecot.drop(user, extra)  # type: ignore[attr-defined]
    conn = Connection(
        kind="imap",
        name=user,
        config=dovecot.connection_config(user),  # type: ignore[attr-defined]
    )
    conn.set_secrets({"password": dovecot.users[user]})  # type: ignore[attr-defined]
    conn.save()
    return job_phase_child(__file__, "initial", conn.pk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ordinary", type=int, default=2000)
    parser.add_argument("--hostile", type=int, default=10)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--connection", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        from bench.harness import run_job_phase

        print(json.dumps(run_job_phase(args.phase, args.connection)))
        return

    from bench.harness import scratch_var_dir

    scratch_var_dir("syncbench-hostile-")
    from bench.harness import setup_django

    setup_django()
    from sandbox.dovecot import Dovecot

    dovecot = Dovecot()
    try:
        dovecot.start()
        ordinary = sync_mailbox(dovecot, "ordinary", [], args.ordinary)
        hostile = sync_mailbox(dovecot, "hostile", hostile_messages(args.hostile), args.ordinary)
    finally:
        dovecot.cleanup()
    print(
        json.dumps(
            {
                "benchmark": "hostile_memory",
                "ordinary_messages": args.ordinary,
                "hostile_extra": {
                    "nested_1000_levels": args.hostile,
                    "attachment_20mib": args.hostile,
                },
                "ordinary_peak_rss_mb": round(ordinary["peak_rss_mb"], 1),
                "hostile_peak_rss_mb": round(hostile["peak_rss_mb"], 1),
                "ordinary_state": ordinary["state"],
                "hostile_state": hostile["state"],
                "hostile_created": hostile["created"],
                "ordinary_seconds": round(ordinary["seconds"], 2),
                "hostile_seconds": round(hostile["seconds"], 2),
                "targets": {"difference_mb": 30, "peak_rss_mb": 170},
            }
        )
    )


if __name__ == "__main__":
    main()
