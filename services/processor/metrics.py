"""The processor's Prometheus metrics (``streamer_processor_*``).

Registered once per process (the helpers in :mod:`streamer.metrics` return the
existing metric on a second import), so two processors in one test process share
them; tests compare before/after values rather than absolute ones.
"""

from __future__ import annotations

from streamer.metrics import counter, gauge, histogram

RECORDS_READ = counter(
    "streamer_processor_records_read_total", "Stream records read from the requests table."
)
REQUESTS = counter(
    "streamer_processor_requests_total",
    "Requests finished by this processor, by action and outcome "
    "(completed, failed, timed_out, retried, cancelled, lost, released).",
    ["action", "outcome"],
)
QUEUE_WAIT = histogram(
    "streamer_processor_queue_wait_seconds",
    "Time from claim to the handler call starting (time spent behind the handler's bulkhead).",
)
PROCESSING_DURATION = histogram(
    "streamer_processor_processing_duration_seconds",
    "Duration of one handler attempt, from Invoke to its last event.",
    ["action"],
)
PROGRESS_UPDATES = counter(
    "streamer_processor_progress_updates_total",
    "Progress events from handlers: sent, coalesced (superseded before sending), failed (not delivered).",
    ["result"],
)
FIRST_PROGRESS = histogram(
    "streamer_processor_first_progress_seconds",
    "Time from a request being accepted (created_at) to its first progress frame being sent "
    "(first attempt only; the time-to-first-progress SLO, docs/slo.md).",
)
LEASES_HELD = gauge("streamer_processor_leases_held", "Shard leases held by this process.")
STREAM_LAG = gauge(
    "streamer_processor_stream_lag_seconds",
    "Age of the newest stream record read (0 when every reader is caught up).",
)
CLAIMS = counter(
    "streamer_processor_claims_total",
    "Claim attempts: won, refused (someone else has it or it is no longer PENDING), deferred "
    "(scheduled for its not_before), held (offered to a processor directly: claimed from the stream "
    "only if no claim shows up within the offer grace), error, lapsed (a held claim ran out "
    "unrenewed; its job was stopped), full (not attempted: this processor holds as many claims as "
    "it may, for the processor, the handler lane or the tenant; left PENDING for others).",
    ["result"],
)
SWEEPER_RECOVERED = counter(
    "streamer_processor_sweeper_recovered_total",
    "Requests the sweeper recovered: expired_claim (owner died) or pending (stream record missed).",
    ["kind"],
)
OFFERS = counter(
    "streamer_processor_offers_total",
    "Direct-dispatch offers from the router, by outcome: accepted (claimed here), saturated "
    "(handler lane full: refused), draining, not_claimed (claim refused or failed).",
    ["outcome"],
)
LEASE_CHANGES = counter(
    "streamer_processor_lease_changes_total",
    "Shard lease changes of this process: taken (a free or expired lease), stolen (from a busy "
    "worker, to balance), lost (renewal refused: another worker has it), released.",
    ["event"],
)
MEMBERS = gauge(
    "streamer_processor_members",
    "Live processors this one sees (handlers' concurrency limits are shared among them).",
)
