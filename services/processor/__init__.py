"""The processor service: runs async requests, offered directly or read from the requests stream.

Modules: :mod:`.path` (one request's way through: records → claim → bulkhead → handler
call and ending), :mod:`.stream` (stream leasing: shard planning, leases, readers,
behind one ``on_records`` seam), :mod:`.offers` (``Processor.Offer``), :mod:`.claims`
(claims and their renewal), :mod:`.dispatch` (per-handler bulkheads, priority),
:mod:`.invoke` (the handler call and how it ended), :mod:`.progress` (rate-limited,
coalesced progress), :mod:`.fanout` (connection + subscribers), :mod:`.membership`
(cluster-wide concurrency shares), :mod:`.sweeper`, :mod:`.service` (the wiring),
:mod:`.main` (``streamer processor``).
"""
