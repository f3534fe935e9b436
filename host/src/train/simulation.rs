//! The federated simulation: K clients in one process sharing one frozen CLIP, each with its own
//! data, local prompt and optimiser state; the server step is the core's aggregation rule.
//!
//! Every random draw derives from the run's seed through one ChaCha8 generator (saved in
//! checkpoints as `rng.training`) on a stream per use — prompt initialisation, and each
//! (round, client)'s batch order and augmentation — and the clients of a round from
//! [`ClientSampler`]. Nothing depends on the order work is done in or on how long it ran, so a
//! run stopped after round r and resumed from its checkpoint ends bit-identical to the
//! uninterrupted run.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use fedotp_core::protocol::{Aggregator, ClientUpdate, PromptShape};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::features::CachePlace;
use super::trainer::{prompt_class_names, LocalSchedule, PromptSetup};
use super::{FrozenClip, PromptTrainer, SplitFeatures, TrainError};
use crate::backend::Backend;
use crate::config::{FederatedData, Method, RunConfig};
use crate::data::{ClientSplit, Split};
use crate::fed::{ClientSampler, SgdState};
use crate::run::{
    Checkpoint, CheckpointLayout, ClientRound, ClientState, EvalStats, MetricsRow, PreparedRun,
    RngState, RoundMetrics, RowScope, RunSummary, Tensor,
};

/// The name of the training generator in checkpoints.
const TRAINING_RNG: &str = "training";
/// Stream of the prompt initialisation (client `c`'s local prompt: this plus `c + 1`).
const INIT_STREAM: u64 = 1 << 62;
/// Streams of local training: this plus `round << 24` plus the client.
const LOCAL_STREAM: u64 = 1 << 63;
/// Bytes in a MiB.
const MIB: u64 = 1 << 20;

/// What a simulation reports as it runs (every method has a default that ignores it).
pub trait Observer {
    /// `done` of `total` images of `split` ("train" or "test") through the image tower for the
    /// feature cache.
    fn caching(&mut self, _split: &str, _done: usize, _total: usize) {}
    /// Round `round` starts; `clients` train in it.
    fn round_started(&mut self, _round: u32, _clients: &[usize]) {}
    /// Client `client` has taken `done` of its `total` local steps.
    fn training(&mut self, _client: usize, _done: usize, _total: usize) {}
    /// Client `client` finished its local round.
    fn client_trained(&mut self, _client: usize) {}
    /// `done` of `total` clients are evaluated.
    fn evaluating(&mut self, _done: usize, _total: usize) {}
    /// Round `metrics.round` is complete: `mean` is its row of means.
    fn round_finished(&mut self, _metrics: &RoundMetrics, _mean: &MetricsRow, _took: Duration) {}
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {}

/// What a client keeps between rounds.
#[derive(Debug, Clone, PartialEq)]
struct ClientPrompts {
    /// Its context sets that never leave it (`sets − shared_sets` of them).
    local: Vec<f32>,
    /// Its optimiser state, over the whole context.
    optimizer: SgdState,
}

/// A federated run in memory.
pub struct Simulation<'r, B: Backend> {
    config: &'r RunConfig,
    data: &'r FederatedData,
    clip: FrozenClip<B>,
    trainer: PromptTrainer<B>,
    train: SplitFeatures<'r>,
    test: SplitFeatures<'r>,
    /// The server's prompt: the shared sets (empty when nothing is shared).
    global: Vec<f32>,
    clients: Vec<ClientPrompts>,
    rng: ChaCha8Rng,
    sampler: ClientSampler,
    next_round: u32,
}

