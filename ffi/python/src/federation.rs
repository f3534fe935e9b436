//! `fedotp.RunPlan`, `fedotp.Node` and `fedotp.RunRecord`: a `fedotp train` run federated by
//! an engine such as Flower, one message at a time.
//!
//! The server resolves the run's configuration (`RunPlan`: the same files, presets and
//! `--set` overrides as `fedotp train`), picks each round's clients and records the rounds in
//! a run directory of `fedotp train`'s format (`RunRecord`); each node trains and evaluates
//! its own client (`Node`, over `fedotp_host::train::Participant`, with its state on disk).
//! Unlike the client API, these call `fedotp_host` directly: a run's configuration, a node's
//! state and a run directory have no C ABI. The GIL is released while Rust computes.

use std::path::PathBuf;
use std::sync::Mutex;

use fedotp_host::backend::{Backend, BackendError, Device, OnBackend};
use fedotp_host::clip::ClipError;
use fedotp_host::config::{ConfigError, Override, RunConfig};
use fedotp_host::data::DataError;
use fedotp_host::fed::ClientSampler;
use fedotp_host::run::{
    Checkpoint, ClientRound, EvalStats, MetricsWriter, RoundMetrics, RunDir, RunError, RunLock,
    RunSummary, Tensor, TrainStats,
};
use fedotp_host::train::{LocalRound, Participant, Silent, TrainError};
use numpy::{PyArray1, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrays::{contiguous, typed};
use crate::failure::error;

/// A failure of the run code, kept without the GIL and raised as the `fedotp.Error` subclass
/// of its kind.
struct RunFailure {
    class: &'static str,
    message: String,
}

impl From<ConfigError> for RunFailure {
    fn from(e: ConfigError) -> Self {
        let class = match e {
            ConfigError::Io { .. } => "IoError",
            _ => "InvalidArgument",
        };
        RunFailure {
            class,
            message: e.to_string(),
        }
    }
}

impl From<RunError> for RunFailure {
    fn from(e: RunError) -> Self {
        let class = match e {
            RunError::Io { .. } => "IoError",
            RunError::Config { .. } => "InvalidArgument",
            RunError::Busy { .. } => "Busy",
            RunError::NonFinite { .. } => "NonFinite",
            _ => "FormatError",
        };
        RunFailure {
            class,
            message: e.to_string(),
        }
    }
}

impl From<DataError> for RunFailure {
    fn from(e: DataError) -> Self {
        RunFailure {
            class: "IoError",
            message: e.to_string(),
        }
    }
}

impl From<TrainError> for RunFailure {
    fn from(e: TrainError) -> Self {
        let class = match e {
            TrainError::Run(e) => return RunFailure::from(e),
            TrainError::Data(_) => "IoError",
            TrainError::Memory(_)
            | TrainError::Clip(ClipError::Memory(_))
            | TrainError::Backend(BackendError::OutOfMemory { .. }) => "OutOfMemory",
            TrainError::Backend(_) => "Device",
            TrainError::Cancelled => "Cancelled",
            _ => "InvalidArgument",
        };
        RunFailure {
            class,
            message: e.to_string(),
        }
    }
}

impl From<RunFailure> for PyErr {
    fn from(failure: RunFailure) -> PyErr {
        Python::attach(|py| error(py, failure.class, failure.message))
    }
}

/// A run's resolved configuration, as `fedotp train` reads it: a preset file (or the embedded
/// quickstart) with `--set`-style overrides.
///
/// >>> import fedotp
/// >>> plan = fedotp.RunPlan.load(None, ["dataset.source.clients=3", "federation.rounds=3"])
/// >>> plan.rounds, plan.clients, plan.sampled_clients(0)
/// (3, 3, [0, 1, 2])
#[pyclass(module = "fedotp", frozen)]
pub(crate) struct RunPlan {
    config: RunConfig,
}

fn parse_overrides(overrides: &[String]) -> Result<Vec<Override>, RunFailure> {
    overrides
        .iter()
        .map(|o| o.parse::<Override>().map_err(RunFailure::from))
        .collect()
}

#[pymethods]
impl RunPlan {
    /// The configuration in `path` (None: the embedded quickstart) with `overrides`
    /// (``"federation.rounds=3"``, as ``fedotp train --set``).
    #[staticmethod]
    #[pyo3(signature = (path = None, overrides = Vec::new()))]
    fn load(path: Option<PathBuf>, overrides: Vec<String>) -> PyResult<RunPlan> {
        let overrides = parse_overrides(&overrides)?;
        let config = match path {
            Some(path) => RunConfig::load(&path, &overrides),
            None => RunConfig::quickstart_with(&overrides),
        }
        .map_err(RunFailure::from)?;
        Ok(RunPlan { config })
    }

    /// The configuration in TOML `text` (``RunPlan.toml`` of another plan, as a server sends
    /// it) with `overrides`.
    #[staticmethod]
    #[pyo3(signature = (text, overrides = Vec::new()))]
    fn from_toml(text: &str, overrides: Vec<String>) -> PyResult<RunPlan> {
        let overrides = parse_overrides(&overrides)?;
        let config = RunConfig::from_toml(text, "the run's configuration", &overrides)
            .map_err(RunFailure::from)?;
        Ok(RunPlan { config })
    }

    /// This plan with its ``[dataset]`` table replaced by the one in the TOML file `path`: a
    /// node's description of its own data.
    fn with_dataset(&self, path: PathBuf) -> PyResult<RunPlan> {
        let text = std::fs::read_to_string(&path).map_err(|e| RunFailure {
            class: "IoError",
            message: format!("{}: {e}", path.display()),
        })?;
        let config = self
            .config
            .with_dataset_from(&text, &path.display().to_string())
            .map_err(RunFailure::from)?;
        Ok(RunPlan { config })
    }

    /// The resolved configuration as TOML, every default written out.
    #[getter]
    fn toml(&self) -> String {
        self.config.to_toml()
    }

    /// SHA-256 of ``toml``: what ties states and checkpoints to the configuration.
    #[getter]
    fn hash(&self) -> String {
        self.config.hash()
    }

    /// The run's name.
    #[getter]
    fn name(&self) -> String {
        self.config.name.clone()
    }

    /// The method, as tables label it ("FedOTP", "PromptFL", ...).
    #[getter]
    fn method(&self) -> String {
        self.config.method_label()
    }

    /// Rounds to run (zero-shot CLIP: one evaluation).
    #[getter]
    fn rounds(&self) -> u32 {
        self.config.rounds()
    }

    /// Whether the method trains prompts (False for zero-shot CLIP).
    #[getter]
    fn trains(&self) -> bool {
        self.config.method.trains()
    }

    /// Number of clients, where the configuration fixes it without reading the data.
    #[getter]
    fn clients(&self) -> Option<usize> {
        self.config.dataset.clients()
    }

    /// The clients that train in `round` (all in round 0), as the simulation samples them from
    /// ``federation.frac`` and ``federation.seed``.
    fn sampled_clients(&self, round: u32) -> PyResult<Vec<usize>> {
        let clients = self.config.dataset.clients().ok_or_else(|| RunFailure {
            class: "InvalidArgument",
            message: "the configuration does not fix the number of clients (one client per \
                      domain): it is known only from the data"
                .into(),
        })?;
        let federation = &self.config.federation;
        Ok(ClientSampler::new(clients, federation.frac, federation.seed).clients(round))
    }

    /// Whether every client is evaluated after `round`.
    fn evaluates(&self, round: u32) -> bool {
        self.config.evaluates(round)
    }

    fn __repr__(&self) -> String {
        format!(
            "RunPlan(name={:?}, method={:?}, rounds={})",
            self.config.name,
            self.config.method_label(),
            self.rounds()
        )
    }
}

/// A node's round: the trained global prompt and what the server needs to weigh and report it.
#[pyclass(module = "fedotp", frozen, get_all)]
pub(crate) struct NodeUpdate {
    /// The global prompt after local training, ``(sets, n_ctx, width)`` float32 (None when
    /// the method shares nothing).
    global_prompt: Option<Py<PyAny>>,
    /// Training samples: the update's weight in the average.
    samples: usize,
    /// Mean loss of the round's finite batches (None if every batch was skipped).
    loss: Option<f64>,
    /// Accuracy on those batches.
    accuracy: Option<f64>,
    /// Batches skipped for a non-finite loss, gradient or plan.
    skipped_batches: u64,
}

#[pymethods]
impl NodeUpdate {
    fn __repr__(&self) -> String {
        let python = |v: Option<f64>| v.map_or_else(|| "None".to_string(), |v| v.to_string());
        format!(
            "NodeUpdate(samples={}, loss={}, accuracy={}, skipped_batches={})",
            self.samples,
            python(self.loss),
            python(self.accuracy),
            self.skipped_batches
        )
    }
}

/// One client of a run on a node of its own: it reads its own data, keeps its local prompt and
/// optimiser state in `state_path`, and gives out only the trained global prompt, its sample
/// count and statistics. Each call loads the model and data afresh (a Flower ClientApp is a
/// new process per message); the state file is written atomically after each round.
///
/// >>> import fedotp
/// >>> plan = fedotp.RunPlan.load(None, ["dataset.source.clients=3"])
/// >>> node = fedotp.Node(plan, partition=1, state_path="node-1/state.safetensors", device="cpu")
/// >>> samples, initial = node.describe()  # reads no image, writes nothing
/// >>> samples, initial.shape
/// (483, (1, 8, 64))
#[pyclass(module = "fedotp", frozen)]
pub(crate) struct Node {
    config: RunConfig,
    partition: usize,
    state_path: PathBuf,
    device: Device,
}

/// What a node call does once the model is on a backend.
enum NodeWork {
    Describe,
    Train {
        round: u32,
        global: Option<Vec<f32>>,
    },
    Evaluate {
        global: Option<Vec<f32>>,
    },
}

/// What it gives back; the global prompt's shape with a prompt.
enum NodeResult {
    Described {
        samples: usize,
        initial_global: Vec<f32>,
        shape: Option<Vec<usize>>,
    },
    Trained(LocalRound, Option<Vec<usize>>),
    Evaluated(Option<EvalStats>),
}

struct NodeJob<'a> {
    node: &'a Node,
    work: NodeWork,
}

