#!/usr/bin/env bash
# Side-by-side benchmark of cri-imaged against containerd 1.6 and skopeo (containers/image,
# CRI-O's pull engine: to oci: for the fetch, to containers-storage: with the overlay driver
# for a pull to a runnable rootfs as CRI-O does it), on one machine, one loopback registry and the same images, in one
# run. See BENCHMARKS.md for the latest table and how to read it.
#
#   bench/pull.sh            full run (RUNS=5, images 10/1000/5000; ~15-20 min on 2 cores)
#   bench/pull.sh quick      a smoke run (RUNS=3, images 10/200, fewer latency samples)
#
# Environment overrides: RUNS, FILL_COUNTS ("10 1000 5000"), LAT_ITER (latency samples per
# call), SKIP_PULL=1, SKIP_META=1, SKIP_CONC=1 (no many-pulls/growth section; CONC_N,
# CONC_FILES, GROWTH_LAYERS, GROWTH_CONC), SKIP_NET=1 (no shaped-network section;
# NET_SHAPES "100:20 1000:20" = Mbit/s:RTT ms), BENCH_TMPDIR (where the temp dir goes; default
# /var/tmp), BENCH_FS=journal (stores and registry on a loop-mounted ext4 with a journal,
# as on a node; BENCH_FS_GB its size), BENCH_OUT (also write the report there), BIG_LAYERS / BIG_LAYER_MIB, REAL_TREES (the
# system trees tarred as layers 2… of the realistic image; default "usr/include
# usr/share/doc usr/lib/python3", any that exist), SKIP_REAL=1 (no realistic image).
#
# The realistic image ("debian"): layer 1 a Debian bookworm minbase rootfs made with
# mmdebstrap through the machine's apt mirror, then one layer per system tree — gzip,
# ~25k files. Its pulls go to a runnable rootfs only (the engines that unpack).
#
# It installs what is missing (docker-registry, skopeo, containerd, curl, openssl,
# mmdebstrap) with apt, builds cri-imaged in release, starts a private docker-registry on 127.0.0.1, a
# private cri-imaged and a private containerd (own root, state, sockets; plain HTTP to the
# registry), pushes the images, then:
#   1. cold pulls, engines interleaved run by run (image absent locally before each run);
#   2. metadata latency (ListImages, ImageStatus by tag/ID/12-hex ID, ImageFsInfo;
#      RemoveImage of the last 20 images, pulled back after) with N
#      images in each store, filled through the registry with PullImage;
#   3. start-up time and RSS with the largest N;
#   4. many pulls at once (CONC_N different images; one image CONC_N times) and
#   5. growth: wall time against concurrent pulls and against layer count (1…128);
#   6. realistic networks: the registry behind examples/shape-proxy (bandwidth, RTT),
#      with the HTTP requests each engine sends per pull.
# Everything it starts is stopped by PID and its temp dir deleted on exit. Needs root
# (containerd).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_DIR=$PWD

QUICK=0
[ "${1:-}" = quick ] && QUICK=1
if ((QUICK)); then
  RUNS=${RUNS:-3}; FILL_COUNTS=${FILL_COUNTS:-"10 200"}; LAT_ITER=${LAT_ITER:-50}
else
  RUNS=${RUNS:-5}; FILL_COUNTS=${FILL_COUNTS:-"10 1000 5000"}; LAT_ITER=${LAT_ITER:-200}
fi
BIG_LAYERS=${BIG_LAYERS:-10}
BIG_LAYER_MIB=${BIG_LAYER_MIB:-40}

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (containerd needs it)"

