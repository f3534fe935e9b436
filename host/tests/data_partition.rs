//! Partitions: exact properties (disjointness, coverage, sizes, minimum, determinism) and the
//! Dirichlet sampler against theory.

use std::collections::HashSet;

use fedotp_host::data::{
    symmetric_dirichlet, CoarseClasses, DataError, Dataset, ImageSource, Partition, PartitionSpec,
    RgbImage, Sample, Split,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A dataset of 1×1 images: `train_per_class[c]` training and `test_per_class[c]` test samples
/// of class `c`, domains assigned round-robin over `domains`.
fn synthetic(train_per_class: &[usize], test_per_class: &[usize], domains: usize) -> Dataset {
    let pixel = ImageSource::Memory(RgbImage::new(1, 1, vec![0; 3]).unwrap());
    let samples = |per_class: &[usize]| -> Vec<Sample> {
        let mut samples = Vec::new();
        for (label, &n) in per_class.iter().enumerate() {
            for _ in 0..n {
                let domain = samples.len() % domains;
                samples.push(Sample {
                    image: pixel.clone(),
                    label,
                    domain,
                });
            }
        }
        samples
    };
    Dataset {
        name: "synthetic".into(),
        class_names: (0..train_per_class.len())
            .map(|c| format!("class{c}"))
            .collect(),
        domain_names: (0..domains).map(|d| format!("domain{d}")).collect(),
        coarse: None,
        train: samples(train_per_class),
        test: samples(test_per_class),
    }
}

/// Every index of both splits held by exactly one client (a true partition of the data).
fn assert_covers_disjointly(partition: &Partition, dataset: &Dataset) {
    partition.validate(dataset).unwrap();
    for split in [Split::Train, Split::Test] {
        let held: usize = partition
            .clients
            .iter()
            .map(|c| {
                if split == Split::Train {
                    c.train.len()
                } else {
                    c.test.len()
                }
            })
            .sum();
        assert_eq!(held, dataset.samples(split).len(), "{split:?} coverage");
    }
}

/// Mean over rows of Σ share², the rows' concentration (1 / number of equal classes).
fn mean_herfindahl(rows: &[Vec<usize>]) -> f64 {
    let index = |row: &Vec<usize>| {
        let n = row.iter().sum::<usize>() as f64;
        row.iter().map(|&c| (c as f64 / n).powi(2)).sum::<f64>()
    };
    rows.iter().map(index).sum::<f64>() / rows.len() as f64
}

fn classes_of(indices: &[usize], labels: &[usize]) -> HashSet<usize> {
    indices.iter().map(|&i| labels[i]).collect()
}

#[test]
fn iid_splits_evenly_and_depends_on_the_seed() {
    let dataset = synthetic(&[23; 10], &[7; 10], 1);
    let spec = PartitionSpec::Iid { clients: 7 };
    let partition = spec.partition(&dataset, 1).unwrap();
    assert_covers_disjointly(&partition, &dataset);
    // 230 = 7·32 + 6 and 70 = 7·10: numpy.array_split sizes.
    let sizes: Vec<usize> = partition.clients.iter().map(|c| c.train.len()).collect();
    assert_eq!(sizes, [33, 33, 33, 33, 33, 33, 32]);
    assert!(partition.clients.iter().all(|c| c.test.len() == 10));
    assert_eq!(partition, spec.partition(&dataset, 1).unwrap());
    assert_ne!(
        partition.clients,
        spec.partition(&dataset, 2).unwrap().clients
    );
    let error = PartitionSpec::Iid { clients: 71 }
        .partition(&dataset, 1)
        .unwrap_err();
    assert!(matches!(error, DataError::Partition(_)), "{error}");
    assert!(PartitionSpec::Iid { clients: 0 }
        .partition(&dataset, 1)
        .is_err());
}

#[test]
fn pathological_blocks_are_disjoint_with_the_remainder_last() {
    // 37 classes (OxfordPets) over 10 clients: round(3.7) = 4 classes each, the last gets 1.
    let dataset = synthetic(&[20; 37], &[9; 37], 1);
    let spec = PartitionSpec::Pathological {
        clients: 10,
        shots: Some(4),
    };
    let partition = spec.partition(&dataset, 5).unwrap();
    partition.validate(&dataset).unwrap();
    let train_labels = dataset.labels(Split::Train);
    let test_labels = dataset.labels(Split::Test);
    let mut owned_union = HashSet::new();
    for (client, split) in partition.clients.iter().enumerate() {
        let owned = classes_of(&split.train, &train_labels);
        assert_eq!(owned.len(), if client == 9 { 1 } else { 4 });
        assert!(owned.is_disjoint(&owned_union));
        owned_union.extend(owned.iter().copied());
        assert_eq!(split.train.len(), 4 * owned.len(), "shots per owned class");
        assert_eq!(classes_of(&split.test, &test_labels), owned);
        assert_eq!(
            split.test.len(),
            9 * owned.len(),
            "every test image of the owned classes"
        );
    }
    assert_eq!(owned_union.len(), 37);
    // The class blocks follow the seed.
    let other = spec.partition(&dataset, 6).unwrap();
    assert_ne!(
        classes_of(&partition.clients[0].train, &train_labels),
        classes_of(&other.clients[0].train, &train_labels)
    );
    // Fewer images than shots: all of them. No shots: every training image.
    let scarce = synthetic(&[2; 37], &[1; 37], 1);
    let p = spec.partition(&scarce, 5).unwrap();
    assert_eq!(p.clients[0].train.len(), 8);
    let all = PartitionSpec::Pathological {
        clients: 10,
        shots: None,
    }
    .partition(&dataset, 5)
    .unwrap();
    assert_covers_disjointly(&all, &dataset);
    // 15 classes for 10 clients: blocks of round(1.5) = 2 leave clients 8 and 9 none.
    let error = spec
        .partition(&synthetic(&[5; 15], &[5; 15], 1), 0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("client 8"), "{error}");
}

#[test]
fn dirichlet_meets_the_minimum_and_keeps_train_and_test_proportions() {
    let dataset = synthetic(&[500; 10], &[100; 10], 1);
    let spec = PartitionSpec::Dirichlet {
        clients: 20,
        beta: 0.5,
        min_size: 10,
    };
    let partition = spec.partition(&dataset, 11).unwrap();
    assert_covers_disjointly(&partition, &dataset);
    assert!(partition
        .clients
        .iter()
        .all(|c| c.train.len() >= 10 && c.test.len() >= 10));
    assert_eq!(partition, spec.partition(&dataset, 11).unwrap());
    assert_ne!(
        partition.clients,
        spec.partition(&dataset, 12).unwrap().clients
    );
    // Same cut points for train (500 per class) and test (100 per class): a client's test count
    // of a class is within one of a fifth of its train count.
    let counts = partition.counts(&dataset);
    for (train_row, test_row) in counts.train.iter().zip(&counts.test) {
        for (&train, &test) in train_row.iter().zip(test_row) {
            assert!(
                (test as f64 - train as f64 / 5.0).abs() <= 1.0,
                "train {train}, test {test}"
            );
        }
    }
    // Label skew: the mean Herfindahl index of the clients' class shares is far above the
    // near-IID value (0.1 for 10 balanced classes) that beta = 100 gives.
    let near_iid = PartitionSpec::Dirichlet {
        clients: 20,
        beta: 100.0,
        min_size: 10,
    }
    .partition(&dataset, 11)
    .unwrap();
    let skew = mean_herfindahl(&counts.train);
    let flat = mean_herfindahl(&near_iid.counts(&dataset).train);
    assert!(
        flat < 0.12 && skew > 2.0 * flat,
        "beta 0.5: {skew}, beta 100: {flat}"
    );
    for beta in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let bad = PartitionSpec::Dirichlet {
            clients: 5,
            beta,
            min_size: 1,
        };
        assert!(
            matches!(bad.partition(&dataset, 0), Err(DataError::Partition(_))),
            "beta {beta}"
        );
    }
    // 100 clients with 10 test samples each needs 1,000 test samples: only 1,000, so every
    // draw must be perfectly even — unreachable, reported after the bounded number of draws.
    let impossible = PartitionSpec::Dirichlet {
        clients: 100,
        beta: 0.1,
        min_size: 10,
    };
    let message = impossible.partition(&dataset, 0).unwrap_err().to_string();
    assert!(message.contains("1000"), "{message}");
    let too_many = PartitionSpec::Dirichlet {
        clients: 200,
        beta: 1.0,
        min_size: 10,
    };
    assert!(too_many.partition(&dataset, 0).is_err());
}

