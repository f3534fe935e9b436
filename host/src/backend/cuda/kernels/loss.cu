// Softmax cross-entropy over class logits, forward and backward fused: one warp per row.

// losses[r] = logsumexp(logits[r]) - logits[r, labels[r]];
// d_logits[r] = grad_scale · (softmax(logits[r]) - onehot(labels[r])), grad_scale = 1/rows for
// the mean over the batch.
extern "C" __global__ void cross_entropy(float* __restrict__ losses,
                                         float* __restrict__ d_logits,
                                         const float* __restrict__ logits,
                                         const unsigned* __restrict__ labels,
                                         int rows, int classes, float grad_scale) {
    const long long row = global_warp();
    if (row >= rows) return;
    const float* x = logits + row * classes;
    float max = -INFINITY;
    for (int c = lane(); c < classes; c += WARP_SIZE) max = fmaxf(max, x[c]);
    max = warp_max(max);
    float sum = 0.0f;
    for (int c = lane(); c < classes; c += WARP_SIZE) sum += expf(x[c] - max);
    sum = warp_sum(sum);
    const int label = (int)labels[row];
    const float inv = 1.0f / sum;
    float* d = d_logits + row * classes;
    for (int c = lane(); c < classes; c += WARP_SIZE) {
        const float prob = expf(x[c] - max) * inv;
        d[c] = grad_scale * (prob - (c == label ? 1.0f : 0.0f));
    }
    if (lane() == 0) losses[row] = logf(sum) + max - x[label];
}
