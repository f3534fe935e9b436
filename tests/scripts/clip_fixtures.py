#!/usr/bin/env python3
"""Reference fixtures for the Rust CLIP (host/tests/clip_*.rs).

Builds small random CLIPs and records, with PyTorch autograd as the reference:
  hf/      a Hugging Face `transformers` CLIPModel (model.safetensors + config.json), text width 64
           with 2 heads, vision width 96 with 3 heads;
  openai/  an open_clip CLIP in the OpenAI layout (open_clip_model.safetensors +
           open_clip_config.json), widths 64 with 32-wide heads, also stored as f16 and bf16;
  gelu/    an open_clip CLIP with nn.GELU (open_clip's default, LAION's and DataComp's models) in
           another shape: 4-pixel patches, 16-wide vision heads, text width 48 in 3 layers;
and, in each directory, reference.safetensors with the inputs and every intermediate:
  text.*    prompts "[SOT] ctx(4) class tokens [EOT]" for 2 context sets x 3 classes, CoOp-style
            (token embeddings with the context spliced in, run through the tower, EOT-pooled):
            each block's input, qkv, attention probabilities, residual after attention and MLP
            pre-activation (truncated to the longest EOT + 1), the pooled rows, the features of
            the full 77-token run, and the gradients of loss = sum(features * d_features) with
            respect to the embeddings and the context;
  plain.*   plain token ids through the library's own text path (get_text_features /
            encode_text) — an end-to-end check of the loader independent of the hooks above;
  vision.*  images, patch embeddings, embeddings, ln_pre output, each block's output, ln_post
            output for every token, projected tokens, and the library's own pooled embedding.
  rn/       a CLIP with a ModifiedResNet image tower (OpenAI layout, open_clip_model.safetensors +
            open_clip_config.json): stem width 6, blocks (2, 1, 1, 1), 96 px images (3 x 3 final
            positions), attention pool of 192 channels in 2 heads, embed 32. The tower is written
            below in plain torch from the architecture (`ResNetTower`); its reference records the
            images, each stem convolution's output (after BN and ReLU), the stem's pool, every
            bottleneck's output (all NCHW), the attention pool's tokens and attention output and
            the c_proj output at every position, and open_clip's own `encode_image` — which the
            all-positions token 0 must equal (checked here and in the Rust test).
  timm/     open_clip's timm image tower (BiomedCLIP's: `TimmModel` around timm's
            `vit_base_patch16_224`, `timm_pool: ""`, `timm_proj: "linear"`) with the sizes shrunk
            (16 px images, 4-pixel patches, width 32 in 4 heads, 2 blocks, embed 16) and every
            other setting timm's: patch convolution with bias, no pre-norm, LayerNorm eps 1e-6,
            exact GELU, the class token's row after the final norm as open_clip's feature. Its
            open_clip_model.safetensors is a whole open_clip CLIP (a 1-block text tower besides
            `visual.trunk.*` and `visual.head.*`); its reference records the vision.* values above
            (pre_norm being timm's Identity `norm_pre`, i.e. the embeddings; post_norm timm's
            `norm`), `head.proj` on every token, and open_clip's own `encode_image`, which the
            class token's row must equal (checked here and in the Rust test).

Run from the repository root:  python3 tests/scripts/clip_fixtures.py
(torch, transformers, open_clip_torch and safetensors; CPU, deterministic, a few seconds).
"""

import json
import os
import shutil

import open_clip
import timm
import torch
import torch.nn.functional as F
from torch import nn
from safetensors.torch import save_file
from timm.models import register_model
from transformers import CLIPConfig, CLIPModel

# This script lives in tests/scripts/; the fixtures in host/tests/fixtures/.
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "host", "tests", "fixtures", "clip")
VOCAB = 600
SOT, EOT = VOCAB - 2, VOCAB - 1  # EOT is the largest id, as open_clip's argmax pooling needs
CONTEXT = 77
N_CTX = 4
N_SETS = 2
CLASS_LENGTHS = [1, 3, 5]  # tokens of "{name}." per class
PLAIN_LENGTHS = [2, 4, 7]  # tokens between SOT and EOT of plain prompts
IMAGES = 2

