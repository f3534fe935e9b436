//! What every client of a run shares — the frozen model, the prompt trainer, the image features
//! and the run's generator — and the two things a client does with them: a local round from
//! the round's global prompt, and an evaluation with its personal prompts.
//!
//! The in-process [`Simulation`](super::Simulation) runs every client on one [`ClientRunner`];
//! a federated node ([`Participant`](super::Participant)) runs its own client on one. Both call
//! the same code with the same random streams, which is why a Flower federation of the
//! quickstart ends bit-identical to `fedotp train`'s simulation of it.
//!
//! Every random draw derives from the run's seed through one ChaCha8 generator (saved in
//! checkpoints as `rng.training`) on a stream per use — prompt initialisation, and each
//! (round, client)'s batch order and augmentation. Nothing depends on the order work is done in
//! or on which process does it.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::features::CachePlace;
use super::simulation::{Observer, Silent};
use super::trainer::{prompt_class_names, LocalSchedule, PromptSetup};
use super::{FrozenClip, PromptTrainer, SplitFeatures, TrainError};
use crate::backend::Backend;
use crate::clip::{ClipConfig, TextTowerConfig, VisionConfig};
use crate::config::{FederatedData, LocalInit, Method, ModelConfig, RunConfig};
use crate::data::{ClientSplit, Split};
use crate::fed::SgdState;
use crate::memory::{available_memory, f32_bytes, MemoryEstimate};
use crate::run::{CheckpointLayout, EvalStats, RunError, TrainStats};

/// Stream of the prompt initialisation (client `c`'s local prompt: this plus `c + 1`).
const INIT_STREAM: u64 = 1 << 62;
/// Streams of local training: this plus `round << 24` plus the client.
const LOCAL_STREAM: u64 = 1 << 63;
/// Bytes in a MiB.
const MIB: u64 = 1 << 20;

/// The host memory a run needs besides the model's weights, by part: the in-memory part of the
/// feature cache and, when the backend computes in host memory, the text tower's activations
/// kept for the backward pass over every class prompt (`prompts` of `context` tokens) and one
/// image-tower layer over a batch of images. An estimate of the largest buffers, made to refuse
/// a configuration that cannot fit before it starts — not an account of every allocation.
fn run_memory(
    config: &RunConfig,
    data: &FederatedData,
    model: &ClipConfig,
    (prompts, context): (usize, usize),
    activations_on_host: bool,
) -> MemoryEstimate {
    let samples =
        (data.dataset.samples(Split::Train).len() + data.dataset.samples(Split::Test).len()) as u64;
    let images = (config.batch_size().max(config.federation.eval_batch_size) as u64).min(samples);
    let side = model.vision.image_size() as u64;
    let tokens = model.vision.tokens() as u64;
    let image_layer = match &model.vision {
        VisionConfig::Vit(vit) => {
            f32_bytes(&[images, tokens, 4 * vit.width as u64 + vit.mlp_width as u64])
                .saturating_add(f32_bytes(&[images, vit.heads as u64, tokens, tokens]))
        }
        // The first stage's map (a quarter of the side, 4·width channels) holds the most.
        VisionConfig::ResNet(resnet) => {
            f32_bytes(&[images, side / 4, side / 4, 3 * 4 * resnet.width as u64])
        }
    };
    // The batch's pixels in, its projected tokens out.
    let pixels = f32_bytes(&[images, 3, side, side]).saturating_add(f32_bytes(&[
        images,
        tokens,
        model.embed_dim as u64,
    ]));
    let cache = if config.cache.enabled {
        f32_bytes(&[samples, tokens, model.embed_dim as u64])
            .min(config.cache.memory_budget_mib.saturating_mul(MIB))
    } else {
        0
    };
    let estimate = MemoryEstimate::new().with("image-feature cache", cache);
    if !activations_on_host {
        // A GPU's allocator reports what does not fit on it as an error of its own.
        return estimate;
    }
    estimate
        .with(
            "text-tower activations",
            text_activations(model, (prompts, context)),
        )
        .with(
            "image-tower activations",
            image_layer.saturating_add(pixels),
        )
}

