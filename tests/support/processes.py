"""Starting and stopping real processes (qcluster, servers) from tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


def output_dir() -> Path:
    """Where tests leave logs and screenshots (``TEST_OUTPUT_DIR``, default test-output/)."""
    path = Path(os.environ.get("TEST_OUTPUT_DIR", ROOT / "test-output"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_env() -> dict[str, str]:
    """Environment that points a child process at the database this test process uses."""
    from django.db import connection

    conf = connection.settings_dict
    if connection.vendor == "sqlite":
        return {"DATABASE_URL": "", "SQLITE_PATH": str(conf["NAME"])}
    auth = conf["USER"] + (f":{conf['PASSWORD']}" if conf.get("PASSWORD") else "")
    return {"DATABASE_URL": f"postgres://{auth}@{conf['HOST']}:{conf['PORT']}/{conf['NAME']}"}


def child_env(**overrides: Any) -> dict[str, str]:
    env = {**os.environ, **database_env(), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def descendants(pid: int) -> set[int]:
    """All processes below ``pid`` (read from /proc; no extra dependency)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def stop_process_group(proc: subprocess.Popen[Any], grace: float = 15.0) -> None:
    """SIGTERM the main process (it stops its own children in order, as qcluster does), then
    SIGKILL the whole group, so nothing outlives the test even if shutdown hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# django-q2's own cluster, without our sentinel (syncqueue/cluster.py): for comparisons only.
STOCK_QCLUSTER = [
    sys.executable,
    "-c",
    "import django, time; django.setup(); from django_q.cluster import Cluster; "
    "Cluster().start(); time.sleep(3600)",
]


@contextmanager
def qcluster(
    name: str = "cluster", *, stock: bool = False, grace: float = 15.0, **env: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``manage.py qcluster`` (or, with ``stock``, django-q2's unmodified cluster) against
    the test database; stopped (group-wide) on exit."""
    argv = STOCK_QCLUSTER if stock else [sys.executable, "manage.py", "qcluster"]
    with managed(argv, f"qcluster-{name}", grace, env) as proc:
        yield proc


@contextmanager
def listener(name: str = "listener", **env: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``manage.py sync_listen`` (the IMAP IDLE listener) against the test database."""
    env.setdefault("SYNC_LISTEN_RECONCILE_SECONDS", 0.5)
    env.setdefault("SYNC_LISTEN_MAX_BACKOFF", 2)
    with managed([sys.executable, "manage.py", "sync_listen"], f"listener-{name}", 10, env) as proc:
        yield proc


# Runs first in each child, then becomes it (execv keeps the pid and the setting): Linux sends
# the child SIGTERM when the test process that started it dies, even by SIGKILL, so a killed
# test run leaves no qcluster or listener writing into the next run's database. SIGTERM, not
# SIGKILL: a qcluster then stops its own workers. If the test process is already gone, exit.
DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
parent, argv = int(sys.argv[1]), sys.argv[2:]
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass  # not Linux: the test's own finalizers stop it
if os.getppid() != parent:
    sys.exit(1)
os.execv(argv[0], argv)
"""


def dying_with_this_process(argv: list[str]) -> list[str]:
    """``argv`` started so that it gets SIGTERM when this process dies (see DIE_WITH_PARENT).

    Linux ties the signal to the thread that started the child: start children from a thread
    that lives as long as they do (the test's own)."""
    return [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *argv]


@contextmanager
def managed(
    argv: list[str], log_name: str, grace: float, env: dict[str, Any]
) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session, logging to test-output, stopped group-wide on exit, and
    stopped by the kernel if the test process dies without running its finalizers."""
    log = (output_dir() / f"{log_name}-{os.getpid()}.log").open("ab")
    proc = subprocess.Popen(
        dying_with_this_process(argv),
        cwd=ROOT,
        env=child_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop_process_group(proc, grace)
        log.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
