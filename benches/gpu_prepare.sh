#!/usr/bin/env bash
# Builds what benches/gpu_session.sh runs on a GPU machine that has no Rust toolchain, into
# BIN_DIR (default .gpu, which .git/info/exclude should ignore): the release binaries fedotp,
# cuda_bench, the cuda_parity test and the local_epoch bench, stripped; the C++ example of
# libfedotp linked statically (federated_hospitals); and the Python wheels the PyTorch
# references need beyond PyTorch (open_clip_torch, ftfy, wcwidth), for CPython 3.12.
set -euo pipefail
dir=${1:-.gpu}
mkdir -p "$dir/whl"
cargo build --release -p fedotp-cli --bin fedotp -p fedotp-benches --bin cuda_bench -p fedotp-ffi
# `cargo test/bench --no-run` name the executables they build on stderr.
executable() { sed -n 's/.*Executable .* (\(.*\))$/\1/p' | tail -1; }
parity=$(cargo test --release -p fedotp-tests --test cuda_parity --no-run 2>&1 | executable)
epoch=$(cargo bench -p fedotp-benches --bench local_epoch --no-run 2>&1 | executable)
for pair in "target/release/fedotp fedotp" "target/release/cuda_bench cuda_bench" \
  "$parity cuda_parity" "$epoch local_epoch"; do
  set -- $pair
  strip -o "$dir/$2" "$1"
done
# The static library's system dependencies, as `ffi/install.sh` writes them into fedotp.pc.
g++ -std=c++17 -O2 -Iinclude ffi/examples/cpp/federated_hospitals.cpp target/release/libfedotp.a \
  -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$dir/federated_hospitals"
strip "$dir/federated_hospitals"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d "$dir/whl" \
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13
ls -la "$dir" "$dir/whl"
