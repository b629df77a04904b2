#!/usr/bin/env bash
# Runs every fuzz harness (tests/fuzz/CMakeLists.txt) with libFuzzer,
# AddressSanitizer and UBSan, for SECONDS each (default 60), starting from
# its corpus; new inputs that reach new code are merged into the corpus
# (commit them). A crash, a hang (10 s on one input) or a leak stops the
# run, its input moved into tests/fuzz/corpus/NAME/ (fix the bug; the input
# stays there as its regression test, replayed by ctest in every build).
#   bash tests/fuzz/run.sh [SECONDS] [HARNESS...]
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
seconds="${1:-60}"
shift || true
harnesses=("$@")
# Every harness, as tests/fuzz/CMakeLists.txt lists them (the one list).
if [ ${#harnesses[@]} -eq 0 ]; then
  read -r -a harnesses <<<"$(sed -n 's/^set(ONEBOX_FUZZ_HARNESSES \(.*\))$/\1/p' tests/fuzz/CMakeLists.txt)"
fi
command -v clang++ >/dev/null || { echo "fuzz: clang++ is needed (apt-get install clang)"; exit 2; }
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DONEBOX_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
if ! ninja -C build-fuzz -j2 $(printf 'fuzz_%s ' "${harnesses[@]}") >build-fuzz/build.log 2>&1; then
  tail -30 build-fuzz/build.log
  exit 1
fi
for name in "${harnesses[@]}"; do
  corpus="$root/tests/fuzz/corpus/$name"
  work="$(mktemp -d)"
  mkdir -p "$corpus" "$work/in" "$work/found"
  cp "$corpus"/* "$work/in"/ 2>/dev/null || true
  echo "fuzz: $name for ${seconds}s"
  set +e
  (cd "$work" && "$root/build-fuzz/bin/fuzz_$name" -max_total_time="$seconds" -timeout=10 -max_len=65536 \
     -artifact_prefix="$work/found/" "$work/in" >"$work/log" 2>&1)
  status=$?
  set -e
  grep -E "^Done [0-9]+ runs" "$work/log" || true
  if [ "$status" -ne 0 ] || [ -n "$(ls "$work/found")" ]; then
    grep -E -A30 "ERROR|SUMMARY" "$work/log" | head -60 || tail -30 "$work/log"
    for f in "$work/found"/*; do [ -e "$f" ] && mv "$f" "$corpus/crash-$(basename "$f")"; done
    echo "fuzz: $name failed (exit $status); its input is in $corpus/crash-*"
    exit 1
  fi
  (cd "$work" && "$root/build-fuzz/bin/fuzz_$name" -merge=1 -artifact_prefix="$work/found/" "$corpus" "$work/in" \
     >"$work/merge.log" 2>&1) || { tail -20 "$work/merge.log"; exit 1; }
  rm -rf "$work"
  echo "fuzz: $name: $(ls "$corpus" | wc -l) inputs in its corpus"
done
