"""FedOTP as a real Flower federation on 127.0.0.1: a SuperLink, three SuperNodes each holding
its own partition of the quickstart's digits, and ``flwr run`` of the app in ffi/python/flower,
judged by the files the ServerApp writes (``flwr run`` exits 0 even when the ServerApp fails).

- In the clear, the run equals ``fedotp train``'s simulation of the same configuration bit
  for bit: the final global prompt and every client's metrics, round by round.
- Under SecAgg+, the global prompt equals the plain run's within the quantisation error its
  settings imply; under differential privacy with no noise and a clipping norm that never
  binds, within float32 rounding; with noise, it moves by about the noise it adds.
- A SuperNode killed in the middle of a round leaves the run consistent: the round completes
  with the others, the next rounds go on, and the node's client, restarted, trains again from
  its last completed round.

Needs ``flwr`` (ffi/python/requirements-dev.txt) and the ``fedotp`` binary (``FEDOTP_BIN``, or
target/release/fedotp); .ci/test sets ``FEDOTP_REQUIRE_FLOWER=1`` so neither can be missing
there.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "ffi" / "python" / "flower"))
from loopback import Deployment  # noqa: E402
FEDOTP_BIN = Path(os.environ.get("FEDOTP_BIN", REPO / "target" / "release" / "fedotp"))
REQUIRED = os.environ.get("FEDOTP_REQUIRE_FLOWER") == "1"

try:
    import flwr  # noqa: F401

    HAVE_FLOWER = True
except ImportError:
    HAVE_FLOWER = False

if not REQUIRED:
    pytestmark = pytest.mark.skipif(
        not (HAVE_FLOWER and FEDOTP_BIN.exists()),
        reason="needs flwr (requirements-dev.txt) and the fedotp binary (FEDOTP_BIN)",
    )

#: The quickstart cut to three clients and three rounds of one local epoch.
OVERRIDES = [
    "dataset.source.clients=3",
    "federation.rounds=3",
    "federation.local_epochs=1",
    "compare=[]",
    'device="cpu"',
]
RUN_TIMEOUT = 300.0


def simulate(out: Path) -> Path:
    """``fedotp train`` of the same configuration; its run directory."""
    args = [str(FEDOTP_BIN), "train", "--quiet"]
    for override in OVERRIDES + [f'output.dir="{out}"']:
        args += ["--set", override]
    subprocess.run(args, check=True, capture_output=True, timeout=RUN_TIMEOUT)
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def global_prompt(checkpoint: Path) -> np.ndarray:
    """The ``global_prompt`` tensor of a checkpoint."""
    return tensor(checkpoint, "global_prompt")


def last_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").iterdir())[-1]


def rows(run: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path_factory.mktemp("flower"), nodes=3)
    try:
        deployment.start_all()
        yield deployment
    finally:
        deployment.stop()
        assert not [p for p in deployment.procs.values() if p.poll() is None]


def federate(deployment: Deployment, out: Path, **settings: Any) -> Tuple[Path, Dict[str, Any]]:
    """``flwr run`` with OVERRIDES and ``settings``; the run directory (the run done) and its
    federation.json."""
    config: Dict[str, object] = {"fedotp-set": ";".join(OVERRIDES), "reply-timeout": 120.0}
    config.update(settings)
    run = deployment.flwr_run(out, config, timeout=RUN_TIMEOUT)
    return run, json.loads((run / "federation.json").read_text())


@pytest.fixture(scope="module")
def plain(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run, _ = federate(deployment, tmp_path_factory.mktemp("plain"))
    return run


def test_a_plain_flower_run_ends_where_fedotp_train_ends(plain: Path, tmp_path: Path) -> None:
    simulated = simulate(tmp_path)
    assert rows(plain) == rows(simulated)
    assert (plain / "metrics.csv").read_bytes() == (simulated / "metrics.csv").read_bytes()
    np.testing.assert_array_equal(
        global_prompt(last_checkpoint(plain)), global_prompt(last_checkpoint(simulated))
    )
    assert json.loads((plain / "summary.json").read_text()) == json.loads(
        (simulated / "summary.json").read_text()
    )


def tensor(path: Path, name: str) -> np.ndarray:
    """Tensor ``name`` of a safetensors file (a JSON header, then the data)."""
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    entry = json.loads(data[8 : 8 + header_len])[name]
    start, end = entry["data_offsets"]
    values = np.frombuffer(data[8 + header_len + start : 8 + header_len + end], dtype="<f4")
    return values.reshape(entry["shape"])


def node_prompts(deployment: Deployment, log: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """Each client's trained global prompt as its node's state holds it (float64, stacked by
    client) and its weight (training samples)."""
    run = f"run-{log['flower_run_id']}"
    prompts = [
        tensor(deployment.state_dir(c) / run / f"partition-{c}.safetensors", "global_prompt")
        for c in range(3)
    ]
    weights = np.array([log["samples"][str(c)] for c in range(3)], dtype=np.float64)
    return np.stack(prompts).astype(np.float64), weights


def initial_prompt(run: Path) -> np.ndarray:
    """The run's seeded initial global prompt (what every node draws)."""
    import fedotp

    plan = fedotp.RunPlan.from_toml((run / "config.toml").read_text())
    _, prompt = fedotp.Node(plan, 0, run / "unused-state.safetensors").describe()
    assert prompt is not None
    return prompt.astype(np.float64)


ONE_ROUND = ";".join([o for o in OVERRIDES if not o.startswith("federation.rounds")] + ["federation.rounds=1"])


