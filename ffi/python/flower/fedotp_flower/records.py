"""What crosses the network between the fedotp ServerApp and ClientApp, in one place.

Messages use Flower's usual record names, so Flower's strategies and mods (FedAvg weighting,
the differential-privacy wrappers) read them as they read any app's:

==========  ===============  ===========================================================
message     record           holds
==========  ===============  ===========================================================
query       ``config``       ``plan``: the run's resolved fedotp configuration (TOML)
  reply     ``metrics``      ``partition-id``, ``num-examples`` (training samples)
            ``arrays``       ``global-prompt``: the run's seeded initial global prompt
train       ``config``       ``plan``, ``server-round``
            ``arrays``       ``global-prompt``: the round's global prompt
  reply     ``arrays``       ``global-prompt``: the prompt after local training
            ``metrics``      ``partition-id``, ``num-examples``, ``train-loss``,
                             ``train-accuracy`` (absent if every batch was skipped),
                             ``skipped-batches``
evaluate    ``config``       ``plan``
            ``arrays``       ``global-prompt``: the aggregated prompt
  reply     ``metrics``      ``partition-id``, ``has-test``, and with test samples
                             ``accuracy``, ``macro-f1``, ``macro-f1-true-labels``
==========  ===============  ===========================================================

Under SecAgg+ the train message and reply are Flower's legacy ``FitIns``/``FitRes``
(``fitins.parameters``/``fitins.config``; ``fitres.parameters``, ``fitres.num_examples``,
``fitres.metrics``, ``fitres.status``) and ``secaggplus_mod`` masks ``fitres.parameters``.

Nothing else leaves a node: not its images, features, labels or local prompt.
"""

from typing import Any, Dict, Mapping, Optional

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message

#: The name of the prompt in every ArrayRecord.
PROMPT = "global-prompt"
#: SecAgg+ runs on Flower's legacy workflow, whose train messages are ``FitIns`` and replies
#: ``FitRes`` under these record names.
LEGACY_PARAMETERS = "fitins.parameters"
LEGACY_CONFIG = "fitins.config"


def prompt_record(prompt: np.ndarray) -> ArrayRecord:
    """An ArrayRecord holding ``prompt`` (float32)."""
    return ArrayRecord({PROMPT: Array(np.ascontiguousarray(prompt, dtype=np.float32))})


def prompt_of(message: Message) -> Optional[np.ndarray]:
    """The prompt a message carries, float32 C-contiguous (None if it carries none)."""
    record = message.content.array_records.get("arrays")
    if record is not None and PROMPT in record:
        return np.ascontiguousarray(record[PROMPT].numpy(), dtype=np.float32)
    legacy = message.content.array_records.get(LEGACY_PARAMETERS)
    if legacy is not None:
        return np.ascontiguousarray(legacy.to_numpy_ndarrays()[0], dtype=np.float32)
    return None


def config_of(message: Message) -> ConfigRecord:
    """A message's ``config`` record (``fitins.config`` under SecAgg+)."""
    records = message.content.config_records
    config = records.get("config", records.get(LEGACY_CONFIG))
    if config is None or "plan" not in config:
        raise ValueError(f"a {message.metadata.message_type} message without the run's plan")
    return config


def is_legacy(message: Message) -> bool:
    """Whether a train message comes from SecAgg+'s workflow (Flower's legacy FitIns)."""
    return LEGACY_PARAMETERS in message.content.array_records


def number(record: Mapping[str, Any], key: str) -> float:
    """``record[key]`` as a number; a missing or non-numeric value is a ValueError naming
    the key (a node's reply is checked, not trusted)."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{key}` is {value!r}, not a number")
    return float(value)


def count(record: Mapping[str, Any], key: str) -> int:
    """``record[key]`` as a non-negative integer (ValueError naming the key otherwise)."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{key}` is {value!r}, not a non-negative integer")
    return value


def train_stats(metrics: Mapping[str, Any]) -> Dict[str, Any]:
    """A train reply's statistics, as ``fedotp.RunRecord.record_round`` takes them."""
    return {
        "loss": number(metrics, "train-loss") if "train-loss" in metrics else None,
        "accuracy": number(metrics, "train-accuracy") if "train-accuracy" in metrics else None,
        "skipped_batches": count(metrics, "skipped-batches"),
    }


def payload_bytes(message: Message) -> int:
    """Bytes of a message's records: arrays' data, config and metric values (Flower's framing
    and HTTP add a little on the wire)."""
    content = message.content
    arrays = sum(
        array.numpy().nbytes for record in content.array_records.values() for array in record.values()
    )
    configs = sum(
        len(value) if isinstance(value, (str, bytes)) else 8
        for record in content.config_records.values()
        for value in record.values()
    )
    metrics = 8 * sum(len(record) for record in content.metric_records.values())
    return arrays + configs + metrics
