"""Stream leasing: who reads which shard of the requests table's stream, and the readers.

:mod:`.shards` plans leases (pure: lineage, balance, take-overs); :mod:`.coordinator`
holds the leases and runs one reader per held shard. The rest of the processor sees
one seam: every batch of records goes to the ``on_records`` callback it is given
(:meth:`services.processor.path.RequestPath.on_records`), and a shard's position is
noted (for the next lease renewal to save) only after that callback returned.
"""

from services.processor.stream.coordinator import LeaseCoordinator, PollPolicy

__all__ = ["LeaseCoordinator", "PollPolicy"]
