//! Run directories: checkpoints (round trip, determinism, errors naming file and tensor),
//! atomic writes, metrics files, and resume — a run stopped and resumed ends with files
//! byte-identical to an uninterrupted run's.

use std::collections::BTreeMap;
use std::path::Path;

use fedotp_host::config::{Override, RunConfig};
use fedotp_host::fed::{accuracy, macro_f1, ClientSampler, F1Classes, SgdState};
use fedotp_host::run::{
    Checkpoint, CheckpointLayout, ClientRound, ClientState, EvalStats, MetricsRow, RngState,
    RoundMetrics, RowScope, RunDir, RunError, RunSummary, Tensor, TrainStats,
};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn sample_checkpoint() -> Checkpoint {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    rng.next_u64();
    Checkpoint {
        round: 7,
        config_hash: "0123abcd".into(),
        global_prompt: Tensor::new(vec![1, 2, 3], vec![0.5, -1.0, 2.0, 1e-30, f32::MAX, -0.0]),
        clients: vec![
            ClientState {
                local_prompt: Tensor::new(vec![1, 2, 3], vec![1.0; 6]),
                optimizer: SgdState {
                    momentum_buffer: Some(vec![0.25; 12]),
                },
            },
            ClientState {
                local_prompt: Tensor::new(vec![1, 2, 3], vec![-1.0; 6]),
                optimizer: SgdState::default(),
            },
        ],
        rngs: BTreeMap::from([
            ("data.0".to_string(), RngState::of(&rng)),
            (
                "sampler".to_string(),
                RngState::of(&ChaCha8Rng::seed_from_u64(1)),
            ),
        ]),
    }
}

fn layout() -> CheckpointLayout {
    CheckpointLayout {
        clients: 2,
        global_prompt: Some(vec![1, 2, 3]),
        local_prompt: Some(vec![1, 2, 3]),
        parameters: 12,
    }
}

#[test]
fn checkpoints_round_trip_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let checkpoint = sample_checkpoint();
    checkpoint.save(&path).unwrap();
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(loaded, checkpoint);
    loaded.check(&layout(), &path).unwrap();
    // Equal states give equal bytes (the metadata is a single key).
    assert_eq!(
        std::fs::read(&path).unwrap(),
        checkpoint.to_bytes().unwrap()
    );
    assert_eq!(checkpoint.to_bytes().unwrap(), loaded.to_bytes().unwrap());
    // Restored generators continue the saved streams.
    let mut saved = ChaCha8Rng::seed_from_u64(9);
    saved.next_u64();
    let mut restored = loaded.rngs["data.0"].restore();
    assert_eq!(saved.next_u64(), restored.next_u64());
    // Nothing but the checkpoint is left in the directory (no temporary files).
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

