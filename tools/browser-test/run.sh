#!/usr/bin/env bash
# Browser end-to-end test of the web demo: `gar serve` (tiny GAR + tiny SAM, loopback, free port)
# driven by playwright-core in headless Debian chromium (no browser download).
# Needs: node + npm, the npm registry, chromium (`apt-get update && apt-get install -y chromium`).
# Writes target/browser-test/screenshot.png. Exit 0 = pass.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib-serve.sh"
data=$(shared_data)
if [ -z "$data" ]; then echo "SKIP: ../shared/data is absent"; exit 0; fi
chromium_bin=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium_bin" ]; then echo "chromium is missing: apt-get install -y chromium"; exit 1; fi

(cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
out="$ROOT/target/browser-test"
mkdir -p "$out"
start_gar_serve "$out/serve.log" --sam "$ROOT/fixtures/sam/tiny"
CHROMIUM="$chromium_bin" node "$here/e2e.mjs" "$GAR_URL" "$data/assets/demo_image_1.png" "$out/screenshot.png"
