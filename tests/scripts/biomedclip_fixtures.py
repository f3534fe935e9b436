#!/usr/bin/env python3
"""Reference fixture for a whole BiomedCLIP-architecture model (host/tests/fixtures/biomedclip/).

BiomedCLIP (`microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`) is an open_clip
`CustomTextCLIP`: a timm ViT-B/16 image tower (`TimmModel`, `timm_pool: ""`, `timm_proj:
"linear"`) and a PubMedBERT text tower (`HFTextEncoder`, `cls_last_hidden_state_pooler`,
`hf_proj_type: "mlp"`, context 256), tokenized by open_clip's `HFTokenizer` (transformers'
uncased `BertTokenizer`). This script builds that model, tiny and random, with open_clip itself:
`open_clip.create_model("local-dir:…")` on an `open_clip_config.json` shaped exactly like the
hub's, whose `hf_model_name` / `hf_tokenizer_name` point at a temporary folder holding the BERT
`config.json`, `vocab.txt` and `tokenizer_config.json` (no network; `pretrained_text=False`, so
open_clip calls `AutoModel.from_config(…, add_pooling_layer=False)` as it does for BiomedCLIP:
there are no BERT pooler tensors), and `open_clip.get_tokenizer` on the same folder.
The tokenizer_config.json there is {"tokenizer_class": "BertTokenizer", "do_lower_case": true,
"strip_accents": null}: BiomedBERT's uncased tokenizer, accents stripped because lower-casing is
on (null follows do_lower_case); BertTokenizer's defaults are the same, so it gives the same ids
without the file, as a folder with only config.json and vocab.txt would.

  image tower  timm model `vit_base_patch4_16`, registered here: timm's `vit_base_patch16_224`
               with only its sizes changed (16 px images, 4-pixel patches, width 48 in 12 heads
               of 4, 2 blocks; the name's "base" is what gives the loader 12 heads); every other
               setting timm's (patch convolution with bias, class token, no pre-norm, LayerNorm
               eps 1e-6, exact GELU, class-token pooling after the final norm); `head.proj`
               48 -> 32 without bias
  text tower   transformers `BertConfig`: vocabulary = vocab.txt (64 tokens), width 48 in 4 heads,
               2 layers, MLP 96, 300 positions (>= the context 256), 2 token types, LayerNorm eps
               1e-12, exact GELU, [PAD] = 0, no dropout, eager attention; projection MLP
               48 -> 40 -> 32 (GELU, no biases)
  logit_scale  ln(50), not open_clip's default ln(1/0.07)

Every parameter is drawn away from its initial value (the ViT as clip_fixtures.py's
`randomise_timm`, BERT as bert_fixtures.py: σ 0.02 embeddings, so the embedding LayerNorm's eps
matters), rounded to f32 (what the Rust side reads); the reference then runs in float64 on those
rounded values (inputs rounded to f32 too), so the recorded numbers carry no f32 error of their
own.

host/tests/fixtures/biomedclip/
  open_clip_config.json        the hub file's shape: model_cfg (embed_dim 32, vision_cfg, text_cfg
                               with hf_model_name = hf_tokenizer_name =
                               "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract", as
                               BiomedCLIP's says, context 256) and preprocess_cfg (CLIP's mean and
                               std). fedotp downloads nothing: it reads config.json and vocab.txt
                               from this directory instead.
  config.json                  the BERT config (`BertConfig.to_json_file`)
  vocab.txt                    the uncased WordPiece vocabulary: [PAD] [UNK] [CLS] [SEP] [MASK],
                               '.', ',', '-', the letters a-z, 'œ', words and ## pieces; no
                               '##' letters, so an unknown word is one [UNK]
  classnames.txt               the class names, one a line, in the order of the prompts
  open_clip_model.safetensors  the model's state_dict (f32), written by
                               tools/open_clip_to_safetensors.py from an
                               open_clip_pytorch_model.bin this script saves with torch.save in
                               a temporary directory, as a user converts the hub's file. Like
                               BiomedCLIP's hub file (saved with transformers < 4.31), that .bin
                               also holds the integer `text.transformer.embeddings.position_ids`
                               [1, 300], which the conversion drops. The .bin and the
                               safetensors are both loaded back with open_clip's own
                               `create_model("local-dir:…")` and checked equal to the model.
  reference.safetensors        f32; ids as i64:
    images           [3, 3, 16, 16]   preprocessed pixels (random normal)
    image_tokens     [3, 17, 32]      `visual.head` (i.e. head.proj) on every token of
                                      `trunk.forward_features` (which ends with trunk.norm)
    image_features   [3, 32]          `model.encode_image(images)`, = image_tokens[:, 0] (asserted)
    plain.ids        [4, 256]         the tokenizer on PLAIN_TEXTS (with [CLS], [SEP], [PAD] = 0)
    plain.features   [4, 32]          `model.encode_text(plain.ids)` (not normalised)
    ctx              [2, 3, 48]       two context sets (global, local), σ 0.02
    prompt.ids       [12, 256]        CoOp's prompts "X X X {name}." for every set and class,
                                      set-major (row s·C + c), class names with '_' read as ' '
    prompt.features  [12, 32]         the text tower on word_embeddings(prompt.ids) with positions
                                      1..=3 replaced by ctx[s], attention mask ids != [PAD]
                                      (HF BertModel on inputs_embeds, no token_type_ids; the
                                      HFTextEncoder's pooler and proj)
    prompt.unit_features [12, 32]     prompt.features L2-normalised
    d_unit           [12, 32]         weights of the scalar loss sum(unit_features * d_unit)
    d_ctx            [2, 3, 48]       its gradient with respect to ctx (autograd, float64)
    logit_scale      []               the model's stored logit_scale (ln 50)

Checks made here, which fail the script: every class name and text tokenizes to the ids written
below (no [UNK] but the deliberate ones); encode_image is the class token's row of image_tokens;
each padded prompt's features equal the same prompt run unpadded (1e-12); the spliced-embedding
path with the "x" embeddings in place of the context equals open_clip's encode_text on the ids;
the converted safetensors and the .bin load back through open_clip to the same outputs.

Run from the repository root:  python3 tests/scripts/biomedclip_fixtures.py
(torch, timm, transformers, open_clip_torch and safetensors from requirements.txt; CPU,
deterministic, a few seconds).
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import open_clip
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.models import register_model
from torch import nn
from transformers import BertConfig

from clip_fixtures import randomise_timm

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "host", "tests", "fixtures", "biomedclip")
CONVERT = os.path.join(ROOT, "tools", "open_clip_to_safetensors.py")
HUB_BERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"

EMBED, CONTEXT = 32, 256
TIMM_NAME = "vit_base_patch4_16"
TIMM_SIZES = dict(img_size=16, patch_size=4, embed_dim=48, depth=2, num_heads=12)
WIDTH, HEADS, LAYERS, MLP, POSITIONS = 48, 4, 2, 96, 300
N_CTX, N_SETS, IMAGES = 3, 2, 3
LOGIT_SCALE = math.log(50.0)
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP = 0, 1, 2, 3
WORDS = [
    "the", "of", "and", "in", "on", "no", "with", "photo", "image", "chest", "ray", "scan", "ct",
    "normal", "pneumonia", "lung", "opacity", "effusion", "pleur", "cardio", "small", "left",
    "right", "show", "##megaly", "##s", "##ing", "##al", "##deme",
]
VOCAB = SPECIALS + [".", ",", "-"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["œ"] + WORDS

# Class names and the WordPiece pieces each must give (without [CLS] / [SEP]).
CLASSES = [
    ("normal", ["normal"]),
    ("Pneumonia", ["pneumonia"]),                        # upper case
    ("pleural effusion", ["pleur", "##al", "effusion"]),  # two words, one in pieces
    ("cardiomegaly", ["cardio", "##megaly"]),             # word pieces
    ("lung_opacity", ["lung", "opacity"]),                # '_' read as ' ', as CoOp does
    ("Œdème", ["œ", "##deme"]),                           # upper case and an accent: œdeme
]
PLAIN_TEXTS = [
    ("a chest x-ray", ["a", "chest", "x", "-", "ray"]),
    ("Normal lungs.", ["normal", "lung", "##s", "."]),
    ("Showing a small left pleural effusion, and cardiomegaly",
     ["show", "##ing", "a", "small", "left", "pleur", "##al", "effusion", ",", "and", "cardio",
      "##megaly"]),
    ("No opacities in the right lung", ["no", "[UNK]", "in", "the", "right", "lung"]),  # deliberate [UNK]
]

torch.manual_seed(0)
torch.set_num_threads(1)


@register_model
def vit_base_patch4_16(pretrained=False, **kwargs):
    """timm's vit_base_patch16_224, every setting but the sizes in TIMM_SIZES unchanged."""
    return timm.create_model("vit_base_patch16_224", pretrained=pretrained, **{**TIMM_SIZES, **kwargs})


