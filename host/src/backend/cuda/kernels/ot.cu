// FedOTP's OT head on the GPU: L2 normalisation of feature rows, the batched optimal-transport
// solve with the transported-similarity logits, and the logits' gradient.
//
// The solver is the core's (core/src/ot/solver.rs) step for step, so plans, iteration counts
// and stopping agree with it up to f32 rounding:
// - the kernel is kept shifted by two dual potentials, K̃[i,j] = exp((S[i,j] - p[i] - q[j])/eps),
//   with q[j] = max_i S[i,j] and, when the rows are saturated (balanced, or gamma = 1),
//   p[i] = max_j (S[i,j] - q[j]), else p = 0;
// - one iteration: u = a / (K̃ v), clamped to exp(p/eps) unless saturated; v = b / (K̃ᵀ u);
//   stop when the mean relative change of v is below tol (per problem, never over the batch);
// - when u or v leave [1/absorb, absorb] (or are NaN) they are absorbed into p and q and K̃ is
//   rebuilt from S; a scaling that is 0 or not finite re-centres its potential on its largest
//   entry instead. `absorb` and the ceiling on the bound are the core's constants, passed in by
//   the host so the two solvers cannot drift apart.
//
// One warp per problem, several problems per block. A problem's K̃ (column-major, so a warp
// reads consecutive words), u, the bound, p, v and q live in shared memory: M·N + 3M + 2N floats,
// the core's `workspace_len`. Lane l owns patches l, l + 32, …; the sums over patches are warp
// butterflies, which leave the same value on every lane, so all lanes take the same branch.

// Bits of a problem's report flags.
#define REPORT_CONVERGED 1u
#define REPORT_NON_FINITE 2u

// out[r] = inp[r] / ‖inp[r]‖ and inv_norm[r] = 1 / ‖inp[r]‖, the norm taken as the core does
// (scaled by the row's largest magnitude, so the squares neither overflow nor underflow). A zero
// or non-finite row gives NaN, which the OT solve reports as a non-finite similarity.
extern "C" __global__ void l2_normalize_rows(float* __restrict__ out,
                                             float* __restrict__ inv_norm,
                                             const float* __restrict__ inp,
                                             int rows, int dim) {
    const long long row = global_warp();
    if (row >= rows) return;
    const float* x = inp + row * dim;
    float largest = 0.0f;
    bool finite = true;
    for (int i = lane(); i < dim; i += WARP_SIZE) {
        largest = fmaxf(largest, fabsf(x[i]));
        finite = finite && isfinite(x[i]);
    }
    largest = warp_max(largest);
    finite = __all_sync(FULL_MASK, finite);
    float sum = 0.0f;
    for (int i = lane(); i < dim; i += WARP_SIZE) {
        const float scaled = x[i] / largest;
        sum += scaled * scaled;
    }
    sum = warp_sum(sum);
    const float inv = (finite && largest > 0.0f) ? 1.0f / (largest * sqrtf(sum)) : NAN;
    float* o = out + row * dim;
    for (int i = lane(); i < dim; i += WARP_SIZE) o[i] = x[i] * inv;
    if (lane() == 0) inv_norm[row] = inv;
}

// d_inp[r] = (d_out[r] - y (y · d_out[r])) / ‖inp[r]‖ with y = out[r]: the gradient through
// the normalisation (overwritten).
extern "C" __global__ void l2_normalize_rows_backward(float* __restrict__ d_inp,
                                                      const float* __restrict__ d_out,
                                                      const float* __restrict__ out,
                                                      const float* __restrict__ inv_norm,
                                                      int rows, int dim) {
    const long long row = global_warp();
    if (row >= rows) return;
    const float* y = out + row * dim;
    const float* dy = d_out + row * dim;
    float dot = 0.0f;
    for (int i = lane(); i < dim; i += WARP_SIZE) dot += y[i] * dy[i];
    dot = warp_sum(dot);
    const float inv = inv_norm[row];
    float* dx = d_inp + row * dim;
    for (int i = lane(); i < dim; i += WARP_SIZE) dx[i] = (dy[i] - y[i] * dot) * inv;
}

