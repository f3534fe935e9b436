// The ModifiedResNet (RN50) image tower's layers over channels-last maps (`batch × height ×
// width × channels`, each position a row of `channels` values): the layout change of the input
// images, im2col (whose rows a cuBLAS GEMM multiplies by the convolution weight), inference
// batch-norm, average pooling and the attention pool's tokens. Each is a grid-stride loop over
// output elements, with consecutive threads on consecutive channels, so reads and writes of a
// position row are coalesced. See `Backend` in backend/mod.rs for the exact definitions.

// out[b, i, c] = inp[b, c, i] over the `positions` = height·width positions of each image.
extern "C" __global__ void to_channels_last(float* __restrict__ out,
                                            const float* __restrict__ inp,
                                            int batch, int positions, int channels) {
    const long long total = (long long)batch * positions * channels;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const int c = (int)(e % channels);
        const long long row = e / channels;
        const long long b = row / positions;
        const int i = (int)(row % positions);
        out[e] = inp[(b * channels + c) * positions + i];
    }
}

// Rows `first .. first + rows` of the im2col matrix of a channels-last input: row r is output
// position (b, oy, ox) of an out_h × out_w output, and holds, tap (ky, kx) after tap, the
// `channels` input values under that tap — zero where it falls in the padding. That is the
// order of a channels-last weight row (`out × kernel × kernel × in`), so the convolution is
// `cols · Wᵀ`. `cols` holds the `rows` rows from its start.
extern "C" __global__ void im2col(float* __restrict__ cols, const float* __restrict__ inp,
                                  int first, int rows, int height, int width, int channels,
                                  int out_h, int out_w, int kernel, int stride, int padding) {
    const int patch_len = kernel * kernel * channels;
    const long long total = (long long)rows * patch_len;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const long long r = first + e / patch_len;
        const int j = (int)(e % patch_len);
        const int c = j % channels;
        const int kx = (j / channels) % kernel;
        const int ky = j / (channels * kernel);
        const int ox = (int)(r % out_w);
        const int oy = (int)(r / out_w % out_h);
        const long long b = r / ((long long)out_w * out_h);
        const int iy = oy * stride + ky - padding;
        const int ix = ox * stride + kx - padding;
        float value = 0.0f;
        if (iy >= 0 && iy < height && ix >= 0 && ix < width) {
            value = inp[((b * height + iy) * width + ix) * channels + c];
        }
        cols[e] = value;
    }
}

// In place, per channel: x = x · a + (β − mean · a) with a = γ / √(var + eps) — the CPU
// backend's (and PyTorch's CPU kernel's) arithmetic, recomputed per element: the kernel is bound
// by memory traffic, not by the division.
extern "C" __global__ void batch_norm(float* __restrict__ x, const float* __restrict__ weight,
                                      const float* __restrict__ bias,
                                      const float* __restrict__ running_mean,
                                      const float* __restrict__ running_var,
                                      int rows, int channels, float eps) {
    const long long total = (long long)rows * channels;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const int c = (int)(e % channels);
        const float scale = weight[c] / sqrtf(running_var[c] + eps);
        const float shift = bias[c] - running_mean[c] * scale;
        x[e] = x[e] * scale + shift;
    }
}

// out[b, oy, ox, c] = mean of inp[b, oy·k + ky, ox·k + kx, c] over the k × k window, summed
// row by row, left to right (the CPU backend's order); trailing rows and columns that do not
// fill a window are dropped (floor rounding, as PyTorch's AvgPool2d).
extern "C" __global__ void avg_pool2d(float* __restrict__ out, const float* __restrict__ inp,
                                      int batch, int height, int width, int channels,
                                      int kernel) {
    const int out_h = height / kernel;
    const int out_w = width / kernel;
    const long long total = (long long)batch * out_h * out_w * channels;
    const float area = (float)(kernel * kernel);
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const int c = (int)(e % channels);
        const long long r = e / channels;
        const int ox = (int)(r % out_w);
        const int oy = (int)(r / out_w % out_h);
        const long long b = r / ((long long)out_w * out_h);
        float sum = 0.0f;
        for (int ky = 0; ky < kernel; ++ky) {
            const long long row = (b * height + (long long)oy * kernel + ky) * width +
                                  (long long)ox * kernel;
            for (int kx = 0; kx < kernel; ++kx) sum += inp[(row + kx) * channels + c];
        }
        out[e] = sum / area;
    }
}

// The attention pool's tokens, `batch × (1 + positions) × channels`:
// out[b, 0] = mean_i map[b, i] + pos[0] (summed in position order) and
// out[b, 1 + i] = map[b, i] + pos[1 + i].
extern "C" __global__ void attention_pool_tokens(float* __restrict__ out,
                                                 const float* __restrict__ map,
                                                 const float* __restrict__ pos,
                                                 int batch, int positions, int channels) {
    const int seq = 1 + positions;
    const long long total = (long long)batch * seq * channels;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const int c = (int)(e % channels);
        const long long row = e / channels;
        const long long b = row / seq;
        const int t = (int)(row % seq);
        const float* image = map + b * positions * channels;
        float value;
        if (t == 0) {
            float sum = 0.0f;
            for (int i = 0; i < positions; ++i) sum += image[(long long)i * channels + c];
            value = sum / (float)positions;
        } else {
            value = image[(long long)(t - 1) * channels + c];
        }
        out[e] = value + pos[(long long)t * channels + c];
    }
}
