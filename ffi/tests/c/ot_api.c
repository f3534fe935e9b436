/* Calls every OT function of libfedotp from C, the error paths included; exits non-zero if any
 * check fails. Built and run by ffi/tests/c_program.rs. */
#include <math.h>

#include "check.h"

static const FedotpOtParams PAPER = {0.1f, 0.8f, 100, 1e-3f, 0};

static void plan_by_hand(void) {
    /* One patch, two prompts: each prompt receives gamma/2 = 0.4 whatever the similarities. */
    const float sim[2] = {0.9f, -0.3f};
    float plan[2] = {0};
    FedotpOtReport report = {0, 0};
    EXPECT_STATUS(fedotp_ot_plan(sim, 1, 2, &PAPER, plan, &report), FEDOTP_OK);
    CHECK(fabsf(plan[0] - 0.4f) < 1e-6f && fabsf(plan[1] - 0.4f) < 1e-6f, "plan %g %g", plan[0],
          plan[1]);
    CHECK(report.converged == 1 && report.iterations >= 1, "report %u %u", report.iterations,
          report.converged);
    CHECK(strcmp(fedotp_last_error_message(), "") == 0, "last error not cleared");
    /* The report is optional. */
    EXPECT_STATUS(fedotp_ot_plan(sim, 1, 2, &PAPER, plan, NULL), FEDOTP_OK);
}

static void plan_marginals(void) {
    enum { M = 196, N = 2 };
    static float sim[M * N], plan[M * N];
    for (int i = 0; i < M * N; i++) sim[i] = 0.2f + 0.1f * sinf((float)i);
    FedotpOtParams p = PAPER;
    p.eps = 0.01f;
    p.max_iter = 10000;
    p.tol = 1e-6f;
    FedotpOtReport report;
    EXPECT_STATUS(fedotp_ot_plan(sim, M, N, &p, plan, &report), FEDOTP_OK);
    for (int j = 0; j < N; j++) {
        double column = 0;
        for (int i = 0; i < M; i++) column += plan[i * N + j];
        CHECK(fabs(column - 0.4) < 1e-5, "column %d sums to %g", j, column);
    }
    for (int i = 0; i < M; i++) {
        double row = plan[i * N] + plan[i * N + 1];
        CHECK(row <= (1.0 / M) * (1 + 1e-5), "row %d sums to %g", i, row);
    }
}

static void plan_errors_write_nothing(void) {
    const float sim[4] = {0.2f, 0.1f, 0.3f, 0.25f};
    float plan[4] = {7, 7, 7, 7};
    FedotpOtReport report = {42, 42};
    FedotpOtParams p;

    EXPECT_STATUS(fedotp_ot_plan(NULL, 2, 2, &PAPER, plan, &report), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 2, NULL, plan, &report), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 2, &PAPER, NULL, &report), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_ot_plan(sim, 0, 2, &PAPER, plan, &report), FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 0, &PAPER, plan, &report), FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_ot_plan(sim, SIZE_MAX / 2, 3, &PAPER, plan, &report),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_ot_plan(sim, SIZE_MAX / 4, 1, &PAPER, plan, &report),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    p = PAPER; p.eps = 0.0f;
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 2, &p, plan, &report), FEDOTP_ERR_INVALID_EPS);
    p = PAPER; p.eps = NAN;
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 2, &p, plan, &report), FEDOTP_ERR_INVALID_EPS);
    /* Subnormal eps and gamma: 1/eps overflows and gamma/n underflows, the plan would be NaN
       or wrong. */
    p = PAPER; p.eps = 1e-39f;
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 2, &p, plan, &report), FEDOTP_ERR_INVALID_EPS);
    EXPECT_MESSAGE("subnormal");
    /* Normal, but below what f32 resolves against these similarities (1e-5 x the largest):
       the plan came back infeasible before. */
    p = PAPER; p.eps = 1e-30f;
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 2, &p, plan, &report), FEDOTP_ERR_INVALID_EPS);
    EXPECT_MESSAGE("resolves");
    p = PAPER; p.gamma = 1e-45f;
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 2, &p, plan, &report), FEDOTP_ERR_INVALID_GAMMA);
    EXPECT_MESSAGE("subnormal");
    p = PAPER; p.gamma = 1.5f;
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 2, &p, plan, &report), FEDOTP_ERR_INVALID_GAMMA);
    p = PAPER; p.max_iter = 0;
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 2, &p, plan, &report), FEDOTP_ERR_INVALID_MAX_ITER);
    p = PAPER; p.tol = -1.0f;
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 2, &p, plan, &report), FEDOTP_ERR_INVALID_TOL);
    p = PAPER; p.balanced = 2;
    EXPECT_STATUS(fedotp_ot_plan(sim, 2, 2, &p, plan, &report), FEDOTP_ERR_INVALID_BALANCED);
    CHECK(strstr(fedotp_last_error_message(), "balanced") != NULL, "message: %s",
          fedotp_last_error_message());
    const float bad[4] = {0.2f, INFINITY, 0.3f, 0.25f};
    EXPECT_STATUS(fedotp_ot_plan(bad, 2, 2, &PAPER, plan, &report), FEDOTP_ERR_NON_FINITE);
    /* Output aliasing the input. */
    float inout[4] = {0.2f, 0.1f, 0.3f, 0.25f};
    EXPECT_STATUS(fedotp_ot_plan(inout, 2, 2, &PAPER, inout + 1, &report),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    for (int i = 0; i < 4; i++) CHECK(plan[i] == 7.0f, "plan[%d] written on error", i);
    CHECK(report.iterations == 42 && report.converged == 42, "report written on error");
}

