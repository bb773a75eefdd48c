"""Shares of a cluster-wide limit: they add up to the limit, and never drop to zero."""

from __future__ import annotations

import pytest

from services.processor.membership import Membership, share_of


@pytest.mark.parametrize("members", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("limit", [8, 9, 64, 100])
def test_shares_add_up_to_the_limit(limit: int, members: int) -> None:
    shares = [share_of(limit, rank=rank, members=members) for rank in range(members)]
    assert sum(shares) == limit
    assert max(shares) - min(shares) <= 1


def test_a_limit_below_the_processor_count_gives_everyone_one() -> None:
    assert [share_of(2, rank=r, members=3) for r in range(3)] == [1, 1, 1]


def test_remainders_rotate_per_handler_and_still_add_up() -> None:
    members = ["p-a", "p-b", "p-c"]
    views = []
    for me in members:
        m = Membership(leases=None, worker_id=me, lease_seconds=10)  # type: ignore[arg-type]
        m.live = list(members)
        views.append(m)
    for lane in ("ns/reports", "ns/echo", "ns/other"):
        assert sum(v.share(10, lane) for v in views) == 10
    extra_holders = {
        lane: [v.worker_id for v in views if v.share(10, lane) == 4] for lane in ("a/x", "b/y", "c/z")
    }
    assert all(len(holders) == 1 for holders in extra_holders.values())


def test_per_processor_scope_gives_the_whole_limit() -> None:
    m = Membership(leases=None, worker_id="p", lease_seconds=10, enabled=False)  # type: ignore[arg-type]
    m.live = ["p", "q", "r"]
    assert m.share(9, "ns/h") == 9
