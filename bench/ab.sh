#!/usr/bin/env bash
# A/B of two cri-imaged builds: BEFORE (a binary, e.g. main's release build) and this
# tree's release build, side by side on one registry, interleaved run by run. Prints
# ListImages p50/p99 with IMAGES images recorded and the cold pull of one image.
#
#   BEFORE=/tmp/cri-imaged-main bench/ab.sh
#   BEFORE=/tmp/cri-imaged-main DAEMON_ARGS="--unpack true" IMAGES=0 \
#     PULL="files bench/files:1 8 2000 8192" bench/ab.sh    # pull to snapshots, 8 gzip layers
#
# Overrides: RUNS (5), IMAGES (5000; 0: no listing rows), LIST_CALLS (500), PULL (the
# bench-images arguments of the pulled image; default "image bench/big:1 10 41943040",
# 10 x 40 MiB), DAEMON_ARGS (given to both daemons), BENCH_TMPDIR (/var/tmp).
# Needs docker-registry and curl (apt-get install docker-registry curl). Used for: the
# cost of src/http2/ (BENCHMARKS.md), pipelined parallel unpack.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
IMAGES=${IMAGES:-5000}
LIST_CALLS=${LIST_CALLS:-500}
PULL=${PULL:-"image bench/big:1 10 41943040"}
DAEMON_ARGS=${DAEMON_ARGS:-}
read -r -a PULL_ARGS <<<"$PULL"
PULL_NAME=${PULL_ARGS[1]}
BEFORE=${BEFORE:?set BEFORE to a cri-imaged binary built without src/http2/}

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

cargo build --release --quiet --bin cri-imaged --example cri-bench --example bench-images
TARGET=${CARGO_TARGET_DIR:-$PWD/target}/release
AFTER=$TARGET/cri-imaged
CRI_BENCH=$TARGET/examples/cri-bench
BENCH_IMAGES=$TARGET/examples/bench-images

TMP=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/cri-ab.XXXXXX")
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$((20000 + RANDOM % 40000))
REG=127.0.0.1:$PORT
mkdir -p "$TMP/registry"
cat >"$TMP/registry/config.yml" <<YML
version: 0.1
log:
  accesslog:
    disabled: true
  level: warn
storage:
  filesystem:
    rootdirectory: $TMP/registry/storage
http:
  addr: $REG
YML
/usr/bin/docker-registry serve "$TMP/registry/config.yml" >"$TMP/registry/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
curl -sf "http://$REG/v2/" >/dev/null || die "registry did not start"

log "pushing $PULL_NAME ($PULL) and $IMAGES small images"
"$BENCH_IMAGES" "$REG" "${PULL_ARGS[@]}" >/dev/null
((IMAGES == 0)) || "$BENCH_IMAGES" "$REG" fill bench/fill 0 "$IMAGES" >/dev/null

declare -A PID
start() { # name binary
  mkdir -p "$TMP/$1"
  "$2" --config "$TMP/$1/none.toml" --registries-conf "$TMP/$1/none.conf" \
    --auth-file "$TMP/$1/none.json" --certs-dir "$TMP/$1/certs.d" \
    --root "$TMP/$1/root" --listen "$TMP/$1/sock" --log-level warn $DAEMON_ARGS >>"$TMP/$1/log" 2>&1 &
  PIDS+=($!)
  PID[$1]=$!
  "$CRI_BENCH" --endpoint "$TMP/$1/sock" ready 60 || die "$1 did not start"
}
start before "$BEFORE"
start after "$AFTER"
if ((IMAGES > 0)); then
  for e in before after; do
    log "$e: recording $IMAGES images"
    "$CRI_BENCH" --endpoint "$TMP/$e/sock" fill "$REG/bench/fill" 0 "$IMAGES" 4 >/dev/null
  done
fi

now() { date +%s.%N; }
for r in $(seq "$RUNS"); do
  for e in before after; do
    if ((IMAGES > 0)); then
      "$CRI_BENCH" --endpoint "$TMP/$e/sock" list "$LIST_CALLS" | awk -v e="$e" '$1=="ListImages"{print e, "list", $2, $3}' >>"$TMP/results"
    fi
    "$CRI_BENCH" --endpoint "$TMP/$e/sock" rmi "$REG/$PULL_NAME" 2>/dev/null || true
    # No dirty pages of the build before (its snapshots sync in the background) to write back.
    sync
    echo 5 >"/proc/${PID[$e]}/clear_refs" # VmHWM := VmRSS
    t=$("$CRI_BENCH" --endpoint "$TMP/$e/sock" pull "$REG/$PULL_NAME" 2>>"$TMP/$e/log") || die "$e: pull failed: $(tail -3 "$TMP/$e/log")"
    echo "$e pull $t" >>"$TMP/results"
    echo "$e peak $(awk '$1=="VmHWM:"{printf "%.1f", $2/1024}' "/proc/${PID[$e]}/status")" >>"$TMP/results"
  done
  log "run $r of $RUNS done"
done

median() { sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "| build | ListImages p50 (ms), $IMAGES images | ListImages p99 (ms) | cold pull of $PULL_NAME (s) | peak RSS during the pull (MiB) |"
echo "|---|---|---|---|---|"
for e in before after; do
  p50=$(awk -v e="$e" '$1==e && $2=="list"{print $3}' "$TMP/results" | median)
  p99=$(awk -v e="$e" '$1==e && $2=="list"{print $4}' "$TMP/results" | median)
  pull=$(awk -v e="$e" '$1==e && $2=="pull"{print $3}' "$TMP/results" | median)
  peak=$(awk -v e="$e" '$1==e && $2=="peak"{print $3}' "$TMP/results" | median)
  echo "| $e | $p50 | $p99 | $pull | $peak |"
done
echo "(medians of $RUNS interleaved runs; each ListImages figure is the p50/p99 of $LIST_CALLS calls; daemon args: ${DAEMON_ARGS:-none}; image: $PULL)"
