//! Federated partitions: which training and test samples each client holds.
//!
//! A [`PartitionSpec`] names a method and its parameters (it deserialises from a config); applied
//! to a [`Dataset`] with a seed it gives a [`Partition`]: per client, sorted index lists into
//! `dataset.train` and `dataset.test`. The same spec, dataset and seed always give the same
//! partition (a ChaCha8 generator seeded with `seed` drives every draw). A partition prints as a
//! clients × classes count table ([`Partition::counts`]) and saves to JSON
//! ([`Partition::save`]) so a run records exactly what each client held.
//!
//! The methods, following the reference code (docs/ALGORITHM.md §4):
//! - **IID** — both splits shuffled and cut into near-equal parts (`numpy.array_split`).
//! - **Pathological** — classes shuffled, contiguous blocks of `round(C/K)` classes per client
//!   (the last client takes the remainder); train = `shots` random images per owned class (all
//!   if fewer), test = every test image of the owned classes.
//! - **Dirichlet** — per class, proportions over clients ~ Dir(β·1); clients that already hold at
//!   least `N/K` training samples get no more (the reference's balancing); the class's shuffled
//!   train and test images are cut at the same cumulative proportions; the whole draw is repeated
//!   until every client holds at least `min_size` train and test samples (at most
//!   [`MAX_DIRICHLET_DRAWS`] times).
//! - **Two-level Dirichlet** (CIFAR-100, "pachinko") — train and test pooled; each client in turn
//!   draws `⌊N/K⌋` samples without replacement: coarse class ~ its coarse weights ~ Dir(β·1),
//!   fine class ~ its weights within the coarse class ~ Dir(`fine_concentration`·1); an exhausted
//!   fine class (then coarse class) is removed and the weights renormalised. Each client's pooled
//!   samples then fall back into its train and test lists.
//! - **k labels** — client `i` owns class `i mod C` and `k − 1` other random classes; each class's
//!   shuffled images are split evenly among its owners.
//! - **One client per domain**, and **domain Dirichlet** (each domain split into
//!   `clients_per_domain` clients by the Dirichlet method; client `d·m + j` is client `j` of
//!   domain `d`).
//!
//! [`Partition::few_shot`] keeps `shots` training samples per class of every client.

use std::fmt;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::multi::{Dirichlet, MultiDistribution};
use serde::{Deserialize, Serialize};

use super::dataset::{Dataset, Split};
use super::error::{DataError, Result};

/// How many times the Dirichlet method redraws before giving up on `min_size`.
pub const MAX_DIRICHLET_DRAWS: usize = 1000;

/// A partition method and its parameters.
///
/// ```
/// use fedotp_host::data::PartitionSpec;
/// let spec: PartitionSpec =
///     serde_json::from_str(r#"{"kind": "dirichlet", "clients": 100, "beta": 0.5, "min_size": 10}"#).unwrap();
/// assert_eq!(spec, PartitionSpec::Dirichlet { clients: 100, beta: 0.5, min_size: 10 });
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PartitionSpec {
    /// Shuffle and cut into `clients` near-equal parts.
    Iid {
        /// Number of clients.
        clients: usize,
    },
    /// Disjoint class blocks of `round(C / clients)` classes; `shots` training images per owned
    /// class (`None`: all of them).
    Pathological {
        /// Number of clients.
        clients: usize,
        /// Training images per owned class.
        shots: Option<usize>,
    },
    /// Per-class Dirichlet(`beta`) proportions, at least `min_size` train and test samples each.
    Dirichlet {
        /// Number of clients.
        clients: usize,
        /// Concentration: small is skewed (0.1), large is near IID (100).
        beta: f64,
        /// Minimum number of training (and of test) samples per client.
        min_size: usize,
    },
    /// CIFAR-100's two-level Dirichlet: coarse weights ~ Dir(`beta`), fine within coarse ~
    /// Dir(`fine_concentration`) (10 in the reference).
    TwoLevelDirichlet {
        /// Number of clients.
        clients: usize,
        /// Concentration over coarse classes.
        beta: f64,
        /// Concentration over the fine classes of a coarse class.
        fine_concentration: f64,
    },
    /// `k` classes per client, each class's images split evenly among its owners.
    KLabels {
        /// Number of clients.
        clients: usize,
        /// Classes per client.
        k: usize,
    },
    /// Client `d` holds all of domain `d`.
    OneClientPerDomain,
    /// Each domain split into `clients_per_domain` clients by the Dirichlet method.
    DomainDirichlet {
        /// Clients per domain (5 for DomainNet, 3 for Office-Caltech10 in the paper).
        clients_per_domain: usize,
        /// Dirichlet concentration.
        beta: f64,
        /// Minimum number of training (and of test) samples per client.
        min_size: usize,
    },
}

