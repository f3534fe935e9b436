#!/usr/bin/env python3
"""Float64 reference plans for fedotp-core's OT solver tests and the firmware test program.

Every case is solved twice, independently, and the two must agree to 1e-10 before it is saved:
  * with POT: `ot.partial.entropic_partial_wasserstein` (unbalanced: rows <= 1/M, columns = gamma/N)
    and `ot.bregman.sinkhorn_log` (balanced);
  * with a float64 log-domain implementation of the paper's scaling iteration written here.

Output, little-endian:
core/tests/fixtures/ot_cases.bin — single problems:
  header:  b"OTFX", u32 version (1), u32 case count
  a case:  u32 m, u32 n, f32 eps, f32 gamma, u32 balanced (0/1),
           f32 similarity[m*n] (row-major), f64 plan[m*n] (row-major)
core/tests/fixtures/ot_head.bin — OT-head evaluations (features -> logits):
  header:  b"OTHD", u32 version (1), u32 case count
  a case:  u32 images, patches, dim, prompts, classes, f32 eps, f32 gamma, u32 balanced, f32 scale,
           f32 patches[images*patches*dim], f32 prompts[prompts*classes*dim],
           f64 logits[images*classes], f64 plans[images*classes*patches*prompts]
core/tests/fixtures/ot_released.bin — batches through the released code's solver (its batch-wide
  stopping rule on the unshifted kernel, from u = v = 1), in float64 NumPy written from the
  released loop; each case's stopping iteration is kept only when the batch's mean change is at
  least 5 % away from the tolerance at every iteration, so f32 rounding cannot move it:
  header:  b"OTRL", u32 version (1), u32 case count
  a case:  u32 images, patches, prompts, classes, f32 eps, f32 gamma, u32 max_iter, f32 tol,
           u32 balanced, u32 iterations, u32 converged,
           f32 similarity[images*patches*prompts*classes], f64 plans[images*classes*patches*prompts]

Run: python3 tests/scripts/ot_fixtures.py   (numpy, scipy and POT: tests/scripts/requirements.txt)
"""
import pathlib
import struct

import numpy as np
import ot
from scipy.special import logsumexp

# This script lives in tests/scripts/; the fixtures in core/tests/fixtures/.
FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "core" / "tests" / "fixtures"


def newton_reference(sim, eps, gamma, balanced):
    """Exact float64 solution by Newton's method on the semi-dual in the prompt potentials g.

    With g fixed, each patch's potential has a closed form: f_i = eps*log(a_i) - eps*LSE_j(
    (g_j - C_ij)/eps), clamped to f_i <= 0 when the patch side is an inequality. What remains is a
    smooth concave function of the N values g, maximised here to machine precision.
    """
    m, n = sim.shape
    cost = 1.0 - sim
    log_a = -np.log(m)
    b = np.full(n, (1.0 if balanced else gamma) / n)
    saturated = balanced or gamma >= 1.0

    def evaluate(g):
        z = (g[None, :] - cost) / eps
        f = eps * (log_a - logsumexp(z, axis=1))
        free = np.ones(m, dtype=bool) if saturated else f < 0.0
        f = np.where(free, f, 0.0)
        plan = np.exp(z + f[:, None] / eps)
        value = f.sum() / m + g @ b - eps * plan.sum()
        return value, plan, free

    # Start from a few hundred log-domain scaling iterations: Newton's region of fast
    # convergence is small when eps is.
    g = np.zeros(n)
    for _ in range(300):
        f = eps * (log_a - logsumexp((g[None, :] - cost) / eps, axis=1))
        f = f if saturated else np.minimum(f, 0.0)
        g = eps * (np.log(b) - logsumexp((f[:, None] - cost) / eps, axis=0))
    value, plan, free = evaluate(g)
    best = (np.inf, plan)
    for _ in range(200):
        grad = b - plan.sum(axis=0)
        best = min(best, (np.max(np.abs(grad)), plan), key=lambda x: x[0])
        if best[0] < 1e-15:
            break
        # Hessian of the (negated) semi-dual: rows on the bound contribute diag(T_i)/eps, free
        # rows a_i (diag(s_i) - s_i s_i^T)/eps with s_i their normalised plan row.
        hess = np.diag(plan[~free].sum(axis=0)) / eps
        rows = plan[free]
        shares = rows / rows.sum(axis=1, keepdims=True)
        free_hess = -rows.T @ shares
        # Diagonal T_ij (1 - s_ij) summed over the other prompts' shares explicitly: 1 - s_ij
        # cancels catastrophically when one prompt takes nearly all of a patch, which is where
        # the Hessian's smallest eigenvalue (and the slow convergence of scaling) comes from.
        others = shares @ (np.ones((n, n)) - np.eye(n))
        np.fill_diagonal(free_hess, (rows * others).sum(axis=0))
        hess += free_hess / eps
        # A tiny ridge: with every patch saturated the semi-dual is flat along g + c·1 until a
        # patch reaches its bound; the line search then finds that kink.
        hess += 1e-12 * np.trace(hess) * np.eye(n)
        step = np.linalg.solve(hess, grad)
        # Backtrack until the semi-dual rises; once it is flat to rounding, until the gradient
        # shrinks (near the optimum the value cannot tell steps apart any more).
        t = 1.0
        while t > 1e-15:
            candidate = evaluate(g + t * step)
            if candidate[0] > value + 1e-15 * abs(value):
                break
            if candidate[0] >= value - 1e-15 * abs(value) and np.max(
                np.abs(b - candidate[1].sum(axis=0))
            ) < np.max(np.abs(grad)):
                break
            t *= 0.5
        g = g + t * step
        value, plan, free = candidate
    # Newton can stall at rounding level next to a kink (a patch exactly at its bound).
    if best[0] > 1e-13:
        raise RuntimeError(f"Newton did not converge: marginal error {best[0]:.1e}")
    return best[1]


