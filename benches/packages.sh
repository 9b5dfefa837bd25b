#!/usr/bin/env bash
# Python packages into image layers, as ratios to a peer measured in the same run:
#   (P1) installing the TensorFlow packages (tensorflow-cpu and its dependencies, locked by uv
#        for cp311 manylinux_2_36_x86_64) as image layers, wheels already in the cache, vs
#        `uv pip install --offline --target` of the same wheels + `tar` of the result, uv's
#        cache empty (cold: uv unpacks the wheels, as mlambda does)
#   (P1') the same uv install with uv's cache warm (the wheels unpacked already: it links the
#        files), + tar; mlambda's counterpart is (P2), its layers remembered
#   (P2) a second model on the same packages: its build time, and the package layers built
#        again (none: they are remembered by the wheels' hashes)
# Usage: benches/packages.sh       (PACKAGES="tensorflow-cpu" by default)
#        MLAMBDA_BIN=path/to/mlambda benches/packages.sh   to skip `cargo build --release`
#        BEFORE=path/to/other/mlambda  also (P1) with that build, in turns (before/after a change)
# Needs uv (PATH or MLAMBDA_UV), GNU time, apt-get (the python-3.11 runtime), PyPI.
# Benchmarks are not tests: this prints figures and asserts nothing.
set -euo pipefail

PACKAGES=${PACKAGES:-tensorflow-cpu}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mlambda-bench-packages.XXXXXX")
trap 'rm -rf "$work"' EXIT
uv=${MLAMBDA_UV:-$(command -v uv)}
# uv's cache of its own, gone with the run: uv keeps one unpacked copy (1.4 GB for TensorFlow)
# per wheel path, and the wheelhouse's path is new every run.
export UV_CACHE_DIR=$work/uv-cache

if [ -n "${MLAMBDA_BIN:-}" ]; then
    bin=$MLAMBDA_BIN
else
    (cd "$root" && cargo build --release --quiet)
    bin=${CARGO_TARGET_DIR:-$root/target}/release/mlambda
fi
seconds() { date +%s.%N; }

# A model that needs the packages, and a second one with other code on the same packages.
for name in first second; do
    mkdir -p "$work/$name/src"
    printf 'name: %s\nmodel-type: python:3.11\ncontract:\n  run:\n    inputs:\n      x: {type: double, shape: [-1]}\n    outputs:\n      y: {type: double, shape: [-1]}\n' \
        "$name" >"$work/$name/serving.yaml"
    echo "$PACKAGES" | tr ' ' '\n' >"$work/$name/requirements.txt"
    echo "def run(x): return {'y': x}  # $name" >"$work/$name/src/func_main.py"
done

