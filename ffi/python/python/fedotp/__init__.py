"""fedotp: FedOTP's federated prompt learning from Python.

The wheel wraps libfedotp, fedotp's C library, and runs the same code as a C program does:
results equal the C ABI's bit for bit. NumPy arrays are borrowed (float32 values, uint8 or
uint16 pixels, C order), the GIL is released while Rust computes, and every failure is a
``fedotp.Error`` carrying the library's message.

A client's round, on the tiny seeded model::

    >>> import numpy as np, fedotp
    >>> model = fedotp.Model.tiny(seed=7, device="cpu")
    >>> client = fedotp.Client(model, ["cat", "dog"], n_ctx=4, batch_size=4, seed=1)
    >>> rng = np.random.default_rng(0)
    >>> images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(8)]
    >>> client.add_images(images, labels=[0, 1] * 4)
    8
    >>> report = client.train(epochs=1)
    >>> aggregator = fedotp.Aggregator(*client.prompt_shape, round=0)
    >>> aggregator.add_message(client.update_message(client_id=3)).samples
    8
    >>> client.apply_global(aggregator.finish())
    1
    >>> client.predict(images[:2]).shape
    (2, 2)

A ``fedotp train`` run federated one message at a time — what the Flower app in
``ffi/python/flower`` runs: ``RunPlan`` (the configuration), ``Node`` (a client on its own
machine, its state on disk) and ``RunRecord`` (the server's run directory)::

    >>> plan = fedotp.RunPlan.load(None, ["dataset.source.clients=3", "federation.rounds=3"])
    >>> plan.sampled_clients(0)
    [0, 1, 2]
"""

from ._errors import (
    AggregationError,
    BadMessage,
    Busy,
    Cancelled,
    Device,
    Error,
    FormatError,
    ImageDecode,
    Internal,
    InvalidArgument,
    IoError,
    NonContiguous,
    NonFinite,
    NotTrained,
    OutOfMemory,
    ShapeMismatch,
    StateMismatch,
    UnsupportedDevice,
    WrongDType,
)
from ._fedotp import (
    STATUS_CODES,
    Aggregator,
    Client,
    Images,
    Model,
    Node,
    NodeUpdate,
    OtReport,
    RunPlan,
    RunRecord,
    TrainReport,
    UpdateHeader,
    __version__,
    decode_client_update,
    decode_global_prompt,
    device_available,
    encode_client_update,
    encode_global_prompt,
    ot_logits,
    ot_plan,
)

__all__ = [
    "STATUS_CODES",
    "AggregationError",
    "Aggregator",
    "BadMessage",
    "Busy",
    "Cancelled",
    "Client",
    "Device",
    "Error",
    "FormatError",
    "ImageDecode",
    "Images",
    "Internal",
    "InvalidArgument",
    "IoError",
    "Model",
    "Node",
    "NodeUpdate",
    "NonContiguous",
    "NonFinite",
    "NotTrained",
    "OtReport",
    "OutOfMemory",
    "RunPlan",
    "RunRecord",
    "ShapeMismatch",
    "StateMismatch",
    "TrainReport",
    "UnsupportedDevice",
    "UpdateHeader",
    "WrongDType",
    "__version__",
    "decode_client_update",
    "decode_global_prompt",
    "device_available",
    "encode_client_update",
    "encode_global_prompt",
    "ot_logits",
    "ot_plan",
]
