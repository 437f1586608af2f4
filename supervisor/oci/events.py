"""``events``: the container's cgroup statistics as runc's JSON events, once (``--stats``) or every
``--interval`` until the container stops, with an ``oom`` event when the OOM killer's count grows."""

import json
import time
from typing import Any

from .log import CommandError
from .state import Container

__all__ = ["events", "parse_interval"]


def parse_interval(text: str) -> float:
    """Go's durations as runc takes them: ``5s``, ``500ms``, ``1m``, ``1m30s``."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, number = 0.0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit() or c == ".":
            number += c
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else c
        if unit not in units or not number:
            raise CommandError(f"invalid interval {text!r}")
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    if number or total <= 0:
        raise CommandError(f"invalid interval {text!r}")
    return total


def _stats(c: Container) -> tuple[dict[str, Any], int]:

    cgroup = c.cgroup()
    s = cgroup.stats()
    return {"type": "stats", "id": c.id, "data": {
        "memory": {"usage": {"usage": s.memory_bytes or 0}},
        "pids": {"current": s.pids or 0},
        "cpu": {"usage": {"total": s.cpu_ns or 0}},
    }}, cgroup.oom_kills()


def events(c: Container, stats_once: bool, interval: float) -> None:
    if c.status() == "stopped":
        raise CommandError("container not running")
    event, ooms = _stats(c)
    print(json.dumps(event), flush=True)
    if stats_once:
        return
    while True:
        time.sleep(interval)
        if c.status() == "stopped":
            return
        event, now = _stats(c)
        if now > ooms:
            print(json.dumps({"type": "oom", "id": c.id}), flush=True)
        ooms = now
        print(json.dumps(event), flush=True)
