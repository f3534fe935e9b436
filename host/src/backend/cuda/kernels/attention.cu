// The softmax around attention's batched GEMMs (scores = scale · Q Kᵀ and out = P V run in
// cuBLAS). Rows are the `batch × heads × seq` query rows of the `seq × seq` score matrices,
// one warp per row.

// In place: probs[r] = softmax(probs[r]) over the visible keys, zero over masked ones. With
// `causal`, query i (the row's index within its seq × seq matrix) sees keys 0..=i.
extern "C" __global__ void softmax_forward(float* __restrict__ probs,
                                           int rows, int seq, int causal) {
    const long long row = global_warp();
    if (row >= rows) return;
    float* p = probs + row * seq;
    const int visible = causal ? (int)(row % seq) + 1 : seq;
    float max = -INFINITY;
    for (int j = lane(); j < visible; j += WARP_SIZE) max = fmaxf(max, p[j]);
    max = warp_max(max);
    float sum = 0.0f;
    for (int j = lane(); j < visible; j += WARP_SIZE) {
        const float e = expf(p[j] - max);
        p[j] = e;
        sum += e;
    }
    const float inv = 1.0f / warp_sum(sum);
    for (int j = lane(); j < seq; j += WARP_SIZE) p[j] = j < visible ? p[j] * inv : 0.0f;
}

// In place: d[r] = scale · P ⊙ (dP - Σ_j dP ⊙ P), the gradient with respect to the raw
// (unscaled) scores Q Kᵀ given dP in `d` — the `scale` of the forward GEMM folded in. Masked
// entries have P = 0 and so get 0.
extern "C" __global__ void softmax_backward(float* __restrict__ d,
                                            const float* __restrict__ probs,
                                            int rows, int seq, float scale) {
    const long long row = global_warp();
    if (row >= rows) return;
    float* dp = d + row * seq;
    const float* p = probs + row * seq;
    float dot = 0.0f;
    for (int j = lane(); j < seq; j += WARP_SIZE) dot += dp[j] * p[j];
    dot = warp_sum(dot);
    for (int j = lane(); j < seq; j += WARP_SIZE) dp[j] = scale * p[j] * (dp[j] - dot);
}

// The operand addresses of a batch of `count` matrix products over two batch axes, for
// cublasGemmBatchedEx: product i is (i / inner, i % inner), and each operand's matrix sits at
// its base plus that pair times its two strides (in floats). Writes `count` addresses of A,
// then of B, then of C. Attention's (sequence, head) pairs take one call this way instead of
// a loop of strided-batched calls over the shorter axis.
extern "C" __global__ void batch_pointers(unsigned long long* __restrict__ out, int count,
                                          int inner, const float* a, long long a_outer,
                                          long long a_inner, const float* b, long long b_outer,
                                          long long b_inner, const float* c, long long c_outer,
                                          long long c_inner) {
    for (long long i = grid_start(); i < count; i += grid_stride()) {
        const long long o = i / inner, n = i % inner;
        out[i] = (unsigned long long)(a + o * a_outer + n * a_inner);
        out[count + i] = (unsigned long long)(b + o * b_outer + n * b_inner);
        out[2 * (long long)count + i] = (unsigned long long)(c + o * c_outer + n * c_inner);
    }
}