#[test]
fn two_level_dirichlet_draws_every_client_the_same_number_from_the_pool() {
    let mut dataset = synthetic(&[30; 100], &[6; 100], 1);
    let error = PartitionSpec::TwoLevelDirichlet {
        clients: 20,
        beta: 0.3,
        fine_concentration: 10.0,
    }
    .partition(&dataset, 0)
    .unwrap_err();
    assert!(error.to_string().contains("coarse"), "{error}");
    dataset.coarse = Some(CoarseClasses {
        names: (0..20).map(|g| format!("coarse{g}")).collect(),
        of_class: (0..100).map(|c| c / 5).collect(),
    });
    let spec = PartitionSpec::TwoLevelDirichlet {
        clients: 20,
        beta: 0.3,
        fine_concentration: 10.0,
    };
    let partition = spec.partition(&dataset, 4).unwrap();
    // 3,600 pooled samples, 180 per client: the pool is used up exactly.
    assert_covers_disjointly(&partition, &dataset);
    assert!(partition
        .clients
        .iter()
        .all(|c| c.train.len() + c.test.len() == 180));
    assert_eq!(partition, spec.partition(&dataset, 4).unwrap());
    // Coarse skew: a client's coarse weights ~ Dir(0.3·1_20) have E[Σ p²] = 1.3 / 7 = 0.186
    // (uniform: 0.05). The first clients draw from an untouched pool; average five of them.
    let coarse_herfindahl = |partition: &Partition| {
        let rows: Vec<Vec<usize>> = partition.clients[..5]
            .iter()
            .map(|client| {
                let mut row = vec![0; 20];
                client
                    .train
                    .iter()
                    .for_each(|&i| row[dataset.train[i].label / 5] += 1);
                client
                    .test
                    .iter()
                    .for_each(|&i| row[dataset.test[i].label / 5] += 1);
                row
            })
            .collect();
        mean_herfindahl(&rows)
    };
    let skew = coarse_herfindahl(&partition);
    assert!((0.1..0.35).contains(&skew), "beta 0.3: {skew}");
    let flat = coarse_herfindahl(
        &PartitionSpec::TwoLevelDirichlet {
            clients: 20,
            beta: 1000.0,
            fine_concentration: 10.0,
        }
        .partition(&dataset, 4)
        .unwrap(),
    );
    assert!(flat < 0.065, "beta 1000: {flat}");
    assert!(PartitionSpec::TwoLevelDirichlet {
        clients: 4000,
        beta: 0.3,
        fine_concentration: 10.0
    }
    .partition(&dataset, 0)
    .is_err());
}

