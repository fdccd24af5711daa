#!/usr/bin/env bash
# The README's test command: installs what the tests need when it is missing, then runs
# the format check, clippy and every test. CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
[ -x /usr/bin/openssl ] || need+=(openssl)
# tests/it/bundle.rs: runc runs a bundle of a test image whose shell is a static busybox.
[ -x /usr/sbin/runc ] || need+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
# tests/it/differential.rs: umoci unpacks the same image independently.
[ -x /usr/bin/umoci ] || need+=(umoci)
# tests/it/trust.rs: GPG keys and signatures (with skopeo --sign-by).
[ -x /usr/bin/gpg ] || need+=(gnupg)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${need[@]}"
fi

# Python grpcio, one of the real clients tests/it/authority.rs calls the socket with.
GRPCIO=1.85.3
if ! python3 -c "import grpc, sys; sys.exit(grpc.__version__ != '$GRPCIO')" 2>/dev/null; then
  echo "installing: grpcio==$GRPCIO (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "grpcio==$GRPCIO"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
