"""Threads or asyncio for holding many IMAP IDLE sessions in one listener? Prints one JSON object.

    python bench/listener_models.py --mailboxes 500 --messages 100

Measures the two ways a listener can hold N IDLE sessions (RFC 2177), each in its own child
process against the same private Dovecot, with the same deliveries:

- ``threads``: one thread per session with imapclient (``idle()`` / ``idle_check()``), the way
  ``integrations/imap/listener.py`` holds them;
- ``asyncio``: one coroutine per session on one event loop, speaking the few commands IDLE
  needs (LOGIN, EXAMINE, IDLE) over ``asyncio`` streams.

For each: the resident memory of the process once every session idles (``rss_mb``), its CPU
time while idling and while hearing of the deliveries (``cpu_s``), the time to open every
session (``connect_s``), and the time from a message written into a Maildir (as local delivery
does) until that session hears ``EXISTS`` (p50/p95/max). Only the sessions are compared: the
sync the real listener then queues is the same either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import percentile  # noqa: E402

IDLE_SECONDS = 5.0  # all sessions idling, nothing delivered: the cost of waiting
#: sessions logging in at once (Dovecot's login processes take 100 by default; a listener
#: starting up opens its sessions a few at a time too)
OPENING = 20


def _heard(seen: dict[str, float], user: str) -> None:
    seen.setdefault(user, time.time())


def hold_with_threads(port: int, users: list[str], seen: dict[str, float]) -> None:
    from imapclient import IMAPClient

    ready = threading.Barrier(len(users) + 1)
    opening = threading.Semaphore(OPENING)

    def watch(user: str) -> None:
        try:
            with opening:
                client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=60)
                client.login(user, f"pw-{user}")
                client.select_folder("INBOX", readonly=True)
                client.idle()
        except Exception:
            ready.abort()  # the run fails instead of waiting for this session forever
            raise
        ready.wait()
        while True:
            for response in client.idle_check(timeout=30):
                if len(response) > 1 and response[1] == b"EXISTS":
                    _heard(seen, user)

    for user in users:
        threading.Thread(target=watch, args=(user,), daemon=True).start()
    ready.wait()


def hold_with_asyncio(port: int, users: list[str], seen: dict[str, float]) -> None:
    started = threading.Event()

    async def watch(
        user: str, ready: asyncio.Event, count: list[int], opening: asyncio.Semaphore
    ) -> None:
        async with opening:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            await reader.readline()  # greeting
            for tag, command in ((b"a", f'LOGIN {user} "pw-{user}"'), (b"b", "EXAMINE INBOX")):
                writer.write(tag + b" " + command.encode() + b"\r\n")
                while not (await reader.readline()).startswith(tag + b" "):
                    pass
            writer.write(b"c IDLE\r\n")
            while not (await reader.readline()).startswith(b"+"):
                pass
        count[0] += 1
        if count[0] == len(users):
            ready.set()
        while line := await reader.readline():
            if line.rstrip().endswith(b" EXISTS"):
                _heard(seen, user)

    async def main() -> None:
        ready, count, opening = asyncio.Event(), [0], asyncio.Semaphore(OPENING)
        tasks = [asyncio.create_task(watch(user, ready, count, opening)) for user in users]
        await ready.wait()
        started.set()
        await asyncio.gather(*tasks)

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    started.wait()


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(model: str, port: int, users: list[str]) -> None:
    """Hold the sessions, say "ready" with the figures so far, wait for the parent's "done"
    (it delivers meanwhile), print what was heard when."""
    seen: dict[str, float] = {}
    before_rss, start = rss_mb(), time.perf_counter()
    (hold_with_threads if model == "threads" else hold_with_asyncio)(port, users, seen)
    connect_s = time.perf_counter() - start
    idle_cpu = cpu_seconds()
    time.sleep(IDLE_SECONDS)
    idle_cpu = cpu_seconds() - idle_cpu
    ready = {"rss_mb": round(rss_mb(), 1), "rss_before_mb": round(before_rss, 1)}
    print(json.dumps({**ready, "connect_s": round(connect_s, 2), "idle_cpu_s": idle_cpu}))
    sys.stdout.flush()
    busy_cpu = cpu_seconds()
    sys.stdin.readline()  # "done"
    print(json.dumps({"seen": seen, "busy_cpu_s": cpu_seconds() - busy_cpu}))
    sys.stdout.flush()


def measure(model: str, dovecot: Any, users: list[str], messages: int) -> dict[str, Any]:
    from tests.support.mailfactory import message

    process = subprocess.Popen(
        [sys.executable, __file__, "--child", model, "--port", str(dovecot.port), *users],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        ready = json.loads(process.stdout.readline())
        rng = random.Random(3)
        dropped: dict[str, float] = {}
        for user in rng.sample(users, min(messages, len(users))):  # one message per mailbox
            dropped[user] = time.time()
            dovecot.drop(user, [message(subject=f"for {user}")])
            time.sleep(0.05)
        time.sleep(3)  # time for the last ones to be heard
        process.stdin.write("done\n")
        process.stdin.flush()
        result = json.loads(process.stdout.readline())
    finally:
        process.kill()
        process.wait()
    latencies = [result["seen"][u] - t for u, t in dropped.items() if u in result["seen"]]
    return {
        "rss_mb": ready["rss_mb"],
        "rss_per_session_kb": round(
            (ready["rss_mb"] - ready["rss_before_mb"]) * 1024 / len(users), 1
        ),
        "connect_s": ready["connect_s"],
        "idle_cpu_s_per_min": round(ready["idle_cpu_s"] * 60 / IDLE_SECONDS, 3),
        "delivery_cpu_s": round(result["busy_cpu_s"], 3),
        "heard": len(latencies),
        "dropped": len(dropped),
        "latency_p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 95), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=500)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("users", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.port, args.users)
        return
    from sandbox.dovecot import Dovecot

    dovecot = Dovecot()
    try:
        dovecot.start()
        users = [f"m{i}" for i in range(args.mailboxes)]
        for user in users:
            dovecot.add_user(user)
            dovecot.drop(user, [])  # creates the Maildir
        result = {
            "benchmark": "listener_models",
            "mailboxes": args.mailboxes,
            "threads": measure("threads", dovecot, users, args.messages),
            "asyncio": measure("asyncio", dovecot, users, args.messages),
        }
    finally:
        dovecot.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
