//! The federated simulation: K clients in one process sharing one frozen CLIP, each with its own
//! data, local prompt and optimiser state; the server step is the core's aggregation rule.
//!
//! The clients' work is [`ClientRunner`]'s (random streams per use, see there) and the clients
//! of a round come from [`ClientSampler`]. Nothing depends on the order work is done in or on how
//! long it ran, so a run stopped after round r and resumed from its checkpoint ends
//! bit-identical to the uninterrupted run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fedotp_core::protocol::{Aggregator, ClientUpdate, PromptShape};

use super::clients::{ClientPrompts, ClientRunner};
use super::TrainError;
use crate::backend::Backend;
use crate::config::{FederatedData, RunConfig};
use crate::fed::ClientSampler;
use crate::run::{
    Checkpoint, CheckpointLayout, ClientRound, ClientState, EvalStats, MetricsRow, PreparedRun,
    RngState, RoundMetrics, RowScope, RunSummary, Tensor,
};

/// The name of the training generator in checkpoints.
pub(super) const TRAINING_RNG: &str = "training";

/// What a simulation reports as it runs (every method has a default that ignores it).
pub trait Observer: Send {
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

/// A federated run in memory.
pub struct Simulation<'r, B: Backend> {
    config: &'r RunConfig,
    runner: ClientRunner<'r, B>,
    /// The server's prompt: the shared sets (empty when nothing is shared).
    global: Vec<f32>,
    clients: Vec<ClientPrompts>,
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
        let runner = ClientRunner::new(config, data, backend)?;
        let clients = runner.clients();
        let mut sim = Simulation {
            config,
            global: runner.initial_global(),
            clients: (0..clients).map(|c| runner.initial_client(c)).collect(),
            sampler: ClientSampler::new(clients, config.federation.frac, config.federation.seed),
            next_round: 0,
            runner,
        };
        if let Some((checkpoint, path)) = checkpoint {
            sim.restore(checkpoint, path)?;
        }
        let all: Vec<usize> = (0..clients).collect();
        sim.runner.fill_caches(&all, cache_dir, None, observer)?;
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
        self.config.rounds()
    }

    /// The first round not yet done.
    pub fn next_round(&self) -> u32 {
        self.next_round
    }

    /// Client `client`'s full context: the global prompt, then its local sets.
    pub fn context_of(&self, client: usize) -> Vec<f32> {
        [&self.global[..], &self.clients[client].local[..]].concat()
    }

    /// The shapes this run's checkpoints have.
    pub fn checkpoint_layout(&self) -> CheckpointLayout {
        self.runner.checkpoint_layout(self.clients.len())
    }

    fn restore(&mut self, checkpoint: &Checkpoint, path: &Path) -> Result<(), TrainError> {
        checkpoint.check(&self.checkpoint_layout(), path)?;
        let rng = checkpoint.rngs.get(TRAINING_RNG).ok_or_else(|| {
            TrainError::Invalid(format!(
                "{}: no `rng.{TRAINING_RNG}` generator",
                path.display()
            ))
        })?;
        self.runner.set_rng(rng.restore());
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
            rngs: BTreeMap::from([(TRAINING_RNG.to_string(), RngState::of(self.runner.rng()))]),
        }
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
        if self.config.evaluates(round) {
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
            let width = self.runner.width() as u32;
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
        // The sampled clients' states, in the order sampled (trained concurrently where that
        // pays; the server adds their updates in this order either way).
        let mut states: BTreeMap<usize, &mut ClientPrompts> =
            self.clients.iter_mut().enumerate().collect();
        let jobs: Vec<(usize, &mut ClientPrompts)> = sampled
            .iter()
            .map(|&client| {
                states
                    .remove(&client)
                    .map(|state| (client, state))
                    .ok_or_else(|| {
                        TrainError::Invalid(format!(
                            "client {client} sampled twice or not in the run"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        let locals = self
            .runner
            .train_clients(round, &self.global, jobs, observer)?;
        let mut rounds = Vec::with_capacity(sampled.len());
        for (&client, local) in sampled.iter().zip(locals) {
            if let Some(server) = &mut server {
                let update = ClientUpdate {
                    round,
                    client: client as u32,
                    samples: local.samples as u32,
                    shape: server.shape(),
                    prompt: &local.global_part,
                    loss: local.stats.loss.map(|l| l as f32),
                    accuracy: local.stats.accuracy.map(|a| a as f32),
                };
                server
                    .add(&update)
                    .map_err(|source| TrainError::Aggregate {
                        round,
                        client: Some(client),
                        source,
                    })?;
            }
            rounds.push(ClientRound {
                client,
                train: Some(local.stats),
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
        let jobs = self.clients.iter().enumerate().collect();
        self.runner.evaluate_clients(&self.global, jobs, observer)
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
