"""Trivial django-q2 task used as the baseline in ``bench/engine.py throughput``."""

from __future__ import annotations


def noop(i: int) -> int:
    return i
