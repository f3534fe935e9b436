//! The metrics files of a run: `metrics.jsonl` and `metrics.csv`, the same rows in two formats.
//!
//! Every round appends one row per client and one row of means (client `"mean"`):
//!
//! | column | client rows | mean rows |
//! |---|---|---|
//! | `round` | 0-based round | |
//! | `client` | client index | `"mean"` |
//! | `accuracy` | test accuracy in [0, 1] (evaluated rounds) | unweighted mean over clients |
//! | `macro_f1` | macro-F1, scikit-learn's label set ([`F1Classes::Union`](crate::fed::F1Classes)) | mean |
//! | `macro_f1_true_labels` | macro-F1 over the test labels' classes (the reference's) | mean |
//! | `train_loss` | mean loss of the round's finite batches (clients that trained) | mean over clients |
//! | `train_accuracy` | accuracy on those batches | mean over clients |
//! | `skipped_batches` | batches skipped for a non-finite loss or plan | sum over clients |
//!
//! Absent values are `null` in JSON and empty in CSV. Numbers are written in the shortest form
//! that reads back to the same `f64`, so a file is a function of the values alone — which is what
//! lets a resumed run's files end byte-identical to an uninterrupted run's: resuming truncates
//! `metrics.jsonl` after the checkpoint's round and writes the CSV again from it
//! ([`truncate_after`]), and the rounds that follow append the same bytes again.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::atomic::write_atomic;
use super::RunError;
use crate::fed::Summary;

/// The columns of `metrics.csv`, in order.
pub const CSV_HEADER: &str =
    "round,client,accuracy,macro_f1,macro_f1_true_labels,train_loss,train_accuracy,skipped_batches";

/// A client's training results in one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainStats {
    /// Mean loss over the finite batches (`None` if every batch was skipped).
    pub loss: Option<f64>,
    /// Accuracy over the finite batches' samples (`None` if every batch was skipped).
    pub accuracy: Option<f64>,
    /// Batches skipped because their loss or transport plan was not finite.
    pub skipped_batches: u64,
}

/// A client's evaluation in one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalStats {
    /// Test accuracy.
    pub accuracy: f64,
    /// Macro-F1 over the classes in the labels or predictions.
    pub macro_f1: f64,
    /// Macro-F1 over the classes in the labels.
    pub macro_f1_true_labels: f64,
}

/// One client's results in one round (either part absent if it did not train or was not
/// evaluated).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientRound {
    /// Client index.
    pub client: usize,
    /// Training results, if the client trained this round.
    pub train: Option<TrainStats>,
    /// Evaluation results, if the clients were evaluated this round.
    pub eval: Option<EvalStats>,
}

/// Everything recorded about one round.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundMetrics {
    /// The round, 0-based.
    pub round: u32,
    /// One entry per client that trained or was evaluated, in client order.
    pub clients: Vec<ClientRound>,
}

/// Which row: a client's, or the round's means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowScope {
    /// A client's results.
    Client(usize),
    /// The means over clients.
    Mean,
}

/// One row of the metrics files.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsRow {
    /// The round, 0-based.
    pub round: u32,
    /// A client, or the mean row.
    pub client: RowScope,
    /// Test accuracy.
    pub accuracy: Option<f64>,
    /// Macro-F1 (union label set).
    pub macro_f1: Option<f64>,
    /// Macro-F1 (true-label set).
    pub macro_f1_true_labels: Option<f64>,
    /// Training loss.
    pub train_loss: Option<f64>,
    /// Training accuracy.
    pub train_accuracy: Option<f64>,
    /// Skipped non-finite batches.
    pub skipped_batches: Option<u64>,
}

impl Serialize for RowScope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RowScope::Client(i) => serializer.serialize_u64(*i as u64),
            RowScope::Mean => serializer.serialize_str("mean"),
        }
    }
}

impl<'de> Deserialize<'de> for RowScope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Index(usize),
            Name(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Index(i) => Ok(RowScope::Client(i)),
            Raw::Name(name) if name == "mean" => Ok(RowScope::Mean),
            Raw::Name(name) => Err(serde::de::Error::custom(format!(
                "client must be an index or \"mean\", got {name:?}"
            ))),
        }
    }
}

/// Unweighted mean of the present values (`None` if none is).
fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let present: Vec<f64> = values.flatten().collect();
    (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
}

