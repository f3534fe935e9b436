//! A federation of [`Participant`]s — each client built on its own, as a node builds it for
//! every message, its state kept only in its file and its image features in a kept cache —
//! against the in-process simulation of the
//! same configuration: the same global prompts, statistics and evaluations, bit for bit; a
//! round is never trained twice, and a state of another configuration is refused.

use std::path::{Path, PathBuf};

use fedotp_core::protocol::{Aggregator, ClientUpdate, PromptShape};
use fedotp_host::backend::Cpu;
use fedotp_host::config::{FederatedData, Override, RunConfig};
use fedotp_host::run::{start_run, Checkpoint, ClientRound, RoundMetrics};
use fedotp_host::train::{train_run, Participant, Silent};

/// The quickstart with three clients and `rounds` rounds, writing under `dir`.
fn config(dir: &Path, rounds: u32, extra: &[&str]) -> RunConfig {
    let mut all = vec![
        "compare=[]".to_string(),
        format!("output.dir={:?}", dir.to_str().unwrap()),
        "dataset.source.clients=3".into(),
        format!("federation.rounds={rounds}"),
        "federation.local_epochs=1".into(),
    ];
    all.extend(extra.iter().map(|o| o.to_string()));
    let overrides: Vec<Override> = all.iter().map(|o| o.parse().unwrap()).collect();
    RunConfig::quickstart_with(&overrides).unwrap()
}

fn data(config: &RunConfig) -> FederatedData {
    config
        .dataset
        .load(config.model.image_size(), config.federation.seed)
        .unwrap()
}

fn state_path(dir: &Path, client: usize) -> PathBuf {
    dir.join(format!("node-{client}")).join("state.safetensors")
}

/// Runs `config` the way a federation of nodes does: each message builds the client afresh.
/// Returns the final global prompt and the metrics of every round.
fn federate(config: &RunConfig, dir: &Path) -> (Vec<f32>, Vec<RoundMetrics>) {
    let data = data(config);
    let clients = data.partition.clients.len();
    let node = |client: usize| {
        Participant::new(config, &data, Cpu::new(), client, &state_path(dir, client)).unwrap()
    };
    let mut global: Option<Vec<f32>> = None;
    let mut rounds = Vec::new();
    for round in 0..config.federation.rounds {
        let mut server: Option<Aggregator<Vec<f64>, Vec<u32>>> = None;
        let mut results = Vec::new();
        for client in 0..clients {
            let update = node(client)
                .train(round, global.as_deref(), &mut Silent)
                .unwrap();
            let width = 64u32;
            let server = server.get_or_insert_with(|| {
                let len = update.global_part.len();
                let shape = PromptShape::new(len as u32 / width, width).unwrap();
                Aggregator::new(shape, round, vec![0.0; len], vec![0; clients]).unwrap()
            });
            let shape = server.shape();
            server
                .add(&ClientUpdate {
                    round,
                    client: client as u32,
                    samples: update.samples as u32,
                    shape,
                    prompt: &update.global_part,
                    loss: None,
                    accuracy: None,
                })
                .unwrap();
            results.push(ClientRound {
                client,
                train: Some(update.stats),
                eval: None,
            });
        }
        let server = server.unwrap();
        let mut next = vec![0.0f32; server.shape().len()];
        server.finish(&mut next).unwrap();
        for (client, result) in results.iter_mut().enumerate() {
            result.eval = node(client).evaluate(Some(&next), &mut Silent).unwrap();
        }
        global = Some(next);
        rounds.push(RoundMetrics {
            round,
            clients: results,
        });
    }
    (global.unwrap(), rounds)
}

#[test]
fn nodes_trained_message_by_message_end_where_the_simulation_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 3, &[]);
    let run = start_run(config.clone()).unwrap();
    train_run(&run, Cpu::new(), None, &mut Silent).unwrap();
    let simulated = run.dir.read_metrics().unwrap();
    let checkpoint = Checkpoint::load(&run.dir.checkpoint_path(2)).unwrap();

    let (global, rounds) = federate(&config, &dir.path().join("nodes"));
    assert_eq!(global, checkpoint.global_prompt.unwrap().values);
    let federated: Vec<_> = rounds.iter().flat_map(|r| r.rows()).collect();
    assert_eq!(federated, simulated);
    // The image features were computed by each node's first message and mapped by the later
    // ones from the files kept beside its state.
    for client in 0..3 {
        let kept = dir
            .path()
            .join(format!("nodes/node-{client}/feature-cache"));
        for split in ["train", "test"] {
            assert!(
                kept.join(format!("features-{split}.f32")).is_file(),
                "{client} {split}"
            );
        }
    }
    // Each node's local prompt is the simulation's client's.
    for (client, state) in checkpoint.clients.iter().enumerate() {
        let node = Checkpoint::load(&state_path(&dir.path().join("nodes"), client)).unwrap();
        assert_eq!(node.round, 2);
        assert_eq!(node.clients[0], *state);
    }
}

#[test]
fn a_round_is_trained_once_and_a_state_belongs_to_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 2, &[]);
    let data = data(&config);
    let path = state_path(dir.path(), 1);
    let mut node = Participant::new(&config, &data, Cpu::new(), 1, &path).unwrap();
    assert_eq!(node.last_round().unwrap(), None);
    let update = node
        .train(0, Some(&node.initial_global()), &mut Silent)
        .unwrap();
    assert_eq!(update.samples, data.partition.clients[1].train.len());
    assert_eq!(node.last_round().unwrap(), Some(0));
    let again = node.train(0, None, &mut Silent).unwrap_err().to_string();
    assert!(again.contains("already trained round 0"), "{again}");
    let short = node.train(1, Some(&[0.5; 3]), &mut Silent).unwrap_err();
    assert!(
        short.to_string().contains("a global prompt of 3 values"),
        "{short}"
    );

    let other = self::config(dir.path(), 2, &["optimizer.lr=0.5"]);
    let mut stranger = Participant::new(&other, &data, Cpu::new(), 1, &path).unwrap();
    let refused = stranger
        .train(1, None, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("another configuration"), "{refused}");

    let missing = Participant::new(&config, &data, Cpu::new(), 3, &path)
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("partition 3 does not exist"), "{missing}");
}
