"""A small typed program against the stubs: `python -m mypy --strict` checks it in CI (it is
also a usage example; pytest does not collect it)."""

from pathlib import Path
from typing import List

import numpy as np
import numpy.typing as npt

import fedotp


def one_round(state_dir: Path, images: List[npt.NDArray[np.uint8]], labels: List[int]) -> float:
    """What a federated node does each round: restore, train, send, receive, save."""
    model = fedotp.Model.tiny(seed=7, device="cpu")
    classes = ["benign", "malignant"]
    state = state_dir / "client.safetensors"
    client = (
        fedotp.Client.load(state, model, classes, n_ctx=4)
        if state.exists()
        else fedotp.Client(model, classes, n_ctx=4, seed=1)
    )
    client.add_images(images, labels)
    report: fedotp.TrainReport = client.train(epochs=1, progress=lambda done, total: None)
    aggregator = fedotp.Aggregator(*client.prompt_shape, round=0)
    header: fedotp.UpdateHeader = aggregator.add_message(client.update_message(client_id=1))
    assert header.samples == len(images)
    try:
        client.apply_global(aggregator.finish())
    except fedotp.BadMessage as error:
        print(error.status_name, error.message)
    probabilities: npt.NDArray[np.float32] = client.predict(images)
    plan, ot_report = fedotp.ot_plan(np.zeros((4, 2), dtype=np.float32))
    assert ot_report.converged or ot_report.iterations > 0
    client.save(state)
    return float(probabilities.max()) + report.loss + float(plan.sum())