/// Bytes of the text tower's activations kept for the backward pass over `prompts` prompts of
/// `context` tokens: per layer the residual stream, the normalised inputs, Q, K, V, the attention
/// output and the MLP's hidden layer before and after its activation, and the attention
/// probabilities.
/// A BERT tower keeps fewer of these per layer; the estimate is the same bound for both.
fn text_activations(model: &ClipConfig, (prompts, context): (usize, usize)) -> u64 {
    let (width, mlp_width, heads, layers) = match &model.text {
        TextTowerConfig::Clip(text) => (text.width, text.mlp_width, text.heads, text.layers),
        TextTowerConfig::Bert(bert) => (bert.width, bert.mlp_width, bert.heads, bert.layers),
    };
    let (prompts, context, width) = (prompts as u64, context as u64, width as u64);
    let mlp_width = mlp_width as u64;
    f32_bytes(&[prompts, context, 8 * width + 2 * mlp_width])
        .saturating_add(f32_bytes(&[prompts, heads as u64, context, context]))
        .saturating_mul(layers as u64)
}

/// What a client keeps between rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientPrompts {
    /// Its context sets that never leave it (`sets − shared_sets` of them).
    pub local: Vec<f32>,
    /// Its optimiser state, over the whole context.
    pub optimizer: SgdState,
}

/// A client's local round: the shared part of its trained context and how training went.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRound {
    /// The context's shared sets after training (empty when the method shares nothing).
    pub global_part: Vec<f32>,
    /// Training samples the client holds: its weight in the server's average.
    pub samples: usize,
    /// Loss, accuracy and skipped batches of the round.
    pub stats: TrainStats,
}

/// The frozen model, prompt trainer and image features of a run's clients.
pub struct ClientRunner<'r, B: Backend> {
    config: &'r RunConfig,
    data: &'r FederatedData,
    clip: FrozenClip<B>,
    /// One trainer (model and workspace) per client computed at once; the first always exists.
    trainers: Vec<PromptTrainer<B>>,
    train: SplitFeatures<'r>,
    test: SplitFeatures<'r>,
    rng: ChaCha8Rng,
}

impl<'r, B: Backend> ClientRunner<'r, B> {
    /// Loads `config`'s model onto `backend` and sets up the prompts of its method for `data`'s
    /// classes; the generator starts from the run's seed. No feature is cached yet.
    pub fn new(
        config: &'r RunConfig,
        data: &'r FederatedData,
        backend: B,
    ) -> Result<Self, TrainError> {
        let clip = FrozenClip::from_config(backend, &config.model)?;
        let class_names = prompt_class_names(&data.dataset);
        // Every method but zero-shot CLIP has a prompt setup.
        let trainer = match (&config.method, PromptSetup::of(config)) {
            (_, Some(setup)) => PromptTrainer::new(&clip, &class_names, setup)?,
            (Method::ZeroShot { template }, None) => {
                PromptTrainer::zero_shot(&clip, &class_names, template)?
            }
            (method, None) => {
                return Err(TrainError::Invalid(format!(
                    "{} has no prompt setup",
                    method.label()
                )))
            }
        };
        // The model's weights were checked as they were drawn or read; what training and
        // evaluation add is checked before any of it is allocated.
        let on_host = clip.backend().buffers_in_host_memory();
        run_memory(
            config,
            data,
            &clip.weights().config,
            trainer.text_batch(),
            on_host,
        )
        .check("this run")?;
        let size = clip.image_size() as u32;
        let normalize = config
            .dataset
            .normalize
            .statistics(clip.weights().config.image_stats);
        let kind = trainer.feature_kind();
        let dataset = &data.dataset;
        let train_transform = config.dataset.train_transform.transform(size, normalize);
        let test_transform = config.dataset.test_transform.transform(size, normalize);
        Ok(ClientRunner {
            config,
            data,
            trainers: vec![trainer],
            train: SplitFeatures::new(dataset, Split::Train, train_transform, kind),
            test: SplitFeatures::new(dataset, Split::Test, test_transform, kind),
            rng: ChaCha8Rng::seed_from_u64(config.federation.seed),
            clip,
        })
    }

