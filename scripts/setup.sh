#!/usr/bin/env bash
# Installs every Debian package trainbus needs (only the missing ones; safe to run again), then
# configures and builds into build/ (Release, ccache, precompiled LibTorch headers).
#
#   scripts/setup.sh              build everything (library, `trainbus`, tests, benchmarks)
#   scripts/setup.sh trainbus     build only the named targets
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache git clang-format
  libtorch-dev libgloo-dev libopenblas0-pthread  # LibTorch 1.13 (CPU); c10d headers need gloo; fast BLAS
  libboost-dev                                   # Signals2, Asio, CRC (header-only)
  libprotobuf-dev protobuf-compiler              # checkpoint manifests, TensorBoard records
  catch2 libcli11-dev libyaml-cpp-dev zlib1g-dev
  libbenchmark-dev                               # micro-benchmarks in bench/ (Google Benchmark)
  dataset-fashion-mnist                          # the main job's data, /usr/share/datasets/fashion-mnist
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup: run as root (or install sudo) to apt-get install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
if (($#)); then
  cmake --build build --target "$@"
else
  cmake --build build
fi
