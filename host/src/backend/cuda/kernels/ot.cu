// FedOTP's OT head on the GPU: L2 normalisation of feature rows, the batched optimal-transport
// solve, the transported-similarity logits and their gradient. (The similarities themselves are
// a cuBLAS product.)
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
//   the host so the two solvers cannot drift apart;
// - a problem whose largest |S| makes eps smaller than the core's EPS_RESOLUTION allows is
//   refused (flagged, plan NaN), as the core's batch solver refuses it;
// - a plan that did not converge is rounded onto the constraints (rows above a scaled down,
//   then columns above b, then each column's deficit spread over the rows in proportion to their
//   slack), as the core's `round_onto_constraints` does: feasible whatever max_iter allowed.
//
// One warp per problem, several problems per block. A problem's K̃ (column-major, so a warp
// reads consecutive words), u, the bound, p, v and q live in shared memory: M·N + 3M + 2N floats,
// the core's `workspace_len`. Lane l owns patches l, l + 32, …; the sums over patches are warp
// butterflies, which leave the same value on every lane, so all lanes take the same branch.

// Bits of a problem's report flags.
#define REPORT_CONVERGED 1u
#define REPORT_NON_FINITE 2u
#define REPORT_EPS_BELOW_RESOLUTION 4u

// out[r] = inp[r] / ‖inp[r]‖ and norms[r] = ‖inp[r]‖, the norm scaled by the row's largest
// magnitude so the squares neither overflow nor underflow (as the core takes it). A zero row has
// norm 0 and non-finite output, as on the CPU backend.
extern "C" __global__ void normalize_rows(float* __restrict__ out,
                                          float* __restrict__ norms,
                                          const float* __restrict__ inp,
                                          int rows, int dim) {
    const long long row = global_warp();
    if (row >= rows) return;
    const float* x = inp + row * dim;
    float largest = 0.0f;
    for (int i = lane(); i < dim; i += WARP_SIZE) largest = fmaxf(largest, fabsf(x[i]));
    largest = warp_max(largest);
    float sum = 0.0f;
    if (largest > 0.0f) {
        for (int i = lane(); i < dim; i += WARP_SIZE) {
            const float scaled = x[i] / largest;
            sum += scaled * scaled;
        }
    }
    const float norm = largest > 0.0f ? largest * sqrtf(warp_sum(sum)) : 0.0f;
    const float inv = 1.0f / norm;
    float* o = out + row * dim;
    for (int i = lane(); i < dim; i += WARP_SIZE) o[i] = x[i] * inv;
    if (lane() == 0) norms[row] = norm;
}

