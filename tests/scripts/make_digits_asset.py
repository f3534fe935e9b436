"""Writes host/assets/digits/digits.bin: the UCI handwritten digits as shipped by scikit-learn.

scikit-learn's `load_digits` holds the 1,797 test images of the UCI "Optical Recognition of
Handwritten Digits" dataset (E. Alpaydin, C. Kaynak; CC BY 4.0): 8x8 images whose pixels count
the ink in 4x4 blocks of the original 32x32 bitmaps (0..=16).

Format (little-endian):
    b"DIG1"                 magic
    u32 count               number of images (1797)
    count records of 65 bytes:
        u8 label            0..=9
        u8[64] intensity    0..=16, row-major, top row first

Run from the repository root:  python3 tests/scripts/make_digits_asset.py
"""

import struct
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def main() -> None:
    digits = load_digits()
    images = digits.images.astype(np.int64)
    labels = digits.target.astype(np.int64)
    assert images.shape == (1797, 8, 8) and images.min() >= 0 and images.max() <= 16
    assert labels.min() >= 0 and labels.max() <= 9
    out = bytearray(b"DIG1")
    out += struct.pack("<I", len(labels))
    for label, image in zip(labels, images):
        out.append(int(label))
        out += bytes(int(v) for v in image.reshape(-1))
    # This script lives in tests/scripts/; the asset in host/assets/.
    path = Path(__file__).resolve().parents[2] / "host" / "assets" / "digits" / "digits.bin"
    path.write_bytes(bytes(out))
    print(f"wrote {path} ({len(out)} bytes, {len(labels)} images)")


if __name__ == "__main__":
    main()