#[test]
fn k_labels_gives_each_client_k_classes_including_its_own() {
    let dataset = synthetic(&[60; 10], &[20; 10], 1);
    let spec = PartitionSpec::KLabels { clients: 10, k: 3 };
    let partition = spec.partition(&dataset, 2).unwrap();
    partition.validate(&dataset).unwrap();
    let labels = dataset.labels(Split::Train);
    for (client, split) in partition.clients.iter().enumerate() {
        let classes = classes_of(&split.train, &labels);
        assert_eq!(classes.len(), 3);
        assert!(classes.contains(&(client % 10)));
        assert_eq!(
            classes,
            classes_of(&split.test, &dataset.labels(Split::Test))
        );
    }
    assert!(matches!(
        PartitionSpec::KLabels { clients: 10, k: 11 }.partition(&dataset, 0),
        Err(DataError::Partition(_))
    ));
    assert!(PartitionSpec::KLabels { clients: 10, k: 0 }
        .partition(&dataset, 0)
        .is_err());
}

#[test]
fn domain_partitions_respect_domains() {
    let dataset = synthetic(&[40; 10], &[20; 10], 4);
    let per_domain = PartitionSpec::OneClientPerDomain
        .partition(&dataset, 0)
        .unwrap();
    assert_covers_disjointly(&per_domain, &dataset);
    for (d, client) in per_domain.clients.iter().enumerate() {
        assert_eq!(client.domain, Some(d));
        assert!(client.train.iter().all(|&i| dataset.train[i].domain == d));
    }
    let spec = PartitionSpec::DomainDirichlet {
        clients_per_domain: 3,
        beta: 0.5,
        min_size: 2,
    };
    let split = spec.partition(&dataset, 9).unwrap();
    assert_covers_disjointly(&split, &dataset);
    assert_eq!(split.clients.len(), 12);
    for (i, client) in split.clients.iter().enumerate() {
        assert_eq!(client.domain, Some(i / 3));
        assert!(client
            .train
            .iter()
            .all(|&s| dataset.train[s].domain == i / 3));
        assert!(client.test.iter().all(|&s| dataset.test[s].domain == i / 3));
        assert!(client.train.len() >= 2 && client.test.len() >= 2);
    }
}

