"""A throwaway ``redis-server`` (Debian package) on 127.0.0.1, without persistence."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from sandbox.dovecot import free_port
from tests.support.processes import dying_with_this_process, wait_for

REDIS_SERVER = "/usr/bin/redis-server"


@contextmanager
def redis_server() -> Iterator[str]:
    """Start one; yields its URL (db 0) and stops it."""
    import redis

    if not shutil.which(REDIS_SERVER):
        raise RuntimeError(
            "redis-server is not installed: run the test command as root (it installs the "
            "Debian package 'redis-server')."
        )
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="syncproject-redis-")
    proc = subprocess.Popen(
        dying_with_this_process(
            [
                REDIS_SERVER,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.from_url(url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, 15, "redis-server to answer", every=0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
