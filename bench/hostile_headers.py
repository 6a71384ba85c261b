"""How long reading hostile header shapes takes as they grow: each must grow linearly.

Shapes from a hostile-mail probe, which each took seconds to minutes with the earlier patterns
(a message slower than the task timeout stopped its mailbox's sync at every attempt):

- ``cc_blank_run``: an address list with a long run of blanks before an address with a comment;
- ``group_without_colon``: ``Cc: aaaa…;`` (what the empty-group pattern scanned from every
  position);
- ``folded_without_indent``: an address list folded without indentation, one stray line per
  address.

Prints JSON: seconds per shape and size, and the ratio of the largest size's time to the
smallest's (linear: about the ratio of the sizes, 8).

    .venv/bin/python bench/hostile_headers.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def message(shape: str, n: int) -> bytes:
    head = b"From: a@example.com\r\nSubject: s\r\n"
    if shape == "cc_blank_run":
        field = b"Cc: carol@example.com," + b" " * n + b"dave@example.com (Dave)\r\n"
    elif shape == "group_without_colon":
        field = b"Cc: " + b"a" * n + b";\r\n"
    else:
        field = b"To: first@example.com,\r\n" + b"".join(
            b"user%d@example.com,\r\n" % i for i in range(n // 20)
        )
    return head + field + b"X-Last: y\r\n\r\nbody\r\n"


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "syncproject.settings")
    import django

    django.setup()
    from mail.parsing import parse_message

    sizes = [25_000, 50_000, 100_000, 200_000]
    result: dict[str, Any] = {"benchmark": "hostile_headers", "sizes": sizes, "seconds": {}}
    for shape in ("cc_blank_run", "group_without_colon", "folded_without_indent"):
        times = []
        for n in sizes:
            raw = message(shape, n)
            started = time.perf_counter()
            parse_message(raw)
            times.append(round(time.perf_counter() - started, 4))
        result["seconds"][shape] = times
        result.setdefault("growth", {})[shape] = round(times[-1] / max(times[0], 1e-6), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
