#!/usr/bin/env python3
"""CLIP on the CPU: fedotp (benches/clip_cpu.rs) beside PyTorch doing the same work.

Workloads (random weights of the real shapes, open_clip's `ViT-B-16-quickgelu` and
`RN50-quickgelu`):
  image       ViT-B/16 image tower forward, batch 8, every token after ln_post and the projection;
  image-rn50  RN50 image tower forward at 224 px, batch 8, as FedOTP uses it: the attention pool
              queried at every position (1 + 49 tokens after c_proj);
  text        FedOTP's per-batch text step: 100 classes x 2 prompts, n_ctx 4, forward + backward
              to the context. PyTorch runs it as the released code does (CoOp's TextEncoder):
              padded to 77 tokens, ln_final on every token, autograd; fedotp runs to the longest
              EOT (12).
  text-bert   the same step on BiomedCLIP's text tower (PubMedBERT base, open_clip's
              HFTextEncoder: [CLS] pooling, MLP projection to 512; random weights, transformers'
              BertModel) for 10 classes x 2 prompts. PyTorch runs the prompts as open_clip's
              tokenizer gives them to BiomedCLIP, padded to 256 tokens with the attention mask;
              fedotp runs each prompt length as its own unpadded group (8 to 12 tokens).

Each run is its own process (so its peak RSS is its own), with the same thread count; the
workloads alternate between the two implementations for `--rounds` rounds and the table reports
the fastest iteration of each (the machine may be shared: the minimum is the least disturbed).

    cargo build --release -p fedotp-benches --bin clip_cpu
    python3 benches/clip_cpu.py [--threads 2] [--rounds 2] [--iterations 3] [--workloads image-rn50 ...]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

WORKLOADS = ["image", "image-rn50", "text", "text-bert"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "clip_cpu")

# Mirrors benches/lib.rs.
IMAGE_BATCH, N_CLASSES, N_PROMPTS, N_CTX, N_BERT_CLASSES = 8, 100, 2, 4, 10
SOT, EOT, PLACEHOLDER, PERIOD = 49406, 49407, 343, 269
CLS, SEP, BERT_CONTEXT = 2, 3, 256  # PubMedBERT's [CLS] and [SEP]; BiomedCLIP's context


def class_token_ids():
    out = []
    for c in range(N_CLASSES):
        words = 1 + (7 * c) % 5
        out.append([1000 + 37 * c + w for w in range(words)] + [PERIOD])
    return out


def attention_pool_every_position(pool, x):
    """FedOTP's RN50 image features: CLIP's attention pool with every token as a query (CLIP
    queries the mean token only), outputs after c_proj: N x (1 + HW) x embed."""
    import torch
    import torch.nn.functional as F

    x = x.flatten(2).permute(2, 0, 1)  # HW, N, C
    x = torch.cat([x.mean(0, keepdim=True), x]) + pool.positional_embedding[:, None]
    out, _ = F.multi_head_attention_forward(
        query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight, in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False)
    return out.transpose(0, 1)


def bert_text_step(iterations):
    """BiomedCLIP's text step in PyTorch: the prompts padded to 256 tokens with the attention
    mask, context spliced into the word embeddings, [CLS] pooling and the MLP projection,
    autograd to the context. Returns each iteration's seconds."""
    import time as _time

    import torch
    from open_clip.hf_model import HFTextEncoder
    from transformers import BertConfig

    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072,
                        max_position_embeddings=512, layer_norm_eps=1e-12, pad_token_id=0,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    encoder = HFTextEncoder("pubmedbert-base", output_dim=512, config=config,
                            pooler_type="cls_last_hidden_state_pooler", proj_type="mlp",
                            pretrained=False).eval()
    encoder.requires_grad_(False)
    classes = class_token_ids()[:N_BERT_CLASSES]
    ids = []
    for _ in range(N_PROMPTS):
        for tokens in classes:
            row = [CLS] + [PLACEHOLDER] * N_CTX + tokens + [SEP]
            ids.append(row + [0] * (BERT_CONTEXT - len(row)))
    ids = torch.tensor(ids)
    mask = (ids != 0).long()
    ctx = torch.full((N_PROMPTS, N_CTX, 768), 0.02, requires_grad=True)
    d_features = torch.full((len(ids), 512), 1e-3)
    embeddings = encoder.transformer.embeddings.word_embeddings
    times = []
    for i in range(iterations + 1):
        start = _time.perf_counter()
        emb = embeddings(ids)
        ctx_rows = ctx.unsqueeze(1).expand(-1, len(classes), -1, -1).reshape(-1, N_CTX, 768)
        x = torch.cat([emb[:, :1], ctx_rows, emb[:, 1 + N_CTX:]], dim=1)
        out = encoder.transformer(inputs_embeds=x, attention_mask=mask)
        features = encoder.proj(encoder.pooler(out, mask))
        ctx.grad = None
        (torch.nn.functional.normalize(features, dim=-1) * d_features).sum().backward()
        if i:
            times.append(_time.perf_counter() - start)
    return times


