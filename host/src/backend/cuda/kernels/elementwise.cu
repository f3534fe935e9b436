// Element-wise layers: QuickGELU, GELU, the residual add and ReLU.

#define QUICK_GELU_ALPHA 1.702f
#define M_SQRT1_2_F 0.70710678f   // 1 / √2
#define INV_SQRT_2PI_F 0.39894228f  // 1 / √(2π)

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

// out = x · Φ(x) = ½ x (1 + erf(x / √2)), the exact GELU (PyTorch's nn.GELU()).
extern "C" __global__ void gelu_forward(float* __restrict__ out, const float* __restrict__ inp,
                                        long long len) {
    for (long long e = grid_start(); e < len; e += grid_stride()) {
        const float x = inp[e];
        out[e] = 0.5f * x * (1.0f + erff(x * M_SQRT1_2_F));
    }
}

// In place: d *= Φ(x) + x φ(x), φ the standard normal density.
extern "C" __global__ void gelu_backward(float* __restrict__ d, const float* __restrict__ inp,
                                         long long len) {
    for (long long e = grid_start(); e < len; e += grid_stride()) {
        const float x = inp[e];
        const float cdf = 0.5f * (1.0f + erff(x * M_SQRT1_2_F));
        d[e] *= cdf + x * INV_SQRT_2PI_F * expf(-0.5f * x * x);
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
