#!/usr/bin/env python3
"""Convert an open_clip hub checkpoint (`open_clip_pytorch_model.bin`) to safetensors.

BiomedCLIP (`microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`) and other open_clip
models on the Hugging Face hub ship their weights only as `open_clip_pytorch_model.bin`, a
pickled PyTorch state dict; fedotp reads safetensors (`open_clip_model.safetensors`). This script
converts one into the other, in the model's directory, beside `open_clip_config.json`:

    python3 tools/open_clip_to_safetensors.py MODEL_DIR
        reads  MODEL_DIR/open_clip_pytorch_model.bin
        writes MODEL_DIR/open_clip_model.safetensors

    python3 tools/open_clip_to_safetensors.py [MODEL_DIR] --input FILE.bin|.pt [--output FILE] [--force]

What it does:
  * loads the file with `torch.load(map_location="cpu", weights_only=True)`: only tensors and
    plain containers are unpickled, never arbitrary objects (a file that needs more is refused);
  * accepts a plain state dict, or a training checkpoint holding it under "state_dict"; strips a
    leading "module." (DataParallel / DistributedDataParallel) from the names, as open_clip's
    `load_checkpoint` does;
  * requires every value to be a floating-point tensor and writes it as contiguous float32. The
    one exception is `*.embeddings.position_ids`, an integer buffer that checkpoints made with
    transformers < 4.31 hold (BiomedCLIP's does: `text.transformer.embeddings.position_ids`): it
    is only 0, 1, 2, ... (checked), current transformers and open_clip's `load_checkpoint` drop
    it, and so does this script, saying so;
  * writes atomically (a temporary file in the output's directory, fsync, rename) and refuses to
    replace an existing output unless `--force` is given.

Expected failures (missing file, not a checkpoint, a non-tensor entry, existing output) print one
line on stderr and exit with status 1.

Requirements: torch and safetensors only, e.g. the versions pinned in tests/scripts/requirements.txt:

    python3 -m venv .venv && .venv/bin/pip install torch==2.15.0 safetensors==0.8.0
"""

import argparse
import os
import pickle
import sys
import tempfile

DEFAULT_INPUT = "open_clip_pytorch_model.bin"
DEFAULT_OUTPUT = "open_clip_model.safetensors"


class ConversionError(Exception):
    """An expected failure: reported as one line, exit status 1."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Convert an open_clip checkpoint (open_clip_pytorch_model.bin) to "
        "float32 safetensors (open_clip_model.safetensors) for fedotp.")
    p.add_argument("model_dir", nargs="?", help="directory holding open_clip_pytorch_model.bin; "
                   "the output is written there")
    p.add_argument("--input", help="the checkpoint (.bin / .pt) to read "
                   f"(default: MODEL_DIR/{DEFAULT_INPUT})")
    p.add_argument("--output", help=f"the safetensors file to write (default: MODEL_DIR/{DEFAULT_OUTPUT}, "
                   "or beside --input when no MODEL_DIR is given)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    args = p.parse_args(argv)
    if args.model_dir is None and args.input is None:
        p.error("give MODEL_DIR or --input")
    if args.model_dir is not None and not os.path.isdir(args.model_dir):
        raise ConversionError(f"{args.model_dir}: not a directory")
    base = args.model_dir if args.model_dir is not None else os.path.dirname(os.path.abspath(args.input))
    args.input = args.input or os.path.join(base, DEFAULT_INPUT)
    args.output = args.output or os.path.join(base, DEFAULT_OUTPUT)
    return args


def load_state_dict(path):
    import torch

    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise ConversionError(f"{path}: not a PyTorch checkpoint (UnpicklingError: {e})") from None
        # torch's message is several paragraphs; its "WeightsUnpickler error:" line says what.
        why = next((line.strip() for line in str(e).splitlines() if "WeightsUnpickler error" in line),
                   "it holds objects other than tensors and plain containers")
        why = why.split(". Please use")[0]
        raise ConversionError(f"{path}: refused: not a plain state dict of tensors ({why}); "
                              "this script never unpickles arbitrary objects") from None
    except Exception as e:  # torch raises many kinds on a file that is not a checkpoint
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {first})") from None

    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    if not obj:
        raise ConversionError(f"{path}: the state dict is empty")
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ConversionError(f"{path}: state dict key {key!r} is not a string")
        name = key[len("module."):] if key.startswith("module.") else key
        if name in state:
            raise ConversionError(f"{path}: '{key}' and another key both become '{name}' "
                                  "once 'module.' is stripped")
        state[name] = value
    return state


def to_float32(path, state):
    import torch

    out, dropped = {}, []
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{path}: '{name}' is a {type(value).__name__}, not a tensor")
        if value.is_floating_point():
            # clone: tied weights would otherwise share storage, which safetensors refuses.
            out[name] = value.detach().to(torch.float32).contiguous().clone()
        elif name.endswith("embeddings.position_ids") and not value.is_complex():
            expected = torch.arange(value.shape[-1], dtype=value.dtype).expand(value.shape)
            if not torch.equal(value, expected):
                raise ConversionError(f"{path}: '{name}' ({value.dtype}) is not 0, 1, 2, ...; "
                                      "refusing to drop it")
            dropped.append(name)
        else:
            raise ConversionError(f"{path}: '{name}' is a {value.dtype} tensor, not a floating-point "
                                  "one")
    if not out:
        raise ConversionError(f"{path}: no floating-point tensors")
    return out, dropped


def write_atomically(state, output, force):
    from safetensors.torch import save_file

    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise ConversionError(f"{directory}: no such directory")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(output)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt"})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file's mode, not mkstemp's 0600
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, output)
        else:
            try:
                os.link(tmp, output)  # fails if the output appeared meanwhile: never clobbers
            except FileExistsError:
                raise ConversionError(f"{output}: already exists (use --force to replace it)") from None
            os.unlink(tmp)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None):
    try:
        args = parse_args(argv)
        if os.path.exists(args.output) and not args.force:
            raise ConversionError(f"{args.output}: already exists (use --force to replace it)")
        state, dropped = to_float32(args.input, load_state_dict(args.input))
        write_atomically(state, args.output, args.force)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"error: {e} (install torch and safetensors, see this script's docstring)", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name in dropped:
        print(f"dropped {name} (an integer position-id buffer, 0, 1, 2, ...; not a weight)")
    count = len(state)
    values = sum(t.numel() for t in state.values())
    size = os.path.getsize(args.output)
    print(f"wrote {args.output}: {count} tensors, {values:,} float32 values, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
