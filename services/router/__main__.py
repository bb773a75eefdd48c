"""``python -m services.router``: the same as ``streamer router``."""

from __future__ import annotations

from services.router.main import run

raise SystemExit(run())
