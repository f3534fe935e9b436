//! One client of a run in a process of its own: what a federated node runs for each message
//! it receives (a Flower SuperNode starts a fresh ClientApp process per message).
//!
//! The node holds its own data and the run's configuration; the server sends it a round's
//! global prompt and gets back only the trained global prompt, the number of training samples
//! and the round's statistics. What must survive between messages — the local prompt, the
//! optimiser state and the last round trained — lives in one state file, written atomically
//! after each round: a node killed mid-round keeps the state of its previous round.
//!
//! The state file is a [`Checkpoint`] of one client (`client.0.*`), its `global_prompt` the
//! shared sets as the node last sent them and its `round` the last round it trained. A round
//! is trained once: a message for a round the state already holds is refused, so a repeated
//! delivery cannot train a client twice.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::clients::{ClientPrompts, ClientRunner, LocalRound};
use super::simulation::Observer;
use super::TrainError;
use crate::backend::Backend;
use crate::config::{FederatedData, RunConfig};
use crate::run::{Checkpoint, ClientState, EvalStats, RunError, Tensor};

/// A node's client: the runner of its run, restricted to one client, and its state file.
pub struct Participant<'r, B: Backend> {
    config: &'r RunConfig,
    runner: ClientRunner<'r, B>,
    client: usize,
    state_path: PathBuf,
    /// Where the image features go beyond the memory budget; `None` once they are cached.
    uncached: Option<PathBuf>,
}

/// A node's state as read from its file, or before its first round.
struct NodeState {
    /// The last round trained (`None`: none yet).
    round: Option<u32>,
    prompts: ClientPrompts,
}

impl<'r, B: Backend> Participant<'r, B> {
    /// Client `client` of `config`'s run on `data`, with its state in `state_path` (created by
    /// the first round). Loads the model onto `backend`; the image features of this client's
    /// samples are computed by its first training or evaluation and kept in `feature-cache/`
    /// beside the state file, where later processes map them from.
    pub fn new(
        config: &'r RunConfig,
        data: &'r FederatedData,
        backend: B,
        client: usize,
        state_path: &Path,
    ) -> Result<Self, TrainError> {
        let clients = data.partition.clients.len();
        if client >= clients {
            return Err(TrainError::Invalid(format!(
                "partition {client} does not exist: the run's data is partitioned among \
                 {clients} clients (0 to {})",
                clients.saturating_sub(1)
            )));
        }
        let runner = ClientRunner::new(config, data, backend)?;
        let cache_dir = state_path
            .parent()
            .unwrap_or(Path::new("."))
            .join("feature-cache");
        Ok(Participant {
            config,
            runner,
            client,
            state_path: state_path.to_path_buf(),
            uncached: Some(cache_dir),
        })
    }

    fn fill_caches(&mut self, observer: &mut dyn Observer) -> Result<(), TrainError> {
        if let Some(dir) = self.uncached.take() {
            // Kept beside the state: the next message's process maps them instead of running
            // the image tower again.
            self.runner
                .fill_caches(&[self.client], &dir, Some(&dir), observer)?;
        }
        Ok(())
    }

    /// The run's initial global prompt, drawn from its seed: the same on every node, so a
    /// server can start the first round from it without a model of its own.
    pub fn initial_global(&self) -> Vec<f32> {
        self.runner.initial_global()
    }

    /// The client's number of training samples: its weight in the server's average.
    pub fn train_samples(&self) -> usize {
        self.runner.train_samples(self.client)
    }

    /// The global prompt's shape, `[sets, n_ctx, width]` (`None`: the method shares nothing).
    pub fn global_shape(&self) -> Option<Vec<usize>> {
        self.runner.checkpoint_layout(1).global_prompt
    }

    /// The last round this node trained, from its state file (`None`: none yet).
    pub fn last_round(&self) -> Result<Option<u32>, TrainError> {
        Ok(self.load_state()?.round)
    }

    fn load_state(&self) -> Result<NodeState, TrainError> {
        if !self.state_path.exists() {
            return Ok(NodeState {
                round: None,
                prompts: self.runner.initial_client(self.client),
            });
        }
        let path = &self.state_path;
        let state = Checkpoint::load(path)?;
        if state.config_hash != self.config.hash() {
            return Err(TrainError::Invalid(format!(
                "{}: this state belongs to another configuration (SHA-256 {}, this run's is \
                 {}); give the node a fresh state directory for a new run",
                path.display(),
                state.config_hash,
                self.config.hash()
            )));
        }
        state.check(&self.runner.checkpoint_layout(1), path)?;
        let client = state
            .clients
            .into_iter()
            .next()
            .expect("checked: one client");
        let local = client.local_prompt.map_or_else(Vec::new, |t| t.values);
        Ok(NodeState {
            round: Some(state.round),
            prompts: ClientPrompts {
                local,
                optimizer: client.optimizer,
            },
        })
    }

    fn save_state(
        &self,
        round: u32,
        local: &LocalRound,
        prompts: &ClientPrompts,
    ) -> Result<(), TrainError> {
        let layout = self.runner.checkpoint_layout(1);
        let tensor = |shape: Option<Vec<usize>>, values: &[f32]| {
            shape.and_then(|shape| Tensor::new(shape, values.to_vec()))
        };
        if let Some(dir) = self.state_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RunError::io(dir, e))?;
        }
        let state = Checkpoint {
            round,
            config_hash: self.config.hash(),
            global_prompt: tensor(layout.global_prompt, &local.global_part),
            clients: vec![ClientState {
                local_prompt: tensor(layout.local_prompt, &prompts.local),
                optimizer: prompts.optimizer.clone(),
            }],
            rngs: BTreeMap::new(),
        };
        Ok(state.save(&self.state_path)?)
    }

    /// Trains round `round` from `global` (the server's prompt of the round; `None`: the run's
    /// seeded initial prompt, which every node draws alike), saves the new state, and returns
    /// the trained global prompt with the sample count and statistics the server needs.
    /// Refused if the state already holds round `round` or a later one.
    pub fn train(
        &mut self,
        round: u32,
        global: Option<&[f32]>,
        observer: &mut dyn Observer,
    ) -> Result<LocalRound, TrainError> {
        if !self.config.method.trains() {
            return Err(TrainError::Invalid(format!(
                "{} trains nothing",
                self.config.method.label()
            )));
        }
        let mut state = self.load_state()?;
        if let Some(last) = state.round.filter(|&last| last >= round) {
            return Err(TrainError::Invalid(format!(
                "{}: this node has already trained round {last}; round {round} cannot be \
                 trained again",
                self.state_path.display()
            )));
        }
        let global = self.global_or_initial(global);
        self.fill_caches(observer)?;
        let local =
            self.runner
                .train_client(round, self.client, &global, &mut state.prompts, observer)?;
        self.save_state(round, &local, &state.prompts)?;
        Ok(local)
    }

    /// The client on its own test split with `global` and its local prompt as its state holds
    /// it (`None`: no test samples).
    pub fn evaluate(
        &mut self,
        global: Option<&[f32]>,
        observer: &mut dyn Observer,
    ) -> Result<Option<EvalStats>, TrainError> {
        let state = self.load_state()?;
        let global = self.global_or_initial(global);
        self.fill_caches(observer)?;
        self.runner
            .evaluate_client(self.client, &global, &state.prompts)
    }

    /// `global`, or the run's seeded initial global prompt when the server sent none.
    fn global_or_initial<'g>(&self, global: Option<&'g [f32]>) -> Cow<'g, [f32]> {
        global.map_or_else(|| Cow::Owned(self.runner.initial_global()), Cow::Borrowed)
    }
}
