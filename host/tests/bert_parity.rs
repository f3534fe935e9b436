//! The BERT text tower (BiomedCLIP's) against PyTorch: open_clip's `HFTextEncoder` around a small
//! random Hugging Face `BertModel`, recorded in float64 by `tests/scripts/bert_fixtures.py`.
//! Prompts of two lengths run as two groups and must match both their own Hugging Face runs and
//! one padded run with the attention mask; the embedding and context gradients come from the
//! padded run. Run with `--nocapture` to see each comparison's error.

use fedotp_host::backend::{Backend, Cpu, PromptShape, SeqShape};
use fedotp_host::clip::{
    bert_text_backward, bert_text_forward, BertActivations, BertTextWeights, ClipError,
};
use fedotp_tests::compare::{assert_close, max_relative_error};
use fedotp_tests::fixtures::{fixture, Reference};

/// Forward tolerance (max-norm relative, f32 against a float64 reference).
const FORWARD_TOL: f64 = 2e-6;
/// Gradient tolerance.
const GRAD_TOL: f64 = 4e-6;
const HEADS: usize = 4;
const EPS: f32 = 1e-12;
const N_CTX: usize = 3;
const N_SETS: usize = 2;
const GROUPS: [&str; 2] = ["a", "b"];
const TOKEN_TYPE: &str = "text.transformer.embeddings.token_type_embeddings.weight";

type Weights = BertTextWeights<Vec<f32>>;

fn model_path() -> std::path::PathBuf {
    fixture("bert").join("open_clip_model.safetensors")
}

fn load() -> Weights {
    BertTextWeights::load(model_path(), HEADS, EPS).expect("fixture loads")
}

fn reference() -> Reference {
    Reference::open(fixture("bert").join("reference.safetensors"))
}

/// The first `keep` rows of each of `batch` sequences of `seq` rows of `width` values.
fn truncate(values: &[f32], batch: usize, seq: usize, keep: usize, width: usize) -> Vec<f32> {
    (0..batch)
        .flat_map(|s| values[s * seq * width..][..keep * width].iter().copied())
        .collect()
}

/// One group's prompt layout and its embeddings, built with the backend's splice.
struct Group {
    prompt: PromptShape,
    set: Vec<u32>,
    embeddings: Vec<f32>,
}

fn group(cpu: &Cpu, w: &Weights, r: &Reference, name: &str, ctx: &Vec<f32>) -> Group {
    let (ids, shape) = r.ids(&format!("{name}.ids"));
    let (set, _) = r.ids(&format!("{name}.set"));
    let prompt = PromptShape {
        batch: shape[0],
        seq: shape[1],
        width: w.config.width,
        n_ctx: N_CTX,
        n_sets: N_SETS,
    };
    let mut embeddings = cpu.alloc(prompt.batch * prompt.seq * prompt.width).unwrap();
    cpu.prompt_embed(&mut embeddings, &w.word_embedding, &ids, ctx, &set, prompt)
        .unwrap();
    Group {
        prompt,
        set,
        embeddings,
    }
}

fn seq_shape(p: PromptShape) -> SeqShape {
    SeqShape {
        batch: p.batch,
        seq: p.seq,
        width: p.width,
    }
}

/// Features of every group, concatenated in group order (the padded batch's order).
fn grouped_features(cpu: &Cpu, w: &Weights, r: &Reference) -> Vec<f32> {
    let ctx = r.values("ctx");
    let mut acts = BertActivations::new(cpu).unwrap();
    GROUPS
        .iter()
        .flat_map(|name| {
            let g = group(cpu, w, r, name, &ctx);
            bert_text_forward(cpu, w, &g.embeddings, seq_shape(g.prompt), &mut acts).unwrap()
        })
        .collect()
}