/// The samples of one client: indices into the dataset's train and test lists, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSplit {
    /// Indices into `dataset.train`.
    pub train: Vec<usize>,
    /// Indices into `dataset.test`.
    pub test: Vec<usize>,
    /// The client's domain, for the domain methods.
    pub domain: Option<usize>,
}

/// A partition of a dataset among clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    /// Name of the dataset it was made for.
    pub dataset: String,
    /// The method.
    pub spec: PartitionSpec,
    /// The seed it was drawn with.
    pub seed: u64,
    /// One entry per client.
    pub clients: Vec<ClientSplit>,
}

impl PartitionSpec {
    /// Partitions `dataset` with `seed`. An impossible request (no clients, more clients than
    /// samples, `k` > classes, `beta` <= 0, an unreachable minimum size, ...) is an error.
    ///
    /// ```
    /// use fedotp_host::data::{digits, PartitionSpec};
    /// let dataset = digits(32).unwrap();
    /// let spec = PartitionSpec::Dirichlet { clients: 5, beta: 0.5, min_size: 10 };
    /// let partition = spec.partition(&dataset, 42).unwrap();
    /// assert_eq!(partition.clients.len(), 5);
    /// assert!(partition.clients.iter().all(|c| c.train.len() >= 10 && c.test.len() >= 10));
    /// println!("{}", partition.counts(&dataset)); // clients × classes table
    /// ```
    pub fn partition(&self, dataset: &Dataset, seed: u64) -> Result<Partition> {
        dataset.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let train = dataset.labels(Split::Train);
        let test = dataset.labels(Split::Test);
        let num_classes = dataset.num_classes();
        let all = |labels: &[usize]| (0..labels.len()).collect::<Vec<usize>>();
        let clients = match *self {
            PartitionSpec::Iid { clients } => iid(train.len(), test.len(), clients, &mut rng)?,
            PartitionSpec::Pathological { clients, shots } => {
                pathological(&train, &test, num_classes, clients, shots, &mut rng)?
            }
            PartitionSpec::Dirichlet {
                clients,
                beta,
                min_size,
            } => dirichlet(
                &by_class(&train, &all(&train), num_classes),
                &by_class(&test, &all(&test), num_classes),
                clients,
                beta,
                min_size,
                &mut rng,
            )?,
            PartitionSpec::TwoLevelDirichlet {
                clients,
                beta,
                fine_concentration,
            } => {
                let coarse = dataset.coarse.as_ref().ok_or_else(|| {
                    DataError::Partition(format!("dataset {} has no coarse classes", dataset.name))
                })?;
                two_level_dirichlet(
                    &train,
                    &test,
                    &coarse.of_class,
                    clients,
                    beta,
                    fine_concentration,
                    &mut rng,
                )?
            }
            PartitionSpec::KLabels { clients, k } => {
                k_labels(&train, &test, num_classes, clients, k, &mut rng)?
            }
            PartitionSpec::OneClientPerDomain => one_client_per_domain(dataset)?,
            PartitionSpec::DomainDirichlet {
                clients_per_domain,
                beta,
                min_size,
            } => {
                let train_domains = dataset.domains(Split::Train);
                let test_domains = dataset.domains(Split::Test);
                let mut clients = Vec::new();
                for domain in 0..dataset.domain_names.len() {
                    let in_domain = |domains: &[usize]| {
                        (0..domains.len())
                            .filter(|&i| domains[i] == domain)
                            .collect::<Vec<usize>>()
                    };
                    let domain_train = by_class(&train, &in_domain(&train_domains), num_classes);
                    let domain_test = by_class(&test, &in_domain(&test_domains), num_classes);
                    let split = dirichlet(
                        &domain_train,
                        &domain_test,
                        clients_per_domain,
                        beta,
                        min_size,
                        &mut rng,
                    )
                    .map_err(|e| {
                        DataError::Partition(format!(
                            "domain {}: {e}",
                            dataset.domain_names[domain]
                        ))
                    })?;
                    clients.extend(split.into_iter().map(|c| ClientSplit {
                        domain: Some(domain),
                        ..c
                    }));
                }
                clients
            }
        };
        let mut clients = clients;
        for client in &mut clients {
            client.train.sort_unstable();
            client.test.sort_unstable();
        }
        Ok(Partition {
            dataset: dataset.name.clone(),
            spec: self.clone(),
            seed,
            clients,
        })
    }
}

