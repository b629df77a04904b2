#!/usr/bin/env bash
# Runs every fuzz harness (tests/fuzz/CMakeLists.txt) with libFuzzer,
# AddressSanitizer and UBSan, for SECONDS each (default 60), starting from
# its corpus; new inputs that reach new code are merged into the corpus
# (commit them), and a crash stops the run with its input saved as
# tests/fuzz/corpus/NAME/crash-* (fix it; the input stays as its regression
# test, replayed by ctest in every build).
#   bash tests/fuzz/run.sh [SECONDS] [HARNESS...]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
shift || true
harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then harnesses=(cluster_path shim_frames peer_records); fi
command -v clang++ >/dev/null || { echo "fuzz: clang++ is needed (apt-get install clang)"; exit 2; }
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DONEBOX_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" >/dev/null
ninja -C build-fuzz -j2 $(printf 'fuzz_%s ' "${harnesses[@]}") >/dev/null
for name in "${harnesses[@]}"; do
  corpus="tests/fuzz/corpus/$name"
  work="$(mktemp -d)"
  cp "$corpus"/* "$work"/
  echo "fuzz: $name for ${seconds}s"
  (cd "$work" && ASAN_OPTIONS=detect_leaks=0 "$OLDPWD/build-fuzz/bin/fuzz_$name" -max_total_time="$seconds" \
     -max_len=65536 -artifact_prefix="$OLDPWD/$corpus/crash-" "$work" 2>&1 | grep -E "^Done [0-9]+ runs|^#[0-9]+ +DONE|ERROR|SUMMARY|Test unit written" || true)
  if ls "$corpus"/crash-* >/dev/null 2>&1; then echo "fuzz: $name crashed: $(ls "$corpus"/crash-*)"; exit 1; fi
  "build-fuzz/bin/fuzz_$name" -merge=1 "$corpus" "$work" >"$work.merge.log" 2>&1 || { tail -5 "$work.merge.log"; exit 1; }
  rm -f "$work.merge.log"
  rm -rf "$work"
  echo "fuzz: $name: $(ls "$corpus" | wc -l) inputs in its corpus"
done
