"""The processor service: consumes the requests table's DynamoDB Stream and runs async requests.

Modules: :mod:`.shards` (pure lease/lineage planning), :mod:`.coordinator` (leases
and shard readers), :mod:`.claims` (records → claims, claim renewal),
:mod:`.dispatch` (per-handler bulkheads, priority), :mod:`.invoke` (the handler
call and its outcome), :mod:`.progress` (rate-limited, coalesced progress),
:mod:`.fanout` (connection + subscribers), :mod:`.sweeper`, :mod:`.service` (the
wiring), :mod:`.main` (``streamer processor``).
"""
