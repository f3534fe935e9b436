//! Every layer of both towers, and the text tower's input gradient, against PyTorch: a
//! Hugging Face `CLIPModel`, an open_clip (OpenAI layout) ViT CLIP and an OpenAI-layout CLIP with
//! a ModifiedResNet image tower, small and random, recorded by `tests/scripts/clip_fixtures.py`;
//! and open_clip's timm image tower (BiomedCLIP's) against timm and open_clip.
//! Run with `--nocapture` to see each layer's error.

use fedotp_host::backend::{Activation, Backend, Cpu, LayerNorm};
use fedotp_host::clip::{
    text_backward, text_forward, vision_forward, vision_forward_inspect, ClipWeights, PromptBatch,
    SpecialTokens, TextActivations, TextTower, VisionStage, VisionWeights, VitConfig, VitStyle,
    VitWeights, CLIP_LAYER_NORM_EPS, TIMM_LAYER_NORM_EPS,
};
use fedotp_tests::compare::{assert_close, max_relative_error};
use fedotp_tests::fixtures::{fixture, Reference};

/// Forward tolerance (max-norm relative, f32).
const FORWARD_TOL: f64 = 1e-5;
/// Gradient tolerance.
const GRAD_TOL: f64 = 1e-4;
/// Special tokens of the fixtures' 600-token vocabulary.
const SPECIAL: SpecialTokens = SpecialTokens {
    start: 598,
    end: 599,
};
const N_CTX: usize = 4;
const N_SETS: usize = 2;
const CONTEXT: usize = 77;

type Weights = ClipWeights<Vec<f32>>;

fn load(dir: &str) -> Weights {
    ClipWeights::load(fixture("clip").join(dir)).expect("fixture loads")
}

/// The PyTorch tensors recorded for the CLIP fixture `dir`.
fn reference(dir: &str) -> Reference {
    Reference::open(fixture("clip").join(dir).join("reference.safetensors"))
}

/// The first `keep` rows of each of `batch` sequences of `seq` rows of `width` values.
fn truncate(values: &[f32], batch: usize, seq: usize, keep: usize, width: usize) -> Vec<f32> {
    (0..batch)
        .flat_map(|s| values[s * seq * width..][..keep * width].iter().copied())
        .collect()
}

/// The tokens between position `1 + n_ctx` and the EOT of each of the first `n` sequences.
fn class_tokens(r: &Reference, prefix: &str, n: usize, n_ctx: usize) -> Vec<Vec<u32>> {
    let (ids, shape) = r.ids(&format!("{prefix}.ids"));
    let (eot, _) = r.ids(&format!("{prefix}.eot"));
    (0..n)
        .map(|s| ids[s * shape[1] + 1 + n_ctx..s * shape[1] + eot[s] as usize].to_vec())
        .collect()
}

