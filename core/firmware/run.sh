#!/usr/bin/env bash
# Builds the firmware test program in release and runs it on an emulated Cortex-M4F: qemu's
# mps2-an386 board, with the runner of .cargo/config.toml (semihosting on, -icount shift=0).
# The exit status is the program's: 0 only if every check passed; 124 if it ran out of time.
#
#   core/firmware/run.sh            (needs the thumbv7em-none-eabihf target and qemu-system-arm)
#   FIRMWARE_TIMEOUT=60 core/firmware/run.sh
set -euo pipefail
cd "$(dirname "$0")"

cargo build --release --locked
start=$(date +%s%N)
status=0
# timeout signals its whole process group, so qemu goes too, not just cargo.
timeout --kill-after=5 "${FIRMWARE_TIMEOUT:-120}" cargo run --release --locked --quiet || status=$?
echo "firmware test program: exit status $status after $((($(date +%s%N) - start) / 1000000)) ms under qemu"
exit "$status"
