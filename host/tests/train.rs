//! The federated simulation on the quickstart's tiny model and digits: FedOTP learns, the
//! feature cache gives the results the image tower gives, and a batch whose features are not
//! finite is skipped and counted, never a crash.

use std::path::Path;

use fedotp_host::backend::{Activation, Cpu};
use fedotp_host::clip::{ClipWeights, VisionConfig};
use fedotp_host::config::{ModelConfig, Override, RunConfig};
use fedotp_host::data::{Normalize, Split};
use fedotp_host::fed::SgdState;
use fedotp_host::prompt::OtStopping;
use fedotp_host::run::{start_run, Checkpoint, MetricsRow, RowScope};
use fedotp_host::train::{
    train_run, CachePlace, FrozenClip, HeadChoice, LocalSchedule, PromptSetup, PromptTrainer,
    Silent, Simulation, SplitFeatures,
};
use fedotp_tests::fixtures::{fixture, json_array, json_ids};
use std::ops::ControlFlow;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The quickstart with `overrides`, writing under `dir`, without the comparison runs.
fn config(dir: &Path, overrides: &[&str]) -> RunConfig {
    let mut all = vec![
        "compare=[]".to_string(),
        format!("output.dir={:?}", dir.to_str().unwrap()),
    ];
    all.extend(overrides.iter().map(|o| o.to_string()));
    let overrides: Vec<Override> = all.iter().map(|o| o.parse().unwrap()).collect();
    RunConfig::quickstart_with(&overrides).unwrap()
}

/// Trains `config` to the end; its rows of means, one per round.
fn mean_rows(config: RunConfig) -> Vec<MetricsRow> {
    let run = start_run(config).unwrap();
    train_run(&run, Cpu::new(), None, &mut Silent).unwrap();
    run.dir
        .read_metrics()
        .unwrap()
        .into_iter()
        .filter(|row| row.client == RowScope::Mean)
        .collect()
}

#[test]
fn fedotp_learns_the_digits() {
    let dir = tempfile::tempdir().unwrap();
    let means = mean_rows(config(
        dir.path(),
        &["federation.rounds=4", "federation.local_epochs=2"],
    ));
    let accuracy: Vec<f64> = means.iter().map(|row| row.accuracy.unwrap()).collect();
    println!("mean client accuracy per round: {accuracy:?}");
    // Ten classes: chance is 10% (a client predicting its majority class does better, but not
    // this well on every client).
    let last = *accuracy.last().unwrap();
    assert!(last > 0.35, "final mean accuracy {last}");
    assert!(
        last > accuracy[0] + 0.05,
        "no progress after round 0: {accuracy:?}"
    );
    let loss: Vec<f64> = means.iter().map(|row| row.train_loss.unwrap()).collect();
    assert!(loss[3] < loss[0], "training loss does not fall: {loss:?}");
    assert!(means.iter().all(|row| row.skipped_batches == Some(0)));
}

#[test]
fn features_from_memory_disk_or_the_image_tower_train_alike() {
    let dir = tempfile::tempdir().unwrap();
    let short = ["federation.rounds=2", "federation.local_epochs=1"];
    let run = |extra: &[&str]| {
        let overrides: Vec<&str> = short.iter().chain(extra).copied().collect();
        mean_rows(config(dir.path(), &overrides))
    };
    let memory = run(&[]);
    let disk = run(&["cache.memory_budget_mib=0"]);
    assert_eq!(
        memory, disk,
        "the memory-mapped file holds the same features"
    );
    let uncached = run(&["cache.enabled=false"]);
    for (a, b) in memory.iter().zip(&uncached) {
        let (la, lb) = (a.train_loss.unwrap(), b.train_loss.unwrap());
        assert!((la - lb).abs() <= 1e-4 * la.abs(), "loss {la} vs {lb}");
        let (aa, ab) = (a.accuracy.unwrap(), b.accuracy.unwrap());
        assert!((aa - ab).abs() <= 0.01, "accuracy {aa} vs {ab}");
    }
}