# --- what is missing gets installed ---------------------------------------------------
need=()
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v containerd >/dev/null || need+=(containerd)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
[ -n "${SKIP_REAL:-}" ] || command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if ((${#need[@]})); then
  log "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

log "building cri-imaged and the bench clients (release)"
cargo build --release --quiet --bin cri-imaged --example cri-bench --example bench-images --example shape-proxy
TARGET=${CARGO_TARGET_DIR:-$REPO_DIR/target}/release
CRI_IMAGED=$TARGET/cri-imaged
CRI_BENCH=$TARGET/examples/cri-bench
BENCH_IMAGES=$TARGET/examples/bench-images

# --- temp dir and clean-up ------------------------------------------------------------
# BENCH_FS=journal: every engine's store (and the registry) on a fresh ext4 with a journal,
# as mkfs.ext4 makes it and a node's /var/lib has it, in a loop-mounted sparse file
# (BENCH_FS_GB, default 24). Without it the temp dir's own file system is used; this
# machine's root ext4 has no journal, where inode allocation skips every inode freed in the
# last minute one by one (see BENCHMARKS.md), which makes each engine's pull depend on
# what was removed just before it.
FSDIR=
if [ "${BENCH_FS:-}" = journal ]; then
  FSDIR=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/cri-bench-fs.XXXXXX")
  truncate -s "${BENCH_FS_GB:-24}G" "$FSDIR/ext4.img"
  mkfs.ext4 -q -F "$FSDIR/ext4.img" >&2
  mkdir "$FSDIR/mnt"
  mount -o loop "$FSDIR/ext4.img" "$FSDIR/mnt" || { rm -rf "$FSDIR"; die "cannot loop-mount an ext4 image here"; }
  TMP=$(mktemp -d "$FSDIR/mnt/cri-bench.XXXXXX")
elif [ -n "${BENCH_FS:-}" ]; then
  die "BENCH_FS is journal or unset, not $BENCH_FS"
else
  TMP=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/cri-bench.XXXXXX")
fi
PIDS=()
REPORT=$TMP/report.md
# "ext4 with a journal" / "ext4 without a journal" / the type, for the directory $1.
fs_of() {
  local type dev
  type=$(df -T "$1" | awk 'NR==2{print $2}')
  dev=$(basename "$(df "$1" | awk 'NR==2{print $1}')")
  if [ "$type" = ext4 ] && [ -r "/sys/fs/ext4/$dev/journal_task" ]; then
    if [ "$(cat "/sys/fs/ext4/$dev/journal_task")" = "<none>" ]; then
      echo "ext4 without a journal"
    else
      echo "ext4 with a journal"
    fi
  else
    echo "$type"
  fi
}
cleanup() {
  set +e # clean up everything, whatever fails
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # Mounts an overlay unpack may have left below our root (none expected).
  if command -v findmnt >/dev/null; then
    findmnt -rn -o TARGET | { grep "^$TMP/" || true; } | sort -r | while read -r m; do umount "$m"; done
  fi
  rm -rf "$TMP"
  if [ -n "$FSDIR" ]; then
    umount "$FSDIR/mnt"
    rm -rf "$FSDIR"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { # removes $1 from PIDS after it was stopped
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

stop_pid() { # SIGTERM, wait (bounded), SIGKILL
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
  die "no free port"
}

now() { date +%s.%N; }
# Wall seconds of a command (stdout discarded, stderr to the log).
timed() { local t0 t1; t0=$(now); "$@" >/dev/null 2>>"$TMP/cmd.log" || { tail -5 "$TMP/cmd.log" >&2; die "failed: $*"; }; t1=$(now); awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f\n", b-a}'; }
kb() { awk -v k="$2" '$1==k":"{print $2}' "/proc/$1/status"; } # kB of a /proc status field
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
reset_peak() { echo 5 >"/proc/$1/clear_refs"; } # VmHWM := VmRSS

# --- registry -----------------------------------------------------------------------
PORT=$(free_port)
REG=127.0.0.1:$PORT
mkdir -p "$TMP/registry"
cat >"$TMP/registry/config.yml" <<EOF
version: 0.1
log:
  accesslog:
    disabled: true
  level: warn
storage:
  filesystem:
    rootdirectory: $TMP/registry/storage
  delete:
    enabled: true
http:
  addr: $REG
EOF
/usr/bin/docker-registry serve "$TMP/registry/config.yml" >"$TMP/registry/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
curl -sf "http://$REG/v2/" >/dev/null || die "registry did not start: $(tail -5 "$TMP/registry/log")"
log "registry on $REG"

# --- cri-imaged ---------------------------------------------------------------------
CRI_SOCK=$TMP/cri/cri-imaged.sock
CRI_ROOT=$TMP/cri/root
CRI_PID=
STARTUP= # seconds from spawn to the first ListImages answered, set by start_*
# A second cri-imaged with `unpack` on (own root and socket): pulls to runnable snapshots,
# the work containerd's CRI pull includes.
CRIU_SOCK=$TMP/criu/cri-imaged.sock
CRIU_ROOT=$TMP/criu/root
CRIU_PID=
start_one_cri() { # dir root socket extra-args...; sets STARTED_PID
  local dir=$1 root=$2 sock=$3 t0 t1
  shift 3
  mkdir -p "$dir"
  t0=$(now)
  # Files that do not exist: defaults, and nothing from the host's configuration.
  "$CRI_IMAGED" --config "$dir/none.toml" --registries-conf "$dir/none.conf" \
    --auth-file "$dir/none.json" --certs-dir "$dir/certs.d" \
    --root "$root" --listen "$sock" --log-level warn "$@" >>"$dir/log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  "$CRI_BENCH" --endpoint "$sock" ready 120 || die "cri-imaged did not start: $(tail -5 "$dir/log")"
  t1=$(now)
  STARTUP=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
}
start_cri() { # blobs only (as root, unpack is on by default)
  start_one_cri "$TMP/cri" "$CRI_ROOT" "$CRI_SOCK" --unpack false
  CRI_PID=$STARTED_PID
}
start_criu() {
  start_one_cri "$TMP/criu" "$CRIU_ROOT" "$CRIU_SOCK" --unpack true
  CRIU_PID=$STARTED_PID
}

# --- containerd ---------------------------------------------------------------------
CTRD=$TMP/ctrd
CTRD_SOCK=$CTRD/containerd.sock
CTRD_PID=
SNAPSHOTTER=${SNAPSHOTTER:-overlayfs}
write_ctrd_config() {
  mkdir -p "$CTRD/certs.d/$REG" "$CTRD/cni/bin" "$CTRD/cni/conf"
  cat >"$CTRD/certs.d/$REG/hosts.toml" <<EOF
server = "http://$REG"
[host."http://$REG"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$SNAPSHOTTER"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CTRD/cni/bin"
    conf_dir = "$CTRD/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CTRD/certs.d"
EOF
}
start_ctrd() {
  local t0 t1
  t0=$(now)
  containerd --config "$CTRD/config.toml" >>"$CTRD/log" 2>&1 &
  CTRD_PID=$!
  PIDS+=("$CTRD_PID")
  "$CRI_BENCH" --endpoint "$CTRD_SOCK" ready 120 || die "containerd's CRI did not answer: $(grep -i -m5 'error\|fail' "$CTRD/log")"
  t1=$(now)
  STARTUP=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
}
ctr_() { ctr --address "$CTRD_SOCK" "$@"; }

# --- CRI-O's engine: containers/image into containers/storage, overlay driver ----------
CS=$TMP/crio
mkdir -p "$CS"
cat >"$CS/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$CS/graph"
runroot = "$CS/run"
EOF
crio_clean() { # a fresh store for every pull (the driver bind-mounts its own directory)
  if mountpoint -q "$CS/graph/overlay"; then umount "$CS/graph/overlay"; fi
  rm -rf "$CS/graph" "$CS/run"
}
crio_pull() {
  CONTAINERS_STORAGE_CONF=$CS/storage.conf skopeo --insecure-policy copy -q \
    --src-tls-verify=false "docker://$1" "containers-storage:$1"
}

write_ctrd_config
start_cri
start_criu
start_ctrd
if ! ctr_ plugins ls 2>/dev/null | awk -v s="$SNAPSHOTTER" '$2==s && $4=="ok"' | grep -q .; then
  log "snapshotter $SNAPSHOTTER unavailable here; containerd uses native"
  SNAPSHOTTER=native
  stop_pid "$CTRD_PID"
  write_ctrd_config
  start_ctrd
fi
log "cri-imaged pid $CRI_PID, cri-imaged --unpack true pid $CRIU_PID, containerd pid $CTRD_PID (snapshotter $SNAPSHOTTER)"

# --- report header --------------------------------------------------------------------
{
  echo "## Run $(date -u +%FT%TZ)$( ((QUICK)) && echo ' (quick mode)')"
  echo
  echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)," \
    "$(awk '/MemTotal/{printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)," \
    "sha extensions: $(grep -q -w sha_ni /proc/cpuinfo && echo sha_ni || echo none);" \
    "kernel $(uname -r); stores and registry on $(fs_of "$TMP")"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- versions: $("$CRI_IMAGED" --version 2>/dev/null || echo cri-imaged), $(containerd --version | awk '{print "containerd", $3}'), $(skopeo --version), $(curl --version | head -1 | cut -d' ' -f1-2)"
  echo "- runs: $RUNS per engine and image, interleaved; times are wall seconds of the client command"
} >>"$REPORT"

# --- 1. cold pulls ------------------------------------------------------------------
cri_clean() { "$CRI_BENCH" --endpoint "${2:-$CRI_SOCK}" rmi "$1" >/dev/null; }
ctrd_clean() { # every image of namespace $1, content and snapshots collected at once
  local refs
  refs=$(ctr_ -n "$1" images ls -q)
  [ -z "$refs" ] || ctr_ -n "$1" images rm --sync $refs >/dev/null
}
blobs_left() { find "$CRI_ROOT/blobs/sha256" -type f | wc -l; }

declare -A T # T[engine,image] = "t1 t2 …"
stats() { # median min max of the numbers given
  printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.3f %.3f %.3f\n", m, v[1], v[NR]}'
}

if [ -z "${SKIP_PULL:-}" ]; then
  log "pushing the pull images"
  mkdir -p "$TMP/lists"
  "$BENCH_IMAGES" "$REG" image bench/big:1 "$BIG_LAYERS" $((BIG_LAYER_MIB << 20)) "$TMP/lists/big" >/dev/null
  "$BENCH_IMAGES" "$REG" image bench/small50:1 50 16384 "$TMP/lists/small50" >/dev/null
  "$BENCH_IMAGES" "$REG" image bench/one1m:1 1 1048576 "$TMP/lists/one1m" >/dev/null
  # Real-looking layers: gzip, 8 of 2,000 files of 8 KiB (a whiteout and a hard link each).
  "$BENCH_IMAGES" "$REG" files bench/files:1 8 2000 8192 "$TMP/lists/files" >/dev/null
  IMAGES=(big small50 one1m files)
  if [ -z "${SKIP_REAL:-}" ]; then
    log "making the realistic image: mmdebstrap minbase + system trees"
    mkdir -p "$TMP/real"
    mmdebstrap --quiet --variant=minbase bookworm "$TMP/real/0-minbase.tar" >&2 ||
      die "mmdebstrap failed (is the apt mirror reachable?)"
    n=1
    for t in ${REAL_TREES:-usr/include usr/share/doc usr/lib/python3}; do
      [ -d "/$t" ] || continue
      tar -C / -cf "$TMP/real/$n-tree.tar" "$t"
      n=$((n + 1))
    done
    REAL_LAYERS=$n
    REAL_FILES=$(for f in "$TMP"/real/*.tar; do tar -tf "$f"; done | wc -l)
    REAL_TAR_MB=$(du -cm "$TMP"/real/*.tar | awk 'END{print $1}')
    "$BENCH_IMAGES" "$REG" tars bench/debian:1 "$TMP/lists/debian" "$TMP"/real/*.tar >/dev/null
    REAL_GZ_MB=$(tail -n +2 "$TMP/lists/debian" | while read -r dg; do
      h=${dg#sha256:}
      stat -c %s "$TMP/registry/storage/docker/registry/v2/blobs/sha256/${h:0:2}/$h/data"
    done | awk '{s+=$1} END{printf "%.0f", s/1048576}')
    rm -rf "$TMP/real"
    IMAGES+=(debian)
    log "debian: $REAL_LAYERS gzip layers, $REAL_FILES entries, $REAL_TAR_MB MB of tar, $REAL_GZ_MB MB gzip"
  fi
  ENGINES=(cri cri-unpack ctrd-cri crio ctr-pull ctr-fetch skopeo curl untar)
  # The engines that make a runnable rootfs: the only ones the realistic image is for.
  unpacks() { case $1 in cri-unpack | ctrd-cri | crio | ctr-pull | untar) return 0;; *) return 1;; esac; }
  # The C baseline of an unpack: every gzip layer `curl | gzip -dc | tar -x` at once.
  untar_all() {
    local d i=0 pids=()
    while read -r d; do
      mkdir -p "$TMP/untar/$i"
      (curl -sf "http://$REG/v2/bench/$1/blobs/$d" | gzip -dc | tar -x -C "$TMP/untar/$i") &
      pids+=($!)
      i=$((i + 1))
    done < <(tail -n +2 "$TMP/lists/$1")
    for p in "${pids[@]}"; do wait "$p" || return 1; done
    sync -f "$TMP/untar"
  }
  cri_idle_kb=$(kb "$CRI_PID" VmRSS)
  ctrd_idle_kb=$(kb "$CTRD_PID" VmRSS)
  PEAK_CRI=""; PEAK_CTRD=""; PEAK_CRIU=""; PEAK_CTRDU=""; PEAK_CRIU_REAL=""; PEAK_CTRD_REAL=""
  for run in $(seq "$RUNS"); do
    for img in "${IMAGES[@]}"; do
      ref=$REG/bench/$img:1
      for e in "${ENGINES[@]}"; do
        if [ "$img" = debian ] && ! unpacks "$e"; then continue; fi
        if [ "$e" = untar ] && [ "$img" != files ] && [ "$img" != debian ]; then continue; fi
        # Every engine starts with no dirty pages of the one before it to write back.
        sync
        case $e in
          cri)
            reset_peak "$CRI_PID"
            t=$(timed "$CRI_BENCH" --endpoint "$CRI_SOCK" pull "$ref")
            [ "$img" = big ] && PEAK_CRI+=" $(kb "$CRI_PID" VmHWM)"
            cri_clean "$ref"
            [ "$(blobs_left)" -eq 0 ] || log "warning: cri-imaged kept $(blobs_left) blobs after rmi"
            ;;
          cri-unpack)
            reset_peak "$CRIU_PID"
            t=$(timed "$CRI_BENCH" --endpoint "$CRIU_SOCK" pull "$ref")
            [ "$img" = files ] && PEAK_CRIU+=" $(kb "$CRIU_PID" VmHWM)"
            [ "$img" = debian ] && PEAK_CRIU_REAL+=" $(kb "$CRIU_PID" VmHWM)"
            cri_clean "$ref" "$CRIU_SOCK"
            ;;
          ctrd-cri)
            reset_peak "$CTRD_PID"
            t=$(timed "$CRI_BENCH" --endpoint "$CTRD_SOCK" pull "$ref")
            [ "$img" = big ] && PEAK_CTRD+=" $(kb "$CTRD_PID" VmHWM)"
            [ "$img" = files ] && PEAK_CTRDU+=" $(kb "$CTRD_PID" VmHWM)"
            [ "$img" = debian ] && PEAK_CTRD_REAL+=" $(kb "$CTRD_PID" VmHWM)"
            ctrd_clean k8s.io
            ;;
          crio)
            crio_clean
            t=$(timed crio_pull "$ref")
            crio_clean
            ;;
          ctr-pull)
            t=$(timed ctr_ -n bench images pull --plain-http --snapshotter "$SNAPSHOTTER" "$ref")
            ctrd_clean bench
            ;;
          ctr-fetch)
            t=$(timed ctr_ -n bench content fetch --plain-http "$ref")
            ctrd_clean bench
            ;;
          skopeo)
            t=$(timed skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$ref" "oci:$TMP/skopeo:x")
            rm -rf "$TMP/skopeo"
            ;;
          untar)
            t=$(timed untar_all "$img")
            rm -rf "$TMP/untar"
            ;;
          curl)
            mkdir -p "$TMP/curl"
            args=()
            while read -r d; do args+=(-o "$TMP/curl/${d#sha256:}" "http://$REG/v2/bench/$img/blobs/$d"); done <"$TMP/lists/$img"
            t=$(timed curl -sf --parallel --parallel-max 3 "${args[@]}")
            # sha256 of the same bytes (openssl uses the CPU's SHA extensions).
            s=$(timed openssl dgst -sha256 "$TMP"/curl/*)
            T[sha,$img]+=" $s"
            rm -rf "$TMP/curl"
            ;;
        esac
        T[$e,$img]+=" $t"
      done
    done
    log "pull run $run/$RUNS done"
  done

  {
    echo
    echo "### Cold pull (seconds: median (min–max) of $RUNS; ratio = engine median / cri-imaged median)"
    echo
    head="| engine | big: ${BIG_LAYERS} × ${BIG_LAYER_MIB} MiB | ratio | 50 small layers | ratio | one 1 MiB layer | ratio | 8 gzip layers × 2,000 files | ratio |"
    sep="|---|---|---|---|---|---|---|---|---|"
    if [[ " ${IMAGES[*]} " == *" debian "* ]]; then
      head+=" debian: $REAL_LAYERS gzip layers, $REAL_FILES entries ($REAL_TAR_MB MB tar, $REAL_GZ_MB MB gzip) | ratio to cri-imaged unpacking |"
      sep+="---|---|"
    fi
    echo "$head"
    echo "$sep"
    declare -A MED
    for e in "${ENGINES[@]}" sha limit; do
      row=""
      for img in "${IMAGES[@]}"; do
        if { [ "$img" = debian ] && ! unpacks "$e"; } || [ -z "${T[$e,$img]:-}${T[curl,$img]:-}" ] ||
          { [ "$e" = untar ] && [ -z "${T[untar,$img]:-}" ]; }; then
          row+=" – | – |"
          continue
        elif [ "$e" = limit ]; then
          # curl to disk + sha256 of the same bytes, run by run.
          read -ra c <<<"${T[curl,$img]}"; read -ra h <<<"${T[sha,$img]}"
          sums=(); for i in "${!c[@]}"; do sums+=("$(awk -v a="${c[$i]}" -v b="${h[$i]}" 'BEGIN{print a+b}')"); done
          read -r med lo hi <<<"$(stats "${sums[@]}")"
        else
          # shellcheck disable=SC2086
          read -r med lo hi <<<"$(stats ${T[$e,$img]})"
        fi
        MED[$e,$img]=$med
        base=cri
        [ "$img" = debian ] && base=cri-unpack
        ratio=$(awk -v a="$med" -v b="${MED[$base,$img]}" 'BEGIN{printf "%.2f", a/b}')
        row+=" $med ($lo–$hi) | ${ratio}× |"
      done
      case $e in
        cri) name="cri-imaged PullImage (socket, blobs only)";;
        cri-unpack) name="cri-imaged PullImage, \`unpack = true\` (unpacks to snapshots while downloading)";;
        ctrd-cri) name="containerd 1.6 CRI PullImage (socket, unpacks, $SNAPSHOTTER)";;
        crio) name="CRI-O's engine: skopeo copy docker:// → containers-storage: (overlay driver, unpacks)";;
        ctr-pull) name="containerd 1.6 \`ctr images pull --plain-http\` (unpacks, $SNAPSHOTTER)";;
        ctr-fetch) name="containerd 1.6 \`ctr content fetch --plain-http\` (no unpack)";;
        skopeo) name="skopeo copy docker:// → oci: (containers/image)";;
        curl) name="limit: curl --parallel-max 3, blobs to disk";;
        sha) name="limit: openssl sha256 of the same bytes";;
        limit) name="**limit: curl + sha256**";;
        untar) name="limit: \`curl | gzip -dc | tar -x\` of every gzip layer at once, then syncfs";;
      esac
      echo "| $name |$row"
    done
    # shellcheck disable=SC2086
    read -r pc _ pcmax <<<"$(stats $PEAK_CRI)"
    # shellcheck disable=SC2086
    read -r pk _ pkmax <<<"$(stats $PEAK_CTRD)"
    echo
    echo "### Memory (MiB, from /proc/PID/status; peak = VmHWM reset before each pull)"
    echo
    echo "| daemon | idle RSS | peak RSS during the big pull: median (max) |"
    echo "|---|---|---|"
    echo "| cri-imaged | $(mib "$cri_idle_kb") | $(mib "$pc") ($(mib "$pcmax")) |"
    echo "| containerd (its CRI pull) | $(mib "$ctrd_idle_kb") | $(mib "$pk") ($(mib "$pkmax")) |"
    # The unpacking pulls: cri-imaged with unpack on against containerd's CRI pull.
    peak_rows() { # title cri-imaged-peaks containerd-peaks
      local pu pumax pq pqmax
      # shellcheck disable=SC2086
      read -r pu _ pumax <<<"$(stats $2)"
      # shellcheck disable=SC2086
      read -r pq _ pqmax <<<"$(stats $3)"
      echo
      echo "| daemon | peak RSS during the pull of $1 (unpacking): median (max) |"
      echo "|---|---|"
      echo "| cri-imaged, \`unpack = true\` | $(mib "$pu") ($(mib "$pumax")) |"
      echo "| containerd (its CRI pull) | $(mib "$pq") ($(mib "$pqmax")) |"
    }
    peak_rows "8 gzip layers × 2,000 files" "$PEAK_CRIU" "$PEAK_CTRDU"
    [ -z "$PEAK_CRIU_REAL" ] || peak_rows "the debian image" "$PEAK_CRIU_REAL" "$PEAK_CTRD_REAL"
    echo
    echo "pigz installed: $(command -v unpigz >/dev/null && echo "yes (containerd uses unpigz)" || echo no)"
  } >>"$REPORT"
  ctrd_clean bench
  ctrd_clean k8s.io
fi

# --- 4./5. many pulls at once, and growth with layer count and concurrency -----------
# Pulls to a runnable rootfs, the three engines that unpack: cri-imaged (`unpack = true`),
# containerd's CRI, CRI-O's engine (skopeo → containers-storage:, one process per pull,
# all into one store as CRI-O's pulls share one).
if [ -z "${SKIP_CONC:-}" ]; then
  CONC_N=${CONC_N:-10}
  CONC_FILES=${CONC_FILES:-250}
  GROWTH_LAYERS=${GROWTH_LAYERS:-"1 2 4 8 16 32 64 128"}
  GROWTH_CONC=${GROWTH_CONC:-"1 2 5 $CONC_N"}
  log "pushing $CONC_N different images (4 gzip layers × $CONC_FILES files × 16 KiB) and the layer-count images"
  for i in $(seq 0 $((CONC_N - 1))); do
    "$BENCH_IMAGES" "$REG" files "bench/conc:n$(printf %05d "$i")" 4 "$CONC_FILES" 16384 >/dev/null
  done
  for l in $GROWTH_LAYERS; do
    "$BENCH_IMAGES" "$REG" files "bench/layers:$l" "$l" 50 8192 >/dev/null
  done
  CENGINES=(cri-unpack ctrd-cri crio)
  crio_many() { # K different images, or (same) one image K times, at once
    local k=$1 same=${2:-} i pids=() ref
    for i in $(seq 0 $((k - 1))); do
      ref=$REG/bench/conc:n$(printf %05d "$([ -n "$same" ] && echo 0 || echo "$i")")
      crio_pull "$ref" &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || return 1; done
  }
  conc_clean() { # engine k
    local i
    case $1 in
      cri-unpack) for i in $(seq 0 $(($2 - 1))); do cri_clean "$REG/bench/conc:n$(printf %05d "$i")" "$CRIU_SOCK"; done;;
      ctrd-cri) ctrd_clean k8s.io;;
      crio) crio_clean;;
    esac
  }
  sock_of() { case $1 in cri-unpack) echo "$CRIU_SOCK";; ctrd-cri) echo "$CTRD_SOCK";; esac; }
  pid_of() { case $1 in cri-unpack) echo "$CRIU_PID";; ctrd-cri) echo "$CTRD_PID";; esac; }
  declare -A C CP # C[case,engine] = "t1 t2 …", CP = peak RSS kB
  for run in $(seq "$RUNS"); do
    for e in "${CENGINES[@]}"; do
      for k in $GROWTH_CONC; do # k different images at once
        sync
        [ "$e" = crio ] || reset_peak "$(pid_of "$e")"
        if [ "$e" = crio ]; then
          t=$(timed crio_many "$k")
        else
          t=$(timed "$CRI_BENCH" --endpoint "$(sock_of "$e")" fill "$REG/bench/conc" 0 "$k" "$k")
          [ "$k" = "$CONC_N" ] && CP[diff,$e]+=" $(kb "$(pid_of "$e")" VmHWM)"
        fi
        C[diff$k,$e]+=" $t"
        conc_clean "$e" "$k"
      done
      # one image, CONC_N pulls at once
      sync
      [ "$e" = crio ] || reset_peak "$(pid_of "$e")"
      if [ "$e" = crio ]; then
        t=$(timed crio_many "$CONC_N" same)
      else
        t=$(timed "$CRI_BENCH" --endpoint "$(sock_of "$e")" same "$REG/bench/conc:n00000" "$CONC_N")
        CP[same,$e]+=" $(kb "$(pid_of "$e")" VmHWM)"
      fi
      C[same,$e]+=" $t"
      conc_clean "$e" 1
      for l in $GROWTH_LAYERS; do
        sync
        ref=$REG/bench/layers:$l
        case $e in
          cri-unpack) t=$(timed "$CRI_BENCH" --endpoint "$CRIU_SOCK" pull "$ref"); cri_clean "$ref" "$CRIU_SOCK";;
          ctrd-cri) t=$(timed "$CRI_BENCH" --endpoint "$CTRD_SOCK" pull "$ref"); ctrd_clean k8s.io;;
          crio) crio_clean; t=$(timed crio_pull "$ref"); crio_clean;;
        esac
        C[layers$l,$e]+=" $t"
      done
    done
    log "concurrency/growth run $run/$RUNS done"
  done
  cname() {
    case $1 in
      cri-unpack) echo "cri-imaged, \`unpack = true\`";;
      ctrd-cri) echo "containerd 1.6 CRI ($SNAPSHOTTER)";;
      crio) echo "CRI-O's engine (skopeo → containers-storage:, one process per pull)";;
    esac
  }
  # shellcheck disable=SC2086
  med() { local m; read -r m _ _ <<<"$(stats $1)"; echo "$m"; }
  crow() { # title case: one row per engine, median (min–max) and ratio to cri-imaged
    local e med lo hi base
    read -r base _ _ <<<"$(stats ${C[$2,cri-unpack]})"
    for e in "${CENGINES[@]}"; do
      read -r med lo hi <<<"$(stats ${C[$2,$e]})"
      echo "| $1 | $(cname "$e") | $med ($lo–$hi) | $(awk -v a="$med" -v b="$base" 'BEGIN{printf "%.2f", a/b}')× |"
    done
  }
  peak() { [ -n "${CP[$1,$2]:-}" ] && mib "$(med "${CP[$1,$2]}")" || echo "n/a"; }
  {
    echo
    echo "### Many pulls at once, to a runnable rootfs (seconds: median (min–max) of $RUNS; ratio to cri-imaged)"
    echo
    echo "Images: $CONC_N different ones of 4 gzip layers × $CONC_FILES files × 16 KiB (random, $((4 * CONC_FILES * 16 / 1024)) MiB each)."
    echo
    echo "| case | engine | wall s | ratio |"
    echo "|---|---|---|---|"
    crow "$CONC_N different images at once" "diff$CONC_N"
    crow "one image, $CONC_N pulls at once" same
    echo
    echo "| daemon | peak RSS, $CONC_N different images (MiB) | peak RSS, one image $CONC_N times (MiB) |"
    echo "|---|---|---|"
    for e in cri-unpack ctrd-cri; do echo "| $(cname "$e") | $(peak diff "$e") | $(peak same "$e") |"; done
    echo
    echo "### Growth: wall seconds (median of $RUNS) against concurrent different images and against layer count"
    echo
    hdr="| engine |"; sep="|---|"
    for k in $GROWTH_CONC; do hdr+=" $k at once |"; sep+="---|"; done
    echo "$hdr"; echo "$sep"
    for e in "${CENGINES[@]}"; do
      row="| $(cname "$e") |"
      for k in $GROWTH_CONC; do row+=" $(med "${C[diff$k,$e]}") |"; done
      echo "$row"
    done
    echo
    echo "Layer count: each layer gzip of 50 files × 8 KiB (random); one pull at a time."
    echo
    hdr="| engine |"; sep="|---|"
    for l in $GROWTH_LAYERS; do hdr+=" $l |"; sep+="---|"; done
    echo "$hdr ms per layer at $(echo $GROWTH_LAYERS | awk '{print $NF}') |"; echo "$sep---|"
    for e in "${CENGINES[@]}"; do
      row="| $(cname "$e") |"
      for l in $GROWTH_LAYERS; do row+=" $(med "${C[layers$l,$e]}") |"; last=$l; done
      row+=" $(awk -v t="$(med "${C[layers$last,$e]}")" -v n="$last" 'BEGIN{printf "%.1f", 1000*t/n}') |"
      echo "$row"
    done
  } >>"$REPORT"
fi

# --- 6. realistic networks: the registry behind a shaping proxy -----------------------
# examples/shape-proxy: a shared link of MBIT per direction and RTT ms between the engines
# and the registry (userspace: this machine's kernel has no netem), logging each request.
if [ -z "${SKIP_NET:-}" ]; then
  NET_SHAPES=${NET_SHAPES:-"100:20 1000:20"} # Mbit/s:RTT ms
  log "pushing the network images"
  mkdir -p "$TMP/lists"
  "$BENCH_IMAGES" "$REG" image bench/net4:1 4 $((16 << 20)) "$TMP/lists/net4" >/dev/null
  "$BENCH_IMAGES" "$REG" image bench/net50:1 50 16384 "$TMP/lists/net50" >/dev/null
  NIMAGES=(net4 net50)
  bytes_of() { # manifest + config + layers of bench/$1:1, from the registry's storage
    local h m
    m=$(curl -sf -o /dev/null -w '%{size_download}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/bench/$1/manifests/1")
    while read -r dg; do
      h=${dg#sha256:}
      stat -c %s "$TMP/registry/storage/docker/registry/v2/blobs/sha256/${h:0:2}/$h/data"
    done <"$TMP/lists/$1" | awk -v m="$m" '{s+=$1} END{print s+m}'
  }
  NENGINES=(cri-unpack ctrd-cri crio)
  declare -A N NQ # N[shape,image,engine] = "t …", NQ = requests per pull
  for shape in $NET_SHAPES; do
    mbit=${shape%%:*}; rtt=${shape##*:}
    PPORT=$(free_port)
    PROXY=127.0.0.1:$PPORT
    : >"$TMP/requests.log"
    "$TARGET/examples/shape-proxy" "$PROXY" "$REG" "$mbit" "$rtt" "$TMP/requests.log" 2>>"$TMP/cmd.log" &
    SP_PID=$!
    PIDS+=("$SP_PID")
    for _ in $(seq 100); do curl -sf "http://$PROXY/v2/" >/dev/null && break; sleep 0.1; done
    mkdir -p "$CTRD/certs.d/$PROXY"
    sed "s|$REG|$PROXY|g" "$CTRD/certs.d/$REG/hosts.toml" >"$CTRD/certs.d/$PROXY/hosts.toml"
    for run in $(seq "$RUNS"); do
      for img in "${NIMAGES[@]}"; do
        ref=$PROXY/bench/$img:1
        for e in "${NENGINES[@]}"; do
          sync
          before=$(wc -l <"$TMP/requests.log")
          case $e in
            cri-unpack) t=$(timed "$CRI_BENCH" --endpoint "$CRIU_SOCK" pull "$ref");;
            ctrd-cri) t=$(timed "$CRI_BENCH" --endpoint "$CTRD_SOCK" pull "$ref");;
            crio) crio_clean; t=$(timed crio_pull "$ref");;
          esac
          after=$(wc -l <"$TMP/requests.log")
          case $e in
            cri-unpack) cri_clean "$ref" "$CRIU_SOCK";;
            ctrd-cri) ctrd_clean k8s.io;;
            crio) crio_clean;;
          esac
          N[$shape,$img,$e]+=" $t"
          NQ[$shape,$img,$e]+=" $((after - before))"
        done
      done
      log "network $shape run $run/$RUNS done"
    done
    stop_pid "$SP_PID"
  done
  {
    echo
    echo "### Realistic networks: through a shaping proxy, to a runnable rootfs (seconds: median (min–max) of $RUNS)"
    echo
    echo "limit = bytes / bandwidth + 3 RTT (connection, manifest, then every blob at once); requests = HTTP requests the engine sent for one pull (median)."
    echo
    echo "| link | image | engine | wall s | × limit | requests |"
    echo "|---|---|---|---|---|---|"
    for shape in $NET_SHAPES; do
      mbit=${shape%%:*}; rtt=${shape##*:}
      for img in "${NIMAGES[@]}"; do
        bytes=$(bytes_of "$img")
        limit=$(awk -v b="$bytes" -v m="$mbit" -v r="$rtt" 'BEGIN{printf "%.3f", b*8/(m*1e6) + 3*r/1000}')
        for e in "${NENGINES[@]}"; do
          # shellcheck disable=SC2086
          read -r med lo hi <<<"$(stats ${N[$shape,$img,$e]})"
          # shellcheck disable=SC2086
          read -r q _ _ <<<"$(stats ${NQ[$shape,$img,$e]})"
          case $img in net4) iname="4 × 16 MiB";; net50) iname="50 × 16 KiB";; esac
          case $e in
            cri-unpack) ename="cri-imaged, \`unpack = true\`";;
            ctrd-cri) ename="containerd 1.6 CRI";;
            crio) ename="CRI-O's engine (skopeo → containers-storage:)";;
          esac
          echo "| $mbit Mbit/s, $rtt ms RTT | $iname (limit $limit s) | $ename | $med ($lo–$hi) | $(awk -v a="$med" -v b="$limit" 'BEGIN{printf "%.2f", a/b}') | ${q%.*} |"
        done
      done
    done
  } >>"$REPORT"
fi

# --- 2./3. metadata -----------------------------------------------------------------
if [ -z "${SKIP_META:-}" ]; then
  {
    echo
    echo "### Metadata latency through the same gRPC client (ms: p50 / p99 of $LAT_ITER calls)"
    echo
    echo "| images | call | cri-imaged | containerd 1.6 CRI | p50 ratio |"
    echo "|---|---|---|---|---|"
  } >>"$REPORT"
  have=0
  FILL_LOG=""
  for n in $FILL_COUNTS; do
    add=$((n - have))
    if ((add > 0)); then
      log "pushing $add small images, then pulling them into both stores"
      "$BENCH_IMAGES" "$REG" fill bench/fill "$have" "$add" >/dev/null
      fc=$("$CRI_BENCH" --endpoint "$CRI_SOCK" fill "$REG/bench/fill" "$have" "$add" 4)
      fk=$("$CRI_BENCH" --endpoint "$CTRD_SOCK" fill "$REG/bench/fill" "$have" "$add" 4)
      FILL_LOG+="| $have → $n | $fc | $fk |"$'\n'
      have=$n
    fi
    "$CRI_BENCH" --endpoint "$CRI_SOCK" latency "$REG/bench/fill" "$LAT_ITER" >"$TMP/lat-cri" 2>>"$TMP/cmd.log"
    "$CRI_BENCH" --endpoint "$CTRD_SOCK" latency "$REG/bench/fill" "$LAT_ITER" >"$TMP/lat-ctrd" 2>>"$TMP/cmd.log"
    while read -r call p50 p99 _; do
      read -r _ k50 k99 _ < <(grep "^$call " "$TMP/lat-ctrd")
      ratio=$(awk -v a="$k50" -v b="$p50" 'BEGIN{ if (a+0>0 && b+0>0) printf "%.1f×", a/b; else print "–" }')
      echo "| $n | $call | $p50 / $p99 | $k50 / $k99 | $ratio |" >>"$REPORT"
    done < <(grep -v '^#' "$TMP/lat-cri")
    # RemoveImage of the last k filled images, one at a time, then pulled back.
    k=$((n / 2 < 20 ? n / 2 : 20))
    if ((k > 0)); then
      read -r _ r50 r99 _ < <("$CRI_BENCH" --endpoint "$CRI_SOCK" remove "$REG/bench/fill" $((n - k)) "$k" 2>>"$TMP/cmd.log")
      read -r _ q50 q99 _ < <("$CRI_BENCH" --endpoint "$CTRD_SOCK" remove "$REG/bench/fill" $((n - k)) "$k" 2>>"$TMP/cmd.log")
      ratio=$(awk -v a="$q50" -v b="$r50" 'BEGIN{ if (a+0>0 && b+0>0) printf "%.1f×", a/b; else print "–" }')
      echo "| $n | RemoveImage ($k) | $r50 / $r99 | $q50 / $q99 | $ratio |" >>"$REPORT"
      "$CRI_BENCH" --endpoint "$CRI_SOCK" fill "$REG/bench/fill" $((n - k)) "$k" 4 >/dev/null
      "$CRI_BENCH" --endpoint "$CTRD_SOCK" fill "$REG/bench/fill" $((n - k)) "$k" 4 >/dev/null
    fi
    log "latency with $n images done"
  done
  {
    echo
    echo "Filling (PullImage of small images sharing one layer, 4 at a time; seconds):"
    echo
    echo "| images | cri-imaged | containerd 1.6 CRI |"
    echo "|---|---|---|"
    printf '%s' "$FILL_LOG"
  } >>"$REPORT"

  # Start-up and RSS with the largest count. RSS is read 2 s after the last call, once
  # each daemon has settled (cri-imaged trims its heap within a second of a big listing;
  # containerd's Go runtime returns memory on its own schedule).
  stop_pid "$CRI_PID"
  start_cri; st_cri=$STARTUP
  sleep 2
  rss_cri_start=$(kb "$CRI_PID" VmRSS)
  stop_pid "$CTRD_PID"
  start_ctrd; st_ctrd=$STARTUP
  sleep 2
  rss_ctrd_start=$(kb "$CTRD_PID" VmRSS)
  "$CRI_BENCH" --endpoint "$CRI_SOCK" latency "$REG/bench/fill" 20 >/dev/null 2>>"$TMP/cmd.log"
  "$CRI_BENCH" --endpoint "$CTRD_SOCK" latency "$REG/bench/fill" 20 >/dev/null 2>>"$TMP/cmd.log"
  sleep 2
  {
    echo
    echo "### With $have images: start-up (spawn → first ListImages answered) and RSS (MiB)"
    echo
    echo "| daemon | start-up s | RSS after start | RSS after serving List/Status | peak RSS |"
    echo "|---|---|---|---|---|"
    echo "| cri-imaged | $st_cri | $(mib "$rss_cri_start") | $(mib "$(kb "$CRI_PID" VmRSS)") | $(mib "$(kb "$CRI_PID" VmHWM)") |"
    echo "| containerd 1.6 | $st_ctrd | $(mib "$rss_ctrd_start") | $(mib "$(kb "$CTRD_PID" VmRSS)") | $(mib "$(kb "$CTRD_PID" VmHWM)") |"
  } >>"$REPORT"
fi

printf '\n- load average at end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$REPORT"
cat "$REPORT"
[ -z "${BENCH_OUT:-}" ] || cp "$REPORT" "$BENCH_OUT"
