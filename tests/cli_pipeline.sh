#!/usr/bin/env bash
# The user's path on the real binary, at toy scale: settings taken from the latency table (and a
# conflicting flag refused), `tune` (a target outside the table refused naming both bounds; trials in
# this process, then more of them as child processes on --resume), `train` -> `export` -> `predict`
# (our engine and the exported file through OpenCV agree), the errors of export and predict, a table
# of the opencv backend read back by latency, and search --verify.
# Usage: cli_pipeline.sh SPNAS WORKDIR
source "$(dirname "$0")/cli_common.sh"
L='{"k3_e3": 1, "k3_e6": 2, "k5_e3": 1.5, "k5_e6": 3}'
printf '{"format": "spnas-latency-table", "version": 1, "space": "tiny", "width": 1.0, "fixed_ms": 1.0, "layers": [%s, %s, %s, %s]}' \
  "$L" "$L" "$L" "$L" > lut.json
DATA=synthetic:train=512,test=64

# The table says width 1.0: --width 0.5 is an error naming both; without --width the table's is used.
out=$("$B" info --space tiny.json --width 0.5 --lut lut.json 2>&1); code=$?
[ $code -eq 1 ] && grep -q "width 0.5 conflicts with the latency table 'lut.json' (measured at width 1" <<<"$out" ||
  fail "conflicting --width: exit $code: $out"
out=$("$B" info --space tiny.json --lut lut.json --json 2>&1); code=$?
[ $code -eq 0 ] && grep -q '"runtime_ms": 13' <<<"$out" || fail "info with the table's settings: exit $code: $out"

# tune: a target the table cannot reach names both bounds (smallest: 1 + 1 + 1 ms, the two
# non-removable layers at 3x3-3 and the other two skipped; largest 1 + 4 x 3 ms).
out=$("$B" tune --space tiny.json --lut lut.json --data $DATA --target-ms 100 --out tune_bad 2>&1); code=$?
[ $code -eq 1 ] && grep -q "outside what the table" <<<"$out" && grep -q "from 3.000 ms" <<<"$out" &&
  grep -q "to 13.000 ms" <<<"$out" || fail "tune outside the bounds: exit $code: $out"
[ ! -e tune_bad/trial_000 ] || fail "tune outside the bounds started a trial"

# tune: (the target is the supernet's R, so every trial gets its proxy training) 3 trials here, then 2 more as child processes (--jobs 2) on --resume.
TUNE=("$B" tune --space tiny.json --lut lut.json --data $DATA --target-ms 13 --batch 16 --max-search-steps 3
      --max-train-steps 2 --threads 2 --quiet --out tune)
"${TUNE[@]}" --trials 3 > tune1.log 2>&1; code=$?
[ $code -le 1 ] && [ -f tune/tune.json ] && grep -q '"index": 2' tune/tune.json || fail "tune: exit $code: $(cat tune1.log)"
"${TUNE[@]}" --trials 5 --jobs 2 --resume > tune2.log 2>&1; code=$?
[ $code -le 1 ] && grep -q '"index": 4' tune/tune.json && grep -q '"status": "finished"' tune/tune.json ||
  fail "tune --resume --jobs 2: exit $code: $(cat tune2.log)"
[ -f tune/trial_003/trial.log ] && [ -f tune/trial_004/trial.log ] || fail "trials 3 and 4 did not run as processes"
[ ! -e tune/trial_000/trial.log ] || fail "trial 0 ran as a process"
grep -q "^best: trial" tune2.log && [ -s tune/best/arch.json ] || fail "no best trial (the target is the supernet's R): $(cat tune2.log)"
grep -q "^tune: 5 trials" tune2.log || fail "no summary line: $(cat tune2.log)"
# By default lambda, the threshold rate and the margin are all tuned; giving a value fixes that one.
grep -q '"tune_threshold_lr_mult": true' tune/tune.json && grep -q '"tune_threshold_margin": true' tune/tune.json ||
  fail "tune did not tune the threshold rate and margin by default"
