#!/usr/bin/env python3
"""The PyTorch side of benches/cuda_bench.rs: the same three workloads on the same GPU, in fp16
as the released FedOTP code runs them (CoOp's `clip_model.dtype`). The Rust binary runs this
script and prints both in one table; run alone, it prints one line per workload:

    RESULT <image|resnet|text|ot> <median seconds>
    SKIP <image|resnet|text|ot> <reason>

Workloads (random weights of open_clip's `ViT-B-16-quickgelu`, the shapes of OpenAI's ViT-B/16):
  image  image tower forward, every token after ln_post and the projection;
  resnet open_clip's `RN50-quickgelu` image tower forward (random weights), through the
         attention pool (which projects the pooled token only);
  text   100 classes x 2 prompts, n_ctx 4, forward + backward to the context, as CoOp's
         TextEncoder: padded to 77 tokens, ln_final on every token, autograd;
  ot     the released OT head: fp16 similarities of unit features (32 images x 196 patches
         against 2 prompts x 100 classes), the unbalanced Sinkhorn loop of the paper (eps 0.1,
         gamma 0.8, 100 iterations, stop when the batch's mean change of v is below 1e-3,
         checked on the host every iteration), the transported-similarity logits.

    python3 benches/cuda_bench.py [--iterations 10] [--smoke]

`--smoke` runs tiny batches on the CPU in fp32 to check the script without a GPU.
"""

import argparse
import statistics
import sys
import time

# Mirrors benches/lib.rs.
N_PROMPTS, N_CTX = 2, 4
SOT, EOT, PLACEHOLDER, PERIOD = 49406, 49407, 343, 269


def class_token_ids(n_classes):
    out = []
    for c in range(n_classes):
        words = 1 + (7 * c) % 5
        out.append([1000 + 37 * c + w for w in range(words)] + [PERIOD])
    return out


class Timer:
    """Median seconds of a workload, with CUDA events on a GPU."""

    def __init__(self, torch, device):
        self.torch, self.cuda = torch, device.type == "cuda"

    def median(self, iterations, run):
        torch = self.torch
        run()  # warm-up
        times = []
        for _ in range(iterations):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                begin = time.perf_counter()
                run()
                times.append(time.perf_counter() - begin)
        return statistics.median(times)


def image_tokens(model, images):
    """Every token of the image tower after ln_post and the projection, CLS first."""
    v = model.visual
    return v.ln_post(v.transformer(v._embeds(images))) @ v.proj


def image_workload(torch, model, dtype, device, batch):
    images = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)

    def run():
        with torch.inference_mode():
            return image_tokens(model, images)

    return run


def padded_prompts(torch, n_classes, device):
    """Token ids of every (prompt, class) as CoOp writes them — "[SOT] X..X {class}. [EOT]"
    padded to 77 — and the EOT positions, prompt-major."""
    ids, eot = [], []
    for _ in range(N_PROMPTS):
        for tokens in class_token_ids(n_classes):
            row = [SOT] + [PLACEHOLDER] * N_CTX + tokens + [EOT]
            eot.append(len(row) - 1)
            ids.append(row + [0] * (77 - len(row)))
    return torch.tensor(ids, device=device), torch.tensor(eot, device=device)


def prompt_features(torch, model, ids, eot, ctx):
    """CoOp's TextEncoder with the context (N_PROMPTS x N_CTX x width) in place of the X
    tokens: all 77 positions through the tower, ln_final on every token, the EOT rows projected.
    Returns N_PROMPTS * classes text features (not normalised)."""
    n_classes, width = len(eot) // N_PROMPTS, ctx.shape[-1]
    emb = model.token_embedding(ids)
    ctx_rows = ctx.unsqueeze(1).expand(-1, n_classes, -1, -1).reshape(-1, N_CTX, width)
    x = torch.cat([emb[:, :1], ctx_rows, emb[:, 1 + N_CTX:]], dim=1)
    x = model.transformer(x + model.positional_embedding, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0], device=ids.device), eot] @ model.text_projection


