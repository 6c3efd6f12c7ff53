#!/usr/bin/env bash
# Runs the whole test suite, installing and building first when needed:
#   0. every C++ file formatted as .clang-format says (scripts/format.sh --check);
#   1. every Catch2 test through ctest, on the Release build in build/;
#   2. the torch-free tests (base, events, observers, record, the checkpoint writer, the distributed
#      environment and launcher) again under ThreadSanitizer (build-tsan/) and ASan+UBSan
#      (build-asan/), compiled file by file (the Release build is a unity build: this also checks
#      that each source compiles on its own).
# Warnings are errors where CI=true (TRAINBUS_WERROR follows it), and only shown elsewhere.
# Long-running tests are tagged [.slow] and left to bench/; run them with build/bin/core_tests "[.slow]".
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/format.sh --check
ctest --test-dir build --output-on-failure -j2

for sanitizer in thread address,undefined; do
  dir="build-${sanitizer%%,*}"
  dir="${dir/address/asan}"
  dir="${dir/thread/tsan}"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTRAINBUS_TORCH_FREE=ON -DTRAINBUS_UNITY_BUILD=OFF \
    -DTRAINBUS_SANITIZE="$sanitizer" >/dev/null
  cmake --build "$dir"
  TSAN_OPTIONS=halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir "$dir" --output-on-failure
done
echo "test: all passed"
