"""Parsing cost per message, in one process. Prints one JSON object.

    python bench/parse.py [--messages 3000] [--rounds 9]

Parses the same messages as ``bench/imap_sync.py`` (varied sizes, HTML alternatives, about
10 % with an attachment, about 1 % malformed) with ``mail.parsing.parse_message``, ``--rounds``
times, and reports the median microseconds per message: the work the parse helper does for a
first sync, and the worker itself without one. Each round starts after a full garbage
collection and drops its results before the next, so rounds are alike: when comparing two
versions, alternate which runs first (the first of a pair tends to be the slower).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from bench.imap_sync import mailbox_messages
    from mail.parsing import parse_message

    messages = list(mailbox_messages(args.messages))
    took = []
    for _ in range(args.rounds):
        gc.collect()
        start = time.perf_counter()
        parsed = [parse_message(raw) for raw in messages]
        took.append((time.perf_counter() - start) / len(messages) * 1e6)
        del parsed
    print(
        json.dumps(
            {
                "benchmark": "parse",
                "messages": args.messages,
                "megabytes": round(sum(map(len, messages)) / 1e6, 1),
                "us_per_message": round(statistics.median(took), 1),
                "rounds_us": [round(t) for t in took],
            }
        )
    )


if __name__ == "__main__":
    main()