def text_workload(torch, model, dtype, device, n_classes):
    ids, eot = padded_prompts(torch, n_classes, device)
    width = model.token_embedding.weight.shape[1]
    ctx = (0.02 * torch.randn(N_PROMPTS, N_CTX, width, device=device)).to(dtype).requires_grad_()
    d_features = torch.full((len(eot), model.text_projection.shape[1]), 1e-3, device=device, dtype=dtype)

    def run():
        features = prompt_features(torch, model, ids, eot, ctx)
        ctx.grad = None
        (features * d_features).sum().backward()

    return run


def released_ot(torch, sim, eps=0.1, gamma=0.8, max_iter=100, thresh=1e-3):
    """The released unbalanced OT: u = min(a / (K v), 1), v = b / (Kᵀ u), stopping on the
    batch's mean change of v (a host round trip per iteration, as the released loop does)."""
    problems, m, n = sim.shape
    k = torch.exp(-(1 - sim) / eps)
    a = torch.full((problems, m), 1.0 / m, device=sim.device, dtype=sim.dtype)
    b = torch.full((problems, n), gamma / n, device=sim.device, dtype=sim.dtype)
    u, v = torch.ones_like(a), torch.ones_like(b)
    for _ in range(max_iter):
        v_old = v
        u = torch.clamp(a / torch.einsum("pmn,pn->pm", k, v), max=1.0)
        v = b / torch.einsum("pmn,pm->pn", k, u)
        if (v - v_old).abs().mean().item() < thresh:
            break
    return u[:, :, None] * k * v[:, None, :]


def ot_workload(torch, dtype, device, images, n_classes, patches=196, dim=512):
    nn = torch.nn.functional
    image = nn.normalize(torch.randn(images, patches, dim, device=device), dim=-1).to(dtype)
    text = nn.normalize(torch.randn(N_PROMPTS, n_classes, dim, device=device), dim=-1).to(dtype)

    def run():
        with torch.inference_mode():
            sim = torch.einsum("bmd,ncd->bcmn", image, text).reshape(-1, patches, N_PROMPTS)
            plan = released_ot(torch, sim)
            return 100.0 * (plan * sim).sum(dim=(1, 2)).view(images, n_classes)

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--image-batch", type=int, default=128)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--ot-images", type=int, default=32)
    p.add_argument("--smoke", action="store_true", help="tiny batches on the CPU in fp32")
    args = p.parse_args()
    workloads = ["image", "resnet", "text", "ot"]
    try:
        import open_clip
        import torch
    except ImportError as e:
        for w in workloads:
            print(f"SKIP {w} PyTorch/open_clip not importable: {e}")
        return
    if args.smoke:
        device, dtype = torch.device("cpu"), torch.float32
    elif torch.cuda.is_available():
        device, dtype = torch.device("cuda"), torch.float16
    else:
        for w in workloads:
            print(f"SKIP {w} PyTorch sees no CUDA device")
        return
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    timer = Timer(torch, device)
    def resnet_workload():
        resnet = open_clip.create_model("RN50-quickgelu", pretrained=None).to(device=device, dtype=dtype).eval()
        resnet.requires_grad_(False)
        size = resnet.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        images = torch.randn(args.image_batch, 3, size, size, device=device, dtype=dtype)

        def run():
            with torch.inference_mode():
                return resnet.visual(images)

        return run

    runs = {
        "image": lambda: image_workload(torch, model, dtype, device, args.image_batch),
        "resnet": resnet_workload,
        "text": lambda: text_workload(torch, model, dtype, device, args.classes),
        "ot": lambda: ot_workload(torch, dtype, device, args.ot_images, args.classes),
    }
    for name in workloads:
        try:
            seconds = timer.median(args.iterations, runs[name]())
            print(f"RESULT {name} {seconds:.6e}", flush=True)
        except Exception as e:  # one failing workload must not hide the others
            print(f"SKIP {name} {type(e).__name__}: {e}".replace("\n", " "), flush=True)
    if device.type == "cuda":
        print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
