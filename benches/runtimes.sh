#!/usr/bin/env bash
# The runtimes: for each, the cold start of `mlambda run` (the image unpacked and the model
# loaded, until /v2/health/ready answers; then a second start, the image already unpacked),
# and inference requests per second with ApacheBench (`ab`, 4 at once, JSON over HTTP/1.0).
# Then the same model files served by MLServer (Seldon's V2 server, from PyPI, pinned below,
# in a venv under ~/.cache/mlambda-bench) against mlambda's runtime: start until the model is
# ready, and requests/s with the same `ab` settings:
#   - a scikit-learn estimator: mlserver-sklearn vs mlambda's scikit-learn runtime;
#   - a small ONNX model (the Conv2d fixture): MLServer has no ONNX runtime on PyPI, so it
#     runs a custom MLServer model of a few lines on onnxruntime (the runtime's own version);
#   - the tokenizer: a custom MLServer model calling the same func_main.py.
# Usage: benches/runtimes.sh        (needs the shared fixtures in ../shared, uv, bubblewrap or
#        root, curl and ab from apache2-utils; MLAMBDA_BIN skips `cargo build --release`)
#        MODELS=regex   only the models whose name matches (e.g. MODELS='tokenizer|onnx|iris')
#        MLSERVER=0     skips the MLServer comparison
# Everything listens on 127.0.0.1. Benchmarks are not tests: this prints figures and asserts
# nothing.
set -euo pipefail

MLSERVER_VERSION=1.7.1
SKLEARN_VERSION=1.9.1     # base-images/scikit-learn/pylock.toml: the pickle loads on both
ONNXRUNTIME_VERSION=1.32.0 # base-images/onnx/pylock.toml
# uvloop 0.22 and later raise in MLServer 1.7.1's inference workers (asyncio.get_event_loop()
# with no loop): every model fails to load. 0.21.0 is the last that works with it.
UVLOOP_VERSION=0.21.0
MODELS=${MODELS:-.}
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
port=18700

# MLServer and what its models need, once per machine (not measured).
venv=${XDG_CACHE_HOME:-$HOME/.cache}/mlambda-bench/mlserver-$MLSERVER_VERSION-uvloop-$UVLOOP_VERSION
if [ "${MLSERVER:-1}" = 1 ] && [ ! -x "$venv/bin/mlserver" ]; then
    uv=${MLAMBDA_UV:-$(command -v uv)}
    "$uv" venv -q -p python3.11 "$venv"
    "$uv" pip install -q -p "$venv/bin/python" "mlserver==$MLSERVER_VERSION" \
        "mlserver-sklearn==$MLSERVER_VERSION" "scikit-learn==$SKLEARN_VERSION" \
        "onnxruntime==$ONNXRUNTIME_VERSION" "uvloop==$UVLOOP_VERSION"
fi

# The estimator: iris, fitted on a plain array (no column names, so neither server builds a
# DataFrame), by the same scikit-learn as the runtime's.
iris=$work/iris
mkdir -p "$iris"
fit="import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
x, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), '$iris/model.joblib')"
if [ -x "$venv/bin/python" ]; then "$venv/bin/python" -c "$fit"; fi
column="{type: double, shape: [-1]}"
cat >"$iris/serving.yaml" <<YAML
name: iris_estimator
model-type: scikit-learn:1.9
payload: [model.joblib]
contract:
  predict:
    inputs:
      sepal_length: $column
      sepal_width: $column
      petal_length: $column
      petal_width: $column
    outputs:
      species: {type: int64, shape: [-1]}
YAML

# stop PID: SIGTERM, then SIGKILL for it and its children after 20 s (an MLServer whose
# worker died can hang in its shutdown).
stop() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 1 200); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        pkill -KILL -P "$1" 2>/dev/null || true
        kill -KILL "$1" 2>/dev/null || true
    fi
    wait "$1" 2>/dev/null || true
}
# wait_ready URL PID: until URL answers 200; fails when PID has exited.
wait_ready() {
    until curl -sf "$1" >/dev/null; do
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
}
# requests_per_second URL BODY: ab's figure, 4 at once, 400 requests.
requests_per_second() {
    echo "$2" >"$work/body.json"
    ab -q -c 4 -n 400 -p "$work/body.json" -T application/json "$1" |
        awk '/Requests per second/ {print $4} /Non-2xx/ {print "(" $3 " non-2xx answers!)"}' | tr '\n' ' '
}

