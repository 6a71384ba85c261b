"""First IMAP sync, two checkouts of this code against each other. Prints one JSON object.

    python bench/imap_ab.py --old ../other-checkout [--messages 10000] [--pairs 8]
                            [--env MAIL_PARSE_HELPER_FROM=0] [--delay-ms 10]

On a shared machine one run of ``bench/imap_sync.py`` can be off by a fifth either way, which
hides any change smaller than that. This builds one mailbox (Dovecot, sdbox) and then runs the
initial sync of the ``--old`` checkout and of this one in alternating order, ``--pairs`` times,
each into a new, empty mirror of the same database, with a bare imapclient fetch before each
pair: both sides see the same load. It reports the medians and in how many pairs this checkout
was the faster. ``--env NAME=VALUE`` (repeatable) is given to both sides' worker processes.
``--delay-ms`` puts ``bench/delay_proxy.py`` between the server and both the syncs and the bare
fetch: what round trips cost against a server that is not on the same machine.
Both checkouts must have the same migrations.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="another checkout of this repository")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0,
        help="reach the server through bench/delay_proxy.py, this much later each way",
    )
    args = parser.parse_args()
    scripts = {
        "old": str(Path(args.old).resolve() / "bench" / "imap_sync.py"),
        "new": str(ROOT / "bench" / "imap_sync.py"),
    }
    if not Path(scripts["old"]).is_file():
        raise SystemExit(f"{scripts['old']} does not exist")
    env = dict(pair.split("=", 1) for pair in args.env)

    from bench.harness import scratch_var_dir

    scratch_var_dir("syncbench-imap-ab-")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    from bench.harness import job_phase_child, setup_django

    setup_django()
    from bench import delay_proxy
    from bench.imap_sync import bare_fetch, build_maildir, forget, imap_connection
    from sandbox.dovecot import Dovecot

    dovecot = Dovecot(mail_format="sdbox")
    seconds: dict[str, list[float]] = {"old": [], "new": [], "bare": []}
    proxy: subprocess.Popen[str] | None = None
    try:
        dovecot.start()
        port = dovecot.port
        if args.delay_ms:
            proxy, port = delay_proxy.start(port, args.delay_ms)
        dovecot.add_user("ab")
        built = dovecot.root / "import" / "Maildir"
        build_maildir(built, args.messages)
        dovecot.import_maildir("ab", built)
        dovecot.doveadm("mailbox", "status", "-u", "ab", "messages", "INBOX")
        bare_fetch(dovecot, "ab", port)  # not counted: every pair reads a mailbox read before
        for pair in range(args.pairs):
            seconds["bare"].append(bare_fetch(dovecot, "ab", port)[1])
            for side in ("old", "new") if pair % 2 == 0 else ("new", "old"):
                conn = imap_connection(dovecot, "ab", port=port)
                result = job_phase_child(scripts[side], "initial", conn.pk, env)
                seconds[side].append(result["seconds"])
                forget(conn)
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.wait()
        dovecot.cleanup()
    print(
        json.dumps(
            {
                "benchmark": "imap_ab",
                "messages": args.messages,
                "old": str(Path(args.old).resolve()),
                "env": env,
                "delay_ms_each_way": args.delay_ms,
                **{
                    f"{side}_median_s": round(statistics.median(values), 3)
                    for side, values in seconds.items()
                },
                "new_faster_in": sum(
                    n < o for o, n in zip(seconds["old"], seconds["new"], strict=True)
                ),
                "pairs": args.pairs,
                "seconds": {side: [round(v, 2) for v in vs] for side, vs in seconds.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
