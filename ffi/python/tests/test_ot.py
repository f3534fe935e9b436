"""fedotp.ot_plan / ot_logits: the C ABI's results bit for bit, and FedOTP's unbalanced
scaling (an independent float64 NumPy implementation) within float32 tolerance."""

import ctypes

import numpy as np
import pytest

import fedotp
from conftest import OtParams, OtReport

float_p = ctypes.POINTER(ctypes.c_float)


def c_plan(lib, sim, eps, gamma, max_iter, tol, balanced):
    m, n = sim.shape
    plan = np.empty_like(sim)
    params = OtParams(eps, gamma, max_iter, tol, int(balanced))
    report = OtReport()
    status = lib.fedotp_ot_plan(
        sim.ctypes.data_as(float_p), m, n, ctypes.byref(params), plan.ctypes.data_as(float_p),
        ctypes.byref(report),
    )
    assert status == 0
    return plan, report


def numpy_plan(sim, eps, gamma, balanced, iterations):
    """FedOTP's scaling in float64: u = min(a / K v, 1) (u = a / K v balanced),
    v = b / Kᵀ u, T = diag(u) K diag(v), K = exp(-(1 - S) / eps), a = 1/M, b = gamma/N."""
    sim = sim.astype(np.float64)
    m, n = sim.shape
    a, b = 1.0 / m, (1.0 if balanced else gamma) / n
    kernel = np.exp(-(1.0 - sim) / eps)
    u, v = np.ones(m), np.ones(n)
    for _ in range(iterations):
        u = a / (kernel @ v)
        if not balanced:
            u = np.minimum(u, 1.0)
        v = b / (kernel.T @ u)
    return u[:, None] * kernel * v[None, :]


CASES = [
    # (m, n, eps, gamma, balanced)
    (196, 2, 0.1, 0.8, False),
    (49, 3, 0.05, 0.5, False),
    (17, 5, 0.1, 1.0, True),
    (64, 4, 0.02, 0.9, False),
]


@pytest.mark.parametrize("m,n,eps,gamma,balanced", CASES)
def test_ot_plan_equals_the_c_abi_bit_for_bit(libfedotp, m, n, eps, gamma, balanced):
    sim = np.random.default_rng(m * n).uniform(-0.2, 0.6, (m, n)).astype(np.float32)
    plan, report = fedotp.ot_plan(sim, eps=eps, gamma=gamma, max_iter=100, tol=1e-3, balanced=balanced)
    expected, c_report = c_plan(libfedotp, sim, eps, gamma, 100, 1e-3, balanced)
    assert plan.dtype == np.float32 and plan.shape == (m, n)
    assert np.array_equal(plan.view(np.uint32), expected.view(np.uint32))
    assert report.iterations == c_report.iterations
    assert report.converged == bool(c_report.converged)


def test_a_batch_is_each_problem_solved_alone(libfedotp):
    sims = np.random.default_rng(3).uniform(-1, 1, (5, 30, 2)).astype(np.float32)
    plans, report = fedotp.ot_plan(sims, eps=0.05)
    assert plans.shape == sims.shape
    iterations = []
    for sim, plan in zip(sims, plans):
        expected, c_report = c_plan(libfedotp, np.ascontiguousarray(sim), 0.05, 0.8, 100, 1e-3, False)
        assert np.array_equal(plan.view(np.uint32), expected.view(np.uint32))
        iterations.append(c_report.iterations)
    assert report.iterations == max(iterations)


@pytest.mark.parametrize("m,n,eps,gamma,balanced", CASES)
def test_ot_plan_matches_a_float64_reference(m, n, eps, gamma, balanced):
    sim = np.random.default_rng(m + n).uniform(-0.2, 0.6, (m, n)).astype(np.float32)
    plan, report = fedotp.ot_plan(sim, eps=eps, gamma=gamma, max_iter=5000, tol=0.0, balanced=balanced)
    reference = numpy_plan(sim, eps, gamma, balanced, iterations=5000)
    assert not report.converged and report.iterations == 5000  # tol 0 runs every iteration
    assert np.abs(plan - reference).max() <= 1e-4 * reference.max()
    # The prompt side's marginal holds exactly after every step: gamma/N (1/N balanced).
    column_mass = (1.0 if balanced else gamma) / n
    np.testing.assert_allclose(plan.sum(axis=0), column_mass, rtol=1e-4)


def test_ot_logits_equals_the_c_abi_bit_for_bit(libfedotp):
    rng = np.random.default_rng(5)
    patches = rng.standard_normal((3, 16, 8), dtype=np.float32)
    prompts = rng.standard_normal((2, 4, 8), dtype=np.float32)
    logits = fedotp.ot_logits(patches, prompts, logit_scale=50.0, eps=0.1)
    expected = np.empty((3, 4), dtype=np.float32)
    params = OtParams(0.1, 0.8, 100, 1e-3, 0)
    status = libfedotp.fedotp_ot_logits(
        patches.ctypes.data_as(float_p), 3, 16, 8, prompts.ctypes.data_as(float_p), 2, 4,
        ctypes.byref(params), 50.0, expected.ctypes.data_as(float_p),
    )
    assert status == 0
    assert np.array_equal(logits.view(np.uint32), expected.view(np.uint32))
    # One image unbatched gives that image's row.
    single = fedotp.ot_logits(patches[1], prompts, logit_scale=50.0, eps=0.1)
    assert single.shape == (4,) and np.array_equal(single, logits[1])


def test_the_input_is_read_in_place_and_left_alone():
    sim = np.random.default_rng(1).uniform(-1, 1, (20, 2)).astype(np.float32)
    before = sim.copy()
    sim.flags.writeable = False  # a read-only array is accepted: nothing is written to it
    fedotp.ot_plan(sim)
    assert np.array_equal(sim, before)
