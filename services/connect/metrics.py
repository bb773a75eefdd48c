"""The connect service's Prometheus metrics (names are part of the dashboards' contract)."""

from __future__ import annotations

from streamer.metrics import counter, gauge, histogram

#: Buckets for how long a socket stays open: from a failed handshake to a work day.
DURATION_BUCKETS = (0.1, 1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600)

active_connections = gauge("streamer_connect_active_connections", "WebSockets open on this pod.")
connections_total = counter("streamer_connect_connections_total", "WebSockets accepted (upgraded).")
disconnects_total = counter(
    "streamer_connect_disconnects_total",
    "WebSockets closed, by reason (client, heartbeat, rate_limit, too_large, slow_reader, "
    "disconnect, shutdown, error).",
    ["reason"],
)
auth_failures_total = counter(
    "streamer_connect_auth_failures_total", "Upgrades refused by the JWT check, by reason.", ["reason"]
)
messages_in_total = counter("streamer_connect_messages_in_total", "Data frames received from clients.")
messages_out_total = counter("streamer_connect_messages_out_total", "Frames written to clients.")
bytes_in_total = counter("streamer_connect_bytes_in_total", "Bytes of data frames received from clients.")
bytes_out_total = counter("streamer_connect_bytes_out_total", "Bytes of frames written to clients.")
send_failures_total = counter(
    "streamer_connect_send_failures_total",
    "Frames that could not be sent, by reason (queue_full, closed, error).",
    ["reason"],
)
connection_duration_seconds = histogram(
    "streamer_connect_connection_duration_seconds",
    "How long WebSockets stayed open.",
    buckets=DURATION_BUCKETS,
)
rejected_frames_total = counter(
    "streamer_connect_rejected_frames_total",
    "Client frames refused, by error code (or 1009 when the socket was closed for size).",
    ["code"],
)
route_duration_seconds = histogram(
    "streamer_connect_route_duration_seconds",
    "Route calls to the router, by outcome (ok, unavailable).",
    ["outcome"],
)
