#!/usr/bin/env bash
# The official OpenAI Python SDK, unchanged, gets a streamed answer from `gar serve` (tiny
# checkpoint, loopback). Installs the SDK into a venv under target/. Exit 0 = pass.
# Needs: python3 with venv (Debian: python3-venv), PyPI access, cargo.
set -euo pipefail
source "$(dirname "$0")/../lib-serve.sh"
data=$(shared_data)
if [ -z "$data" ]; then echo "SKIP: ../shared/data is absent"; exit 0; fi

venv="$ROOT/target/openai-sdk-venv"
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install -q --disable-pip-version-check "openai==3.57.0"

mkdir -p "$ROOT/target/openai-sdk-test"
start_gar_serve "$ROOT/target/openai-sdk-test/serve.log"
"$venv/bin/python" "$(dirname "$0")/stream.py" "$GAR_URL" "$data/assets/demo_image_1.png" "$data/assets/demo_mask_1.png"
