//! Progress display of `fedotp train`: bars for rounds, clients and batches with rate and ETA,
//! and one summary line per round printed above them.
//!
//! The bars draw on standard error and hide themselves when it is not a terminal (a log file,
//! CI), where only the round lines appear.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use fedotp_host::run::{MetricsRow, RoundMetrics};
use fedotp_host::train::Observer;

/// The bars of a training run: one for rounds, and per-round bars for clients and batches.
#[derive(Debug)]
pub struct TrainProgress {
    bars: MultiProgress,
    rounds: ProgressBar,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("the progress templates are valid")
        .progress_chars("=> ")
}

impl TrainProgress {
    /// Bars for a run of `rounds` rounds starting at `first_round` (later than 0 when resumed);
    /// `visible = false` hides them (`--quiet`), leaving the round lines.
    pub fn new(rounds: u32, first_round: u32, visible: bool) -> TrainProgress {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bars = MultiProgress::with_draw_target(target);
        let rounds_bar = bars.add(ProgressBar::new(u64::from(rounds)));
        rounds_bar.set_style(style(
            "rounds  [{bar:30}] {pos}/{len} {per_sec:>10} eta {eta:>4} {msg}",
        ));
        rounds_bar.set_position(u64::from(first_round));
        // Rates and ETAs count from the resumed round, not from round 0.
        rounds_bar.reset_eta();
        TrainProgress {
            bars,
            rounds: rounds_bar,
        }
    }

    /// A bar over the `count` clients of a round (training or evaluation, named by `label`);
    /// finish it with [`ProgressBar::finish_and_clear`].
    pub fn clients(&self, label: &str, count: usize) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(count as u64));
        bar.set_style(style(
            "clients [{bar:30}] {pos}/{len} {per_sec:>10} eta {eta:>4} {msg}",
        ));
        bar.set_message(label.to_owned());
        bar
    }

    /// A bar over the `count` batches of one client's work.
    pub fn batches(&self, count: usize) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(count as u64));
        bar.set_style(style(
            "batches [{bar:30}] {pos}/{len} {per_sec:>10} eta {eta:>4}",
        ));
        bar
    }

    /// Prints `line` above the bars and advances the round bar.
    pub fn finish_round(&self, line: &str) {
        // Printing through the bars keeps them intact; when they are hidden it prints nothing,
        // so print directly then.
        if self.bars.is_hidden() {
            eprintln!("{line}");
        } else {
            // An I/O error on the terminal is no reason to stop training.
            let _ = self.bars.println(line);
        }
        self.rounds.inc(1);
    }

    /// Removes the bars.
    pub fn finish(&self) {
        self.rounds.finish_and_clear();
    }
}

/// The one-line summary of a round: its mean row and how long it took. Rounds are 0-based, as
/// in the metrics files and checkpoint names; the bracket counts them from 1 of `rounds`.
///
/// ```
/// use std::time::Duration;
/// use fedotp_cli::progress::round_line;
/// use fedotp_host::run::{MetricsRow, RowScope};
/// let mean = MetricsRow {
///     round: 4, client: RowScope::Mean, accuracy: Some(0.8525), macro_f1: Some(0.8),
///     macro_f1_true_labels: Some(0.81), train_loss: Some(0.41234), train_accuracy: Some(0.875),
///     skipped_batches: Some(0),
/// };
/// assert_eq!(
///     round_line(&mean, 10, Duration::from_millis(12_340)),
///     "round 4 [5/10]  acc 85.25%  F1 80.00%  loss 0.4123  train acc 87.50%  skipped 0  12.3 s"
/// );
/// ```
pub fn round_line(mean: &MetricsRow, rounds: u32, elapsed: Duration) -> String {
    let percent = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.2}%", 100.0 * v));
    let loss = mean
        .train_loss
        .map_or("–".to_string(), |v| format!("{v:.4}"));
    let skipped = mean
        .skipped_batches
        .map_or("–".to_string(), |n| n.to_string());
    format!(
        "round {} [{}/{rounds}]  acc {}  F1 {}  loss {loss}  train acc {}  skipped {skipped}  {:.1} s",
        mean.round,
        mean.round + 1,
        percent(mean.accuracy),
        percent(mean.macro_f1),
        percent(mean.train_accuracy),
        elapsed.as_secs_f64()
    )
}

/// The bars of a run driven by the simulation's events.
pub struct ProgressObserver {
    progress: TrainProgress,
    rounds: u32,
    cache: Option<ProgressBar>,
    clients: Option<ProgressBar>,
    batches: Option<ProgressBar>,
}

impl ProgressObserver {
    /// Bars for a run of `rounds` rounds resumed at `first_round` (0 for a new run).
    pub fn new(rounds: u32, first_round: u32, visible: bool) -> ProgressObserver {
        ProgressObserver {
            progress: TrainProgress::new(rounds, first_round, visible),
            rounds,
            cache: None,
            clients: None,
            batches: None,
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        self.progress.finish();
    }

    fn clear(bar: &mut Option<ProgressBar>) {
        if let Some(bar) = bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for ProgressObserver {
    fn caching(&mut self, split: &str, done: usize, total: usize) {
        let bar = self.cache.get_or_insert_with(|| {
            let bar = self.progress.clients("", total);
            bar.set_style(style(
                "cache   [{bar:30}] {pos}/{len} {per_sec:>10} eta {eta:>4} {msg}",
            ));
            bar
        });
        bar.set_message(format!("{split} images through the image tower"));
        bar.set_position(done as u64);
        if done == total {
            Self::clear(&mut self.cache);
        }
    }

    fn round_started(&mut self, _round: u32, clients: &[usize]) {
        Self::clear(&mut self.clients);
        if !clients.is_empty() {
            self.clients = Some(self.progress.clients("training", clients.len()));
        }
    }

    fn training(&mut self, client: usize, done: usize, total: usize) {
        let bar = self
            .batches
            .get_or_insert_with(|| self.progress.batches(total));
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        if let Some(clients) = &self.clients {
            clients.set_message(format!("training client {client}"));
        }
    }

    fn client_trained(&mut self, _client: usize) {
        Self::clear(&mut self.batches);
        if let Some(clients) = &self.clients {
            clients.inc(1);
        }
    }

    fn evaluating(&mut self, done: usize, total: usize) {
        if done == 1 {
            Self::clear(&mut self.clients);
            self.clients = Some(self.progress.clients("evaluating", total));
        }
        if let Some(clients) = &self.clients {
            clients.set_position(done as u64);
        }
    }

    fn round_finished(&mut self, _metrics: &RoundMetrics, mean: &MetricsRow, took: Duration) {
        Self::clear(&mut self.clients);
        Self::clear(&mut self.batches);
        self.progress
            .finish_round(&round_line(mean, self.rounds, took));
    }
}
