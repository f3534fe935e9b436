"""Type stubs of the compiled module ``fedotp._fedotp`` (re-exported by ``fedotp``)."""

import os
from typing import Callable, Dict, Iterable, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str
#: Every libfedotp status code by its C name (``FEDOTP_ERR_*``).
STATUS_CODES: Dict[str, int]

#: One image: encoded JPEG/PNG bytes, a path to such a file, or pixels — uint8 ``(H, W)``,
#: ``(H, W, 1)`` gray or ``(H, W, 3)`` RGB; uint16 ``(H, W)`` gray, windowed.
Image = Union[bytes, str, "os.PathLike[str]", npt.NDArray[np.uint8], npt.NDArray[np.uint16]]
#: A DICOM-style gray window for uint16 images and 16-bit grayscale PNG bytes or files:
#: ``(centre, width)``; None is the full range.
Window = Optional[Tuple[float, float]]
Float32Array = npt.NDArray[np.float32]

class OtReport:
    """How the solves of one call ended."""

    @property
    def converged(self) -> bool:
        """Whether every problem met the tolerance before ``max_iter``."""
    @property
    def iterations(self) -> int:
        """The most iterations any problem ran."""

def ot_plan(
    sim: Float32Array,
    eps: float = 0.1,
    gamma: float = 0.8,
    max_iter: int = 100,
    tol: float = 1e-3,
    balanced: bool = False,
) -> Tuple[Float32Array, OtReport]:
    """FedOTP's transport plan between M patches and N prompts (``fedotp_ot_plan``).

    ``sim``: float32 cosine similarities, C-contiguous, ``(M, N)`` or a batch ``(B, M, N)``
    (read in place, not copied); the cost is ``1 - sim``. Unbalanced by default: patches send
    at most 1/M, prompts receive gamma/N; ``balanced=True`` is Sinkhorn with 1/M and 1/N.
    Returns the plan (same shape) and a report.

    >>> import numpy as np, fedotp
    >>> sim = np.random.default_rng(0).uniform(-1, 1, (196, 2)).astype(np.float32)
    >>> plan, report = fedotp.ot_plan(sim, eps=0.1, gamma=0.8)
    >>> round(float(plan.sum()), 3), report.converged
    (0.8, True)

    Raises WrongDType (not float32), NonContiguous, ShapeMismatch, NonFinite (NaN/inf in
    ``sim``), InvalidArgument (eps, gamma, max_iter, tol out of range; an empty dimension).
    """

def ot_logits(
    patches: Float32Array,
    prompts: Float32Array,
    logit_scale: float = 100.0,
    eps: float = 0.1,
    gamma: float = 0.8,
    max_iter: int = 100,
    tol: float = 1e-3,
    balanced: bool = False,
) -> Float32Array:
    """FedOTP's OT head (``fedotp_ot_logits``): class logits from patch and prompt features.

    ``patches``: ``(M, D)`` or ``(B, M, D)``; ``prompts``: ``(N, C, D)`` (N prompts, one
    feature per class); neither need be normalised. Returns ``(C,)`` or ``(B, C)``:
    ``logit_scale * sum(T * S)`` per class, S the cosine similarities and T their plan.

    >>> import numpy as np, fedotp
    >>> rng = np.random.default_rng(0)
    >>> patches = rng.standard_normal((4, 16, 8), dtype=np.float32)
    >>> prompts = rng.standard_normal((2, 3, 8), dtype=np.float32)
    >>> fedotp.ot_logits(patches, prompts).shape
    (4, 3)
    """

