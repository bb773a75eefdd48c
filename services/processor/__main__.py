"""``python -m services.processor``: the same as ``streamer processor``."""

import sys

from services.processor.main import run

sys.exit(run())
