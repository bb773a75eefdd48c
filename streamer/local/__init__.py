"""Running Streamer's dependencies on one machine (tests, ``streamer dev``, benchmarks)."""
