#!/usr/bin/env bash
# Performance figures of `mlambda upload`, as ratios to a baseline measured in the same run:
#   (1) a first upload vs sha256sum + cp + fsync of the same bytes      target <= 1.3x
#   (4) a second upload after one small file changed vs the first one   target <= 5 %
#   (5) the peak RSS of each mlambda process                            target <= 64 MiB
# Usage: benches/run.sh            (SIZE=2G by default; SIZE=512M for a quick run)
#        MLAMBDA_BIN=path/to/mlambda benches/run.sh   to skip `cargo build --release`
# Benchmarks are not tests: this prints figures and asserts nothing.
set -euo pipefail

SIZE=${SIZE:-2G}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mlambda-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ ! -x /usr/bin/time ]; then
    echo "installing GNU time (Debian package 'time')" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q time >&2; else sudo apt-get install -y -q time >&2; fi
fi

if [ -n "${MLAMBDA_BIN:-}" ]; then
    bin=$MLAMBDA_BIN
else
    (cd "$root" && cargo build --release --quiet)
    bin=${CARGO_TARGET_DIR:-$root/target}/release/mlambda
fi

# The data: one weights file of random bytes and 200 small files.
model=$work/model
mkdir -p "$model/small"
head -c "$SIZE" /dev/urandom >"$model/weights.bin"
for i in $(seq 1 200); do
    head -c $((500 + i * 37)) /dev/urandom | base64 >"$model/small/file$i.txt"
done
cat >"$model/serving.yaml" <<'YAML'
kind: Model
name: bench_model
model-type: "python:3.6"
payload:
  - weights.bin
  - small/
contract:
  predict:
    inputs:
      x: { shape: [-1, 1], type: float32 }
    outputs:
      y: { shape: [-1, 1], type: float32 }
YAML
sync
bytes=$(du -sb --apparent-size "$model" | cut -f1)

# timed NAME CMD...: runs CMD under GNU time; sets $secs and $rss_kib.
timed() {
    local name=$1
    shift
    /usr/bin/time -f '%e %M' -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err" || {
        cat "$work/$name.err" >&2
        exit 1
    }
    read -r secs rss_kib <"$work/$name.time"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "inf" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# Baseline B: hash every byte once and copy it durably (what an upload does at the least).
timed baseline bash -c 'sha256sum "$1/weights.bin" "$1"/small/* >/dev/null && cp -r "$1" "$2" && sync "$2/weights.bin"' _ "$model" "$work/copy"
base=$secs
rm -rf "$work/copy"
timed sha256sum sha256sum "$model/weights.bin"
t_sum=$secs
timed openssl openssl dgst -sha256 "$model/weights.bin"
t_ssl=$secs

export MLAMBDA_HOME=$work/home
timed upload1 "$bin" upload --base scratch "$model"
t1=$secs
rss1=$rss_kib
echo "$((500 + 1))x" >>"$model/small/file1.txt"
timed upload2 "$bin" upload --base scratch "$model"
t2=$secs
rss2=$rss_kib

echo "data: $SIZE weights + 200 small files ($bytes bytes); $(nproc) cores; $(date -u +%Y-%m-%d)"
echo "info: sha256sum ${t_sum} s, openssl dgst -sha256 ${t_ssl} s for the weights (CPU sha_ni: $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no))"
# B with openssl's hash (SHA-NI where the CPU has it) in place of sha256sum's.
base_ssl=$(awk -v b="$base" -v s="$t_sum" -v o="$t_ssl" 'BEGIN { printf "%.2f", b - s + o }')
echo "(1) first upload ${t1} s vs baseline B (sha256sum + cp + fsync) ${base} s: $(ratio "$t1" "$base")x B (target <= 1.30)"
echo "(1') the same vs B with openssl's SHA-256 instead (${base_ssl} s): $(ratio "$t1" "$base_ssl")x"
echo "(4) second upload, one small file changed: ${t2} s = $(awk -v a="$t2" -v b="$t1" 'BEGIN { printf "%.1f", 100 * a / b }') % of the first (target <= 5 %)"
echo "(5) peak RSS: first upload $(mib "$rss1") MiB, second $(mib "$rss2") MiB (target <= 64 MiB)"