    /// The run's generator (for checkpoints).
    pub fn rng(&self) -> &ChaCha8Rng {
        &self.rng
    }

    /// Continues from a saved generator.
    pub fn set_rng(&mut self, rng: ChaCha8Rng) {
        self.rng = rng;
    }

    /// Number of clients in the run's partition.
    pub fn clients(&self) -> usize {
        self.data.partition.clients.len()
    }

    /// Floats of the shared (global) part of a client's context.
    pub fn global_len(&self) -> usize {
        self.trainers[0].global_len()
    }

    /// Floats of the part of a client's context that stays on it.
    pub fn local_len(&self) -> usize {
        self.trainers[0].context_len() - self.trainers[0].global_len()
    }

    /// Text-tower width: the length of one context vector.
    pub fn width(&self) -> usize {
        self.trainers[0].width()
    }

    /// The shapes of checkpoints holding `clients` clients' states.
    pub fn checkpoint_layout(&self, clients: usize) -> CheckpointLayout {
        let set_len = self.trainers[0].set_len();
        let (n_ctx, width) = (self.trainers[0].n_ctx(), self.trainers[0].width());
        let shape = |len: usize| (len > 0).then(|| vec![len / set_len, n_ctx, width]);
        CheckpointLayout {
            clients,
            global_prompt: shape(self.global_len()),
            local_prompt: shape(self.local_len()),
            parameters: self.trainers[0].context_len(),
        }
    }

    fn stream(&self, stream: u64) -> ChaCha8Rng {
        stream_of(&self.rng, stream)
    }

    /// The global prompt every client starts from (drawn from the run's seed, so every process
    /// of a federation draws the same).
    pub fn initial_global(&self) -> Vec<f32> {
        self.trainers[0].init_context(self.global_len(), &mut self.stream(INIT_STREAM))
    }

    /// Client `client`'s state before its first round: its local prompt drawn on its own stream,
    /// or on client 0's for every client when `prompt.local_init` is `common`.
    pub fn initial_client(&self, client: usize) -> ClientPrompts {
        let drawn_as = match self.config.prompt.local_init {
            LocalInit::Own => client,
            LocalInit::Common => 0,
        };
        let mut rng = self.stream(INIT_STREAM + 1 + drawn_as as u64);
        ClientPrompts {
            local: self.trainers[0].init_context(self.local_len(), &mut rng),
            optimizer: SgdState::default(),
        }
    }

    /// Training samples of client `client`.
    pub fn train_samples(&self, client: usize) -> usize {
        self.data.partition.clients[client].train.len()
    }

    /// Caches the image tower's outputs of `clients`' samples for every split that is not
    /// augmented (files under `dir`, or the configured directory, beyond the memory budget).
    /// With `keep`, each split's cache is also kept in that directory for later processes, and
    /// taken from there when a kept one was computed from the same model, data and samples.
    pub fn fill_caches(
        &mut self,
        clients: &[usize],
        dir: &Path,
        keep: Option<&Path>,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        let cache = &self.config.cache;
        if !cache.enabled {
            return Ok(());
        }
        let dir = cache.disk_dir.as_deref().unwrap_or(dir);
        let mut budget = cache.memory_budget_mib.saturating_mul(MIB);
        let batch = self.config.federation.eval_batch_size;
        let partition = &self.data.partition.clients;
        let needs_train = self.config.method.trains() && !self.train.is_augmented();
        let needs_test = !self.test.is_augmented();
        let samples_of = |split: fn(&ClientSplit) -> &Vec<usize>| {
            let mut samples: Vec<usize> = clients
                .iter()
                .flat_map(|&c| split(&partition[c]))
                .copied()
                .collect();
            samples.sort_unstable();
            samples.dedup();
            samples
        };
        for (name, features, samples) in [
            (
                "train",
                &mut self.train,
                needs_train.then(|| samples_of(|c| &c.train)),
            ),
            (
                "test",
                &mut self.test,
                needs_test.then(|| samples_of(|c| &c.test)),
            ),
        ] {
            let Some(samples) = samples else { continue };
            // The key (model, data, samples) is computed only for a cache that is kept.
            let kept = match keep {
                Some(dir) => Some((
                    dir.join(format!("features-{name}.f32")),
                    cache_key(self.config, name, &samples)?,
                )),
                None => None,
            };
            let place = CachePlace {
                memory_budget: budget,
                disk_dir: dir,
                batch,
                kept: kept.as_ref().map(|(path, key)| (path.as_path(), *key)),
            };
            features.fill_cache(&self.clip, &samples, place, &mut |done, total| {
                observer.caching(name, done, total)
            })?;
            let cached = features.cache().expect("just filled");
            let in_memory = cached.split().0 * cached.record_len() * std::mem::size_of::<f32>();
            budget = budget.saturating_sub(in_memory as u64);
        }
        Ok(())
    }

