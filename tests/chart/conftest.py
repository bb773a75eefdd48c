"""Fixtures of the chart tests; the helpers themselves are in chart_render.py."""

from chart_render import helm, render  # noqa: F401  (pytest fixtures)
