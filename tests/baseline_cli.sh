#!/usr/bin/env bash
# `spnas random` and `spnas compare --jobs 2` end to end on the command line (each training a
# `spnas train` child): a latency-matched random set, a rerun that trains nothing, and a child that
# fails named with its log. Usage: baseline_cli.sh SPNAS WORKDIR; prints "baseline cli: ok".
set -eu
spnas=$1 dir=$2
rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
# A made-up table for cifar10 (20 searchable layers): R spans 1 + 0.1 * 14 .. 1 + 0.3 * 20 ms.
{
  printf '{"format": "spnas-latency-table", "version": 1, "fixed_ms": 1.0, "layers": ['
  for i in $(seq 0 19); do
    [ "$i" -gt 0 ] && printf ', '
    printf '{"k3_e3": 0.1, "k3_e6": 0.2, "k5_e3": 0.15, "k5_e6": 0.3}'
  done
  printf ']}\n'
} > table.json
"$spnas" random --space cifar10 --width 0.25 --lut table.json --count 2 --seed 3 --target-ms 4 --window 0.1 --out random
"$spnas" random --space cifar10 --width 0.25 --count 1 --seed 4 --out searched
protocol=(--data synthetic:train=96,test=32 --batch 16 --epochs 1 --ema 0.9)
"$spnas" compare --arch searched/random_000.json --random-dir random --seeds 2 --jobs 2 --threads 2 "${protocol[@]}" \
  --out compare > first.txt 2>&1 || { cat first.txt; exit 1; }
grep -q "RI (test) = " first.txt
[ "$(ls compare/runs/*/seed_*/result.json | wc -l)" -eq 6 ]
[ -f compare/runs/random_001/seed_2/train.log ]  # each child has its log
[ -s compare/compare.svg ]
"$spnas" compare --arch searched/random_000.json --random-dir random --seeds 2 --jobs 2 --threads 2 "${protocol[@]}" \
  --out compare > again.txt 2>&1
grep -q "6 trainings done, 0 to run" again.txt
# A batch larger than the training split: the child fails; the error names the run and its log.
if "$spnas" compare --arch random/random_000.json --lut table.json --seeds 1 --jobs 2 --data synthetic:train=40,test=32 --batch 64 \
  --epochs 1 --out failing > fail.txt 2>&1; then
  echo "expected the failing compare to fail"; exit 1
fi
grep -q "job 'arch_1 seed 1' failed (exit code 1); its log: failing/runs/arch_1/seed_1/train.log" fail.txt ||
  { cat fail.txt; exit 1; }
grep -q "fewer than one batch of 64" fail.txt
echo "baseline cli: ok"
