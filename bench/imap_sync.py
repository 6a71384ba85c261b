"""IMAP sync benchmark against a private Dovecot. Prints one JSON object.

    python bench/imap_sync.py --messages 10000 [--format maildir|sdbox] [--repeat 3]
                              [--delay-ms 5]

Builds a mailbox of N realistic messages (varied sizes, HTML alternatives, about 10 % with an
attachment, about 1 % malformed) written straight into the server's Maildir, lets Dovecot index
it, then measures in the same run:

- ``baseline_fetch_messages_per_s``: a bare imapclient fetch of every message (BODY.PEEK[] in
  chunks of 500 UIDs) — the protocol ceiling on this machine;
- ``messages_per_s``: our initial sync through the engine (a fresh process claiming and running
  the job, parsing and storing every message), its ``peak_rss_mb`` (``ready_rss_mb``: the
  same process before the job, Django and the code loaded), and that of the parse
  helper it starts for a large fetch (``helper_peak_rss_mb``; mail/parse_helper.py), and
  where the time went: ``initial_cpu_s`` gives the CPU seconds (user, system) the worker (all
  its threads) and the helper used in the median pair's sync;
- ``noop_sync_s``: a second sync with nothing new, in a fresh worker process, and
  ``noop_warm_sync_s``: the same in a warm one (after a first sync in that process);
- ``plus100_sync_s``: a sync after 100 new messages arrived (a fresh worker process), and
  ``plus100_bare_imapclient_s``: imapclient alone doing the same steps after 100 more arrived
  (open the folder, search, fetch): most of both is Dovecot opening a large Maildir folder
  that changed, which grows with the folder on the server's side.

``--repeat`` runs the bare fetch and the initial sync as that many alternating pairs (each
sync into a new, empty mirror) and reports the median pair: on a shared machine one pair can be
off by a fifth either way. ``ratios`` lists every pair; the peak RSS figures are the highest.
A bare fetch before the first pair is not counted, so that every pair reads a mailbox Dovecot
has read before. ``pair_seconds`` gives each pair's (bare fetch, sync) seconds.

``--format`` chooses how Dovecot stores the mailbox. With ``maildir`` (the default) Dovecot
rereads the whole ``cur/`` directory when a folder is opened within a second or so of a change
to it (its guard against coarse directory timestamps), so a sync right after new mail pays for
the folder's size on the server's side whatever the client sends. ``sdbox`` (Dovecot's own
format, imported from the same Maildir) has no such directory to read: there the
``plus100`` figures show what the client's side costs.

``--delay-ms`` puts ``bench/delay_proxy.py`` in front of the server for everything measured:
each way that much later, as a server elsewhere on the network would be.

The database is a fresh SQLite file (or DATABASE_URL); the server and database are removed after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def mailbox_messages(count: int, seed: int = 7) -> Iterator[bytes]:
    """The benchmark mailbox's messages: realistic ones, and one malformed in a hundred."""
    from tests.support.mailfactory import MALFORMED, realistic

    rng = random.Random(seed)
    broken = list(MALFORMED.values())
    for i in range(count):
        yield broken[i // 100 % len(broken)] if i % 100 == 99 else realistic(i, rng)


def build_maildir(maildir: Path, count: int, seed: int = 7) -> int:
    """Write ``count`` messages into ``maildir/cur``; returns the bytes written."""
    from sandbox.dovecot import MAIL_UID

    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    total = 0
    for i, raw in enumerate(mailbox_messages(count, seed)):
        path = maildir / "cur" / f"{1700000000 + i}.M{i}P1.bench,S={len(raw)}:2,"
        path.write_bytes(raw)
        total += len(raw)
    for path in [maildir, *maildir.rglob("*")]:
        os.chown(path, MAIL_UID, MAIL_UID)
    return total


def bare_client(dovecot: Any, user: str, port: int | None = None) -> Any:
    """A logged-in imapclient session with ``user``, through ``port`` on 127.0.0.1 when given
    (a proxy in front of the server)."""
    from imapclient import IMAPClient

    client = IMAPClient("127.0.0.1", port=port or dovecot.port, ssl=False, timeout=30)
    client.login(user, dovecot.users[user])
    return client


def bare_fetch(dovecot: Any, user: str, port: int | None = None) -> tuple[int, float]:
    """What imapclient alone achieves: every body, read-only, 500 UIDs per FETCH."""
    client = bare_client(dovecot, user, port)
    try:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        start = time.perf_counter()
        fetched = 0
        for first in range(0, len(uids), 500):
            fetched += len(client.fetch(uids[first : first + 500], [b"BODY.PEEK[]"]))
        return fetched, time.perf_counter() - start
    finally:
        client.logout()


def bare_incremental(dovecot: Any, user: str, last_uid: int, port: int | None = None) -> float:
    """What imapclient alone spends on the same incremental step, in a new session: open the
    folder read-only, find the UIDs above ``last_uid``, fetch them (the server's cost of opening
    a large Maildir folder after new mail is in it, as it is in ours)."""
    start = time.perf_counter()
    client = bare_client(dovecot, user, port)
    try:
        client.select_folder("INBOX", readonly=True)
        uids = [u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid]
        client.fetch(uids, [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"BODY.PEEK[]"])
    finally:
        client.logout()
    return time.perf_counter() - start


def imap_connection(dovecot: Any, user: str, port: int | None = None) -> Any:
    """A new, saved IMAP connection to ``user``'s mailbox on the benchmark's Dovecot (through
    ``port`` on 127.0.0.1 instead, when given: a proxy in front of it)."""
    from integrations.models import Connection

    config = {**dovecot.connection_config(user), **({"port": port} if port else {})}
    conn = Connection(kind="imap", name=f"bench {user}", config=config)
    conn.set_secrets({"password": dovecot.users[user]})
    conn.save()
    return conn


def forget(conn: Any) -> None:
    """Remove a run's connection, its stored mail and the attachment files, so that the next
    initial sync starts from an empty mirror as the first did (content-addressed files left
    in place would be found instead of written)."""
    import shutil

    from django.conf import settings

    conn.delete()
    shutil.rmtree(Path(settings.MEDIA_ROOT) / "attachments", ignore_errors=True)


def helper_figures() -> dict[str, float]:
    """Peak memory and CPU (user, system) of this worker's parse helper
    (mail/parse_helper.py), which started with this phase's sync; zeros without one."""
    from mail import parse_helper

    figures = {"helper_peak_rss_mb": 0.0, "helper_cpu_user_s": 0.0, "helper_cpu_system_s": 0.0}
    helper = parse_helper._helpers.get(os.getpid())
    if helper is None:
        return figures
    try:
        status = Path(f"/proc/{helper.proc.pid}/status").read_text()
        # fields 14 and 15 of /proc/PID/stat, after the command name in parentheses
        stat = Path(f"/proc/{helper.proc.pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:  # it stopped (the worker parsed the rest itself)
        return figures
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            figures["helper_peak_rss_mb"] = int(line.split()[1]) / 1024
    tick = os.sysconf("SC_CLK_TCK")
    figures["helper_cpu_user_s"] = round(int(stat[11]) / tick, 2)
    figures["helper_cpu_system_s"] = round(int(stat[12]) / tick, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--format", choices=("maildir", "sdbox"), default="maildir")
    parser.add_argument(
        "--repeat", type=int, default=3, help="bare fetch / initial sync pairs (median reported)"
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0,
        help="reach the server through bench/delay_proxy.py, this much later each way",
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--connection", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        from bench.harness import run_job_phase

        result = run_job_phase(args.phase, args.connection)
        result.update(helper_figures())
        print(json.dumps(result))
        return

    from bench.harness import scratch_var_dir

    scratch_var_dir("syncbench-imap-")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    from bench.harness import job_phase_child, setup_django

    setup_django()
    from integrations.models import Connection
    from mail.models import MailMessage
    from sandbox.dovecot import Dovecot
    from tests.support.mailfactory import realistic

    dovecot = Dovecot(mail_format=args.format)
    proxy = None
    try:
        dovecot.start()
        port = dovecot.port
        if args.delay_ms:
            from bench import delay_proxy

            proxy, port = delay_proxy.start(port, args.delay_ms)
        user = "bench"
        dovecot.add_user(user)
        if args.format == "maildir":
            size = build_maildir(dovecot.root / "mail" / user / "Maildir", args.messages)
            start = time.perf_counter()
        else:
            built = dovecot.root / "import" / "Maildir"
            size = build_maildir(built, args.messages)
            start = time.perf_counter()
            dovecot.import_maildir(user, built)
        dovecot.doveadm("mailbox", "status", "-u", user, "messages", "INBOX")  # index it
        index_s = time.perf_counter() - start
        bare_fetch(dovecot, user, port)  # not counted: every pair reads a mailbox read before
        pairs = []  # (bare fetch, initial sync): alternated, so both see the same load
        conn: Connection | None = None
        for _ in range(max(1, args.repeat)):
            if conn is not None:
                forget(conn)
            fetched, bare_s = bare_fetch(dovecot, user, port)
            conn = imap_connection(dovecot, user, port)
            pairs.append((fetched, bare_s, job_phase_child(__file__, "initial", conn.pk)))
        assert conn is not None
        noop = job_phase_child(__file__, "manual", conn.pk)
        noop_warm = job_phase_child(__file__, "warm:manual", conn.pk)
        rng = random.Random(99)
        dovecot.deliver_many(user, (realistic(args.messages + i, rng) for i in range(100)))
        plus = job_phase_child(__file__, "manual", conn.pk)
        stored = MailMessage.objects.filter(connection=conn).count()
        dovecot.deliver_many(user, (realistic(args.messages + 100 + i, rng) for i in range(100)))
        bare_plus = bare_incremental(dovecot, user, args.messages + 100, port)
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.wait()
        dovecot.cleanup()

    runs = [
        {
            "ratio": (args.messages / initial["seconds"]) / (fetched / bare_s),
            "messages_per_s": args.messages / initial["seconds"],
            "baseline": fetched / bare_s,
            "initial": initial,
        }
        for fetched, bare_s, initial in pairs
    ]
    middle = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]  # the median pair
    initial = middle["initial"]
    print(
        json.dumps(
            {
                "benchmark": "imap_sync",
                "messages": args.messages,
                "format": args.format,
                "delay_ms_each_way": args.delay_ms,
                "mailbox_mb": round(size / 1e6, 1),
                "messages_per_s": round(middle["messages_per_s"], 1),
                "baseline_fetch_messages_per_s": round(middle["baseline"], 1),
                "ratio": round(middle["ratio"], 3),
                "ratios": [round(r["ratio"], 3) for r in runs],
                "pair_seconds": [[round(b, 2), round(i["seconds"], 2)] for _, b, i in pairs],
                "peak_rss_mb": round(max(r["initial"]["peak_rss_mb"] for r in runs), 1),
                "helper_peak_rss_mb": round(
                    max(r["initial"]["helper_peak_rss_mb"] for r in runs), 1
                ),
                # the worker before its job (Django and the code loaded): what the sync adds
                # is peak_rss_mb less this
                "ready_rss_mb": max(r["initial"]["ready_rss_mb"] for r in runs),
                "initial_sync_s": round(initial["seconds"], 2),
                # CPU seconds of the median pair's sync: where the time went
                "initial_cpu_s": {
                    "worker_user": initial["cpu_user_s"],
                    "worker_system": initial["cpu_system_s"],
                    "helper_user": initial["helper_cpu_user_s"],
                    "helper_system": initial["helper_cpu_system_s"],
                },
                "initial_slices": initial["slices"],
                "noop_sync_s": round(noop["seconds"], 3),
                "noop_warm_sync_s": round(noop_warm["seconds"], 3),
                "plus100_sync_s": round(plus["seconds"], 3),
                "plus100_created": plus["created"],
                "plus100_bare_imapclient_s": round(bare_plus, 3),
                "stored_messages": stored,
                "dovecot_index_s": round(index_s, 2),  # and import, for sdbox
                # plus100_sync_s at 100,000 messages: within 1.5x of the figure at 10,000
                "targets": {"ratio": 0.5, "peak_rss_mb": 150, "noop_warm_sync_s": 0.1},
            }
        )
    )


if __name__ == "__main__":
    main()