impl OnBackend for NodeJob<'_> {
    type Output = Result<NodeResult, RunFailure>;
    fn run<B: Backend + 'static>(self, backend: B) -> Self::Output {
        let node = self.node;
        let config = &node.config;
        let data = config
            .dataset
            .load(config.model.image_size(), config.federation.seed)?;
        let mut participant =
            Participant::new(config, &data, backend, node.partition, &node.state_path)?;
        Ok(match self.work {
            NodeWork::Describe => NodeResult::Described {
                samples: participant.train_samples(),
                initial_global: participant.initial_global(),
                shape: participant.global_shape(),
            },
            NodeWork::Train { round, global } => {
                let update = participant.train(round, global.as_deref(), &mut Silent)?;
                NodeResult::Trained(update, participant.global_shape())
            }
            NodeWork::Evaluate { global } => {
                NodeResult::Evaluated(participant.evaluate(global.as_deref(), &mut Silent)?)
            }
        })
    }
}

impl Node {
    fn run(&self, py: Python<'_>, work: NodeWork) -> PyResult<NodeResult> {
        Ok(py.detach(|| -> Result<NodeResult, RunFailure> {
            let backend = self.device.open().map_err(|e| RunFailure {
                class: "UnsupportedDevice",
                message: e.to_string(),
            })?;
            backend.run(NodeJob { node: self, work })
        })?)
    }
}

