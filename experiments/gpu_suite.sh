#!/usr/bin/env bash
# The GPU set of issue 15 in one run of at most 8 minutes (every step has its own `timeout`, and
# the timeouts add up to 480 s), from the repository root:
#
#   experiments/gpu_suite.sh           # on the GPU machine (H200): writes results/gpu/*.json (+ .png)
#   experiments/gpu_suite.sh --smoke   # every size shrunk, for a CPU: checks the script end to end
#                                      # (into $OUT_DIR, default /tmp/gpu_suite_smoke)
#
# Parts (each writes its JSON after every length, so a part stopped by its timeout or a crash
# keeps what it measured; a part's failures per model / impl are rows of its JSON):
#   bench_bk_core          BK core fwd+bwd vs a same-bytes copy, batch 8 x 64 channels, N = 4k .. 2^20,
#                          impls pallas, associative, chunked; precision table at N = 65536
#   bench_throughput       train step, ResNet-BK (scan_impl auto) and the Transformer: d_model 512,
#                          4 layers, vocab 32768, 65,536 tokens/step, N = 512 / 2k / 8k / 32k, bf16
#   bench_throughput_pallas  the same for ResNet-BK with model.bk.scan_impl = pallas
#   step_memory            compiled memory of the project's train step (the dry run's measurement)
#                          at 65,536 tokens/step, N = 2048 and 32768, bf16, both models
# suite.json records each part's command, exit status (124: stopped by its timeout) and seconds.
#
# Environment (../shared/gpu/README.md): the H200 machine has jax, flax, optax, orbax but not
# grain, array-record, ml-collections, tensorboardX, zstandard, portpicker, importlib_resources
# (these benchmarks import ml-collections and zstandard): put cp312 manylinux wheels in $WHEELS
# (default .whl) and they are installed into $SITE (default /tmp/muse_jax_site) and put on
# PYTHONPATH first; the suite stops at once (exit 2) if the benchmarks cannot be imported.
# PYTHON: default python3.  XLA's default memory preallocation (75 %) is kept: --max-gb 100.
set -u -o pipefail
cd "$(dirname "$0")/.."

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
[ "${GPU_SUITE_SMOKE:-0}" = "1" ] && SMOKE=1
PYTHON="${PYTHON:-python3}"
if [ "$SMOKE" = 1 ]; then OUT_DIR="${OUT_DIR:-/tmp/gpu_suite_smoke}"; else OUT_DIR="${OUT_DIR:-results/gpu}"; fi
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/suite.log"
: > "$LOG"

WHEELS="${WHEELS:-.whl}"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    SITE="${SITE:-/tmp/muse_jax_site}"
    timeout 20 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || { echo "error: installing the wheels of $WHEELS failed" >&2; exit 2; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! timeout 20 "$PYTHON" -c "import experiments.bench_bk_core, experiments.bench_throughput, experiments.step_memory" \
        2>> "$LOG"; then
    echo "error: $PYTHON cannot import the project's stack (see $LOG; bring the wheels, see the header)" >&2
    exit 2
fi

if [ "$SMOKE" = 1 ]; then
    CORE=(--batch 1 --channels 4 --lengths 64 --reps 1 --precision-n 0)
    SHAPE=(--d-model 16 --layers 1 --heads 2 --channels 4 --vocab 512)
    THROUGHPUT=(--tokens 64 --lengths 16 --reps 1)
    STEP=(--tokens 64 --lengths 32)
else
    CORE=(--batch 8 --channels 64 --lengths 4096,65536,262144,1048576 --reps 5 --max-compile-s 20
          --precision-n 65536)
    SHAPE=(--d-model 512 --layers 4 --heads 8 --channels 64 --vocab 32768)
    THROUGHPUT=(--tokens 65536 --lengths 512,2048,8192,32768 --reps 3 --max-gb 100)
    STEP=(--tokens 65536 --lengths 2048,32768)
fi

PARTS=()
FAILED=0
part() {  # part NAME TIMEOUT_S ARGS...: one benchmark under its timeout, recorded for suite.json
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name (timeout ${limit}s): $PYTHON $*" | tee -a "$LOG"
    timeout --kill-after=10 "$limit" "$PYTHON" "$@" 2>&1 | tee -a "$LOG"
    local status=${PIPESTATUS[0]}
    [ "$status" = 0 ] || FAILED=1
    local cmd
    cmd=$(printf '%s ' "$PYTHON" "$@" | sed 's/\\/\\\\/g; s/"/\\"/g; s/ $//')
    PARTS+=("{\"name\": \"$name\", \"command\": \"$cmd\", \"timeout_s\": $limit, \"exit_status\": $status, \"seconds\": $((SECONDS - start))}")
}

part bench_bk_core 120 -m experiments.bench_bk_core "${CORE[@]}" --impls pallas,associative,chunked \
    --out "$OUT_DIR/bench_bk_core.json"
part bench_throughput 170 -m experiments.bench_throughput "${SHAPE[@]}" "${THROUGHPUT[@]}" \
    --compute-dtype bfloat16 --out "$OUT_DIR/bench_throughput.json"
part bench_throughput_pallas 80 -m experiments.bench_throughput "${SHAPE[@]}" "${THROUGHPUT[@]}" \
    --compute-dtype bfloat16 --models bk --scan-impl pallas --out "$OUT_DIR/bench_throughput_pallas.json"
part step_memory 70 -m experiments.step_memory "${SHAPE[@]}" "${STEP[@]}" \
    --override train.compute_dtype=bfloat16 --out "$OUT_DIR/step_memory.json"

{
    printf '{"smoke": %s, "out_dir": "%s", "date": "%s", "parts": [\n' \
        "$([ "$SMOKE" = 1 ] && echo true || echo false)" "$OUT_DIR" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    for i in "${!PARTS[@]}"; do
        [ "$i" -gt 0 ] && printf ',\n'
        printf '  %s' "${PARTS[$i]}"
    done
    printf '\n]}\n'
} > "$OUT_DIR/suite.json.tmp" && mv "$OUT_DIR/suite.json.tmp" "$OUT_DIR/suite.json"
echo "wrote $OUT_DIR/*.json (parts: $OUT_DIR/suite.json)"
exit $FAILED
