"""Shared fixtures: the tiny model, a client with images, and libfedotp's C library."""

import ctypes
import os
from pathlib import Path
from typing import List

import numpy as np
import pytest

import fedotp

CLASSES = ["cat", "dog", "bird"]


def tiny_images(count: int, seed: int = 0) -> List[np.ndarray]:
    """Random 32 x 32 RGB images (the tiny model's input size)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="session")
def model() -> fedotp.Model:
    return fedotp.Model.tiny(seed=7, device="cpu")


@pytest.fixture
def client(model: fedotp.Model) -> fedotp.Client:
    client = fedotp.Client(model, CLASSES, n_ctx=4, batch_size=4, seed=11)
    client.add_images(tiny_images(9), labels=[0, 1, 2] * 3)
    return client


def _library_path() -> Path:
    """libfedotp.so: $FEDOTP_LIB, else the newest under the cargo target directory."""
    if "FEDOTP_LIB" in os.environ:
        return Path(os.environ["FEDOTP_LIB"])
    root = Path(__file__).resolve().parents[3]
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    found = [p for p in (target / "release" / "libfedotp.so", target / "debug" / "libfedotp.so") if p.exists()]
    if not found:
        pytest.fail(
            f"libfedotp.so not found under {target}: build it (cargo build -p fedotp-ffi) "
            "or set FEDOTP_LIB"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


class OtParams(ctypes.Structure):
    _fields_ = [
        ("eps", ctypes.c_float),
        ("gamma", ctypes.c_float),
        ("max_iter", ctypes.c_uint32),
        ("tol", ctypes.c_float),
        ("balanced", ctypes.c_uint32),
    ]


class OtReport(ctypes.Structure):
    _fields_ = [("iterations", ctypes.c_uint32), ("converged", ctypes.c_uint32)]


@pytest.fixture(scope="session")
def libfedotp() -> ctypes.CDLL:
    library = ctypes.CDLL(str(_library_path()))
    float_p = ctypes.POINTER(ctypes.c_float)
    library.fedotp_ot_plan.argtypes = [
        float_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(OtParams), float_p,
        ctypes.POINTER(OtReport),
    ]
    library.fedotp_ot_plan.restype = ctypes.c_int32
    library.fedotp_ot_logits.argtypes = [
        float_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t, float_p, ctypes.c_size_t,
        ctypes.c_size_t, ctypes.POINTER(OtParams), ctypes.c_float, float_p,
    ]
    library.fedotp_ot_logits.restype = ctypes.c_int32
    return library
