"""Retry delays: capped exponential backoff with jitter, honouring a server-given delay.

One schedule for every retry loop (the optimizer's database writes, the alert forwarder's
webhook POSTs, the batch engine's sends while the broker is away): the n-th failure waits
`base_delay_s * 2**(n-1)` capped at `max_delay_s`, scaled by a random factor in
`[1 - jitter, 1]` so that workers restarted together do not retry in step. A server's own
`Retry-After` raises the delay to at least that much (capped too: a hostile or confused server
cannot park a worker for an hour).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Delays `base_delay_s * 2**(n-1)` capped at `max_delay_s`, times uniform(1 - jitter, 1).

    `max_attempts` is how many tries a loop makes before giving up; 0 means it never does.
    `jitter` is a fraction (0-1): 0 gives the exact doubling schedule.
    """

    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_attempts: int = 0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError(f"backoff delays must be >= 0, got base {self.base_delay_s} s, "
                             f"max {self.max_delay_s} s")
        if self.max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0 (0 = forever), got {self.max_attempts}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter is a fraction in [0, 1], got {self.jitter}")

    def delay_s(self, failed_attempts: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after the `failed_attempts`-th failure (1 = the first try failed)."""
        exponent = min(max(failed_attempts, 1) - 1, 64)  # 2**64 * base is past any cap already
        delay = min(self.max_delay_s, self.base_delay_s * 2.0 ** exponent)
        if self.jitter:
            delay *= random.uniform(1.0 - self.jitter, 1.0)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_delay_s))
        return delay

    def exhausted(self, attempts: int) -> bool:
        """True once `attempts` tries have been made and no more are allowed."""
        return bool(self.max_attempts) and attempts >= self.max_attempts