/// Tokens computed elsewhere (as `fedotp encode` writes them) train a client exactly as its
/// images through the image tower do, with no pixels left in the dataset.
#[test]
fn precomputed_image_tokens_train_exactly_like_the_images() {
    use fedotp_host::backend::Backend;
    use fedotp_host::data::{Dataset, ImageSource, Sample};

    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[]);
    let fed = config.dataset.load(32, 1).unwrap();
    let clip = FrozenClip::from_config(Cpu::new(), &config.model).unwrap();
    let names = fed.dataset.class_names.clone();
    let mut trainer = PromptTrainer::new(&clip, &names, PromptSetup::of(&config).unwrap()).unwrap();
    let transform = config
        .dataset
        .train_transform
        .transform(32, config.dataset.normalize.statistics(Normalize::CLIP));
    assert!(
        !transform.is_random(),
        "the quickstart's digits are not augmented"
    );
    let samples = &fed.partition.clients[0].train;
    let place = CachePlace {
        memory_budget: u64::MAX,
        disk_dir: dir.path(),
        batch: 16,
        kept: None,
    };

    // The image tower's output for the client's images, as `fedotp encode` computes it.
    let backend = clip.backend();
    let pixels = fed
        .dataset
        .load_batch(
            Split::Train,
            samples,
            &transform,
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap();
    let out = fedotp_host::clip::vision_forward(
        backend,
        &clip.weights().vision,
        &backend.upload(&pixels).unwrap(),
        samples.len(),
    )
    .unwrap();
    let len = samples.len() * out.tokens_per_image * out.embed_dim;
    let tokens = backend.download(&out.tokens, len).unwrap();

    // The same client with tokens and no pixels.
    let without_pixels = Dataset {
        train: samples
            .iter()
            .map(|&i| Sample {
                image: ImageSource::Features,
                ..fed.dataset.train[i].clone()
            })
            .collect(),
        test: Vec::new(),
        ..fed.dataset.clone()
    };
    let all: Vec<usize> = (0..samples.len()).collect();
    let kind = trainer.feature_kind();

    let mut train = |features: &SplitFeatures, samples: &[usize]| {
        let mut ctx =
            trainer.init_context(trainer.context_len(), &mut ChaCha8Rng::seed_from_u64(1));
        let mut state = SgdState::default();
        let stats = trainer
            .train(
                &clip,
                &mut ctx,
                &mut state,
                None,
                features,
                samples,
                LocalSchedule {
                    epochs: 2,
                    batch_size: 8,
                },
                &mut ChaCha8Rng::seed_from_u64(2),
                &mut |_, _| ControlFlow::Continue(()),
            )
            .unwrap();
        (ctx, state, stats.loss, stats.accuracy)
    };
    let mut from_images = SplitFeatures::new(&fed.dataset, Split::Train, transform, kind);
    from_images
        .fill_cache(&clip, samples, place, &mut |_, _| {})
        .unwrap();
    let mut from_tokens = SplitFeatures::new(&without_pixels, Split::Train, transform, kind);
    from_tokens
        .fill_cache_from_tokens(&clip, &tokens, place)
        .unwrap();
    let a = train(&from_images, samples);
    let b = train(&from_tokens, &all);
    assert!(a.2.is_some(), "the client trained");
    assert_eq!(
        a, b,
        "context, optimiser state, loss and accuracy bit for bit"
    );

    // Without the cache, a sample with no pixels is an error naming why, not a silent zero.
    let uncached = SplitFeatures::new(&without_pixels, Split::Train, transform, kind);
    let error = uncached
        .batch(&clip, &[0], &mut ChaCha8Rng::seed_from_u64(0))
        .unwrap_err()
        .to_string();
    assert!(error.contains("no pixels"), "{error}");
    // Tokens of the wrong length are refused with both counts.
    let mut short = SplitFeatures::new(&without_pixels, Split::Train, transform, kind);
    let error = short
        .fill_cache_from_tokens(&clip, &tokens[1..], place)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("{} precomputed token values", len - 1)),
        "{error}"
    );
    // An augmented split cannot take fixed features.
    let mut augmented = SplitFeatures::new(
        &without_pixels,
        Split::Train,
        fedotp_host::data::Transform::train(32),
        kind,
    );
    assert!(augmented
        .fill_cache_from_tokens(&clip, &tokens, place)
        .is_err());
}