"$B" tune --space tiny.json --lut lut.json --data $DATA --target-ms 13 --batch 16 --max-search-steps 3 --max-train-steps 2 \
  --threads 2 --quiet --trials 1 --threshold-lr-mult 5 --threshold-margin 0.5 --warmup-thresholds freeze \
  --threshold-momentum 0.5 --decode final --out tune_fixed > tune3.log 2>&1 ||
  fail "tune with fixed threshold settings: $(cat tune3.log)"
grep -q '"tune_threshold_lr_mult": false' tune_fixed/tune.json && grep -q '"tune_threshold_margin": false' tune_fixed/tune.json ||
  fail "--threshold-lr-mult / --threshold-margin did not fix them: $(cat tune_fixed/tune.json)"
grep -q '"threshold_lr_mult": 5' tune_fixed/trial_000/trial.json || fail "the fixed multiplier is not the trial's"
grep -q '"warmup_thresholds": "freeze"' tune_fixed/trial_000/trial.json || fail "--warmup-thresholds did not reach the trial"
grep -q '"warmup_thresholds": "train"' tune/tune.json || fail "tune's default is not the reference's (thresholds trained)"
grep -q '"threshold_momentum": 0.5' tune_fixed/trial_000/trial.json || fail "--threshold-momentum did not reach the trial"
grep -q '"threshold_momentum": -1' tune/tune.json || fail "tune's default threshold momentum is not the optimizer's"
grep -q '"decode": "final"' tune_fixed/trial_000/trial.json || fail "--decode did not reach the trial"
grep -q '"decode": "round"' tune/tune.json || fail "tune's searches do not return an architecture in the band by default (--decode round)"
out=$("$B" search --space tiny.json --lut lut.json --data $DATA --decode band --out search_bad 2>&1); code=$?
[ $code -ne 0 ] && grep -q -- "--decode band" <<<"$out" && grep -q -- "--target-ms" <<<"$out" && [ ! -e search_bad ] ||
  fail "search --decode band without a target: exit $code: $out"
out=$("$B" search --space tiny.json --lut lut.json --data $DATA --decode round --out search_bad 2>&1); code=$?
[ $code -ne 0 ] && grep -q -- "--decode round" <<<"$out" && grep -q -- "--target-ms" <<<"$out" && [ ! -e search_bad ] ||
  fail "search --decode round without a target: exit $code: $out"
out=$("$B" search --space tiny.json --lut lut.json --data $DATA --threshold-momentum 1 --out search_bad 2>&1); code=$?
[ $code -ne 0 ] && grep -q -- "--threshold-momentum" <<<"$out" && [ ! -e search_bad ] ||
  fail "search --threshold-momentum 1: exit $code: $out"
out=$("$B" search --space tiny.json --lut lut.json --data $DATA --warmup-thresholds frozen --out search_bad 2>&1); code=$?
[ $code -ne 0 ] && grep -q -- "--warmup-thresholds" <<<"$out" && [ ! -e search_bad ] ||
  fail "search --warmup-thresholds frozen: exit $code: $out"
out=$("$B" tune --space tiny.json --lut lut.json --data $DATA --target-ms 13 --tune-threshold-lr-mult --threshold-lr-mult 5 \
  --out tune_both 2>&1); code=$?
[ $code -ne 0 ] && grep -q "excludes" <<<"$out" || fail "tuning and fixing the multiplier at once: exit $code: $out"

# train -> export -> predict.
echo '{"space": "tiny.json", "layers": ["3x3-3", "skip", "5x5-6", "3x3-6"]}' > arch.json
"$B" train --arch arch.json --data $DATA --epochs 1 --batch 32 --threads 2 --quiet --out train > train.log 2>&1 ||
  fail "train: $(cat train.log)"
out=$("$B" export --checkpoint train/model.ckpt --out model.onnx 2>&1); code=$?
if grep -q "built without ONNX" <<<"$out"; then
  echo "note: export skipped (built without ONNX)"
