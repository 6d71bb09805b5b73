#!/usr/bin/env bash
# Runs fuzz targets one after another, each for SECONDS (default 600) or RUNS
# inputs (default 10 million), whichever comes first, starting from the seeds
# in corpus/<target>/ and growing the corpus there (only seed-* files are
# committed). Crashes land in artifacts/<target>/; each becomes a test.
#
#   fuzz/run.sh                  # every target
#   fuzz/run.sh range pac        # some of them
#   SECONDS_EACH=60 fuzz/run.sh  # a quick pass
#
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
# Results (inputs run, time, coverage) print at the end of each run, and
# are summarised in fuzz/last-run.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ALL=(cache_control head_guard range pac config cache_key target request_head)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
TIME=${SECONDS_EACH:-600}
RUNS=${RUNS:-10000000}
: > last-run.txt
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/$t/run.log"
    start=$(date +%s)
    status=ok
    cargo +nightly fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$TIME" -runs="$RUNS" -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1 || status=failed
    took=$(( $(date +%s) - start ))
    inputs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    echo "$t status=$status seconds=$took inputs=$inputs cov=$cov" | tee -a last-run.txt
done