def torch_run(workload, iterations, threads):
    import open_clip
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if workload == "text-bert":
        times = bert_text_step(iterations)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(dict(impl="pytorch", workload=workload, threads=torch.get_num_threads(),
                              seconds=[round(t, 4) for t in times], peak_rss_mib=round(peak, 1))))
        return
    name = "RN50-quickgelu" if workload == "image-rn50" else "ViT-B-16-quickgelu"
    model = open_clip.create_model(name, pretrained=None).eval()
    model.requires_grad_(False)
    times = []
    if workload in ("image", "image-rn50"):
        images = torch.full((IMAGE_BATCH, 3, 224, 224), 0.1)
        v = model.visual
        for i in range(iterations + 1):
            start = time.perf_counter()
            with torch.inference_mode():
                if workload == "image":
                    x = v.transformer(v._embeds(images))
                    tokens = v.ln_post(x) @ v.proj  # every token, CLS first
                else:
                    x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images)))))
                    tokens = attention_pool_every_position(v.attnpool, x)
            if i:
                times.append(time.perf_counter() - start)
            del tokens
    else:
        ids, eot = [], []
        for _ in range(N_PROMPTS):
            for tokens in class_token_ids():
                row = [SOT] + [PLACEHOLDER] * N_CTX + tokens + [EOT]
                eot.append(len(row) - 1)
                ids.append(row + [0] * (77 - len(row)))
        ids, eot = torch.tensor(ids), torch.tensor(eot)
        ctx = torch.full((N_PROMPTS, N_CTX, 512), 0.02, requires_grad=True)
        d_features = torch.full((len(eot), 512), 1e-3)
        for i in range(iterations + 1):
            start = time.perf_counter()
            emb = model.token_embedding(ids)
            ctx_rows = ctx.unsqueeze(1).expand(-1, N_CLASSES, -1, -1).reshape(-1, N_CTX, 512)
            x = torch.cat([emb[:, :1], ctx_rows, emb[:, 1 + N_CTX:]], dim=1)
            x = model.transformer(x + model.positional_embedding, attn_mask=model.attn_mask)
            x = model.ln_final(x)
            features = x[torch.arange(x.shape[0]), eot] @ model.text_projection
            ctx.grad = None
            (features * d_features).sum().backward()
            if i:
                times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(impl="pytorch", workload=workload, threads=torch.get_num_threads(),
                          seconds=[round(t, 4) for t in times], peak_rss_mib=round(peak, 1))))


def run(cmd, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=WORKLOADS)
    p.add_argument("--torch", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch:
        return torch_run(args.torch, args.iterations, args.threads)
    if not os.path.exists(BINARY):
        sys.exit(f"{BINARY} missing: cargo build --release -p fedotp-benches --bin clip_cpu")

    results = {}
    for _ in range(args.rounds):
        for workload in args.workloads:
            for impl, cmd in [
                ("fedotp", [BINARY, workload, str(args.iterations)]),
                ("pytorch", [sys.executable, __file__, "--torch", workload,
                             "--iterations", str(args.iterations), "--threads", str(args.threads)]),
            ]:
                r = run(cmd, args.threads)
                print(json.dumps(r), file=sys.stderr)
                entry = results.setdefault((workload, impl), dict(seconds=[], peak=0.0))
                entry["seconds"] += r["seconds"]
                entry["peak"] = max(entry["peak"], r["peak_rss_mib"])

    print(f"threads: {args.threads}, rounds: {args.rounds}, iterations per run: {args.iterations}")
    print("| workload | fedotp s (min / median) | PyTorch s (min / median) | speed-up (min) "
          "| fedotp peak RSS MiB | PyTorch peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    names = {"image": "image tower ViT-B/16, batch 8",
             "image-rn50": "image tower RN50 (every position), batch 8",
             "text": "text step 100×2, n_ctx 4, fwd+bwd",
             "text-bert": "BiomedCLIP text step 10×2, n_ctx 4, fwd+bwd"}
    for workload in args.workloads:
        ours, ref = results[(workload, "fedotp")], results[(workload, "pytorch")]
        o, t = min(ours["seconds"]), min(ref["seconds"])
        print(f"| {names[workload]} | {o:.3f} / {statistics.median(ours['seconds']):.3f} "
              f"| {t:.3f} / {statistics.median(ref['seconds']):.3f} | {t / o:.2f}× "
              f"| {ours['peak']:.0f} | {ref['peak']:.0f} |")


if __name__ == "__main__":
    main()