torch.manual_seed(0)
torch.set_num_threads(1)


def perturb(model):
    """Moves every parameter off its initial value, so that a swapped weight and bias, a
    missing LayerNorm scale or a transposed projection cannot pass unnoticed."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            p.add_(0.05 * torch.randn_like(p))


def class_tokens():
    return [torch.randint(1, VOCAB - 2, (n,)) for n in CLASS_LENGTHS]


def prompt_ids(tokens, n_ctx):
    """Padded ids [S, 77] and EOT positions [S] of "[SOT] X*n_ctx tokens [EOT]" for every set."""
    ids, eot = [], []
    for _ in range(N_SETS if n_ctx else 1):
        for t in tokens:
            row = torch.zeros(CONTEXT, dtype=torch.long)
            row[0] = SOT
            row[1 + n_ctx : 1 + n_ctx + len(t)] = t
            row[1 + n_ctx + len(t)] = EOT
            ids.append(row)
            eot.append(1 + n_ctx + len(t))
    return torch.stack(ids), torch.tensor(eot)


def splice(token_embedding, ids, ctx):
    """CoOp's prompt: token embeddings with the context rows at positions 1..=n_ctx."""
    emb = token_embedding(ids)
    n_classes = ids.shape[0] // N_SETS
    ctx_rows = ctx.unsqueeze(1).expand(-1, n_classes, -1, -1).reshape(-1, N_CTX, ctx.shape[-1])
    return torch.cat([emb[:, :1], ctx_rows, emb[:, 1 + N_CTX :]], dim=1)