#[test]
fn batches_with_non_finite_features_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[]);
    let fed = config.dataset.load(32, 1).unwrap();
    let tiny = match &config.model {
        fedotp_host::config::ModelConfig::Tiny(tiny) => tiny.clone(),
        _ => unreachable!("the quickstart's model is the tiny one"),
    };
    let mut weights = ClipWeights::random(&tiny.clip_config(), tiny.seed).unwrap();
    // A NaN in the image tower's projection makes every patch feature NaN.
    match &mut weights.vision {
        fedotp_host::clip::VisionWeights::Vit(vit) => vit.projection.weight[0] = f32::NAN,
        _ => unreachable!("the tiny model is a ViT"),
    }
    let clip = FrozenClip::new(Cpu::new(), weights).unwrap();
    let names = fed.dataset.class_names.clone();
    let mut trainer = PromptTrainer::new(&clip, &names, PromptSetup::of(&config).unwrap()).unwrap();
    let features = SplitFeatures::new(
        &fed.dataset,
        Split::Train,
        config
            .dataset
            .train_transform
            .transform(32, config.dataset.normalize.statistics(Normalize::CLIP)),
        trainer.feature_kind(),
    );
    let ctx0 = vec![0.01f32; trainer.context_len()];
    let mut ctx = ctx0.clone();
    let mut state = SgdState::default();
    let samples = &fed.partition.clients[0].train;
    let stats = trainer
        .train(
            &clip,
            &mut ctx,
            &mut state,
            None,
            &features,
            samples,
            LocalSchedule {
                epochs: 1,
                batch_size: 8,
            },
            &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0),
            &mut |_, _| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(stats.skipped_batches, samples.len().div_ceil(8) as u64);
    assert_eq!((stats.loss, stats.accuracy), (None, None));
    assert_eq!(ctx, ctx0, "a skipped batch changes nothing");
    assert_eq!(state, SgdState::default());
}

/// The metrics rows of a run without the client column's identity (for comparing methods).
fn all_rows(config: RunConfig) -> Vec<MetricsRow> {
    let run = start_run(config).unwrap();
    train_run(&run, Cpu::new(), None, &mut Silent).unwrap();
    run.dir.read_metrics().unwrap()
}

#[test]
fn fedprox_with_mu_zero_is_promptfl_and_mu_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let short = ["federation.rounds=2", "federation.local_epochs=1"];
    let run = |method: &str| {
        let mut overrides: Vec<&str> = short.to_vec();
        overrides.push(method);
        all_rows(config(dir.path(), &overrides))
    };
    let promptfl = run("method={ kind = \"promptfl\" }");
    let prox0 = run("method={ kind = \"fedprox\", mu = 0.0 }");
    assert_eq!(promptfl, prox0, "a zero proximal weight changes nothing");
    let prox = run("method={ kind = \"fedprox\", mu = 10.0 }");
    // Round 0's first local steps start at the global prompt (no pull yet); by the second
    // round the term has changed the training.
    assert_ne!(promptfl, prox);
}

#[test]
fn zero_shot_evaluates_every_client_once_and_trains_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rows = all_rows(config(
        dir.path(),
        &["method={ kind = \"zero_shot\" }", "prompt.n_prompts=1"],
    ));
    // One round: eight client rows and the mean, each with an evaluation and no training.
    assert_eq!(rows.len(), 9);
    assert!(rows.iter().all(|r| r.round == 0));
    assert!(rows
        .iter()
        .all(|r| r.accuracy.is_some() && r.train_loss.is_none() && r.skipped_batches.is_none()));
}