impl RoundMetrics {
    /// The round's rows: one per client, then the means.
    pub fn rows(&self) -> Vec<MetricsRow> {
        let mut rows: Vec<MetricsRow> = self
            .clients
            .iter()
            .map(|c| MetricsRow {
                round: self.round,
                client: RowScope::Client(c.client),
                accuracy: c.eval.map(|e| e.accuracy),
                macro_f1: c.eval.map(|e| e.macro_f1),
                macro_f1_true_labels: c.eval.map(|e| e.macro_f1_true_labels),
                train_loss: c.train.and_then(|t| t.loss),
                train_accuracy: c.train.and_then(|t| t.accuracy),
                skipped_batches: c.train.map(|t| t.skipped_batches),
            })
            .collect();
        let column = |get: fn(&MetricsRow) -> Option<f64>| mean(rows.iter().map(get));
        let trained = rows.iter().filter_map(|r| r.skipped_batches);
        let mean_row = MetricsRow {
            round: self.round,
            client: RowScope::Mean,
            accuracy: column(|r| r.accuracy),
            macro_f1: column(|r| r.macro_f1),
            macro_f1_true_labels: column(|r| r.macro_f1_true_labels),
            train_loss: column(|r| r.train_loss),
            train_accuracy: column(|r| r.train_accuracy),
            skipped_batches: trained.reduce(|a, b| a + b),
        };
        rows.push(mean_row);
        rows
    }
}

impl MetricsRow {
    /// The row as one CSV line (with its newline).
    pub fn to_csv(&self) -> String {
        let mut line = self.round.to_string();
        match self.client {
            RowScope::Client(i) => write!(line, ",{i}"),
            RowScope::Mean => write!(line, ",mean"),
        }
        .expect("writing to a String");
        for value in [
            self.accuracy,
            self.macro_f1,
            self.macro_f1_true_labels,
            self.train_loss,
            self.train_accuracy,
        ] {
            line.push(',');
            if let Some(v) = value {
                // Debug: the shortest digits that read back to the same f64, with an exponent
                // for very small or large values (Display would write hundreds of zeros).
                write!(line, "{v:?}").expect("writing to a String");
            }
        }
        line.push(',');
        if let Some(n) = self.skipped_batches {
            write!(line, "{n}").expect("writing to a String");
        }
        line.push('\n');
        line
    }

    /// The row as one JSON line (with its newline).
    pub fn to_json(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a metrics row serialises");
        line.push('\n');
        line
    }
}

/// The mean rows of `rows` that have an accuracy: the run's evaluated rounds, in order.
pub fn evaluated_means(rows: &[MetricsRow]) -> Vec<MetricsRow> {
    rows.iter()
        .filter(|r| r.client == RowScope::Mean && r.accuracy.is_some())
        .copied()
        .collect()
}

/// The end-of-run summary: the maximum over evaluated rounds, and the last five evaluations'
/// mean ± population standard deviation, of the mean client accuracy and macro-F1s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Number of evaluated rounds.
    pub evaluations: usize,
    /// The round of the highest mean accuracy.
    pub best_round: u32,
    /// Mean client accuracy.
    pub accuracy: Summary,
    /// Mean client macro-F1 (union label set).
    pub macro_f1: Summary,
    /// Mean client macro-F1 (true-label set).
    pub macro_f1_true_labels: Summary,
}

impl RunSummary {
    /// The summary of a run's rows; `None` if no round was evaluated.
    pub fn of(rows: &[MetricsRow]) -> Option<RunSummary> {
        let means = evaluated_means(rows);
        let series = |get: fn(&MetricsRow) -> Option<f64>| -> Vec<f64> {
            means.iter().filter_map(get).collect()
        };
        let accuracy = Summary::of(&series(|r| r.accuracy))?;
        Some(RunSummary {
            evaluations: means.len(),
            best_round: means[accuracy.argmax].round,
            accuracy,
            macro_f1: Summary::of(&series(|r| r.macro_f1))?,
            macro_f1_true_labels: Summary::of(&series(|r| r.macro_f1_true_labels))?,
        })
    }
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let window = self.evaluations.min(crate::fed::SUMMARY_WINDOW);
        for (name, s) in [
            ("accuracy", &self.accuracy),
            ("macro-F1", &self.macro_f1),
            ("macro-F1 (test classes)", &self.macro_f1_true_labels),
        ] {
            writeln!(
                f,
                "{name:<24} max {:6.2}%   last {window}: {:6.2} ± {:.2}%",
                100.0 * s.max,
                100.0 * s.last5_mean,
                100.0 * s.last5_std
            )?;
        }
        write!(
            f,
            "best round {} of {} evaluated",
            self.best_round, self.evaluations
        )
    }
}

/// Appends rounds to a run's `metrics.jsonl` and `metrics.csv`.
#[derive(Debug)]
pub struct MetricsWriter {
    jsonl: (PathBuf, File),
    csv: (PathBuf, File),
}

