#!/usr/bin/env bash
# Performance figures of mlambda, as ratios to a baseline or a peer measured in the same run:
#   (1) a first upload into the local store vs B = sha256sum + cp + fsync of the same bytes  <= 1.3x
#   (2) a first upload through HTTP to `mlambda registry serve` vs B                         <= 2x
#   (3) build + push to CNCF distribution vs `skopeo copy --preserve-digests` of the same
#       already-built image from an OCI layout to a fresh distribution                       < 1
#       (and (3'): `mlambda push` of that image vs the same skopeo push)
#   (4) a second upload after one small file changed vs the first (local store, and through
#       HTTP with the bytes sent, counted by a relay: benches/count-relay.pl)              <= 5 %, < 1 MiB
#   (5) the peak RSS of each mlambda process, the registry server included                   <= 64 MiB
#   (6) pulling the weights blob from `mlambda registry serve` vs from distribution          <= 1
#   (7) the registry server's peak RSS over a push and a pull of a BLOB-sized blob (4G)   < 64 MiB
#   (8) 20 concurrent GETs of one 1 GiB blob from `mlambda registry serve` vs from
#       distribution: wall time for all 20, and each server's peak RSS         <= 1, <= 64 MiB
#   (9) a second model on an already-assembled runtime (python-3.11), pushed to a registry
#       that has the first: bytes sent (relay) vs the second model's payload    payload + config
# Every ratio to B is also given against B' = B with `openssl dgst -sha256` (SHA-NI where the
# CPU has it) in place of sha256sum: the physical limit of hashing + copying on this machine;
# (2) also against B'2, B' writing two copies at once (the local store's and the registry's).
# Usage: benches/run.sh            (SIZE=2G by default; SIZE=512M for a quick run)
#        MLAMBDA_BIN=path/to/mlambda benches/run.sh   to skip `cargo build --release`
#        BLOB=4G (default) the blob pushed and pulled for the server's RSS; BLOB=0 skips it
#        RSS_8G=1 also uploads an 8 GiB weights file into the local store, for its peak RSS
#        PULLS=0 skips (8); RUNTIME=0 skips (9) (which assembles the python-3.11 runtime from
#        Debian packages, so needs the Debian mirrors)
# Needs curl and the Debian packages time, docker-registry and skopeo (installed if missing).
# Benchmarks are not tests: this prints figures and asserts nothing.
set -euo pipefail

SIZE=${SIZE:-2G}
root=$(cd "$(dirname "$0")/.." && pwd)
BLOB=${BLOB:-4G}
work=$(mktemp -d "${TMPDIR:-/tmp}/mlambda-bench.XXXXXX")
servers=()
cleanup() {
    for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The peers are Debian packages; the docker-registry package starts a service on :5000 where
# systemd runs, which this script does not use.
missing=()
[ -x /usr/bin/time ] || missing+=(time)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages)" >&2
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
    $sudo systemctl disable --now docker-registry >/dev/null 2>&1 || true
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
# B': the same with openssl's SHA-256.
timed baseline-ssl bash -c 'openssl dgst -sha256 "$1/weights.bin" "$1"/small/* >/dev/null && cp -r "$1" "$2" && sync "$2/weights.bin"' _ "$model" "$work/copy"
base_ssl=$secs
rm -rf "$work/copy"
# B'2: B' with two durable copies written at once, as an upload through HTTP to a registry on
# the same disk makes them (the local store's and the registry's): the floor of (2).
timed baseline-two bash -c 'openssl dgst -sha256 "$1/weights.bin" "$1"/small/* >/dev/null && { cp -r "$1" "$2" & cp -r "$1" "$3" & wait; } && sync "$2/weights.bin" "$3/weights.bin"' _ "$model" "$work/copy" "$work/copy2"
base_two=$secs
rm -rf "$work/copy" "$work/copy2"
timed sha256sum sha256sum "$model/weights.bin"
t_sum=$secs
timed openssl openssl dgst -sha256 "$model/weights.bin"
t_ssl=$secs

