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
(cd build && ctest -j2 --output-on-failure --timeout 300)
# pjdfstest in /cluster (tests/pjdfstest.sh), whole: its source is not ours
# to commit, so it runs from a checkout named by PJDFSTEST_SRC, or from a
# clone of github.com when PJDFSTEST_FETCH=1 (tests reach no other address
# unless asked); otherwise this says that it did not run.
if [ -z "${PJDFSTEST_SRC:-}" ] && [ "${PJDFSTEST_FETCH:-}" != 1 ]; then
  echo "pjdfstest: not run (set PJDFSTEST_SRC to a checkout of github.com/pjd/pjdfstest, or PJDFSTEST_FETCH=1)"
elif [ "$(id -u)" != 0 ]; then
  echo "pjdfstest: not run (it needs root)"
elif [ -n "${PJDFSTEST_SRC:-}" ]; then
  bash tests/pjdfstest.sh --src "$PJDFSTEST_SRC"
else
  bash tests/pjdfstest.sh --fetch
fi