/// Writes a safetensors file with `tensors` and fedotp's header.
fn write_raw(path: &Path, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>, header: &str) {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let metadata =
        std::collections::HashMap::from([("fedotp_checkpoint".to_string(), header.to_string())]);
    std::fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

const HEADER: &str = r#"{"version":1,"round":2,"clients":1,"config_sha256":"ff"}"#;

fn load_error(path: &Path) -> (RunError, String) {
    let error = Checkpoint::load(path).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    (error, message)
}

#[test]
fn bad_checkpoints_are_errors_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");

    std::fs::write(&path, b"definitely not safetensors").unwrap();
    assert!(load_error(&path).1.contains("not a safetensors file"));

    write_raw(
        &path,
        vec![],
        r#"{"version":3,"round":0,"clients":0,"config_sha256":""}"#,
    );
    assert!(load_error(&path).1.contains("format version 3"));

    write_raw(
        &path,
        vec![],
        r#"{"version":2,"round":0,"clients":0,"config_sha256":""}"#,
    );
    assert!(load_error(&path).1.contains("no `tensors_sha256`"));

    write_raw(&path, vec![], "{not json");
    assert!(load_error(&path)
        .1
        .contains("metadata `fedotp_checkpoint` is malformed"));

    let f64_bytes = vec![0u8; 16];
    write_raw(
        &path,
        vec![("global_prompt", Dtype::F64, vec![2], f64_bytes)],
        HEADER,
    );
    let (error, message) = load_error(&path);
    assert!(matches!(&error, RunError::Tensor { tensor, .. } if tensor == "global_prompt"));
    assert!(message.contains("must be F32, is F64"), "{message}");

    write_raw(
        &path,
        vec![(
            "client.0.momentum_buffer",
            Dtype::F32,
            vec![2, 2],
            vec![0; 16],
        )],
        HEADER,
    );
    assert!(load_error(&path)
        .1
        .contains("tensor `client.0.momentum_buffer`: must have one dimension"));

    write_raw(
        &path,
        vec![("client.3.local_prompt", Dtype::F32, vec![1], vec![0; 4])],
        HEADER,
    );
    let message = load_error(&path).1;
    assert!(
        message
            .contains("tensor `client.3.local_prompt`: is not part of a checkpoint of 1 clients"),
        "{message}"
    );

    write_raw(
        &path,
        vec![("rng.data", Dtype::U8, vec![8], vec![0; 8])],
        HEADER,
    );
    assert!(load_error(&path)
        .1
        .contains("tensor `rng.data`: must be U8 of shape [56]"));

    // Readable, but not this run's shapes.
    let mut checkpoint = sample_checkpoint();
    checkpoint.clients[1].local_prompt = Tensor::new(vec![2, 3], vec![0.0; 6]);
    let error = checkpoint.check(&layout(), &path).unwrap_err().to_string();
    assert!(
        error.contains("tensor `client.1.local_prompt`: has shape [2, 3], the run's is [1, 2, 3]"),
        "{error}"
    );
    let mut checkpoint = sample_checkpoint();
    checkpoint.global_prompt = None;
    let error = checkpoint.check(&layout(), &path).unwrap_err().to_string();
    assert!(
        error.contains("tensor `global_prompt`: is missing"),
        "{error}"
    );
    let error = sample_checkpoint()
        .check(
            &CheckpointLayout {
                parameters: 6,
                ..layout()
            },
            &path,
        )
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("client.0.momentum_buffer`: holds 12 values, the client trains 6"),
        "{error}"
    );

    assert!(matches!(
        Checkpoint::load(&dir.path().join("absent.safetensors")),
        Err(RunError::Io { .. })
    ));
}

#[test]
fn run_directories_are_numbered_and_checked() {
    let parent = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..3)
        .map(|_| {
            let dir = RunDir::create(parent.path(), "run").unwrap();
            assert!(dir.checkpoints_dir().is_dir());
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["run", "run-2", "run-3"]);
    let message = RunDir::open(parent.path()).unwrap_err().to_string();
    assert!(
        message.contains("not a run directory: it has no config.toml"),
        "{message}"
    );
}

fn client_round(client: usize, trained: bool, accuracy: f64) -> ClientRound {
    ClientRound {
        client,
        train: trained.then_some(TrainStats {
            loss: Some(0.5 + client as f64),
            accuracy: Some(0.25),
            skipped_batches: client as u64,
        }),
        eval: Some(EvalStats {
            accuracy,
            macro_f1: accuracy / 2.0,
            macro_f1_true_labels: accuracy,
        }),
    }
}