# ---- local store: (1), (4), (5) ----
export MLAMBDA_HOME=$work/home
timed upload1 "$bin" upload --base scratch "$model"
t1=$secs
rss1=$rss_kib
echo "$((500 + 1))x" >>"$model/small/file1.txt"
timed upload2 "$bin" upload --base scratch "$model"
t2=$secs
rss2=$rss_kib
rm -rf "$work/home"

# repeat FILE: FILE's bytes over and over, until the reader has had enough.
repeat() { while cat "$1" 2>/dev/null; do :; done; }

if [ "${RSS_8G:-0}" = 1 ]; then
    # 8 GiB of weights: four copies of the random ones (the content does not matter for memory).
    big=$work/model8
    mkdir -p "$big"
    cp -r "$model/small" "$model/serving.yaml" "$big/"
    repeat "$model/weights.bin" | head -c 8G >"$big/weights.bin" || true
    timed upload8 env MLAMBDA_HOME="$work/home8" "$bin" upload --base scratch "$big"
    t8=$secs
    rss8=$rss_kib
    rm -rf "$big" "$work/home8"
fi

# ---- the registry servers ----
# hwm PID: the process's peak resident set so far, in KiB.
hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
# free_port: a port nothing listens on, for distribution (which cannot be given port 0).
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || {
            echo "$port"
            return
        }
    done
}
# serve_mlambda NAME: starts `mlambda registry serve` on a fresh store; sets $pid and $addr.
serve_mlambda() {
    local log=$work/$1.log
    : >"$log"
    MLAMBDA_HOME=$work/$1-home "$bin" registry serve --root "$work/$1" --addr 127.0.0.1:0 2>"$log" &
    pid=$!
    servers+=("$pid")
    addr=
    for _ in $(seq 1 100); do
        addr=$(sed -n 's|^serving .* at http://\([^/]*\)/v2/$|\1|p' "$log")
        [ -n "$addr" ] && return
        sleep 0.1
    done
    cat "$log" >&2
    exit 1
}
# serve_distribution NAME: starts CNCF distribution on a fresh data directory; sets $pid and $addr.
serve_distribution() {
    addr=127.0.0.1:$(free_port)
    mkdir -p "$work/$1"
    cat >"$work/$1.yml" <<YAML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $work/$1 }
  delete: { enabled: true }
http:
  addr: $addr
YAML
    docker-registry serve "$work/$1.yml" >"$work/$1.log" 2>&1 &
    pid=$!
    servers+=("$pid")
    for _ in $(seq 1 100); do
        curl -sf "http://$addr/v2/" >/dev/null && return
        sleep 0.1
    done
    cat "$work/$1.log" >&2
    exit 1
}
# relay NAME ADDR: a relay to ADDR that counts the bytes clients send (benches/count-relay.pl);
# sets $pid and $addr.
relay() {
    : >"$work/$1.count"
    perl "$root/benches/count-relay.pl" "${2##*:}" "$work/$1.count" >"$work/$1.port" &
    pid=$!
    servers+=("$pid")
    for _ in $(seq 1 100); do
        [ -s "$work/$1.port" ] && break
        sleep 0.1
    done
    addr=127.0.0.1:$(head -n 1 "$work/$1.port")
}
# sent NAME: the bytes counted by relay NAME, once every relayed connection has closed.
sent() {
    local lines
    for _ in $(seq 1 50); do
        lines=$(wc -l <"$work/$1.count")
        sleep 0.1
        [ "$lines" = "$(wc -l <"$work/$1.count")" ] && [ "$lines" -gt 0 ] && break
    done
    awk '{ s += $1 } END { print s + 0 }' "$work/$1.count"
}
stop() {
    kill "$1"
    wait "$1" 2>/dev/null || true
}
# put_blob NAME ADDR FILE DIGEST: a monolithic upload of FILE (POST, then PUT with the digest).
put_blob() {
    local location sep
    location=$(curl -sf -X POST -D - -o /dev/null "http://$2/v2/bench_model/blobs/uploads/" |
        tr -d '\r' | sed -n 's/^[Ll]ocation: *//p')
    case $location in http*) ;; *) location=http://$2$location ;; esac
    case $location in *\?*) sep='&' ;; *) sep='?' ;; esac
    timed "$1" curl -sf -X PUT -T "$3" -H 'Content-Type: application/octet-stream' \
        "$location${sep}digest=$4"
}
# reset_hwm PID: the peak RSS starts again from the current RSS (proc(5), clear_refs 5).
reset_hwm() { echo 5 >"/proc/$1/clear_refs"; }
# pull NAME ADDR DIGEST: one GET of a blob into /dev/null; its time in $secs.
pull() { timed "$1" curl -sf -o /dev/null "http://$2/v2/bench_model/blobs/$3"; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }
# The digest of the weights' layer: the largest blob of a store.
weights_digest() { find "$1" -type f -path '*/blobs/sha256/*' -printf '%s %f\n' | sort -n | tail -1 | sed 's/^[0-9]* /sha256:/'; }