#[test]
fn few_shot_keeps_at_most_shots_per_class() {
    let dataset = synthetic(&[50, 3, 20], &[5, 5, 5], 1);
    let partition = PartitionSpec::Iid { clients: 2 }
        .partition(&dataset, 0)
        .unwrap();
    let few = partition.few_shot(&dataset, 4, 7).unwrap();
    let labels = dataset.labels(Split::Train);
    for (full, limited) in partition.clients.iter().zip(&few.clients) {
        assert_eq!(full.test, limited.test);
        for class in 0..3 {
            let have = full.train.iter().filter(|&&i| labels[i] == class).count();
            let kept = limited
                .train
                .iter()
                .filter(|&&i| labels[i] == class)
                .count();
            assert_eq!(kept, have.min(4));
        }
        assert!(limited.train.iter().all(|i| full.train.contains(i)));
    }
    assert_eq!(few, partition.few_shot(&dataset, 4, 7).unwrap());
    assert!(partition.few_shot(&dataset, 0, 7).is_err());
}

#[test]
fn partitions_round_trip_through_json_and_tables_print() {
    let dataset = synthetic(&[12; 3], &[4; 3], 1);
    let partition = PartitionSpec::Dirichlet {
        clients: 3,
        beta: 1.0,
        min_size: 1,
    }
    .partition(&dataset, 3)
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partition.json");
    partition.save(&path).unwrap();
    assert!(!dir.path().join("partition.json.tmp").exists());
    assert_eq!(Partition::load(&path).unwrap(), partition);
    std::fs::write(&path, "{\"spec\": 3}").unwrap();
    assert!(matches!(
        Partition::load(&path),
        Err(DataError::Format { .. })
    ));

    let table = partition.counts(&dataset).to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 * (1 + 3), "{table}");
    assert!(lines[0].starts_with("train") && lines[4].starts_with("test"));
    let total: usize = lines[1..4]
        .iter()
        .map(|l| {
            l.rsplit('|')
                .next()
                .unwrap()
                .trim()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 36);

    let mut broken = partition.clone();
    let stolen = broken.clients[0].train[0];
    broken.clients[1].train.push(stolen);
    assert!(broken
        .validate(&dataset)
        .unwrap_err()
        .to_string()
        .contains("twice"));
    broken.clients[1].train.pop();
    broken.clients[2].test.push(99);
    assert!(broken.validate(&dataset).is_err());
}

/// Mean and variance of each coordinate against Dir(α·1_K): mean 1/K, variance
/// (K − 1) / (K² (Kα + 1)).
fn check_dirichlet(alpha: f64, dim: usize, draws: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sum = vec![0.0; dim];
    let mut sum_sq = vec![0.0; dim];
    for _ in 0..draws {
        let p = symmetric_dirichlet(alpha, dim, &mut rng).unwrap();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9 && p.iter().all(|&v| v >= 0.0));
        for (k, &v) in p.iter().enumerate() {
            sum[k] += v;
            sum_sq[k] += v * v;
        }
    }
    let k = dim as f64;
    let mean = 1.0 / k;
    let variance = (k - 1.0) / (k * k * (k * alpha + 1.0));
    // Fourth central moment bound for the variance's standard error: values lie in [0, 1].
    let mean_se = (variance / draws as f64).sqrt();
    for c in 0..dim {
        let m = sum[c] / draws as f64;
        let v = sum_sq[c] / draws as f64 - m * m;
        assert!(
            (m - mean).abs() < 5.0 * mean_se,
            "alpha {alpha}: mean {m} vs {mean}"
        );
        assert!(
            (v - variance).abs() < 0.06 * variance,
            "alpha {alpha}: variance {v} vs {variance}"
        );
    }
}

#[test]
fn dirichlet_sampler_matches_theory() {
    check_dirichlet(0.5, 5, 40_000, 1);
    check_dirichlet(10.0, 5, 40_000, 2);
    // Below 0.1 the sampler switches to its beta-based method; same moments.
    check_dirichlet(0.05, 4, 40_000, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert_eq!(symmetric_dirichlet(0.3, 1, &mut rng).unwrap(), [1.0]);
    assert!(symmetric_dirichlet(0.3, 0, &mut rng).is_err());
    assert!(symmetric_dirichlet(0.0, 3, &mut rng).is_err());
}
