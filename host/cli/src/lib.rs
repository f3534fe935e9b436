//! The `fedotp` command line.
//!
//! ```text
//! fedotp train [--config <preset.toml>] [--set key=value ...]   start a run (no --config: the quickstart)
//! fedotp train --resume <run dir>                               continue a run from its last checkpoint
//! fedotp eval <run dir>                                         a saved run's results
//! fedotp plot <run dir>... [--out accuracy]                     accuracy per round as PNG and SVG
//! fedotp encode --clip <weights> [--images <paths>...] [--texts <file>] --out <file.safetensors>
//!               [--gray-window <centre,width | full-range>]
//! ```
//!
//! `train` runs the configured method on the configured device, writing metrics and checkpoints
//! into the run directory, then the `compare` methods of the configuration the same way, and
//! prints a comparison table. `eval` evaluates a saved run's latest checkpoint on every client's
//! test split.

mod encode;
pub mod plot;
pub mod progress;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use encode::EncodeArgs;
use fedotp_host::backend::{Backend, Device, DeviceError, OnBackend};
use fedotp_host::config::{ConfigError, ModelConfig, Override, RunConfig, QUICKSTART_NAME};
use fedotp_host::data::CountTable;
use fedotp_host::run::{
    open_run, resume_run, start_run, EvalStats, PreparedRun, RunError, RunSummary,
};
use fedotp_host::train::{train_run, Silent, Simulation, TrainError};
use plot::{output_paths, plot_accuracy, PlotError, Series};
use progress::ProgressObserver;

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
    /// CLIP's image tokens, image embeddings and text embeddings of files, as safetensors.
    Encode(EncodeArgs),
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
    /// The compute device: cpu, cuda, cuda:N or auto (for a new run the same as
    /// --set device=...; with --resume, this session's device, the saved configuration kept).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<Device>,
    /// Continue the run in this directory from its latest checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Stop after this round (0-based), with a checkpoint, so that a later `--resume`
    /// continues: for jobs with a time limit.
    #[arg(long, value_name = "ROUND")]
    pub stop_after: Option<u32>,
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
    /// The compute device, instead of the run's (results do not depend on it beyond rounding).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<Device>,
}

/// Arguments of `fedotp plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directories, one line each.
    #[arg(value_name = "RUN_DIR", required = true)]
    pub runs: Vec<PathBuf>,
    /// Output path; `.png` and `.svg` files are written next to each other (an extension given
    /// is replaced); a directory gets `acc.png` and `acc.svg`.
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
    /// Training or evaluation failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The configured device cannot be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A command-line input (file, list) cannot be used.
    #[error("{0}")]
    Input(String),
    /// `fedotp eval` on a run that has no checkpoint yet.
    #[error("{}: no checkpoint yet; continue it first with `fedotp train --resume {}`", run.display(), run.display())]
    NoCheckpoint {
        /// The run directory.
        run: PathBuf,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Train(args) => train(&args),
        Command::Eval(args) => eval(&args),
        Command::Plot(args) => plot(&args),
        Command::Encode(args) => encode::encode(&args),
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
            let mut overrides = args.set.clone();
            if let Some(device) = args.device {
                overrides.push(format!("device={:?}", device.to_string()).parse()?);
            }
            let config = match &args.config {
                Some(path) => RunConfig::load(path, &overrides)?,
                None => {
                    println!("no --config: using {QUICKSTART_NAME}");
                    RunConfig::quickstart_with(&overrides)?
                }
            };
            start_run(config)?
        }
    };
    describe(&prepared);
    let mut results = vec![train_prepared(&prepared, args)?];
    // A resumed run continues itself only; its comparison runs have their own directories.
    if args.resume.is_none() {
        for config in prepared.config.comparison_runs() {
            println!();
            println!("== for comparison: {}", config.method_label());
            let run = start_run(config)?;
            println!("run directory: {}", run.dir.path().display());
            results.push(train_prepared(&run, args)?);
        }
    }
    if results.len() > 1 {
        println!();
        print!("{}", comparison_table(&results));
    }
    Ok(())
}

/// One trained run's line in the comparison table.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The method as the table names it.
    pub method: String,
    /// The run directory.
    pub dir: PathBuf,
    /// Its summary (`None` if no round was evaluated).
    pub summary: Option<RunSummary>,
}

/// Trains `run` on its configured device, as `args` say (progress bars, where to stop).
fn train_prepared(run: &PreparedRun, args: &TrainArgs) -> Result<RunResult, CliError> {
    let config = &run.config;
    let first_round = run.checkpoint.as_ref().map_or(0, |c| c.round + 1);
    let rounds = config.rounds();
    let mut observer = ProgressObserver::new(rounds, first_round, !args.quiet);
    let job = TrainJob {
        run,
        stop_after: args.stop_after,
        observer: &mut observer,
    };
    let summary = on_device(args.device.unwrap_or(config.device), job);
    observer.finish();
    if summary.is_err() && args.resume.is_none() && run.remove_if_nothing_recorded()? {
        println!(
            "removed {}: the run recorded nothing",
            run.dir.path().display()
        );
    }
    let summary = summary?;
    match &summary {
        Some(summary) => println!(
            "{}: {}\n{summary}",
            config.method_label(),
            run.dir.path().display()
        ),
        None => println!("{}: nothing evaluated", config.method_label()),
    }
    Ok(RunResult {
        method: config.method_label(),
        dir: run.dir.path().to_path_buf(),
        summary,
    })
}