def attention_reference(qkv, heads, causal):
    """Softmax probabilities [B, H, L, L] from fused qkv [B, L, 3W]."""
    b, l, w3 = qkv.shape
    w = w3 // 3
    q, k, _ = qkv.split(w, dim=-1)
    q = q.reshape(b, l, heads, -1).transpose(1, 2)
    k = k.reshape(b, l, heads, -1).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if causal:
        scores = scores.masked_fill(torch.ones(l, l, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1)


class Recorder:
    """Forward hooks that keep named tensors."""

    def __init__(self):
        self.values, self.handles = {}, []

    def output(self, module, name, fn=lambda x: x):
        def hook(_m, _inp, out):
            self.values[name] = fn(out[0] if isinstance(out, tuple) else out).detach().clone()

        self.handles.append(module.register_forward_hook(hook))

    def input(self, module, name):
        def hook(_m, inp):
            self.values[name] = inp[0].detach().clone()

        self.handles.append(module.register_forward_pre_hook(hook))

    def remove(self):
        for h in self.handles:
            h.remove()


def text_reference(ref, prefix, run_tower, token_embedding, blocks, heads, names):
    """Records the CoOp text path: hooks on every block, features, gradients."""
    tokens = class_tokens()
    ids, eot = prompt_ids(tokens, N_CTX)
    width = token_embedding.weight.shape[1]
    ctx = (0.02 * torch.randn(N_SETS, N_CTX, width)).requires_grad_()
    emb = splice(token_embedding, ids, ctx.float())
    emb.retain_grad()
    rec = Recorder()
    for i, block in enumerate(blocks):
        rec.input(block, f"layer{i}.input")
        rec.output(getattr(block, names["ln_1"]), f"layer{i}.ln_1")
        rec.input(getattr(block, names["ln_2"]), f"layer{i}.mid")
        rec.output(names["fc"](block), f"layer{i}.fc")
        rec.output(block, f"layer{i}.output")
    features, pooled = run_tower(emb, eot)
    rec.remove()
    d_features = torch.randn_like(features)
    (features * d_features).sum().backward()

    seq = int(eot.max()) + 1
    ref[f"{prefix}.ids"] = ids
    ref[f"{prefix}.eot"] = eot
    ref[f"{prefix}.ctx"] = ctx.detach()
    ref[f"{prefix}.embeddings"] = emb.detach()
    for i, block in enumerate(blocks):
        v = rec.values
        qkv = names["qkv"](block, v[f"layer{i}.ln_1"])
        ref[f"{prefix}.layer{i}.input"] = v[f"layer{i}.input"][:, :seq]
        ref[f"{prefix}.layer{i}.qkv"] = qkv[:, :seq]
        ref[f"{prefix}.layer{i}.probs"] = attention_reference(qkv[:, :seq], heads, causal=True)
        ref[f"{prefix}.layer{i}.mid"] = v[f"layer{i}.mid"][:, :seq]
        ref[f"{prefix}.layer{i}.fc"] = v[f"layer{i}.fc"][:, :seq]
    ref[f"{prefix}.output"] = rec.values[f"layer{len(blocks) - 1}.output"][:, :seq]
    ref[f"{prefix}.pooled"] = pooled.detach()
    ref[f"{prefix}.features"] = features.detach()
    ref[f"{prefix}.d_features"] = d_features
    ref[f"{prefix}.d_embeddings"] = emb.grad
    ref[f"{prefix}.d_ctx"] = ctx.grad


def vision_reference(ref, images, hooks, pooled_fn, tokens_fn):
    rec = Recorder()
    hooks(rec)
    with torch.no_grad():
        pooled = pooled_fn(images)
        tokens = tokens_fn(rec)
    rec.remove()
    ref["vision.images"] = images
    for name, value in rec.values.items():
        ref[f"vision.{name}"] = value
    ref["vision.tokens"] = tokens
    ref["vision.pooled"] = pooled


def save(ref, path):
    save_file({k: v.contiguous() for k, v in ref.items()}, path)


def hf_fixture(out):
    config = CLIPConfig(
        text_config=dict(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=CONTEXT, bos_token_id=SOT,
            eos_token_id=EOT, pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=96, intermediate_size=384, num_hidden_layers=2, num_attention_heads=3,
            image_size=32, patch_size=8,
        ),
        projection_dim=48,
    )
    config._attn_implementation = "eager"
    model = CLIPModel(config).eval()
    perturb(model)
    model.save_pretrained(out, safe_serialization=True)
    tm, vm = model.text_model, model.vision_model

    def run_tower(emb, eot):
        seq = emb.shape[1]
        x = tm.embeddings(inputs_embeds=emb)
        mask = torch.full((seq, seq), float("-inf")).triu(1)[None, None]
        for layer in tm.encoder.layers:
            x = layer(x, mask)
        x = x[0] if isinstance(x, tuple) else x
        pooled = x[torch.arange(x.shape[0]), eot]
        return model.text_projection(tm.final_layer_norm(pooled)), pooled

    def qkv(layer, normed):
        a = layer.self_attn
        return torch.cat([a.q_proj(normed), a.k_proj(normed), a.v_proj(normed)], dim=-1).detach()

    ref = {}
    names = dict(ln_1="layer_norm1", ln_2="layer_norm2", fc=lambda b: b.mlp.fc1, qkv=qkv)
    text_reference(ref, "text", run_tower, tm.embeddings.token_embedding, tm.encoder.layers, 2, names)

    plain_ids, plain_eot = prompt_ids([torch.randint(1, VOCAB - 2, (n,)) for n in PLAIN_LENGTHS], 0)
    with torch.no_grad():
        ref["plain.ids"] = plain_ids
        ref["plain.eot"] = plain_eot
        ref["plain.features"] = model.get_text_features(input_ids=plain_ids).pooler_output

    def hooks(rec):
        rec.output(vm.embeddings.patch_embedding, "patch_embeds", lambda x: x.flatten(2).transpose(1, 2))
        rec.output(vm.embeddings, "embeddings")
        rec.output(vm.pre_layrnorm, "pre_norm")
        for i, layer in enumerate(vm.encoder.layers):
            rec.output(layer, f"block{i}")

    def tokens(rec):
        last = rec.values[f"block{len(vm.encoder.layers) - 1}"]
        post = vm.post_layernorm(last)
        rec.values["post_norm"] = post
        return model.visual_projection(post)

    images = torch.randn(IMAGES, 3, 32, 32)
    vision_reference(ref, images, hooks, lambda x: model.get_image_features(pixel_values=x).pooler_output, tokens)
    save(ref, os.path.join(out, "reference.safetensors"))


# The OpenAI-layout fixture: OpenAI's QuickGELU, also stored in f16 and bf16.
OPENAI_CFG = dict(
    embed_dim=32,
    quick_gelu=True,
    vision_cfg=dict(image_size=40, layers=2, width=64, head_width=32, patch_size=8),
    text_cfg=dict(context_length=CONTEXT, vocab_size=VOCAB, width=64, heads=2, layers=2),
)
# An open_clip model as LAION and DataComp train them: nn.GELU (no `quick_gelu`), in another
# shape (4-pixel patches, three 16-wide vision heads, a 3-block text tower of width 48).
GELU_CFG = dict(
    embed_dim=24,
    vision_cfg=dict(image_size=24, layers=2, width=48, head_width=16, patch_size=4),
    text_cfg=dict(context_length=CONTEXT, vocab_size=VOCAB, width=48, heads=3, layers=3),
)


def open_clip_fixture(out, model_cfg, reduced_precision):
    os.makedirs(out, exist_ok=True)
    model = open_clip.CLIP(**model_cfg).eval()
    perturb(model)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out, "open_clip_model.safetensors"))
    reduced = [("f16", torch.float16), ("bf16", torch.bfloat16)] if reduced_precision else []
    for name, dtype in reduced:
        save_file({k: v.to(dtype) for k, v in state.items()}, os.path.join(out, f"weights_{name}.safetensors"))
    with open(os.path.join(out, "open_clip_config.json"), "w") as f:
        json.dump(dict(model_cfg=model_cfg), f, indent=2)

    def run_tower(emb, eot):
        x = emb + model.positional_embedding
        x = model.transformer(x, attn_mask=model.attn_mask)
        pooled = x[torch.arange(x.shape[0]), eot]
        return model.ln_final(pooled) @ model.text_projection, pooled

    def qkv(block, normed):
        return F.linear(normed, block.attn.in_proj_weight, block.attn.in_proj_bias).detach()

    ref = {}
    names = dict(ln_1="ln_1", ln_2="ln_2", fc=lambda b: b.mlp.c_fc, qkv=qkv)
    heads = model_cfg["text_cfg"]["heads"]
    text_reference(ref, "text", run_tower, model.token_embedding, model.transformer.resblocks, heads, names)

    plain_ids, plain_eot = prompt_ids([torch.randint(1, VOCAB - 2, (n,)) for n in PLAIN_LENGTHS], 0)
    with torch.no_grad():
        ref["plain.ids"] = plain_ids
        ref["plain.eot"] = plain_eot
        ref["plain.features"] = model.encode_text(plain_ids)

    v = model.visual

    def hooks(rec):
        rec.output(v.conv1, "patch_embeds", lambda x: x.flatten(2).transpose(1, 2))
        rec.input(v.ln_pre, "embeddings")
        rec.output(v.ln_pre, "pre_norm")
        for i, block in enumerate(v.transformer.resblocks):
            rec.output(block, f"block{i}")
        rec.output(v.ln_post, "post_norm")

    side = model_cfg["vision_cfg"]["image_size"]
    images = torch.randn(IMAGES, 3, side, side)
    vision_reference(ref, images, hooks, model.encode_image, lambda rec: rec.values["post_norm"] @ v.proj)

    # The reduced-precision files, evaluated in f32 after rounding the weights as stored.
    for name, dtype in reduced:
        rounded = open_clip.CLIP(**model_cfg).eval()
        rounded.load_state_dict({k: t.to(dtype).float() for k, t in state.items()})
        with torch.no_grad():
            ref[f"{name}.plain_features"] = rounded.encode_text(plain_ids)
            ref[f"{name}.pooled"] = rounded.encode_image(images)
    save(ref, os.path.join(out, "reference.safetensors"))