def pot_reference(sim, eps, gamma, balanced):
    m, n = sim.shape
    cost = 1.0 - sim
    a = np.full(m, 1.0 / m)
    if balanced:
        b = np.full(n, 1.0 / n)
        return ot.bregman.sinkhorn_log(a, b, cost, eps, numItermax=20_000, stopThr=1e-15)
    b = np.full(n, gamma / n)
    # POT refuses m = 1.0 by an exact float check; min of the two sums is the documented form.
    mass = min(a.sum(), b.sum()) * (1 - 1e-15) if gamma >= 1.0 else gamma
    return ot.partial.entropic_partial_wasserstein(
        a, b, cost, eps, m=mass, numItermax=20_000, stopThr=1e-15
    )


def marginal_error(plan, gamma, balanced):
    m, n = plan.shape
    b = (1.0 if balanced else gamma) / n
    rows = plan.sum(axis=1) - 1.0 / m
    row_violation = np.abs(rows) if balanced or gamma >= 1.0 else np.maximum(rows, 0.0)
    return max(np.max(np.abs(plan.sum(axis=0) - b)), np.max(row_violation))


def check_optimality(plan, eps, gamma, balanced, sim):
    """Marginals hold, and the plan has the Gibbs form diag(u) K diag(v) with u <= 1 where the
    patch side is an inequality (complementary slackness: u < 1 only on saturated rows)."""
    assert marginal_error(plan, gamma, balanced) < 1e-12
    m, n = plan.shape
    log_k = (sim - 1.0) / eps
    resid = np.log(plan) - log_k  # = log u_i + log v_j
    log_v = resid[0] - resid[0, 0]
    log_u = resid[:, 0]
    assert np.max(np.abs(resid - log_u[:, None] - log_v[None, :])) < 1e-8
    if not (balanced or gamma >= 1.0):
        # Shift so the largest log u is as large as allowed by the clamp; then u <= 1 and rows
        # strictly below the bound are saturated.
        free_rows = np.abs(plan.sum(axis=1) - 1.0 / m) < 1e-12
        if (~free_rows).any():
            shift = -log_u[~free_rows].mean()
            assert np.max(np.abs(log_u[~free_rows] + shift)) < 1e-8
            assert np.all(log_u[free_rows] + shift <= 1e-8)