# ---- (2) and (4) through HTTP, (5) of the server, against `mlambda registry serve` ----
serve_mlambda served
ml_pid=$pid
ml_addr=$addr
timed http1 env MLAMBDA_HOME="$work/home-http" "$bin" upload --base scratch --registry "http://$ml_addr" "$model"
t_http1=$secs
rss_http1=$rss_kib
echo 502y >>"$model/small/file2.txt"
# The second upload goes through a relay that counts what it sends.
relay second "$ml_addr"
relay_pid=$pid
timed http2 env MLAMBDA_HOME="$work/home-http" "$bin" upload --base scratch --registry "http://$addr" "$model"
t_http2=$secs
rss_http2=$rss_kib
sent2=$(sent second)
stop "$relay_pid"
weights=$(weights_digest "$work/served")
rm -rf "$work/home-http"

# ---- (3) against CNCF distribution: mlambda's build + push, skopeo's push, mlambda's push ----
serve_distribution dist
d_pid=$pid
d_addr=$addr
timed dist env MLAMBDA_HOME="$work/home-dist" "$bin" upload --base scratch --registry "http://$d_addr" "$model"
t_dist=$secs
rss_dist=$rss_kib
# skopeo pushes the image mlambda built, from the local store's OCI layout (tag = version 1),
# to a distribution that has none of it; then `mlambda push` does the same.
serve_distribution skopeo
s_pid=$pid
timed skopeo skopeo copy --quiet --dest-tls-verify=false --preserve-digests \
    "oci:$work/home-dist/registry/bench_model:1" "docker://$addr/bench_model:1"
t_skopeo=$secs
stop "$s_pid"
rm -rf "$work/skopeo"
serve_distribution push
p_pid=$pid
timed push env MLAMBDA_HOME="$work/home-dist" "$bin" push bench_model:1 --registry "http://$addr"
t_push=$secs
stop "$p_pid"
rm -rf "$work/push" "$work/home-dist"

# ---- (6) the same blob from both servers, in turns, the best of three each ----
t_pull_ml=
t_pull_dist=
for i in 1 2 3; do
    pull "pull-ml-$i" "$ml_addr" "$weights"
    t_pull_ml=$(min "$secs" "${t_pull_ml:-$secs}")
    pull "pull-dist-$i" "$d_addr" "$weights"
    t_pull_dist=$(min "$secs" "${t_pull_dist:-$secs}")
done
rss_server=$(hwm "$ml_pid")
stop "$ml_pid"
stop "$d_pid"
rm -rf "$work/served" "$work/dist"

# ---- the server's peak RSS over a push and a pull of one BLOB-sized blob ----
if [ "$BLOB" != 0 ]; then
    blob=$work/blob
    repeat "$model/weights.bin" | head -c "$BLOB" >"$blob" || true
    blob_digest=sha256:$(openssl dgst -sha256 -r "$blob" | cut -d' ' -f1)
    blob_bytes=$(stat -c %s "$blob")
    serve_mlambda blobs
    b_pid=$pid
    put_blob blob-push "$addr" "$blob" "$blob_digest"
    t_blob_push=$secs
    rss_blob_push=$(hwm "$b_pid")
    timed blob-pull curl -sf -o /dev/null "http://$addr/v2/bench_model/blobs/$blob_digest"
    t_blob_pull=$secs
    rss_blob=$(hwm "$b_pid")
    stop "$b_pid"
    rm -rf "$blob" "$work/blobs"
