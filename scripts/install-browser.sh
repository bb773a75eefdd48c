#!/usr/bin/env bash
# Idempotently install Debian's chromium for the browser tests (tests/e2e/test_browser_demo.py,
# driven by Playwright for Python with executable_path=/usr/bin/chromium; Playwright never
# downloads a browser of its own here). Set STREAMER_CHROMIUM to use another binary.
set -euo pipefail
if [ -n "${STREAMER_CHROMIUM:-}" ] && [ -x "${STREAMER_CHROMIUM}" ]; then
  echo "install-browser: ok (${STREAMER_CHROMIUM})"; exit 0
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "install-browser: chromium not found; installing Debian's chromium" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get; install chromium yourself (or set STREAMER_CHROMIUM)" >&2; exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=600 chromium >/dev/null
fi
echo "install-browser: ok ($(chromium --version 2>/dev/null || echo chromium))"
