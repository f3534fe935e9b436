"""What a Flower node pays per message on top of the training itself (docs/PERFORMANCE.md).

A SuperNode starts a fresh ClientApp process for every message, so each message pays: the
interpreter and the imports (flwr, numpy, fedotp), building the client (model, data, prompt
learner: ``fedotp.Node.describe``), and mapping the image features kept by the node's first
message. This script times each part, for the quickstart's tiny model and for ViT-B/16 (random
weights of OpenAI CLIP ViT-B/16's names and shapes, written once to a safetensors file, and 224
px images), on one client of the digits:

    python benches/flower_overhead.py            # both models
    python benches/flower_overhead.py --tiny     # the tiny model only

It prints one line per measurement (median of the repetitions, seconds). The wheel and flwr
must be installed (ffi/python/requirements-dev.txt, ``pip install ./ffi/python``).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List

import fedotp
import numpy as np

def write_vit_b16(path: Path) -> None:
    """Random float32 weights with OpenAI CLIP ViT-B/16's tensor names and shapes."""
    shapes = {
        "logit_scale": [],
        "token_embedding.weight": [49408, 512],
        "positional_embedding": [77, 512],
        "ln_final.weight": [512],
        "ln_final.bias": [512],
        "text_projection": [512, 512],
        "visual.class_embedding": [768],
        "visual.positional_embedding": [197, 768],
        "visual.conv1.weight": [768, 3, 16, 16],
        "visual.ln_pre.weight": [768],
        "visual.ln_pre.bias": [768],
        "visual.ln_post.weight": [768],
        "visual.ln_post.bias": [768],
        "visual.proj": [768, 512],
    }
    for tower, width in (("transformer", 512), ("visual.transformer", 768)):
        for i in range(12):
            block = f"{tower}.resblocks.{i}."
            shapes.update({
                block + "attn.in_proj_weight": [3 * width, width],
                block + "attn.in_proj_bias": [3 * width],
                block + "attn.out_proj.weight": [width, width],
                block + "attn.out_proj.bias": [width],
                block + "ln_1.weight": [width],
                block + "ln_1.bias": [width],
                block + "mlp.c_fc.weight": [4 * width, width],
                block + "mlp.c_fc.bias": [4 * width],
                block + "mlp.c_proj.weight": [width, 4 * width],
                block + "mlp.c_proj.bias": [width],
                block + "ln_2.weight": [width],
                block + "ln_2.bias": [width],
            })
    rng = np.random.default_rng(0)
    header, chunks, offset = {}, [], 0
    for name, shape in shapes.items():
        values = (0.02 * rng.standard_normal(shape)).astype("<f4")
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            values[...] = 1.0
        if name == "logit_scale":
            values = np.array(np.log(100.0), dtype="<f4")
        data = values.tobytes()
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for data in chunks:
            f.write(data)
#: Eight clients (about 225 digits each), one local epoch, the CPU.
COMMON = ["dataset.source.clients=8", "federation.local_epochs=1", 'device="cpu"', "compare=[]"]


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    times: List[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interpreter_start(repeats: int) -> float:
    """A new Python process importing what the ClientApp imports, and nothing else."""
    code = "import flwr.clientapp, flwr.app, numpy, fedotp"
    return median_seconds(lambda: subprocess.run([sys.executable, "-c", code], check=True), repeats)


def node_costs(label: str, overrides: List[str], repeats: int) -> None:
    plan = fedotp.RunPlan.load(None, COMMON + overrides)
    with tempfile.TemporaryDirectory() as work:
        state = Path(work) / "state.safetensors"
        node = fedotp.Node(plan, 0, state)
        load = median_seconds(node.describe, repeats)
        samples, initial = node.describe()
        first = median_seconds(lambda: node.evaluate(initial), 1)
        kept = median_seconds(lambda: node.evaluate(initial), repeats)
        print(f"{label}: client of {samples} training images")
        print(f"{label}: build the client (model, data, prompts)      {load:8.2f} s")
        print(f"{label}: first evaluation (image tower, then kept)   {first:8.2f} s")
        print(f"{label}: later evaluation (kept features mapped)     {kept:8.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model only")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"interpreter + imports (flwr, numpy, fedotp)           {interpreter_start(args.repeats):8.2f} s")
    node_costs("tiny", [], args.repeats)
    if not args.tiny:
        with tempfile.TemporaryDirectory() as weights:
            path = Path(weights) / "vit-b16-random.safetensors"
            write_vit_b16(path)
            model = f'model={{ kind = "clip", path = "{path}", backbone = "ViT-B/16" }}'
            node_costs("ViT-B/16", [model], args.repeats)


if __name__ == "__main__":
    main()
