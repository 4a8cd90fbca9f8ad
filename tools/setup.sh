#!/usr/bin/env bash
# Installs the Debian packages the project needs (only those missing; quiet when all are present)
# and configures + builds in Release into build/ (or $SPNAS_BUILD_DIR).
#   tools/setup.sh            # install what is missing, build
#   tools/setup.sh --no-build # install only
set -euo pipefail
cd "$(dirname "$0")/.."

# libonnx-dev + libprotobuf-dev: ONNX export; libopencv-dnn-dev: its runner (test_export, predict --onnx);
# openmpi-bin + libopenmpi-dev: data-parallel runs under mpirun (engine/dist.h).
PACKAGES=(g++ cmake make libopenblas-dev libdnnl-dev libstb-dev doctest-dev nlohmann-json3-dev zlib1g-dev libcli11-dev
          libonnx-dev libprotobuf-dev libopencv-dnn-dev openmpi-bin libopenmpi-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "${1:-}" = "--no-build" ]; then exit 0; fi
BUILD="${SPNAS_BUILD_DIR:-build}"
mkdir -p "$BUILD"
LOG="$BUILD/build.log"
if ! { cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${SPNAS_CMAKE_ARGS:-} && cmake --build "$BUILD" -j "$(nproc)"; } >"$LOG" 2>&1; then
  grep -E -A5 "error|Error" "$LOG" | head -60
  echo "setup: build failed; full log in $LOG"
  exit 1
fi
