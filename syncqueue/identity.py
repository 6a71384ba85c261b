"""Who is working: the ``host:pid`` names in leases, heartbeats and logs.

Two containers can share a host name (host networking) while each has its own PID namespace, so
their process ids collide; a cluster handing back "the jobs of dead worker host:9" must never
touch another container's job. Inside a PID namespace other than the host's, the host name
therefore carries a short tag of that namespace (``web1~3f2a9c:9``).
"""

from __future__ import annotations

import hashlib
import os
import socket
from functools import cache
from pathlib import Path

INITIAL_PID_NAMESPACE = "pid:[4026531836]"  # the kernel's first PID namespace (the host's)


@cache
def host() -> str:
    name = socket.gethostname()
    try:
        namespace = str(Path("/proc/self/ns/pid").readlink())
    except OSError:
        return name
    if namespace == INITIAL_PID_NAMESPACE:
        return name
    return f"{name}~{hashlib.sha256(namespace.encode()).hexdigest()[:6]}"


def process(pid: int | None = None) -> str:
    """``host:pid`` of this process (or of ``pid``, a process in the same PID namespace)."""
    return f"{host()}:{pid if pid is not None else os.getpid()}"
