//! BiomedCLIP as a whole model, against open_clip: a small random model of BiomedCLIP's
//! architecture (a BERT text tower pooled at `[CLS]` with the MLP projection, a timm ViT) built by
//! open_clip itself from an `open_clip_config.json` shaped like the hub's, its weights converted
//! from `open_clip_pytorch_model.bin` by `tools/open_clip_to_safetensors.py`, its tokenizer
//! open_clip's `HFTokenizer` on the fixture's `vocab.txt`; recorded in float64 by
//! `tests/scripts/biomedclip_fixtures.py`. Loaded here the way `fedotp train`, `fedotp encode` and
//! libfedotp load it: `ClipWeights::load` on the directory and the tokenizer from its
//! `vocab.txt`. The prompt check covers what FedOTP trains: CoOp's prompts with two context sets
//! through the whole model (six classes of three token lengths), their unit features and the
//! context gradient, against open_clip's padded run with its attention mask.

use std::path::{Path, PathBuf};

use fedotp_host::backend::{Backend, Cpu};
use fedotp_host::clip::classnames::prompt_name;
use fedotp_host::clip::{
    vision_forward, ClipWeights, TextTokenizer, TextTowerConfig, VisionConfig, VitStyle,
};
use fedotp_host::config::ModelConfig;
use fedotp_host::prompt::PromptLearner;
use fedotp_host::train::FrozenClip;
use fedotp_tests::compare::assert_close;
use fedotp_tests::fixtures::{fixture, Reference};

/// Forward tolerance (max-norm relative, f32 against a float64 reference).
const FORWARD_TOL: f64 = 2e-6;
/// Gradient tolerance.
const GRAD_TOL: f64 = 4e-6;
const N_CTX: usize = 3;
const N_SETS: usize = 2;
/// The script's plain texts, in its order (`plain.ids` holds their tokens).
const PLAIN_TEXTS: [&str; 4] = [
    "a chest x-ray",
    "Normal lungs.",
    "Showing a small left pleural effusion, and cardiomegaly",
    "No opacities in the right lung",
];

fn dir() -> PathBuf {
    fixture("biomedclip")
}

fn reference() -> Reference {
    Reference::open(dir().join("reference.safetensors"))
}