def bert_config():
    return BertConfig(
        vocab_size=len(VOCAB), hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=MLP, max_position_embeddings=POSITIONS, type_vocab_size=2,
        layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=PAD,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager",
    )


def open_clip_config(bert):
    return {
        "model_cfg": {
            "embed_dim": EMBED,
            "vision_cfg": {"timm_model_name": TIMM_NAME, "timm_model_pretrained": False,
                           "timm_pool": "", "timm_proj": "linear", "image_size": TIMM_SIZES["img_size"]},
            "text_cfg": {"hf_model_name": bert, "hf_tokenizer_name": bert, "hf_proj_type": "mlp",
                         "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": CONTEXT},
        },
        "preprocess_cfg": {"mean": MEAN, "std": STD},
    }


def write_json(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_model_dir(directory):
    """The files open_clip and transformers need to build the model and tokenizer offline."""
    bert_config().to_json_file(os.path.join(directory, "config.json"))
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(VOCAB) + "\n")
    # BiomedBERT's tokenizer: uncased BertTokenizer; strip_accents None follows do_lower_case.
    write_json({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "strip_accents": None},
               os.path.join(directory, "tokenizer_config.json"))
    write_json(open_clip_config(directory), os.path.join(directory, "open_clip_config.json"))


def randomise_bert(text):
    """bert_fixtures.py's draws: LayerNorm scales 1 ± 0.2, biases σ 0.1, embeddings σ 0.02,
    linear weights of unit gain."""
    for name, p in text.named_parameters():
        if "LayerNorm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.2 * torch.randn_like(p))
        elif name.endswith("bias"):
            p.copy_(0.1 * torch.randn_like(p))
        elif "embeddings" in name:
            p.copy_(0.02 * torch.randn_like(p))
        else:
            p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)


