#!/usr/bin/env bash
# bench_infer when the ONNX Runtime command fails: it says why and races the other runtimes, and
# its files go to a temporary folder that is gone afterwards (nothing in the current folder).
# Usage: bench_infer_cli.sh BENCH_INFER WORKDIR
set -u
B=$1 W=$2
rm -rf "$W" && mkdir -p "$W/tmp" && cd "$W" || exit 1
fail() { echo "FAIL: $*"; exit 1; }
out=$(TMPDIR="$W/tmp" "$B" --width 0.25 --config 1x1 --rounds 1 --seconds 0.01 --no-onednn --ort false 2>&1); code=$?
[ $code -eq 0 ] || fail "exit $code: $out"
grep -q "ONNX Runtime left out of the race: ort: .false" <<<"$out" || fail "no word of the failing command: $out"
grep -q "^  1x1 " <<<"$out" || fail "no race line: $out"
[ -z "$(ls -A tmp)" ] || fail "files left in the temporary folder: $(ls -R tmp)"
[ "$(ls -A)" = "tmp" ] || fail "files written into the current folder: $(ls -A)"
echo "bench_infer cli: ok"
