"""Children of ``streamer dev`` die with it, even when it is killed with SIGKILL.

The launcher puts its pid in ``STREAMER_DIE_WITH_PARENT``; the child calls
:func:`die_with_parent_from_env` first thing, which asks Linux to SIGTERM it when the
launcher goes (``PR_SET_PDEATHSIG``) and exits at once if the launcher is already gone.

This runs in the child *after* exec on purpose: a ``preexec_fn`` runs Python between
fork and exec, which crashes children of a process that uses gRPC (its threads hold
locks and file descriptors at fork time; found by the chaos tests).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

ENV = "STREAMER_DIE_WITH_PARENT"
_PR_SET_PDEATHSIG = 1


def die_with_parent_from_env() -> None:
    """Arm the parent-death signal when the launcher asked for it (Linux only; else a no-op)."""
    raw = os.environ.pop(ENV, None)
    if not raw or not sys.platform.startswith("linux"):
        return
    try:
        parent = int(raw)
        libc = ctypes.CDLL(None, use_errno=True)
    except (ValueError, OSError):
        return
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the launcher died before we armed the signal
        os._exit(1)
