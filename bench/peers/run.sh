#!/usr/bin/env bash
# Peer frameworks for the nnc training benchmark (not part of CI).
#
# Installs the peers if missing (Python venv outside the repo, Rust bench
# binaries in a cargo target dir outside the repo), then runs every selected
# (framework, workload, threads) combination in its own fresh process and
# appends one JSON line per run to bench/peers/results.jsonl.
#
#   bench/peers/run.sh                                  # full run (overwrites results.jsonl)
#   bench/peers/run.sh --only torch --workloads W1 --threads 1 --steps 50   # quick smoke run
#
# See bench/peers/README.md for what is measured and the caveats.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
DATA="${NNC_PEERS_DATA:-$REPO/data/mnist-10k}"
VENV="${NNC_PEERS_VENV:-$HOME/.cache/nnc-peers/venv}"
TARGET="${NNC_PEERS_TARGET:-${CARGO_TARGET_DIR:-$HOME/.cache/nnc-peers/target}}"
BIN="$TARGET/peers-bin"
PYTHON="${NNC_PEERS_PYTHON:-python3}"

# `gemm` is no framework: the `gemm` crate's square products, a contender for
# the matrix-multiply ceiling (workload "ceiling", one line per thread count).
ALL_FRAMEWORKS="jax torch-eager torch-compile tf-function tf-xla keras-fit onnxruntime onnxruntime-int8 burn dfdx candle gemm"
FRAMEWORKS="$ALL_FRAMEWORKS"
WORKLOADS="W1 W2 W3 W4 W4L W5-MLP-1 W5-MLP-256 W5-LeNet-1 W5-LeNet-256"
CALLS=1000       # timed calls of a batch-1 inference workload
THREADS="1 2"
STEPS=0          # 0: time each measurement for $SECONDS_MIN seconds
REPEAT=1         # fresh processes per (framework, workload, threads)
SECONDS_MIN=3
WARMUP=20
OUT="$HERE/results.jsonl"
APPEND=0
INSTALL=1
NICE=""
RUN_TIMEOUT="${NNC_PEERS_RUN_TIMEOUT:-1800}"

# The exact versions the script was written and smoke-tested against.
PIP_JAX=("jax[cpu]==0.10.2" "optax==0.2.8")
PIP_TORCH=("torch==2.15.0")
PIP_TF=("tensorflow==2.21.0")
PIP_ORT=("onnxruntime" "onnx" "onnxscript")

usage() {
  cat <<EOF
usage: $0 [options]
  --only LIST        frameworks (comma/space separated); default: all of
                     $ALL_FRAMEWORKS
                     'torch' = torch-eager,torch-compile; 'tf' = tf-function,tf-xla,keras-fit
  --workloads LIST   W1,W2,W3,W4,W4L,W5-MLP-1,W5-MLP-256,W5-LeNet-1,W5-LeNet-256 (default all;
                     a framework runs only the workloads it has, see bench.py)
  --calls N          timed calls of a batch-1 inference workload (default 1000)
  --threads LIST     thread counts (default 1,2)
  --steps N          exact number of timed steps (default: time each run for --seconds)
  --seconds S        minimum timed duration per measurement (default 3)
  --repeat N         run every measurement N times, each in a fresh process
                     (default 1; nnc-bench reports the median of the lines)
  --warmup N         warm-up steps incl. the first, compiling one (default 20)
  --out FILE         results file (default bench/peers/results.jsonl)
  --append           append to the results file instead of overwriting it
  --no-install       do not install/build anything; fail the runs that lack it
  --nice             run the measurements under 'nice -n 19' (installs and builds always are)
env: NNC_PEERS_VENV (venv dir, default ~/.cache/nnc-peers/venv), NNC_PEERS_TARGET or
     CARGO_TARGET_DIR (Rust build dir, default ~/.cache/nnc-peers/target), NNC_PEERS_PYTHON.
EOF
}

list() { echo "$1" | tr ',' ' '; }
while [ $# -gt 0 ]; do
  case "$1" in
    --only) FRAMEWORKS="$(list "$2")"; shift 2 ;;
    --workloads) WORKLOADS="$(list "$2")"; shift 2 ;;
    --threads) THREADS="$(list "$2")"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --calls) CALLS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --seconds) SECONDS_MIN="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --append) APPEND=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    --nice) NICE="nice -n 19"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