// Recomputes K̃ and (unless saturated) the bound exp(p/eps) on u from S and the potentials.
__device__ void rebuild_kernel(float* kernel, float* bound, const float* p, const float* q,
                               const float* s, int m, int n, int classes, float inv_eps,
                               bool saturated, float bound_ceiling) {
    for (int i = lane(); i < m; i += WARP_SIZE) {
        for (int j = 0; j < n; ++j) {
            const float sij = s[((long long)i * n + j) * classes];
            kernel[j * m + i] = expf((sij - p[i] - q[j]) * inv_eps);
        }
        if (!saturated) bound[i] = fminf(expf(p[i] * inv_eps), bound_ceiling);
    }
    __syncwarp();
}

// Solves the B·C problems of a batch (image b, class c): S is images × patches × prompts ×
// classes (one GEMM of patch features with prompt features), so problem (b, c) reads
// S[b, i, j, c]. Writes, per problem p = b·C + c:
// - plans (if not null): T = diag(u) K̃ diag(v), row-major M × N at p·M·N;
// - logits: scale · Σ T ⊙ S;
// - reports[2p] = iterations run, reports[2p + 1] = REPORT_* flags.
// `a` = 1/M, `b` = the prompt mass (gamma/N or 1/N) and `inv_eps` = 1/eps are computed by the
// host in f32 exactly as the core computes them; `saturated_flag` is the core's
// `rows_saturated()` (balanced, or gamma = 1).
extern "C" __global__ void ot_solve(const float* __restrict__ sim,
                                    float* __restrict__ plans,
                                    float* __restrict__ logits,
                                    unsigned* __restrict__ reports,
                                    int images, int m, int n, int classes,
                                    float eps, float inv_eps, float a, float b,
                                    int max_iter, float tol, int saturated_flag, float scale,
                                    float absorb, float bound_ceiling) {
    extern __shared__ float shared[];
    const int warp = threadIdx.x / WARP_SIZE;
    const int warps = blockDim.x / WARP_SIZE;
    const long long problem = (long long)blockIdx.x * warps + warp;
    if (problem >= (long long)images * classes) return;  // the whole warp leaves together
    const bool saturated = saturated_flag != 0;
    const long long image = problem / classes;
    const int cls = (int)(problem % classes);

    float* kernel = shared + (long long)warp * (m * n + 3 * m + 2 * n);
    float* u = kernel + m * n;
    float* bound = u + m;
    float* p = bound + m;
    float* v = p + m;
    float* q = v + n;
    // S(i, j) = s[(i·N + j)·C]
    const float* s = sim + image * m * n * classes + cls;
#define S(i, j) s[((long long)(i) * n + (j)) * classes]

    // q[j] = max_i S[i,j], checking every similarity on the way.
    bool finite = true;
    for (int j = 0; j < n; ++j) {
        float largest = -INFINITY;
        for (int i = lane(); i < m; i += WARP_SIZE) {
            const float sij = S(i, j);
            finite = finite && isfinite(sij);
            largest = fmaxf(largest, sij);
        }
        largest = warp_max(largest);
        if (lane() == 0) {
            q[j] = largest;
            v[j] = 1.0f;
        }
    }
    finite = __all_sync(FULL_MASK, finite);
    float* plan = plans ? plans + problem * m * n : nullptr;
    if (!finite) {
        for (int e = lane(); e < m * n; e += WARP_SIZE) {
            if (plan) plan[e] = NAN;
        }
        if (lane() == 0) {
            logits[problem] = NAN;
            reports[2 * problem] = 0;
            reports[2 * problem + 1] = REPORT_NON_FINITE;
        }
        return;
    }
    __syncwarp();
    for (int i = lane(); i < m; i += WARP_SIZE) {
        float pi = 0.0f;
        if (saturated) {
            pi = -INFINITY;
            for (int j = 0; j < n; ++j) pi = fmaxf(pi, S(i, j) - q[j]);
        }
        p[i] = pi;
        u[i] = 1.0f;
    }
    __syncwarp();
    rebuild_kernel(kernel, bound, p, q, s, m, n, classes, inv_eps, saturated, bound_ceiling);

    unsigned iterations = (unsigned)max_iter;
    unsigned flags = 0;
    for (int iteration = 1; iteration <= max_iter; ++iteration) {
        // u = a / (K̃ v), clamped to the bound unless saturated; track its range.
        float low = INFINITY, high = 0.0f;
        for (int i = lane(); i < m; i += WARP_SIZE) {
            float x = 0.0f;
            for (int j = 0; j < n; ++j) x += kernel[j * m + i] * v[j];
            const float ratio = a / x;
            const float limit = bound[i];
            const float ui = (saturated || ratio < limit) ? ratio : limit;
            u[i] = ui;
            low = ui < low ? ui : low;
            high = ui > high ? ui : high;
        }
        low = warp_min(low);
        high = warp_max(high);
        __syncwarp();

        // v = b / (K̃ᵀ u); the mean relative change of v.
        float change = 0.0f;
        bool v_in_range = true;
        for (int j = 0; j < n; ++j) {
            float partial = 0.0f;
            for (int i = lane(); i < m; i += WARP_SIZE) partial += kernel[j * m + i] * u[i];
            const float updated = b / warp_sum(partial);
            const float old = v[j];
            change += fabsf((updated - old) / old);
            v_in_range = v_in_range && updated >= 1.0f / absorb && updated <= absorb;
            __syncwarp();  // every lane has read v[j] before lane 0 replaces it
            if (lane() == 0) v[j] = updated;
        }
        __syncwarp();
        change /= (float)n;
        if (change < tol) {
            iterations = (unsigned)iteration;
            flags = REPORT_CONVERGED;
            break;
        }
        if (!(low >= 1.0f / absorb && high <= absorb && v_in_range)) {
            // Absorb: q -= eps·ln v, p -= eps·ln u, scalings back to 1, kernel rebuilt. A scaling
            // that is 0 or not finite re-centres its potential instead (the prompt side first,
            // on the old p; then the patch side on the new q — the core's order).
            for (int j = 0; j < n; ++j) {
                const float vj = v[j];
                float qj;
                if (isfinite(vj) && vj > 0.0f) {
                    qj = q[j] - eps * logf(vj);
                } else {
                    float largest = -INFINITY;
                    for (int i = lane(); i < m; i += WARP_SIZE) {
                        largest = fmaxf(largest, S(i, j) - p[i]);
                    }
                    qj = warp_max(largest);
                }
                __syncwarp();
                if (lane() == 0) {
                    q[j] = qj;
                    v[j] = 1.0f;
                }
            }
            __syncwarp();
            for (int i = lane(); i < m; i += WARP_SIZE) {
                const float ui = u[i];
                if (isfinite(ui) && ui > 0.0f) {
                    p[i] -= eps * logf(ui);
                } else {
                    float largest = -INFINITY;
                    for (int j = 0; j < n; ++j) largest = fmaxf(largest, S(i, j) - q[j]);
                    p[i] = largest;
                }
                u[i] = 1.0f;
            }
            __syncwarp();
            rebuild_kernel(kernel, bound, p, q, s, m, n, classes, inv_eps, saturated, bound_ceiling);
        }
    }

    // T = diag(u) K̃ diag(v) and the similarity it transports.
    float transported = 0.0f;
    for (int i = lane(); i < m; i += WARP_SIZE) {
        float row = 0.0f;
        for (int j = 0; j < n; ++j) {
            const float t = u[i] * kernel[j * m + i] * v[j];
            if (plan) plan[(long long)i * n + j] = t;
            row += t * S(i, j);
        }
        transported += row;
    }
    transported = warp_sum(transported);
    if (lane() == 0) {
        logits[problem] = scale * transported;
        reports[2 * problem] = iterations;
        reports[2 * problem + 1] = flags;
    }
#undef S
}

// d_sim[b, i, j, c] = scale · T_(b,c)[i, j] · d_logits[b, c]: the gradient of the logits with
// respect to the similarities, the plans held constant (as the paper trains).
extern "C" __global__ void transported_logits_backward(float* __restrict__ d_sim,
                                                       const float* __restrict__ plans,
                                                       const float* __restrict__ d_logits,
                                                       int images, int m, int n, int classes,
                                                       float scale) {
    const long long total = (long long)images * m * n * classes;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const int c = (int)(e % classes);
        const long long rest = e / classes;  // (b·M + i)·N + j
        const int j = (int)(rest % n);
        const int i = (int)((rest / n) % m);
        const long long image = rest / ((long long)n * m);
        const long long problem = image * classes + c;
        d_sim[e] = scale * plans[(problem * m + i) * n + j] * d_logits[problem];
    }
}