/// Runs `job` on the backend `device` names, saying which when it is a GPU or when `auto`
/// chose the CPU.
fn on_device<J, T>(device: Device, job: J) -> Result<T, CliError>
where
    J: OnBackend<Output = Result<T, CliError>>,
{
    let selected = device.open()?;
    if selected.fallback().is_some() {
        // The reasons (missing libraries, no driver) are long; `device = "cuda"` shows them.
        println!("device auto: no usable CUDA device, so the CPU (device = \"cuda\" says why)");
    } else if selected.device() != Device::Cpu {
        println!("device: {selected}");
    }
    selected.run(job)
}

/// `fedotp train`'s work on a backend.
struct TrainJob<'a> {
    run: &'a PreparedRun,
    stop_after: Option<u32>,
    observer: &'a mut ProgressObserver,
}

impl OnBackend for TrainJob<'_> {
    type Output = Result<Option<RunSummary>, CliError>;
    fn run<B: Backend + 'static>(self, backend: B) -> Self::Output {
        Ok(train_run(
            self.run,
            backend,
            self.stop_after,
            self.observer,
        )?)
    }
}

/// `fedotp eval`'s work on a backend.
struct EvalJob<'a> {
    run: &'a PreparedRun,
}

impl OnBackend for EvalJob<'_> {
    type Output = Result<Vec<Option<EvalStats>>, CliError>;
    fn run<B: Backend + 'static>(self, backend: B) -> Self::Output {
        let mut sim = Simulation::of_run(self.run, backend, &mut Silent)?;
        Ok(sim.evaluate(&mut Silent)?)
    }
}

/// The table comparing the runs of one `fedotp train`: per method, the best mean client
/// accuracy and the mean ± std of the last evaluations.
///
/// ```
/// use fedotp_cli::{comparison_table, RunResult};
/// let table = comparison_table(&[RunResult { method: "FedOTP".into(), dir: "runs/q".into(), summary: None }]);
/// assert!(table.contains("FedOTP") && table.contains("runs/q"));
/// ```
pub fn comparison_table(results: &[RunResult]) -> String {
    let width = results
        .iter()
        .map(|r| r.method.chars().count())
        .max()
        .unwrap_or(0)
        .max("method".len());
    let mut table = format!(
        "{:<width$} | best acc (round) | last {} acc    | last macro-F1  | run\n",
        "method",
        fedotp_host::fed::SUMMARY_WINDOW
    );
    for result in results {
        let figures = match &result.summary {
            Some(s) => format!(
                "{:>7.2}% ({:>4}) | {:>6.2} ± {:>4.2}% | {:>6.2} ± {:>4.2}%",
                100.0 * s.accuracy.max,
                s.best_round,
                100.0 * s.accuracy.last5_mean,
                100.0 * s.accuracy.last5_std,
                100.0 * s.macro_f1.last5_mean,
                100.0 * s.macro_f1.last5_std,
            ),
            None => format!("{:<16} | {:<15} | {:<14}", "–", "–", "–"),
        };
        table.push_str(&format!(
            "{:<width$} | {figures} | {}\n",
            result.method,
            result.dir.display()
        ));
    }
    table
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
            ModelConfig::Clip { backbone, path } => match backbone {
                Some(backbone) => format!("{backbone} from {}", path.display()),
                None => format!("CLIP from {}", path.display()),
            },
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
    let run = open_run(&args.run)?;
    let config = &run.config;
    let round = match &run.checkpoint {
        Some(checkpoint) => checkpoint.round,
        None if config.method.trains() => {
            return Err(CliError::NoCheckpoint {
                run: args.run.clone(),
            })
        }
        None => 0,
    };
    println!(
        "{}: {} after round {round}",
        args.run.display(),
        config.method_label()
    );
    let device = args.device.unwrap_or(config.device);
    let evaluations = on_device(device, EvalJob { run: &run })?;
    print!("{}", evaluation_table(&evaluations));
    Ok(())
}

/// Per client its test accuracy and macro-F1, then the unweighted means.
///
/// ```
/// use fedotp_cli::evaluation_table;
/// use fedotp_host::run::EvalStats;
/// let stats = |a| Some(EvalStats { accuracy: a, macro_f1: a, macro_f1_true_labels: a });
/// let table = evaluation_table(&[stats(0.5), None, stats(1.0)]);
/// assert!(table.lines().last().unwrap().contains("75.00%"));
/// ```
pub fn evaluation_table(evaluations: &[Option<EvalStats>]) -> String {
    let mut table = String::from("client | accuracy | macro-F1\n");
    let mut sums = (0.0, 0.0, 0usize);
    for (client, eval) in evaluations.iter().enumerate() {
        match eval {
            Some(e) => {
                table.push_str(&format!(
                    "{client:<6} | {:>7.2}% | {:>7.2}%\n",
                    100.0 * e.accuracy,
                    100.0 * e.macro_f1
                ));
                sums = (sums.0 + e.accuracy, sums.1 + e.macro_f1, sums.2 + 1);
            }
            None => table.push_str(&format!("{client:<6} | no test samples\n")),
        }
    }
    let n = sums.2.max(1) as f64;
    table.push_str(&format!(
        "mean   | {:>7.2}% | {:>7.2}%\n",
        100.0 * sums.0 / n,
        100.0 * sums.1 / n
    ));
    table
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
/// use fedotp_cli::partition_overview;
/// use fedotp_host::data::CountTable;
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
