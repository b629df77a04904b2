#!/usr/bin/env bash
# The test command: installs what is missing, builds (Ninja, ccache, -j2) and
# runs every test with ctest. Warnings are errors when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
werror=OFF
if [ "${CI:-}" = "true" ]; then werror=ON; fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DONEBOX_WERROR="$werror" >/dev/null
cmake --build build -j2
cd build
ctest -j2 --output-on-failure --timeout 300