def clip_like(rng, m, n, centre=0.2, spread=0.05):
    """Cosines as CLIP gives them: around 0.1-0.3, with a few patches that match a prompt well."""
    s = centre + spread * rng.standard_normal((m, n))
    hits = rng.choice(m, size=max(1, m // 8), replace=False)
    s[hits, rng.integers(0, n, size=hits.size)] += 0.1
    return np.clip(s, -1.0, 1.0)


def spread_costs(rng, m, n):
    """Similarities across the whole range [-1, 1]: costs across [0, 2]."""
    return rng.uniform(-1.0, 1.0, (m, n))


def main():
    rng = np.random.default_rng(20240301)
    cases = []
    # The paper's shapes: ViT-B/16 (196 patches) and RN50 (49), two prompts, its constants.
    for m, n in [(196, 2), (49, 2)]:
        for eps in [0.1, 0.01]:
            cases.append((clip_like(rng, m, n), eps, 0.8, False))
        cases.append((clip_like(rng, m, n), 0.1, 0.8, True))
    # The whole useful range of eps, both kinds of similarity, several gammas and shapes.
    for eps in [1.0, 0.5, 0.1, 0.05, 0.02, 0.01, 0.005]:
        for gamma in [0.3, 0.8, 1.0]:
            m, n = [(16, 2), (37, 3), (8, 5)][len(cases) % 3]
            cases.append((clip_like(rng, m, n), eps, gamma, False))
            cases.append((spread_costs(rng, m, n), eps, gamma, False))
        m, n = [(16, 2), (23, 4)][len(cases) % 2]
        cases.append((clip_like(rng, m, n), eps, 1.0, True))
        cases.append((spread_costs(rng, m, n), eps, 1.0, True))
    # Edge shapes: one patch, one prompt.
    cases.append((clip_like(rng, 1, 3), 0.1, 0.8, False))
    cases.append((clip_like(rng, 7, 1), 0.05, 0.8, False))
    cases.append((clip_like(rng, 7, 1), 0.05, 1.0, True))

    blob = bytearray(b"OTFX" + struct.pack("<II", 1, len(cases)))
    worst, checked = 0.0, 0
    for sim, eps, gamma, balanced in cases:
        sim = sim.astype(np.float32).astype(np.float64)  # the solver sees the f32 values
        ours = newton_reference(sim, eps, gamma, balanced)
        check_optimality(ours, eps, gamma, balanced, sim)
        pot = pot_reference(sim, eps, gamma, balanced)
        if marginal_error(pot, gamma, balanced) < 1e-13:  # POT converged: it must agree
            gap = np.max(np.abs(ours - pot)) / np.max(np.abs(ours))
            worst = max(worst, gap)
            assert gap < 1e-9, (sim.shape, eps, gamma, balanced, gap)
            checked += 1
        m, n = sim.shape
        blob += struct.pack("<IIffI", m, n, eps, gamma, int(balanced))
        blob += sim.astype("<f4").tobytes()
        blob += ours.astype("<f8").tobytes()
    out = FIXTURES / "ot_cases.bin"
    out.write_bytes(bytes(blob))
    print(f"{len(cases)} cases, {len(blob)} bytes -> {out}; {checked} cross-checked with POT, worst gap {worst:.2e}")
    head_cases(rng)
    released_cases()


def head_cases(rng):
    """Random features through the whole head: normalise, cosine similarities, solve, logits."""
    shapes = [(2, 5, 8, 2, 3, 0.1, 0.8, False), (3, 7, 16, 2, 4, 0.01, 0.8, False),
              (1, 9, 4, 3, 2, 0.05, 1.0, True), (2, 16, 32, 2, 10, 0.1, 0.5, False)]
    blob = bytearray(b"OTHD" + struct.pack("<II", 1, len(shapes)))
    scale = 100.0
    for images, patches, dim, prompts, classes, eps, gamma, balanced in shapes:
        f = rng.standard_normal((images, patches, dim)).astype(np.float32)
        g = rng.standard_normal((prompts, classes, dim)).astype(np.float32)
        fn = f.astype(np.float64) / np.linalg.norm(f.astype(np.float64), axis=2, keepdims=True)
        gn = g.astype(np.float64) / np.linalg.norm(g.astype(np.float64), axis=2, keepdims=True)
        logits = np.zeros((images, classes))
        plans = np.zeros((images, classes, patches, prompts))
        for b in range(images):
            for c in range(classes):
                sim = fn[b] @ gn[:, c, :].T  # patches x prompts
                plan = newton_reference(sim, eps, gamma, balanced)
                check_optimality(plan, eps, gamma, balanced, sim)
                plans[b, c] = plan
                logits[b, c] = scale * np.sum(plan * sim)
        blob += struct.pack("<IIIIIffIf", images, patches, dim, prompts, classes, eps, gamma,
                            int(balanced), scale)
        blob += f.astype("<f4").tobytes() + g.astype("<f4").tobytes()
        blob += logits.astype("<f8").tobytes() + plans.astype("<f8").tobytes()
    out = FIXTURES / "ot_head.bin"
    out.write_bytes(bytes(blob))
    print(f"{len(shapes)} head cases, {len(blob)} bytes -> {out}")


def released_reference(sim, eps, gamma, max_iter, tol, balanced):
    """The released code's loop over a whole batch (`sim`: images x patches x prompts x classes):
    plans (images x classes x patches x prompts), the iteration it stopped at, whether it met
    the tolerance, and the batch's mean change at every iteration run."""
    images, m, n, classes = sim.shape
    s = sim.transpose(0, 3, 1, 2)  # images x classes x patches x prompts
    k = np.exp(-(1.0 - s) / eps)
    a, b = 1.0 / m, (1.0 if balanced else gamma) / n
    u, v = np.ones((images, classes, m)), np.ones((images, classes, n))
    changes = []
    for iteration in range(1, max_iter + 1):
        u_old, v_old = u, v
        u = a / np.einsum("bcij,bcj->bci", k, v)
        if not balanced:
            u = np.minimum(u, 1.0)
        v = b / np.einsum("bcij,bci->bcj", k, u)
        changes.append(np.abs(u - u_old).mean() if balanced else np.abs(v - v_old).mean())
        if changes[-1] < tol:
            break
    plans = u[..., :, None] * k * v[..., None, :]
    watched = u if balanced else v
    return plans, iteration, changes[-1] < tol, changes, np.abs(watched).max()


def released_cases():
    """Batches of CLIP-like similarities at the paper's constants and around them."""
    rng = np.random.default_rng(20261204)
    settings = [  # images, patches, prompts, classes, eps, gamma, max_iter, tol, balanced
        (2, 16, 2, 3, 0.1, 0.8, 100, 1e-3, False),
        (3, 9, 2, 4, 0.1, 0.5, 100, 1e-3, False),
        (2, 12, 4, 2, 0.1, 0.8, 100, 1e-3, False),
        (2, 16, 2, 3, 0.1, 1.0, 100, 1e-3, False),
        (2, 16, 2, 3, 0.1, 0.8, 100, 1e-3, True),
        (2, 16, 2, 3, 0.1, 0.8, 12, 1e-7, False),
    ]
    blob = bytearray(b"OTRL" + struct.pack("<II", 1, len(settings)))
    for images, m, n, classes, eps, gamma, max_iter, tol, balanced in settings:
        while True:
            sim = np.stack([clip_like(rng, m, n * classes, 0.25, 0.08) for _ in range(images)])
            sim = sim.reshape(images, m, n, classes).astype(np.float32)
            plans, iterations, converged, changes, largest = released_reference(
                sim.astype(np.float64), eps, gamma, max_iter, tol, balanced)
            # f32 holds the watched scaling to 2^-24 of its size, so its mean change carries
            # rounding of that order: every change must clear the tolerance by 5 % and by far
            # more than that rounding for f32 to stop where f64 does.
            noise = 20 * largest * 2.0**-24
            if all(c > 1.05 * tol + noise or c < tol / 1.05 - noise for c in changes):
                break
            print("  redrawn: a change too close to the tolerance")
        blob += struct.pack("<IIIIffIfIII", images, m, n, classes, eps, gamma, max_iter, tol,
                            int(balanced), iterations, int(converged))
        blob += sim.astype("<f4").tobytes() + plans.astype("<f8").tobytes()
        print(f"released: {images}x{m}x{n}x{classes} eps {eps} balanced {balanced}: "
              f"{iterations} iterations, converged {converged}")
    out = FIXTURES / "ot_released.bin"
    out.write_bytes(bytes(blob))
    print(f"{len(settings)} released-code batches, {len(blob)} bytes -> {out}")


if __name__ == "__main__":
    main()
