"""The fedotp ClientApp: one FedOTP client on a Flower SuperNode.

A SuperNode starts this app in a fresh process for every message, so nothing is kept in
memory: the node's client lives in a state file (local prompt, optimiser state, last round),
written atomically after each round by ``fedotp.Node``. Its settings come from the SuperNode's
``--node-config``:

``partition-id``  (int, required) which client of the run's partition this node is
``state-dir``     (str, required) where the node keeps its state, one file per Flower run
``dataset``       (str, optional) a TOML file with a ``[dataset]`` table: this node's own data
                  in place of the run configuration's (paths on this machine)
``device``        (str, optional) ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (default: the run's)

The node answers three kinds of message (see ``records``): ``query`` (its partition and
training-set size, and the run's seeded initial prompt), ``train`` (a local round from the
server's global prompt) and ``evaluate`` (its test split with the aggregated prompt). With
SecAgg+ the mod ``secaggplus_mod`` masks the reply of ``train`` (see ``privacy``).
"""

import os
from pathlib import Path
from typing import Any, Dict

import fedotp
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import privacy
from .records import config_of, count, is_legacy, prompt_of, prompt_record

app = ClientApp(mods=[privacy.client_mod])


def _node_setting(context: Context, key: str, required: bool = True) -> Any:
    value = context.node_config.get(key)
    if value is None and required:
        raise ValueError(
            f"this SuperNode has no `{key}` in its --node-config "
            "(it needs partition-id=<int> and state-dir=\"<dir>\"; see docs/FLOWER.md)"
        )
    return value


def _node(message: Message, context: Context) -> fedotp.Node:
    """This node's client of the run the message belongs to."""
    plan = fedotp.RunPlan.from_toml(str(config_of(message)["plan"]))
    dataset = _node_setting(context, "dataset", required=False)
    if dataset:
        plan = plan.with_dataset(os.path.expanduser(str(dataset)))
    partition = int(_node_setting(context, "partition-id"))
    state_dir = Path(os.path.expanduser(str(_node_setting(context, "state-dir"))))
    # One state per Flower run: a new run starts from the seeded prompts again.
    state = state_dir / f"run-{context.run_id}" / f"partition-{partition}.safetensors"
    device = _node_setting(context, "device", required=False)
    return fedotp.Node(plan, partition, state, device=str(device) if device else None)


def _reply(message: Message, records: Dict[str, Any]) -> Message:
    return Message(RecordDict(records), reply_to=message)


@app.query()
def query(message: Message, context: Context) -> Message:
    """The node's partition, training-set size and the run's initial global prompt."""
    node = _node(message, context)
    samples, initial = node.describe()
    records: Dict[str, Any] = {
        "metrics": MetricRecord({"partition-id": node.partition, "num-examples": samples})
    }
    if initial is not None:
        records["arrays"] = prompt_record(initial)
    return _reply(message, records)


@app.train()
def train(message: Message, context: Context) -> Message:
    """A local round from the server's global prompt; only the trained global prompt, the
    sample count and the round's statistics are sent back."""
    node = _node(message, context)
    update = node.train(count(config_of(message), "server-round"), prompt_of(message))
    metrics: Dict[str, Any] = {
        "partition-id": node.partition,
        "num-examples": update.samples,
        "skipped-batches": update.skipped_batches,
    }
    if update.loss is not None:
        metrics["train-loss"] = update.loss
    if update.accuracy is not None:
        metrics["train-accuracy"] = update.accuracy
    prompt = update.global_prompt
    if prompt is None:
        raise ValueError(f"{node.partition}: the run's method shares no prompt")
    if is_legacy(message):
        # SecAgg+: Flower's FitRes, whose parameters secaggplus_mod masks on the way out.
        return _reply(
            message,
            {
                "fitres.parameters": ArrayRecord([prompt]),
                "fitres.num_examples": MetricRecord({"num_examples": update.samples}),
                "fitres.metrics": ConfigRecord(metrics),
                "fitres.status": ConfigRecord({"code": 0, "message": "trained"}),
            },
        )
    return _reply(message, {"arrays": prompt_record(prompt), "metrics": MetricRecord(metrics)})


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """The node's test split with the aggregated global prompt and its own local prompt."""
    node = _node(message, context)
    stats = node.evaluate(prompt_of(message))
    metrics: Dict[str, Any] = {"partition-id": node.partition, "has-test": int(stats is not None)}
    if stats is not None:
        metrics["accuracy"] = stats["accuracy"]
        metrics["macro-f1"] = stats["macro_f1"]
        metrics["macro-f1-true-labels"] = stats["macro_f1_true_labels"]
    return _reply(message, {"metrics": MetricRecord(metrics)})