fn check_text(dir: &str) {
    let cpu = Cpu::new();
    let w = load(dir);
    let r = reference(dir);
    let tower = &w.text;
    let TextTower::Clip(text) = tower else {
        unreachable!("the fixtures' text towers are CLIP's")
    };
    let width = text.config.width;
    let (eot, _) = r.ids("text.eot");
    let batch = eot.len();

    // Prompt layout and embeddings.
    let classes = class_tokens(&r, "text", batch / N_SETS, N_CTX);
    let prompts = PromptBatch::new(&classes, N_CTX, N_SETS, CONTEXT, SPECIAL).unwrap();
    assert_eq!(prompts.eot_positions(), eot.as_slice());
    let seq = prompts.seq_len();
    let ctx = r.values("text.ctx");
    let embeddings = prompts.embed(&cpu, tower, &ctx).unwrap();
    let full_embeddings = r.values("text.embeddings");
    assert_eq!(
        embeddings,
        truncate(&full_embeddings, batch, CONTEXT, seq, width),
        "{dir}: prompt embeddings differ from CoOp's splice"
    );

    // Forward, truncated to the longest EOT: every stored activation.
    let mut acts = TextActivations::new(&cpu).unwrap();
    let features = text_forward(&cpu, text, &embeddings, seq, &eot, &mut acts).unwrap();
    for l in 0..text.blocks.len() {
        let layer = |what: &str| r.values(&format!("text.layer{l}.{what}"));
        let tag = |what: &str| format!("{dir} text block {l} {what}");
        assert_close(
            &tag("input"),
            acts.hidden(l).unwrap(),
            &layer("input"),
            FORWARD_TOL,
        );
        assert_close(
            &tag("qkv"),
            acts.qkv(l).unwrap(),
            &layer("qkv"),
            FORWARD_TOL,
        );
        let probs = acts.attention_probs(l).unwrap();
        assert_close(&tag("attention probs"), probs, &layer("probs"), FORWARD_TOL);
        let mid = acts.after_attention(l).unwrap();
        assert_close(&tag("after attention"), mid, &layer("mid"), FORWARD_TOL);
        let fc = acts.mlp_pre_activation(l).unwrap();
        assert_close(&tag("mlp pre-activation"), fc, &layer("fc"), FORWARD_TOL);
    }
    let last = acts.hidden(text.blocks.len()).unwrap();
    assert_close(
        &format!("{dir} text output"),
        last,
        &r.values("text.output"),
        FORWARD_TOL,
    );
    assert_close(
        &format!("{dir} text pooled"),
        acts.pooled(),
        &r.values("text.pooled"),
        FORWARD_TOL,
    );
    // The reference features come from the full 77-token run: truncation is exact.
    let want_features = r.values("text.features");
    assert_close(
        &format!("{dir} text features (truncated)"),
        &features,
        &want_features,
        FORWARD_TOL,
    );

    // Backward to the embeddings and to the context.
    let d_features = r.values("text.d_features");
    let d_emb = text_backward(&cpu, text, &mut acts, &d_features).unwrap();
    let want_d_emb = r.values("text.d_embeddings");
    let want_kept = truncate(&want_d_emb, batch, CONTEXT, seq, width);
    assert_close(&format!("{dir} d embeddings"), &d_emb, &want_kept, GRAD_TOL);
    let d_ctx = prompts.context_gradient(&cpu, tower, &d_emb).unwrap();
    assert_close(
        &format!("{dir} d context"),
        &d_ctx,
        &r.values("text.d_ctx"),
        GRAD_TOL,
    );

    // The full 77-token input gives the same features, and the full gradient (zero past EOT).
    let mut full_acts = TextActivations::new(&cpu).unwrap();
    let full = text_forward(&cpu, text, &full_embeddings, CONTEXT, &eot, &mut full_acts).unwrap();
    assert_eq!(
        full_acts.shape().seq,
        seq,
        "the tower runs only to the longest EOT"
    );
    assert_close(
        &format!("{dir} text features (77 input)"),
        &full,
        &want_features,
        FORWARD_TOL,
    );
    let d_full = text_backward(&cpu, text, &mut full_acts, &d_features).unwrap();
    assert_close(
        &format!("{dir} d embeddings (77 input)"),
        &d_full,
        &want_d_emb,
        GRAD_TOL,
    );
}

fn check_plain_text(w: &Weights, r: &Reference, want_key: &str, tag: &str) {
    let cpu = Cpu::new();
    let (eot, _) = r.ids("plain.eot");
    let classes = class_tokens(r, "plain", eot.len(), 0);
    let prompts = PromptBatch::new(&classes, 0, 1, CONTEXT, SPECIAL).unwrap();
    assert_eq!(prompts.eot_positions(), eot.as_slice());
    let embeddings = prompts.embed(&cpu, &w.text, &Vec::new()).unwrap();
    let TextTower::Clip(text) = &w.text else {
        unreachable!("the fixtures' text towers are CLIP's")
    };
    let mut acts = TextActivations::new(&cpu).unwrap();
    let features = text_forward(
        &cpu,
        text,
        &embeddings,
        prompts.seq_len(),
        prompts.eot_positions(),
        &mut acts,
    )
    .unwrap();
    let want = r.values(want_key);
    assert_close(tag, &features, &want, FORWARD_TOL);
}

fn check_vision(w: &Weights, r: &Reference, dir: &str) {
    check_vit(&w.vision, r, dir);
}

/// Every stage of a ViT image tower, its projected tokens and its pooled embedding.
fn check_vit(vision: &VisionWeights<Vec<f32>>, r: &Reference, dir: &str) {
    let cpu = Cpu::new();
    let (images, shape) = r.f32("vision.images");
    let batch = shape[0];
    let out = vision_forward_inspect(&cpu, vision, &images, batch, |stage, values, s| {
        let name = match stage {
            VisionStage::PatchEmbeddings => "vision.patch_embeds".to_string(),
            VisionStage::Embeddings => "vision.embeddings".to_string(),
            VisionStage::PreNorm => "vision.pre_norm".to_string(),
            VisionStage::Block(i) => format!("vision.block{i}"),
            VisionStage::PostNorm => "vision.post_norm".to_string(),
            other => panic!("{dir}: ResNet stage {other:?} in a ViT"),
        };
        let got = cpu.download(values, s.len())?;
        assert_close(
            &format!("{dir} {name}"),
            &got,
            &r.values(&name),
            FORWARD_TOL,
        );
        Ok(())
    })
    .unwrap();
    assert_close(
        &format!("{dir} vision tokens"),
        &out.tokens,
        &r.values("vision.tokens"),
        FORWARD_TOL,
    );
    assert_close(
        &format!("{dir} vision pooled"),
        &out.pooled,
        &r.values("vision.pooled"),
        FORWARD_TOL,
    );
}

