"""Crash points for the chaos suite: `fault_point(name)` SIGKILLs this very process when
`SHELFCAST_FAULT_POINT` names that point, and does nothing otherwise.

`SHELFCAST_FAULT_POINT=worker.before_commit@3` kills the process the 3rd time the point is
reached (`@1` when the count is left out), so a test can place a crash exactly between two
steps -- after the outputs are acknowledged and before the offsets are committed, say --
instead of wherever a signal from outside happens to land. The variable is read once, at
import; unset, `fault_point` is a function that returns at once.

Points (see the calls in streams/engine.py, streams/app.py (the Faust engine's agent) and
optimizer/service.py):

| point | where the process dies |
| --- | --- |
| `worker.mid_forecast` | a batch's forecasts and decisions are made in memory, nothing sent |
| `worker.mid_batch` | outputs acknowledged, their changelog (state) records not yet written |
| `worker.before_commit` | outputs and changelog acknowledged, input offsets not committed |
| `optimizer.after_plan_write` | plans committed in PostgreSQL, not yet published |
| `optimizer.before_kafka_commit` | plans published and marked, Kafka offsets not committed |
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from runtime.errors import ConfigError

__all__ = ["FAULT_ENV", "POINTS", "FaultPoint", "fault_point", "parse_fault"]

FaultPoint = Callable[..., None]  # fault_point(name, *, when=True)

FAULT_ENV = "SHELFCAST_FAULT_POINT"
POINTS = frozenset(
    {
        "worker.mid_forecast",
        "worker.mid_batch",
        "worker.before_commit",
        "optimizer.after_plan_write",
        "optimizer.before_kafka_commit",
    }
)


def parse_fault(spec: str) -> tuple[str, int]:
    """`name[@n]` -> (name, n); a one-line ConfigError for an unknown point or a bad count."""
    name, _, count = spec.strip().partition("@")
    if name not in POINTS:
        known = ", ".join(sorted(POINTS))
        raise ConfigError(f"{FAULT_ENV}={spec!r}: unknown point; known: {known}")
    try:
        hits = int(count) if count else 1
    except ValueError:
        hits = 0
    if hits < 1:
        raise ConfigError(f"{FAULT_ENV}={spec!r}: the count after '@' must be a positive integer")
    return name, hits


def _disarmed(name: str, *, when: object = True) -> None:
    """No fault configured: nothing to do."""


def _armed(point: str, kill_at: int) -> FaultPoint:
    hits = 0

    def fault_point(name: str, *, when: object = True) -> None:
        """SIGKILL this process the `kill_at`-th time `name` (the armed point) is reached
        with a true `when`."""
        nonlocal hits
        if name != point or not when:
            return
        hits += 1
        if hits >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    return fault_point


_spec = os.environ.get(FAULT_ENV, "").strip()
fault_point: FaultPoint = _armed(*parse_fault(_spec)) if _spec else _disarmed