#[test]
fn groups_match_hugging_face_layer_by_layer_and_the_padded_run() {
    let cpu = Cpu::new();
    let w = load();
    assert_eq!(
        (w.config.width, w.config.layers, w.config.mlp_width),
        (48, 2, 96)
    );
    assert_eq!((w.config.max_positions, w.config.vocab_size), (64, 120));
    assert_eq!((w.config.embed_dim, w.config.proj_width), (32, 40));
    let r = reference();
    let ctx = r.values("ctx");
    let (d_features, _) = r.f32("d_features");
    let (padded_d_emb, padded_shape) = r.f32("padded.d_embeddings");
    let padded_seq = padded_shape[1];
    let width = w.config.width;
    let embed = w.config.embed_dim;

    let mut acts = BertActivations::new(&cpu).unwrap();
    let mut features = Vec::new();
    let mut d_ctx = vec![0.0f32; N_SETS * N_CTX * width];
    let mut first = 0; // first sequence of the group in the padded batch
    for name in GROUPS {
        let g = group(&cpu, &w, &r, name, &ctx);
        let (batch, seq) = (g.prompt.batch, g.prompt.seq);
        assert_close(
            &format!("{name} embeddings"),
            &g.embeddings,
            &r.values(&format!("{name}.embeddings")),
            0.0,
        );
        let shape = seq_shape(g.prompt);
        let f = bert_text_forward(&cpu, &w, &g.embeddings, shape, &mut acts).unwrap();
        for l in 0..=w.config.layers {
            assert_close(
                &format!("{name} hidden state {l}"),
                &acts.hidden(l).unwrap()[..shape.len()],
                &r.values(&format!("{name}.hidden{l}")),
                FORWARD_TOL,
            );
        }
        assert_close(
            &format!("{name} features (own run)"),
            &f,
            &r.values(&format!("{name}.features")),
            FORWARD_TOL,
        );
        features.extend_from_slice(&f);

        // The padded run's gradient, on this group's sequences and real tokens.
        let d_f = &d_features[first * embed..][..batch * embed];
        let d_emb = bert_text_backward(&cpu, &w, &mut acts, &d_f.to_vec()).unwrap();
        let want = truncate(
            &padded_d_emb[first * padded_seq * width..][..batch * padded_seq * width],
            batch,
            padded_seq,
            seq,
            width,
        );
        assert_close(&format!("{name} d embeddings"), &d_emb, &want, GRAD_TOL);
        let mut d_group_ctx = cpu.alloc(d_ctx.len()).unwrap();
        cpu.prompt_embed_backward(&mut d_group_ctx, &d_emb, &g.set, g.prompt)
            .unwrap();
        d_ctx
            .iter_mut()
            .zip(&d_group_ctx)
            .for_each(|(a, b)| *a += b);
        first += batch;
    }
    assert_close(
        "features vs padded run",
        &features,
        &r.values("padded.features"),
        FORWARD_TOL,
    );
    assert_close("d context", &d_ctx, &r.values("d_ctx"), GRAD_TOL);
}

/// Plain prompts through open_clip's own `HFTextEncoder.forward(ids)`: grouped by length and
/// embedded with the word table alone (no context).
#[test]
fn plain_prompts_match_open_clips_own_forward() {
    let cpu = Cpu::new();
    let w = load();
    let r = reference();
    let (ids, shape) = r.ids("plain.ids");
    let (batch, padded) = (shape[0], shape[1]);
    let want = r.values("plain.features");
    let embed = w.config.embed_dim;
    let mut acts = BertActivations::new(&cpu).unwrap();
    let mut got = vec![0.0; batch * embed];
    let lengths: Vec<usize> = (0..batch)
        .map(|s| {
            ids[s * padded..][..padded]
                .iter()
                .take_while(|&&t| t != 0)
                .count()
        })
        .collect();
    let mut distinct = lengths.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 1, "the plain prompts have several lengths");
    for seq in distinct {
        let members: Vec<usize> = (0..batch).filter(|&s| lengths[s] == seq).collect();
        let group_ids: Vec<u32> = members
            .iter()
            .flat_map(|&s| ids[s * padded..][..seq].iter().copied())
            .collect();
        let prompt = PromptShape {
            batch: members.len(),
            seq,
            width: w.config.width,
            n_ctx: 0,
            n_sets: 1,
        };
        let mut emb = cpu.alloc(prompt.batch * seq * prompt.width).unwrap();
        let set = vec![0; members.len()];
        cpu.prompt_embed(
            &mut emb,
            &w.word_embedding,
            &group_ids,
            &Vec::new(),
            &set,
            prompt,
        )
        .unwrap();
        let f = bert_text_forward(&cpu, &w, &emb, seq_shape(prompt), &mut acts).unwrap();
        for (i, &s) in members.iter().enumerate() {
            got[s * embed..][..embed].copy_from_slice(&f[i * embed..][..embed]);
        }
    }
    assert_close("plain features", &got, &want, FORWARD_TOL);
}