#[test]
fn hugging_face_text_tower_matches_pytorch() {
    check_text("hf");
}

#[test]
fn openai_text_tower_matches_pytorch() {
    check_text("openai");
}

#[test]
fn hugging_face_plain_text_matches_get_text_features() {
    let r = reference("hf");
    check_plain_text(&load("hf"), &r, "plain.features", "hf get_text_features");
}

#[test]
fn openai_plain_text_matches_encode_text() {
    let r = reference("openai");
    check_plain_text(&load("openai"), &r, "plain.features", "openai encode_text");
}

#[test]
fn hugging_face_vision_tower_matches_pytorch() {
    check_vision(&load("hf"), &reference("hf"), "hf");
}

#[test]
fn openai_vision_tower_matches_pytorch() {
    check_vision(&load("openai"), &reference("openai"), "openai");
}

/// open_clip's default nn.GELU (LAION's and DataComp's models), in another shape than the
/// other fixtures: every text block, the features and the context gradient.
#[test]
fn gelu_text_tower_matches_pytorch() {
    assert_eq!(
        load("gelu").config.text.as_clip().unwrap().activation,
        Activation::Gelu
    );
    check_text("gelu");
}

#[test]
fn gelu_plain_text_matches_encode_text() {
    let r = reference("gelu");
    check_plain_text(&load("gelu"), &r, "plain.features", "gelu encode_text");
}

#[test]
fn gelu_vision_tower_matches_pytorch() {
    check_vision(&load("gelu"), &reference("gelu"), "gelu");
}

/// open_clip's timm tower as BiomedCLIP has it (timm's `vit_base_patch16_224` in open_clip's
/// `TimmModel`, pool "", linear head), shrunk: 16 px images, 4-pixel patches, width 32 in 4 heads,
/// 2 blocks, embed 16. The patch embeddings (with the convolution's bias), the embeddings (no
/// pre-norm: the first block's input is the embeddings), each block's output, timm's final
/// `norm`, `head.proj` on every token, and the class token's row against open_clip's
/// `encode_image`.
#[test]
fn timm_vision_tower_matches_open_clip() {
    let w = VitWeights::load_open_clip_timm(fixture("clip/timm"), 4).expect("fixture loads");
    let expected = VitConfig {
        image_size: 16,
        patch_size: 4,
        width: 32,
        layers: 2,
        heads: 4,
        mlp_width: 128,
        layer_norm_eps: TIMM_LAYER_NORM_EPS,
        activation: Activation::Gelu,
        style: VitStyle::Timm {
            projection_bias: false,
        },
    };
    assert_eq!(w.config, expected);
    assert!(w.ln_pre.is_none());
    assert!(w.patch_embedding.bias.is_some() && w.projection.bias.is_none());
    let norms = w.blocks.iter().flat_map(|b| [&b.ln_1, &b.ln_2]);
    assert!(norms.chain([&w.ln_post]).all(|ln| ln.eps == 1e-6));
    check_vit(&VisionWeights::Vit(w), &reference("timm"), "timm");
}