# Expand the aliases.
expanded=""
for f in $FRAMEWORKS; do
  case "$f" in
    torch) expanded="$expanded torch-eager torch-compile" ;;
    tf|tensorflow) expanded="$expanded tf-function tf-xla keras-fit" ;;
    *) expanded="$expanded $f" ;;
  esac
done
FRAMEWORKS="$expanded"
for f in $FRAMEWORKS; do
  case " $ALL_FRAMEWORKS " in *" $f "*) ;; *) echo "unknown framework $f" >&2; exit 2 ;; esac
done
wants() { case " $FRAMEWORKS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

log() { echo "[peers $(date +%H:%M:%S)] $*" >&2; }

# One JSON error line (uses the system python for escaping).
json_error() {  # framework workload threads message
  python3 -c 'import json,sys; print(json.dumps({"framework":sys.argv[1],"workload":sys.argv[2],"threads":int(sys.argv[3]),"error":sys.argv[4][-2000:]}))' "$@"
}

# --------------------------------------------------------------------- install
declare -A BROKEN   # framework -> reason it cannot run

py_ok() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$1" >/dev/null 2>&1; }

install_python() {
  local need=0
  for f in jax torch-eager torch-compile tf-function tf-xla keras-fit onnxruntime onnxruntime-int8; do wants "$f" && need=1; done
  [ $need = 1 ] || return 0
  if [ ! -x "$VENV/bin/python" ]; then
    [ $INSTALL = 1 ] || { for f in jax torch-eager torch-compile tf-function tf-xla keras-fit onnxruntime onnxruntime-int8; do BROKEN[$f]="no venv at $VENV (--no-install)"; done; return; }
    log "creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    nice -n 19 "$PYTHON" -m venv "$VENV" && nice -n 19 "$VENV/bin/pip" install -q --upgrade pip \
      || { for f in jax torch-eager torch-compile tf-function tf-xla keras-fit onnxruntime onnxruntime-int8; do BROKEN[$f]="could not create venv $VENV"; done; return; }
  fi
  local pkgs=()
  if wants jax && ! py_ok "import jax, optax"; then pkgs+=("${PIP_JAX[@]}"); fi
  if { wants torch-eager || wants torch-compile; } && ! py_ok "import torch"; then pkgs+=("${PIP_TORCH[@]}"); fi
  if { wants tf-function || wants tf-xla || wants keras-fit; } && ! py_ok "import tensorflow"; then pkgs+=("${PIP_TF[@]}"); fi
  if { wants onnxruntime || wants onnxruntime-int8; } && ! py_ok "import onnxruntime, onnx, onnxscript"; then pkgs+=("${PIP_ORT[@]}"); fi
  if { wants onnxruntime || wants onnxruntime-int8; } && ! py_ok "import torch"; then pkgs+=("${PIP_TORCH[@]}"); fi
  if [ ${#pkgs[@]} -gt 0 ]; then
    if [ $INSTALL = 1 ]; then
      log "pip install ${pkgs[*]} (torch alone is a ~3-4 GB download with its CUDA wheels)"
      nice -n 19 "$VENV/bin/pip" install "${pkgs[@]}" >&2 || log "pip install failed"
    fi
  fi
  py_ok "import jax, optax" || { BROKEN[jax]="jax/optax not importable from $VENV"; }
  py_ok "import torch" || { BROKEN[torch-eager]="torch not importable from $VENV"; BROKEN[torch-compile]="${BROKEN[torch-eager]}"; }
  py_ok "import tensorflow" || { for f in tf-function tf-xla keras-fit; do BROKEN[$f]="tensorflow not importable from $VENV"; done; }
  py_ok "import onnxruntime, torch" || { BROKEN[onnxruntime]="onnxruntime or torch not importable from $VENV"; }
  py_ok "import onnxruntime.quantization, torch" || { BROKEN[onnxruntime-int8]="onnxruntime.quantization or torch not importable from $VENV"; }
  if wants torch-compile && ! command -v "${CC:-gcc}" >/dev/null 2>&1; then
    BROKEN[torch-compile]="torch.compile (inductor) needs a C compiler; none found"
  fi
}

BURN_NOTE=""
cargo_build() {  # log-name, then cargo args; runs in the peers' own workspace
  local name="$1"; shift
  ( cd "$HERE/rust" && CARGO_TARGET_DIR="$TARGET" nice -n 19 cargo "$@" ) >"$TARGET/build-$name.log" 2>&1
}

install_rust() {
  local need=0
  for f in burn dfdx candle gemm; do wants "$f" && need=1; done
  [ $need = 1 ] || return 0
  mkdir -p "$BIN"
  if [ $INSTALL = 1 ]; then
    if ! command -v cargo >/dev/null; then
      for f in burn dfdx candle gemm; do BROKEN[$f]="cargo not found"; done; return
    fi
    if wants candle || wants dfdx; then
      log "cargo build candle-bench dfdx-bench (stable)"
      if cargo_build stable build --release -p candle-bench -p dfdx-bench; then
        cp "$TARGET/release/candle-bench" "$TARGET/release/dfdx-bench" "$BIN/"
      else
        log "build failed, see $TARGET/build-stable.log"
      fi
    fi
    if wants gemm; then
      # x86-v4 only adds AVX-512 kernels; gemm picks them at run time.
      log "cargo build gemm-bench (the gemm crate, x86-v4)"
      if cargo_build gemm build --release -p gemm-bench --features x86-v4; then
        cp "$TARGET/release/gemm-bench" "$BIN/"
      else
        log "build failed, see $TARGET/build-gemm.log"
      fi
    fi
    if wants burn; then
      log "cargo build burn-bench (Flex backend, x86-v4 AVX-512 kernels)"
      if cargo_build burn-v4 build --release -p burn-bench --features x86-v4; then
        cp "$TARGET/release/burn-bench" "$BIN/burn-bench-x86v4"
      else
        rm -f "$BIN/burn-bench-x86v4"; log "burn x86-v4 build failed, see $TARGET/build-burn-v4.log"
      fi
      log "cargo build burn-bench (Flex backend, no x86-v4)"
      if cargo_build burn-flex build --release -p burn-bench; then
        cp "$TARGET/release/burn-bench" "$BIN/burn-bench-flex"
      else
        rm -f "$BIN/burn-bench-flex"; log "burn flex build failed, see $TARGET/build-burn-flex.log"
      fi
    fi
  fi
  [ -x "$BIN/candle-bench" ] || BROKEN[candle]="candle-bench not built (see $TARGET/build-stable.log)"
  [ -x "$BIN/dfdx-bench" ] || BROKEN[dfdx]="dfdx-bench not built (see $TARGET/build-stable.log)"
  [ -x "$BIN/gemm-bench" ] || BROKEN[gemm]="gemm-bench not built (see $TARGET/build-gemm.log)"
  # burn: prefer the x86-v4 build, but only if it actually runs on this CPU
  # (AVX-512 code paths can die with SIGILL on CPUs without AVX-512).
  BURN_BIN=""
  if [ -x "$BIN/burn-bench-x86v4" ]; then
    if "$BIN/burn-bench-x86v4" --data "$DATA" --workload W1 --warmup 1 --steps 1 >/dev/null 2>"$TARGET/burn-x86v4-probe.log"; then
      BURN_BIN="$BIN/burn-bench-x86v4"
    else
      rc=$?
      BURN_NOTE="x86-v4 build failed its probe run (exit $rc$([ $rc = 132 ] && echo ', SIGILL: no AVX-512')); fell back to plain flex"
      log "burn: $BURN_NOTE"
    fi
  elif wants burn; then
    BURN_NOTE="x86-v4 build unavailable; using plain flex"
  fi
  if [ -z "$BURN_BIN" ] && [ -x "$BIN/burn-bench-flex" ]; then BURN_BIN="$BIN/burn-bench-flex"; fi
  [ -n "$BURN_BIN" ] || BROKEN[burn]="burn-bench not built (see $TARGET/build-burn-*.log)"
}

# ------------------------------------------------------------------------- run
cpu_list() { seq -s, 0 $(( $1 - 1 )); }

# Whether a framework has a workload: W4 (transformers) and W5 (inference)
# are measured for JAX, PyTorch and (W5 only) ONNX Runtime, the tools people
# pick for them; ONNX Runtime has only inference.
applies() {  # framework workload
  case "$2" in
    W1|W2|W3) case "$1" in onnxruntime|onnxruntime-int8) return 1 ;; *) return 0 ;; esac ;;
    W4|W4L) case "$1" in jax|torch-eager|torch-compile) return 0 ;; *) return 1 ;; esac ;;
    W5-*) case "$1" in jax|torch-eager|torch-compile|onnxruntime|onnxruntime-int8) return 0 ;; *) return 1 ;; esac ;;
    *) return 0 ;;
  esac
}