def test_secure_aggregation_gives_the_average_within_its_quantisation_error(
    deployment: Deployment, tmp_path: Path
) -> None:
    c, q_range, max_weight = 8.0, 1 << 22, 1000.0
    run, log = federate(
        deployment, tmp_path, **{
            "fedotp-set": ONE_ROUND, "privacy": "secagg", "secagg-clipping-range": c,
            "secagg-quantization-range": q_range, "secagg-max-weight": max_weight,
        }
    )
    assert log["privacy"] == "secagg" and log["rounds"][0]["trained"] == [0, 1, 2]
    x, w = node_prompts(deployment, log)
    average = np.tensordot(w, x, axes=1) / w.sum()
    # Each node sends x_i scaled by q_i/Q, q_i = round(w_i/W Q), stochastically rounded to a
    # grid of 2c/Q: the sum's error is below k grid steps, i.e. 2ck/Σq after division; the
    # rounded weights move the average by at most Σ|δ_i||x_i − avg|/Σq ≤ k/2 range/Σq.
    q = np.round(w / max_weight * q_range)
    k = len(w)
    assert (np.abs(x).max(axis=(1, 2, 3)) * q / q_range <= c).all(), "SecAgg+ would clip"
    bound = (2 * c * k + 0.5 * k * (x.max(axis=0) - x.min(axis=0))) / q.sum()
    bound += 4 * np.abs(x).max() * 2.0**-24  # float32 products and the final float32
    secagg = global_prompt(last_checkpoint(run)).astype(np.float64)
    error = np.abs(secagg - average)
    assert (error <= bound).all(), (error.max(), bound.min())
    assert error.max() > 0, "no quantisation error at all: was SecAgg+ used?"


def test_dp_without_noise_or_binding_clip_gives_the_plain_average(
    deployment: Deployment, tmp_path: Path
) -> None:
    run, log = federate(
        deployment, tmp_path, **{
            "fedotp-set": ONE_ROUND, "privacy": "dp-server", "dp-noise-multiplier": 0.0,
            "dp-clipping-norm": 1e6,
        }
    )
    x, w = node_prompts(deployment, log)
    average = np.tensordot(w, x, axes=1) / w.sum()
    final = global_prompt(last_checkpoint(run)).astype(np.float64)
    np.testing.assert_allclose(final, average, rtol=1e-6, atol=1e-6 * np.abs(x).max())


def test_client_side_dp_clips_each_update_and_adds_the_documented_noise(
    deployment: Deployment, tmp_path: Path
) -> None:
    clip, multiplier = 0.05, 1.0
    run, log = federate(
        deployment, tmp_path, **{
            "fedotp-set": ONE_ROUND, "privacy": "dp-client", "dp-noise-multiplier": multiplier,
            "dp-clipping-norm": clip,
        }
    )
    x, w = node_prompts(deployment, log)
    start = initial_prompt(run)
    deltas = x - start
    norms = np.sqrt((deltas**2).sum(axis=(1, 2, 3)))
    assert (norms > clip).any(), f"no update is larger than the clipping norm: {norms}"
    clipped = deltas * np.minimum(1.0, clip / norms)[:, None, None, None]
    noiseless = start + np.tensordot(w, clipped, axes=1) / w.sum()
    noise = global_prompt(last_checkpoint(run)).astype(np.float64) - noiseless
    sigma = multiplier * clip / 3
    # 512 draws: the sample deviation is within 20 % of sigma (> 6 standard errors).
    assert 0.8 * sigma < noise.std() < 1.2 * sigma, (noise.std(), sigma)
    assert abs(noise.mean()) < 5 * sigma / np.sqrt(noise.size)


def test_a_killed_supernode_leaves_the_run_consistent(deployment: Deployment, tmp_path: Path) -> None:
    victim = 2
    log_name = f"supernode{victim}"
    # ClientApp processes the victim has started so far; the run adds: query, then per round
    # train and evaluate. Kill it as round 1's training process starts.
    before = deployment.log(log_name).count("Start `flwr-clientapp` process")
    killed: Dict[str, float] = {}

    def kill_in_round_1() -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            if deployment.log(log_name).count("Start `flwr-clientapp` process") >= before + 4:
                deployment.kill_node(victim)
                killed["at"] = time.monotonic()
                deployment.start_node(victim)  # it comes back for the next round
                return
            time.sleep(0.05)

    import threading

    killer = threading.Thread(target=kill_in_round_1, daemon=True)
    killer.start()
    run, log = federate(deployment, tmp_path, **{"reply-timeout": 20.0})
    killer.join(timeout=10)
    assert "at" in killed, "the SuperNode was never killed"
    rounds = {r["round"]: r for r in log["rounds"]}
    assert rounds[0]["trained"] == [0, 1, 2]
    assert rounds[1]["trained"] == [0, 1], rounds[1]
    assert rounds[2]["trained"] == [0, 1, 2], rounds[2]
    recorded = rows(run)
    round1 = [r for r in recorded if r["round"] == 1 and r["client"] != "mean"]
    assert [r["client"] for r in round1 if r["train_loss"] is not None] == [0, 1]
    # The restarted node trained round 2 from its round-0 state: its state says round 2.
    state = (
        deployment.state_dir(victim) / f"run-{log['flower_run_id']}"
        / f"partition-{victim}.safetensors"
    )
    header_len = int.from_bytes(state.read_bytes()[:8], "little")
    meta = json.loads(state.read_bytes()[8 : 8 + header_len])["__metadata__"]
    assert json.loads(meta["fedotp_checkpoint"])["round"] == 2
    assert np.isfinite(global_prompt(last_checkpoint(run))).all()