fn class_names() -> Vec<String> {
    std::fs::read_to_string(dir().join("classnames.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The ids between `[CLS]` (first) and `[SEP]` of each row of a padded `[rows, 256]` id array.
fn inner_ids(r: &Reference, name: &str, sep: u32) -> Vec<Vec<u32>> {
    let (ids, shape) = r.ids(name);
    ids.chunks_exact(shape[1])
        .map(|row| {
            let end = row.iter().position(|&id| id == sep).expect("a [SEP]");
            row[1..end].to_vec()
        })
        .collect()
}

#[test]
fn the_hub_layout_loads_as_one_model() {
    let weights = ClipWeights::load(dir()).expect("the fixture loads");
    let config = &weights.config;
    let TextTowerConfig::Bert(bert) = &config.text else {
        panic!("a BERT text tower: {:?}", config.text)
    };
    // Heads and eps from config.json, the context length from open_clip_config.json, the rest
    // from the tensors.
    assert_eq!(
        (bert.width, bert.heads, bert.layers, bert.mlp_width),
        (48, 4, 2, 96)
    );
    assert_eq!(
        (bert.vocab_size, bert.max_positions, bert.context_length),
        (64, 300, 256)
    );
    assert_eq!(
        (bert.layer_norm_eps, bert.embed_dim, bert.proj_width),
        (1e-12, 32, 40)
    );
    let VisionConfig::Vit(vit) = &config.vision else {
        panic!("a ViT image tower")
    };
    // 12 heads from the timm name's "base".
    assert_eq!(
        (vit.image_size, vit.patch_size, vit.width, vit.heads),
        (16, 4, 48, 12)
    );
    assert_eq!(
        vit.style,
        VitStyle::Timm {
            projection_bias: false
        }
    );
    assert_eq!(config.embed_dim, 32);
    let r = reference();
    assert_eq!(weights.logit_scale, r.values("logit_scale")[0]);

    // The count made from the configuration is what was loaded.
    let mut floats = 0u64;
    let mut tally = |buffer: Vec<f32>| {
        floats += buffer.len() as u64;
        Ok::<_, ()>(())
    };
    weights.text.clone().try_map(&mut tally).unwrap();
    weights.vision.clone().try_map(&mut tally).unwrap();
    assert_eq!(config.parameters(), Some(floats));
}

#[test]
fn image_tokens_match_open_clip() {
    let cpu = Cpu::new();
    let weights = ClipWeights::load(dir()).unwrap().to_backend(&cpu).unwrap();
    let r = reference();
    let (images, shape) = r.f32("images");
    let out = vision_forward(&cpu, &weights.vision, &images, shape[0]).unwrap();
    assert_eq!(out.tokens_per_image, 17);
    assert_close(
        "image tokens",
        &out.tokens,
        &r.values("image_tokens"),
        FORWARD_TOL,
    );
    let class_tokens: Vec<f32> = out
        .tokens
        .chunks_exact(17 * 32)
        .flat_map(|image| image[..32].to_vec())
        .collect();
    assert_close(
        "image features (encode_image)",
        &class_tokens,
        &r.values("image_features"),
        FORWARD_TOL,
    );
}

/// The tokenizer read from the directory's `vocab.txt` gives open_clip's ids for the class
/// prompts and the plain texts, and plain texts through the whole text tower give
/// `encode_text`'s features.
#[test]
fn texts_tokenize_and_encode_as_open_clip() {
    let weights = ClipWeights::load(dir()).unwrap();
    let tokenizer = TextTokenizer::for_model(&dir(), &weights.config).unwrap();
    let TextTokenizer::WordPiece(vocab) = &tokenizer else {
        panic!("BiomedCLIP's tokenizer is WordPiece")
    };
    let (cls, sep) = (vocab.cls(), vocab.sep());
    assert_eq!((cls, sep), (2, 3));
    let special = tokenizer.special_tokens();
    assert_eq!((special.start, special.end), (cls, sep));
    let r = reference();

    // "X X X {name}." as open_clip tokenizes it: x, x, x, then the name and its period.
    let names = class_names();
    let prompts = inner_ids(&r, "prompt.ids", sep);
    let x = vocab.token_to_id("x").unwrap();
    for (c, name) in names.iter().enumerate() {
        let ours = tokenizer.encode(&format!("{}.", prompt_name(name)));
        assert_eq!(prompts[c][..N_CTX], [x; N_CTX], "{name}");
        assert_eq!(ours, prompts[c][N_CTX..], "class {name:?}");
    }

    let plain = inner_ids(&r, "plain.ids", sep);
    let tokens: Vec<Vec<u32>> = PLAIN_TEXTS.iter().map(|t| tokenizer.encode(t)).collect();
    assert_eq!(tokens, plain);
    let cpu = Cpu::new();
    let weights = weights.to_backend(&cpu).unwrap();
    let learner = PromptLearner::from_tokens(&tokens, 0, 1, &weights.text, special).unwrap();
    let mut state = learner.state(&cpu).unwrap();
    learner
        .forward(&cpu, &weights.text, &[], &mut state)
        .unwrap();
    assert_close(
        "plain text features (encode_text)",
        &state.raw_features,
        &r.values("plain.features"),
        FORWARD_TOL,
    );
}

/// FedOTP's prompts through the whole model: features of both context sets of every class,
/// unit features, and the gradient of a loss on those to the context — the prompts of each
/// token length run unpadded, open_clip's run padded with its mask.
#[test]
fn prompt_learning_matches_open_clip() {
    let cpu = Cpu::new();
    let clip = FrozenClip::from_config(
        cpu,
        &ModelConfig::Clip {
            path: dir(),
            backbone: None,
        },
    )
    .expect("FrozenClip loads BiomedCLIP with its tokenizer");
    let (cpu, text) = (clip.backend(), &clip.weights().text);
    let names = class_names();
    let learner = PromptLearner::new(clip.tokenizer(), &names, N_CTX, N_SETS, text).unwrap();
    assert_eq!(learner.tokens_per_prompt(), 9);
    let r = reference();
    let ctx = r.values("ctx");
    let mut state = learner.state(cpu).unwrap();
    for run in ["first", "second (buffers reused)"] {
        learner.forward(cpu, text, &ctx, &mut state).unwrap();
        let rows = N_SETS * names.len() * 32;
        let raw = cpu.download(&state.raw_features, rows).unwrap();
        assert_close(
            &format!("prompt features, {run} run"),
            &raw,
            &r.values("prompt.features"),
            FORWARD_TOL,
        );
        let unit = cpu.download(&state.features, rows).unwrap();
        assert_close(
            "unit prompt features",
            &unit,
            &r.values("prompt.unit_features"),
            FORWARD_TOL,
        );
        let d_unit = cpu.upload(&r.values("d_unit")).unwrap();
        let d_ctx = learner.backward(cpu, text, &mut state, &d_unit).unwrap();
        assert_close("context gradient", &d_ctx, &r.values("d_ctx"), GRAD_TOL);
    }
}

/// A change to a copy of the fixture directory.
type Edit = fn(&Path);

/// A copy of the fixture directory in a temporary directory, with `edit` applied.
fn edited_copy(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    edit(copy.path());
    copy
}

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn load_error(dir: &Path) -> String {
    match ClipWeights::load(dir) {
        Ok(weights) => match TextTokenizer::for_model(dir, &weights.config) {
            Ok(_) => panic!("{} loads", dir.display()),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

/// What the towers cannot compute, or files that are not this model's, are refused naming
/// the file and the key; without the text model's `config.json` the heads are BERT-base's
/// 64-wide ones, which this width cannot have.
#[test]
fn settings_fedotp_cannot_run_are_refused_naming_file_and_key() {
    const CONFIG: &str = "open_clip_config.json";
    let cases: [(Edit, &[&str]); 9] = [
        (
            (|d: &Path| {
                replace_in(
                    &d.join(CONFIG),
                    "cls_last_hidden_state_pooler",
                    "mean_pooler",
                )
            }),
            &[CONFIG, "hf_pooler_type", "mean_pooler"],
        ),
        (
            (|d: &Path| replace_in(&d.join(CONFIG), "\"mlp\"", "\"linear\"")),
            &[CONFIG, "hf_proj_type", "linear"],
        ),
        (
            (|d: &Path| {
                replace_in(
                    &d.join(CONFIG),
                    "\"timm_pool\": \"\"",
                    "\"timm_pool\": \"avg\"",
                )
            }),
            &[CONFIG, "timm_pool", "avg"],
        ),
        (
            (|d: &Path| replace_in(&d.join(CONFIG), "256", "400")),
            &[CONFIG, "context_length", "400", "300 position embeddings"],
        ),
        (
            (|d: &Path| std::fs::remove_file(d.join(CONFIG)).unwrap()),
            &[CONFIG, "is missing", "BERT text tower"],
        ),
        (
            (|d: &Path| {
                replace_in(
                    &d.join("config.json"),
                    "\"num_attention_heads\": 4",
                    "\"num_attention_heads\": 5",
                )
            }),
            &["config.json", "num_attention_heads", "5"],
        ),
        (
            (|d: &Path| replace_in(&d.join("config.json"), "\"gelu\"", "\"relu\"")),
            &["config.json", "hidden_act", "relu"],
        ),
        (
            (|d: &Path| std::fs::remove_file(d.join("config.json")).unwrap()),
            &["config.json", "is missing", "48"],
        ),
        (
            (|d: &Path| std::fs::remove_file(d.join("vocab.txt")).unwrap()),
            &["vocab.txt"],
        ),
    ];
    for (edit, words) in cases {
        let copy = edited_copy(edit);
        let message = load_error(copy.path());
        for word in words {
            assert!(message.contains(word), "{word:?} not in: {message}");
        }
    }
}

/// A BERT tower's weights need their vocabulary: `FrozenClip::new` (CLIP's tokenizer) refuses
/// them, and a vocabulary larger than the embedding table is not the model's.
#[test]
fn a_bert_tower_needs_its_own_vocabulary() {
    let weights = ClipWeights::load(dir()).unwrap();
    let message = FrozenClip::new(Cpu::new(), weights.clone())
        .err()
        .expect("CLIP's tokenizer refused for BERT")
        .to_string();
    assert!(message.contains("vocabulary"), "{message}");

    let big = (0..100).map(|i| format!("w{i}\n")).collect::<String>();
    let vocab = format!("[PAD]\n[UNK]\n[CLS]\n[SEP]\n{big}");
    let tokenizer =
        fedotp_host::clip::wordpiece::WordPieceTokenizer::from_vocab_text(&vocab, "vocab.txt")
            .unwrap();
    let message = FrozenClip::with_tokenizer(
        Cpu::new(),
        weights,
        TextTokenizer::WordPiece(std::sync::Arc::new(tokenizer)),
    )
    .err()
    .expect("a vocabulary larger than the table")
    .to_string();
    assert!(
        message.contains("104 tokens") && message.contains("64"),
        "{message}"
    );
}
