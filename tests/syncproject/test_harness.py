"""The test harness itself: a test run killed without its finalizers leaves no child behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT, wait_for

pytestmark = pytest.mark.process

# A stand-in for a test process: starts a long-lived child as the fixtures start qclusters and
# listeners, prints its pid, then waits to be killed.
TEST_PROCESS = """\
import subprocess, sys, time
from tests.support.processes import dying_with_this_process
child = subprocess.Popen(
    dying_with_this_process([sys.executable, "-c", "import time; time.sleep(120)"]),
    start_new_session=True,
)
print(child.pid, flush=True)
time.sleep(120)
"""


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody has reaped yet counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_die_with_a_test_process_killed_by_sigkill():
    test_process = subprocess.Popen(
        [sys.executable, "-c", TEST_PROCESS], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert test_process.stdout is not None
        child = int(test_process.stdout.readline())
        # the child runs the real command (execv kept its pid), not the launcher
        wait_for(
            lambda: b"time.sleep(120)" in Path(f"/proc/{child}/cmdline").read_bytes(),
            10,
            "the child to exec its command",
        )
        assert not gone(child)
        test_process.send_signal(signal.SIGKILL)  # no finalizer runs
        test_process.wait()
        wait_for(lambda: gone(child), 10, "the child to die with the test process")
    finally:
        test_process.kill()
        test_process.wait()
        if "child" in locals() and not gone(child):
            os.kill(child, signal.SIGKILL)