static void logits_by_hand(void) {
    /* One image, 3 patches; 2 prompts per class; 2 classes; dim 2. Two patches point along x,
       which class 0's prompts share: class 0 wins. */
    const float patches[6] = {1.0f, 0.0f, 0.9f, 0.1f, 0.0f, 1.0f};
    const float prompts[8] = {1.0f, 0.1f, 0.1f, 1.0f, 1.0f, -0.1f, -0.1f, 1.0f};
    float logits[2] = {0};
    EXPECT_STATUS(fedotp_ot_logits(patches, 1, 3, 2, prompts, 2, 2, &PAPER, 100.0f, logits),
                  FEDOTP_OK);
    CHECK(logits[0] > logits[1], "logits %g %g", logits[0], logits[1]);
    /* Every logit is scale * (transported similarity) <= scale * gamma. */
    CHECK(logits[0] <= 80.0f + 1e-3f && logits[1] <= 80.0f + 1e-3f, "logits %g %g", logits[0],
          logits[1]);
    /* With a single patch, the plan is gamma/n per prompt: the logit is
       scale * gamma/n * sum of cosines, computable by hand. */
    const float one_patch[2] = {3.0f, 4.0f}; /* unit (0.6, 0.8) */
    const float one_class[4] = {1.0f, 0.0f, 0.0f, 2.0f}; /* units (1,0), (0,1) */
    float logit = 0;
    EXPECT_STATUS(fedotp_ot_logits(one_patch, 1, 1, 2, one_class, 2, 1, &PAPER, 100.0f, &logit),
                  FEDOTP_OK);
    CHECK(fabsf(logit - 100.0f * 0.4f * (0.6f + 0.8f)) < 1e-3f, "logit %g", logit);
}

/* Feature vectors whose squared norm underflows (1e-30) or overflows (1e30) in f32 give the
   logits of the unscaled vectors, finite. */
static void logits_at_extreme_scales(void) {
    const float patches[6] = {1.0f, 0.0f, 0.9f, 0.1f, 0.0f, 1.0f};
    const float prompts[8] = {1.0f, 0.1f, 0.1f, 1.0f, 1.0f, -0.1f, -0.1f, 1.0f};
    float reference[2] = {0};
    EXPECT_STATUS(fedotp_ot_logits(patches, 1, 3, 2, prompts, 2, 2, &PAPER, 100.0f, reference),
                  FEDOTP_OK);
    const float scales[][2] = {{1e-30f, 1e30f}, {1e30f, 1e-30f}, {1e30f, 1e30f}, {1e-30f, 1e-30f}};
    for (size_t k = 0; k < sizeof scales / sizeof scales[0]; k++) {
        float scaled_patches[6], scaled_prompts[8], logits[2] = {0};
        for (int i = 0; i < 6; i++) scaled_patches[i] = patches[i] * scales[k][0];
        for (int i = 0; i < 8; i++) scaled_prompts[i] = prompts[i] * scales[k][1];
        EXPECT_STATUS(fedotp_ot_logits(scaled_patches, 1, 3, 2, scaled_prompts, 2, 2, &PAPER,
                                       100.0f, logits),
                      FEDOTP_OK);
        for (int c = 0; c < 2; c++)
            CHECK(isfinite(logits[c]) && fabsf(logits[c] - reference[c]) < 1e-2f,
                  "scales %g, %g: logit %d is %g, unscaled %g", scales[k][0], scales[k][1], c,
                  logits[c], reference[c]);
    }
    /* An all-zero prompt row has no direction: refused, naming the row. */
    float zero_prompt[8];
    memcpy(zero_prompt, prompts, sizeof zero_prompt);
    zero_prompt[6] = zero_prompt[7] = 0.0f;
    float logits[2] = {7, 7};
    EXPECT_STATUS(fedotp_ot_logits(patches, 1, 3, 2, zero_prompt, 2, 2, &PAPER, 100.0f, logits),
                  FEDOTP_ERR_ZERO_NORM);
    EXPECT_MESSAGE("feature vector 3 of `prompts`");
    CHECK(logits[0] == 7.0f && logits[1] == 7.0f, "logits written on error");
}

