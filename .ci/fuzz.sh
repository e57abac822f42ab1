#!/usr/bin/env bash
# Fuzzes the parsers that read what servers, files and people hand the binary: the
# pod list, the VictoriaMetrics answer, the command line and environment, the
# previous metrics file, and the state document of the memory. Each target runs for a bounded time from a corpus seeded
# with fixtures/; any crash (a panic, a failed invariant, a hang past 10 s, 2 GB of
# memory) fails the script and leaves the input in tests/fuzz/artifacts/TARGET/.
#
# Usage: .ci/fuzz.sh [SECONDS_PER_TARGET]   (default $FUZZ_SECONDS, else 30)
# It installs what is missing: the nightly toolchain and cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-${FUZZ_SECONDS:-30}}"
targets=(pod_list vm_answer config previous_metrics state)
started=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "toolchain"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

step "corpus from fixtures/"
seed() {
    local target=$1
    shift
    mkdir -p "tests/fuzz/corpus/$target"
    local f
    for f in "$@"; do
        [ -f "$f" ] && cp "$f" "tests/fuzz/corpus/$target/seed-$(basename "$f")"
    done
    return 0
}
shopt -s nullglob
seed pod_list fixtures/k8s/*.json fixtures/k8s/constructed/*.json fixtures/demo/pods.json
seed vm_answer fixtures/vm/*.json fixtures/prom/*.json fixtures/demo/cpu.json
seed config tests/fuzz/seeds/config/*
seed previous_metrics tests/fuzz/seeds/previous/* fixtures/prom/*.txt
seed state tests/fuzz/seeds/state/*
for t in "${targets[@]}"; do
    printf '%-18s %s inputs\n' "$t" "$(find "tests/fuzz/corpus/$t" -type f | wc -l)"
done

step "build"
cargo +nightly fuzz build --fuzz-dir tests/fuzz

declare -A executions rate
failed=()
for t in "${targets[@]}"; do
    step "fuzz $t for ${seconds}s"
    log="tests/fuzz/artifacts/$t.log"
    mkdir -p "tests/fuzz/artifacts/$t"
    if cargo +nightly fuzz run --fuzz-dir tests/fuzz "$t" "tests/fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        :
    else
        failed+=("$t")
        tail -n 40 "$log"
    fi
    executions[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate[$t]=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
done

step "summary"
printf '%-18s %14s %10s %8s\n' target executions "exec/s" seconds
for t in "${targets[@]}"; do
    printf '%-18s %14s %10s %8s\n' "$t" "${executions[$t]:-?}" "${rate[$t]:-?}" "$seconds"
done
if ((${#failed[@]})); then
    echo "crashed: ${failed[*]} (inputs in tests/fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crash"
