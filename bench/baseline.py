"""A trivial django-q2 task: the baseline of ``bench/engine.py throughput``."""

from __future__ import annotations


def noop(i: int) -> int:
    return i