/// A float32 prompt from Python, any shape, C order (copied: it is small).
fn prompt_values(value: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<Vec<f32>>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let py = value.py();
    let array = typed::<f32>(value, name, "float32")?;
    let values = contiguous(py, &array, name)?.to_vec();
    if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
        return Err(error(
            py,
            "NonFinite",
            format!("`{name}` holds a NaN or infinite value at flat index {bad}"),
        ));
    }
    Ok(Some(values))
}

/// `values` as a float32 array of `shape` (None without a shape: the method shares nothing).
fn prompt_array(
    py: Python<'_>,
    values: Vec<f32>,
    shape: Option<Vec<usize>>,
) -> PyResult<Option<Bound<'_, PyAny>>> {
    shape
        .map(|shape| Ok(PyArray1::from_vec(py, values).reshape(shape)?.into_any()))
        .transpose()
}

/// `stats` as the dict `RunRecord.record_round` takes.
fn eval_dict<'py>(py: Python<'py>, stats: &EvalStats) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("accuracy", stats.accuracy)?;
    dict.set_item("macro_f1", stats.macro_f1)?;
    dict.set_item("macro_f1_true_labels", stats.macro_f1_true_labels)?;
    Ok(dict)
}

#[pymethods]
impl Node {
    /// Client `partition` of `plan`'s run (its data as the plan describes it: use
    /// ``plan.with_dataset`` for the node's own copy), its state in `state_path`, computing on
    /// `device` (None: the plan's).
    #[new]
    #[pyo3(signature = (plan, partition, state_path, device = None))]
    fn new(
        plan: &RunPlan,
        partition: usize,
        state_path: PathBuf,
        device: Option<&str>,
    ) -> PyResult<Node> {
        let device = match device {
            Some(name) => name.parse::<Device>().map_err(|e| RunFailure {
                class: "UnsupportedDevice",
                message: e.to_string(),
            })?,
            None => plan.config.device,
        };
        Ok(Node {
            config: plan.config.clone(),
            partition,
            state_path,
            device,
        })
    }

