#!/usr/bin/env bash
# Idempotently install Debian's `prometheus` package for its `prometheus` and `promtool`
# binaries (the monitoring tests run promtool and a throw-away Prometheus of their own).
# The tests never use the packaged service: if the package started it, it is stopped and
# disabled again, so CI does not keep a daemon scraping localhost:9090.
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  echo "install-prometheus: ok ($(promtool --version 2>&1 | head -1))"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-prometheus: no apt-get; install prometheus (with promtool) yourself" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "install-prometheus: installing Debian's prometheus package (binaries only)" >&2
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
  --no-install-recommends prometheus >/dev/null
# The package's postinst may have started (and enabled) the daemon: the tests start their own.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
elif command -v service >/dev/null 2>&1; then
  $SUDO service prometheus stop >/dev/null 2>&1 || true
  command -v update-rc.d >/dev/null 2>&1 && $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
echo "install-prometheus: ok ($(promtool --version 2>&1 | head -1))"
