"""Write the chart's Grafana dashboards (charts/streamer/dashboards/*.json) as code.

Built with grafana-foundation-sdk (Grafana Labs' typed builders, generated from Grafana's own
schemas and released with Grafana; grafanalib has had no release since January 2024). A test
fails when the JSON files are stale (``python scripts/gendashboards.py`` rewrites them), another
checks every query against the metrics the services really export, and
``tests/integration/test_prometheus_dashboards.py`` runs every query on a real Prometheus
scraping a local stack under load.

Every query is scoped by the ``$namespace`` variable; the handler dashboard also by
``$action``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = ROOT / "charts" / "streamer" / "dashboards"

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
NS = 'namespace=~"$namespace"'
RATE = "[$__rate_interval]"
INVOCATIONS = "streamer_handler_invocations_total"
SERVER_ERRORS = 'outcome=~"INTERNAL_ERROR|SERVICE_UNAVAILABLE|TIMEOUT|PROCESSING_FAILED"'


@dataclasses.dataclass
class Q:
    """One query of a panel: PromQL and its legend."""

    expr: str
    legend: str = ""


@dataclasses.dataclass
class P:
    """One panel: a time series (default) or a stat."""

    title: str
    queries: list[Q]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 12
    height: int = 8


def rate(metric: str, labels: str = "", by: str = "") -> str:
    selector = f"{{{NS}{',' + labels if labels else ''}}}"
    agg = f"sum by ({by})" if by else "sum"
    return f"{agg} (rate({metric}{selector}{RATE}))"


def share(metric: str, bad: str, by: str, labels: str = "") -> str:
    """The share of ``bad`` events per ``by``: 0 (not "no data") while nothing is bad."""
    both = f"{labels},{bad}" if labels else bad
    total = rate(metric, labels, by=by)
    return f"({rate(metric, both, by=by)} or {total} * 0) / clamp_min({total}, 1e-9)"


def quantile(q: float, metric: str, labels: str = "", by: str = "") -> str:
    selector = f"{{{NS}{',' + labels if labels else ''}}}"
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q:g}, sum by ({group}) (rate({metric}_bucket{selector}{RATE})))"


def _panel(spec: P, panel_id: int) -> Any:
    builder: Any = stat.Panel() if spec.kind == "stat" else timeseries.Panel()
    builder = (
        builder.id(panel_id)
        .title(spec.title)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(spec.height)
    )
    if spec.description:
        builder = builder.description(spec.description)
    for index, query in enumerate(spec.queries):
        target = prometheus.Dataquery().expr(query.expr).ref_id(chr(ord("A") + index))
        if query.legend:
            target = target.legend_format(query.legend)
        builder = builder.with_target(target)
    return builder


def _variable_query(name: str, label: str, metric: str, *, all_value: str = ".*") -> Any:
    return (
        gd.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, {name})")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(all_value)
    )


def board(
    uid: str,
    title: str,
    description: str,
    panels: list[P],
    *,
    variables: list[Any] | None = None,
    namespaces_of: str = "streamer_processor_leases_held",
) -> Any:
    builder = (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["streamer", "generated"])
        .editable()
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .with_variable(gd.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(_variable_query("namespace", "Namespace", namespaces_of))
    )
    for variable in variables or []:
        builder = builder.with_variable(variable)
    for index, spec in enumerate(panels, start=1):
        builder = builder.with_panel(_panel(spec, index))
    return builder.build()


def stats(*specs: P) -> list[P]:
    width = 24 // len(specs)
    return [dataclasses.replace(s, kind="stat", width=width, height=5) for s in specs]


# ---------------------------------------------------------------------------- the dashboards


def overview() -> Any:
    burn = (
        f"sum by (slo) (streamer:slo_errors:ratio_rate1h{{{NS}}})"
        f" / on (slo) (1 - max by (slo) (streamer:slo:objective{{{NS}}}))"
    )
    return board(
        "streamer-overview",
        "Streamer / Overview",
        "Is Streamer meeting its objectives (docs/slo.md), and where to look if not.",
        [
            *stats(
                P("Open WebSockets", [Q(f"sum(streamer_connect_active_connections{{{NS}}})")]),
                P("Requests routed /s", [Q(rate("streamer_router_requests_total"))], unit="reqps"),
                P(
                    "Sync availability (1 h)",
                    [Q(f'1 - max(streamer:slo_errors:ratio_rate1h{{{NS},slo="sync-availability"}})')],
                    unit="percentunit",
                ),
                P(
                    "Async completion (1 h)",
                    [Q(f'1 - max(streamer:slo_errors:ratio_rate1h{{{NS},slo="async-completion"}})')],
                    unit="percentunit",
                ),
            ),
            P(
                "Error budget burn rate (1 h)",
                [Q(burn, "{{slo}}")],
                description="1 spends the 30-day budget in 30 days; the page fires at 14.4 (1 h and 5 min).",
            ),
            P(
                "Error ratio by SLO (5 min)",
                [Q(f"max by (slo) (streamer:slo_errors:ratio_rate5m{{{NS}}})", "{{slo}}")],
                unit="percentunit",
            ),
            P(
                "Routed requests by outcome",
                [Q(rate("streamer_router_requests_total", by="outcome"), "{{outcome}}")],
                unit="reqps",
            ),
            P(
                "Async requests by outcome",
                [Q(rate("streamer_processor_requests_total", by="outcome"), "{{outcome}}")],
                unit="ops",
            ),
            P(
                "Connections opened and closed",
                [
                    Q(rate("streamer_connect_connections_total"), "opened"),
                    Q(rate("streamer_connect_disconnects_total", by="reason"), "closed: {{reason}}"),
                ],
                unit="ops",
            ),
            P(
                "Delivery to connections",
                [
                    Q(rate("streamer_delivery_sends_total", by="outcome"), "{{outcome}}"),
                    Q(rate("streamer_delivery_final_dropped_total"), "final frames dropped"),
                ],
                unit="ops",
            ),
            P(
                "Stream lag (iterator age)",
                [Q(f"max(streamer_processor_stream_lag_seconds{{{NS}}})", "lag")],
                unit="s",
            ),
            P(
                "First progress p50 / p95",
                [
                    Q(quantile(0.5, "streamer_processor_first_progress_seconds"), "p50"),
                    Q(quantile(0.95, "streamer_processor_first_progress_seconds"), "p95"),
                ],
                unit="s",
            ),
        ],
    )


def connect() -> Any:
    return board(
        "streamer-connect",
        "Streamer / Connect",
        "The WebSocket front door: sockets, tokens, frames, and the calls to the router.",
        [
            P(
                "Open WebSockets by instance",
                [Q(f"sum by (instance) (streamer_connect_active_connections{{{NS}}})", "{{instance}}")],
            ),
            P(
                "Closes by reason",
                [Q(rate("streamer_connect_disconnects_total", by="reason"), "{{reason}}")],
                unit="ops",
                description=(
                    "heartbeat: idle sockets dropped; rate_limit, too_large: abusive clients; "
                    "slow_reader: full send queues."
                ),
            ),
            P(
                "Refused upgrades",
                [Q(rate("streamer_connect_auth_failures_total", by="reason"), "{{reason}}")],
                unit="ops",
            ),
            P(
                "JWKS fetches",
                [Q(rate("streamer_jwks_fetches_total", by="result"), "{{result}}")],
                unit="ops",
            ),
            P(
                "Frames in and out",
                [
                    Q(rate("streamer_connect_messages_in_total"), "in"),
                    Q(rate("streamer_connect_messages_out_total"), "out"),
                ],
                unit="ops",
            ),
            P(
                "Bytes in and out",
                [
                    Q(rate("streamer_connect_bytes_in_total"), "in"),
                    Q(rate("streamer_connect_bytes_out_total"), "out"),
                ],
                unit="Bps",
            ),
            P(
                "Send failures and rejected frames",
                [
                    Q(rate("streamer_connect_send_failures_total", by="reason"), "send failed: {{reason}}"),
                    Q(rate("streamer_connect_rejected_frames_total", by="code"), "rejected: {{code}}"),
                ],
                unit="ops",
            ),
            P(
                "Route calls to the router p50 / p99",
                [
                    Q(
                        quantile(0.5, "streamer_connect_route_duration_seconds", by="outcome"),
                        "p50 {{outcome}}",
                    ),
                    Q(
                        quantile(0.99, "streamer_connect_route_duration_seconds", by="outcome"),
                        "p99 {{outcome}}",
                    ),
                ],
                unit="s",
            ),
            P(
                "Connection lifetime p50 / p95",
                [
                    Q(quantile(0.5, "streamer_connect_connection_duration_seconds"), "p50"),
                    Q(quantile(0.95, "streamer_connect_connection_duration_seconds"), "p95"),
                ],
                unit="s",
                width=24,
            ),
        ],
    )


def router() -> Any:
    return board(
        "streamer-router",
        "Streamer / Router",
        "Every client message: lookups, permissions, payload checks, sync calls and queued async requests.",
        [
            P(
                "Requests by mode",
                [Q(rate("streamer_router_requests_total", by="mode"), "{{mode}}")],
                unit="reqps",
            ),
            P(
                "Sync outcomes",
                [Q(rate("streamer_router_requests_total", 'mode="sync"', by="outcome"), "{{outcome}}")],
                unit="reqps",
            ),
            P(
                "Server errors by action",
                [Q(share("streamer_router_requests_total", SERVER_ERRORS, by="action"), "{{action}}")],
                unit="percentunit",
            ),
            P(
                "Latency by mode p50 / p99",
                [
                    Q(quantile(0.5, "streamer_router_request_duration_seconds", by="mode"), "p50 {{mode}}"),
                    Q(quantile(0.99, "streamer_router_request_duration_seconds", by="mode"), "p99 {{mode}}"),
                ],
                unit="s",
                description=(
                    "sync includes the handler's own time; async and system actions should take milliseconds."
                ),
            ),
            P(
                "Requests by action",
                [Q(rate("streamer_router_requests_total", by="action"), "{{action}}")],
                unit="reqps",
            ),
            P(
                "Publish calls",
                [Q(rate("streamer_router_publish_total", by="target, outcome"), "{{target}} {{outcome}}")],
                unit="ops",
            ),
        ],
    )


def processor() -> Any:
    return board(
        "streamer-processor",
        "Streamer / Processor",
        "Async requests: the stream consumer, direct dispatch, claims, handler slots, progress and delivery.",
        [
            *stats(
                P("Shard leases held", [Q(f"sum(streamer_processor_leases_held{{{NS}}})")]),
                P("Stream lag", [Q(f"max(streamer_processor_stream_lag_seconds{{{NS}}})")], unit="s"),
                P("Async requests finished /s", [Q(rate("streamer_processor_requests_total"))], unit="ops"),
            ),
            P(
                "Requests by outcome",
                [Q(rate("streamer_processor_requests_total", by="outcome"), "{{outcome}}")],
                unit="ops",
            ),
            P(
                "Failures by action",
                [
                    Q(
                        rate("streamer_processor_requests_total", 'outcome=~"failed|timed_out"', by="action")
                        + f" or {rate('streamer_processor_requests_total', by='action')} * 0",
                        "{{action}}",
                    )
                ],
                unit="ops",
            ),
            P(
                "Stream lag (iterator age) by instance",
                [Q(f"max by (instance) (streamer_processor_stream_lag_seconds{{{NS}}})", "{{instance}}")],
                unit="s",
            ),
            P(
                "Leases by instance",
                [Q(f"sum by (instance) (streamer_processor_leases_held{{{NS}}})", "{{instance}}")],
            ),
            P(
                "Lease changes",
                [Q(rate("streamer_processor_lease_changes_total", by="event"), "{{event}}")],
                unit="ops",
                description=(
                    "stolen and lost are churn (StreamerLeaseChurn); taken happens at start and after "
                    "shard splits."
                ),
            ),
            P("Records read", [Q(rate("streamer_processor_records_read_total"), "records")], unit="ops"),
            P(
                "Direct-dispatch offers",
                [Q(rate("streamer_processor_offers_total", by="outcome"), "{{outcome}}")],
                unit="ops",
            ),
            P("Claims", [Q(rate("streamer_processor_claims_total", by="result"), "{{result}}")], unit="ops"),
            P(
                "Queue wait p50 / p95",
                [
                    Q(quantile(0.5, "streamer_processor_queue_wait_seconds"), "p50"),
                    Q(quantile(0.95, "streamer_processor_queue_wait_seconds"), "p95"),
                ],
                unit="s",
                description="Time a claimed request waits for a free slot of its handler (spec.concurrency).",
            ),
            P(
                "Handler time by action p95",
                [
                    Q(
                        quantile(0.95, "streamer_processor_processing_duration_seconds", by="action"),
                        "{{action}}",
                    )
                ],
                unit="s",
            ),
            P(
                "First progress within 5 s",
                [
                    Q(
                        rate("streamer_processor_first_progress_seconds_bucket", 'le="5.0"')
                        + f" / clamp_min({rate('streamer_processor_first_progress_seconds_count')}, 1e-9)",
                        "within 5 s",
                    )
                ],
                unit="percentunit",
            ),
            P(
                "Progress updates",
                [Q(rate("streamer_processor_progress_updates_total", by="result"), "{{result}}")],
                unit="ops",
            ),
            P(
                "Delivery to connections",
                [
                    Q(rate("streamer_delivery_sends_total", by="outcome"), "{{outcome}}"),
                    Q(rate("streamer_delivery_breaker_open_total"), "breakers opened"),
                    Q(rate("streamer_delivery_final_dropped_total"), "final frames dropped"),
                ],
                unit="ops",
            ),
            P(
                "Sweeper recoveries",
                [Q(rate("streamer_processor_sweeper_recovered_total", by="kind"), "{{kind}}")],
                unit="ops",
            ),
        ],
    )


def handlers() -> Any:
    action = 'action=~"$action"'
    return board(
        "streamer-handlers",
        "Streamer / Handlers",
        "Handler pods (the SDK's metrics), per action.",
        [
            P(
                "Invocations by outcome",
                [
                    Q(
                        rate("streamer_handler_invocations_total", action, by="action, outcome"),
                        "{{action}} {{outcome}}",
                    )
                ],
                unit="ops",
            ),
            P(
                "Error share by action",
                [Q(share(INVOCATIONS, 'outcome!="ok"', by="action", labels=action), "{{action}}")],
                unit="percentunit",
            ),
            P(
                "Duration p50 / p95",
                [
                    Q(
                        quantile(0.5, "streamer_handler_duration_seconds", action, by="action"),
                        "p50 {{action}}",
                    ),
                    Q(
                        quantile(0.95, "streamer_handler_duration_seconds", action, by="action"),
                        "p95 {{action}}",
                    ),
                ],
                unit="s",
            ),
            P(
                "In flight",
                [Q(f"sum by (action) (streamer_handler_in_flight{{{NS},{action}}})", "{{action}}")],
            ),
        ],
        variables=[_variable_query("action", "Action", "streamer_handler_invocations_total")],
        namespaces_of="streamer_handler_invocations_total",
    )


def operator() -> Any:
    return board(
        "streamer-operator",
        "Streamer / Operator",
        "The StreamerHandler operator: readiness of every handler, reconciles and the children it writes.",
        [
            *stats(
                P("Handlers Ready", [Q(f"sum(streamer_operator_handler_ready{{{NS}}})")]),
                P(
                    "Handlers not Ready",
                    [Q(f"count(streamer_operator_handler_ready{{{NS}}} == 0) or vector(0)")],
                ),
            ),
            P(
                "Ready by handler",
                [Q(f"max by (handler) (streamer_operator_handler_ready{{{NS}}})", "{{handler}}")],
                description="1 Ready, 0 not (StreamerHandlerNotReady after 10 minutes).",
            ),
            P(
                "Reconciles by result",
                [
                    Q(
                        rate("streamer_operator_reconciles_total", by="trigger, result"),
                        "{{trigger}} {{result}}",
                    )
                ],
                unit="ops",
            ),
            P(
                "Reconcile duration p50 / p95",
                [
                    Q(quantile(0.5, "streamer_operator_reconcile_duration_seconds"), "p50"),
                    Q(quantile(0.95, "streamer_operator_reconcile_duration_seconds"), "p95"),
                ],
                unit="s",
            ),
            P(
                "Child writes",
                [Q(rate("streamer_operator_child_writes_total", by="kind, op"), "{{kind}} {{op}}")],
                unit="ops",
            ),
        ],
    )


DASHBOARDS = {
    "streamer-overview": overview,
    "streamer-connect": connect,
    "streamer-router": router,
    "streamer-processor": processor,
    "streamer-handlers": handlers,
    "streamer-operator": operator,
}


def _without_nulls(value: Any) -> Any:
    """The SDK writes unset fields as null (``"options": null``); Grafana wants them absent."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    out = {}
    for name, build in DASHBOARDS.items():
        model = _without_nulls(json.loads(encoder.encode(build())))
        out[f"{name}.json"] = json.dumps(model, indent=2, sort_keys=True) + "\n"
    return out


if __name__ == "__main__":
    for old in TARGET.glob("*.json"):
        old.unlink()
    for file_name, text in render().items():
        (TARGET / file_name).write_text(text)
        print(f"wrote {(TARGET / file_name).relative_to(ROOT)}")
