#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts a local cluster of
# three agents on loopback (temp data dirs, their own ports and sockets) and
# drives it as a user would: membership, the CLI, the store surviving a
# restart, grpcurl-style reflection, and unmodified programs under the shim.
# Stops what it started (by pid).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash deploy/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 | tail -1

PORT=${ONEBOX_DEMO_PORT:-7070}
WORK=$(mktemp -d /tmp/onebox-demo-XXXXXX)
ONEBOX="$ROOT/build/bin/onebox"
SOCK="$WORK/agent.sock"
chmod 0755 "$WORK"  # every local user reaches the agents' sockets and views, as under /run and /var/lib
# The cluster's join token: every agent has the same; peers' calls without it are refused.
TOKEN="$WORK/join-token"
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$TOKEN")
AGENT_PID=""
PEER_PIDS=()
cleanup() {
  for pid in "$AGENT_PID" "${PEER_PIDS[@]}"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      wait "$pid" || true
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

start_agent() {
  "$ONEBOX" agent --name demo --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --socket "$SOCK" \
    --join-token-file "$TOKEN" 2>>"$WORK/agent.log" &
  AGENT_PID=$!
  for _ in $(seq 100); do
    if "$ONEBOX" --agent "127.0.0.1:$PORT" status >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$AGENT_PID" 2>/dev/null; then cat "$WORK/agent.log"; return 1; fi
    sleep 0.1
  done
  echo "agent did not come up"; cat "$WORK/agent.log"; return 1
}
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

start_agent
export ONEBOX_AGENT="127.0.0.1:$PORT"
export ONEBOX_SOCKET="$SOCK"  # writes (kv put, restore) act as their caller: they go through the socket
echo; echo "# two more agents join the first: a three-node cluster on loopback"
for n in 2 3; do
  "$ONEBOX" agent --name "demo-$n" --data-dir "$WORK/data-$n" --listen "127.0.0.1:$((PORT + n - 1))" \
    --socket "$WORK/agent-$n.sock" --join "127.0.0.1:$PORT" --join-token-file "$TOKEN" 2>>"$WORK/agent-$n.log" &
  PEER_PIDS+=($!)
done
for _ in $(seq 50); do  # until all three are alive with distinct indexes (two that joined at once may clash first)
  [ "$("$ONEBOX" nodes 2>/dev/null | awk 'NR > 1 && $4 == "alive" && $1 > 0 {print $1}' | sort -u | wc -l)" = 3 ] && break
  sleep 0.2
done
step "$ONEBOX" status
step "$ONEBOX" nodes
step "$ONEBOX" --agent "127.0.0.1:$((PORT + 2))" -o json nodes
step "$ONEBOX" kv put greeting "hello from onebox"
step "$ONEBOX" kv put config/replicas 2 --sync
step "$ONEBOX" kv put config/zone eu-1
step "$ONEBOX" kv scan config/
REFLECT="/usr/bin/python3 $ROOT/tests/tools/grpc_reflect.py 127.0.0.1:$PORT"
echo; echo "# written on the first node, read on the third (replicated within milliseconds)"
sleep 0.5
step "$ONEBOX" --agent "127.0.0.1:$((PORT + 2))" kv get greeting
step "$ONEBOX" --agent "127.0.0.1:$((PORT + 2))" status

echo; echo "# who may do what: writes act as their caller (docs/operations.md)"
step $REFLECT call onebox.v1.Store/Put '{"key": "greeting", "value": "bm9wZQ=="}' || true
if [ "$(id -u)" = 0 ]; then  # as another user: nobody
  step setpriv --reuid=nobody --regid=nogroup --clear-groups "$ONEBOX" kv put greeting "not yours" || true
  step setpriv --reuid=nobody --regid=nogroup --clear-groups "$ONEBOX" kv put uid/65534/note "nobody's own key" || true
fi

echo; echo "# restarting the agent: the store keeps its data"
kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || true
start_agent
step "$ONEBOX" kv get greeting
step "$ONEBOX" --socket "$SOCK" -o json kv get config/zone

echo; echo "# grpcurl-style, through server reflection only (no .proto given to the client)"
step $REFLECT list
step $REFLECT call grpc.health.v1.Health/Check
step $REFLECT call onebox.v1.Cluster/ListNodes

echo; echo "# unmodified programs in /cluster, through onebox exec (LD_PRELOAD=libonebox.so)"
step "$ONEBOX" --socket "$SOCK" exec -- bash -c '
  cd /cluster && mkdir -p demo && cd demo && pwd
  printf "#include <stdio.h>\nint main(void) { puts(\"hello from a program built in /cluster\"); return 0; }\n" > hello.c
  gcc -o hello hello.c && ./hello
  git init -q repo && cd repo && cp ../hello.c . && git add hello.c &&
    git -c user.email=demo@example.org -c user.name=demo commit -qm "first commit in /cluster" && git log --oneline
  cd .. && tar -czf src.tgz hello.c repo && tar -tzf src.tgz | head -3 && ls -la
  echo "written on $(hostname) through the first node" > note.txt && sync note.txt'

echo; echo "# the same files on the third node: listed, read, run, and the git history there too"
echo "# (content lives on two nodes; the third fetches it from one of them when a program opens it)"
sleep 1  # replication lag is milliseconds; the demo leaves a margin
step "$ONEBOX" --socket "$WORK/agent-3.sock" exec -- bash -c '
  cd /cluster/demo && ls -la && cat note.txt && ./hello && git -C repo log --oneline && sha256sum src.tgz'
step "$ONEBOX" --socket "$SOCK" exec -- sha256sum /cluster/demo/src.tgz
echo; echo "# every node holds the same namespace: the state digests agree"
for n in 0 1 2; do "$ONEBOX" --agent "127.0.0.1:$((PORT + n))" status | grep -E "^(node|digest)"; done
echo; echo "# what the agent recorded (Namespace service, through reflection)"
step $REFLECT call onebox.v1.Namespace/List '{"path": "/cluster/demo"}'
echo; echo "# one process table: a program started on demo-3 from the first node, as a local child"
echo "# (its output, its exit code), then ps and kill of a gpid across nodes"
step "$ONEBOX" --socket "$SOCK" run --node demo-3 --cwd /cluster/demo -- \
  bash -c 'echo "ran on $ONEBOX_SOCKET in $(pwd) as uid $(id -u)"; exit 3' || echo "exit $?"
"$ONEBOX" --socket "$SOCK" run --node demo-2 --cwd /cluster/demo -- sleep 300 &
RUN_PID=$!
for _ in $(seq 50); do  # until the run shows in the table
  GPID=$("$ONEBOX" --socket "$SOCK" -o json ps | python3 -c '
import json, sys
print(next((p["gpid"] for p in json.load(sys.stdin).get("processes", []) if p.get("argv", [])[:2] == ["sleep", "300"] and p.get("node") == "demo-2"), ""))')
  [ -n "$GPID" ] && break
  sleep 0.2
done
echo "# (the three agents share this machine's kernel, so each lists the same sleep as its own;"
echo "#  on a cluster, or with each node in namespaces of its own as the tests run them, only demo-2 does)"
step "$ONEBOX" --socket "$SOCK" ps
step "$ONEBOX" --socket "$SOCK" kill -TERM "$GPID"
wait "$RUN_PID" || echo "the stand-in ended as its program did: exit $? (143: SIGTERM)"

echo; echo "# without an agent, cluster calls fail fast; other paths are unaffected"
step env LD_PRELOAD="$ROOT/build/lib/libonebox.so" ONEBOX_SOCKET="$WORK/no-agent.sock" \
  bash -c 'ls /cluster; echo "exit $?"; ls -d /tmp'

echo; echo "demo done: agent log in the temp dir was:"; cat "$WORK/agent.log"