/// Clients trained and evaluated at once (one per thread of the pool) give exactly the results
/// of one client at a time: each client's work is the same computation, and the server adds
/// the updates in the order sampled. Compared on every row and on the final state.
#[test]
fn clients_computed_at_once_give_the_results_of_one_at_a_time() {
    let run_on = |threads: usize| {
        let dir = tempfile::tempdir().unwrap();
        let short = [
            "federation.rounds=2",
            "federation.local_epochs=1",
            "federation.frac=0.5",
        ];
        let config = config(dir.path(), &short);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let run = start_run(config).unwrap();
        pool.install(|| train_run(&run, Cpu::new(), None, &mut Silent).unwrap());
        // The configuration hash differs with the output directory; the state must not.
        let checkpoint = Checkpoint::load(&run.dir.checkpoint_path(1)).unwrap();
        let state = (
            checkpoint.global_prompt,
            checkpoint.clients,
            checkpoint.rngs,
        );
        (run.dir.read_metrics().unwrap(), state)
    };
    let (alone, alone_checkpoint) = run_on(1);
    let (together, together_checkpoint) = run_on(3);
    assert_eq!(alone, together);
    assert!(
        alone_checkpoint == together_checkpoint,
        "the final states differ"
    );
}

/// The prompts a run of the quickstart with `overrides` starts round 0 from: the global one,
/// every client's local one, and the resolved configuration.
fn round_zero_prompts(overrides: &[&str]) -> (Vec<f32>, Vec<Vec<f32>>, RunConfig) {
    let dir = tempfile::tempdir().unwrap();
    let run = start_run(config(dir.path(), overrides)).unwrap();
    let sim = Simulation::of_run(&run, Cpu::new(), &mut Silent).unwrap();
    let checkpoint = sim.checkpoint(0);
    let locals: Vec<Vec<f32>> = checkpoint
        .clients
        .iter()
        .map(|c| c.local_prompt.as_ref().unwrap().values.clone())
        .collect();
    (checkpoint.global_prompt.unwrap().values, locals, run.config)
}

/// The message of the error the quickstart with `overrides` is refused with.
fn config_error(overrides: &[&str]) -> String {
    let overrides: Vec<Override> = overrides.iter().map(|o| o.parse().unwrap()).collect();
    RunConfig::quickstart_with(&overrides)
        .unwrap_err()
        .to_string()
}

/// `prompt.local_init`: by default every client's local prompt at round 0 is its own draw;
/// `common` starts them all from one (client 0's), as the released code does, and leaves the
/// global prompt as it was. The resolved configuration names the option only when it is set, so
/// a default configuration keeps the hash it had before the option existed.
#[test]
fn local_prompts_start_from_own_draws_or_one_common_draw() {
    let (own_global, own, own_config) = round_zero_prompts(&[]);
    let (common_global, common, common_config) =
        round_zero_prompts(&["prompt.local_init=\"common\""]);

    assert!(own.len() >= 2 && own[0].iter().any(|&x| x != 0.0));
    for (c, local) in own.iter().enumerate().skip(1) {
        assert_ne!(local, &own[0], "client {c} drew client 0's local prompt");
    }
    for (c, local) in common.iter().enumerate() {
        assert_eq!(
            local, &own[0],
            "client {c} does not start from the common draw"
        );
    }
    assert_eq!(common_global, own_global);
    assert_ne!(common_global, own[0]);

    assert!(!own_config.to_toml().contains("local_init"));
    assert!(common_config.to_toml().contains("local_init = \"common\""));
    let reread: RunConfig = toml::from_str(&common_config.to_toml()).unwrap();
    assert_eq!(reread, common_config);
}