else
  [ $code -eq 0 ] && [ -s model.onnx ] && grep -q "exported model.onnx" <<<"$out" || fail "export: exit $code: $out"
fi
# A 2x2 24-bit BMP (rows bottom-up, each padded to 4 bytes).
printf 'BM\x46\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x01\x00\x18\x00\x00\x00\x00\x00\x10\x00\x00\x00\x13\x0b\x00\x00\x13\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' > img.bmp
printf '\x00\x00\xff\x00\xff\x00\x00\x00\xff\x00\x00\xff\xff\xff\x00\x00' >> img.bmp
out=$("$B" predict --checkpoint train/model.ckpt --top 3 --json img.bmp 2>&1); code=$?
[ $code -eq 0 ] && grep -q '"probability"' <<<"$out" || fail "predict: exit $code: $out"
ours=$(grep -o '"index": [0-9]*' <<<"$out" | head -1)
if [ -s model.onnx ]; then
  out=$("$B" predict --checkpoint train/model.ckpt --onnx model.onnx --top 3 --json img.bmp 2>&1); code=$?
  if ! grep -q "without OpenCV" <<<"$out"; then
    [ $code -eq 0 ] && [ "$(grep -o '"index": [0-9]*' <<<"$out" | head -1)" = "$ours" ] ||
      fail "predict --onnx: exit $code, top-1 differs from ours ($ours): $out"
  fi
fi
out=$("$B" predict --checkpoint train/model.ckpt no_such.png 2>&1); code=$?
[ $code -eq 1 ] && grep -q "no_such.png" <<<"$out" || fail "predict on a missing file: exit $code: $out"
"$B" search --space tiny.json --lut lut.json --data $DATA --batch 16 --max-steps 2 --threads 2 --quiet --out search \
  > search.log 2>&1 || fail "search: $(cat search.log)"
# --verify: the found network measured end to end with the reference interleaved, the target judged on it.
out=$("$B" search --space tiny.json --lut lut.json --data $DATA --batch 16 --epochs 0.1 --warmup-epochs 0.05 --threads 2 \
  --quiet --target-ms 9 --verify --out search_verify 2>&1); code=$?
[ $code -eq 0 ] && grep -q "verify: the found network measured" <<<"$out" && grep -q "reference (every layer 5x5-6), interleaved" <<<"$out" &&
  grep -q "^target 9.000 ms: measured" <<<"$out" || fail "search --verify: exit $code: $out"
# profile --backend opencv: the table records the backend, and latency with that table measures in
# OpenCV (the table's backend taken where --backend is not given). A build without OpenCV or ONNX
# refuses the backend, saying what it needs.
out=$("$B" profile --space tiny.json --backend opencv --reps 3 --min-seconds 0 --context-rounds 1 --out lut_cv.json 2>&1)
code=$?
if grep -q "opencv backend is not in this build" <<<"$out"; then
  [ $code -eq 1 ] && grep -q "libopencv-dnn-dev" <<<"$out" || fail "profile --backend opencv refused: exit $code: $out"
  echo "note: the opencv backend is not in this build (refused as it should be)"
else
  [ $code -eq 0 ] && grep -q '"backend": "opencv"' lut_cv.json || fail "profile --backend opencv: exit $code: $out"
  out=$("$B" latency --arch arch.json --lut lut_cv.json --reps 3 --json 2>&1); code=$?
  [ $code -eq 0 ] && grep -q '"backend": "opencv"' <<<"$out" && ! grep -q "measured with the" <<<"$out" ||
    fail "latency with an opencv table: exit $code: $out"
fi
cp model.onnx kept.onnx 2>/dev/null
out=$("$B" export --checkpoint search/search.ckpt --out kept.onnx 2>&1); code=$?
[ $code -eq 1 ] && grep -q "search.ckpt" <<<"$out" || fail "export of a search checkpoint: exit $code: $out"
[ ! -f model.onnx ] || cmp -s model.onnx kept.onnx || fail "a refused export changed the file it would write"
echo "cli pipeline: ok"
