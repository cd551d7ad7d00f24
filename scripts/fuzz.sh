#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer) for a given time each, one after the other.
#
#   scripts/fuzz.sh [TARGET|all] SECONDS
#
# Needs the nightly toolchain and cargo-fuzz (`rustup toolchain install nightly --profile minimal`,
# `cargo install cargo-fuzz --locked`). Works from any directory.
#
# Each target starts from its seeds (fuzz/seeds/TARGET, see fuzz/seeds/README.md), copied into its
# scratch corpus fuzz/corpus/TARGET (kept between runs, not committed), which collects what libFuzzer
# finds. Printed per target: executions, executions per second, corpus size, peak memory, and
# whether it crashed. A crash (a panic, a failed check, a timeout of FUZZ_TIMEOUT seconds on one
# input, or more than FUZZ_RSS_MB of memory) leaves its input in fuzz/artifacts/TARGET/ (cargo-fuzz's
# choice), whose path
# is printed with the command that replays it; the script then exits 1 (after the other targets).
#
# Environment: FUZZ_TIMEOUT (seconds per input, default 25), FUZZ_RSS_MB (default 2048),
# FUZZ_LOG_DIR (where each run's libFuzzer output goes; default a temporary directory),
# FUZZ_BUILD_ARGS (cargo-fuzz build options for both the build and the runs, e.g. "--dev": a build
# without optimisation, several times quicker to make and slower to run, which CI's smoke run uses).
set -euo pipefail

usage() {
    echo "usage: $0 [TARGET|all] SECONDS" >&2
    exit 2
}

case $# in
    1) which=all; secs=$1 ;;
    2) which=$1; secs=$2 ;;
    *) usage ;;
esac
[[ $secs =~ ^[1-9][0-9]*$ ]] || usage

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz or the nightly toolchain is missing: rustup toolchain install nightly --profile minimal && cargo install cargo-fuzz --locked" >&2
    exit 2
fi

mapfile -t all < <(cargo +nightly fuzz list)
if [ "$which" = all ]; then
    targets=("${all[@]}")
else
    found=
    for t in "${all[@]}"; do [ "$t" = "$which" ] && found=1; done
    if [ -z "$found" ]; then
        echo "no fuzz target $which: the targets are ${all[*]}" >&2
        exit 2
    fi
    targets=("$which")
fi

timeout_secs=${FUZZ_TIMEOUT:-25}
rss_mb=${FUZZ_RSS_MB:-2048}
logs=${FUZZ_LOG_DIR:-$(mktemp -d)}
mkdir -p "$logs"
read -r -a build_args <<<"${FUZZ_BUILD_ARGS:-}"

echo "== build (cargo +nightly fuzz build ${build_args[*]})"
start=$SECONDS
if [ "$which" = all ]; then
    cargo +nightly fuzz build "${build_args[@]}"
else
    cargo +nightly fuzz build "${build_args[@]}" "$which"
fi
echo "build: $((SECONDS - start)) s"

# "stat::number_of_executed_units: 1234" -> 1234
stat() { sed -n "s/^stat::$1: *\([0-9][0-9]*\).*/\1/p" "$2" | tail -n 1; }

crashed=()
summary=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    log=$logs/$t.log
    mkdir -p "$corpus"
    if [ -d "fuzz/seeds/$t" ]; then
        # seeds are copied, never overwritten nor deleted: the corpus keeps what earlier runs found
        cp -n "fuzz/seeds/$t"/* "$corpus"/ 2>/dev/null || true
    else
        echo "warning: no seeds for $t (fuzz/seeds/$t): starting from an empty corpus" >&2
    fi
    echo "== $t: $secs s (log: $log)"
    start=$SECONDS
    status=0
    # stdin from /dev/null: an input that names /dev/stdin (a config's secret file) reads nothing
    cargo +nightly fuzz run "${build_args[@]}" "$t" "$corpus" -- \
        -max_total_time="$secs" -timeout="$timeout_secs" -rss_limit_mb="$rss_mb" \
        -print_final_stats=1 </dev/null >"$log" 2>&1 || status=$?
    took=$((SECONDS - start))
    execs=$(stat number_of_executed_units "$log")
    rate=$(stat average_exec_per_sec "$log")
    if [ -z "$execs" ]; then
        # no final statistics after a crash: libFuzzer's last status line ("#1234 ... exec/s: 56")
        last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
        execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
        rate=$(sed -n 's/.*exec\/s: \([0-9]*\).*/\1/p' <<<"$last")
    fi
    rss=$(stat peak_rss_mb "$log")
    files=$(find "$corpus" -type f | wc -l)
    bytes=$(du -sk "$corpus" | cut -f1)
    if [ "$status" -eq 0 ]; then
        result="no crash"
    else
        # "Test unit written to fuzz/artifacts/t/crash-..." (libFuzzer), else the log says why
        repro=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        if [ -n "$repro" ]; then
            result="CRASH: $repro (replay: cargo +nightly fuzz run $t $repro)"
        else
            result="FAILED (exit $status, no reproducer: see $log)"
        fi
        crashed+=("$t")
        grep -E "panicked at|^ERROR|SUMMARY|==[0-9]+== ERROR" "$log" | head -n 5 || true
    fi
    line=$(printf '%-13s %10s execs  %7s exec/s  corpus %5s files %6s KiB  rss %5s MB  %4s s  %s' \
        "$t" "${execs:-?}" "${rate:-?}" "$files" "$bytes" "${rss:-?}" "$took" "$result")
    echo "$line"
    summary+=("$line")
done

echo "== summary ($secs s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#crashed[@]} -gt 0 ]; then
    echo "crashed: ${crashed[*]}" >&2
    exit 1
fi
