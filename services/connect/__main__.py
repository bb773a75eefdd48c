"""``python -m services.connect``: the same as ``streamer connect``."""

import sys

from services.connect.main import run

sys.exit(run())
