#!/bin/bash
# Build `gar` with the opt-in `mkl` feature: candle's CPU matmuls (and some element-wise maps) go through Intel
# oneMKL instead of the pure-Rust `gemm` crate (≈3× the f32 GEMM throughput on the 2-core AVX2 machine of
# docs/performance.md). The default build never needs MKL.
#
# MKL comes from Intel's PyPI wheels (`mkl-static`, `mkl-include`, `intel-openmp`), downloaded once into $GAR_MKL_KIT
# (default target/mkl-kit). Only the static libraries are offered to the linker (the LP64 interface, the Intel
# OpenMP threading layer, the core and a static libiomp5), so the binary needs no MKL or OpenMP install at run
# time. oneMKL is Intel's proprietary (ISSL) library: a binary built this way carries it.
#
# usage: scripts/build-mkl.sh [cargo build args...]   (default: --release -p gar-cli)
#        scripts/build-mkl.sh test [cargo test args...]   (the same environment for `cargo test`)
# output: target/mkl/release/gar ($CARGO_TARGET_DIR overrides target/mkl)
set -euo pipefail
CMD=build
if [ "${1:-}" = test ]; then CMD=test; shift; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=${GAR_MKL_KIT:-$ROOT/target/mkl-kit}
LIBS="libmkl_intel_lp64.a libmkl_intel_thread.a libmkl_core.a libiomp5.a"
missing=0
for l in $LIBS; do [ -e "$KIT/root/lib/$l" ] || missing=1; done
[ -e "$KIT/root/include/mkl.h" ] || missing=1
if [ $missing = 1 ]; then
  mkdir -p "$KIT/whl" "$KIT/x" "$KIT/root/lib"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 -d "$KIT/whl" "mkl-static==2026.*" "mkl-include==2026.*" "intel-openmp==2026.*"
  python3 - "$KIT" <<'EOF'
import sys, zipfile, pathlib
kit = pathlib.Path(sys.argv[1])
for wheel in sorted((kit / "whl").glob("*.whl")):
    zipfile.ZipFile(wheel).extractall(kit / "x")
EOF
  for l in $LIBS; do
    found=$(find "$KIT/x" -name "$l" | head -1)
    [ -n "$found" ] || { echo "build-mkl: $l not found in the downloaded wheels" >&2; exit 1; }
    ln -sfn "$found" "$KIT/root/lib/$l"
  done
  # The build script also insists on finding mkl.h (its directory walk does not follow linked directories).
  header=$(find "$KIT/x" -name mkl.h | head -1)
  [ -n "$header" ] || { echo "build-mkl: mkl.h not found in the downloaded wheels" >&2; exit 1; }
  mkdir -p "$KIT/root/include"
  for h in mkl.h mkl_version.h; do ln -sfn "$(dirname "$header")/$h" "$KIT/root/include/$h"; done
fi
# intel-mkl-src (pulled in by candle's `mkl` feature) looks for mkl.h and the libraries under $MKLROOT; with only the
# static libiomp5 there, `-liomp5` resolves to it.
export MKLROOT=$KIT/root
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/mkl}
cd "$ROOT"
if [ $# = 0 ] && [ $CMD = build ]; then set -- --release -p gar-cli; fi
# A build-script run that found no MKL is cached without a rerun condition: start intel-mkl-src afresh whenever
# the kit was (re)made.
if [ $missing = 1 ]; then cargo clean -q -p intel-mkl-src; fi
cargo $CMD --features gar-cli/mkl "$@"
echo "cargo $CMD with oneMKL done (MKLROOT=$MKLROOT, target dir $CARGO_TARGET_DIR)"