def build(model_dir):
    model = open_clip.create_model("local-dir:" + model_dir, pretrained_text=False).eval()
    tokenizer = open_clip.get_tokenizer("local-dir:" + model_dir)
    v, trunk, text = model.visual, model.visual.trunk, model.text
    assert type(model).__name__ == "CustomTextCLIP", type(model)
    assert isinstance(v, open_clip.timm_model.TimmModel) and isinstance(text, open_clip.hf_model.HFTextEncoder)
    assert isinstance(tokenizer, open_clip.tokenizer.HFTokenizer) and tokenizer.context_length == CONTEXT
    bert = tokenizer.tokenizer
    assert type(bert).__name__ == "BertTokenizer" and bert.do_lower_case, type(bert)
    # BiomedCLIP's image-tower settings, as vit_base_patch16_224 and TimmModel(pool="") give them.
    assert trunk.global_pool == "token" and trunk.has_class_token and trunk.num_prefix_tokens == 1
    assert trunk.embed_dim == WIDTH and len(trunk.blocks) == 2 and trunk.blocks[0].attn.num_heads == 12
    for identity in (trunk.norm_pre, trunk.fc_norm, trunk.head, trunk.blocks[0].ls1, trunk.blocks[0].ls2):
        assert isinstance(identity, nn.Identity), identity
    assert trunk.patch_embed.proj.bias is not None and v.head.proj.bias is None
    assert trunk.norm.eps == 1e-6 and all(b.norm1.eps == b.norm2.eps == 1e-6 for b in trunk.blocks)
    # The text tower: no BERT pooler (open_clip builds BiomedCLIP's without), MLP projection.
    assert not hasattr(text.transformer, "pooler") or text.transformer.pooler is None
    assert type(text.pooler).__name__ == "ClsLastHiddenStatePooler"
    assert [tuple(m.weight.shape) for m in (text.proj[0], text.proj[2])] == [
        ((WIDTH + EMBED) // 2, WIDTH), (EMBED, (WIDTH + EMBED) // 2)]
    assert text.proj[0].bias is None and text.proj[2].bias is None
    text.transformer.set_attn_implementation("eager")
    assert text.transformer.config._attn_implementation == "eager"
    with torch.no_grad():
        randomise_timm(trunk)
        v.head.proj.weight.normal_(0, WIDTH ** -0.5)
        randomise_bert(text)
        model.logit_scale.fill_(LOGIT_SCALE)
        for p in model.parameters():
            p.copy_(p.float())  # the values the f32 file holds
    return model, tokenizer


def check_tokens(tokenizer, text, pieces):
    """The ids of `text` (CoOp's '_' -> ' '), checked against the expected pieces."""
    ids = tokenizer([text])[0]
    n = int((ids != PAD).sum())
    assert ids[0] == CLS and ids[n - 1] == SEP and (ids[n:] == PAD).all(), ids[: n + 1]
    got = [VOCAB[i] for i in ids[1 : n - 1].tolist()]
    assert got == pieces, (text, got, pieces)
    return ids


def text_features(text, emb, mask):
    """HFTextEncoder.forward from embeddings instead of ids: its transformer, pooler and proj."""
    out = text.transformer(inputs_embeds=emb, attention_mask=mask)
    return text.proj(text.pooler(out, mask))


def convert(model, work):
    """torch.save the state dict as the hub's .bin (with BiomedCLIP's stale position_ids buffer),
    convert it with the user-facing tool, and check that open_clip loads both to the model."""
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    stale = torch.arange(POSITIONS).unsqueeze(0)
    hub = dict(state, **{"text.transformer.embeddings.position_ids": stale})
    torch.save(hub, os.path.join(work, "open_clip_pytorch_model.bin"))
    subprocess.run([sys.executable, CONVERT, work], check=True)
    converted = load_file(os.path.join(work, "open_clip_model.safetensors"))
    assert converted.keys() == state.keys() and all(torch.equal(converted[k], state[k]) for k in state)
    assert all(t.dtype == torch.float32 for t in converted.values())
    return converted


def reload_check(model_dir, checkpoint, reference_model, images, ids):
    """open_clip's own create_model("local-dir:") on `checkpoint` gives the model's outputs."""
    with tempfile.TemporaryDirectory() as d:
        for f in ("config.json", "vocab.txt", "tokenizer_config.json"):
            shutil.copy(os.path.join(model_dir, f), d)
        write_json(open_clip_config(d), os.path.join(d, "open_clip_config.json"))
        shutil.copy(checkpoint, d)
        loaded = open_clip.create_model("local-dir:" + d).eval()
    loaded.text.transformer.set_attn_implementation("eager")
    with torch.no_grad():
        a = (loaded.encode_image(images.float()), loaded.encode_text(ids))
        b = (reference_model.encode_image(images.float()), reference_model.encode_text(ids))
    err = max((x - y).abs().max().item() for x, y in zip(a, b))
    assert err == 0, f"{os.path.basename(checkpoint)} loads to different outputs ({err:.2e})"
    return err


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    maxima = {}
    with tempfile.TemporaryDirectory() as work:
        model_dir = os.path.join(work, "bert")
        os.makedirs(model_dir)
        write_model_dir(model_dir)
        model, tokenizer = build(model_dir)

        # The tokenizer on the class names and texts.
        names = [name for name, _ in CLASSES]
        for name, pieces in CLASSES:
            check_tokens(tokenizer, name.replace("_", " "), pieces)
        plain_ids = torch.stack([check_tokens(tokenizer, t, p) for t, p in PLAIN_TEXTS])
        prompt_rows = [check_tokens(tokenizer, " ".join(["X"] * N_CTX) + " " + name.replace("_", " ") + ".",
                                    ["x"] * N_CTX + pieces + ["."]) for name, pieces in CLASSES]
        prompt_ids = torch.stack(prompt_rows * N_SETS)  # set-major

        # The f32 model as the hub ships it, converted by the tool; open_clip loads both back.
        bin_dir = os.path.join(work, "hub")
        os.makedirs(bin_dir)
        converted = convert(model, bin_dir)
        shutil.copy(os.path.join(bin_dir, "open_clip_model.safetensors"), OUT)
        images = torch.randn(IMAGES, 3, TIMM_SIZES["img_size"], TIMM_SIZES["img_size"]).float().double()
        for f in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors"):
            maxima[f"reload {f}"] = reload_check(model_dir, os.path.join(bin_dir, f), model, images,
                                                 plain_ids)

        for f in ("config.json", "vocab.txt"):
            shutil.copy(os.path.join(model_dir, f), OUT)
        write_json(open_clip_config(HUB_BERT), os.path.join(OUT, "open_clip_config.json"))
        with open(os.path.join(OUT, "classnames.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(names) + "\n")

    model = model.double()
    v, text = model.visual, model.text
    ref = {"images": images}
    with torch.no_grad():
        tokens = v.head(v.trunk.forward_features(images))
        pooled = model.encode_image(images)
        maxima["image_tokens[:, 0] - image_features"] = (tokens[:, 0] - pooled).abs().max().item()
        assert maxima["image_tokens[:, 0] - image_features"] < 1e-12 * pooled.abs().max()
        ref["image_tokens"], ref["image_features"] = tokens, pooled
        ref["plain.ids"], ref["plain.features"] = plain_ids, model.encode_text(plain_ids)

    # Prompt learning as CoOp does it, with two context sets.
    ctx = (0.02 * torch.randn(N_SETS, N_CTX, WIDTH)).float().double().requires_grad_()
    sets = torch.arange(N_SETS).repeat_interleave(len(CLASSES))
    mask = (prompt_ids != PAD).long()
    words = text.transformer.embeddings.word_embeddings(prompt_ids)
    emb = torch.cat([words[:, :1], ctx[sets], words[:, 1 + N_CTX :]], dim=1)
    feats = text_features(text, emb, mask)
    unit = F.normalize(feats, dim=-1)
    d_unit = torch.randn_like(unit)
    (unit * d_unit).sum().backward()

    with torch.no_grad():
        # Padding with the mask = each prompt run unpadded.
        scale = feats.abs().max()
        alone = torch.cat([text_features(text, emb[i : i + 1, : int(mask[i].sum())], None)
                           for i in range(len(prompt_ids))])
        maxima["padded - unpadded prompt features"] = (feats - alone).abs().max().item()
        assert maxima["padded - unpadded prompt features"] < 1e-12 * scale, "padding changed features"
        # The splice path is open_clip's own forward when the context is the "x" embeddings.
        mine = text_features(text, words, mask)
        maxima["spliced path - encode_text (x context)"] = (mine - model.encode_text(prompt_ids)).abs().max().item()
        assert maxima["spliced path - encode_text (x context)"] < 1e-12 * scale

    ref.update({
        "ctx": ctx, "prompt.ids": prompt_ids, "prompt.features": feats, "prompt.unit_features": unit,
        "d_unit": d_unit, "d_ctx": ctx.grad, "logit_scale": model.logit_scale,
    })
    assert ref["logit_scale"].shape == () and abs(ref["logit_scale"].item() - LOGIT_SCALE) < 1e-6
    assert converted["logit_scale"].item() == ref["logit_scale"].item()
    save_file({k: (v.detach().float() if v.is_floating_point() else v.long()).contiguous()
               for k, v in ref.items()}, os.path.join(OUT, "reference.safetensors"))

    for k, m in maxima.items():
        print(f"  max |{k}| = {m:.3e}")
    lengths = mask[: len(CLASSES)].sum(1).tolist()
    print("  prompt lengths (with [CLS], [SEP]):", dict(zip(names, lengths)))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({total / 1e3:.0f} KB)")


if __name__ == "__main__":
    main()