class Model:
    """A frozen CLIP, shared by the clients created on it."""

    @staticmethod
    def load(path: Union[str, "os.PathLike[str]"], device: str = "auto") -> "Model":
        """Loads CLIP weights (safetensors; Hugging Face ``CLIPModel`` or OpenAI/open_clip
        layout), or BiomedCLIP from open_clip's hub layout with its ``vocab.txt``, as
        ``fedotp_model_load``. ``device`` ("cpu", "cuda", "cuda:N", "auto") is where its
        clients compute unless they name another.

        >>> model = fedotp.Model.load("clip-vit-b16/", device="auto")  # doctest: +SKIP
        """
    @staticmethod
    def tiny(seed: int = 0, device: str = "auto") -> "Model":
        """The tiny seeded CLIP of tests and examples (32 x 32 images; it has learned nothing).

        >>> fedotp.Model.tiny(seed=7, device="cpu").info["image_size"]
        32
        """
    @property
    def device(self) -> str: ...
    @property
    def info(self) -> Dict[str, int]:
        """``image_size``, ``image_tokens``, ``text_width``, ``context_length``, ``embed_dim``."""

class Images:
    """A set of images for ``Client.predict`` (a client keeps its training images itself)."""

    def __init__(
        self,
        images: Optional[Iterable[Image]] = None,
        labels: Optional[Iterable[int]] = None,
        window: Window = None,
    ) -> None: ...
    def add(self, image: Image, label: Optional[int] = None, window: Window = None) -> None:
        """Adds one image; uint16 pixels and 16-bit grayscale PNGs are mapped to 8 bits through
        ``window``."""
    def __len__(self) -> int: ...

class TrainReport:
    """How a training call went."""

    @property
    def loss(self) -> float: ...
    @property
    def accuracy(self) -> float: ...
    @property
    def steps(self) -> int: ...
    @property
    def skipped_steps(self) -> int: ...

class Client:
    """A federated client: a global prompt (shared through messages) and a local prompt (never
    leaves it) per class, trained on its own images through the OT head.

    Settings left as None keep FedOTP's defaults (``fedotp_client_config_default``): n_ctx 16;
    a random context; eps 0.1, gamma 0.8, max_iter 100, tol 1e-3, unbalanced, stopping per
    problem; learning rate 0.001, momentum 0.9, weight decay 5e-4; batch 32; augmentation on;
    seed 0; the model's device.

    ``ctx_init`` (words such as "a photo of a", CoOp's context from words) starts every prompt
    as the words' token embeddings; n_ctx must equal their token count (else InvalidArgument).
    ``ot_stopping="released"`` solves the OT head with the released code's batch stopping rule
    instead of the per-problem one (``"per_problem"``).

    >>> client = fedotp.Client(fedotp.Model.tiny(7, "cpu"), ["benign", "malignant"], n_ctx=4)
    >>> client.prompt_shape
    (4, 64)
    """

    def __init__(
        self,
        model: Model,
        class_names: Sequence[str],
        *,
        n_ctx: Optional[int] = None,
        ctx_init: Optional[str] = None,
        eps: Optional[float] = None,
        gamma: Optional[float] = None,
        max_iter: Optional[int] = None,
        tol: Optional[float] = None,
        balanced: Optional[bool] = None,
        ot_stopping: Optional[Literal["per_problem", "released"]] = None,
        learning_rate: Optional[float] = None,
        momentum: Optional[float] = None,
        weight_decay: Optional[float] = None,
        batch_size: Optional[int] = None,
        augment: Optional[bool] = None,
        seed: Optional[int] = None,
        device: Optional[str] = None,
    ) -> None: ...
    @staticmethod
    def load(
        path: Union[str, "os.PathLike[str]"],
        model: Model,
        class_names: Sequence[str],
        **settings: object,
    ) -> "Client":
        """A client with these settings, restored from a state ``save`` wrote (same model,
        class names and n_ctx; else StateMismatch)."""
    def add_images(
        self, images: Iterable[Image], labels: Iterable[int], window: Window = None
    ) -> int:
        """Adds labelled training images — all, or none if one is refused — and returns how
        many the client holds."""
    @property
    def num_images(self) -> int: ...
    @property
    def num_classes(self) -> int: ...
    def train(
        self, epochs: int = 1, progress: Optional[Callable[[int, int], object]] = None
    ) -> TrainReport:
        """Trains both prompts for ``epochs`` passes, with the GIL released. ``progress(done,
        total)`` is called after every step; if it raises, or Ctrl-C arrives, the training
        stops with ``Cancelled`` (that exception as its ``__cause__``) and the client is as
        before the call."""
    def update_message(self, client_id: int = 0) -> bytes:
        """The update message for the server: the global prompt after the last training,
        weighted by the images trained on (NotTrained if none since the last global prompt)."""
    def apply_global(self, message: bytes) -> int:
        """Installs the server's global-prompt message; returns the round it opens. The local
        prompt stays. BadMessage / ShapeMismatch leave the client unchanged."""
    @property
    def global_prompt(self) -> Float32Array:
        """The global prompt, ``(n_ctx, width)``."""
    @property
    def prompt_shape(self) -> Tuple[int, int]: ...
    def predict(self, images: Union[Images, Iterable[Image]], window: Window = None) -> Float32Array:
        """Class probabilities, ``(len(images), num_classes)``, rows summing to 1."""
    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Saves the state (both prompts, optimiser, generator, round) atomically."""
    def restore(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Restores a saved state into this client; unchanged on error."""
    @property
    def device(self) -> str:
        """"cpu" or "cuda:N": where the client computes."""