/// The tolerances are tight enough to catch the plausible mistakes: CLIP's LayerNorm eps
/// instead of BERT's, and a forgotten token-type embedding, each move the features by far more
/// than the tolerance.
#[test]
fn tolerance_catches_a_wrong_eps_or_a_missing_token_type() {
    let cpu = Cpu::new();
    let r = reference();
    let want = r.values("padded.features");

    let wrong_eps = BertTextWeights::load(model_path(), HEADS, 1e-5).unwrap();
    let err = max_relative_error(&grouped_features(&cpu, &wrong_eps, &r), &want);
    println!("eps 1e-5 instead of 1e-12: features off by {err:.2e}");
    assert!(err > 100.0 * FORWARD_TOL, "{err}");

    let mut no_type = load();
    let width = no_type.config.width;
    let types = Reference::open(model_path()).values(TOKEN_TYPE);
    for row in no_type.position_embedding.chunks_exact_mut(width) {
        row.iter_mut()
            .zip(&types[..width])
            .for_each(|(p, t)| *p -= t);
    }
    let err = max_relative_error(&grouped_features(&cpu, &no_type, &r), &want);
    println!("no token-type embedding: features off by {err:.2e}");
    assert!(err > 100.0 * FORWARD_TOL, "{err}");
}

/// Writes the fixture's tensors, changed by `edit`, to a new file and loads it.
fn load_edited(
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> Result<Weights, ClipError> {
    let bytes = std::fs::read(model_path()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), view.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    BertTextWeights::load(&path, HEADS, EPS)
}

#[test]
fn loader_names_a_missing_misshapen_or_unexpected_tensor() {
    let key = "text.transformer.encoder.layer.1.attention.self.key.weight";
    let err = load_edited(|t| t.retain(|(name, _, _)| name != key)).unwrap_err();
    assert!(
        matches!(&err, ClipError::MissingTensor { name, .. } if name == key),
        "{err}"
    );
    assert!(err.to_string().contains(key), "{err}");

    let ln = "text.transformer.encoder.layer.0.output.LayerNorm.bias";
    let err = load_edited(|t| {
        let entry = t.iter_mut().find(|(name, _, _)| name == ln).unwrap();
        entry.1 = vec![47];
        entry.2.truncate(47 * 4);
    })
    .unwrap_err();
    assert!(
        matches!(&err, ClipError::ShapeMismatch { name, expected, found, .. }
            if name == ln && expected == &[48] && found == &[47]),
        "{err}"
    );

    // A tensor of another architecture under `text.` is refused; the image tower and BERT's
    // unused pooler are not the text tower's business.
    let err = load_edited(|t| {
        t.push(("text.ln_final.weight".into(), vec![1], vec![0; 4]));
    })
    .unwrap_err();
    assert!(
        matches!(&err, ClipError::UnexpectedTensor { name, .. } if name == "text.ln_final.weight"),
        "{err}"
    );
    let ok = load_edited(|t| {
        t.push(("visual.proj".into(), vec![1], vec![0; 4]));
        t.push(("logit_scale".into(), vec![1], vec![0; 4]));
    })
    .unwrap();
    assert_eq!(ok.layers.len(), 2);

    // No heads that divide the width: a configuration error, not a crash.
    let err = BertTextWeights::load(model_path(), 5, EPS).unwrap_err();
    assert!(matches!(err, ClipError::InvalidConfig(_)), "{err}");
}