impl MetricsWriter {
    /// Opens (creating if needed) both files for appending; a new CSV file gets its header.
    pub fn open(jsonl: &Path, csv: &Path) -> Result<MetricsWriter, RunError> {
        let open = |path: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| RunError::io(path, e))
        };
        let jsonl_file = open(jsonl)?;
        let mut csv_file = open(csv)?;
        let csv_len = csv_file.metadata().map_err(|e| RunError::io(csv, e))?.len();
        if csv_len == 0 {
            csv_file
                .write_all(format!("{CSV_HEADER}\n").as_bytes())
                .map_err(|e| RunError::io(csv, e))?;
        }
        Ok(MetricsWriter {
            jsonl: (jsonl.to_path_buf(), jsonl_file),
            csv: (csv.to_path_buf(), csv_file),
        })
    }

    /// Appends a round's rows to both files and flushes them to disk.
    pub fn append(&mut self, round: &RoundMetrics) -> Result<(), RunError> {
        let rows = round.rows();
        let json: String = rows.iter().map(MetricsRow::to_json).collect();
        let csv: String = rows.iter().map(MetricsRow::to_csv).collect();
        for ((path, file), text) in [(&mut self.jsonl, json), (&mut self.csv, csv)] {
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|e| RunError::io(path, e))?;
        }
        Ok(())
    }
}

/// Reads the rows of a `metrics.jsonl`; a malformed line is an error naming the file and line
/// (a final line without its newline, cut short by a crash, is ignored).
pub fn read_jsonl(path: &Path) -> Result<Vec<MetricsRow>, RunError> {
    let text = std::fs::read_to_string(path).map_err(|e| RunError::io(path, e))?;
    complete_lines(&text)
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                RunError::format(path, format!("line {}: not a metrics row: {e}", i + 1))
            })
        })
        .collect()
}

/// The last round `rows` (read from `path`) record, after checking that they hold every round
/// once and in order from round 0, each as rows of increasing clients and one row of means;
/// `None` for no rows.
pub fn last_recorded_round(rows: &[MetricsRow], path: &Path) -> Result<Option<u32>, RunError> {
    let inconsistent = |line: usize, reason: String| RunError::Inconsistent {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let mut last: Option<u32> = None;
    // The round being read and its last client, while its row of means is still to come.
    let mut open: Option<(u32, Option<usize>)> = None;
    for (index, row) in rows.iter().enumerate() {
        let line = index + 1;
        match open {
            None => {
                let expected = last.map_or(0, |r| r + 1);
                if row.round != expected {
                    return Err(inconsistent(
                        line,
                        format!("round {} where round {expected} is due", row.round),
                    ));
                }
                open = Some((row.round, None));
            }
            Some((round, _)) if row.round != round => {
                return Err(inconsistent(
                    line,
                    format!("round {} before round {round}'s row of means", row.round),
                ));
            }
            Some(_) => {}
        }
        let (round, previous) = open.expect("set above");
        match row.client {
            RowScope::Client(client) => {
                if previous.is_some_and(|p| p >= client) {
                    return Err(inconsistent(
                        line,
                        format!("client {client} of round {round} repeated or out of order"),
                    ));
                }
                open = Some((round, Some(client)));
            }
            RowScope::Mean => {
                last = Some(round);
                open = None;
            }
        }
    }
    if let Some((round, _)) = open {
        return Err(inconsistent(
            rows.len(),
            format!("round {round} has no row of means"),
        ));
    }
    Ok(last)
}

/// The lines of `text` that end with a newline.
fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n'))
}

/// Cuts `metrics.jsonl` (`jsonl`) after the rows of `last_round` (`None`: after no round at
/// all), dropping a final line cut short by a crash, then writes `metrics.csv` (`csv`) again
/// from the rows kept: the CSV is a copy, so whatever became of it (deleted, cut short, edited)
/// the run continues with the rows of record. A missing `metrics.jsonl` is left missing.
pub fn truncate_after(jsonl: &Path, csv: &Path, last_round: Option<u32>) -> Result<(), RunError> {
    let keep = |round: u32| last_round.is_some_and(|last| round <= last);
    let rows = if truncate_jsonl(jsonl, keep)? {
        read_jsonl(jsonl)?
    } else {
        Vec::new()
    };
    let mut text = format!("{CSV_HEADER}\n");
    text.extend(rows.iter().map(MetricsRow::to_csv));
    write_atomic(csv, text.as_bytes())
}

/// Keeps the lines of `metrics.jsonl` while `keep(round)`; false when there is no such file.
fn truncate_jsonl(path: &Path, keep: impl Fn(u32) -> bool) -> Result<bool, RunError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(RunError::io(path, e)),
    };
    let mut kept = 0;
    for (i, line) in complete_lines(&text).enumerate() {
        let round = serde_json::from_str::<MetricsRow>(line)
            .map(|row| row.round)
            .map_err(|e| RunError::format(path, format!("line {}: {e}", i + 1)))?;
        if !keep(round) {
            break;
        }
        kept += line.len() + 1;
    }
    if kept < text.len() {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| RunError::io(path, e))?;
        file.set_len(kept as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| RunError::io(path, e))?;
    }
    Ok(true)
}