#[test]
fn metrics_rows_and_files() {
    let round = RoundMetrics {
        round: 3,
        clients: vec![
            client_round(0, true, 0.5),
            client_round(1, false, 0.75),
            client_round(2, true, 1.0),
        ],
    };
    let rows = round.rows();
    assert_eq!(rows.len(), 4);
    let mean = rows[3];
    assert_eq!(mean.client, RowScope::Mean);
    assert_eq!(mean.accuracy, Some(0.75));
    assert_eq!(mean.macro_f1, Some(0.375));
    // Training means are over the clients that trained (0 and 2), skipped batches summed.
    assert_eq!(mean.train_loss, Some(1.5));
    assert_eq!(mean.skipped_batches, Some(2));
    assert_eq!(rows[1].train_loss, None);

    let parent = tempfile::tempdir().unwrap();
    let dir = RunDir::create(parent.path(), "m").unwrap();
    let mut writer = dir.metrics_writer().unwrap();
    writer.append(&round).unwrap();
    let csv = std::fs::read_to_string(dir.metrics_csv_path()).unwrap();
    assert_eq!(
        csv,
        "round,client,accuracy,macro_f1,macro_f1_true_labels,train_loss,train_accuracy,skipped_batches\n\
         3,0,0.5,0.25,0.5,0.5,0.25,0\n\
         3,1,0.75,0.375,0.75,,,\n\
         3,2,1.0,0.5,1.0,2.5,0.25,2\n\
         3,mean,0.75,0.375,0.75,1.5,0.25,2\n"
    );
    let jsonl = std::fs::read_to_string(dir.metrics_jsonl_path()).unwrap();
    assert_eq!(
        jsonl.lines().nth(1).unwrap(),
        r#"{"round":3,"client":1,"accuracy":0.75,"macro_f1":0.375,"macro_f1_true_labels":0.75,"train_loss":null,"train_accuracy":null,"skipped_batches":null}"#
    );
    assert_eq!(dir.read_metrics().unwrap(), rows);

    // A malformed line in the middle is an error naming file and line.
    std::fs::write(
        dir.metrics_jsonl_path(),
        format!("{}garbage\n{}", rows[0].to_json(), rows[1].to_json()),
    )
    .unwrap();
    let message = dir.read_metrics().unwrap_err().to_string();
    assert!(
        message.contains("metrics.jsonl: line 2: not a metrics row"),
        "{message}"
    );
}

#[test]
fn summary_of_a_run() {
    let rows: Vec<MetricsRow> = [0.5, 0.7, 0.6, 0.65, 0.66, 0.64, 0.62]
        .iter()
        .enumerate()
        .flat_map(|(r, &acc)| {
            RoundMetrics {
                round: r as u32,
                clients: vec![client_round(0, true, acc)],
            }
            .rows()
        })
        .collect();
    let summary = RunSummary::of(&rows).unwrap();
    assert_eq!((summary.evaluations, summary.best_round), (7, 1));
    assert_eq!(summary.accuracy.max, 0.7);
    let last5 = [0.6, 0.65, 0.66, 0.64, 0.62];
    let mean = last5.iter().sum::<f64>() / 5.0;
    assert!((summary.accuracy.last5_mean - mean).abs() < 1e-15);
    let text = summary.to_string();
    assert!(
        text.contains("accuracy                 max  70.00%   last 5:  63.40 ± "),
        "{text}"
    );
    assert_eq!(RunSummary::of(&[]), None);
}

// ---- Resume: a synthetic federated run through the real run-directory machinery. ----

/// Clients, prompt shape, and the synthetic "training" of the resume test.
const WIDTH: usize = 8;

