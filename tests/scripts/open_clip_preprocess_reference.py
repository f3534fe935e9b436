"""Reference outputs of open_clip's evaluation transforms for every `resize_mode` and
`interpolation` its `preprocess_cfg` can name, for host/tests/data_image.rs.

For each source PNG of the data fixtures (host/tests/fixtures/data/resize/) and each case, the
input tensor of `open_clip.transform.image_transform(size, is_train=False, mean, std,
resize_mode, interpolation, fill_color)` — open_clip's own code, on Pillow — is written as raw
little-endian float32 (CHW) to host/tests/fixtures/data/open_clip_eval/, and the cases to
host/tests/fixtures/data/open_clip_eval/manifest.json.

Pillow 13 may filter vertically first where an image's height shrinks much more than its width;
fedotp filters horizontally first, as Pillow did until version 12 (see host/src/data/resample.rs).
Every case here is checked to come out the same in both orders, so the fixture holds for both.

Regenerate (CPU, a second), from the repository root, in the environment of requirements.txt:

    python3 tests/scripts/open_clip_preprocess_reference.py
"""

import json
from pathlib import Path

import numpy as np
import open_clip
import PIL
import torch
from open_clip.transform import image_transform
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "host" / "tests" / "fixtures" / "data"
OUT = DATA / "open_clip_eval"
# Statistics other than CLIP's, so the fixture also shows they reach the transform.
MEAN = (0.5, 0.45, 0.4)
STD = (0.25, 0.3, 0.2)
FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def classic_resize(image: Image.Image, width: int, height: int, interpolation: str) -> Image.Image:
    """Pillow's resize with the horizontal pass first, as every Pillow before 13 did."""
    if width != image.width:
        image = image.resize((width, image.height), FILTERS[interpolation])
    if height != image.height:
        image = image.resize((width, height), FILTERS[interpolation])
    return image


def resized_size(image: Image.Image, size: int, mode: str) -> tuple[int, int]:
    """The (width, height) the transform's resize produces, from open_clip's own arithmetic."""
    w, h = image.size
    if mode == "squash":
        return size, size
    if mode == "shortest":
        return (size, h * size // w) if w <= h else (w * size // h, size)
    ratio = max(h / size, w / size)
    return round(w / ratio), round(h / ratio)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    for source in ("a", "b", "c", "d"):
        image = Image.open(DATA / "resize" / f"{source}.png").convert("RGB")
        for size in (16, 9):
            for mode in ("shortest", "longest", "squash"):
                for interpolation in ("bicubic", "bilinear"):
                    fills = (0, 200) if mode == "longest" else (0,)
                    for fill in fills:
                        transform = image_transform(
                            size, is_train=False, mean=MEAN, std=STD, resize_mode=mode,
                            interpolation=interpolation, fill_color=fill,
                        )
                        width, height = resized_size(image, size, mode)
                        direct = image.resize((width, height), FILTERS[interpolation])
                        if direct.tobytes() != classic_resize(image, width, height, interpolation).tobytes():
                            continue  # Pillow 13's pass order differs here; see the docstring
                        tensor = transform(image)
                        assert tensor.dtype == torch.float32 and tensor.shape == (3, size, size)
                        name = f"{source}_{mode}_{interpolation}_{fill}_{size}.f32"
                        (OUT / name).write_bytes(tensor.numpy().astype("<f4").tobytes())
                        cases.append({
                            "source": f"resize/{source}.png", "size": size, "resize_mode": mode,
                            "interpolation": interpolation, "fill_color": fill,
                            "expected": f"open_clip_eval/{name}",
                        })
    modes = {(c["resize_mode"], c["interpolation"]) for c in cases}
    assert len(modes) == 6, f"every mode and filter needs a case, got {sorted(modes)}"
    manifest = {
        "reference": "open_clip.transform.image_transform(is_train=False)",
        "versions": {"open_clip": open_clip.__version__, "torch": torch.__version__, "pillow": PIL.__version__},
        "mean": MEAN, "std": STD, "cases": cases,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(cases)} cases in {OUT}")


if __name__ == "__main__":
    main()
