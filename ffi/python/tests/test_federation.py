"""RunPlan, Node and RunRecord: a fedotp train run driven one message at a time, as the Flower
app drives it — the same results as the simulation, and clear exceptions for bad input with
nothing written."""

import json
from pathlib import Path

import numpy as np
import pytest

import fedotp

OVERRIDES = ["dataset.source.clients=3", "federation.rounds=2", "federation.local_epochs=1"]


@pytest.fixture
def plan() -> fedotp.RunPlan:
    return fedotp.RunPlan.load(None, OVERRIDES)


def test_a_plan_is_the_resolved_configuration(plan: fedotp.RunPlan) -> None:
    assert (plan.name, plan.method, plan.rounds, plan.clients) == ("quickstart", "FedOTP", 2, 3)
    assert plan.trains and plan.evaluates(0) and plan.evaluates(1)
    assert plan.sampled_clients(1) == [0, 1, 2]
    again = fedotp.RunPlan.from_toml(plan.toml)
    assert again.hash == plan.hash and again.toml == plan.toml
    half = fedotp.RunPlan.load(None, OVERRIDES + ["federation.frac=0.34"])
    assert len(half.sampled_clients(1)) == 1 and half.sampled_clients(0) == [0, 1, 2]


def test_bad_configurations_name_the_key() -> None:
    with pytest.raises(fedotp.InvalidArgument, match="federation.round"):
        fedotp.RunPlan.load(None, ["federation.round=3"])
    with pytest.raises(fedotp.InvalidArgument, match="ot.eps"):
        fedotp.RunPlan.load(None, ["ot.eps=-1"])
    with pytest.raises(fedotp.IoError, match="nowhere.toml"):
        fedotp.RunPlan.load("nowhere.toml")


def test_a_node_dataset_file_replaces_only_the_dataset(
    plan: fedotp.RunPlan, tmp_path: Path
) -> None:
    node_data = tmp_path / "node.toml"
    node_data.write_text(
        '[dataset]\nsource = { kind = "federated_digits", clients = 4, beta = 0.5, min_size = 10 }\n'
    )
    mine = plan.with_dataset(node_data)
    assert mine.clients == 4 and mine.rounds == plan.rounds
    node_data.write_text("[optimizer]\nlr = 1.0\n")
    with pytest.raises(fedotp.InvalidArgument, match="optimizer"):
        plan.with_dataset(node_data)


def test_nodes_train_and_evaluate_and_the_record_reads_like_fedotp_train(
    plan: fedotp.RunPlan, tmp_path: Path
) -> None:
    nodes = [fedotp.Node(plan, c, tmp_path / f"n{c}" / "state.safetensors", "cpu") for c in range(3)]
    described = [node.describe() for node in nodes]
    samples = [s for s, _ in described]
    initial = described[0][1]
    assert initial is not None and initial.shape == (1, 8, 64) and initial.dtype == np.float32
    assert all(np.array_equal(p, initial) for _, p in described)
    record = fedotp.RunRecord(plan, tmp_path / "runs")
    updates = [node.train(0, initial) for node in nodes]
    assert [u.samples for u in updates] == samples
    aggregator = fedotp.Aggregator(n_ctx=8, width=64, round=0)
    for client, update in enumerate(updates):
        assert update.global_prompt is not None and update.skipped_batches == 0
        aggregator.add_update(0, client, update.samples, update.global_prompt.reshape(8, 64))
    new = aggregator.average().reshape(1, 8, 64)
    evaluations = [node.evaluate(new) for node in nodes]
    assert all(e is not None and 0.0 <= e["accuracy"] <= 1.0 for e in evaluations)
    record.record_round(
        0,
        [
            {"client": c, "train": {"loss": u.loss, "accuracy": u.accuracy, "skipped_batches": 0}, "eval": e}
            for c, (u, e) in enumerate(zip(updates, evaluations))
        ],
    )
    record.save_global(0, new)
    summary = record.finish()
    assert summary is not None and "best round 0 of 1" in summary
    rows = [json.loads(line) for line in (Path(record.path) / "metrics.jsonl").read_text().splitlines()]
    assert [r["client"] for r in rows] == [0, 1, 2, "mean"]
    assert rows[1]["accuracy"] == evaluations[1]["accuracy"]  # type: ignore[index]
    with pytest.raises(fedotp.InvalidArgument, match="already trained round 0"):
        nodes[0].train(0, initial)


def test_bad_prompts_are_refused_and_nothing_is_written(plan: fedotp.RunPlan, tmp_path: Path) -> None:
    state = tmp_path / "state.safetensors"
    node = fedotp.Node(plan, 1, state, "cpu")
    with pytest.raises(fedotp.WrongDType, match="float32"):
        node.train(0, np.zeros((1, 8, 64)))
    with pytest.raises(fedotp.NonFinite, match="flat index 5"):
        bad = np.zeros((1, 8, 64), np.float32)
        bad.flat[5] = np.nan
        node.train(0, bad)
    with pytest.raises(fedotp.NonContiguous):
        node.train(0, np.zeros((64, 8, 1), np.float32).T)
    with pytest.raises(fedotp.InvalidArgument, match="a global prompt of 3 values"):
        node.train(0, np.zeros(3, np.float32))
    assert not state.exists()
    with pytest.raises(fedotp.InvalidArgument, match="partition 3 does not exist"):
        fedotp.Node(plan, 3, state, "cpu").train(0)
    with pytest.raises(fedotp.UnsupportedDevice):
        fedotp.Node(plan, 0, state, "tpu")
    assert not state.exists()


def test_a_record_refuses_a_client_twice(plan: fedotp.RunPlan, tmp_path: Path) -> None:
    record = fedotp.RunRecord(plan, tmp_path)
    twice = [{"client": 1, "train": None, "eval": None}] * 2
    with pytest.raises(fedotp.InvalidArgument, match="client 1 appears twice"):
        record.record_round(0, twice)
    with pytest.raises(fedotp.InvalidArgument, match="no `accuracy`"):
        record.record_round(0, [{"client": 0, "eval": {"macro_f1": 0.5}}])
    assert (Path(record.path) / "metrics.jsonl").read_text() == ""
