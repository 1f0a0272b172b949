#!/usr/bin/env bash
# nnc int8 vs ONNX Runtime's dynamic int8 quantization, in one sitting
# (issue 23): builds nnc's side (int8-serve, release) and runs
# int8_same_run.py in the peers' venv (torch and onnxruntime; created by
# run.sh, never installed into here). Prints one table.
#
#   bench/peers/int8_same_run.sh [--rounds 7] [--seconds 0.2]
#
# On a quiet machine: close other work first; the table's ratios are from
# one run either way (see docs/quantization.md).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${NNC_PEERS_VENV:-$HOME/.cache/nnc-peers/venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "no peers venv at $VENV: run bench/peers/run.sh --only onnxruntime-int8 --workloads W5-MLP-256 once" >&2
  exit 1
fi
(cd "$REPO" && cargo build --release -q -p nnc-example-mnist --bin int8-serve)
TARGET="$(cd "$REPO" && cargo metadata --format-version 1 --no-deps | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$VENV/bin/python" "$HERE/int8_same_run.py" --serve "$TARGET/release/int8-serve" "$@"
