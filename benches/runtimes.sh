#!/usr/bin/env bash
# The runtimes: for each, the cold start of `mlambda run` (the image unpacked and the model
# loaded, until /v2/health/ready answers; then a second start, the image already unpacked),
# and inference requests per second with ApacheBench (`ab`, 4 at once, JSON over HTTP/1.0)
# on the tokenizer and on a small ONNX model.
# Usage: benches/runtimes.sh        (needs the shared fixtures in ../shared, uv, bubblewrap or
#        root, curl and ab from apache2-utils; MLAMBDA_BIN skips `cargo build --release`)
# Benchmarks are not tests: this prints figures and asserts nothing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
fixtures=${FIXTURES:-$root/../shared/fixtures}
work=$(mktemp -d "${TMPDIR:-/tmp}/mlambda-bench-runtimes.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
if [ -n "${MLAMBDA_BIN:-}" ]; then
    bin=$MLAMBDA_BIN
else
    (cd "$root" && cargo build --release --quiet)
    bin=${CARGO_TARGET_DIR:-$root/target}/release/mlambda
fi
export MLAMBDA_HOME=$work/home
seconds() { date +%s.%N; }

# name, model folder, infer path, request body
models=(
    "example_tokenizer_model|$root/examples/tokenizer|example_tokenizer_model|{\"inputs\":[{\"name\":\"input_text\",\"datatype\":\"BYTES\",\"shape\":[1,1],\"data\":[\"Hello, ML Lambda\"]}]}"
    "onnx_pytorch_converted_test_conv2d|$fixtures/onnx/onnx_pytorch_converted_test_Conv2d|infer|{\"inputs\":[{\"name\":\"0\",\"datatype\":\"FP32\",\"shape\":[2,3,7,5],\"data\":[$(seq -s, 1 210)]}]}"
    "serving_saved_model_half_plus_two_tflite_with_sigdef|$fixtures/tflite/serving_saved_model_half_plus_two_tflite_with_sigdef/00000123|serving_default|{\"inputs\":[{\"name\":\"tflite_input\",\"datatype\":\"FP32\",\"shape\":[1,1],\"data\":[5]}]}"
    "serving_saved_model_half_plus_two_cpu|$fixtures/tf_savedmodel/serving_saved_model_half_plus_two_cpu/00000123|serving_saved_model_half_plus_two_cpu|{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[3,1],\"data\":[1,2,5]}]}"
)
port=18700
for entry in "${models[@]}"; do
    IFS='|' read -r name folder model body <<<"$entry"
    "$bin" upload "$folder" >/dev/null 2>&1   # the runtime assembled, not measured
    for start in cold warm; do
        port=$((port + 1))
        begin=$(seconds)
        "$bin" run "$name" --addr "127.0.0.1:$port" >"$work/$name.$start.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        until curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null; do sleep 0.05; done
        ready=$(echo "$(seconds) - $begin" | bc)
        printf '%-55s %s start: %.2f s\n' "$name" "$start" "$ready"
        if [ "$start" = warm ]; then
            echo "$body" >"$work/body.json"
            rps=$(ab -q -c 4 -n 400 -p "$work/body.json" -T application/json \
                "http://127.0.0.1:$port/v2/models/$model/infer" | awk '/Requests per second/ {print $4}')
            printf '%-55s infer: %s requests/s (ab -c 4)\n' "$name" "$rps"
        fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
done
