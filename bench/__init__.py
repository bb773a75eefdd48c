"""Benchmarks: Streamer beside the physical floor and the usual Python stack, in one run.

``python -m bench.run`` (``make bench``); ``--quick`` for the smoke test. See
docs/benchmarks.md for what is measured and the latest figures.
"""