# The ResNet fixture's dimensions.
RN_WIDTH, RN_LAYERS, RN_IMAGE, RN_HEADS, RN_EMBED = 6, (2, 1, 1, 1), 96, 2, 32
RN_POOL_WIDTH = 32 * RN_WIDTH


def conv_bn(c_in, c_out, kernel, stride=1):
    return (nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out))


class ResNetBottleneck(nn.Module):
    """CLIP's ModifiedResNet bottleneck: 1x1 -> 3x3 -> (avg-pool if strided) -> 1x1 (x4 channels),
    every convolution with stride 1 and followed by BN; the shortcut is the identity or, when the
    stride or width changes, avg-pool -> 1x1 conv -> BN; ReLU after the sum."""

    def __init__(self, c_in, planes, stride):
        super().__init__()
        self.stride = stride
        self.conv1, self.bn1 = conv_bn(c_in, planes, 1)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3)
        self.conv3, self.bn3 = conv_bn(planes, 4 * planes, 1)
        # OpenAI's checkpoints name the shortcut's convolution and BN downsample.0 and .1.
        self.downsample = nn.ModuleList(conv_bn(c_in, 4 * planes, 1)) if stride > 1 or c_in != 4 * planes else None

    def pool(self, x):
        return F.avg_pool2d(x, self.stride) if self.stride > 1 else x

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.pool(F.relu(self.bn2(self.conv2(h))))
        h = self.bn3(self.conv3(h))
        if self.downsample is not None:
            conv, bn = self.downsample
            x = bn(conv(self.pool(x)))
        return F.relu(h + x)