fi

# ---- (8) 20 concurrent pulls of one 1 GiB blob, from each server ----
if [ "${PULLS:-1}" = 1 ]; then
    blob=$work/blob1g
    repeat "$model/weights.bin" | head -c 1G >"$blob" || true
    blob_digest=sha256:$(openssl dgst -sha256 -r "$blob" | cut -d' ' -f1)
    # many_pulls NAME ADDR: 20 GETs at once into /dev/null; the time for all in $secs.
    many_pulls() {
        timed "$1" bash -c 'for _ in $(seq 1 20); do curl -sf -o /dev/null "$1" & done; fail=0
            for job in $(jobs -p); do wait "$job" || fail=1; done; exit $fail' _ \
            "http://$2/v2/bench_model/blobs/$blob_digest"
    }
    serve_mlambda pulls-ml
    m20_pid=$pid
    m20_addr=$addr
    serve_distribution pulls-dist
    d20_pid=$pid
    d20_addr=$addr
    put_blob put-ml "$m20_addr" "$blob" "$blob_digest"
    put_blob put-dist "$d20_addr" "$blob" "$blob_digest"
    rm -f "$blob"
    # One GET each first, so both serve from the page cache; the peaks count from here.
    pull warm-ml "$m20_addr" "$blob_digest"
    pull warm-dist "$d20_addr" "$blob_digest"
    reset_hwm "$m20_pid"
    reset_hwm "$d20_pid"
    t20_ml=
    t20_dist=
    for i in 1 2; do
        many_pulls "pulls-ml-$i" "$m20_addr"
        t20_ml="${t20_ml:+$t20_ml, }$secs"
        many_pulls "pulls-dist-$i" "$d20_addr"
        t20_dist="${t20_dist:+$t20_dist, }$secs"
    done
    best20_ml=$(echo "$t20_ml" | tr -d ' ' | tr ',' '\n' | sort -g | head -1)
    best20_dist=$(echo "$t20_dist" | tr -d ' ' | tr ',' '\n' | sort -g | head -1)
    rss20_ml=$(hwm "$m20_pid")
    rss20_dist=$(hwm "$d20_pid")
    stop "$m20_pid"
    stop "$d20_pid"
    rm -rf "$work/pulls-ml" "$work/pulls-dist"
fi

# ---- (9) a second model on an assembled runtime, to a registry that has the first ----
if [ "${RUNTIME:-1}" = 1 ]; then
    for name in first second; do
        mkdir -p "$work/$name/src"
        printf 'name: %s\nmodel-type: python:3.11\npayload: [src/, data.bin]\ncontract:\n  run:\n    inputs:\n      x: {type: double, shape: [-1]}\n    outputs:\n      y: {type: double, shape: [-1]}\n' \
            "$name" >"$work/$name/serving.yaml"
        echo "def run(x): return {'y': x}  # $name" >"$work/$name/src/func_main.py"
        head -c 8M /dev/urandom >"$work/$name/data.bin"
    done
    payload2=$(du -cb --apparent-size "$work/second/src/func_main.py" "$work/second/data.bin" | tail -1 | cut -f1)
    serve_distribution runtime-dist
    r_pid=$pid
    r_addr=$addr
    # Both pushes go through the same relay: the catalogue remembers where blobs were pushed
    # by the registry's address, and mounts them from there.
    relay runtime "$r_addr"
    rr_pid=$pid
    # The runtime assembled and the first model pushed: not measured.
    MLAMBDA_HOME=$work/home-runtime "$bin" upload "$work/first" --registry "http://$addr" >"$work/first.out" 2>&1 ||
        { cat "$work/first.out" >&2; exit 1; }
    sent runtime >/dev/null
    : >"$work/runtime.count"
    timed second-model env MLAMBDA_HOME="$work/home-runtime" "$bin" upload "$work/second" --registry "http://$addr"
    t_second=$secs
    sent_second=$(sent runtime)
    stop "$rr_pid"
    runtime_bytes=$(MLAMBDA_HOME=$work/home-runtime "$bin" show second:1 --json |
        python3 -c 'import json, sys; v = json.load(sys.stdin); print(v.get("size", v.get("image_size", "?")))' 2>/dev/null || echo "?")
    stop "$r_pid"
    rm -rf "$work/home-runtime" "$work/runtime-dist" "$work/first" "$work/second"
