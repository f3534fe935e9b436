// Embeddings and row movement: prompt assembly with learned context, position embeddings,
// ViT patches and tokens, the EOT gather, and the bias broadcast of the linear layers.
// Each is a grid-stride loop over output elements; see `Backend` in backend/mod.rs for the
// exact definition of every operation.

// out[s, t] = ctx[set[s], t - 1] for t in 1..=n_ctx, else table[ids[s, t]].
extern "C" __global__ void prompt_embed(float* __restrict__ out,
                                        const float* __restrict__ table,
                                        const unsigned* __restrict__ ids,
                                        const float* __restrict__ ctx,
                                        const unsigned* __restrict__ set,
                                        int batch, int seq, int width, int n_ctx) {
    const long long total = (long long)batch * seq * width;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const long long row = e / width;
        const int col = (int)(e % width);
        const int s = (int)(row / seq);
        const int t = (int)(row % seq);
        float value;
        if (t >= 1 && t <= n_ctx) {
            value = ctx[((long long)set[s] * n_ctx + (t - 1)) * width + col];
        } else {
            value = table[(long long)ids[row] * width + col];
        }
        out[e] = value;
    }
}

// d_ctx[k, r] = sum over sequences s with set[s] = k of d_out[s, 1 + r], summed in sequence
// order by one thread per context element, so the result does not depend on scheduling.
extern "C" __global__ void prompt_embed_backward(float* __restrict__ d_ctx,
                                                 const float* __restrict__ d_out,
                                                 const unsigned* __restrict__ set,
                                                 int batch, int seq, int width, int n_ctx,
                                                 int n_sets) {
    const long long total = (long long)n_sets * n_ctx * width;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const int k = (int)(e / ((long long)n_ctx * width));
        const long long within = e % ((long long)n_ctx * width);  // r * width + col
        float sum = 0.0f;
        for (int s = 0; s < batch; ++s) {
            if ((int)set[s] == k) {
                sum += d_out[((long long)s * seq + 1) * width + within];
            }
        }
        d_ctx[e] = sum;
    }
}

// out[s, t] = tokens[s, t] + pos[t] for t < seq, reading tokens with in_seq rows per sequence.
extern "C" __global__ void position_embed(float* __restrict__ out,
                                          const float* __restrict__ tokens,
                                          const float* __restrict__ pos,
                                          int batch, int seq, int width, int in_seq) {
    const long long total = (long long)batch * seq * width;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const long long row = e / width;
        const int col = (int)(e % width);
        const long long s = row / seq;
        const int t = (int)(row % seq);
        out[e] = tokens[(s * in_seq + t) * width + col] + pos[(long long)t * width + col];
    }
}

// d_tokens[s, t] = d_out[s, t] for t < seq, zero for seq <= t < in_seq.
extern "C" __global__ void position_embed_backward(float* __restrict__ d_tokens,
                                                   const float* __restrict__ d_out,
                                                   int batch, int seq, int width, int in_seq) {
    const long long total = (long long)batch * in_seq * width;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const long long row = e / width;
        const int col = (int)(e % width);
        const long long s = row / in_seq;
        const int t = (int)(row % in_seq);
        d_tokens[e] = t < seq ? d_out[(s * seq + t) * width + col] : 0.0f;
    }
}

// out[b, m, (c, y, x)] = images[b, c, gy·patch + y, gx·patch + x] with (gy, gx) = divmod(m, grid).
extern "C" __global__ void extract_patches(float* __restrict__ out,
                                           const float* __restrict__ images,
                                           int batch, int channels, int image_size,
                                           int patch_size) {
    const int grid = image_size / patch_size;
    const int patches = grid * grid;
    const int patch_len = channels * patch_size * patch_size;
    const long long total = (long long)batch * patches * patch_len;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const long long p = e / patch_len;  // b * patches + m
        const int within = (int)(e % patch_len);
        const long long b = p / patches;
        const int m = (int)(p % patches);
        const int c = within / (patch_size * patch_size);
        const int y = (within / patch_size) % patch_size;
        const int x = within % patch_size;
        const int gy = m / grid, gx = m % grid;
        const long long src =
            ((b * channels + c) * image_size + (long long)gy * patch_size + y) * image_size +
            (long long)gx * patch_size + x;
        out[e] = images[src];
    }
}

// out[b, 0] = class + pos[0]; out[b, 1 + m] = patches[b, m] + pos[1 + m].
extern "C" __global__ void vit_tokens(float* __restrict__ out,
                                      const float* __restrict__ patches,
                                      const float* __restrict__ class_embedding,
                                      const float* __restrict__ pos,
                                      int batch, int seq, int width) {
    const long long total = (long long)batch * seq * width;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const long long row = e / width;
        const int col = (int)(e % width);
        const long long b = row / seq;
        const int t = (int)(row % seq);
        const float x = t == 0 ? class_embedding[col]
                               : patches[(b * (seq - 1) + (t - 1)) * width + col];
        out[e] = x + pos[(long long)t * width + col];
    }
}

// out[s] = inp[s, positions[s]] (rows of `width` values).
extern "C" __global__ void gather_rows(float* __restrict__ out,
                                       const float* __restrict__ inp,
                                       const unsigned* __restrict__ positions,
                                       int batch, int seq, int width) {
    const long long total = (long long)batch * width;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const long long s = e / width;
        const int col = (int)(e % width);
        out[e] = inp[(s * seq + positions[s]) * width + col];
    }
}

// d_inp[s, t] = d_out[s] where t = positions[s], zero elsewhere.
extern "C" __global__ void gather_rows_backward(float* __restrict__ d_inp,
                                                const float* __restrict__ d_out,
                                                const unsigned* __restrict__ positions,
                                                int batch, int seq, int width) {
    const long long total = (long long)batch * seq * width;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const long long row = e / width;
        const int col = (int)(e % width);
        const long long s = row / seq;
        const int t = (int)(row % seq);
        d_inp[e] = t == (int)positions[s] ? d_out[s * width + col] : 0.0f;
    }
}

// out[r] = bias for every row r: the starting value the linear layer's GEMM accumulates onto.
extern "C" __global__ void broadcast_rows(float* __restrict__ out,
                                          const float* __restrict__ bias,
                                          int rows, int width) {
    const long long total = (long long)rows * width;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        out[e] = bias[e % width];
    }
}
