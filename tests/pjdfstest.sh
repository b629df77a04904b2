#!/usr/bin/env bash
# pjdfstest (github.com/pjd/pjdfstest, the POSIX file system conformance
# suite) in /cluster under the shim, beside the same run natively in a plain
# directory on the same file system. Builds pjdfstest from a checkout of
# its source (not ours to commit: pass it with --src, or --fetch clones it),
# starts its own agents (a temp data dir each, loopback ports, the socket in
# a directory other users can reach: pjdfstest switches users), and stops
# them by pid. Passes when both runs ran the same tests and every test that
# passes natively passes in the cluster too. Needs root (pjdfstest changes owners and users) and a
# build (tests/run.sh or deploy/demo.sh make one).
#
#   tests/pjdfstest.sh --src DIR [--agents N] [--only "chmod open ..."]
#   tests/pjdfstest.sh --fetch ...   (git clone of github.com/pjd/pjdfstest)
#
# --agents: how many agents (default 2: the one the tests run on has a peer,
# so exclusive creates and mkdirs go through directory leases as in a
# cluster). --only: test directories to run (default: all; the whole suite
# takes about 4 minutes in the cluster on a 2-core VM).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ONEBOX="$ROOT/build/bin/onebox"

SRC="" FETCH=0 AGENTS=2 ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --src) SRC=$2; shift 2 ;;
    --fetch) FETCH=1; shift ;;
    --agents) AGENTS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "usage: tests/pjdfstest.sh (--src DIR | --fetch) [--agents N] [--only \"DIRS\"]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "pjdfstest.sh: pjdfstest needs root" >&2; exit 2; }
[ -x "$ONEBOX" ] || { echo "pjdfstest.sh: no $ONEBOX: build first (tests/run.sh)" >&2; exit 2; }
[[ "$AGENTS" =~ ^[1-9]$ ]] || { echo "pjdfstest.sh: --agents takes 1 to 9" >&2; exit 2; }
command -v prove >/dev/null || { echo "pjdfstest.sh: needs prove (Debian: perl)" >&2; exit 2; }

WORK=$(mktemp -d /var/tmp/onebox-pjdfstest-XXXXXX)
chmod 0755 "$WORK"  # pjdfstest runs parts as other users: they reach the socket and the build
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" || true
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The source, copied (the build goes beside its tests, where they look for it).
if [ "$FETCH" = 1 ]; then
  git clone -q --depth 1 https://github.com/pjd/pjdfstest "$WORK/pjdfstest"
elif [ -n "$SRC" ] && [ -f "$SRC/pjdfstest.c" ] && [ -d "$SRC/tests" ]; then
  cp -r "$SRC" "$WORK/pjdfstest"
else
  echo "pjdfstest.sh: --src must name a checkout of github.com/pjd/pjdfstest (pjdfstest.c and tests/), or pass --fetch" >&2
  exit 2
fi
PJD="$WORK/pjdfstest"
# What configure would find on Linux with glibc (autotools are not needed for one file).
cat > "$PJD/config.h" <<'EOF'
#define HAVE_FCHMODAT 1
#define HAVE_FCHOWNAT 1
#define HAVE_FSTATAT 1
#define HAVE_LINKAT 1
#define HAVE_MKDIRAT 1
#define HAVE_MKFIFOAT 1
#define HAVE_MKNODAT 1
#define HAVE_OPENAT 1
#define HAVE_POSIX_FALLOCATE 1
#define HAVE_RENAMEAT 1
#define HAVE_STRUCT_STAT_ST_ATIM 1
#define HAVE_STRUCT_STAT_ST_CTIM 1
#define HAVE_STRUCT_STAT_ST_MTIM 1
#define HAVE_SYMLINKAT 1
#define HAVE_SYS_SYSMACROS_H 1
#define HAVE_UNLINKAT 1
#define HAVE_UTIMENSAT 1
#define _GNU_SOURCE 1
EOF
cc -O2 -include "$PJD/config.h" -o "$PJD/pjdfstest" "$PJD/pjdfstest.c"
chmod -R go+rX "$PJD"

TESTS=()
if [ -n "$ONLY" ]; then
  for d in $ONLY; do
    [ -d "$PJD/tests/$d" ] || { echo "pjdfstest.sh: no test directory tests/$d" >&2; exit 2; }
    TESTS+=("$PJD/tests/$d")
  done
else
  TESTS=("$PJD/tests")
fi

