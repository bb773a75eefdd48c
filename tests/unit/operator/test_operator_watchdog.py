"""WatchHealth: a watch request unanswered for too long makes /healthz name it."""

from __future__ import annotations

from streamer_operator.watchdog import WatchHealth, _resource

from streamer.metrics import Health


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_request_unanswered_past_the_limit_is_a_problem_until_answered() -> None:
    clock = Clock()
    watches = WatchHealth(stale_seconds=5, clock=clock)
    health = Health()
    health.live_checks.append(watches.problem)
    token = watches.started("streamerhandlers")
    clock.now += 5
    assert health.problem() is None  # at the limit: still retrying within it
    clock.now += 1
    assert health.problem() == "the watch of streamerhandlers has had no answer from the API server for 6s"
    watches.finished(token, answered=True)
    assert health.problem() is None and watches.answered == 1


def test_a_failed_request_is_forgotten_too_and_dead_wins() -> None:
    clock = Clock()
    watches = WatchHealth(stale_seconds=1, clock=clock)
    token = watches.started("deployments")
    clock.now += 10
    watches.finished(token, answered=False)
    assert watches.problem() is None and watches.answered == 0
    health = Health()
    health.alive = False
    assert health.problem() == "dead"


def test_resource_of_a_url() -> None:
    url = "http://127.0.0.1:1/apis/streamer.dev/v1alpha1/streamerhandlers?watch=true&timeoutSeconds=300"
    assert _resource(url) == "streamerhandlers"
