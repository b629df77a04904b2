#!/usr/bin/env bash
# Installs the Debian 12 packages that onebox builds, tests and runs with.
# Safe to run again: apt-get skips what is already installed.
set -euo pipefail
PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libprotobuf-c-dev protobuf-c-compiler
  librocksdb-dev libgtest-dev libgmock-dev
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libssl-dev libxxhash-dev
  libsystemd-dev  # the agent's sd_notify (Type=notify, watchdog)
  libmicrohttpd-dev  # the agent's --metrics (Prometheus over HTTP)
  systemd  # tests: systemd-analyze verify of the unit
  python3 python3-grpcio python3-protobuf
  iproute2  # tests: partitions made with network namespaces
  binutils-source  # tests: placement at exec builds its libiberty (66 C files) with make -j
  curl redis-server redis-tools  # tests: cluster ports, with real servers and clients
  python3-prometheus-client  # tests: the agent's --metrics read by Prometheus' own parser
  python3-yaml  # tests: deploy/kubernetes read as the kubelet takes it
  perl  # tests/pjdfstest.sh: prove runs pjdfstest
  openssl  # tests: the certificates of onebox ca init and cert issue, checked by openssl verify and x509
  strace  # tests: an exclusive create held up in the kernel call (inject delay_enter) while a recall comes
)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "install-deps: ${#PACKAGES[@]} Debian packages present"