class UpdateHeader:
    """A client update's fields besides the prompt."""

    @property
    def round(self) -> int: ...
    @property
    def client(self) -> int: ...
    @property
    def samples(self) -> int: ...
    @property
    def loss(self) -> Optional[float]: ...
    @property
    def accuracy(self) -> Optional[float]: ...

class Aggregator:
    """The server's side of a round: the average of the clients' global prompts weighted by
    their training-set sizes (``fedotp_core::protocol``'s rule).

    >>> aggregator = fedotp.Aggregator(n_ctx=4, width=64, round=0)
    >>> # for each client: aggregator.add_message(update_bytes)
    >>> # global_message = aggregator.finish()   # opens round 1
    """

    def __init__(self, n_ctx: int, width: int, round: int = 0, max_clients: int = 1024) -> None: ...
    def add_message(self, message: bytes) -> UpdateHeader:
        """Decodes an update message and counts it (BadMessage, ShapeMismatch or
        AggregationError otherwise, the aggregate unchanged)."""
    def add_update(self, round: int, client: int, samples: int, prompt: Float32Array) -> None: ...
    def average(self) -> Float32Array:
        """The weighted average so far, ``(n_ctx, width)``."""
    def finish(self) -> bytes:
        """The global-prompt message of the average, opening round ``round + 1``."""
    def start_round(self, round: int) -> None: ...
    @property
    def round(self) -> int: ...
    @property
    def clients(self) -> int: ...
    @property
    def total_samples(self) -> int: ...
    @property
    def prompt_shape(self) -> Tuple[int, int]: ...

def encode_global_prompt(round: int, prompt: Float32Array) -> bytes: ...
def decode_global_prompt(message: bytes, n_ctx: int, width: int) -> Tuple[int, Float32Array]: ...
def encode_client_update(
    round: int,
    client: int,
    samples: int,
    prompt: Float32Array,
    loss: Optional[float] = None,
    accuracy: Optional[float] = None,
) -> bytes: ...
def decode_client_update(
    message: bytes, n_ctx: int, width: int
) -> Tuple[UpdateHeader, Float32Array]: ...
def device_available(device: str) -> bool:
    """Whether this library can compute on ``device`` ("cpu", "cuda", "cuda:N", "auto") now."""

