"""Several threads doing the same work at the same moment, as web processes or clusters do."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connections

T = TypeVar("T")


def at_once(count: int, work: Callable[[], T]) -> list[T]:
    """Run ``work`` in ``count`` threads released together, each on its own database
    connection (closed when it ends); returns what each returned. The first exception any
    thread raised is raised here, after all have ended."""
    barrier = threading.Barrier(count)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(work())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
