"""``manage.py serve --demo`` (``make demo``) as a newcomer runs it: up and syncing in seconds,
and Ctrl-C stops everything it started — web server, workers, demo servers, Dovecot."""

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
from tests.support.processes import ROOT, descendants, output_dir, wait_for

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
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        SYNC_VAR_DIR=str(tmp_path),
        SYNC_ADMIN_PASSWORD="demo",
        PORT=str(port),
        SYNC_METRICS_TOKEN=TOKEN,
    )
    before = dovecot_masters()
    log = (output_dir() / "serve-demo.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--demo"],
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
        wait_for(
            lambda: (health(url) or {}).get("queue", {}).get("succeeded", 0) >= 8,
            60,
            "the demo's first syncs",
        )
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(timeout=60)
        log.close()
    assert code == 0
    alive = {pid for pid in started | demo_dovecot if Path(f"/proc/{pid}").exists()}
    zombies = {p for p in alive if "State:\tZ" in Path(f"/proc/{p}/status").read_text()}
    assert alive == zombies, "processes outlived the demo"
    assert health(url) is None
    text = (output_dir() / "serve-demo.log").read_text()
    assert "People: alice, bob (password 'demo')" in text and "Stopped." in text
