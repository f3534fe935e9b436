#!/usr/bin/env python3
"""The released FedOTP code's batched OT solve, in PyTorch on the CPU, timed — and POT's solver
of the same problem, what a user would otherwise pick.

The released trainer (trainers/GLP_OT.py, `entropic_COT_fast`) solves all (image, class)
problems of a batch at once with batched matrix products: Kp = diag(1/a) K, Kq = diag(1/b) K^T,
then u = min(1 / (Kp v), 1), v = 1 / (Kq u). This script implements that same computation (our
own code, same operations), runs a fixed number of iterations (no early stop, so both sides do
the same work), and prints one JSON line of median times in microseconds.

POT's `ot.partial.entropic_partial_wasserstein` solves the same unbalanced problem (rows at
most 1/M, columns gamma/N, total mass gamma) in float64 NumPy, one problem per call: it runs
the same 100 iterations (`stopThr = 0`), on the single problem and on a loop over the batch's
3,200 problems (timed once: it takes seconds). When POT is not installed its keys are left out.

Usage: python3 benches/ot_reference.py [--threads N]
"""
import argparse
import json
import time

import numpy as np
import torch


def cot_fast(kernel, a, b, iterations):
    kp = torch.matmul(torch.diag_embed(1.0 / a), kernel)
    kq = torch.matmul(torch.diag_embed(1.0 / b), kernel.permute(0, 2, 1))
    ones_a, ones_b = torch.ones_like(a), torch.ones_like(b)
    u, v = ones_a, ones_b
    for _ in range(iterations):
        u = torch.minimum(ones_a / torch.matmul(kp, v.unsqueeze(-1)).squeeze(-1), ones_a)
        v = ones_b / torch.matmul(kq, u.unsqueeze(-1)).squeeze(-1)
    return u.unsqueeze(-1) * kernel * v.unsqueeze(-2)


def problem(batch, m, n, eps, gamma):
    g = torch.Generator().manual_seed(0)
    sim = 0.2 + 0.05 * torch.randn(batch, m, n, generator=g)
    kernel = torch.exp(-(1.0 - sim) / eps)
    a = torch.full((batch, m), 1.0 / m)
    b = torch.full((batch, n), gamma / n)
    return kernel, a, b


def pot_solver():
    """POT's solve of one problem at 100 iterations, or None without POT."""
    try:
        import ot
    except ImportError:
        return None

    def solve(sim, eps, gamma):
        m, n = sim.shape
        a = np.full(m, 1.0 / m)
        b = np.full(n, gamma / n)
        return ot.partial.entropic_partial_wasserstein(
            a, b, 1.0 - sim, eps, m=gamma, numItermax=100, stopThr=0.0
        )

    return solve


def median_us(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        single = problem(1, 196, 2, 0.1, 0.8)
        batch = problem(32 * 100, 196, 2, 0.1, 0.8)
        result = {
            "threads": args.threads,
            "torch": torch.__version__,
            "solve_196x2_100": median_us(lambda: cot_fast(*single, 100), 200),
            "batch_32x100_196x2_100": median_us(lambda: cot_fast(*batch, 100), 5),
        }
    pot = pot_solver()
    if pot is not None:
        sims = (0.2 + 0.05 * np.random.default_rng(0).standard_normal((32 * 100, 196, 2)))
        result["pot_solve_196x2_100"] = median_us(lambda: pot(sims[0], 0.1, 0.8), 50)
        result["pot_batch_32x100_196x2_100"] = median_us(
            lambda: [pot(sim, 0.1, 0.8) for sim in sims], 1
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