fn test_config(rounds: u32) -> RunConfig {
    let sets: Vec<Override> = [
        format!("federation.rounds={rounds}"),
        "federation.frac=0.5".into(),
        "federation.local_epochs=3".into(),
        "federation.eval_interval=2".into(),
        "output.checkpoint_interval=2".into(),
        "output.keep_checkpoints=1".into(),
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    RunConfig::quickstart_with(&sets).unwrap()
}

/// The live state of the synthetic run.
struct State {
    global: Vec<f32>,
    clients: Vec<ClientState>,
    rngs: Vec<ChaCha8Rng>,
}

impl State {
    fn new(clients: usize, seed: u64) -> State {
        let mut init = ChaCha8Rng::seed_from_u64(seed);
        let global = (0..WIDTH).map(|_| init.random::<f32>() * 0.02).collect();
        State {
            global,
            clients: (0..clients)
                .map(|_| ClientState {
                    local_prompt: Tensor::new(
                        vec![1, WIDTH],
                        (0..WIDTH).map(|_| init.random::<f32>() * 0.02).collect(),
                    ),
                    optimizer: SgdState::default(),
                })
                .collect(),
            rngs: (0..clients)
                .map(|c| {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(1000 + c as u64);
                    rng
                })
                .collect(),
        }
    }

    fn checkpoint(&self, round: u32, hash: &str) -> Checkpoint {
        Checkpoint {
            round,
            config_hash: hash.into(),
            global_prompt: Tensor::new(vec![1, WIDTH], self.global.clone()),
            clients: self.clients.clone(),
            rngs: self
                .rngs
                .iter()
                .enumerate()
                .map(|(c, rng)| (format!("client.{c}"), RngState::of(rng)))
                .collect(),
        }
    }

    fn from_checkpoint(checkpoint: Checkpoint) -> State {
        State {
            global: checkpoint.global_prompt.unwrap().values,
            rngs: (0..checkpoint.clients.len())
                .map(|c| checkpoint.rngs[&format!("client.{c}")].restore())
                .collect(),
            clients: checkpoint.clients,
        }
    }
}

/// Runs rounds `first..` of the synthetic training in `dir`, stopping after `stop_after` (a
/// "crash" that leaves the metrics of the last round written but maybe no checkpoint).
fn train(dir: &RunDir, config: &RunConfig, state: &mut State, first: u32, stop_after: Option<u32>) {
    let sgd = config.optimizer.sgd();
    let clients = state.clients.len();
    let sampler = ClientSampler::new(clients, config.federation.frac, config.federation.seed);
    let mut writer = dir.metrics_writer().unwrap();
    for round in first..config.federation.rounds {
        let sampled = sampler.clients(round);
        let mut uploads = Vec::new();
        let mut records: Vec<ClientRound> = (0..clients)
            .map(|client| ClientRound {
                client,
                train: None,
                eval: None,
            })
            .collect();
        for &c in &sampled {
            // Parameters: [global, local]; a noisy quadratic pulls them towards client targets.
            let local = state.clients[c]
                .local_prompt
                .as_ref()
                .unwrap()
                .values
                .clone();
            let mut params: Vec<f32> = state.global.iter().chain(&local).copied().collect();
            let mut loss_sum = 0.0;
            for _ in 0..config.federation.local_epochs {
                let grad: Vec<f32> = params
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| p - (c + i) as f32 * 0.1 + state.rngs[c].random::<f32>() - 0.5)
                    .collect();
                loss_sum += grad.iter().map(|g| f64::from(g * g)).sum::<f64>();
                sgd.step(&mut params, &grad, &mut state.clients[c].optimizer)
                    .unwrap();
            }
            state.clients[c].local_prompt.as_mut().unwrap().values = params[WIDTH..].to_vec();
            uploads.push(params[..WIDTH].to_vec());
            records[c].train = Some(TrainStats {
                loss: Some(loss_sum / f64::from(config.federation.local_epochs)),
                accuracy: Some(f64::from(params[0]).abs().min(1.0)),
                skipped_batches: u64::from(params[1] > 0.0),
            });
        }
        // Plain averaging stands in for the server step (the protocol's, elsewhere).
        for (i, g) in state.global.iter_mut().enumerate() {
            *g = uploads.iter().map(|u| u[i]).sum::<f32>() / uploads.len() as f32;
        }
        if config.federation.evaluates(round) {
            for (c, record) in records.iter_mut().enumerate() {
                let local = &state.clients[c].local_prompt.as_ref().unwrap().values;
                let labels: Vec<usize> = (0..20).map(|i| (i * 7 + c) % 5).collect();
                let predictions: Vec<usize> = labels
                    .iter()
                    .zip(local.iter().cycle())
                    .map(|(&l, &v)| if v.to_bits() % 3 == 0 { (l + 1) % 6 } else { l })
                    .collect();
                record.eval = Some(EvalStats {
                    accuracy: accuracy(&labels, &predictions).unwrap(),
                    macro_f1: macro_f1(&labels, &predictions, F1Classes::Union).unwrap(),
                    macro_f1_true_labels: macro_f1(&labels, &predictions, F1Classes::TrueLabels)
                        .unwrap(),
                });
            }
        }
        writer
            .append(&RoundMetrics {
                round,
                clients: records,
            })
            .unwrap();
        if config.output.checkpoints(round, config.federation.rounds) {
            dir.save_checkpoint(
                &state.checkpoint(round, &config.hash()),
                config.output.keep_checkpoints,
            )
            .unwrap();
        }
        if stop_after == Some(round) {
            return;
        }
    }
    dir.write_summary(&RunSummary::of(&dir.read_metrics().unwrap()).unwrap())
        .unwrap();
}

