// Helpers shared by every kernel file. The Rust side prepends this file to each `.cu` file
// before NVRTC compiles it (NVRTC has no file system), followed by a `#line 1` directive so
// compiler messages name the `.cu` file and its own line numbers.
//
// Conventions of all kernels:
// - buffers are flat row-major `float`, dimensions are `int` (the host checks they fit), and
//   offsets are formed in 64-bit (`long long`) because products of dimensions may not fit;
// - "one warp per row" kernels give each row to one warp of 32 lanes, so reductions over a row
//   are warp shuffles with no shared memory and no block barrier; a warp whose row is past the
//   end returns as a whole, so every shuffle sees all 32 lanes;
// - element-wise kernels are grid-stride loops, so any grid size covers any length.

#define FULL_MASK 0xffffffffu
#define WARP_SIZE 32

// NVRTC compiles without the C library's headers, so <math.h>'s constants are spelled here.
#define INFINITY __int_as_float(0x7f800000)
#define NAN __int_as_float(0x7fc00000)

// The sum over the warp's 32 lanes. A butterfly: at every step a lane adds its partner's
// value to its own, and the partner adds the same two values in the other order; IEEE
// addition commutes, so every lane ends with the same, bitwise-identical sum — which the OT
// solver relies on for all lanes to take the same stopping decision.
__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
        x += __shfl_xor_sync(FULL_MASK, x, offset);
    }
    return x;
}

// The largest value over the warp's lanes (NaN-ignoring, like `fmaxf`), on every lane.
__device__ __forceinline__ float warp_max(float x) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
        x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, offset));
    }
    return x;
}

// The smallest value over the warp's lanes (NaN-ignoring, like `fminf`), on every lane.
__device__ __forceinline__ float warp_min(float x) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
        x = fminf(x, __shfl_xor_sync(FULL_MASK, x, offset));
    }
    return x;
}

// This thread's warp, counted over the whole grid: the row of a one-warp-per-row kernel.
__device__ __forceinline__ long long global_warp() {
    return ((long long)blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
}

// This thread's lane within its warp.
__device__ __forceinline__ int lane() {
    return threadIdx.x % WARP_SIZE;
}

// First element of this thread in a grid-stride loop, and the stride.
__device__ __forceinline__ long long grid_start() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long grid_stride() {
    return (long long)gridDim.x * blockDim.x;
}
