"""The built wheel is the whole product: installed into a fresh virtualenv (no checkout on the
path), it passes Django's checks, migrates, collects its static files and renders pages from
its own templates.

The fresh venv gets the wheel with ``--no-deps``; its third-party dependencies come from this
test run's environment through a ``.pth`` line (a plain path: the editable install's import
hook there is not run), so the test needs no network and still fails when a package, template
or static file is missing from the wheel.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "var", "test-output", "build", "dist", "*.egg-info", "__pycache__", "tests"
)


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_installs_and_runs_without_the_checkout(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), "."], source)
    (wheel,) = dist.glob("syncproject-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run([*pip, "install", "-q", "--no-deps", str(wheel)], tmp_path)
    purelib = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path
        ).strip()
    )
    ours = [sysconfig.get_path("purelib"), *site.getsitepackages()]
    (purelib / "zz_dependencies.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")

    workdir = tmp_path / "run"
    workdir.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SYNC_", "DATABASE_", "PYTHON"))
    }
    env["SYNC_VAR_DIR"] = str(tmp_path / "var")
    command = [str(venv / "bin" / "syncproject")]

    where = _run(
        [
            str(python),
            "-c",
            "import syncproject, portal, mail, sandbox; print(syncproject.__file__)",
        ],
        workdir,
        env,
    )
    assert where.strip().startswith(str(venv)), f"imported from {where} instead of the wheel"
    _run([*command, "check"], workdir, env)  # exits non-zero on any error
    _run([*command, "migrate", "--noinput", "-v", "0"], workdir, env)
    _run([*command, "collectstatic", "--noinput", "-v", "0"], workdir, env)
    page = _run(
        [
            *command,
            "shell",
            "--no-imports",
            "-c",
            "from django.test import Client\n"
            "answer = Client().get('/accounts/login/', HTTP_HOST='localhost')\n"
            "print(answer.status_code)\n"
            "print(answer.content.decode())",
        ],
        workdir,
        env,
    )
    status, _, html = page.partition("\n")
    assert status == "200"
    assert 'name="password"' in html
    assert "syncproject" in html.lower() or "sign in" in html.lower()
    assert (tmp_path / "var" / "db.sqlite3").exists()