# ---- mlambda's runtimes ----
# name, model folder, infer path, request body
models=(
    "example_tokenizer_model|$root/examples/tokenizer|example_tokenizer_model|{\"inputs\":[{\"name\":\"input_text\",\"datatype\":\"BYTES\",\"shape\":[1,1],\"data\":[\"Hello, ML Lambda\"]}]}"
    "onnx_pytorch_converted_test_conv2d|$fixtures/onnx/onnx_pytorch_converted_test_Conv2d|infer|{\"inputs\":[{\"name\":\"0\",\"datatype\":\"FP32\",\"shape\":[2,3,7,5],\"data\":[$(seq -s, 1 210)]}]}"
    "iris_estimator|$iris|predict|{\"inputs\":[{\"name\":\"sepal_length\",\"datatype\":\"FP64\",\"shape\":[1],\"data\":[5.1]},{\"name\":\"sepal_width\",\"datatype\":\"FP64\",\"shape\":[1],\"data\":[3.5]},{\"name\":\"petal_length\",\"datatype\":\"FP64\",\"shape\":[1],\"data\":[1.4]},{\"name\":\"petal_width\",\"datatype\":\"FP64\",\"shape\":[1],\"data\":[0.2]}]}"
    "serving_saved_model_half_plus_two_tflite_with_sigdef|$fixtures/tflite/serving_saved_model_half_plus_two_tflite_with_sigdef/00000123|serving_default|{\"inputs\":[{\"name\":\"tflite_input\",\"datatype\":\"FP32\",\"shape\":[1,1],\"data\":[5]}]}"
    "serving_saved_model_half_plus_two_cpu|$fixtures/tf_savedmodel/serving_saved_model_half_plus_two_cpu/00000123|serving_saved_model_half_plus_two_cpu|{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[3,1],\"data\":[1,2,5]}]}"
)
for entry in "${models[@]}"; do
    IFS='|' read -r name folder model body <<<"$entry"
    [[ $name =~ $MODELS ]] || continue
    [ -e "$folder" ] || { printf '%-55s skipped: %s is missing\n' "$name" "$folder"; continue; }
    "$bin" upload "$folder" >"$work/$name.upload" 2>&1 || { # the runtime assembled, not measured
        cat "$work/$name.upload" >&2
        continue
    }
    for start in cold warm; do
        port=$((port + 1))
        begin=$(seconds)
        "$bin" run "$name" --addr "127.0.0.1:$port" >"$work/$name.$start.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        wait_ready "127.0.0.1:$port/v2/health/ready" "$pid" || {
            cat "$work/$name.$start.log" >&2
            continue 2
        }
        ready=$(echo "$(seconds) - $begin" | bc)
        printf '%-55s mlambda %s start: %.2f s\n' "$name" "$start" "$ready"
        if [ "$start" = warm ]; then
            printf '%-55s mlambda infer: %s requests/s (ab -c 4)\n' "$name" \
                "$(requests_per_second "http://127.0.0.1:$port/v2/models/$model/infer" "$body")"
        fi
        stop "$pid"
    done
done

[ "${MLSERVER:-1}" = 1 ] || exit 0

# ---- the same files on MLServer ----
# Custom MLServer models: the ONNX one on onnxruntime, the tokenizer on its func_main.py.
custom=$work/mlserver-custom
mkdir -p "$custom"
cp "$root/examples/tokenizer/src/func_main.py" "$custom/func_main.py"
cat >"$custom/bench_models.py" <<'PY'
import numpy as np
import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

import func_main


class OnnxModel(MLModel):
    async def load(self) -> bool:
        self.session = onnxruntime.InferenceSession(self.settings.parameters.uri)
        return True

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i).astype(np.float32) for i in request.inputs}
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, feeds)
        outputs = [NumpyCodec.encode_output(n, v) for n, v in zip(names, values)]
        return InferenceResponse(model_name=self.name, outputs=outputs)


class TokenizerModel(MLModel):
    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(request.inputs[0])
        rows = func_main.tokenize([[t] for t in texts])["output_text"]
        output = StringCodec.encode_output("output_text", [r[0] for r in rows])
        return InferenceResponse(model_name=self.name, outputs=[output])
PY
# name, implementation, uri, request body
mlserver_models=(
    "example_tokenizer_model|bench_models.TokenizerModel||{\"inputs\":[{\"name\":\"input_text\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"Hello, ML Lambda\"]}]}"
    "onnx_pytorch_converted_test_conv2d|bench_models.OnnxModel|$fixtures/onnx/onnx_pytorch_converted_test_Conv2d/model.onnx|{\"inputs\":[{\"name\":\"0\",\"datatype\":\"FP32\",\"shape\":[2,3,7,5],\"data\":[$(seq -s, 1 210)]}]}"
    "iris_estimator|mlserver_sklearn.SKLearnModel|$iris/model.joblib|{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[1,4],\"data\":[5.1,3.5,1.4,0.2]}]}"
)
for entry in "${mlserver_models[@]}"; do
    IFS='|' read -r name implementation uri body <<<"$entry"
    [[ $name =~ $MODELS ]] || continue
    folder=$work/mlserver-$name
    mkdir -p "$folder/model"
    cp "$custom"/*.py "$folder/model/"
    printf '{"name": "%s", "implementation": "%s", "parameters": {"uri": "%s"}}\n' \
        "$name" "$implementation" "$uri" >"$folder/model/model-settings.json"
    for start in first next; do
        port=$((port + 3))
        printf '{"host": "127.0.0.1", "http_port": %d, "grpc_port": %d, "metrics_port": %d}\n' \
            "$port" $((port + 1)) $((port + 2)) >"$folder/settings.json"
        cp "$folder/settings.json" "$folder/model/settings.json"
        begin=$(seconds)
        (cd "$folder/model" && exec "$venv/bin/mlserver" start .) >"$work/$name.mlserver.$start.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        wait_ready "127.0.0.1:$port/v2/models/$name/ready" "$pid" || {
            tail -20 "$work/$name.mlserver.$start.log" >&2
            continue 2
        }
        ready=$(echo "$(seconds) - $begin" | bc)
        printf '%-55s MLServer %s start: %.2f s\n' "$name" "$start" "$ready"
        if [ "$start" = next ]; then
            printf '%-55s MLServer infer: %s requests/s (ab -c 4)\n' "$name" \
                "$(requests_per_second "http://127.0.0.1:$port/v2/models/$name/infer" "$body")"
            # Everything it listens on, for the record: 127.0.0.1 only.
            ss -ltnpH 2>/dev/null | grep "pid=$pid," | awk '{print "  listening on " $4}' | sort -u >&2 || true
        fi
        stop "$pid"
    done
done
