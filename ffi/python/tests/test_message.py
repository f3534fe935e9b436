"""The wire format: encode and decode round trips, the C ABI's bytes, and refusals."""

import ctypes

import numpy as np
import pytest

import fedotp

PROMPT = np.random.default_rng(2).standard_normal((4, 8), dtype=np.float32)


def test_a_client_update_round_trips_with_and_without_metrics():
    message = fedotp.encode_client_update(3, 7, 120, PROMPT, loss=0.25, accuracy=0.5)
    assert len(message) == 4 * PROMPT.size + 44
    header, prompt = fedotp.decode_client_update(message, 4, 8)
    assert (header.round, header.client, header.samples) == (3, 7, 120)
    assert (header.loss, header.accuracy) == (0.25, 0.5)
    assert np.array_equal(prompt, PROMPT)
    bare, _ = fedotp.decode_client_update(fedotp.encode_client_update(3, 7, 120, PROMPT), 4, 8)
    assert bare.loss is None and bare.accuracy is None


def test_a_global_prompt_is_the_c_abis_bytes(libfedotp):
    message = fedotp.encode_global_prompt(9, PROMPT)
    size = ctypes.c_size_t()
    assert libfedotp.fedotp_global_prompt_size(ctypes.c_size_t(4), ctypes.c_size_t(8), ctypes.byref(size)) == 0
    out = (ctypes.c_uint8 * size.value)()
    written = ctypes.c_size_t()
    status = libfedotp.fedotp_global_prompt_encode(
        ctypes.c_uint32(9), PROMPT.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), ctypes.c_size_t(4),
        ctypes.c_size_t(8), out, ctypes.c_size_t(size.value), ctypes.byref(written),
    )
    assert status == 0 and bytes(out)[: written.value] == message
    # docs/PROTOCOL.md: magic "FOTP", and the prompt's float32 values little-endian in the body.
    assert message[:4] == b"FOTP" and PROMPT.astype("<f4").tobytes() in message


def test_refusals():
    with pytest.raises(fedotp.NonFinite):
        fedotp.encode_global_prompt(1, np.full((2, 2), np.inf, np.float32))
    with pytest.raises(fedotp.BadMessage, match="accuracy"):
        fedotp.encode_client_update(1, 1, 1, PROMPT, accuracy=1.5)
    with pytest.raises(fedotp.ShapeMismatch):
        fedotp.decode_global_prompt(fedotp.encode_global_prompt(1, PROMPT), 8, 4)
    corrupted = bytearray(fedotp.encode_global_prompt(1, PROMPT))
    corrupted[-1] ^= 1
    with pytest.raises(fedotp.BadMessage, match="(?i)checksum|crc"):
        fedotp.decode_global_prompt(bytes(corrupted), 4, 8)
    with pytest.raises(fedotp.NonContiguous):
        fedotp.encode_global_prompt(1, np.asfortranarray(PROMPT))