/// `model.activation` of the tiny model: QuickGELU by default (and then absent from the resolved
/// configuration, whose hash stays what it was), GELU when asked — in both towers of the model a
/// run builds — and a value that is neither is refused naming the key.
#[test]
fn the_tiny_model_runs_the_configured_activation() {
    let dir = tempfile::tempdir().unwrap();
    let towers = |config: &RunConfig| {
        let clip = FrozenClip::from_config(Cpu::new(), &config.model).unwrap();
        let c = &clip.weights().config;
        let VisionConfig::Vit(vit) = &c.vision else {
            panic!("the tiny model is a ViT")
        };
        (c.text.as_clip().unwrap().activation, vit.activation)
    };
    let default = config(dir.path(), &[]);
    assert_eq!(
        towers(&default),
        (Activation::QuickGelu, Activation::QuickGelu)
    );
    assert!(!default.to_toml().contains("activation"));

    let gelu = config(dir.path(), &["model.activation=\"gelu\""]);
    assert_eq!(towers(&gelu), (Activation::Gelu, Activation::Gelu));
    assert!(gelu.to_toml().contains("activation = \"gelu\""));
    let reread: RunConfig = toml::from_str(&gelu.to_toml()).unwrap();
    assert_eq!(reread, gelu);

    let message = config_error(&["model.activation=\"relu\""]);
    assert!(
        message.contains("model.activation") && message.contains("relu"),
        "{message}"
    );
}

/// The ids open_clip's tokenizer gives `text` (tests/scripts/tokenizer_reference.py).
fn reference_ids(text: &str) -> Vec<u32> {
    let path = fixture("tokenizer").join("reference.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = json_array(&reference, "cases")
        .iter()
        .find(|case| case["text"] == text)
        .unwrap_or_else(|| panic!("no reference case {text:?}"));
    json_ids(case, "ids")
}

/// `prompt.ctx_init` (CoOp's context from words): the global prompt and every client's local
/// prompt start as the token embeddings of the words' tokens — the ids open_clip's tokenizer
/// gives, the rows of the model's embedding table — with `_` read as a space; a context length
/// other than the words' token count is refused naming the key and the count.
#[test]
fn contexts_start_from_words_as_coop_does() {
    let start = |overrides: &[&str]| {
        let (global, locals, config) = round_zero_prompts(overrides);
        ([vec![global], locals].concat(), config)
    };
    let words = "a centered satellite photo of";
    let ids = reference_ids(words);
    let n_ctx = format!("prompt.n_ctx={}", ids.len());
    let (sets, config) = start(&[&format!("prompt.ctx_init={words:?}"), &n_ctx]);

    let clip = FrozenClip::from_config(Cpu::new(), &config.model).unwrap();
    let text = &clip.weights().text;
    let width = text.width();
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&id| &text.token_embedding()[id as usize * width..][..width])
        .copied()
        .collect();
    assert!(sets.len() >= 3);
    for (i, set) in sets.iter().enumerate() {
        assert_eq!(
            set, &want,
            "prompt {i} (0: global) is not the words' embeddings"
        );
    }
    assert!(config.to_toml().contains(&format!("ctx_init = {words:?}")));

    let (underscored, _) = start(&["prompt.ctx_init=\"a_centered_satellite_photo_of\"", &n_ctx]);
    assert_eq!(underscored, sets);

    let message = config_error(&["prompt.ctx_init=\"a photo of a\"", "prompt.n_ctx=16"]);
    assert!(
        message.contains("prompt.ctx_init")
            && message.contains("is 4 tokens")
            && message.contains("prompt.n_ctx = 4"),
        "{message}"
    );
}

