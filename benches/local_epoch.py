#!/usr/bin/env python3
"""The PyTorch side of benches/local_epoch.rs: one FedOTP local step at the CIFAR-100 preset's
shapes, the way the released reference code runs it: on the CPU in fp32, or on a GPU in fp16 (the
released code's `clip_model.dtype`; the context is fp16 too, as CoOp makes it):

  - random weights of open_clip's `ViT-B-16-quickgelu` (the shapes of OpenAI's ViT-B/16);
  - text: 100 classes x 2 prompts (global, local), n_ctx 4, CoOp's TextEncoder — padded to 77
    tokens, ln_final on every token, autograd (benches/cuda_bench.py's `prompt_features`);
  - image: 32 random 32 x 32 images, bicubic 32 -> 224, the reference's CIFAR-100 statistics,
    every token after ln_post and the projection, CLS dropped, under no_grad (on a GPU the
    preprocessing runs there too);
  - OT head: similarities of the unit-length features, the unbalanced scaling loop without
    gradient (eps 0.1, gamma 0.8, at most 100 iterations, stop when the batch's mean change of v
    is below 1e-3: cuda_bench.py's `released_ot`), logits = logit scale * sum(T * S);
  - cross-entropy, backward to the context, torch.optim.SGD (lr 0.001, momentum 0.9, weight
    decay 5e-4).

Two modes: with the feature cache (the image features computed once before timing) and without
(each step also preprocesses the batch and runs the image tower). Prints one JSON line with the
median seconds per step of each, over `--steps` steps after one warm-up step.

    python3 benches/local_epoch.py [--device cpu|cuda] [--threads 2] [--steps 3] [--classes 100]
        [--batch 32]
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_bench import N_CTX, N_PROMPTS, Timer, image_tokens, padded_prompts, prompt_features, released_ot  # noqa: E402

# The reference's CIFAR-100 normalisation (fedotp's Normalize::CIFAR100_REFERENCE).
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
LR, MOMENTUM, WEIGHT_DECAY = 0.001, 0.9, 5e-4


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()

    import open_clip
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    scale = model.logit_scale.exp()
    size = model.visual.image_size[0]

    images = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.arange(args.batch, device=device) % args.classes
    mean = torch.tensor(CIFAR100_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD, device=device).view(1, 3, 1, 1)

    def image_features():
        with torch.no_grad():
            x = F.interpolate(images.float() / 255, size=size, mode="bicubic", align_corners=False)
            tokens = image_tokens(model, ((x - mean) / std).to(dtype))
            return F.normalize(tokens[:, 1:], dim=-1)  # drop CLS: B x M x D

    ids, eot = padded_prompts(torch, args.classes, device)
    width = model.token_embedding.weight.shape[1]
    ctx = (0.02 * torch.randn(N_PROMPTS, N_CTX, width, device=device)).to(dtype).requires_grad_()
    optimizer = torch.optim.SGD([ctx], lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def step(features):
        text = F.normalize(prompt_features(torch, model, ids, eot, ctx), dim=-1)
        text = text.view(N_PROMPTS, args.classes, -1)
        sim = torch.einsum("bmd,ncd->bcmn", features, text)  # B x C x M x N
        with torch.no_grad():
            plan = released_ot(torch, sim.reshape(-1, sim.shape[2], N_PROMPTS)).view_as(sim)
        logits = scale * (plan * sim).sum(dim=(2, 3))
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    timer = Timer(torch, device)
    cached = image_features()
    cached_step = timer.median(args.steps, lambda: step(cached))
    uncached_step = timer.median(args.steps, lambda: step(image_features()))
    print(json.dumps(dict(threads=torch.get_num_threads(), torch=torch.__version__, device=str(device),
                          cached_step_s=cached_step, uncached_step_s=uncached_step)))


if __name__ == "__main__":
    main()
