#!/usr/bin/env bash
# Cycles per iteration of the 196x2 OT solve on a Cortex-M4F, by a cycle model by instruction
# class (cycle_model.py, which says what it models), against the solve's arithmetic floor.
# Builds the firmware test program in release, traces its `trace` mode under qemu instruction by
# instruction, and fails if the trace's instruction count disagrees with the firmware's own.
#
#   core/firmware/cycles.sh      (needs qemu-system-arm, llvm-objdump and python3: .ci/run)
set -euo pipefail
cd "$(dirname "$0")"

cargo build --release --locked --quiet
elf="${CARGO_TARGET_DIR:-target}/thumbv7em-none-eabihf/release/fedotp-firmware"
exec python3 cycle_model.py "$elf"
