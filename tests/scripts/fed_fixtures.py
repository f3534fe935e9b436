"""Reference numbers for the federation maths (host/tests/fed_reference.rs).

Writes host/tests/fixtures/fed/:
- sgd_torch.json: torch.optim.SGD (dampening 0, no Nesterov) on the CPU, several steps with given
  gradients, for several hyper-parameter sets and sizes; every float32 is written as its exact
  decimal value so the test compares bit for bit.
- metrics_sklearn.json: accuracy_score, f1_score(average="macro") with its default label set and
  with labels=np.unique(y_true) (Dassl's evaluator), for random and edge-case label vectors; and
  max / mean / np.std (ddof 0) of the last five of random series, as the reference prints them.

Run from the repository root: python3 tests/scripts/fed_fixtures.py
"""

import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

# This script lives in tests/scripts/; the fixtures in host/tests/fixtures/.
OUT = Path(__file__).resolve().parents[2] / "host" / "tests" / "fixtures" / "fed"


def f32_list(tensor):
    # float(np.float32) is exact in a double; repr gives the shortest string that reads back.
    return [float(v) for v in tensor.detach().cpu().numpy().astype(np.float32).ravel()]


def sgd_case(name, size, lr, momentum, weight_decay, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    param = torch.nn.Parameter(torch.randn(size, generator=gen, dtype=torch.float32) * 0.02)
    initial = f32_list(param)
    optimizer = torch.optim.SGD(
        [param], lr=lr, momentum=momentum, weight_decay=weight_decay, dampening=0, nesterov=False
    )
    grads, params, buffers = [], [], []
    for _ in range(steps):
        grad = torch.randn(size, generator=gen, dtype=torch.float32)
        param.grad = grad.clone()
        optimizer.step()
        grads.append(f32_list(grad))
        params.append(f32_list(param))
        buf = optimizer.state[param].get("momentum_buffer")
        buffers.append(None if buf is None else f32_list(buf))
    return {
        "name": name,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "initial": initial,
        "grads": grads,
        "params": params,
        "momentum_buffers": buffers,
    }


def sgd_fixture():
    torch.set_num_threads(1)
    cases = [
        # The paper's constants on a FedOTP-shaped context: N = 2, n_ctx = 4, width 16.
        sgd_case("paper_defaults", 2 * 4 * 16, 0.001, 0.9, 5e-4, 6, 0),
        # A length that is not a multiple of any vector width, to cover the tail elements.
        sgd_case("odd_length", 37, 0.001, 0.9, 5e-4, 4, 1),
        sgd_case("no_momentum", 64, 0.01, 0.0, 0.0, 3, 2),
        sgd_case("no_weight_decay", 48, 0.05, 0.5, 0.0, 3, 3),
        sgd_case("large_steps", 33, 0.1, 0.99, 0.01, 5, 4),
    ]
    return {"torch_version": torch.__version__, "cases": cases}


def metrics_case(name, y_true, y_pred):
    y_true = [int(v) for v in y_true]
    y_pred = [int(v) for v in y_pred]
    return {
        "name": name,
        "labels": y_true,
        "predictions": y_pred,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
        "macro_f1_true_labels": float(
            f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))
        ),
    }


def metrics_fixture():
    rng = np.random.default_rng(7)
    cases = [
        metrics_case("perfect", [0, 1, 2, 2], [0, 1, 2, 2]),
        metrics_case("all_wrong", [0, 0, 1, 1], [1, 1, 0, 0]),
        metrics_case("predicts_absent_classes", [3, 3, 5, 5, 5], [3, 7, 5, 9, 3]),
        metrics_case("single_sample", [4], [2]),
        metrics_case("single_class", [1, 1, 1], [1, 0, 1]),
    ]
    for i in range(8):
        n = int(rng.integers(5, 300))
        classes = int(rng.integers(2, 40))
        y_true = rng.integers(0, classes, n)
        # Mostly right, sometimes a random class (possibly one absent from y_true).
        wrong = rng.random(n) < rng.uniform(0.1, 0.9)
        y_pred = np.where(wrong, rng.integers(0, classes + 5, n), y_true)
        metrics_cases_name = f"random_{i}_n{n}_c{classes}"
        cases.append(metrics_case(metrics_cases_name, y_true, y_pred))
    summaries = []
    for length in [1, 3, 5, 6, 12, 40]:
        values = rng.uniform(0.2, 0.99, length)
        summaries.append(
            {
                "values": [float(v) for v in values],
                "max": float(np.max(values)),
                "argmax": int(np.argmax(values)),
                "last5_mean": float(np.mean(values[-5:])),
                "last5_std": float(np.std(values[-5:])),
            }
        )
    return {"classification": cases, "summaries": summaries}


def main():
    with open(f"{OUT}/sgd_torch.json", "w") as f:
        json.dump(sgd_fixture(), f)
    with open(f"{OUT}/metrics_sklearn.json", "w") as f:
        json.dump(metrics_fixture(), f, indent=1)
    print(f"wrote {OUT}/sgd_torch.json and {OUT}/metrics_sklearn.json")


if __name__ == "__main__":
    main()
