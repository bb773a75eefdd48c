#!/usr/bin/env bash
# Idempotently install the JS client's build and test tools (typescript, @asyncapi/specs) into
# clients/js/node_modules (git-ignored), pinned by clients/js/package-lock.json. The client
# itself has no runtime dependencies.
set -euo pipefail
cd "$(dirname "$0")/../clients/js"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "install-js: node and npm (Node >= 20) are needed" >&2; exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "install-js: Node >= 20 is needed (found $(node --version))" >&2; exit 1
fi
if ! cmp -s package-lock.json node_modules/.streamer-installed-lock 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.streamer-installed-lock
fi
echo "install-js: ok (typescript $(node node_modules/typescript/bin/tsc --version | cut -d' ' -f2), node $(node --version))"
