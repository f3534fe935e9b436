"""Reference fixtures for the data module's tests (host/tests/fixtures/data/), from Pillow and
torchvision — the libraries the FedOTP reference code preprocesses images with.

- resize/: PNG sources and Pillow's bicubic resize of each, raw RGB bytes, in Pillow's classic pass
  order (horizontal pass, then vertical), computed as two one-axis `Image.resize` calls. Pillow up to
  12 always ran that order (so did the FedOTP reference's environment); Pillow 13 (PR #9549) runs
  the vertical pass first when the height shrinks much more than the width, which moves some
  pixels by a few levels; `pillow13_same` records whether a direct `Image.resize` agrees.
- eval/: torchvision's evaluation pipeline Resize(S, BICUBIC) + CenterCrop(S) + ToTensor +
  Normalize(CLIP) and the CIFAR pipeline Resize((S, S)) + Normalize(CIFAR-100), float32 CHW.
- crop/: torchvision's RandomResizedCrop.get_params with every random draw it made logged
  (run in float64 so the draws replay exactly), and F.resized_crop + hflip pixels for a few boxes.
- decode/: PNG and JPEG files in the colour modes users have (L, LA, P, RGBA, 16-bit, CMYK) and
  Pillow's `convert("RGB")` of each.

Run from the repository root:  python3 tests/scripts/make_data_fixtures.py
The manifest (manifest.json) lists every case; the Rust tests read it.
"""

import json
import math
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

# This script lives in tests/scripts/; the fixtures in host/tests/fixtures/.
OUT = Path(__file__).resolve().parents[2] / "host" / "tests" / "fixtures" / "data"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def test_image(width: int, height: int, seed: int) -> Image.Image:
    """Smooth gradients, hard edges and a noisy patch: exercises ringing and clipping."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 255 * x / max(width - 1, 1)
    g = 255 * (0.5 + 0.5 * np.sin(2 * math.pi * y / max(height / 3, 1)))
    b = np.where((x // 4 + y // 4) % 2 == 0, 255.0, 0.0)
    image = np.stack([r, g, b], axis=-1)
    ph, pw = max(height // 3, 1), max(width // 3, 1)
    image[:ph, :pw] = rng.integers(0, 256, size=(ph, pw, 3))
    return Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8), "RGB")


def classic_resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """Pillow's bicubic resize with the horizontal pass first, as every Pillow before 13 did."""
    if width != image.width:
        image = image.resize((width, image.height), Image.BICUBIC)
    if height != image.height:
        image = image.resize((width, height), Image.BICUBIC)
    return image


def raw(image: Image.Image) -> bytes:
    return np.asarray(image.convert("RGB"), dtype=np.uint8).tobytes()


