// Element-wise layers: QuickGELU, the residual add and ReLU.

#define QUICK_GELU_ALPHA 1.702f

__device__ __forceinline__ float sigmoid(float x) {
    return 1.0f / (1.0f + expf(-x));
}

// out = x · σ(1.702 x).
extern "C" __global__ void quick_gelu_forward(float* __restrict__ out,
                                              const float* __restrict__ inp, long long len) {
    for (long long e = grid_start(); e < len; e += grid_stride()) {
        const float x = inp[e];
        out[e] = x * sigmoid(QUICK_GELU_ALPHA * x);
    }
}

// In place: d *= σ(1.702 x) + 1.702 x σ(1.702 x)(1 - σ(1.702 x)).
extern "C" __global__ void quick_gelu_backward(float* __restrict__ d,
                                               const float* __restrict__ inp, long long len) {
    for (long long e = grid_start(); e < len; e += grid_stride()) {
        const float x = inp[e];
        const float s = sigmoid(QUICK_GELU_ALPHA * x);
        d[e] *= s + QUICK_GELU_ALPHA * x * s * (1.0f - s);
    }
}

// acc += x.
extern "C" __global__ void add_assign(float* __restrict__ acc,
                                      const float* __restrict__ x, long long len) {
    for (long long e = grid_start(); e < len; e += grid_stride()) acc[e] += x[e];
}

// In place: x = max(x, 0). `fmaxf` returns the non-NaN operand, as the CPU backend's `f32::max`
// does, so both backends map a NaN to 0.
extern "C" __global__ void relu(float* __restrict__ x, long long len) {
    for (long long e = grid_start(); e < len; e += grid_stride()) x[e] = fmaxf(x[e], 0.0f);
}
