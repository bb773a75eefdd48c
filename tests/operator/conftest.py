"""Fixtures of the operator tests; the harness itself is in operator_harness.py."""

from operator_harness import api, cluster, operator  # noqa: F401  (pytest fixtures)
