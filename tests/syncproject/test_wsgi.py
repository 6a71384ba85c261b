"""The web server's entry point (``gunicorn syncproject.wsgi``) as a worker loads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.processes import ROOT


def test_a_loaded_web_worker_has_its_objects_out_of_the_collectors_way(tmp_path):
    """After loading, Django, the apps, the URLconf and the views are frozen (``gc.freeze``):
    a full collection then walks only what requests made, instead of stalling every request of
    the process for tens of milliseconds. The URLconf is loaded before the freeze, not at the
    first request."""
    probe = (
        "import gc, json, sys\n"
        "import syncproject.wsgi\n"
        "print(json.dumps([gc.get_freeze_count(), len(gc.get_objects()),"
        " 'portal.api' in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "SYNC_VAR_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    frozen, tracked, views_loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert views_loaded
    assert frozen > 20_000 and tracked < frozen / 10, (frozen, tracked)
