"""The one backoff policy: exponential, capped, with jitter.

Every place that waits before trying again uses it: the processor's retry of a
failed attempt (a stored ``not_before``), delivery's retries of a call to a connect
pod, the lease coordinator and the Kubernetes registry pausing after an error.

Why not tenacity or stamina: only one of those places retries a single call
(delivery, whose retries interleave with a circuit breaker and a final-frame
policy); the others need just the delay — a stored ``not_before``, or the pause of a
long-running loop between failed rounds. One small formula serves them all without a
dependency. (The Python client keeps its own reconnect delay: it depends on the
protocol module only, so it can be installed on its own.)
"""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True, kw_only=True)
class Backoff:
    """``delay(n) = min(cap, base · 2^(n - 1)) · (1 - jitter · U)``, U uniform in [0, 1).

    ``n`` counts failures so far (1 = the first). With ``jitter`` 0.2 each delay is
    shortened by up to 20 %, so many callers failing together spread out instead of
    hitting a recovering peer at the same instant.
    """

    base: float = 1.0
    cap: float = 60.0
    jitter: float = 0.2

    def delay(self, failures: int, *, rand: float | None = None) -> float:
        u = random.random() if rand is None else rand
        raw = min(self.cap, self.base * 2 ** min(max(0, failures - 1), 62))
        return float(raw * (1 - self.jitter * u))


__all__ = ["Backoff"]
