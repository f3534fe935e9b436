#!/usr/bin/env python3
"""Reference fixture for the Rust BERT text tower (host/tests/bert_parity.rs).

BiomedCLIP's text tower is open_clip's `HFTextEncoder` around a Hugging Face `BertModel`
(PubMedBERT), pooled with `cls_last_hidden_state_pooler` and projected with `proj_type = "mlp"`.
This script builds that exact module, small and random — open_clip's own `HFTextEncoder`
constructed from a `transformers.BertConfig` (no network: `config=` given, so open_clip calls
`AutoModel.from_config`, which also builds BERT's unused pooler; its tensors are kept in the file,
as a checkpoint may hold them) — with vocabulary 120, width 48 in 4 heads of 12, 2 layers, MLP
width 96, 64 positions, joint width 32 (projection hidden width (48 + 32) // 2 = 40). Every
weight, bias and LayerNorm parameter is drawn away from its initial value so that a swapped
weight and bias, a missing LayerNorm scale or a missing token-type embedding cannot pass; the
embeddings (and context) have BERT's scale, σ 0.02, so the embedding LayerNorm's input variance is
about 1e-3 and its eps (1e-12) cannot be confused with CLIP's 1e-5.

The weights are rounded to f32 (what the Rust side reads) and the reference then runs in float64
on those rounded values, so the recorded numbers carry no f32 error of their own.

host/tests/fixtures/bert/
  open_clip_model.safetensors   the tower's state_dict under open_clip's names (`text.*`), f32
  reference.safetensors         inputs and outputs (f32; ids and sets as i64):
    ctx                   [2, 3, 48]  two sets of 3 context vectors
    {a,b}.ids, {a,b}.set  two groups of prompts "[CLS] ctx(3) tokens [SEP]", one length per group
                          (a: 7 tokens, 4 prompts; b: 10 tokens, 2 prompts); `set` is each
                          prompt's context set; ids at the context positions are a placeholder
    {a,b}.embeddings      word embeddings with the context spliced in at positions 1..=3
    {a,b}.hidden{l}       HF's hidden_states[l] of the group run on its own (l = 0: embeddings
                          after LayerNorm, l = 2: last_hidden_state)
    {a,b}.features        that run's projected CLS features
    padded.ids, .mask     both groups in one batch padded to 10 tokens with [PAD] = 0, and the
                          attention mask open_clip builds (ids != pad_token_id)
    padded.features       features of the padded run (equal to the groups' run: masked keys
                          contribute nothing; asserted here to 1e-12)
    d_features            [6, 32] weights of the scalar loss sum(features * d_features)
    padded.d_embeddings   its gradient with respect to the padded embeddings (zero on padding)
    d_ctx                 its gradient with respect to the context
    plain.ids             padded token ids without context (lengths 5 and 8), and
    plain.features        open_clip's own `HFTextEncoder.forward(ids)` on them: an end-to-end
                          check of the loader and of the pooling and projection

Run from the repository root:  python3 tests/scripts/bert_fixtures.py
(torch, transformers and open_clip_torch from requirements.txt; CPU, deterministic, a second).
"""

import os
import shutil

import torch
from open_clip.hf_model import HFTextEncoder
from safetensors.torch import save_file
from transformers import BertConfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "host", "tests", "fixtures", "bert")
VOCAB, WIDTH, HEADS, LAYERS, MLP, POSITIONS, EMBED = 120, 48, 4, 2, 96, 64, 32
PAD, CLS, SEP, PLACEHOLDER = 0, 2, 3, 4  # PubMedBERT's [PAD], [CLS], [SEP], [MASK]
N_CTX, N_SETS = 3, 2
GROUPS = {"a": [2, 2], "b": [5]}  # class-token counts per group (one length per group)
PLAIN_LENGTHS = [5, 5, 8]  # tokens between [CLS] and [SEP] of plain prompts

torch.manual_seed(0)
torch.set_num_threads(1)