// d_inp[r] = (d_out[r] - y ⟨y, d_out[r]⟩) / norms[r] with y = out[r]: the gradient through the
// normalisation (overwritten).
extern "C" __global__ void normalize_rows_backward(float* __restrict__ d_inp,
                                                   const float* __restrict__ d_out,
                                                   const float* __restrict__ out,
                                                   const float* __restrict__ norms,
                                                   int rows, int dim) {
    const long long row = global_warp();
    if (row >= rows) return;
    const float* y = out + row * dim;
    const float* dy = d_out + row * dim;
    float dot = 0.0f;
    for (int i = lane(); i < dim; i += WARP_SIZE) dot += y[i] * dy[i];
    dot = warp_sum(dot);
    const float inv = 1.0f / norms[row];
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

// Rounds T = diag(u) K̃ diag(v) onto the constraints, as the core's `round_onto_constraints`:
// rows above a scaled down (u), then columns above b (v); q[j] = column j's deficit and p[i] =
// row i's share of the total slack, so that the plan is u K̃ v + p qᵀ.
__device__ void round_onto_constraints(const float* kernel, float* u, float* v, float* p,
                                       float* q, int m, int n, float a, float b) {
    // A scaling that is not finite (its kernel row or column underflowed) carries no usable
    // mass: 0, and the deficit step restores its column's.
    for (int i = lane(); i < m; i += WARP_SIZE) {
        if (!isfinite(u[i])) u[i] = 0.0f;
    }
    if (lane() == 0) {
        for (int j = 0; j < n; ++j) {
            if (!isfinite(v[j])) v[j] = 0.0f;
        }
    }
    __syncwarp();
    // Rows above a scaled down to a.
    for (int i = lane(); i < m; i += WARP_SIZE) {
        float row = 0.0f;
        for (int j = 0; j < n; ++j) row += kernel[j * m + i] * v[j];
        row = u[i] * row;
        if (row > a) u[i] *= a / row;
    }
    __syncwarp();
    // Columns above b scaled down to b; q[j] = the column's deficit b - Σ_i T[i,j].
    for (int j = 0; j < n; ++j) {
        float partial = 0.0f;
        for (int i = lane(); i < m; i += WARP_SIZE) partial += kernel[j * m + i] * u[i];
        const float sum = v[j] * warp_sum(partial);
        __syncwarp();  // every lane has read v[j] before lane 0 replaces it
        if (lane() == 0) {
            if (sum > b) v[j] *= b / sum;
            q[j] = b - (sum > b ? b : sum);
        }
    }
    __syncwarp();
    // p[i] = row i's share of the total slack a - Σ_j T[i,j].
    float slack_total = 0.0f;
    for (int i = lane(); i < m; i += WARP_SIZE) {
        float row = 0.0f;
        for (int j = 0; j < n; ++j) row += kernel[j * m + i] * v[j];
        const float share = fmaxf(a - u[i] * row, 0.0f);
        p[i] = share;
        slack_total += share;
    }
    slack_total = warp_sum(slack_total);
    for (int i = lane(); i < m; i += WARP_SIZE) p[i] = slack_total > 0.0f ? p[i] / slack_total : 0.0f;
    __syncwarp();
}

// Solves the B·C problems of a batch (image b, class c): S is images × patches × prompts ×
// classes (one GEMM of patch features with prompt features), so problem (b, c) reads
// S[b, i, j, c]. Writes, per problem p = b·C + c:
// - plans: T = diag(u) K̃ diag(v), row-major M × N at p·M·N (NaN if S is not all finite);
// - reports[3p] = iterations run, reports[3p + 1] = REPORT_* flags, reports[3p + 2] = the
//   first non-finite similarity's index i·N + j within the problem (REPORT_NON_FINITE) or the
//   bits of its largest |S| (REPORT_EPS_BELOW_RESOLUTION).
// `a` = 1/M, `b` = the prompt mass (gamma/N or 1/N) and `inv_eps` = 1/eps are computed by the
// host in f32 exactly as the core computes them; `saturated_flag` is the core's
// `rows_saturated()` (balanced, or gamma = 1).
extern "C" __global__ void ot_plans(const float* __restrict__ sim,
                                    float* __restrict__ plans,
                                    unsigned* __restrict__ reports,
                                    int images, int m, int n, int classes,
                                    float eps, float inv_eps, float a, float b,
                                    int max_iter, float tol, int saturated_flag,
                                    float absorb, float bound_ceiling, float eps_resolution) {
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

    // q[j] = max_i S[i,j], finding the first non-finite similarity and the largest |S| on the
    // way.
    int first_bad = m * n;
    float magnitude = 0.0f;
    for (int j = 0; j < n; ++j) {
        float largest = -INFINITY;
        for (int i = lane(); i < m; i += WARP_SIZE) {
            const float sij = S(i, j);
            if (!isfinite(sij)) first_bad = min(first_bad, i * n + j);
            largest = fmaxf(largest, sij);
            magnitude = fmaxf(magnitude, fabsf(sij));
        }
        largest = warp_max(largest);
        if (lane() == 0) {
            q[j] = largest;
            v[j] = 1.0f;
        }
    }
    first_bad = (int)warp_min((float)first_bad);
    float* plan = plans + problem * m * n;
    unsigned* report = reports + 3 * problem;
    if (first_bad < m * n) {
        for (int e = lane(); e < m * n; e += WARP_SIZE) plan[e] = NAN;
        if (lane() == 0) {
            report[0] = 0;
            report[1] = REPORT_NON_FINITE;
            report[2] = (unsigned)first_bad;
        }
        return;
    }
    magnitude = warp_max(magnitude);
    if (eps < eps_resolution * magnitude) {
        for (int e = lane(); e < m * n; e += WARP_SIZE) plan[e] = NAN;
        if (lane() == 0) {
            report[0] = 0;
            report[1] = REPORT_EPS_BELOW_RESOLUTION;
            report[2] = __float_as_uint(magnitude);
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
            if (iteration == max_iter) {
                // The kernel rebuilt from rounded potentials moves the prompt-side sums by that
                // rounding; on the last iteration restore them (v = b / K̃ᵀ 1), as the core does.
                for (int j = 0; j < n; ++j) {
                    float partial = 0.0f;
                    for (int i = lane(); i < m; i += WARP_SIZE) partial += kernel[j * m + i];
                    const float updated = b / warp_sum(partial);
                    if (lane() == 0) v[j] = updated;
                }
                __syncwarp();
            }
        }
    }

    // T = diag(u) K̃ diag(v); an unfinished plan is rounded onto the constraints first.
    const bool rounded = !(flags & REPORT_CONVERGED);
    if (rounded) round_onto_constraints(kernel, u, v, p, q, m, n, a, b);
    for (int i = lane(); i < m; i += WARP_SIZE) {
        for (int j = 0; j < n; ++j) {
            float t = u[i] * kernel[j * m + i] * v[j];
            if (rounded) t += p[i] * q[j];
            plan[(long long)i * n + j] = t;
        }
    }
    if (lane() == 0) {
        report[0] = iterations;
        report[1] = flags;
        report[2] = 0;
    }
#undef S
}

// logits[b, c] = scale · Σ_{i,j} T_(b,c)[i, j] · S[b, i, j, c]: the similarity each plan
// transports. One warp per problem.
extern "C" __global__ void ot_logits(float* __restrict__ logits,
                                     const float* __restrict__ sim,
                                     const float* __restrict__ plans,
                                     int images, int m, int n, int classes, float scale) {
    const long long problem = global_warp();
    if (problem >= (long long)images * classes) return;
    const long long image = problem / classes;
    const int cls = (int)(problem % classes);
    const float* s = sim + image * m * n * classes + cls;
    const float* plan = plans + problem * m * n;
    float transported = 0.0f;
    for (int e = lane(); e < m * n; e += WARP_SIZE) {
        transported += plan[e] * s[(long long)e * classes];
    }
    transported = warp_sum(transported);
    if (lane() == 0) logits[problem] = scale * transported;
}

// d_sim[b, i, j, c] = scale · d_logits[b, c] · T_(b,c)[i, j]: the gradient of the logits with
// respect to the similarities, the plans held constant (as the paper trains); overwritten.
extern "C" __global__ void ot_logits_backward(float* __restrict__ d_sim,
                                              const float* __restrict__ d_logits,
                                              const float* __restrict__ plans,
                                              int images, int m, int n, int classes,
                                              float scale) {
    const long long total = (long long)images * m * n * classes;
    for (long long e = grid_start(); e < total; e += grid_stride()) {
        const int c = (int)(e % classes);
        const long long rest = e / classes;  // (b·M + i)·N + j
        const long long within = rest % ((long long)m * n);  // i·N + j
        const long long problem = (rest / ((long long)m * n)) * classes + c;
        d_sim[e] = scale * d_logits[problem] * plans[problem * m * n + within];
    }
}
