#!/usr/bin/env bash
# The GPU checks of docs/GPU.md as one script, for a GPU machine without a Rust toolchain: the
# binaries are built elsewhere (benches/gpu_prepare.sh) and copied with the repository. Run from
# the repository root:
#
#   benches/gpu_session.sh BIN_DIR OUT_DIR STEP...
#
# STEP is any of
#   parity    the CUDA parity suite, f32, tf32 and bf16 (FEDOTP_REQUIRE_GPU=1)
#   bench     cuda_bench in TF32 beside PyTorch fp16
#   epoch     the CIFAR-100 local-epoch bench on the GPU beside PyTorch fp16
#   modes     cuda_bench in BF16 and F32 (fedotp only)
#   capi      libfedotp's C++ example (three hospitals, two federated rounds) with its clients on
#             the GPU, then under compute-sanitizer
#   memory    a CIFAR-100 preset run with 100 clients on random stand-in data and weights
#             (benches/synthetic_cifar100.py), round 0 (every client trains once, then every
#             client is evaluated), with the GPU's and the process's peak memory
# Each step's output goes to OUT_DIR/<step>.log; a step that fails or times out does not stop
# the others. BIN_DIR holds fedotp, cuda_bench, cuda_parity and local_epoch, and optionally a
# `whl` folder of Python wheels to install (open_clip_torch and its missing dependencies).
set -u
bin=$(realpath "$1")
out=$(realpath "$2")
shift 2

# cuBLAS and NVRTC: the CUDA toolkit's, else those of PyTorch's nvidia-* wheels.
libs=/usr/local/cuda/lib64
for d in $(python3 -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null); do
  for lib in "$d"/cu13/lib "$d"/*/lib; do [ -d "$lib" ] && libs="$libs:$lib"; done
done
export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"
if [ -d "$bin/whl" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/fedotp-site "$bin"/whl/*.whl && export PYTHONPATH=/tmp/fedotp-site
fi
export PYTHONUNBUFFERED=1 FEDOTP_REQUIRE_GPU=1

# step NAME SECONDS COMMAND...: runs COMMAND with a time limit, output to OUT_DIR/NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date -u +%T), limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s"
  tail -n 40 "$out/$name.log"
}

# memory: the run under a sampler of the GPU's memory and the process's peak RSS.
memory_run() {
  local data=/tmp/fedotp-synthetic run=/tmp/fedotp-memory
  python3 benches/synthetic_cifar100.py --out "$data" || return 1
  rm -rf "$run" && mkdir -p "$run"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 >"$run/gpu_mib" &
  local sampler=$!
  (cd "$run" && exec "$bin/fedotp" train --config "$OLDPWD/configs/cifar100-dirichlet.toml" \
    --set "model.path=\"$data/clip-vit-b-16\"" \
    --set "dataset.source.root=\"$data/cifar-100-binary\"" \
    --set federation.rounds=1 --set cache.memory_budget_mib=65536 --device cuda --quiet) &
  local train=$! peak_rss=0
  while kill -0 "$train" 2>/dev/null; do
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$train/status" 2>/dev/null)
    [ -n "$rss" ] && [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
    sleep 0.5
  done
  wait "$train"
  local status=$?
  kill "$sampler"
  echo "fedotp train exit $status"
  echo "peak GPU memory used (MiB, whole device): $(sort -n "$run/gpu_mib" | tail -1)"
  echo "idle GPU memory before the run (MiB): $(head -1 "$run/gpu_mib")"
  echo "peak resident memory of the process (MiB): $((peak_rss / 1024))"
  return "$status"
}

export -f memory_run
export bin
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
for s in "$@"; do
  case $s in
    parity) step parity 200 "$bin"/cuda_parity --nocapture ;;
    bench) step bench 150 "$bin"/cuda_bench --iterations 10 ;;
    epoch) step epoch 150 "$bin"/local_epoch --bench --device cuda --steps 5 ;;
    modes)
      step bench_bf16 60 "$bin"/cuda_bench --math bf16 --no-torch
      step bench_f32 60 "$bin"/cuda_bench --math f32 --no-torch
      ;;
    memory) step memory 330 bash -c memory_run ;;
    capi)
      rm -rf /tmp/fedotp-capi && mkdir -p /tmp/fedotp-capi
      step capi 120 "$bin"/federated_hospitals /tmp/fedotp-capi cuda
      step capi_sanitizer 300 compute-sanitizer --tool memcheck --leak-check full \
        "$bin"/federated_hospitals /tmp/fedotp-capi cuda
      ;;
    *) echo "unknown step $s" ;;
  esac
done
