#!/usr/bin/env bash
# What the program promises about a run, checked on the real binary: an empty --out is refused, a
# second run on a held folder fails at once naming the holder, SIGINT exits 130 with the checkpoint
# saved and no architecture, SIGTERM exits 143, `search --quiet` still prints its warnings, and `info`
# on a huge architecture answers from shapes within a small address space. Usage: cli_runs.sh SPNAS WORKDIR
source "$(dirname "$0")/cli_common.sh"
cat > lut.json <<'JSON'
{"format": "spnas-latency-table", "version": 1, "space": "tiny", "fixed_ms": 1.0,
 "layers": [{"k3_e3": 1, "k3_e6": 2, "k5_e3": 1.5, "k5_e6": 3}, {"k3_e3": 1, "k3_e6": 2, "k5_e3": 1.5, "k5_e6": 3},
            {"k3_e3": 1, "k3_e6": 2, "k5_e3": 1.5, "k5_e6": 3}, {"k3_e3": 1, "k3_e6": 2, "k5_e3": 1.5, "k5_e6": 3}]}
JSON
SEARCH=("$B" search --space tiny.json --lut lut.json --data synthetic:train=20000,test=64 --batch 8 --threads 1 --quiet)

out=$("$B" train --arch nothing.json --out "" 2>&1); code=$?
[ $code -ne 0 ] && grep -q "output folder is empty\|cannot open 'nothing.json'" <<<"$out" || fail "empty --out: $code $out"

# A long search holds its folder; a second one on it fails at once, naming the first.
"${SEARCH[@]}" --out held > held.log 2>&1 &
first=$!
for _ in $(seq 100); do [ -s held/.lock ] && break; sleep 0.1; done
out=$("${SEARCH[@]}" --out held 2>&1); code=$?
[ $code -eq 1 ] && grep -q "in use by pid $first" <<<"$out" || fail "second writer: exit $code: $out"

# SIGINT: the first one saves its checkpoint, exits 130, writes no architecture.
for _ in $(seq 200); do [ -f held/search_log.csv ] && [ "$(wc -l < held/search_log.csv)" -gt 2 ] && break; sleep 0.1; done
kill -INT $first
wait $first; code=$?
[ $code -eq 130 ] || fail "SIGINT exit code $code: $(cat held.log)"
grep -q "interrupted by SIGINT" held.log || fail "no interruption message: $(cat held.log)"
[ -f held/search.ckpt ] && [ ! -f held/arch.json ] || fail "after SIGINT: checkpoint missing or an architecture written"

# SIGTERM while resuming: 143.
"${SEARCH[@]}" --out held --resume > term.log 2>&1 &
pid=$!
sleep 1.5
kill -TERM $pid
wait $pid; code=$?
[ $code -eq 143 ] && grep -q "interrupted by SIGTERM" term.log || fail "SIGTERM exit code $code: $(cat term.log)"

# --quiet hides progress, never warnings: a warm-up that lasts the whole search is said on stderr (and
# without --quiet, the progress lines are there too).
QUICK=("$B" search --space tiny.json --lut lut.json --data synthetic:train=64,test=16 --batch 8 --threads 1
       --epochs 1 --warmup-epochs 1 --max-steps 2)
err=$("${QUICK[@]}" --quiet --out quiet 2>&1 >/dev/null); code=$?
[ $code -eq 0 ] && grep -q "search: warning: the warm-up" <<<"$err" || fail "search --quiet: exit $code, no warning: $err"
grep -q "steps/s" <<<"$err" && fail "search --quiet printed progress: $err"
err=$("${QUICK[@]}" --out loud 2>&1 >/dev/null); code=$?
[ $code -eq 0 ] && grep -q "search: warning: the warm-up" <<<"$err" && grep -q "steps/s" <<<"$err" ||
  fail "search without --quiet: exit $code, warning or progress missing: $err"

# info on a width-8, 2048-pixel architecture: answered from shapes in under 1 GB of address space.
printf '{"space": "cifar10", "width": 8, "input_size": 2048, "layers": [%s"5x5-6"]}' "$(printf '"5x5-6",%.0s' $(seq 19))" > wide.json
# (Under AddressSanitizer, which reserves terabytes of address space, without the limit.)
if [ -n "${SPNAS_SANITIZED:-}" ]; then limit=unlimited; else limit=1000000; fi
out=$( (ulimit -v $limit; "$B" info --arch wide.json --json) 2>&1); code=$?
[ $code -eq 0 ] && grep -q '"params"' <<<"$out" || fail "info on a wide architecture: exit $code: $out"
echo "cli runs: ok"
