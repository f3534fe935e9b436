#!/usr/bin/env python3
"""Random stand-ins for the CIFAR-100 preset's inputs, for measuring time and memory where the
real data and weights are not at hand (a lent GPU machine reaches no network):

  <out>/cifar-100-binary/   train.bin and test.bin in CIFAR-100's binary format (one coarse byte,
                            one fine byte, 3072 pixel bytes per record; random pixels, fine labels
                            cycling over the 100 classes, coarse = fine // 5), and the two names
                            files, as fedotp's loader reads them;
  <out>/clip-vit-b-16/      open_clip's ViT-B-16-quickgelu with random weights, as
                            open_clip_model.safetensors (the OpenAI layout, f32).

Figures measured on these say nothing about accuracy; the shapes, and so the time and memory, are
the real run's.

    python3 benches/synthetic_cifar100.py --out DIR [--train 50000] [--test 10000] [--no-weights]
"""

import argparse
import os

import numpy as np

CLASSES, COARSE = 100, 20
RECORD = 2 + 32 * 32 * 3


def write_records(path, count, rng):
    records = np.empty((count, RECORD), dtype=np.uint8)
    fine = np.arange(count) % CLASSES
    records[:, 0] = fine // (CLASSES // COARSE)
    records[:, 1] = fine
    records[:, 2:] = rng.integers(0, 256, size=(count, RECORD - 2), dtype=np.uint8)
    records.tofile(path)


def write_data(root, train, test):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    write_records(os.path.join(root, "train.bin"), train, rng)
    write_records(os.path.join(root, "test.bin"), test, rng)
    with open(os.path.join(root, "fine_label_names.txt"), "w") as f:
        f.write("".join(f"class_{i}\n" for i in range(CLASSES)))
    with open(os.path.join(root, "coarse_label_names.txt"), "w") as f:
        f.write("".join(f"superclass_{i}\n" for i in range(COARSE)))


def write_weights(root):
    import open_clip
    import torch
    from safetensors.torch import save_file

    os.makedirs(root, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(root, "open_clip_model.safetensors"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=50000)
    p.add_argument("--test", type=int, default=10000)
    p.add_argument("--no-weights", action="store_true")
    args = p.parse_args()
    write_data(os.path.join(args.out, "cifar-100-binary"), args.train, args.test)
    if not args.no_weights:
        write_weights(os.path.join(args.out, "clip-vit-b-16"))


if __name__ == "__main__":
    main()