fi

pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "inf" }'; }
echo "data: $SIZE weights + 200 small files ($bytes bytes); $(nproc) cores; $(date -u +%Y-%m-%d)"
echo "info: sha256sum ${t_sum} s, openssl dgst -sha256 ${t_ssl} s for the weights (CPU sha_ni: $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no))"
echo "(1) first upload ${t1} s vs baseline B (sha256sum + cp + fsync) ${base} s: $(ratio "$t1" "$base")x B (target <= 1.30)"
echo "(1') the same vs B' = B with openssl's SHA-256 (${base_ssl} s): $(ratio "$t1" "$base_ssl")x"
echo "(2) first upload through HTTP to mlambda registry serve (build + push) ${t_http1} s: $(ratio "$t_http1" "$base")x B (target <= 2), $(ratio "$t_http1" "$base_ssl")x B', $(ratio "$t_http1" "$base_two")x B'2 (two durable copies at once: ${base_two} s)"
echo "(3) build + push to distribution ${t_dist} s vs skopeo copy --preserve-digests (push only) ${t_skopeo} s: $(ratio "$t_dist" "$t_skopeo")x (target < 1); $(ratio "$t_dist" "$base")x B, $(ratio "$t_dist" "$base_ssl")x B'"
echo "(3') mlambda push alone (the same image, to a fresh distribution) ${t_push} s: $(ratio "$t_push" "$t_skopeo")x skopeo's push, $(ratio "$t_push" "$base_ssl")x B'"
echo "(4) second upload, one small file changed: ${t2} s = $(pct "$t2" "$t1") % of the first (target <= 5 %)"
echo "(4') the same through HTTP: ${t_http2} s = $(pct "$t_http2" "$t_http1") % of the first; $sent2 bytes sent, headers included (target < 1 MiB = 1048576)"
echo "(5) peak RSS: uploads $(mib "$rss1"), $(mib "$rss2") MiB (local), $(mib "$rss_http1"), $(mib "$rss_http2") MiB (HTTP), $(mib "$rss_dist") MiB (distribution); registry server $(mib "$rss_server") MiB (target <= 64 MiB)"
if [ "${RSS_8G:-0}" = 1 ]; then
    echo "(5') 8 GiB weights into the local store: ${t8} s, peak RSS $(mib "$rss8") MiB (target <= 64 MiB)"
fi
echo "(6) GET of the weights blob (best of 3, in turns): mlambda registry serve ${t_pull_ml} s vs distribution ${t_pull_dist} s: $(ratio "$t_pull_ml" "$t_pull_dist")x (target <= 1)"
if [ "$BLOB" != 0 ]; then
    echo "(7) a $blob_bytes-byte blob: PUT in ${t_blob_push} s, GET in ${t_blob_pull} s; registry server peak RSS $(mib "$rss_blob_push") MiB after the push, $(mib "$rss_blob") MiB after the pull (target < 64 MiB)"
fi
if [ "${PULLS:-1}" = 1 ]; then
    echo "(8) 20 concurrent GETs of a 1 GiB blob, two rounds in turns: mlambda registry serve $t20_ml s vs distribution $t20_dist s: $(ratio "$best20_ml" "$best20_dist")x best to best (target <= 1); peak RSS over the rounds: mlambda $(mib "$rss20_ml") MiB (target <= 64), distribution $(mib "$rss20_dist") MiB"
fi
if [ "${RUNTIME:-1}" = 1 ]; then
    echo "(9) second model on the assembled python-3.11 runtime, to a distribution that has the first: ${t_second} s; $sent_second bytes sent (headers included) for a payload of $payload2 bytes: $(ratio "$sent_second" "$payload2")x the payload (target: payload + config only); image $runtime_bytes bytes"
fi
