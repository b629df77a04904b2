#!/usr/bin/env bash
# Runs every benchmark against the build in build/ (build it first: see README).
# Each prints native and onebox figures side by side, with their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
build/bin/store_bench "$@"
build/bin/shim_bench
build/bin/cluster_bench
build/bin/process_bench
build/bin/scale_bench
build/bin/tree_bench
build/bin/big_tree_bench
build/bin/idle_bench
build/bin/lock_bench
build/bin/build_bench  # P11: needs root (each node a cgroup with a CPU quota)
