#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser with libFuzzer under AddressSanitizer + UBSan (clang).
# Configures and builds build-fuzz/ (-DSPNAS_FUZZ=ON), writes the seed corpus from the project's own
# valid files (fuzz_write_seeds: the shipped spaces, architectures, a profiled-like latency table,
# the paper's CSV, checkpoints the engine writes, profiler samples, a fitted predictor, idx, CIFAR,
# gzip and image files), then runs each harness for SECONDS with a fixed -seed, so a run repeats.
#
#   tools/fuzz.sh                      # every target, 60 s each
#   tools/fuzz.sh 600 space arch       # two targets, 10 minutes each
#   FUZZ_SEED=7 tools/fuzz.sh 30       # another random seed for libFuzzer (default 1)
#   FUZZ_KEEP_CORPUS=1 tools/fuzz.sh   # continue from the corpus of the last run instead of the seeds
#   tools/fuzz.sh --list               # the targets
#
# Per target: build-fuzz/fuzz/corpus/NAME (inputs libFuzzer kept), build-fuzz/fuzz/findings/NAME/
# (crash-*, leak-*, oom-*, timeout-* inputs: reproduce with build-fuzz/fuzz_NAME FILE), and
# build-fuzz/fuzz/NAME.log. Exit status 1 if any target found something. Runs under `nice -n 10`.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD="${SPNAS_FUZZ_BUILD_DIR:-build-fuzz}"
CXX_CLANG="$(command -v clang++ || command -v clang++-14 || true)"
if [ -z "$CXX_CLANG" ]; then
  echo "fuzz: clang++ not found (Debian: apt-get install clang libclang-rt-dev)" >&2
  exit 2
fi

if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then  # FUZZ_NO_BUILD=1: use build-fuzz as it is
  mkdir -p "$BUILD"
  if ! { cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX_CLANG" \
           -DSPNAS_FUZZ=ON ${SPNAS_CMAKE_ARGS:-} &&
         nice -n 10 cmake --build "$BUILD" -j "$(nproc)" --target fuzzers; } >"$BUILD/fuzz-build.log" 2>&1; then
    grep -E -A5 "error|Error" "$BUILD/fuzz-build.log" | head -60
    echo "fuzz: build failed; full log in $BUILD/fuzz-build.log" >&2
    exit 1
  fi
fi

mapfile -t ALL < <("$BUILD/fuzz_write_seeds" --list | cut -f1)
if [ "${1:-}" = "--list" ]; then
  "$BUILD/fuzz_write_seeds" --list
  exit 0
fi
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
if ((${#TARGETS[@]} == 0)); then TARGETS=("${ALL[@]}"); fi

OUT="$BUILD/fuzz"
rm -rf "$OUT/seeds"
"$BUILD/fuzz_write_seeds" "$OUT/seeds"
found=0
printf "%-12s %8s %10s %10s %7s %7s %9s  %s\n" target seconds execs "execs/s" cov ft corpus result
for t in "${TARGETS[@]}"; do
  [ -x "$BUILD/fuzz_$t" ] || { echo "fuzz: no harness fuzz_$t (targets: ${ALL[*]})" >&2; exit 2; }
  corpus="$OUT/corpus/$t"
  findings="$OUT/findings/$t"
  if [ "${FUZZ_KEEP_CORPUS:-0}" != 1 ]; then rm -rf "$corpus"; fi
  rm -rf "$findings"  # this run's findings only (a fixed one would otherwise be reported again)
  mkdir -p "$corpus" "$findings"
  dict=()
  case "$t" in
    space | arch | table | pieces | predictor) dict=(-dict=fuzz/json.dict) ;;
    table_csv) dict=(-dict=fuzz/csv.dict) ;;
  esac
  log="$OUT/$t.log"
  # -rss_limit_mb / -malloc_limit_mb: an input of a few KB has no business allocating more;
  # -timeout: seconds per input before it counts as a hang.
  set +e
  nice -n 10 "$BUILD/fuzz_$t" -seed="${FUZZ_SEED:-1}" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 \
    -malloc_limit_mb=1024 -timeout=10 -max_len=65536 -print_final_stats=1 -artifact_prefix="$findings/" \
    "${dict[@]}" "$corpus" "$OUT/seeds/$t" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  last=$(grep -E "^#[0-9]+" "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
  result="clean"
  if [ "$rc" != 0 ] || ls "$findings" | grep -q .; then
    result="FOUND: $(ls "$findings" | tr '\n' ' ')(see $log)"
    found=1
  fi
  printf "%-12s %8s %10s %10s %7s %7s %9s  %s\n" "$t" "$SECONDS_EACH" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
    "${ft:-?}" "${corp:-?}" "$result"
done
exit $found