/// Creates a run directory under `parent` as `fedotp train` does.
fn start(parent: &Path, config: &RunConfig) -> RunDir {
    let data = config
        .dataset
        .load(config.model.image_size(), config.federation.seed)
        .unwrap();
    let dir = RunDir::create(parent, &config.name).unwrap();
    dir.write_config(config).unwrap();
    dir.write_partition(&data.partition, &data.dataset).unwrap();
    dir
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in walk(dir) {
        let name = entry.strip_prefix(dir).unwrap().display().to_string();
        // The lock file says which process last trained the run: not the run's output.
        if name != "run.lock" {
            out.insert(name, std::fs::read(&entry).unwrap());
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_resumed_run_ends_byte_identical_to_an_uninterrupted_one() {
    let config = test_config(11);
    let clients = 8;

    let whole = tempfile::tempdir().unwrap();
    let whole_dir = start(whole.path(), &config);
    let mut state = State::new(clients, config.federation.seed);
    train(&whole_dir, &config, &mut state, 0, None);

    for crash_after in [0u32, 4, 5, 9] {
        let parts = tempfile::tempdir().unwrap();
        let dir = start(parts.path(), &config);
        let mut state = State::new(clients, config.federation.seed);
        train(&dir, &config, &mut state, 0, Some(crash_after));
        // The crash also cut a metrics line short.
        let mut jsonl = std::fs::read(dir.metrics_jsonl_path()).unwrap();
        jsonl.extend_from_slice(br#"{"round":99,"cli"#);
        std::fs::write(dir.metrics_jsonl_path(), jsonl).unwrap();

        let resumed = RunDir::resume(dir.path()).unwrap();
        assert_eq!(resumed.config, config);
        let (mut state, first) = match resumed.checkpoint {
            Some(checkpoint) => {
                // Checkpoints are saved after odd rounds (interval 2) and the last.
                assert_eq!(checkpoint.round, crash_after - (crash_after + 1) % 2);
                let first = checkpoint.round + 1;
                (State::from_checkpoint(checkpoint), first)
            }
            None => {
                assert_eq!(crash_after, 0);
                (State::new(clients, config.federation.seed), 0)
            }
        };
        let rows = resumed.dir.read_metrics().unwrap();
        assert!(rows.iter().all(|r| r.round < first), "metrics not cut back");
        train(&resumed.dir, &config, &mut state, first, None);

        let (expected, got) = (files(whole_dir.path()), files(dir.path()));
        assert_eq!(
            expected.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>(),
            "crash after {crash_after}"
        );
        for (name, bytes) in &expected {
            assert!(
                &got[name] == bytes,
                "{name} differs after a crash after round {crash_after}"
            );
        }
    }
    // The uninterrupted run kept only its last checkpoint and wrote a summary.
    assert_eq!(whole_dir.checkpoint_rounds().unwrap(), [10]);
    assert!(whole_dir.summary_path().is_file());
}

#[test]
fn resume_refuses_a_checkpoint_of_another_configuration() {
    let parent = tempfile::tempdir().unwrap();
    let config = test_config(4);
    let dir = start(parent.path(), &config);
    let state = State::new(8, 1);
    dir.save_checkpoint(&state.checkpoint(0, "not-the-hash"), 2)
        .unwrap();
    let error = RunDir::resume(dir.path()).unwrap_err();
    assert!(matches!(error, RunError::ConfigMismatch { .. }), "{error}");
    assert!(
        error.to_string().contains("round-000000.safetensors"),
        "{error}"
    );
}

/// A run trained to round 5 (checkpoints after rounds 3 and 5, the last one kept).
fn trained_run(parent: &Path) -> RunDir {
    let config = test_config(11);
    let dir = start(parent, &config);
    let mut state = State::new(8, config.federation.seed);
    train(&dir, &config, &mut state, 0, Some(5));
    assert_eq!(dir.checkpoint_rounds().unwrap(), [5]);
    dir
}

fn resume_error(dir: &RunDir) -> String {
    let error = RunDir::resume(dir.path()).unwrap_err();
    error.to_string()
}

#[test]
fn a_run_directory_belongs_to_one_process_at_a_time() {
    let parent = tempfile::tempdir().unwrap();
    let dir = trained_run(parent.path());
    let lock = dir.lock().unwrap();
    let error = RunDir::resume(dir.path()).unwrap_err();
    assert!(matches!(error, RunError::Busy { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("process {}", std::process::id())),
        "{message}"
    );
    drop(lock);
    RunDir::resume(dir.path()).unwrap();
}

#[test]
fn resume_removes_what_killed_writes_left_and_saving_recreates_checkpoints() {
    let parent = tempfile::tempdir().unwrap();
    let dir = trained_run(parent.path());
    let stale = [
        dir.path().join(".summary.json.tmp-999999"),
        dir.checkpoints_dir()
            .join(".round-000007.safetensors.tmp-999999"),
    ];
    for path in &stale {
        std::fs::write(path, b"half a file").unwrap();
    }
    let resumed = RunDir::resume(dir.path()).unwrap();
    assert!(stale.iter().all(|p| !p.exists()));
    std::fs::remove_dir_all(dir.checkpoints_dir()).unwrap();
    let checkpoint = resumed.checkpoint.unwrap();
    dir.save_checkpoint(&checkpoint, 1).unwrap();
    assert_eq!(dir.checkpoint_rounds().unwrap(), [5]);
}

#[test]
fn resume_refuses_a_checkpoint_named_for_another_round_or_beyond_the_metrics() {
    let parent = tempfile::tempdir().unwrap();
    let dir = trained_run(parent.path());
    // A checkpoint of round 5 under round 7's name.
    std::fs::rename(dir.checkpoint_path(5), dir.checkpoint_path(7)).unwrap();
    let message = resume_error(&dir);
    assert!(message.contains("round-000007.safetensors"), "{message}");
    assert!(message.contains("records round 5"), "{message}");

    // A stray checkpoint of a later round than the metrics record.
    std::fs::rename(dir.checkpoint_path(7), dir.checkpoint_path(5)).unwrap();
    let mut later = Checkpoint::load(&dir.checkpoint_path(5)).unwrap();
    later.round = 9;
    later.save(&dir.checkpoint_path(9)).unwrap();
    let message = resume_error(&dir);
    assert!(message.contains("round-000009.safetensors"), "{message}");
    assert!(
        message.contains("metrics.jsonl records rounds up to 5"),
        "{message}"
    );
}

#[test]
fn resume_refuses_metrics_with_missing_or_repeated_rounds() {
    for (what, edit) in [
        ("round 4 where round 3 is due", 3u32),
        ("round 2 where round 3 is due", 2),
    ] {
        let parent = tempfile::tempdir().unwrap();
        let dir = trained_run(parent.path());
        let text = std::fs::read_to_string(dir.metrics_jsonl_path()).unwrap();
        let edited: String = if edit == 3 {
            // Round 3's rows are missing.
            text.lines()
                .filter(|l| !l.starts_with(r#"{"round":3,"#))
                .map(|l| format!("{l}\n"))
                .collect()
        } else {
            // Round 2's rows are recorded twice.
            let round2: String = text
                .lines()
                .filter(|l| l.starts_with(r#"{"round":2,"#))
                .map(|l| format!("{l}\n"))
                .collect();
            let mut out = String::new();
            for line in text.lines() {
                out.push_str(line);
                out.push('\n');
                if line.starts_with(r#"{"round":2,"client":"mean""#) {
                    out.push_str(&round2);
                }
            }
            out
        };
        std::fs::write(dir.metrics_jsonl_path(), edited).unwrap();
        let message = resume_error(&dir);
        assert!(message.contains("metrics.jsonl"), "{message}");
        assert!(message.contains(what), "{what}: {message}");
    }
}

#[test]
fn resume_refuses_a_damaged_or_non_finite_checkpoint() {
    let parent = tempfile::tempdir().unwrap();
    let dir = trained_run(parent.path());
    let path = dir.checkpoint_path(5);
    let original = std::fs::read(&path).unwrap();
    // One flipped bit in the last tensor's data.
    let mut flipped = original.clone();
    *flipped.last_mut().unwrap() ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    let message = resume_error(&dir);
    assert!(message.contains("the file is damaged"), "{message}");

    let mut checkpoint = Checkpoint::from_bytes(&original, &path).unwrap();
    checkpoint.global_prompt.as_mut().unwrap().values[3] = f32::NAN;
    checkpoint.save(&path).unwrap();
    let message = resume_error(&dir);
    assert!(
        message.contains("tensor `global_prompt` holds NaN at index 3"),
        "{message}"
    );
}