    /// The node's training-set size and the run's initial global prompt (drawn from the run's
    /// seed, the same on every node; None when the method shares nothing): what a server asks
    /// a node before the first round. Reads no image.
    fn describe<'py>(&self, py: Python<'py>) -> PyResult<(usize, Option<Bound<'py, PyAny>>)> {
        let NodeResult::Described {
            samples,
            initial_global,
            shape,
        } = self.run(py, NodeWork::Describe)?
        else {
            unreachable!("a description job returns a description")
        };
        Ok((samples, prompt_array(py, initial_global, shape)?))
    }

    /// Trains round `round` from `global_prompt` (the server's, float32 of the run's global
    /// prompt shape; None: the run's seeded initial prompt, the same on every node) and saves
    /// the node's state. A round already in the state is refused (InvalidArgument).
    #[pyo3(signature = (round, global_prompt = None))]
    fn train(
        &self,
        py: Python<'_>,
        round: u32,
        global_prompt: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<NodeUpdate> {
        let global = prompt_values(global_prompt, "global_prompt")?;
        let NodeResult::Trained(update, shape) = self.run(py, NodeWork::Train { round, global })?
        else {
            unreachable!("a training job returns a training result")
        };
        let global_prompt = prompt_array(py, update.global_part, shape)?.map(Bound::unbind);
        Ok(NodeUpdate {
            global_prompt,
            samples: update.samples,
            loss: update.stats.loss,
            accuracy: update.stats.accuracy,
            skipped_batches: update.stats.skipped_batches,
        })
    }

    /// The client on its own test split with `global_prompt` and its saved local prompt:
    /// ``{"accuracy", "macro_f1", "macro_f1_true_labels"}``, or None without test samples.
    #[pyo3(signature = (global_prompt = None))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        global_prompt: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let global = prompt_values(global_prompt, "global_prompt")?;
        let NodeResult::Evaluated(stats) = self.run(py, NodeWork::Evaluate { global })? else {
            unreachable!("an evaluation job returns an evaluation")
        };
        stats.map(|stats| eval_dict(py, &stats)).transpose()
    }

    /// The client's index in the run's partition.
    #[getter]
    fn partition(&self) -> usize {
        self.partition
    }

    /// The node's state file.
    #[getter]
    fn state_path(&self) -> PathBuf {
        self.state_path.clone()
    }
}

/// The server's record of a federated run: a run directory in `fedotp train`'s format —
/// ``config.toml``, ``metrics.jsonl``/``.csv``, ``summary.json`` and checkpoints holding the
/// global prompt (the clients' states stay on their nodes).
#[pyclass(module = "fedotp", frozen)]
pub(crate) struct RunRecord {
    config: RunConfig,
    dir: RunDir,
    writer: Mutex<MetricsWriter>,
    /// The run directory is this server's while the record lives.
    _lock: RunLock,
}

/// An optional float of `dict[key]`.
fn optional_f64(dict: &Bound<'_, PyDict>, key: &str) -> PyResult<Option<f64>> {
    match dict.get_item(key)? {
        Some(value) if !value.is_none() => Ok(Some(value.extract()?)),
        _ => Ok(None),
    }
}

fn required_f64(dict: &Bound<'_, PyDict>, key: &str, what: &str) -> PyResult<f64> {
    optional_f64(dict, key)?.ok_or_else(|| {
        error(
            dict.py(),
            "InvalidArgument",
            format!("{what} has no `{key}`"),
        )
    })
}

