"""Reading the processors' /metrics: which pod, which samples, max of backlogs, sum of in-flight."""

from __future__ import annotations

from streamer_operator.scrape import parse, pod_target, reading

PAGE_A = """# TYPE streamer_processor_backlog gauge
streamer_processor_backlog{handler="busy",queue="p-requests"} 7.0
streamer_processor_backlog{handler="other",queue="p-requests"} 2.0
streamer_processor_backlog{handler="busy",queue="p-requests.ns.busy"} 99.0
# TYPE streamer_processor_oldest_pending_seconds gauge
streamer_processor_oldest_pending_seconds{handler="busy",queue="p-requests"} 3.5
# TYPE streamer_processor_in_flight gauge
streamer_processor_in_flight{handler="busy",queue="p-requests"} 2.0
# TYPE streamer_processor_leases_held gauge
streamer_processor_leases_held 4.0
"""
PAGE_B = """streamer_processor_backlog{handler="busy",queue="p-requests"} 6.0
streamer_processor_oldest_pending_seconds{handler="busy",queue="p-requests"} 4.0
streamer_processor_in_flight{handler="busy",queue="p-requests"} 3.0
"""


def test_backlog_is_the_highest_reading_and_in_flight_the_sum() -> None:
    pages = [parse(PAGE_A), parse(PAGE_B)]
    got = reading(pages, queue="p-requests", handler="busy")
    assert got is not None
    assert (got.pending, got.in_flight, got.oldest_seconds, got.source) == (7, 5, 4.0, "processors")


def test_a_handler_without_series_in_a_reported_queue_has_no_backlog() -> None:
    got = reading([parse(PAGE_A)], queue="p-requests", handler="idle")
    assert got is not None and (got.pending, got.in_flight) == (0, 0)


def test_no_processor_of_the_queue_means_no_reading() -> None:
    assert reading([parse(PAGE_A)], queue="p-requests.ns.other", handler="busy") is None
    assert reading([], queue="p-requests", handler="busy") is None


def test_pod_target_uses_the_http_port_of_a_running_pod() -> None:
    pod = {
        "spec": {
            "containers": [
                {"ports": [{"name": "grpc", "containerPort": 50051}, {"name": "http", "containerPort": 9191}]}
            ]
        },
        "status": {"phase": "Running", "podIP": "10.0.0.7"},
    }
    assert pod_target(pod) == "10.0.0.7:9191"
    assert pod_target({**pod, "status": {"phase": "Pending", "podIP": "10.0.0.7"}}) is None
    assert pod_target({"status": {"phase": "Running"}}) is None
    assert pod_target({"status": {"phase": "Running", "podIP": "10.0.0.8"}}) == "10.0.0.8:9090"
