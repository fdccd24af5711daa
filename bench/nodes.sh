#!/usr/bin/env bash
# Many nodes, one upstream: N cri-imaged daemons (own roots and sockets, like N nodes) pull
# the same image, (a) each straight from the upstream registry, (b) through one
# pull-through cache (docker-registry in proxy mode, a registries.conf mirror) that is cold
# and asked by all N at once, (c) through that cache warmed by one node, then the other
# N-1 at once. Prints wall time and the blob bytes the upstream served (from its access
# log), per case. One run per case; each case gets fresh daemons, a fresh cache and the
# same upstream.
#
#   bench/nodes.sh                      # N=3, 8 x 16 MiB layers
#   N=10 LAYERS=4 LAYER_BYTES=33554432 bench/nodes.sh
#
# Overrides: N (3), LAYERS (8), LAYER_BYTES (16777216), BENCH_TMPDIR (/var/tmp).
# Needs docker-registry and curl (apt-get install docker-registry curl); installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-3}
LAYERS=${LAYERS:-8}
LAYER_BYTES=${LAYER_BYTES:-16777216}

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }
[ -x /usr/bin/docker-registry ] || die "docker-registry not found: apt-get install docker-registry"
command -v curl >/dev/null || die "curl not found: apt-get install curl"

cargo build --release --quiet --bin cri-imaged --example cri-bench --example bench-images
TARGET=${CARGO_TARGET_DIR:-$PWD/target}/release
DAEMON=$TARGET/cri-imaged
CRI_BENCH=$TARGET/examples/cri-bench
BENCH_IMAGES=$TARGET/examples/bench-images

TMP=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/cri-nodes.XXXXXX")
PIDS=()
stop_pids() {
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
cleanup() {
  set +e
  stop_pids "${PIDS[@]}"
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# registry DIR PORT [REMOTE]: a docker-registry with its access log on; its PID in REG_PID.
registry() {
  mkdir -p "$1"
  {
    printf 'version: 0.1\nlog:\n  accesslog:\n    disabled: false\n  level: warn\n'
    printf 'storage:\n  filesystem:\n    rootdirectory: %s/storage\n' "$1"
    printf 'http:\n  addr: 127.0.0.1:%s\n' "$2"
    [ -z "${3:-}" ] || printf 'proxy:\n  remoteurl: %s\n' "$3"
  } >"$1/config.yml"
  /usr/bin/docker-registry serve "$1/config.yml" >"$1/log" 2>&1 &
  REG_PID=$!
  PIDS+=("$REG_PID")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/v2/" >/dev/null && return; sleep 0.1; done
  die "registry $1 did not start"
}

# Bytes of 200 answers to blob GETs in an access log (combined format: status, then size).
blob_bytes() {
  awk '/"GET \/v2\/[^ ]*\/blobs\/sha256:/ { for (i = 1; i <= NF; i++) if ($i ~ /HTTP\/1/) { if ($(i+1) == 200) s += $(i+2); break } } END { printf "%d", s }' "$1"
}

UP_PORT=$((20000 + RANDOM % 20000))
UP=127.0.0.1:$UP_PORT
registry "$TMP/upstream" "$UP_PORT"
log "pushing bench/app:1 ($LAYERS x $LAYER_BYTES bytes) to the upstream"
"$BENCH_IMAGES" "$UP" image bench/app:1 "$LAYERS" "$LAYER_BYTES" >/dev/null
IMAGE_BYTES=$((LAYERS * LAYER_BYTES))

# nodes CASE MIRROR: starts N daemons for CASE (MIRROR empty: none); PIDs in NODE_PIDS.
nodes() {
  NODE_PIDS=()
  for i in $(seq "$N"); do
    local d=$TMP/$1/node$i
    mkdir -p "$d"
    if [ -n "$2" ]; then
      printf '[[registry]]\nlocation = "%s"\n[[registry.mirror]]\nlocation = "%s"\n' "$UP" "$2" >"$d/registries.conf"
    else
      : >"$d/registries.conf"
    fi
    "$DAEMON" --config "$d/none.toml" --registries-conf "$d/registries.conf" \
      --auth-file "$d/none.json" --certs-dir "$d/certs.d" \
      --root "$d/root" --listen "$d/sock" --log-level warn >>"$d/log" 2>&1 &
    NODE_PIDS+=($!)
    PIDS+=($!)
    "$CRI_BENCH" --endpoint "$d/sock" ready 60 || die "node $i did not start"
  done
}

# pull_all CASE FROM TO: nodes FROM..TO pull at once; prints the wall time.
pull_all() {
  local t0 t1 pids=()
  t0=$(date +%s.%N)
  for i in $(seq "$2" "$3"); do
    "$CRI_BENCH" --endpoint "$TMP/$1/node$i/sock" pull "$UP/bench/app:1" >/dev/null 2>>"$TMP/$1/node$i/log" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "$1: a pull failed"; done
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

RESULTS=()
served_since() { echo $(($(blob_bytes "$TMP/upstream/log") - $1)); }

log "case direct: $N nodes pull from the upstream at once"
nodes direct ""
before=$(blob_bytes "$TMP/upstream/log")
t=$(pull_all direct 1 "$N")
RESULTS+=("| $N nodes straight from the upstream, at once | $t | $(served_since "$before") |")
stop_pids "${NODE_PIDS[@]}"

log "case cold: $N nodes through a cold cache at once"
CACHE_PORT=$((UP_PORT + 1))
registry "$TMP/cache-cold" "$CACHE_PORT" "http://$UP"
cold_pid=$REG_PID
nodes cold "127.0.0.1:$CACHE_PORT"
before=$(blob_bytes "$TMP/upstream/log")
t=$(pull_all cold 1 "$N")
sleep 2 # the cache's own store fetches finish after the clients are served
RESULTS+=("| $N nodes through a cold pull-through cache, at once | $t | $(served_since "$before") |")
stop_pids "${NODE_PIDS[@]}" "$cold_pid"

log "case warm: one node warms a new cache, then $((N - 1)) at once"
CACHE_PORT=$((UP_PORT + 2))
registry "$TMP/cache-warm" "$CACHE_PORT" "http://$UP"
nodes warm "127.0.0.1:$CACHE_PORT"
before=$(blob_bytes "$TMP/upstream/log")
t1=$(pull_all warm 1 1)
for _ in $(seq 200); do
  n=$(find "$TMP/cache-warm/storage" -path '*/blobs/sha256/*/data' 2>/dev/null | wc -l)
  ((n >= LAYERS + 1)) && break
  sleep 0.1
done
first=$(served_since "$before")
t2=$(pull_all warm 2 "$N")
RESULTS+=("| first node through a new cache | $t1 | $first |")
RESULTS+=("| then $((N - 1)) nodes at once, cache warm | $t2 | $(($(served_since "$before") - first)) |")

echo "| $N nodes, image $LAYERS x $LAYER_BYTES bytes ($IMAGE_BYTES of layers) | wall time (s) | blob bytes the upstream served |"
echo "|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
echo "(one run per case, $(nproc) cores; docker-registry $(/usr/bin/docker-registry --version 2>/dev/null | awk '{print $3}') as upstream and cache, all on loopback)"