/// The timm fixture tells timm's ViT from CLIP's: each of CLIP's settings in its place (LayerNorm
/// eps 1e-5, a pre-norm, no patch bias, QuickGELU) moves the projected tokens by far more than
/// the tolerance (by 2.7e-3 to 0.8 when this was written).
#[test]
fn timm_fixture_tells_timm_settings_from_clips() {
    let cpu = Cpu::new();
    let r = reference("timm");
    let (images, shape) = r.f32("vision.images");
    let want = r.values("vision.tokens");
    let load = || VitWeights::load_open_clip_timm(fixture("clip/timm"), 4).unwrap();
    let width = load().config.width;
    let mut eps = load();
    for ln in eps
        .blocks
        .iter_mut()
        .flat_map(|b| [&mut b.ln_1, &mut b.ln_2])
    {
        ln.eps = CLIP_LAYER_NORM_EPS;
    }
    eps.ln_post.eps = CLIP_LAYER_NORM_EPS;
    let mut pre_norm = load();
    pre_norm.ln_pre = Some(LayerNorm {
        weight: vec![1.0; width],
        bias: vec![0.0; width],
        width,
        eps: TIMM_LAYER_NORM_EPS,
    });
    let mut no_bias = load();
    no_bias.patch_embedding.bias = None;
    let mut quick_gelu = load();
    quick_gelu.config.activation = Activation::QuickGelu;
    let variants = [
        ("eps 1e-5", eps),
        ("ln_pre", pre_norm),
        ("no patch bias", no_bias),
        ("QuickGELU", quick_gelu),
    ];
    for (what, w) in variants {
        let out = vision_forward(&cpu, &VisionWeights::Vit(w), &images, shape[0]).unwrap();
        let err = max_relative_error(&out.tokens, &want);
        println!("timm tokens with {what:<28} max rel error {err:.2e}");
        assert!(err > 100.0 * FORWARD_TOL, "{what}: {err:.2e}");
    }
}

/// A PyTorch `(n, c, h, w)` map as the tower's channels-last rows `(n, h·w, c)`.
fn channels_last(values: &[f32], shape: &[usize]) -> Vec<f32> {
    let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3]);
    let mut out = vec![0.0; values.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                out[(b * hw + p) * c + ch] = values[(b * c + ch) * hw + p];
            }
        }
    }
    out
}

#[test]
fn resnet_vision_tower_matches_pytorch_at_every_layer() {
    let cpu = Cpu::new();
    let (w, r) = (load("rn"), reference("rn"));
    let (images, shape) = r.f32("vision.images");
    let mut checked = Vec::new();
    let out = vision_forward_inspect(&cpu, &w.vision, &images, shape[0], |stage, values, s| {
        let name = match stage {
            VisionStage::Stem(i) => format!("vision.stem{i}"),
            VisionStage::StemPool => "vision.stem_pool".to_string(),
            VisionStage::Bottleneck { stage, block } => format!("vision.stage{stage}.block{block}"),
            VisionStage::PoolTokens => "vision.pool_tokens".to_string(),
            VisionStage::PoolAttention => "vision.pool_attention".to_string(),
            other => panic!("ViT stage {other:?} in a ResNet"),
        };
        let (want, want_shape) = r.f32(&name);
        let want = match want_shape.len() {
            4 => channels_last(&want, &want_shape),
            _ => want,
        };
        let got = cpu.download(values, s.len())?;
        assert_close(&format!("rn {name}"), &got, &want, FORWARD_TOL);
        checked.push(name);
        Ok(())
    })
    .unwrap();
    // 3 stem convolutions, the stem pool, 2 + 1 + 1 + 1 blocks, the pool's tokens and attention.
    assert_eq!(checked.len(), 3 + 1 + 5 + 2, "{checked:?}");
    assert_eq!(out.tokens_per_image, 1 + 3 * 3);
    assert_close(
        "rn vision tokens (c_proj, every position)",
        &out.tokens,
        &r.values("vision.tokens"),
        FORWARD_TOL,
    );
    // open_clip's own encode_image, which queries the attention pool with the mean token only.
    assert_close(
        "rn vision pooled vs encode_image",
        &out.pooled,
        &r.values("vision.pooled"),
        FORWARD_TOL,
    );
}

#[test]
fn resnet_checkpoint_text_tower_matches_encode_text() {
    let r = reference("rn");
    check_plain_text(&load("rn"), &r, "plain.features", "rn encode_text");
}

#[test]
fn half_precision_weights_load_and_match_pytorch() {
    let cpu = Cpu::new();
    let r = reference("openai");
    let (images, shape) = r.f32("vision.images");
    for dtype in ["f16", "bf16"] {
        let path = fixture("clip/openai").join(format!("weights_{dtype}.safetensors"));
        let w = ClipWeights::load(&path).unwrap();
        let features = format!("{dtype}.plain_features");
        check_plain_text(&w, &r, &features, &format!("{dtype} weights encode_text"));
        let w = w.to_backend(&cpu).unwrap();
        let out = fedotp_host::clip::vision_forward(&cpu, &w.vision, &images, shape[0]).unwrap();
        let want = r.values(&format!("{dtype}.pooled"));
        assert_close(
            &format!("{dtype} weights encode_image"),
            &out.pooled,
            &want,
            FORWARD_TOL,
        );
    }
}
