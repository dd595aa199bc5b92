# Shared by the tool scripts: build `gar`, start `gar serve` on a free loopback port, stop it on exit.
# Usage: source tools/lib-serve.sh; start_gar_serve LOGFILE [extra serve args...]; echo "$GAR_URL"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

build_gar() {
  if [ -n "${GAR_BIN:-}" ]; then return; fi
  (cd "$ROOT" && cargo build -q -p gar-cli)
  GAR_BIN="$ROOT/target/debug/gar"
}

start_gar_serve() {
  local log=$1; shift
  build_gar
  HF_HUB_OFFLINE=1 "$GAR_BIN" serve --model "$ROOT/fixtures/checkpoints/tiny-pe-l" \
    --host 127.0.0.1 --port 0 "$@" >"$log" 2>&1 &
  GAR_PID=$!
  trap 'kill $GAR_PID 2>/dev/null || true; wait $GAR_PID 2>/dev/null || true' EXIT
  for _ in $(seq 1 300); do
    GAR_URL=$(sed -n 's/^gar serve: listening on \(http:[^ ]*\)$/\1/p' "$log" | head -n1)
    if [ -n "$GAR_URL" ]; then return 0; fi
    if ! kill -0 "$GAR_PID" 2>/dev/null; then echo "gar serve exited:"; cat "$log"; return 1; fi
    sleep 0.2
  done
  echo "gar serve did not start:"; cat "$log"; return 1
}

# ../shared/data beside the checkout, where the demo images live.
shared_data() {
  local d="$ROOT/../shared/data"
  if [ -d "$d/assets" ]; then echo "$d"; fi
}