static void logits_errors_write_nothing(void) {
    const float patches[4] = {1, 0, 0, 1};
    const float prompts[4] = {1, 0, 0.5f, 0.5f};
    float logits[1] = {7};
    EXPECT_STATUS(fedotp_ot_logits(NULL, 1, 2, 2, prompts, 2, 1, &PAPER, 100.0f, logits),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_ot_logits(patches, 1, 2, 2, NULL, 2, 1, &PAPER, 100.0f, logits),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_ot_logits(patches, 1, 2, 2, prompts, 2, 1, NULL, 100.0f, logits),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_ot_logits(patches, 1, 2, 2, prompts, 2, 1, &PAPER, 100.0f, NULL),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_ot_logits(patches, 0, 2, 2, prompts, 2, 1, &PAPER, 100.0f, logits),
                  FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_ot_logits(patches, 1, 2, 0, prompts, 2, 1, &PAPER, 100.0f, logits),
                  FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_ot_logits(patches, SIZE_MAX, 2, 2, prompts, 2, 1, &PAPER, 100.0f, logits),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_ot_logits(patches, 1, 2, 2, prompts, 2, 1, &PAPER, INFINITY, logits),
                  FEDOTP_ERR_INVALID_SCALE);
    const float zero_patch[4] = {1, 0, 0, 0};
    EXPECT_STATUS(fedotp_ot_logits(zero_patch, 1, 2, 2, prompts, 2, 1, &PAPER, 100.0f, logits),
                  FEDOTP_ERR_ZERO_NORM);
    const float nan_prompt[4] = {1, NAN, 0.5f, 0.5f};
    EXPECT_STATUS(fedotp_ot_logits(patches, 1, 2, 2, nan_prompt, 2, 1, &PAPER, 100.0f, logits),
                  FEDOTP_ERR_NON_FINITE);
    float shared[4] = {1, 0, 0, 1};
    EXPECT_STATUS(fedotp_ot_logits(shared, 1, 2, 2, prompts, 2, 1, &PAPER, 100.0f, shared + 3),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    FedotpOtParams p = PAPER;
    p.gamma = 0.0f;
    EXPECT_STATUS(fedotp_ot_logits(patches, 1, 2, 2, prompts, 2, 1, &p, 100.0f, logits),
                  FEDOTP_ERR_INVALID_GAMMA);
    CHECK(logits[0] == 7.0f, "logits written on error");
}

static void status_strings(void) {
    const int32_t codes[] = {FEDOTP_OK, FEDOTP_ERR_NULL_POINTER, FEDOTP_ERR_PANIC,
                             FEDOTP_ERR_ALIASED_BUFFERS, FEDOTP_ERR_OUT_OF_MEMORY,
                             FEDOTP_ERR_EMPTY_DIMENSION, FEDOTP_ERR_SIZE_OVERFLOW,
                             FEDOTP_ERR_NON_FINITE, FEDOTP_ERR_INVALID_EPS, FEDOTP_ERR_INVALID_GAMMA,
                             FEDOTP_ERR_INVALID_MAX_ITER, FEDOTP_ERR_INVALID_TOL,
                             FEDOTP_ERR_INVALID_BALANCED, FEDOTP_ERR_INVALID_SCALE,
                             FEDOTP_ERR_ZERO_NORM};
    check_status_names(codes, sizeof codes / sizeof codes[0]);
    CHECK(strcmp(fedotp_status_str(12345), "unknown status") == 0, "unknown code");
}

int main(void) {
    plan_by_hand();
    plan_marginals();
    plan_errors_write_nothing();
    logits_by_hand();
    logits_at_extreme_scales();
    logits_errors_write_nothing();
    status_strings();
    return report("OT C API");
}