class AttentionPool(nn.Module):
    """CLIP's attention pool, with every token as a query: tokens [mean; positions] + positional
    embedding, multi-head attention (q/k/v projections with biases), c_proj on every output."""

    def __init__(self, positions, width, heads, out_dim):
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(positions + 1, width) / width**0.5)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width) for _ in range(3))
        self.c_proj = nn.Linear(width, out_dim)

    def tokens(self, x):
        x = x.flatten(2).transpose(1, 2)  # N, HW, C
        return torch.cat([x.mean(1, keepdim=True), x], 1) + self.positional_embedding

    def attend(self, t):
        n, l, c = t.shape

        def heads(y):
            return y.reshape(n, l, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = heads(self.q_proj(t)), heads(self.k_proj(t)), heads(self.v_proj(t))
        p = (q @ k.transpose(-1, -2) / (c // self.heads) ** 0.5).softmax(-1)
        return (p @ v).transpose(1, 2).reshape(n, l, c)


class ResNetTower(nn.Module):
    """CLIP's ModifiedResNet: a stem of three 3x3 conv-BN-ReLU (the first with stride 2) and a 2x2
    avg-pool, four stages of bottlenecks (width * 2^i planes; stages 2-4 start with stride 2),
    then the attention pool over the (image / 32)^2 positions."""

    def __init__(self, width, layers, image_size, heads, out_dim):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(3, width // 2, 3, stride=2)
        self.conv2, self.bn2 = conv_bn(width // 2, width // 2, 3)
        self.conv3, self.bn3 = conv_bn(width // 2, width, 3)
        c_in = width
        for stage, count in enumerate(layers):
            planes = width * 2**stage
            blocks = []
            for b in range(count):
                blocks.append(ResNetBottleneck(c_in, planes, 2 if stage > 0 and b == 0 else 1))
                c_in = 4 * planes
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.attnpool = AttentionPool((image_size // 32) ** 2, 32 * width, heads, out_dim)

    def forward_recorded(self, images):
        """Every intermediate (NCHW maps, then token rows), keyed as in reference.safetensors."""
        rec, x = {}, images
        for i, (conv, bn) in enumerate([(self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)]):
            x = F.relu(bn(conv(x)))
            rec[f"stem{i}"] = x
        x = F.avg_pool2d(x, 2)
        rec["stem_pool"] = x
        for stage in range(4):
            for b, block in enumerate(getattr(self, f"layer{stage + 1}")):
                x = block(x)
                rec[f"stage{stage}.block{b}"] = x
        t = self.attnpool.tokens(x)
        rec["pool_tokens"] = t
        a = self.attnpool.attend(t)
        rec["pool_attention"] = a
        rec["tokens"] = self.attnpool.c_proj(a)
        return rec


def randomise_resnet(tower):
    """He-normal convolutions (activations stay O(1)), and batch-norms with non-trivial affine
    parameters and running statistics, so that a swapped mean and variance cannot pass."""
    with torch.no_grad():
        for m in tower.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, nn.Linear):
                m.bias.normal_(0, 0.05)


def resnet_fixture(out):
    os.makedirs(out, exist_ok=True)
    model_cfg = dict(
        embed_dim=RN_EMBED,
        quick_gelu=True,
        vision_cfg=dict(image_size=RN_IMAGE, layers=list(RN_LAYERS), width=RN_WIDTH,
                        head_width=RN_POOL_WIDTH // RN_HEADS),
        text_cfg=dict(context_length=CONTEXT, vocab_size=VOCAB, width=32, heads=2, layers=1),
    )
    # open_clip's CLIP supplies the text tower and, loaded with our weights, the standard
    # `encode_image` (attention pool queried by the mean token only).
    clip = open_clip.CLIP(**model_cfg).eval()
    perturb(clip)
    tower = ResNetTower(RN_WIDTH, RN_LAYERS, RN_IMAGE, RN_HEADS, RN_EMBED).eval()
    randomise_resnet(tower)
    state = {k: v for k, v in clip.state_dict().items() if not k.startswith("visual.")}
    state.update({f"visual.{k}": v for k, v in tower.state_dict().items()})
    state = {k: v.detach().contiguous() for k, v in state.items()}
    clip.load_state_dict(state)  # strict: our tower has exactly the OpenAI layout's tensors
    save_file(state, os.path.join(out, "open_clip_model.safetensors"))
    with open(os.path.join(out, "open_clip_config.json"), "w") as f:
        json.dump(dict(model_cfg=model_cfg), f, indent=2)

    images = torch.randn(IMAGES, 3, RN_IMAGE, RN_IMAGE)
    plain_ids, plain_eot = prompt_ids([torch.randint(1, VOCAB - 2, (n,)) for n in PLAIN_LENGTHS], 0)
    with torch.no_grad():
        rec = tower.forward_recorded(images)
        pooled = clip.encode_image(images)
        plain = clip.encode_text(plain_ids)
    err = (rec["tokens"][:, 0] - pooled).abs().max() / pooled.abs().max()
    assert err < 1e-5, f"all-positions token 0 differs from encode_image by {err:.2e}"
    ref = {"vision.images": images, "vision.pooled": pooled,
           "plain.ids": plain_ids, "plain.eot": plain_eot, "plain.features": plain}
    ref.update({f"vision.{k}": v for k, v in rec.items()})
    save(ref, os.path.join(out, "reference.safetensors"))


# The timm fixture: vit_base_patch16_224 with only its sizes changed, registered under its own name
# so that open_clip's TimmModel (which takes a timm model name) builds it with its own head.
TIMM_SIZES = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4)
TIMM_EMBED = 16
TIMM_NAME = "fedotp_fixture_vit_base_patch16_224"


@register_model
def fedotp_fixture_vit_base_patch16_224(pretrained=False, **kwargs):
    """timm's vit_base_patch16_224, every setting but the sizes in TIMM_SIZES unchanged."""
    return timm.create_model("vit_base_patch16_224", pretrained=pretrained, **{**TIMM_SIZES, **kwargs})


def randomise_timm(trunk):
    """Random weights of the scales a trained ViT's first layers have: a small patch embedding
    and positions (so the first LayerNorms see small variances, where their eps of 1e-6 and not
    1e-5 matters), LayerNorm scales in [0.5, 1.5], and non-zero biases everywhere."""
    with torch.no_grad():
        for name, p in trunk.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.normal_(0, 0.02 if name.startswith("patch_embed") else 0.1)
            elif name in ("cls_token", "pos_embed"):
                p.normal_(0, 0.02)
            elif name == "patch_embed.proj.weight":
                p.normal_(0, 0.01)
            else:
                p.normal_(0, p.shape[-1] ** -0.5)


def timm_fixture(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(4)
    model_cfg = dict(
        embed_dim=TIMM_EMBED,
        vision_cfg=dict(timm_model_name=TIMM_NAME, timm_model_pretrained=False, timm_pool="",
                        timm_proj="linear", image_size=TIMM_SIZES["img_size"]),
        text_cfg=dict(context_length=8, vocab_size=64, width=16, heads=2, layers=1),
    )
    model = open_clip.CLIP(**model_cfg).eval()
    v, trunk = model.visual, model.visual.trunk
    # BiomedCLIP's settings, as vit_base_patch16_224 and TimmModel(pool="") give them.
    assert isinstance(v, open_clip.timm_model.TimmModel)
    assert trunk.global_pool == "token" and trunk.has_class_token and trunk.num_prefix_tokens == 1
    assert not trunk.no_embed_class and not trunk.dynamic_img_size
    for identity in (trunk.norm_pre, trunk.fc_norm, trunk.head, trunk.blocks[0].ls1, trunk.blocks[0].ls2):
        assert isinstance(identity, nn.Identity), identity
    assert trunk.patch_embed.proj.bias is not None and v.head.proj.bias is None
    assert trunk.norm.eps == 1e-6 and all(b.norm1.eps == b.norm2.eps == 1e-6 for b in trunk.blocks)
    assert all(isinstance(b.mlp.act, nn.GELU) and b.mlp.act.approximate == "none" for b in trunk.blocks)
    perturb(model)
    randomise_timm(trunk)
    state = {k: t.detach().contiguous() for k, t in model.state_dict().items()}
    save_file(state, os.path.join(out, "open_clip_model.safetensors"))

    def hooks(rec):
        rec.output(trunk.patch_embed, "patch_embeds")
        rec.input(trunk.norm_pre, "embeddings")
        rec.output(trunk.norm_pre, "pre_norm")
        for i, block in enumerate(trunk.blocks):
            rec.output(block, f"block{i}")
        rec.output(trunk.norm, "post_norm")

    side = TIMM_SIZES["img_size"]
    images = torch.randn(IMAGES, 3, side, side)
    ref = {}
    vision_reference(ref, images, hooks, model.encode_image, lambda rec: v.head.proj(rec.values["post_norm"]))
    err = (ref["vision.tokens"][:, 0] - ref["vision.pooled"]).abs().max() / ref["vision.pooled"].abs().max()
    assert err < 1e-6, f"the class token's projected row differs from encode_image by {err:.2e}"
    save(ref, os.path.join(out, "reference.safetensors"))


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    hf_fixture(os.path.join(OUT, "hf"))
    open_clip_fixture(os.path.join(OUT, "openai"), OPENAI_CFG, reduced_precision=True)
    resnet_fixture(os.path.join(OUT, "rn"))
    # Last, so the fixtures above keep their random draws.
    open_clip_fixture(os.path.join(OUT, "gelu"), GELU_CFG, reduced_precision=False)
    timm_fixture(os.path.join(OUT, "timm"))
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