impl Partition {
    /// Keeps at most `shots` training samples per class of every client (drawn without
    /// replacement with `seed`; a class with fewer keeps all). Test lists are unchanged.
    pub fn few_shot(&self, dataset: &Dataset, shots: usize, seed: u64) -> Result<Partition> {
        if shots == 0 {
            return Err(DataError::Partition(
                "few-shot sampling needs at least one shot".into(),
            ));
        }
        self.validate(dataset)?;
        let labels = dataset.labels(Split::Train);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let clients = self
            .clients
            .iter()
            .map(|client| {
                let mut train: Vec<usize> = by_class(&labels, &client.train, dataset.num_classes())
                    .into_iter()
                    .flat_map(|class| sample_up_to(class, shots, &mut rng))
                    .collect();
                train.sort_unstable();
                ClientSplit {
                    train,
                    ..client.clone()
                }
            })
            .collect();
        Ok(Partition {
            clients,
            ..self.clone()
        })
    }

    /// Checks the partition against `dataset`: every index in range, and no sample held twice
    /// within a split (across or within clients).
    pub fn validate(&self, dataset: &Dataset) -> Result<()> {
        for split in [Split::Train, Split::Test] {
            let n = dataset.samples(split).len();
            let mut seen = vec![false; n];
            for (client, c) in self.clients.iter().enumerate() {
                let indices = match split {
                    Split::Train => &c.train,
                    Split::Test => &c.test,
                };
                for &i in indices {
                    if i >= n {
                        return Err(DataError::Partition(format!(
                            "client {client} holds {split:?} sample {i}, but {} has {n}",
                            dataset.name
                        )));
                    }
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(DataError::Partition(format!(
                            "{split:?} sample {i} is held twice (again by client {client})"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The clients × classes count table of both splits.
    pub fn counts(&self, dataset: &Dataset) -> CountTable {
        let count = |split: Split| {
            let labels = dataset.labels(split);
            self.clients
                .iter()
                .map(|client| {
                    let mut row = vec![0; dataset.num_classes()];
                    let indices = match split {
                        Split::Train => &client.train,
                        Split::Test => &client.test,
                    };
                    for &i in indices {
                        if let Some(&label) = labels.get(i) {
                            row[label] += 1;
                        }
                    }
                    row
                })
                .collect()
        };
        CountTable {
            train: count(Split::Train),
            test: count(Split::Test),
        }
    }

    /// The partition as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a partition always serialises")
    }

    /// Reads a partition from JSON; `source` names where it came from in errors.
    pub fn from_json(json: &str, source: &Path) -> Result<Partition> {
        serde_json::from_str(json)
            .map_err(|e| DataError::format(source, format!("not a partition: {e}")))
    }

    /// Writes the partition as JSON to `path` atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = std::path::PathBuf::from(temporary);
        std::fs::write(&temporary, self.to_json()).map_err(|e| DataError::io(&temporary, e))?;
        std::fs::rename(&temporary, path).map_err(|e| DataError::io(path, e))
    }

    /// Reads a partition saved by [`Partition::save`].
    pub fn load(path: &Path) -> Result<Partition> {
        let json = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Partition::from_json(&json, path)
    }
}

/// Per-client, per-class sample counts; `Display` prints the train and test tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountTable {
    /// `train[client][class]`.
    pub train: Vec<Vec<usize>>,
    /// `test[client][class]`.
    pub test: Vec<Vec<usize>>,
}

impl fmt::Display for CountTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (title, rows) in [("train", &self.train), ("test", &self.test)] {
            let classes = rows.first().map_or(0, Vec::len);
            let widest = rows
                .iter()
                .flatten()
                .max()
                .copied()
                .unwrap_or(0)
                .max(classes.saturating_sub(1));
            let width = widest.to_string().len();
            let total_width = rows
                .iter()
                .map(|r| r.iter().sum::<usize>())
                .max()
                .unwrap_or(0)
                .to_string()
                .len()
                .max(5);
            write!(f, "{title:<6} |")?;
            for class in 0..classes {
                write!(f, " {class:>width$}")?;
            }
            writeln!(f, " | {:>total_width$}", "total")?;
            for (client, row) in rows.iter().enumerate() {
                write!(f, "{client:<6} |")?;
                for count in row {
                    write!(f, " {count:>width$}")?;
                }
                writeln!(f, " | {:>total_width$}", row.iter().sum::<usize>())?;
            }
        }
        Ok(())
    }
}

/// A draw from the symmetric Dirichlet distribution Dir(`concentration` · 1_`dim`): `dim`
/// non-negative weights summing to one. `dim` = 1 gives `[1.0]`.
///
/// ```
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// let p = fedotp_host::data::symmetric_dirichlet(0.5, 4, &mut rng).unwrap();
/// assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
/// ```
pub fn symmetric_dirichlet<R: Rng + ?Sized>(
    concentration: f64,
    dim: usize,
    rng: &mut R,
) -> Result<Vec<f64>> {
    if !(concentration.is_finite() && concentration >= f64::MIN_POSITIVE) {
        return Err(DataError::Partition(format!(
            "the Dirichlet concentration must be positive and finite, got {concentration}"
        )));
    }
    match dim {
        0 => Err(DataError::Partition(
            "a Dirichlet draw needs at least one dimension".into(),
        )),
        1 => Ok(vec![1.0]),
        _ => {
            let alpha = vec![concentration; dim];
            let distribution =
                Dirichlet::new(&alpha).map_err(|e| DataError::Partition(e.to_string()))?;
            let mut weights = vec![0.0; dim];
            distribution.sample_to_slice(rng, &mut weights);
            Ok(weights)
        }
    }
}

/// Groups `indices` by their label (`labels[index]`), keeping their order.
fn by_class(labels: &[usize], indices: &[usize], num_classes: usize) -> Vec<Vec<usize>> {
    let mut classes = vec![Vec::new(); num_classes];
    for &i in indices {
        classes[labels[i]].push(i);
    }
    classes
}

/// `numpy.array_split`: `parts` consecutive pieces, the first `len % parts` one longer.
fn array_split(items: &[usize], parts: usize) -> Vec<Vec<usize>> {
    let (base, extra) = (items.len() / parts, items.len() % parts);
    let mut pieces = Vec::with_capacity(parts);
    let mut start = 0;
    for part in 0..parts {
        let len = base + usize::from(part < extra);
        pieces.push(items[start..start + len].to_vec());
        start += len;
    }
    pieces
}

/// Up to `count` items drawn without replacement (all of them if there are fewer).
fn sample_up_to(mut items: Vec<usize>, count: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if items.len() > count {
        // partial_shuffle moves the chosen items to the end of the slice and returns them.
        let (chosen, _) = items.partial_shuffle(rng, count);
        return chosen.to_vec();
    }
    items
}

fn check_clients(clients: usize) -> Result<()> {
    if clients == 0 {
        return Err(DataError::Partition(
            "the number of clients must be positive".into(),
        ));
    }
    Ok(())
}

fn check_concentration(name: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        return Err(DataError::Partition(format!(
            "{name} must be positive and finite, got {value}"
        )));
    }
    Ok(())
}

fn iid(
    n_train: usize,
    n_test: usize,
    clients: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<ClientSplit>> {
    check_clients(clients)?;
    if clients > n_train || clients > n_test {
        return Err(DataError::Partition(format!(
            "{clients} clients but only {n_train} training and {n_test} test samples"
        )));
    }
    let mut shuffled = |n: usize| {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        array_split(&order, clients)
    };
    let train = shuffled(n_train);
    let test = shuffled(n_test);
    Ok(train
        .into_iter()
        .zip(test)
        .map(|(train, test)| ClientSplit {
            train,
            test,
            domain: None,
        })
        .collect())
}

fn pathological(
    train: &[usize],
    test: &[usize],
    num_classes: usize,
    clients: usize,
    shots: Option<usize>,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<ClientSplit>> {
    check_clients(clients)?;
    if shots == Some(0) {
        return Err(DataError::Partition(
            "shots must be positive (or absent for all images)".into(),
        ));
    }
    // Python's round(): halves to even.
    let per_client = (num_classes as f64 / clients as f64).round_ties_even() as usize;
    let mut classes: Vec<usize> = (0..num_classes).collect();
    classes.shuffle(rng);
    let train_by_class = by_class(train, &(0..train.len()).collect::<Vec<_>>(), num_classes);
    let test_by_class = by_class(test, &(0..test.len()).collect::<Vec<_>>(), num_classes);
    let mut splits = Vec::with_capacity(clients);
    for client in 0..clients {
        let start = (client * per_client).min(num_classes);
        let end = if client + 1 == clients {
            num_classes
        } else {
            ((client + 1) * per_client).min(num_classes)
        };
        if start >= end {
            return Err(DataError::Partition(format!(
                "{clients} clients for {num_classes} classes: blocks of round(C/K) = {per_client} classes leave client {client} none"
            )));
        }
        let mut split = ClientSplit::default();
        for &class in &classes[start..end] {
            let images = train_by_class[class].clone();
            split.train.extend(match shots {
                Some(shots) => sample_up_to(images, shots, rng),
                None => images,
            });
            split.test.extend(&test_by_class[class]);
        }
        splits.push(split);
    }
    Ok(splits)
}

/// The Dirichlet method on samples grouped by class (`train[c]`: the training indices of class
/// `c`, any subset of the dataset).
fn dirichlet(
    train: &[Vec<usize>],
    test: &[Vec<usize>],
    clients: usize,
    beta: f64,
    min_size: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<ClientSplit>> {
    check_clients(clients)?;
    check_concentration("beta", beta)?;
    let n_train: usize = train.iter().map(Vec::len).sum();
    let n_test: usize = test.iter().map(Vec::len).sum();
    if clients * min_size.max(1) > n_train || clients * min_size > n_test {
        return Err(DataError::Partition(format!(
            "{clients} clients with at least {min_size} samples each, but only {n_train} training and {n_test} test samples"
        )));
    }
    let fair_share = n_train as f64 / clients as f64;
    for _ in 0..MAX_DIRICHLET_DRAWS {
        let mut splits = vec![ClientSplit::default(); clients];
        for (class_train, class_test) in train.iter().zip(test) {
            let mut class_train = class_train.clone();
            let mut class_test = class_test.clone();
            class_train.shuffle(rng);
            class_test.shuffle(rng);
            let drawn = symmetric_dirichlet(beta, clients, rng)?;
            // Clients already holding their fair share of training samples get no more.
            let mut proportions: Vec<f64> = drawn
                .iter()
                .zip(&splits)
                .map(|(&p, s)| {
                    if (s.train.len() as f64) < fair_share {
                        p
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = proportions.iter().sum();
            if total > 0.0 {
                proportions.iter_mut().for_each(|p| *p /= total);
            } else {
                proportions = drawn;
            }
            let cut = |items: &[usize], client: usize, cumulative: f64, previous: &mut usize| {
                let end = if client + 1 == clients {
                    items.len()
                } else {
                    ((cumulative * items.len() as f64) as usize).clamp(*previous, items.len())
                };
                let piece = items[*previous..end].to_vec();
                *previous = end;
                piece
            };
            let (mut cumulative, mut train_at, mut test_at) = (0.0, 0, 0);
            for (client, split) in splits.iter_mut().enumerate() {
                cumulative += proportions[client];
                split
                    .train
                    .extend(cut(&class_train, client, cumulative, &mut train_at));
                split
                    .test
                    .extend(cut(&class_test, client, cumulative, &mut test_at));
            }
        }
        let smallest = splits
            .iter()
            .map(|s| s.train.len().min(s.test.len()))
            .min()
            .unwrap_or(0);
        if smallest >= min_size {
            return Ok(splits);
        }
    }
    Err(DataError::Partition(format!(
        "no Dirichlet(beta = {beta}) draw in {MAX_DIRICHLET_DRAWS} gave every one of {clients} clients {min_size} train and test samples; lower min_size, raise beta or use fewer clients"
    )))
}

/// A draw from the categorical distribution with (unnormalised) `weights`.
fn categorical(weights: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut target = rng.random::<f64>() * total;
    for (i, &w) in weights.iter().enumerate() {
        if target < w {
            return i;
        }
        target -= w;
    }
    // Rounding left a sliver past the last weight: take the last non-zero one.
    weights
        .iter()
        .rposition(|&w| w > 0.0)
        .unwrap_or(weights.len() - 1)
}

/// Removes entry `index` of `weights` and renormalises the rest (uniform if they are all zero).
fn remove_weight(weights: &mut Vec<f64>, index: usize) {
    weights.remove(index);
    let total: f64 = weights.iter().sum();
    if total > 0.0 {
        weights.iter_mut().for_each(|w| *w /= total);
    } else {
        let n = weights.len() as f64;
        weights.iter_mut().for_each(|w| *w = 1.0 / n);
    }
}

fn two_level_dirichlet(
    train: &[usize],
    test: &[usize],
    coarse_of_class: &[usize],
    clients: usize,
    beta: f64,
    fine_concentration: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<ClientSplit>> {
    check_clients(clients)?;
    check_concentration("beta", beta)?;
    check_concentration("fine_concentration", fine_concentration)?;
    // Train and test pooled: pooled index i < n_train is train[i], else test[i − n_train].
    let n_train = train.len();
    let pooled: Vec<usize> = train.iter().chain(test).copied().collect();
    let per_client = pooled.len() / clients;
    if per_client == 0 {
        return Err(DataError::Partition(format!(
            "{clients} clients but only {} samples",
            pooled.len()
        )));
    }
    let mut order: Vec<usize> = (0..pooled.len()).collect();
    order.shuffle(rng);
    let mut pools = by_class(&pooled, &order, coarse_of_class.len());
    let num_coarse = coarse_of_class.iter().max().map_or(0, |&c| c + 1);
    // Remaining coarse classes and, per coarse class, its remaining fine classes.
    let mut fine_of_coarse: Vec<(usize, Vec<usize>)> = (0..num_coarse)
        .map(|g| {
            (
                g,
                (0..coarse_of_class.len())
                    .filter(|&c| coarse_of_class[c] == g && !pools[c].is_empty())
                    .collect(),
            )
        })
        .filter(|(_, fine): &(usize, Vec<usize>)| !fine.is_empty())
        .collect();
    let mut splits = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut coarse_weights = symmetric_dirichlet(beta, fine_of_coarse.len(), rng)?;
        let mut fine_weights = fine_of_coarse
            .iter()
            .map(|(_, fine)| symmetric_dirichlet(fine_concentration, fine.len(), rng))
            .collect::<Result<Vec<_>>>()?;
        let mut split = ClientSplit::default();
        for _ in 0..per_client {
            let g = categorical(&coarse_weights, rng);
            let f = categorical(&fine_weights[g], rng);
            let class = fine_of_coarse[g].1[f];
            let pool = &mut pools[class];
            let taken = pool.swap_remove(rng.random_range(0..pool.len()));
            if taken < n_train {
                split.train.push(taken);
            } else {
                split.test.push(taken - n_train);
            }
            if pool.is_empty() {
                fine_of_coarse[g].1.remove(f);
                remove_weight(&mut fine_weights[g], f);
                if fine_of_coarse[g].1.is_empty() {
                    fine_of_coarse.remove(g);
                    fine_weights.remove(g);
                    remove_weight(&mut coarse_weights, g);
                }
            }
        }
        splits.push(split);
    }
    Ok(splits)
}

fn k_labels(
    train: &[usize],
    test: &[usize],
    num_classes: usize,
    clients: usize,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<ClientSplit>> {
    check_clients(clients)?;
    if k == 0 || k > num_classes {
        return Err(DataError::Partition(format!(
            "k = {k} labels per client, but the dataset has {num_classes} classes"
        )));
    }
    let owned: Vec<Vec<usize>> = (0..clients)
        .map(|client| {
            let mut classes = vec![client % num_classes];
            while classes.len() < k {
                let class = rng.random_range(0..num_classes);
                if !classes.contains(&class) {
                    classes.push(class);
                }
            }
            classes
        })
        .collect();
    let mut splits = vec![ClientSplit::default(); clients];
    for (labels, pick) in [(train, Split::Train), (test, Split::Test)] {
        for (class, mut images) in
            by_class(labels, &(0..labels.len()).collect::<Vec<_>>(), num_classes)
                .into_iter()
                .enumerate()
        {
            let owners: Vec<usize> = (0..clients)
                .filter(|&c| owned[c].contains(&class))
                .collect();
            if owners.is_empty() {
                continue;
            }
            images.shuffle(rng);
            for (owner, piece) in owners.iter().zip(array_split(&images, owners.len())) {
                match pick {
                    Split::Train => splits[*owner].train.extend(piece),
                    Split::Test => splits[*owner].test.extend(piece),
                }
            }
        }
    }
    if let Some(empty) = splits.iter().position(|s| s.train.is_empty()) {
        return Err(DataError::Partition(format!(
            "client {empty} got no training sample: its classes {:?} have fewer images than owners",
            owned[empty]
        )));
    }
    Ok(splits)
}

fn one_client_per_domain(dataset: &Dataset) -> Result<Vec<ClientSplit>> {
    (0..dataset.domain_names.len())
        .map(|domain| {
            let of_domain = |split: Split| -> Vec<usize> {
                let domains = dataset.domains(split);
                (0..domains.len())
                    .filter(|&i| domains[i] == domain)
                    .collect()
            };
            let split = ClientSplit {
                train: of_domain(Split::Train),
                test: of_domain(Split::Test),
                domain: Some(domain),
            };
            if split.train.is_empty() {
                return Err(DataError::Partition(format!(
                    "domain {} has no training sample",
                    dataset.domain_names[domain]
                )));
            }
            Ok(split)
        })
        .collect()
}