free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
TOKEN="$WORK/join-token"
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$TOKEN")
FIRST=""
for n in $(seq "$AGENTS"); do
  port=$(free_port)
  join=()
  [ -n "$FIRST" ] && join=(--join "$FIRST")
  "$ONEBOX" agent --name "pjd-$n" --data-dir "$WORK/data-$n" --listen "127.0.0.1:$port" \
    --socket "$WORK/agent-$n.sock" "${join[@]}" --join-token-file "$TOKEN" --log-level warn 2>>"$WORK/agent-$n.log" &
  PIDS+=($!)
  [ -z "$FIRST" ] && FIRST="127.0.0.1:$port"
done
for _ in $(seq 100); do
  alive=$({ "$ONEBOX" --agent "$FIRST" nodes 2>/dev/null || true; } | awk 'NR > 1 && $4 == "alive"' | wc -l)
  [ "$alive" = "$AGENTS" ] && break
  for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { cat "$WORK"/agent-*.log; exit 1; }; done
  sleep 0.2
done
[ "$alive" = "$AGENTS" ] || { echo "pjdfstest.sh: the $AGENTS agents did not all join"; cat "$WORK"/agent-*.log; exit 1; }

# What prove's summary reports failed, one line each (sorted): "FILE N" for
# each failed test N of a file, "FILE wstat=W" for a file that did not exit
# 0, "FILE parse" for a file whose output was not a whole TAP plan.
failures() {
  sed -n '/^Test Summary Report/,$p' "$1" | awk -v tests="$PJD/tests/" '
    function expand(list,    n, parts, i, r, k) {
      n = split(list, parts, /[ ,]+/)
      for (i = 1; i <= n; i++) {
        if (parts[i] ~ /^[0-9]+-[0-9]+$/) { split(parts[i], r, "-"); for (k = r[1]; k <= r[2]; k++) print file, k }
        else if (parts[i] ~ /^[0-9]+$/) print file, parts[i]
      }
    }
    index($0, tests) == 1 { file = substr($1, length(tests) + 1); in_list = 0
                            if (match($0, /Wstat: [0-9]+/) && substr($0, RSTART + 7, RLENGTH - 7) != "0") print file, "wstat=" substr($0, RSTART + 7, RLENGTH - 7)
                            next }
    /^  Failed tests:/ { in_list = 1; sub(/^  Failed tests: */, ""); expand($0); next }
    /^  Parse errors:/ { in_list = 0; print file, "parse"; next }
    /^  [A-Z]/ { in_list = 0; next }
    in_list && /^ +[0-9]/ { expand($0) }
  ' | sort -u
}

run_prove() {  # label, directory to run in, command prefix...
  local label=$1 dir=$2
  shift 2
  local log="$WORK/$label.log" started
  started=$(date +%s)
  # (A hang under the shim must not hang the test command: 30 minutes at most.)
  timeout --kill-after=10 1800 "$@" bash -c 'cd "$1" && shift && prove -r "$@"' prove "$dir" "${TESTS[@]}" > "$log" 2>&1 || true
  echo "$label: $(grep -E '^(Files=|Result:)' "$log" | tr '\n' ' ')($(( $(date +%s) - started )) s)"
  grep -q '^Result: ' "$log" || { echo "$label: prove did not finish:"; tail -20 "$log"; exit 1; }
  failures "$log" > "$WORK/$label.failed"
}

mkdir -p "$WORK/native"
run_prove native "$WORK/native"
CLUSTER_DIR="/cluster/pjdfstest-$$-$RANDOM"
ONEBOX_SOCKET="$WORK/agent-1.sock" "$ONEBOX" exec -- mkdir -p "$CLUSTER_DIR"
run_prove cluster "$CLUSTER_DIR" env ONEBOX_SOCKET="$WORK/agent-1.sock" "$ONEBOX" exec --

# The same files and tests ran in both (a native run that broke early excuses nothing).
counts() { grep -oE '^Files=[0-9]+, Tests=[0-9]+' "$WORK/$1.log"; }
if [ "$(counts native)" != "$(counts cluster)" ]; then
  echo "the runs differ: native $(counts native), cluster $(counts cluster)"
  exit 1
fi
only_cluster=$(comm -13 "$WORK/native.failed" "$WORK/cluster.failed")
if [ -n "$only_cluster" ]; then
  echo "failed in the cluster only (test file, then the test's number):"
  echo "$only_cluster" | sed 's/^/  tests\//'
  exit 1
fi
echo "every test that passes natively passes in /cluster ($AGENTS agents)"