    /// Client `client`'s local round `round`: its context (`global`, then its local sets)
    /// trained for the configured local epochs on its training samples; `prompts` keeps the
    /// trained local sets and optimiser state. `global` is also FedProx's proximal anchor.
    pub fn train_client(
        &mut self,
        round: u32,
        client: usize,
        global: &[f32],
        prompts: &mut ClientPrompts,
        observer: &mut dyn Observer,
    ) -> Result<LocalRound, TrainError> {
        let mut rounds = self.train_clients(round, global, vec![(client, prompts)], observer)?;
        rounds
            .pop()
            .ok_or_else(|| TrainError::Invalid("no client trained".into()))
    }

    /// [`ClientRunner::train_client`] for each `(client, prompts)`, results in the same order.
    /// Clients train concurrently where that pays ([`ClientRunner::concurrency`]); each is
    /// computed exactly as it would be alone, so the results do not depend on it.
    pub fn train_clients(
        &mut self,
        round: u32,
        global: &[f32],
        clients: Vec<(usize, &mut ClientPrompts)>,
        observer: &mut dyn Observer,
    ) -> Result<Vec<LocalRound>, TrainError> {
        self.check_global(global)?;
        let observer = Mutex::new(observer);
        self.run_jobs(clients, |shared, trainer, (client, prompts)| {
            let local = shared.local_round(
                trainer,
                round,
                client,
                global,
                prompts,
                &mut |done, total| {
                    lock(&observer).training(client, done, total);
                },
            )?;
            lock(&observer).client_trained(client);
            Ok(local)
        })
    }

    /// Client `client` on its own test split with its personal prompts (`global`, then its
    /// local sets); `None` for a client without test samples.
    pub fn evaluate_client(
        &mut self,
        client: usize,
        global: &[f32],
        prompts: &ClientPrompts,
    ) -> Result<Option<EvalStats>, TrainError> {
        let mut stats = self.evaluate_clients(global, vec![(client, prompts)], &mut Silent)?;
        stats
            .pop()
            .ok_or_else(|| TrainError::Invalid("no client evaluated".into()))
    }

