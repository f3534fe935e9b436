//! The `fedotp` command line.
//!
//! ```text
//! fedotp train [--config <preset.toml>] [--set key=value ...]   start a run (no --config: the quickstart)
//! fedotp train --resume <run dir>                               continue a run from its last checkpoint
//! fedotp eval <run dir>                                         a saved run's results
//! fedotp plot <run dir>... [--out accuracy]                     accuracy per round as PNG and SVG
//! ```
//!
//! The federated training loop needs the CLIP model and a compute backend, which this build does
//! not contain yet: `train` validates the configuration, reads and partitions the data, creates
//! the run directory (configuration, partition) and prints the partition, then stops with
//! [`CliError::ModelUnavailable`]. `eval` reads the run and its last checkpoint, prints the
//! recorded summary, and stops the same way.

pub mod progress;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, ModelConfig, Override, RunConfig, QUICKSTART_NAME};
use crate::data::CountTable;
use crate::plot::{output_paths, plot_accuracy, PlotError, Series};
use crate::run::{resume_run, start_run, PreparedRun, RunDir, RunError, RunSummary};

/// Largest table [`partition_overview`] prints whole (clients × classes cells).
const FULL_TABLE_CELLS: usize = 400;

/// FedOTP: federated prompt learning for CLIP with global and local prompts aligned by
/// unbalanced optimal transport.
#[derive(Debug, Parser)]
#[command(name = "fedotp", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train FedOTP or a baseline (no --config: the embedded quickstart preset).
    Train(TrainArgs),
    /// Evaluate a saved run on its clients' test sets.
    Eval(EvalArgs),
    /// Plot mean client accuracy per round of one or more runs into PNG and SVG.
    Plot(PlotArgs),
}

/// Arguments of `fedotp train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A preset or configuration file (see configs/); without it, the quickstart.
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Override a key of the configuration with a TOML value, e.g. federation.rounds=20
    /// (repeatable; applied in order).
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "resume")]
    pub set: Vec<Override>,
    /// Continue the run in this directory from its latest checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// No progress bars (the per-round lines are still printed).
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `fedotp eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run directory.
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,
}

/// Arguments of `fedotp plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directories, one line each.
    #[arg(value_name = "RUN_DIR", required = true)]
    pub runs: Vec<PathBuf>,
    /// Output path; `.png` and `.svg` files are written next to each other (an extension given
    /// is replaced).
    #[arg(long, value_name = "FILE", default_value = "accuracy")]
    pub out: PathBuf,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A run directory or its data could not be written or read.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A plot could not be made.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// The command needs the CLIP model and a compute backend, not in this build yet.
    #[error("`fedotp {command}` needs the CLIP model and a compute backend, which this build does not include yet; the configuration is valid and {} holds the run's files so far", run_dir.display())]
    ModelUnavailable {
        /// `train` or `eval`.
        command: &'static str,
        /// The run directory prepared or read.
        run_dir: PathBuf,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Train(args) => train(&args),
        Command::Eval(args) => eval(&args),
        Command::Plot(args) => plot(&args),
    }
}

fn train(args: &TrainArgs) -> Result<(), CliError> {
    let prepared = match &args.resume {
        Some(path) => {
            let prepared = resume_run(path)?;
            match &prepared.checkpoint {
                Some(c) => println!("resuming {} after round {}", path.display(), c.round),
                None => println!(
                    "resuming {} from the start (no checkpoint yet)",
                    path.display()
                ),
            }
            prepared
        }
        None => {
            let config = match &args.config {
                Some(path) => RunConfig::load(path, &args.set)?,
                None => {
                    println!("no --config: using {QUICKSTART_NAME}");
                    RunConfig::quickstart_with(&args.set)?
                }
            };
            start_run(config)?
        }
    };
    describe(&prepared);
    Err(CliError::ModelUnavailable {
        command: "train",
        run_dir: prepared.dir.path().to_path_buf(),
    })
}

/// Prints what a run is about to do and its partition.
fn describe(run: &PreparedRun) {
    let config = &run.config;
    let partition = &run.data.partition;
    println!("run directory: {}", run.dir.path().display());
    println!(
        "method: {}   model: {}   device: {}",
        config.method_label(),
        match &config.model {
            ModelConfig::Clip { backbone, path } => format!("{backbone} from {}", path.display()),
            ModelConfig::Tiny(_) => "tiny CLIP (seeded, not pretrained)".into(),
        },
        config.device
    );
    println!(
        "dataset: {} ({} classes, {} train / {} test images) in {} clients, {} rounds",
        run.data.dataset.name,
        run.data.dataset.num_classes(),
        run.data.dataset.train.len(),
        run.data.dataset.test.len(),
        partition.clients.len(),
        config.federation.rounds
    );
    println!(
        "partition (saved in {}):",
        run.dir.partition_table_path().display()
    );
    print!(
        "{}",
        partition_overview(&partition.counts(&run.data.dataset))
    );
    for compare in config.comparison_runs() {
        println!(
            "then, for comparison: {} as run {}",
            compare.method_label(),
            compare.name
        );
    }
}

fn eval(args: &EvalArgs) -> Result<(), CliError> {
    let dir = RunDir::open(&args.run)?;
    let config = dir.read_config()?;
    if let Some(checkpoint) = dir.latest_checkpoint_of(&config)? {
        println!(
            "{}: {} after round {}",
            args.run.display(),
            config.method_label(),
            checkpoint.round
        );
    }
    match RunSummary::of(&dir.read_metrics()?) {
        Some(summary) => println!("recorded results:\n{summary}"),
        None => println!("no evaluation recorded yet"),
    }
    Err(CliError::ModelUnavailable {
        command: "eval",
        run_dir: args.run.clone(),
    })
}

fn plot(args: &PlotArgs) -> Result<(), CliError> {
    let series = args
        .runs
        .iter()
        .map(|dir| Series::of_run(dir))
        .collect::<Result<Vec<_>, _>>()?;
    let (png, svg) = output_paths(&args.out);
    plot_accuracy(&series, &png, &svg)?;
    println!("wrote {} and {}", png.display(), svg.display());
    Ok(())
}

/// The partition for the terminal: the full clients × classes tables when they are small, else
/// per client its training and test sizes and the number of classes it holds (the full tables
/// are in the run's `partition.txt` either way).
///
/// ```
/// use fedotp::cli::partition_overview;
/// use fedotp::data::CountTable;
/// let small = CountTable { train: vec![vec![3, 0], vec![1, 2]], test: vec![vec![1, 0], vec![0, 1]] };
/// assert_eq!(partition_overview(&small), small.to_string());
/// let big = CountTable { train: vec![vec![1; 100]; 10], test: vec![vec![0; 100]; 10] };
/// assert!(partition_overview(&big).starts_with("client |  train |   test | classes"));
/// ```
pub fn partition_overview(counts: &CountTable) -> String {
    let classes = counts.train.first().map_or(0, Vec::len);
    if counts.train.len() * classes <= FULL_TABLE_CELLS {
        return counts.to_string();
    }
    let mut text = String::from("client |  train |   test | classes\n");
    for (client, (train, test)) in counts.train.iter().zip(&counts.test).enumerate() {
        let held = train
            .iter()
            .zip(test)
            .filter(|(tr, te)| **tr + **te > 0)
            .count();
        text.push_str(&format!(
            "{client:<6} | {:>6} | {:>6} | {held:>3} of {classes}\n",
            train.iter().sum::<usize>(),
            test.iter().sum::<usize>(),
        ));
    }
    text
}
