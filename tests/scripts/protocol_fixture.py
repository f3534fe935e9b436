#!/usr/bin/env python3
"""One federated round, encoded and averaged on the host, for the firmware's protocol check.

Independent of fedotp's Rust code: the messages are encoded here from docs/PROTOCOL.md (struct
and zlib's crc32), and the expected average is computed in exact rational arithmetic and rounded
once to f32.

Output, little-endian, core/firmware/fixtures/protocol_round.bin:
  header:   b"FPRT", u32 version (1), u32 n_ctx, u32 width, u32 round, u32 client count
  a client: u32 client id, u32 samples, u32 has_loss, f32 loss, u32 has_accuracy, f32 accuracy,
            f32 prompt[n_ctx*width], u32 message length, the client-update message
  then:     f32 average[n_ctx*width], u32 message length, the global-prompt message of round+1
            carrying the average

Run: python3 tests/scripts/protocol_fixture.py   (numpy: tests/scripts/requirements.txt)
"""
import pathlib
import struct
import zlib
from fractions import Fraction

import numpy as np

# This script lives in tests/scripts/; the fixture in core/firmware/fixtures/.
REPO = pathlib.Path(__file__).resolve().parents[2]
OUT = REPO / "core" / "firmware" / "fixtures" / "protocol_round.bin"

N_CTX, WIDTH = 2, 512
ROUND = 5
# (client id, samples, loss, accuracy): ids out of order, both metrics present, one, or none.
CLIENTS = [
    (17, 1250, 0.8125, 0.71875),
    (3, 500, None, None),
    (42, 37, 2.25, None),
    (8, 2048, None, 0.5),
]

MAGIC, VERSION = b"FOTP", 1
GLOBAL_PROMPT, CLIENT_UPDATE = 1, 2
FLAG_LOSS, FLAG_ACCURACY = 1, 2


def with_checksum(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def header(kind, flags, total, round_, n_ctx, width):
    return MAGIC + struct.pack("<HBBIIII", VERSION, kind, flags, total, round_, n_ctx, width)


def global_prompt(round_, prompt):
    total = 24 + 4 * prompt.size + 4
    return with_checksum(
        header(GLOBAL_PROMPT, 0, total, round_, N_CTX, WIDTH) + prompt.astype("<f4").tobytes()
    )


def client_update(round_, client, samples, loss, accuracy, prompt):
    flags = (FLAG_LOSS if loss is not None else 0) | (FLAG_ACCURACY if accuracy is not None else 0)
    total = 40 + 4 * prompt.size + 4
    fields = struct.pack(
        "<IIff", client, samples, loss or 0.0, accuracy or 0.0
    )
    return with_checksum(
        header(CLIENT_UPDATE, flags, total, round_, N_CTX, WIDTH)
        + fields
        + prompt.astype("<f4").tobytes()
    )


def round_to_f32(q: Fraction) -> np.float32:
    """The f32 nearest to q (ties to even), checked exactly against both neighbours."""
    x = np.float32(float(q))
    for neighbour in (np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))):
        gap_x, gap_n = abs(q - Fraction(float(x))), abs(q - Fraction(float(neighbour)))
        assert gap_x < gap_n or (gap_x == gap_n and int(x.view(np.uint32)) % 2 == 0), q
    return x


def main():
    rng = np.random.default_rng(20240617)
    # Prompt vectors as CoOp initialises them: N(0, 0.02²), in f32.
    prompts = [(0.02 * rng.standard_normal(N_CTX * WIDTH)).astype(np.float32) for _ in CLIENTS]

    total = sum(samples for _, samples, _, _ in CLIENTS)
    weighted_sums = [
        sum(Fraction(samples) * Fraction(float(p[k])) for (_, samples, _, _), p in zip(CLIENTS, prompts))
        for k in range(N_CTX * WIDTH)
    ]
    # Every weighted sum is exact in f64 here, so any f64 accumulation (the protocol's rule) gets
    # the exact quotient rounded to f64, then to f32: the firmware may compare bit for bit.
    assert all(Fraction(float(s)) == s for s in weighted_sums)
    average = np.array([round_to_f32(s / total) for s in weighted_sums], dtype=np.float32)

    out = bytearray(b"FPRT" + struct.pack("<IIIII", 1, N_CTX, WIDTH, ROUND, len(CLIENTS)))
    for (client, samples, loss, accuracy), prompt in zip(CLIENTS, prompts):
        message = client_update(ROUND, client, samples, loss, accuracy, prompt)
        out += struct.pack(
            "<IIIfIf",
            client,
            samples,
            loss is not None,
            loss or 0.0,
            accuracy is not None,
            accuracy or 0.0,
        )
        out += prompt.astype("<f4").tobytes()
        out += struct.pack("<I", len(message)) + message
    message = global_prompt(ROUND + 1, average)
    out += average.astype("<f4").tobytes()
    out += struct.pack("<I", len(message)) + message
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(bytes(out))
    print(f"wrote {OUT} ({len(out)} bytes)")


if __name__ == "__main__":
    main()
