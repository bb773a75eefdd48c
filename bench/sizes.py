"""How big and how long each scenario runs: the full profile and ``--quick``.

The full profile is sized so that ``make bench`` finishes in well under 15 minutes on
the 2-core machine with the clients sharing it (see docs/benchmarks.md for the measured
total); ``--quick`` is the smoke test's: tiny sizes, one run, seconds in all.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Sizes:
    runs: int = 3
    # (1) connections held, opened in stages on one server per run
    conn_levels: tuple[int, ...] = (1000, 5000, 10000)
    conn_procs: int = 4  # client processes the sockets are spread over
    conn_open_concurrency: int = 50  # handshakes in flight per client process
    conn_budget_seconds: float = 90.0  # per server and run: no handshake starts after it
    conn_settle_seconds: float = 1.5  # pause before reading RSS
    # (2) sync round trip
    sync_levels: tuple[int, ...] = (1, 10, 100)
    sync_warmup_seconds: float = 1.0
    sync_seconds: float = 4.0
    # (3) async
    async_levels: tuple[int, ...] = (10, 100)
    async_warmup_seconds: float = 1.0
    async_seconds: float = 5.0
    dynamo_seconds: float = 3.0
    dynamo_concurrency: int = 32
    count_requests: int = 100  # requests sent through the counting proxy
    # (4) fan-out
    fanout_connections: int = 1000
    fanout_publishes: int = 5  # per run; the run's figure is their median
    # (5) peer: python-socketio + Celery + Redis, at the async levels
    # (6) profile
    profile_seconds: float = 8.0
    # every client process stops itself after this, whatever happens
    max_child_seconds: float = 300.0

    def client_procs(self, clients: int) -> int:
        """Client processes for ``clients`` concurrent clients (two cores: at most 4)."""
        return max(1, min(4, clients // 10 or 1))


FULL = Sizes()

QUICK = Sizes(
    runs=1,
    conn_levels=(60, 120),
    conn_procs=2,
    conn_open_concurrency=25,
    conn_budget_seconds=30.0,
    conn_settle_seconds=0.2,
    sync_levels=(1, 4),
    sync_warmup_seconds=0.2,
    sync_seconds=0.6,
    async_levels=(4,),
    async_warmup_seconds=0.2,
    async_seconds=1.0,
    dynamo_seconds=0.5,
    dynamo_concurrency=8,
    count_requests=8,
    fanout_connections=40,
    fanout_publishes=2,
    profile_seconds=1.0,
    max_child_seconds=120.0,
)
