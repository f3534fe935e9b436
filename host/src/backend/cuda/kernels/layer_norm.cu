// Layer normalisation over rows of `width` values, one warp per row.

// out = (x - mean) · rstd · weight + bias, with mean and rstd = 1/sqrt(var + eps) also written
// for the backward pass. Two passes over the row in f32 — the mean, then the centred variance —
// as the CPU backend and PyTorch's CPU kernel do.
extern "C" __global__ void layer_norm_forward(float* __restrict__ out,
                                              float* __restrict__ mean,
                                              float* __restrict__ rstd,
                                              const float* __restrict__ inp,
                                              const float* __restrict__ weight,
                                              const float* __restrict__ bias,
                                              int rows, int width, float eps) {
    const long long row = global_warp();
    if (row >= rows) return;
    const float* x = inp + row * width;
    float sum = 0.0f;
    for (int i = lane(); i < width; i += WARP_SIZE) sum += x[i];
    const float mu = warp_sum(sum) / (float)width;
    float squares = 0.0f;
    for (int i = lane(); i < width; i += WARP_SIZE) {
        const float d = x[i] - mu;
        squares += d * d;
    }
    const float var = warp_sum(squares) / (float)width;
    const float s = 1.0f / sqrtf(var + eps);
    float* o = out + row * width;
    for (int i = lane(); i < width; i += WARP_SIZE) o[i] = (x[i] - mu) * s * weight[i] + bias[i];
    if (lane() == 0) {
        mean[row] = mu;
        rstd[row] = s;
    }
}

// d_inp += rstd · (g - mean(g) - n · mean(g ⊙ n)) with n = (x - mean) · rstd and g = weight ⊙
// d_out: the input gradient, accumulated (the residual stream's gradient is already there).
// The weights are frozen, so no weight or bias gradient is formed.
extern "C" __global__ void layer_norm_backward(float* __restrict__ d_inp,
                                               const float* __restrict__ d_out,
                                               const float* __restrict__ inp,
                                               const float* __restrict__ mean,
                                               const float* __restrict__ rstd,
                                               const float* __restrict__ weight,
                                               int rows, int width) {
    const long long row = global_warp();
    if (row >= rows) return;
    const float* x = inp + row * width;
    const float* dy = d_out + row * width;
    const float mu = mean[row], s = rstd[row];
    float g_sum = 0.0f, gn_sum = 0.0f;
    for (int i = lane(); i < width; i += WARP_SIZE) {
        const float g = weight[i] * dy[i];
        g_sum += g;
        gn_sum += g * (x[i] - mu) * s;
    }
    const float g_mean = warp_sum(g_sum) / (float)width;
    const float gn_mean = warp_sum(gn_sum) / (float)width;
    float* dx = d_inp + row * width;
    for (int i = lane(); i < width; i += WARP_SIZE) {
        const float n = (x[i] - mu) * s;
        dx[i] += s * (weight[i] * dy[i] - g_mean - n * gn_mean);
    }
}