def build():
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=MLP, max_position_embeddings=POSITIONS, type_vocab_size=2,
        layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=PAD,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    encoder = HFTextEncoder(
        "bert-fixture", output_dim=EMBED, config=config,
        pooler_type="cls_last_hidden_state_pooler", proj_type="mlp", pretrained=False,
    )
    assert [tuple(m.weight.shape) for m in (encoder.proj[0], encoder.proj[2])] == [
        ((WIDTH + EMBED) // 2, WIDTH), (EMBED, (WIDTH + EMBED) // 2)]
    assert encoder.proj[0].bias is None and encoder.proj[2].bias is None
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if "LayerNorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "embeddings" in name:  # BERT-like scale: LayerNorm's eps then matters
                p.copy_(0.02 * torch.randn_like(p))
            else:  # linear weights, scaled so attention is far from uniform
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
            p.copy_(p.float())  # the values the f32 file holds
    return encoder.eval().double()


def splice(encoder, ids, ctx, sets):
    emb = encoder.transformer.embeddings.word_embeddings(ids)
    return torch.cat([emb[:, :1], ctx[sets], emb[:, 1 + N_CTX :]], dim=1)


def features(encoder, emb, mask=None, hidden=False):
    """open_clip's HFTextEncoder.forward from embeddings instead of ids."""
    out = encoder.transformer(inputs_embeds=emb, attention_mask=mask, output_hidden_states=hidden)
    return encoder.proj(encoder.pooler(out, mask)), out


def group_ids(lengths):
    """Prompts "[CLS] ctx tokens [SEP]" of one length for every context set, set-major."""
    tokens = [torch.randint(5, VOCAB, (n,)) for n in lengths]
    rows, sets = [], []
    for k in range(N_SETS):
        for t in tokens:
            rows.append(torch.cat([torch.tensor([CLS] + [PLACEHOLDER] * N_CTX), t, torch.tensor([SEP])]))
            sets.append(k)
    return torch.stack(rows), torch.tensor(sets)


def pad(rows, length):
    return torch.stack([torch.cat([r, torch.full((length - len(r),), PAD)]) for r in rows])


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    encoder = build()
    state = {f"text.{k}": v.float().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, os.path.join(OUT, "open_clip_model.safetensors"))

    ref = {}
    ctx = (0.02 * torch.randn(N_SETS, N_CTX, WIDTH)).float().double().requires_grad_()
    ref["ctx"] = ctx
    groups, all_feats = [], []
    for g, lengths in GROUPS.items():
        ids, sets = group_ids(lengths)
        with torch.no_grad():
            emb = splice(encoder, ids, ctx, sets)
            feats, out = features(encoder, emb, hidden=True)
        ref[f"{g}.ids"], ref[f"{g}.set"], ref[f"{g}.embeddings"] = ids, sets, emb
        for layer, h in enumerate(out.hidden_states):
            ref[f"{g}.hidden{layer}"] = h
        ref[f"{g}.features"] = feats
        groups.append((ids, sets))
        all_feats.append(feats)

    # Both groups as one padded batch with open_clip's attention mask.
    length = max(ids.shape[1] for ids, _ in groups)
    ids = pad([r for ids, _ in groups for r in ids], length)
    sets = torch.cat([s for _, s in groups])
    mask = (ids != PAD).long()
    emb = splice(encoder, ids, ctx, sets)
    emb.retain_grad()
    feats, _ = features(encoder, emb, mask)
    d_features = torch.randn_like(feats)
    (feats * d_features).sum().backward()
    grouped = torch.cat(all_feats)
    assert (feats - grouped).abs().max() < 1e-12 * grouped.abs().max(), "padding changed features"
    assert (emb.grad[mask == 0] == 0).all(), "padding received gradient"
    ref["padded.ids"], ref["padded.mask"] = ids, mask
    ref["padded.features"] = feats.detach()
    ref["d_features"] = d_features
    ref["padded.d_embeddings"] = emb.grad
    ref["d_ctx"] = ctx.grad

    # Plain prompts through open_clip's own forward on token ids.
    plain = [torch.cat([torch.tensor([CLS]), torch.randint(5, VOCAB, (n,)), torch.tensor([SEP])])
             for n in PLAIN_LENGTHS]
    plain_ids = pad(plain, max(PLAIN_LENGTHS) + 2)
    with torch.no_grad():
        ref["plain.ids"] = plain_ids
        ref["plain.features"] = encoder(plain_ids)

    save_file({k: (v.detach().float() if v.is_floating_point() else v).contiguous()
               for k, v in ref.items()}, os.path.join(OUT, "reference.safetensors"))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({total / 1e3:.0f} KB)")


if __name__ == "__main__":
    main()