class RunPlan:
    """A run's resolved configuration, as ``fedotp train`` reads it: a preset file (or the
    embedded quickstart) with ``--set``-style overrides.

    >>> plan = fedotp.RunPlan.load(None, ["dataset.source.clients=3", "federation.rounds=3"])
    >>> plan.rounds, plan.clients, plan.sampled_clients(0)
    (3, 3, [0, 1, 2])
    """

    @staticmethod
    def load(
        path: Optional[Union[str, "os.PathLike[str]"]] = None, overrides: Sequence[str] = ()
    ) -> "RunPlan":
        """The configuration in ``path`` (None: the embedded quickstart) with ``overrides``
        (``"federation.rounds=3"``); InvalidArgument names the key at fault."""
    @staticmethod
    def from_toml(text: str, overrides: Sequence[str] = ()) -> "RunPlan":
        """The configuration in TOML ``text`` (another plan's ``toml``) with ``overrides``."""
    def with_dataset(self, path: Union[str, "os.PathLike[str]"]) -> "RunPlan":
        """This plan with its ``[dataset]`` table replaced by the one in the TOML file
        ``path``: a node's description of its own data."""
    @property
    def toml(self) -> str:
        """The resolved configuration, every default written out."""
    @property
    def hash(self) -> str:
        """SHA-256 of ``toml``."""
    @property
    def name(self) -> str: ...
    @property
    def method(self) -> str:
        """The method as tables label it ("FedOTP", "PromptFL", ...)."""
    @property
    def rounds(self) -> int: ...
    @property
    def trains(self) -> bool: ...
    @property
    def clients(self) -> Optional[int]:
        """Clients, where the configuration fixes it without reading the data."""
    def sampled_clients(self, round: int) -> List[int]:
        """The clients that train in ``round``, as the simulation samples them."""
    def evaluates(self, round: int) -> bool:
        """Whether every client is evaluated after ``round``."""

class NodeUpdate:
    """A node's round: the trained global prompt, its weight and statistics."""

    @property
    def global_prompt(self) -> Optional[Float32Array]:
        """``(sets, n_ctx, width)``; None when the method shares nothing."""
    @property
    def samples(self) -> int: ...
    @property
    def loss(self) -> Optional[float]: ...
    @property
    def accuracy(self) -> Optional[float]: ...
    @property
    def skipped_batches(self) -> int: ...

#: A client's evaluation: ``accuracy``, ``macro_f1``, ``macro_f1_true_labels``.
Evaluation = Dict[str, float]

class Node:
    """One client of a run on a node of its own: its own data, its local prompt and optimiser
    state in ``state_path`` (written atomically after each round); only the trained global
    prompt, the sample count and statistics leave it. Each call loads the model and data.
    """

    def __init__(
        self,
        plan: RunPlan,
        partition: int,
        state_path: Union[str, "os.PathLike[str]"],
        device: Optional[str] = None,
    ) -> None: ...
    def describe(self) -> Tuple[int, Optional[Float32Array]]:
        """The training-set size and the run's seeded initial global prompt (the same on
        every node); reads no image."""
    def train(self, round: int, global_prompt: Optional[Float32Array] = None) -> NodeUpdate:
        """Trains ``round`` from the server's ``global_prompt`` (None: the run's seeded initial
        prompt) and saves the state; a round the state already holds is refused."""
    def evaluate(self, global_prompt: Optional[Float32Array] = None) -> Optional[Evaluation]:
        """The client's test split with ``global_prompt`` and its saved local prompt (None
        without test samples)."""
    @property
    def partition(self) -> int: ...
    @property
    def state_path(self) -> "os.PathLike[str]": ...

class RunRecord:
    """The server's record of a federated run: a run directory in ``fedotp train``'s format
    (config.toml, metrics.jsonl/.csv, summary.json, checkpoints of the global prompt)."""

    def __init__(
        self, plan: RunPlan, parent: Optional[Union[str, "os.PathLike[str]"]] = None
    ) -> None: ...
    @property
    def path(self) -> "os.PathLike[str]": ...
    def record_round(self, round: int, clients: Sequence[Dict[str, object]]) -> None:
        """Appends a round: one ``{"client", "train", "eval"}`` dict per client."""
    def save_global(self, round: int, global_prompt: Float32Array) -> "os.PathLike[str]":
        """Saves the global prompt as round ``round``'s checkpoint."""
    def finish(self) -> Optional[str]:
        """Writes summary.json; returns the summary as ``fedotp train`` prints it."""