# Not measured: the runtime, the lock and the downloads (into the home's wheel cache, and
# into uv's cache by one install of the same lock).
home=$work/home
export MLAMBDA_HOME=$home
"$bin" base build python-3.11 >/dev/null
"$bin" packages fetch "$work/first" --into "$work/wheelhouse" >/dev/null
lock=$(ls "$work/wheelhouse"/pylock.*.toml)
wheels=$(ls "$work/wheelhouse"/*.whl | wc -l)
bytes=$(cat "$work/wheelhouse"/*.whl | wc -c)
"$uv" pip install --quiet --target "$work/warm" --python-version 3.11 \
    --python-platform x86_64-manylinux_2_36 --no-deps -r "$lock"
rm -rf "$work/warm"
# Every timed step starts with nothing left to write back from the one before.
sync

# (P1) mlambda: wheels → one layer each (unzip, check RECORD, tar, gzip, hash, store), into a
# copy of the prepared home (runtime and wheels, no package layer yet); sets $mlambda_s, $rss_mib.
p1() {
    rm -rf "$work/home-p1"
    cp -a "$home" "$work/home-p1"
    sync
    local start
    start=$(seconds)
    MLAMBDA_HOME=$work/home-p1 /usr/bin/time -f %M -o "$work/first.rss" \
        "$1" upload "$work/first" --wheelhouse "$work/wheelhouse" --offline >/dev/null
    mlambda_s=$(echo "$(seconds) - $start" | bc)
    rss_mib=$(awk '{ printf "%.1f", $1 / 1024 }' "$work/first.rss")
}
# BEFORE=path/to/another/mlambda: P1 with it too, in turns with this one (two rounds), to show
# what a change did in one run.
if [ -n "${BEFORE:-}" ]; then
    for round in 1 2; do
        p1 "$BEFORE"
        printf '(P1) round %d: BEFORE %.2f s (peak RSS %s MiB), ' "$round" "$mlambda_s" "$rss_mib"
        p1 "$bin"
        printf 'this build %.2f s (peak RSS %s MiB)\n' "$mlambda_s" "$rss_mib"
    done
else
    p1 "$bin"
fi
export MLAMBDA_HOME=$work/home-p1
# uv, offline as mlambda is (online, uv asks PyPI again about every wheel of the lock, which
# took 5-15 s here): the same wheels into a folder, then a tar of it. Cold: a new cache of its
# own, so that uv unpacks every wheel; warm: the cache the lock's install filled.
uv_install() {
    sync
    local start
    start=$(seconds)
    UV_CACHE_DIR=$1 "$uv" pip install --quiet --offline --target "$work/target" --python-version 3.11 \
        --python-platform x86_64-manylinux_2_36 --no-deps "${@:2}"
    tar -cf "$work/target.tar" -C "$work/target" .
    uv_s=$(echo "$(seconds) - $start" | bc)
}
uv_install "$work/uv-cold" "$work/wheelhouse"/*.whl
uv_cold_s=$uv_s
rm -rf "$work/target" "$work/uv-cold"
uv_install "$UV_CACHE_DIR" -r "$lock"
uv_warm_s=$uv_s
start=$(seconds)
gzip -1 -c "$work/target.tar" >/dev/null
gzip_s=$(echo "$(seconds) - $start" | bc)

# (P2) the second model: its packages' layers are remembered.
start=$(seconds)
"$bin" upload "$work/second" --wheelhouse "$work/wheelhouse" --offline >/dev/null
second_s=$(echo "$(seconds) - $start" | bc)
"$bin" show second:1 --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["log"])' >"$work/second.log"
rebuilt=$(grep -c 'python package' "$work/second.log" || true)
cached=$(grep -c 'python package.*(cached)' "$work/second.log" || true)
# The size of the first model's package layers, from its build log.
"$bin" show first:1 --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["log"])' >"$work/first.log"
layer_mb=$(grep 'python package' "$work/first.log" | sed -n 's/.*(\([0-9]*\) bytes).*/\1/p' |
    awk '{ total += $1 } END { printf "%d", total / 1000000 }')

printf 'packages: %s (%d wheels, %d MB), %s MB installed\n' "$PACKAGES" "$wheels" $((bytes / 1000000)) \
    "$(du -sm "$work/target" | cut -f1)"
printf '(P1) mlambda packages → layers: %.2f s (peak RSS %s MiB, layers %s MB); uv install --offline --target, cache empty, + tar: %.2f s (%.2fx)\n' \
    "$mlambda_s" "$rss_mib" "$layer_mb" "$uv_cold_s" "$(echo "$mlambda_s / $uv_cold_s" | bc -l)"
printf "(P1') uv install with its cache warm + tar: %.2f s (mlambda's P1 is %.2fx that); gzip -1 of the tar alone: %.2f s\n" \
    "$uv_warm_s" "$(echo "$mlambda_s / $uv_warm_s" | bc -l)" "$gzip_s"
printf '(P2) second model on the same packages: %.2f s; package layers %d, of which remembered %d\n' \
    "$second_s" "$rebuilt" "$cached"
