#!/usr/bin/env bash
# Runs a command and checks both its exit code and its output (stdout + stderr), for the CLI tests in
# CMakeLists.txt: expect.sh CODE REGEX COMMAND [ARGS...]. CODE may be "nonzero".
set -u
want_code=$1 regex=$2
shift 2
out=$("$@" 2>&1)
code=$?
if [ "$want_code" = nonzero ]; then
  [ "$code" -ne 0 ] || { echo "expected a non-zero exit code, got 0; output:"; echo "$out"; exit 1; }
elif [ "$code" -ne "$want_code" ]; then
  echo "expected exit code $want_code, got $code; output:"; echo "$out"; exit 1
fi
if ! grep -Eq -- "$regex" <<<"$out"; then
  echo "output does not match /$regex/:"; echo "$out"; exit 1
fi
echo "ok: exit $code, output matches /$regex/"