impl<'r, B: Backend> Simulation<'r, B> {
    /// Sets up `config`'s run on `data`: loads the model onto `backend`, fills the feature
    /// caches (files under `cache_dir` beyond the memory budget), and starts from `checkpoint`
    /// (read from the path given with it, for messages) or from freshly initialised prompts.
    pub fn new(
        config: &'r RunConfig,
        data: &'r FederatedData,
        backend: B,
        checkpoint: Option<(&Checkpoint, &Path)>,
        cache_dir: &Path,
        observer: &mut dyn Observer,
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
        let size = clip.image_size() as u32;
        let normalize = config.dataset.normalize;
        let kind = trainer.feature_kind();
        let dataset = &data.dataset;
        let train_transform = config.dataset.train_transform.transform(size, normalize);
        let test_transform = config.dataset.test_transform.transform(size, normalize);
        let mut sim = Simulation {
            config,
            data,
            trainer,
            train: SplitFeatures::new(dataset, Split::Train, train_transform, kind),
            test: SplitFeatures::new(dataset, Split::Test, test_transform, kind),
            global: Vec::new(),
            clients: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(config.federation.seed),
            sampler: ClientSampler::new(
                data.partition.clients.len(),
                config.federation.frac,
                config.federation.seed,
            ),
            next_round: 0,
            clip,
        };
        match checkpoint {
            Some((checkpoint, path)) => sim.restore(checkpoint, path)?,
            None => sim.initialise(),
        }
        sim.fill_caches(cache_dir, observer)?;
        Ok(sim)
    }

    /// [`Simulation::new`] for a prepared run, from its checkpoint if it has one, caching
    /// features in its directory unless the configuration names another.
    pub fn of_run(
        run: &'r PreparedRun,
        backend: B,
        observer: &mut dyn Observer,
    ) -> Result<Self, TrainError> {
        let resume = run.checkpoint_to_resume();
        Simulation::new(
            &run.config,
            &run.data,
            backend,
            resume.as_ref().map(|(c, p)| (*c, p.as_path())),
            &run.dir.default_feature_cache_dir(),
            observer,
        )
    }

    /// Number of rounds the run trains (zero-shot CLIP: one evaluation).
    pub fn rounds(&self) -> u32 {
        if self.config.method.trains() {
            self.config.federation.rounds
        } else {
            1
        }
    }

    /// The first round not yet done.
    pub fn next_round(&self) -> u32 {
        self.next_round
    }

    /// Client `client`'s full context: the global prompt, then its local sets.
    pub fn context_of(&self, client: usize) -> Vec<f32> {
        let mut ctx = self.global.clone();
        ctx.extend_from_slice(&self.clients[client].local);
        ctx
    }

    fn stream(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = self.rng.clone();
        rng.set_stream(stream);
        rng.set_word_pos(0);
        rng
    }

    fn local_len(&self) -> usize {
        self.trainer.context_len() - self.trainer.global_len()
    }

    fn initialise(&mut self) {
        let (global_len, local_len) = (self.trainer.global_len(), self.local_len());
        self.global = self
            .trainer
            .init_context(global_len, &mut self.stream(INIT_STREAM));
        self.clients = (0..self.data.partition.clients.len())
            .map(|c| ClientPrompts {
                local: self
                    .trainer
                    .init_context(local_len, &mut self.stream(INIT_STREAM + 1 + c as u64)),
                optimizer: SgdState::default(),
            })
            .collect();
        self.next_round = 0;
    }

    /// The shapes this run's checkpoints have.
    pub fn checkpoint_layout(&self) -> CheckpointLayout {
        let set_len = self.trainer.set_len();
        let (n_ctx, width) = (self.trainer.n_ctx(), self.trainer.width());
        let shape = |len: usize| (len > 0).then(|| vec![len / set_len, n_ctx, width]);
        CheckpointLayout {
            clients: self.data.partition.clients.len(),
            global_prompt: shape(self.trainer.global_len()),
            local_prompt: shape(self.local_len()),
            parameters: self.trainer.context_len(),
        }
    }

    fn restore(&mut self, checkpoint: &Checkpoint, path: &Path) -> Result<(), TrainError> {
        checkpoint.check(&self.checkpoint_layout(), path)?;
        let rng = checkpoint.rngs.get(TRAINING_RNG).ok_or_else(|| {
            TrainError::Invalid(format!(
                "{}: no `rng.{TRAINING_RNG}` generator",
                path.display()
            ))
        })?;
        self.rng = rng.restore();
        self.global = checkpoint
            .global_prompt
            .as_ref()
            .map_or_else(Vec::new, |t| t.values.clone());
        self.clients = checkpoint
            .clients
            .iter()
            .map(|c| ClientPrompts {
                local: c
                    .local_prompt
                    .as_ref()
                    .map_or_else(Vec::new, |t| t.values.clone()),
                optimizer: c.optimizer.clone(),
            })
            .collect();
        self.next_round = checkpoint.round + 1;
        Ok(())
    }