    /// [`ClientRunner::evaluate_client`] for each `(client, prompts)`, results in the same order,
    /// concurrently where that pays; `observer` hears of each evaluation as it ends.
    pub fn evaluate_clients(
        &mut self,
        global: &[f32],
        clients: Vec<(usize, &ClientPrompts)>,
        observer: &mut dyn Observer,
    ) -> Result<Vec<Option<EvalStats>>, TrainError> {
        self.check_global(global)?;
        let total = clients.len();
        let (observer, done) = (Mutex::new(observer), AtomicUsize::new(0));
        self.run_jobs(clients, |shared, trainer, (client, prompts)| {
            let stats = shared.evaluation(trainer, client, global, prompts)?;
            lock(&observer).evaluating(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            Ok(stats)
        })
    }

    /// How many clients to compute at once: one per thread of the pool when the backend
    /// computes in host memory (a GPU serves one caller at a time), bounded by the jobs and by
    /// the memory each concurrent client's text-tower activations take (half of what is
    /// available, at most).
    pub fn concurrency(&self, jobs: usize) -> usize {
        if !self.clip.backend().buffers_in_host_memory() {
            return 1;
        }
        let per_client =
            text_activations(&self.clip.weights().config, self.trainers[0].text_batch()).max(1);
        let by_memory = available_memory().map_or(usize::MAX, |bytes| {
            usize::try_from(bytes / 2 / per_client).unwrap_or(usize::MAX)
        });
        rayon::current_num_threads().min(jobs).min(by_memory).max(1)
    }

    /// Runs `work` on each job with a trainer of its own, [`ClientRunner::concurrency`] jobs at
    /// a time (each pool task takes the next job until none is left); results in job order.
    fn run_jobs<J: Send, T: Send>(
        &mut self,
        jobs: Vec<J>,
        work: impl Fn(&Shared<'_, 'r, B>, &mut PromptTrainer<B>, J) -> Result<T, TrainError> + Sync,
    ) -> Result<Vec<T>, TrainError> {
        let concurrency = self.concurrency(jobs.len());
        while self.trainers.len() < concurrency {
            let trainer = self.trainers[0].fork(&self.clip)?;
            self.trainers.push(trainer);
        }
        let shared = Shared {
            config: self.config,
            data: self.data,
            clip: &self.clip,
            train: &self.train,
            test: &self.test,
            rng: &self.rng,
        };
        let trainers = &mut self.trainers[..concurrency];
        if let [trainer] = trainers {
            // One at a time: on the calling thread, which a GPU backend needs.
            return jobs
                .into_iter()
                .map(|job| work(&shared, trainer, job))
                .collect();
        }
        let queue = Mutex::new(jobs.into_iter().enumerate());
        let done = Mutex::new(Vec::new());
        trainers.par_iter_mut().for_each(|trainer| loop {
            let Some((index, job)) = lock(&queue).next() else {
                break;
            };
            let result = work(&shared, trainer, job);
            lock(&done).push((index, result));
        });
        let mut done = done
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        done.sort_by_key(|&(index, _)| index);
        done.into_iter().map(|(_, result)| result).collect()
    }

    fn check_global(&self, global: &[f32]) -> Result<(), TrainError> {
        if global.len() != self.global_len() {
            return Err(TrainError::Invalid(format!(
                "a global prompt of {} values, the run's has {}",
                global.len(),
                self.global_len()
            )));
        }
        Ok(())
    }
}

/// What clients computed at once share, borrowed from a [`ClientRunner`] while its trainers
/// are lent to them.
struct Shared<'a, 'r, B: Backend> {
    config: &'r RunConfig,
    data: &'r FederatedData,
    clip: &'a FrozenClip<B>,
    train: &'a SplitFeatures<'r>,
    test: &'a SplitFeatures<'r>,
    rng: &'a ChaCha8Rng,
}

impl<B: Backend> Shared<'_, '_, B> {
    /// Client `client`'s local round with `trainer` (see [`ClientRunner::train_client`]);
    /// `progress(done, total)` follows its steps.
    fn local_round(
        &self,
        trainer: &mut PromptTrainer<B>,
        round: u32,
        client: usize,
        global: &[f32],
        prompts: &mut ClientPrompts,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<LocalRound, TrainError> {
        let schedule = LocalSchedule {
            epochs: self.config.federation.local_epochs,
            batch_size: self.config.batch_size(),
        };
        let samples = &self.data.partition.clients[client].train;
        let mut ctx = [global, &prompts.local[..]].concat();
        let mut rng = stream_of(
            self.rng,
            LOCAL_STREAM + ((round as u64) << 24) + client as u64,
        );
        let stats = trainer.train(
            self.clip,
            &mut ctx,
            &mut prompts.optimizer,
            (!global.is_empty()).then_some(global),
            self.train,
            samples,
            schedule,
            &mut rng,
            &mut |done, total| {
                progress(done, total);
                ControlFlow::Continue(())
            },
        )?;
        let (global_part, local_part) = ctx.split_at(global.len());
        prompts.local = local_part.to_vec();
        Ok(LocalRound {
            global_part: global_part.to_vec(),
            samples: samples.len(),
            stats,
        })
    }

    /// Client `client` on its test split with `trainer` (see
    /// [`ClientRunner::evaluate_client`]).
    fn evaluation(
        &self,
        trainer: &mut PromptTrainer<B>,
        client: usize,
        global: &[f32],
        prompts: &ClientPrompts,
    ) -> Result<Option<EvalStats>, TrainError> {
        let samples = &self.data.partition.clients[client].test;
        if samples.is_empty() {
            return Ok(None);
        }
        let ctx = [global, &prompts.local[..]].concat();
        let batch = self.config.federation.eval_batch_size;
        let evaluation = trainer.evaluate(self.clip, &ctx, self.test, samples, batch)?;
        Ok(Some(evaluation.stats))
    }
}

/// The run's generator on stream `stream`, from its start.
fn stream_of(rng: &ChaCha8Rng, stream: u64) -> ChaCha8Rng {
    let mut rng = rng.clone();
    rng.set_stream(stream);
    rng.set_word_pos(0);
    rng
}

/// `mutex`'s value; a panic elsewhere while holding it (which reaches the caller anyway) does
/// not hide it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a split's cached features are computed from, as a SHA-256 digest: the model and dataset
/// configuration, the seed (which draws the federated digits' styles), the split, the samples,
/// and the size and modification time of the weight files (a configuration names weights by
/// path, and hashing them would cost more than a node's start-up may).
fn cache_key(config: &RunConfig, split: &str, samples: &[usize]) -> Result<[u8; 32], TrainError> {
    let mut hash = Sha256::new();
    // Version 2: the normalisation may come from the weights' configuration file.
    hash.update(b"fedotp feature cache 2\0");
    let described =
        serde_json::to_vec(&(&config.model, &config.dataset, config.federation.seed))
            .map_err(|e| TrainError::Invalid(format!("the configuration cannot be hashed: {e}")))?;
    hash.update(&described);
    hash.update(split.as_bytes());
    for &sample in samples {
        hash.update((sample as u64).to_le_bytes());
    }
    if let ModelConfig::Clip { path, .. } = &config.model {
        let mut files = vec![path.clone()];
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| RunError::io(path, e))?;
            files = entries
                .map(|entry| entry.map(|e| e.path()).map_err(|e| RunError::io(path, e)))
                .collect::<Result<_, _>>()?;
            files.sort();
        }
        for file in files {
            let meta = std::fs::metadata(&file).map_err(|e| RunError::io(&file, e))?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            hash.update(file.as_os_str().as_encoded_bytes());
            hash.update(meta.len().to_le_bytes());
            hash.update(modified.to_le_bytes());
        }
    }
    Ok(hash.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Override;

    /// A run on an ImageFolder with `window` (a TOML value) as `dataset.gray_window`, if any.
    fn image_folder_run(window: Option<&str>) -> RunConfig {
        let mut sets = vec![
            r#"dataset.source={ kind = "image_folder", train = "xray/train", test = "xray/test" }"#
                .to_string(),
            r#"dataset.partition={ kind = "iid", clients = 2 }"#.to_string(),
        ];
        sets.extend(window.map(|w| format!("dataset.gray_window={w}")));
        let sets: Vec<Override> = sets.iter().map(|s| s.parse().unwrap()).collect();
        RunConfig::quickstart_with(&sets).unwrap()
    }

    /// Features kept under one window are not reused under another, nor without one.
    #[test]
    fn the_feature_cache_key_names_the_gray_window() {
        let key = |window| cache_key(&image_folder_run(window), "train", &[0, 1, 2]).unwrap();
        let keys = [
            key(None),
            key(Some(r#""full_range""#)),
            key(Some("{ centre = 1000.0, width = 401.0 }")),
            key(Some("{ centre = 1000.0, width = 402.0 }")),
            key(Some("{ centre = 1001.0, width = 401.0 }")),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The same window, the same key.
        assert_eq!(
            keys[2],
            key(Some("{ centre = 1000, width = 401 }")),
            "integer and float spellings of one window"
        );
    }
}