/// `ot.stopping`: the per-problem rule by default (absent from the resolved configuration), the
/// released code's batch rule when asked — reaching the OT head of the prompts trained — and
/// anything else refused naming the key.
#[test]
fn the_ot_stopping_rule_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let head = |config: &RunConfig| PromptSetup::of(config).unwrap().head;
    let default = config(dir.path(), &[]);
    assert!(!default.to_toml().contains("stopping"));
    assert!(matches!(
        head(&default),
        HeadChoice::Ot {
            stopping: OtStopping::PerProblem,
            ..
        }
    ));
    let released = config(dir.path(), &["ot.stopping=\"released\""]);
    assert!(released.to_toml().contains("stopping = \"released\""));
    assert!(matches!(
        head(&released),
        HeadChoice::Ot {
            stopping: OtStopping::Released,
            ..
        }
    ));
    let reread: RunConfig = toml::from_str(&released.to_toml()).unwrap();
    assert_eq!(reread, released);
    let message = config_error(&["ot.stopping=\"batch\""]);
    assert!(
        message.contains("ot.stopping") && message.contains("batch"),
        "{message}"
    );
}

/// `model.backbone` is a check the user may give, not a gate: without it any CLIP the files
/// describe loads (here open_clip's GELU fixture: 4-pixel patches at 24 pixels, 36 patches);
/// with one its weights must have that shape, whatever their activation, or the error names the
/// file and both shapes.
#[test]
fn the_backbone_is_an_optional_check() {
    let path = fixture("clip").join("gelu");
    let model = |backbone: &str| -> ModelConfig {
        toml::from_str(&format!("kind = \"clip\"\npath = {path:?}\n{backbone}")).unwrap()
    };
    let any = model("");
    assert!(!toml::to_string(&any).unwrap().contains("backbone"));
    let clip = FrozenClip::from_config(Cpu::new(), &any).unwrap();
    assert_eq!(clip.patches(), 36);
    assert_eq!(clip.image_size(), 24);

    let err = FrozenClip::from_config(Cpu::new(), &model("backbone = \"ViT-B/16\""))
        .err()
        .expect("a ViT-B/16 check on a small ViT");
    let message = err.to_string();
    assert!(
        message.contains("gelu")
            && message.contains("ViT-B/16")
            && message.contains("4-pixel patches at 24 pixels"),
        "{message}"
    );
}

/// BiomedCLIP trains through the same run as CLIP: the quickstart's digits on the BiomedCLIP
/// fixture (a BERT text tower, a timm ViT, 16-pixel images), its context started from words
/// that its own WordPiece vocabulary reads as two tokens (CLIP's would read "x-ray" as three),
/// and a context too long for the model refused once the model is loaded.
#[test]
fn biomedclip_trains_through_the_run() {
    let path = fixture("biomedclip");
    let model = format!("model={{ kind = \"clip\", path = {path:?} }}");
    let words = "chest x";
    let overrides = [
        model.as_str(),
        "prompt.n_ctx=2",
        "prompt.ctx_init=\"chest x\"",
        "federation.rounds=2",
    ];
    let (global, _, resolved) = round_zero_prompts(&overrides);
    let clip = FrozenClip::from_config(Cpu::new(), &resolved.model).unwrap();
    let ids = clip.tokenizer().encode(words);
    assert_eq!(ids, [44, 31]);
    let text = &clip.weights().text;
    let width = text.width();
    assert_eq!(width, 48);
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&id| &text.token_embedding()[id as usize * width..][..width])
        .copied()
        .collect();
    assert_eq!(
        global, want,
        "the global prompt starts as the words' embeddings"
    );

    let dir = tempfile::tempdir().unwrap();
    let rows = mean_rows(config(dir.path(), &overrides));
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert!(row.train_loss.unwrap().is_finite(), "{row:?}");
        assert!(row.accuracy.unwrap() >= 0.0);
    }

    // The model's context is 256 tokens: 253 context vectors leave no room for a name.
    let dir = tempfile::tempdir().unwrap();
    let run = start_run(config(dir.path(), &[&model, "prompt.n_ctx=253"])).unwrap();
    let message = train_run(&run, Cpu::new(), None, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("prompt.n_ctx is 253") && message.contains("256 tokens"),
        "{message}"
    );
}
