#!/usr/bin/env bash
# Runs every fuzz target of tests/fuzz (coverage-guided, libFuzzer through cargo fuzz) for
# FUZZ_SECONDS each (default 20; .ci/run gives 10), after replaying every saved regression input.
# A long run of one target:  FUZZ_SECONDS=3600 scripts/fuzz.sh store_recovery
# FUZZ_BUILD=dev builds the targets without optimizations (cargo fuzz --dev): fewer executions
# per second, but a build of about half the time, which is most of a short run (.ci/run).
#
# Prints libFuzzer's execution count per target. A crash stops the script with libFuzzer's
# report; the input is saved under tests/fuzz/artifacts/<target>/: copy it to
# tests/fuzz/regressions/<target>/ with the fix, so that every later run replays it.
#
# cargo fuzz passes flags that rustc accepts only on nightly; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain, the only one a fresh machine has, accept them. No sanitizer (-s none): the code under
# test has no unsafe beyond the store's mapped segments, and the broker's checks are what we test.
set -euo pipefail
cd "$(dirname "$0")/../tests/fuzz"
export RUSTC_BOOTSTRAP=1 CARGO_TERM_COLOR=never
seconds=${FUZZ_SECONDS:-20}
build=()
if [[ ${FUZZ_BUILD:-release} == dev ]]; then
    build=(--dev)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    # --debug: it only drives cargo; unoptimized it compiles in 48 s of CPU against 81.
    cargo install cargo-fuzz --locked --debug
fi
targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build "${build[@]}" --sanitizer none

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "regressions/$target"
    shopt -s nullglob
    saved=("regressions/$target"/*)
    shopt -u nullglob
    if ((${#saved[@]})); then
        cargo fuzz run "${build[@]}" --sanitizer none "$target" "${saved[@]}" >/dev/null
        echo "fuzz $target: ${#saved[@]} saved regression inputs pass"
    fi
    log=$(mktemp)
    if ! cargo fuzz run "${build[@]}" --sanitizer none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        cat "$log"
        echo "fuzz $target: FAILED (see above; the input is in tests/fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    rm -f "$log"
    echo "fuzz $target: ${runs:-?} executions in ${seconds} s, $coverage, no crash"
done