/// One client's results of a round from the dict `record_round` takes.
fn client_round(entry: &Bound<'_, PyDict>) -> PyResult<ClientRound> {
    let client: usize = entry
        .get_item("client")?
        .ok_or_else(|| {
            error(
                entry.py(),
                "InvalidArgument",
                "a client's results have no `client`".into(),
            )
        })?
        .extract()?;
    let what = format!("client {client}'s results");
    let train = match entry.get_item("train")? {
        Some(train) if !train.is_none() => {
            let train = train.cast_into::<PyDict>().map_err(PyErr::from)?;
            Some(TrainStats {
                loss: optional_f64(&train, "loss")?,
                accuracy: optional_f64(&train, "accuracy")?,
                skipped_batches: match train.get_item("skipped_batches")? {
                    Some(n) => n.extract()?,
                    None => 0,
                },
            })
        }
        _ => None,
    };
    let eval = match entry.get_item("eval")? {
        Some(eval) if !eval.is_none() => {
            let eval = eval.cast_into::<PyDict>().map_err(PyErr::from)?;
            Some(EvalStats {
                accuracy: required_f64(&eval, "accuracy", &what)?,
                macro_f1: required_f64(&eval, "macro_f1", &what)?,
                macro_f1_true_labels: required_f64(&eval, "macro_f1_true_labels", &what)?,
            })
        }
        _ => None,
    };
    Ok(ClientRound {
        client,
        train,
        eval,
    })
}

#[pymethods]
impl RunRecord {
    /// A new run directory for `plan` under `parent` (None: the plan's ``output.dir``), named
    /// as ``fedotp train`` names it; the configuration is saved in it.
    #[new]
    #[pyo3(signature = (plan, parent = None))]
    fn new(py: Python<'_>, plan: &RunPlan, parent: Option<PathBuf>) -> PyResult<RunRecord> {
        let config = plan.config.clone();
        Ok(py.detach(|| -> Result<RunRecord, RunFailure> {
            let parent = parent.unwrap_or_else(|| config.output.dir.clone());
            let dir = RunDir::create(&parent, &config.name)?;
            let lock = dir.lock()?;
            dir.write_config(&config)?;
            let writer = dir.metrics_writer()?;
            Ok(RunRecord {
                config,
                dir,
                writer: Mutex::new(writer),
                _lock: lock,
            })
        })?)
    }

    /// The run directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Appends round `round` to the metrics files: `clients` is one dict per client that
    /// trained or was evaluated — ``{"client": i, "train": {"loss", "accuracy",
    /// "skipped_batches"} or None, "eval": {"accuracy", "macro_f1", "macro_f1_true_labels"} or
    /// None}`` — written in client order with the row of means, as ``fedotp train`` writes it.
    fn record_round(
        &self,
        py: Python<'_>,
        round: u32,
        clients: Vec<Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let mut rounds: Vec<ClientRound> =
            clients.iter().map(client_round).collect::<PyResult<_>>()?;
        rounds.sort_by_key(|c| c.client);
        if let Some(pair) = rounds.windows(2).find(|w| w[0].client == w[1].client) {
            return Err(error(
                py,
                "InvalidArgument",
                format!("client {} appears twice in round {round}", pair[0].client),
            ));
        }
        let metrics = RoundMetrics {
            round,
            clients: rounds,
        };
        Ok(py.detach(|| {
            // A panic cannot happen while the writer is held; a poisoned lock still holds it.
            let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            writer.append(&metrics).map_err(RunFailure::from)
        })?)
    }

    /// Saves `global_prompt` (float32, any shape) as the checkpoint of round `round`, keeping
    /// the configured number of checkpoints; returns its path.
    fn save_global(
        &self,
        py: Python<'_>,
        round: u32,
        global_prompt: &Bound<'_, PyAny>,
    ) -> PyResult<PathBuf> {
        let array = typed::<f32>(global_prompt, "global_prompt", "float32")?;
        let values = contiguous(py, &array, "global_prompt")?.to_vec();
        let shape = array.shape().to_vec();
        let checkpoint = Checkpoint {
            round,
            config_hash: self.config.hash(),
            global_prompt: Tensor::new(shape, values),
            clients: Vec::new(),
            rngs: Default::default(),
        };
        let keep = self.config.output.keep_checkpoints;
        Ok(py.detach(|| {
            self.dir
                .save_checkpoint(&checkpoint, keep)
                .map_err(RunFailure::from)
        })?)
    }

    /// Writes ``summary.json`` from the recorded rounds and returns its text as ``fedotp
    /// train`` prints it (None if no round was evaluated).
    fn finish(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(py.detach(|| -> Result<Option<String>, RunFailure> {
            let summary = RunSummary::of(&self.dir.read_metrics()?);
            if let Some(summary) = &summary {
                self.dir.write_summary(summary)?;
            }
            Ok(summary.map(|s| s.to_string()))
        })?)
    }
}
