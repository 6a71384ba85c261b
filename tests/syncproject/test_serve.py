"""``make run`` (``manage.py serve``) and ``make demo`` (``manage.py demo``) as people run them:
up and syncing in seconds, Ctrl-C stops everything they started — web server, workers, demo
servers, Dovecot — workers that stop proving they work are restarted, and a taken port is
named before anything starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sandbox.dovecot import free_port
from tests.support.cluster import roles
from tests.support.processes import (
    ROOT,
    descendants,
    dying_with_this_process,
    output_dir,
    wait_for,
)

pytestmark = pytest.mark.process


def dovecot_masters() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"/usr/sbin/dovecot") and b"syncproject-dovecot-" in cmdline:
                found.add(int(entry.name))
    return found


TOKEN = "demo-test-metrics-token"


def serve_env(var_dir: Path, port: int, **extra: str) -> dict[str, str]:
    """``make run``'s environment on a fresh machine: the embedded default (no DATABASE_URL,
    the product's settings), its own var directory and port."""
    unset = ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "SYNC_ENCRYPTION_KEYS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return {**env, "SYNC_VAR_DIR": str(var_dir), "PORT": str(port), **extra}


def _running(pids: set[int]) -> dict[int, str]:
    """The processes among ``pids`` that still run (not zombies), with their command lines."""
    found = {}
    for pid in pids:
        try:
            if "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
                continue
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone
    return found


def assert_all_gone(pids: set[int]) -> None:
    """Everything started has stopped: grandchildren orphaned at the very end get a few
    seconds to finish exiting (a busy machine), then whatever still runs is named."""
    try:
        wait_for(lambda: not _running(pids), 10, "every started process to exit", every=0.2)
    except AssertionError:
        raise AssertionError(f"processes outlived the run: {_running(pids)}") from None


def health(url: str) -> dict | None:
    """/healthz with the details, which only a caller with the metrics token gets."""
    request = urllib.request.Request(  # noqa: S310 - a fixed http:// URL
        f"{url}/healthz", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as answer:  # noqa: S310
            return json.load(answer)
    except OSError:
        return None


def test_the_demo_starts_syncs_and_stops_everything(tmp_path):
    port = free_port()
    env = serve_env(tmp_path, port, SYNC_ADMIN_PASSWORD="demo", SYNC_METRICS_TOKEN=TOKEN)
    before = dovecot_masters()
    log = (output_dir() / "serve-demo.log").open("wb")
    proc = subprocess.Popen(
        dying_with_this_process([sys.executable, "manage.py", "demo"]),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: (health(url) or {}).get("status") == "ok", 60, "the demo to be up")
        started = descendants(proc.pid)
        demo_dovecot = dovecot_masters() - before
        # the day's outcome counts may be served from the last count for up to a dispatcher
        # pass (60 s) once counting them looked expensive — on a busy machine, a count slowed
        # by the demo's own start-up is enough (syncqueue/stats.py): wait out one pass
        wait_for(
            lambda: (health(url) or {}).get("queue", {}).get("succeeded", 0) >= 8,
            150,
            "the demo's first syncs",
        )
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(timeout=60)
        log.close()
    assert code == 0
    assert_all_gone(started | demo_dovecot)
    assert health(url) is None
    text = (output_dir() / "serve-demo.log").read_text()
    assert "People: alice, bob (password 'demo')" in text and "Stopped." in text
    assert "Stopping" in text.split("People:", 1)[1]  # Ctrl-C says what it waits for at once
    # the development key's warning: from the checks before start, not again per process
    assert text.count("integrations.W001") == 1, text


def qcluster_main(serve_pid: int) -> int | None:
    """The qcluster process ``serve`` started (its direct child running qcluster)."""
    for pid in descendants(serve_pid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == serve_pid and b"qcluster" in title:
            return pid
    return None


def test_make_run_restarts_workers_that_stop_proving_they_work(tmp_path):
    port = free_port()
    env = serve_env(
        tmp_path,
        port,
        SYNC_ADMIN_PASSWORD="pw",
        SYNC_METRICS_TOKEN=TOKEN,
        SYNC_WATCHDOG_SECONDS="6",
        SYNC_CLUSTER_BEAT_SECONDS="1",
        SYNC_STALL_SECONDS="4",
        SYNC_HEARTBEAT_STALE_SECONDS="10",
    )
    log_path = output_dir() / "serve-watchdog.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        dying_with_this_process([sys.executable, "manage.py", "serve"]),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: (health(url) or {}).get("status") == "ok", 60, "serve to be up")
        first = wait_for(lambda: qcluster_main(proc.pid), 10, "the qcluster process")
        sentinel = wait_for(lambda: roles(first).get("sentinel"), 10, "the sentinel")[0]
        os.kill(sentinel, signal.SIGSTOP)  # the guard loop stops: no more watchdog pings
        second = wait_for(
            lambda: (pid := qcluster_main(proc.pid)) not in (None, first) and pid,
            30,
            "the watchdog restart",
        )
        assert (
            not Path(f"/proc/{sentinel}").exists()
            or "State:\tZ" in Path(f"/proc/{sentinel}/status").read_text()
        )
        wait_for(lambda: (health(url) or {}).get("status") == "ok", 30, "workers back")
        os.killpg(second, signal.SIGKILL)  # the whole cluster dies (OOM, kill -9)
        third = wait_for(
            lambda: (pid := qcluster_main(proc.pid)) not in (None, second) and pid,
            30,
            "the restart after the kill",
        )
        wait_for(lambda: (health(url) or {}).get("status") == "ok", 30, "workers back again")
        started = descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        log.close()
    text = log_path.read_text()
    assert code == 0, text[-2000:]
    assert "have not proved they work for" in text and "(watchdog)" in text
    assert "The workers stopped (exit status -9)" in text
    assert third != second
    assert_all_gone(started)


def test_a_taken_port_is_named_and_nothing_starts(tmp_path):
    import socket

    port = free_port()
    env = serve_env(tmp_path, port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = subprocess.run(
            [sys.executable, "manage.py", "serve"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"Port {port} on 127.0.0.1 is in use" in done.stderr
    assert f"PORT={port + 1} make run" in done.stderr
    assert not (tmp_path / "db.sqlite3").exists()  # not even migrated: nothing was started
