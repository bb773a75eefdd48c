"""How many claims one processor may hold: per processor, per handler lane, per tenant.

A claim is work the processor has promised to do and keeps renewing (every third of
``STREAMER_CLAIM_SECONDS``). Claiming a shard's whole backlog made that promise
unbounded: thousands of claims, renewals that could not keep up, and mass expiry. So
a claim attempt first takes a *slot* here, and none is made without one:

- at most :data:`MAX_HELD_CLAIMS` claims per processor;
- per handler lane (a handler's bulkhead, see :mod:`.dispatch`), at most
  :data:`LANE_CLAIM_FACTOR` times the lane's concurrency (running plus a backlog that
  keeps its slots busy);
- per tenant within a lane, at most half of the lane's slots (never fewer than the
  lane's concurrency), so one tenant's burst always leaves room for the others'.

A candidate refused for want of a slot is simply not claimed: it stays PENDING in
the table, where another processor's stream or sweeper — or this processor's
sweeper once slots free up — takes it (``STREAMER_PENDING_GRACE_SECONDS`` later).
The slot is given back when the claim ends: the job finished or handed back, its
claim lapsed or was lost, or the claim attempt was refused.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

#: Claims one processor holds at most, whatever the lanes (renewals: this many per
#: third of a claim period, at most ``RENEW_CONCURRENCY`` calls in flight).
MAX_HELD_CLAIMS = 1024
#: A lane holds at most this many times its concurrency in claims (running + waiting).
LANE_CLAIM_FACTOR = 8

LaneOf = Callable[[str], tuple[str, int]]


class Slot:
    """One claim's place in the budget; :meth:`release` gives it back (once)."""

    __slots__ = ("_budget", "lane", "tenant")

    def __init__(self, budget: ClaimBudget, lane: str, tenant: str) -> None:
        self._budget: ClaimBudget | None = budget
        self.lane = lane
        self.tenant = tenant

    @property
    def held(self) -> bool:
        return self._budget is not None

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._give_back(self)


class ClaimBudget:
    """Counts the claims held (and being attempted) per lane and per tenant in a lane."""

    def __init__(
        self,
        *,
        lane_of: LaneOf,
        max_claims: int = MAX_HELD_CLAIMS,
        lane_factor: int = LANE_CLAIM_FACTOR,
    ) -> None:
        #: (lane key, this processor's concurrency limit) of an action.
        self.lane_of = lane_of
        self.max_claims = max_claims
        self.lane_factor = lane_factor
        self.held = 0
        self._lanes: collections.Counter[str] = collections.Counter()
        self._tenants: collections.Counter[tuple[str, str]] = collections.Counter()

    @property
    def free(self) -> int:
        """Claims this processor may still take (whatever the lanes)."""
        return self.max_claims - self.held

    def caps(self, limit: int) -> tuple[int, int]:
        """(claims a lane may hold, claims one tenant may hold in it) for a lane of ``limit``."""
        lane_cap = max(1, self.lane_factor * limit)
        return lane_cap, max(limit, lane_cap // 2, 1)

    def take(self, action: str | None, tenant: str | None) -> Slot | None:
        """A slot for a claim of ``action`` for ``tenant``; None when this processor must not claim it.

        A candidate whose action is unknown here (an old stream record) counts only
        against the processor's total.
        """
        if self.held >= self.max_claims:
            return None
        lane, tenant_key = "", tenant or ""
        if action:
            lane, limit = self.lane_of(action)
            lane_cap, tenant_cap = self.caps(limit)
            if self._lanes[lane] >= lane_cap or self._tenants[(lane, tenant_key)] >= tenant_cap:
                return None
        self.held += 1
        self._lanes[lane] += 1
        self._tenants[(lane, tenant_key)] += 1
        return Slot(self, lane, tenant_key)

    def room(self, action: str | None, tenant: str | None) -> bool:
        """Whether :meth:`take` would give a slot now (takes none)."""
        slot = self.take(action, tenant)
        if slot is None:
            return False
        slot.release()
        return True

    def lane_held(self, action: str) -> int:
        return self._lanes[self.lane_of(action)[0]]

    def tenant_held(self, action: str, tenant: str) -> int:
        return self._tenants[(self.lane_of(action)[0], tenant)]

    def _give_back(self, slot: Slot) -> None:
        self.held -= 1
        self._lanes[slot.lane] -= 1
        if not self._lanes[slot.lane]:
            del self._lanes[slot.lane]
        key = (slot.lane, slot.tenant)
        self._tenants[key] -= 1
        if not self._tenants[key]:
            del self._tenants[key]