run_one() {  # framework workload threads
  local fw="$1" wl="$2" th="$3" cmd=() out err rc line
  if [ -n "${BROKEN[$fw]:-}" ]; then json_error "$fw" "$wl" "$th" "${BROKEN[$fw]}" >>"$OUT"; return; fi
  local common=(--workload "$wl" --threads "$th" --warmup "$WARMUP" --steps "$STEPS" --seconds "$SECONDS_MIN" --data "$DATA")
  local extra=()
  case "$wl" in W5-*) extra=(--calls "$CALLS") ;; esac
  case "$fw" in
    burn) cmd=(taskset -c "$(cpu_list "$th")" env RAYON_NUM_THREADS="$th" OMP_NUM_THREADS="$th" "$BURN_BIN" "${common[@]}") ;;
    gemm) cmd=(taskset -c "$(cpu_list "$th")" env RAYON_NUM_THREADS="$th" "$BIN/gemm-bench" --threads "$th" --seconds "$SECONDS_MIN") ;;
    candle) cmd=(taskset -c "$(cpu_list "$th")" env RAYON_NUM_THREADS="$th" OMP_NUM_THREADS="$th" "$BIN/candle-bench" "${common[@]}") ;;
    dfdx)
      # W3 reports itself unsupported (see rust/dfdx-bench/src/main.rs).
      cmd=(taskset -c "$(cpu_list "$th")" env RAYON_NUM_THREADS="$th" OMP_NUM_THREADS="$th" "$BIN/dfdx-bench" "${common[@]}") ;;
    *) cmd=("$VENV/bin/python" "$HERE/bench.py" --framework "$fw" "${common[@]}" "${extra[@]}") ;;
  esac
  log "run $fw $wl threads=$th"
  err="$(mktemp)"
  out="$(timeout "$RUN_TIMEOUT" $NICE "${cmd[@]}" 2>"$err")"; rc=$?
  line="$(printf '%s\n' "$out" | grep '^{' | tail -n 1)"
  if [ -n "$line" ]; then
    if [ "$fw" = burn ] && [ -n "$BURN_NOTE" ]; then
      line="$(printf '%s' "$line" | jq -c --arg n "$BURN_NOTE" '.notes = ((.notes // "") + "; " + $n)')"
    fi
    printf '%s\n' "$line" >>"$OUT"
    printf '%s\n' "$line" | jq -c '{framework, workload, threads, samples_per_s, latency_median_us, gflops, peak_rss_mb, first_step_s, first_loss, final_loss, error}' >&2
  else
    local why="exit code $rc"; [ $rc = 124 ] && why="timed out after ${RUN_TIMEOUT}s"; [ $rc = 132 ] && why="SIGILL (illegal instruction)"
    json_error "$fw" "$wl" "$th" "$why; stderr tail: $(tail -c 1500 "$err")" >>"$OUT"
    log "  failed: $why"
  fi
  rm -f "$err"
}

main() {
  [ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "no MNIST at $DATA" >&2; exit 1; }
  mkdir -p "$TARGET"
  install_python
  install_rust
  mkdir -p "$(dirname "$OUT")"
  [ $APPEND = 1 ] || : >"$OUT"
  # Rounds outermost, so a slow spell of the shared machine hits every
  # framework's round rather than all rounds of one framework.
  for _round in $(seq "$REPEAT"); do
    for fw in $FRAMEWORKS; do
      if [ "$fw" = gemm ]; then
        for th in $THREADS; do run_one gemm ceiling "$th"; done
        continue
      fi
      for wl in $WORKLOADS; do
        applies "$fw" "$wl" || continue
        for th in $THREADS; do
          run_one "$fw" "$wl" "$th"
        done
      done
    done
  done
  log "results in $OUT"
}

main