    /// The state after round `round`, to save.
    pub fn checkpoint(&self, round: u32) -> Checkpoint {
        let layout = self.checkpoint_layout();
        let tensor = |shape: &Option<Vec<usize>>, values: &[f32]| {
            shape
                .clone()
                .and_then(|shape| Tensor::new(shape, values.to_vec()))
        };
        Checkpoint {
            round,
            config_hash: self.config.hash(),
            global_prompt: tensor(&layout.global_prompt, &self.global),
            clients: self
                .clients
                .iter()
                .map(|c| ClientState {
                    local_prompt: tensor(&layout.local_prompt, &c.local),
                    optimizer: c.optimizer.clone(),
                })
                .collect(),
            rngs: BTreeMap::from([(TRAINING_RNG.to_string(), RngState::of(&self.rng))]),
        }
    }

    /// Caches the image tower's outputs for every split that is not augmented.
    fn fill_caches(&mut self, dir: &Path, observer: &mut dyn Observer) -> Result<(), TrainError> {
        let cache = &self.config.cache;
        if !cache.enabled {
            return Ok(());
        }
        let dir = cache.disk_dir.as_deref().unwrap_or(dir);
        let mut budget = cache.memory_budget_mib.saturating_mul(MIB);
        let batch = self.config.federation.eval_batch_size;
        let clients = &self.data.partition.clients;
        let needs_train = self.config.method.trains() && !self.train.is_augmented();
        let needs_test = !self.test.is_augmented();
        let samples_of = |split: fn(&ClientSplit) -> &Vec<usize>| {
            let mut samples: Vec<usize> = clients.iter().flat_map(split).copied().collect();
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
            let place = CachePlace {
                memory_budget: budget,
                disk_dir: dir,
                batch,
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

    /// Trains round `round` (the sampled clients, then the server step) and evaluates every
    /// client if the schedule says so.
    pub fn run_round(
        &mut self,
        round: u32,
        observer: &mut dyn Observer,
    ) -> Result<RoundMetrics, TrainError> {
        let mut results: BTreeMap<usize, ClientRound> = BTreeMap::new();
        if self.config.method.trains() {
            let sampled = self.sampler.clients(round);
            observer.round_started(round, &sampled);
            for client in self.train_clients(round, &sampled, observer)? {
                results.insert(client.client, client);
            }
        } else {
            observer.round_started(round, &[]);
        }
        if self.config.federation.evaluates(round) || !self.config.method.trains() {
            for (client, eval) in self.evaluate(observer)?.into_iter().enumerate() {
                let entry = results.entry(client).or_insert(ClientRound {
                    client,
                    train: None,
                    eval: None,
                });
                entry.eval = eval;
            }
        }
        self.next_round = round + 1;
        Ok(RoundMetrics {
            round,
            clients: results.into_values().collect(),
        })
    }

    /// Local training of `sampled` from the round's global prompt, then FedAvg of their shared
    /// sets through the core's aggregator.
    fn train_clients(
        &mut self,
        round: u32,
        sampled: &[usize],
        observer: &mut dyn Observer,
    ) -> Result<Vec<ClientRound>, TrainError> {
        let global_len = self.global.len();
        // The server of this round, for methods that share a prompt.
        let mut server = if global_len > 0 {
            let width = self.trainer.width() as u32;
            let shape = PromptShape::new(global_len as u32 / width, width).ok_or_else(|| {
                TrainError::Invalid(format!("a global prompt of {global_len} values"))
            })?;
            let server = Aggregator::new(
                shape,
                round,
                vec![0.0f64; global_len],
                vec![0u32; sampled.len()],
            )
            .map_err(|source| TrainError::Aggregate {
                round,
                client: None,
                source,
            })?;
            Some(server)
        } else {
            None
        };
        let schedule = LocalSchedule {
            epochs: self.config.federation.local_epochs,
            batch_size: self.config.batch_size(),
        };
        let anchor = self.global.clone();
        let mut rounds = Vec::with_capacity(sampled.len());
        for &client in sampled {
            let samples = &self.data.partition.clients[client].train;
            let mut ctx = self.context_of(client);
            let mut rng = self.stream(LOCAL_STREAM + ((round as u64) << 24) + client as u64);
            let stats = self.trainer.train(
                &self.clip,
                &mut ctx,
                &mut self.clients[client].optimizer,
                (!anchor.is_empty()).then_some(&anchor[..]),
                &self.train,
                samples,
                schedule,
                &mut rng,
                &mut |done, total| {
                    observer.training(client, done, total);
                    ControlFlow::Continue(())
                },
            )?;
            let (global_part, local_part) = ctx.split_at(global_len);
            self.clients[client].local = local_part.to_vec();
            if let Some(server) = &mut server {
                let update = ClientUpdate {
                    round,
                    client: client as u32,
                    samples: samples.len() as u32,
                    shape: server.shape(),
                    prompt: global_part,
                    loss: stats.loss.map(|l| l as f32),
                    accuracy: stats.accuracy.map(|a| a as f32),
                };
                server
                    .add(&update)
                    .map_err(|source| TrainError::Aggregate {
                        round,
                        client: Some(client),
                        source,
                    })?;
            }
            observer.client_trained(client);
            rounds.push(ClientRound {
                client,
                train: Some(stats),
                eval: None,
            });
        }
        if let Some(server) = &server {
            if !server.clients().is_empty() {
                server
                    .finish(&mut self.global)
                    .map_err(|source| TrainError::Aggregate {
                        round,
                        client: None,
                        source,
                    })?;
            }
        }
        Ok(rounds)
    }

    /// Every client on its own test split with its personal prompts (`None` for a client
    /// without test samples).
    pub fn evaluate(
        &mut self,
        observer: &mut dyn Observer,
    ) -> Result<Vec<Option<EvalStats>>, TrainError> {
        let clients = self.data.partition.clients.len();
        let batch = self.config.federation.eval_batch_size;
        let mut out = Vec::with_capacity(clients);
        for client in 0..clients {
            let samples = &self.data.partition.clients[client].test;
            let eval = if samples.is_empty() {
                None
            } else {
                let ctx = self.context_of(client);
                let evaluation = self
                    .trainer
                    .evaluate(&self.clip, &ctx, &self.test, samples, batch)?;
                Some(evaluation.stats)
            };
            out.push(eval);
            observer.evaluating(client + 1, clients);
        }
        Ok(out)
    }
}

/// The row of means of `metrics`.
pub fn mean_row(metrics: &RoundMetrics) -> MetricsRow {
    metrics
        .rows()
        .into_iter()
        .find(|row| row.client == RowScope::Mean)
        .expect("a round's rows end with their means")
}

/// Trains a prepared run on `backend` to its last round, or until `stop_after` (a checkpoint
/// is saved there, so `--resume` continues): metrics after every round, checkpoints as
/// configured, and the summary of what is recorded at the end (`None` if nothing was
/// evaluated).
pub fn train_run<B: Backend>(
    run: &PreparedRun,
    backend: B,
    stop_after: Option<u32>,
    observer: &mut dyn Observer,
) -> Result<Option<RunSummary>, TrainError> {
    let config = &run.config;
    let mut sim = Simulation::of_run(run, backend, observer)?;
    let mut writer = run.dir.metrics_writer()?;
    let rounds = sim.rounds();
    let last = stop_after.map_or(rounds, |stop| rounds.min(stop.saturating_add(1)));
    for round in sim.next_round()..last {
        let started = Instant::now();
        let metrics = sim.run_round(round, observer)?;
        writer.append(&metrics)?;
        if config.output.checkpoints(round, rounds) || round + 1 == last {
            run.dir
                .save_checkpoint(&sim.checkpoint(round), config.output.keep_checkpoints)?;
        }
        observer.round_finished(&metrics, &mean_row(&metrics), started.elapsed());
    }
    let summary = RunSummary::of(&run.dir.read_metrics()?);
    if let Some(summary) = &summary {
        run.dir.write_summary(summary)?;
    }
    Ok(summary)
}