def main() -> None:
    for sub in ("resize", "eval", "crop", "decode"):
        (OUT / sub).mkdir(parents=True, exist_ok=True)
    manifest = {"resize": [], "eval": [], "crop_pixels": [], "decode": []}

    # --- Pillow bicubic resize --------------------------------------------------------------
    sources = {"a": (37, 23, 1), "b": (64, 48, 2), "c": (5, 7, 3), "d": (160, 120, 4)}
    for name, (w, h, seed) in sources.items():
        test_image(w, h, seed).save(OUT / "resize" / f"{name}.png")
    targets = {
        "a": [(24, 24), (80, 50), (37, 11), (9, 23), (96, 96)],
        "b": [(32, 24), (17, 13), (128, 96), (64, 20)],
        "c": [(32, 32), (3, 2), (11, 7)],
        "d": [(24, 18), (7, 5), (200, 150), (33, 120)],
    }
    for name, sizes in targets.items():
        source = Image.open(OUT / "resize" / f"{name}.png")
        for w, h in sizes:
            out = f"{name}_{w}x{h}.rgb"
            expected = raw(classic_resize(source, w, h))
            (OUT / "resize" / out).write_bytes(expected)
            same = raw(source.resize((w, h), Image.BICUBIC)) == expected
            manifest["resize"].append({"source": f"resize/{name}.png", "width": w, "height": h, "expected": f"resize/{out}", "pillow13_same": same})

    # --- torchvision evaluation and CIFAR pipelines ----------------------------------------
    clip_eval = lambda s: T.Compose([T.Resize(s, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(s), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    stretch = lambda s: T.Compose([T.Resize((s, s), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(), T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
    for name in ("a", "b", "c", "d"):
        source = Image.open(OUT / "resize" / f"{name}.png").convert("RGB")
        for size in (24, 7):
            out = f"{name}_eval{size}.f32"
            # Aspect-preserving resizes: Pillow 13 keeps the classic pass order (checked here).
            resized = (size, source.height * size // source.width) if source.width <= source.height else (source.width * size // source.height, size)
            assert raw(source.resize(resized, Image.BICUBIC)) == raw(classic_resize(source, *resized))
            (OUT / "eval" / out).write_bytes(clip_eval(size)(source).numpy().astype("<f4").tobytes())
            manifest["eval"].append({"source": f"resize/{name}.png", "geometry": "resize_center_crop", "size": size, "normalize": "clip", "expected": f"eval/{out}"})
    cifar_like = test_image(32, 32, 5)
    cifar_like.save(OUT / "eval" / "cifar_like.png")
    (OUT / "eval" / "cifar_like_stretch48.f32").write_bytes(stretch(48)(cifar_like).numpy().astype("<f4").tobytes())
    manifest["eval"].append({"source": "eval/cifar_like.png", "geometry": "stretch", "size": 48, "normalize": "cifar100", "expected": "eval/cifar_like_stretch48.f32"})

    # --- RandomResizedCrop: the sampling procedure, draw by draw ----------------------------
    torch.set_default_dtype(torch.float64)
    log = []
    real_uniform = torch.Tensor.uniform_
    real_randint = torch.randint

    def logged_uniform(self, a, b):
        result = real_uniform(self, a, b)
        log.append({"uniform": [float(a), float(b), result.item()]})
        return result

    def logged_randint(low, high, size):
        result = real_randint(low, high, size)
        log.append({"randint": [int(high), int(result.item())]})
        return result

    torch.Tensor.uniform_ = logged_uniform
    torch.randint = logged_randint
    torch.manual_seed(0)
    cases = []
    shapes = [(224, 224), (500, 375), (375, 500), (32, 32), (3, 3), (1, 1), (2, 9), (1000, 10), (10, 1000), (640, 80), (7, 5)]
    scales = [(0.08, 1.0), (0.5, 0.5), (0.9, 1.0)]
    ratios = [(3 / 4, 4 / 3), (1.0, 1.0), (0.2, 5.0)]
    for width, height in shapes:
        for scale in scales:
            for ratio in ratios:
                for _ in range(2):
                    log.clear()
                    img = Image.new("RGB", (width, height))
                    i, j, h, w = T.RandomResizedCrop.get_params(img, list(scale), list(ratio))
                    cases.append({"width": width, "height": height, "scale": list(scale), "ratio": list(ratio), "draws": list(log), "top": i, "left": j, "crop_height": h, "crop_width": w})
    torch.Tensor.uniform_ = real_uniform
    torch.randint = real_randint
    torch.set_default_dtype(torch.float32)
    (OUT / "crop" / "random_resized_crop_params.json").write_text(json.dumps(cases))

    source = Image.open(OUT / "resize" / "d.png").convert("RGB")
    for k, (top, left, h, w, size, flip) in enumerate([(10, 20, 50, 70, 24, False), (0, 0, 120, 160, 32, True), (95, 130, 12, 25, 16, True), (33, 41, 48, 64, 40, False)]):
        out = F.resized_crop(source, top, left, h, w, [size, size], T.InterpolationMode.BICUBIC)
        if flip:
            out = F.hflip(out)
        # These boxes do not shrink the height much more than the width, so torchvision on Pillow
        # 13 still runs the classic pass order; check it.
        region = source.crop((left, top, left + w, top + h))
        classic = classic_resize(region, size, size)
        assert raw(F.hflip(classic) if flip else classic) == raw(out), (top, left, h, w)
        name = f"crop/d_crop{k}.rgb"
        (OUT / name).write_bytes(raw(out))
        manifest["crop_pixels"].append({"source": "resize/d.png", "top": top, "left": left, "height": h, "width": w, "size": size, "flip": flip, "expected": name})

    # --- Decoding colour modes --------------------------------------------------------------
    base = test_image(40, 30, 6)
    rgba = base.copy()
    rgba.putalpha(Image.fromarray((np.arange(40 * 30).reshape(30, 40) % 256).astype(np.uint8)))
    variants = {
        "gray.png": (base.convert("L"), {}),
        "gray_alpha.png": (rgba.convert("LA"), {}),
        "palette.png": (base.convert("P", palette=Image.ADAPTIVE, colors=64), {}),
        "rgba.png": (rgba, {}),
        "gray16.png": (Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)), {}),
        "rgb.jpg": (base, {"quality": 95}),
        "gray.jpg": (base.convert("L"), {"quality": 95}),
        "cmyk.jpg": (base.convert("CMYK"), {"quality": 95}),
    }
    for name, (image, options) in variants.items():
        image.save(OUT / "decode" / name, **options)
        decoded = Image.open(OUT / "decode" / name)
        expected = f"decode/{name}.rgb"
        (OUT / expected).write_bytes(raw(decoded))
        manifest["decode"].append({"file": f"decode/{name}", "mode": decoded.mode, "width": decoded.width, "height": decoded.height, "expected": expected})

    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote fixtures to {OUT}")


if __name__ == "__main__":
    main()
