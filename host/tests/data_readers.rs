//! Dataset readers on tiny generated files, including corrupt and truncated ones.

use std::path::Path;

use fedotp_host::config::DatasetConfig;
use fedotp_host::data::{
    cifar10, cifar100, coop, digits, domain_tree, federated_digits, image_folder, CoopDataset,
    DataError, DigitsFederation, DomainSet, GrayWindow, ImageSource, RgbImage, RowLayout, Split,
    Transform, TreeSplit,
};
use fedotp_tests::dicom::dicom_linear;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A CIFAR record's pixel planes whose pixel (x, y) is (x + y, 2x + seed, 3y + label) mod 256.
fn planes(seed: u8, label: u8) -> Vec<u8> {
    let mut bytes = vec![0u8; 3072];
    for y in 0..32usize {
        for x in 0..32usize {
            bytes[y * 32 + x] = (x + y) as u8;
            bytes[1024 + y * 32 + x] = (2 * x) as u8 ^ seed;
            bytes[2048 + y * 32 + x] = (3 * y) as u8 ^ label;
        }
    }
    bytes
}

/// Asserts that `result` failed with a message naming every one of `parts`.
fn assert_error_names<T: std::fmt::Debug>(result: Result<T, DataError>, parts: &[&str]) {
    let message = result.unwrap_err().to_string();
    assert!(
        parts.iter().all(|part| message.contains(part)),
        "{message} should name {parts:?}"
    );
}

fn write_cifar10(dir: &Path) {
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    std::fs::write(dir.join("batches.meta.txt"), names).unwrap();
    for batch in 1..=5u8 {
        let mut bytes = Vec::new();
        for record in 0..3u8 {
            let label = (batch + record) % 10;
            bytes.push(label);
            bytes.extend(planes(batch * 10 + record, label));
        }
        std::fs::write(dir.join(format!("data_batch_{batch}.bin")), bytes).unwrap();
    }
    let mut test = vec![7u8];
    test.extend(planes(99, 7));
    std::fs::write(dir.join("test_batch.bin"), test).unwrap();
}

#[test]
fn cifar10_reads_labels_names_and_planar_pixels() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path());
    let dataset = cifar10(dir.path()).unwrap();
    assert_eq!(dataset.class_names[9], "truck");
    assert_eq!((dataset.train.len(), dataset.test.len()), (15, 1));
    // Batch 2, record 1: label 3, seed 21.
    let sample = &dataset.train[4];
    assert_eq!(sample.label, 3);
    let ImageSource::Memory(image) = &sample.image else {
        panic!("CIFAR is held in memory")
    };
    assert_eq!((image.width(), image.height()), (32, 32));
    assert_eq!(image.pixel(5, 7), [12, 10 ^ 21, 21 ^ 3]);
    assert_eq!(dataset.test[0].label, 7);
    dataset.validate().unwrap();
}

#[test]
fn corrupt_cifar_files_name_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path());
    let batch = dir.path().join("data_batch_3.bin");

    // Truncated in the middle of the third record.
    let bytes = std::fs::read(&batch).unwrap();
    std::fs::write(&batch, &bytes[..3073 * 2 + 100]).unwrap();
    match cifar10(dir.path()).unwrap_err() {
        DataError::Record { path, offset, .. } => {
            assert_eq!(path, batch);
            assert_eq!(offset, 3073 * 2);
        }
        other => panic!("expected a record error, got {other}"),
    }

    // A label byte out of range in the second record.
    let mut bad = bytes.clone();
    bad[3073] = 10;
    std::fs::write(&batch, &bad).unwrap();
    assert_error_names(cifar10(dir.path()), &["data_batch_3.bin", "offset 3073"]);

    // Missing file and wrong number of names.
    std::fs::write(&batch, &bytes).unwrap();
    std::fs::remove_file(dir.path().join("test_batch.bin")).unwrap();
    assert!(
        matches!(cifar10(dir.path()), Err(DataError::Io { path, .. }) if path.ends_with("test_batch.bin"))
    );
    std::fs::write(dir.path().join("batches.meta.txt"), "a\nb\n").unwrap();
    assert!(matches!(cifar10(dir.path()), Err(DataError::Format { .. })));
}

fn cifar100_record(coarse: u8, fine: u8) -> Vec<u8> {
    let mut record = vec![coarse, fine];
    record.extend(planes(fine, coarse));
    record
}

#[test]
fn cifar100_reads_fine_labels_and_checks_the_coarse_map() {
    let dir = tempfile::tempdir().unwrap();
    let fine: String = (0..100).map(|i| format!("fine{i}\n")).collect();
    let coarse: String = (0..20).map(|i| format!("coarse{i}\n")).collect();
    std::fs::write(dir.path().join("fine_label_names.txt"), fine).unwrap();
    std::fs::write(dir.path().join("coarse_label_names.txt"), coarse).unwrap();
    // Fine class f belongs to coarse class f / 5.
    let train: Vec<u8> = (0..100u8).flat_map(|f| cifar100_record(f / 5, f)).collect();
    let test: Vec<u8> = [3u8, 99]
        .iter()
        .flat_map(|&f| cifar100_record(f / 5, f))
        .collect();
    std::fs::write(dir.path().join("train.bin"), &train).unwrap();
    std::fs::write(dir.path().join("test.bin"), &test).unwrap();
    let dataset = cifar100(dir.path()).unwrap();
    assert_eq!(
        (
            dataset.train.len(),
            dataset.test.len(),
            dataset.num_classes()
        ),
        (100, 2, 100)
    );
    assert_eq!(dataset.test[1].label, 99);
    let coarse_map = dataset.coarse.as_ref().unwrap();
    assert_eq!(coarse_map.of_class[42], 8);
    assert_eq!(coarse_map.names[19], "coarse19");

    // Record 2 of test.bin claims fine class 3 is in coarse class 1, not 0.
    let mut inconsistent = test.clone();
    inconsistent[0] = 1;
    std::fs::write(dir.path().join("test.bin"), &inconsistent).unwrap();
    assert_error_names(cifar100(dir.path()), &["test.bin", "offset 0"]);
}

fn write_png(path: &Path, value: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(6, 4, image::Rgb([value, value / 2, 255 - value]))
        .save(path)
        .unwrap();
}

#[test]
fn image_folder_sorts_classes_and_files_and_refuses_unknown_formats() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("pets/train");
    let test = dir.path().join("pets/test");
    // Created out of order, with a hidden file, a text file and a nested directory.
    write_png(&train.join("dog/b.png"), 20);
    write_png(&train.join("cat/z.png"), 30);
    write_png(&train.join("dog/a.PNG"), 10);
    write_png(&train.join("dog/nested/c.png"), 40);
    std::fs::write(train.join("dog/notes.txt"), "not an image").unwrap();
    std::fs::write(train.join("dog/.hidden.png"), "ignored").unwrap();
    write_png(&test.join("dog/t.png"), 50);

    let dataset = image_folder(&train, &test).unwrap();
    assert_eq!(dataset.class_names, ["cat", "dog"]);
    let names: Vec<String> = dataset
        .train
        .iter()
        .map(|s| {
            s.image
                .path()
                .unwrap()
                .strip_prefix(&train)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        ["cat/z.png", "dog/a.PNG", "dog/b.png", "dog/nested/c.png"]
    );
    assert_eq!(dataset.labels(Split::Train), [0, 1, 1, 1]);
    assert_eq!(dataset.labels(Split::Test), [1]);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let input = dataset
        .load_image(Split::Train, 0, &Transform::eval(4), &mut rng)
        .unwrap();
    assert_eq!(input.len(), 48);

    write_png(&test.join("bird/x.png"), 1);
    assert!(image_folder(&train, &test)
        .unwrap_err()
        .to_string()
        .contains("bird"));
    std::fs::remove_dir_all(test.join("bird")).unwrap();
    std::fs::write(train.join("cat/old.bmp"), "BM").unwrap();
    assert!(image_folder(&train, &test)
        .unwrap_err()
        .to_string()
        .contains("old.bmp"));
}

#[test]
fn coop_split_files_give_labels_names_and_paths() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("oxford_pets");
    let images = dir.join("images");
    write_png(&images.join("Abyssinian_1.png"), 1);
    write_png(&images.join("beagle_7.png"), 2);
    let split = r#"{
        "train": [["Abyssinian_1.png", 0, "abyssinian"], ["beagle_7.png", 1, "beagle"]],
        "val": [["beagle_7.png", 1, "beagle"]],
        "test": [["missing.png", 1, "beagle"]]
    }"#;
    std::fs::write(dir.join("split_zhou_OxfordPets.json"), split).unwrap();
    let dataset = coop(root.path(), CoopDataset::OxfordPets).unwrap();
    assert_eq!(dataset.class_names, ["abyssinian", "beagle"]);
    assert_eq!(
        dataset.train[1].image.path().unwrap(),
        images.join("beagle_7.png")
    );
    assert_eq!(dataset.labels(Split::Test), [1]);
    // The missing test image is reported when loaded, and by check_files, with its path.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let error = dataset
        .load_image(Split::Test, 0, &Transform::eval(4), &mut rng)
        .unwrap_err();
    assert!(error.to_string().contains("missing.png"), "{error}");
    assert!(dataset
        .check_files()
        .unwrap_err()
        .to_string()
        .contains("missing.png"));

    let conflicting = split.replace(
        r#"["missing.png", 1, "beagle"]"#,
        r#"["missing.png", 1, "boxer"]"#,
    );
    std::fs::write(dir.join("split_zhou_OxfordPets.json"), conflicting).unwrap();
    assert_error_names(
        coop(root.path(), CoopDataset::OxfordPets),
        &["split_zhou_OxfordPets.json", "test[0]"],
    );
    std::fs::write(dir.join("split_zhou_OxfordPets.json"), "{\"train\": 5}").unwrap();
    assert!(matches!(
        coop(root.path(), CoopDataset::OxfordPets),
        Err(DataError::Format { .. })
    ));
}

#[test]
fn every_coop_dataset_has_its_layout() {
    let layouts: Vec<(String, &str)> = CoopDataset::ALL
        .iter()
        .map(|d| {
            (
                format!("{}/{}", d.directory(), d.image_directory()),
                d.split_file(),
            )
        })
        .collect();
    assert!(layouts.contains(&(
        "caltech-101/101_ObjectCategories".into(),
        "split_zhou_Caltech101.json"
    )));
    assert!(layouts.contains(&("oxford_flowers/jpg".into(), "split_zhou_OxfordFlowers.json")));
    assert!(layouts.contains(&("food-101/images".into(), "split_zhou_Food101.json")));
    assert!(layouts.contains(&("dtd/images".into(), "split_zhou_DescribableTextures.json")));
}

/// An Office-Caltech10 tree with `per_class` images per class, classes created in reverse
/// order, plus a class outside the 10 that must be ignored. Each image's colour encodes its
/// domain and class, so alignment can be checked from the pixels.
fn write_office(root: &Path, per_class: usize) {
    for (d, domain) in DomainSet::OfficeCaltech10.domains().iter().enumerate() {
        for (c, class) in DomainSet::OfficeCaltech10
            .classes()
            .iter()
            .enumerate()
            .rev()
        {
            for i in 0..per_class {
                write_png(
                    &root.join(domain).join(class).join(format!("{i:03}.png")),
                    (d * 10 + c) as u8,
                );
            }
        }
        write_png(&root.join(domain).join("bottle/x.png"), 255);
    }
}

#[test]
fn domain_trees_align_labels_with_directories_and_split_deterministically() {
    let root = tempfile::tempdir().unwrap();
    write_office(root.path(), 5);
    let split = TreeSplit::Seeded {
        test_fraction: 0.4,
        seed: 3,
    };
    let dataset = domain_tree(root.path(), DomainSet::OfficeCaltech10, split).unwrap();
    assert_eq!(
        dataset.domain_names,
        ["amazon", "caltech", "dslr", "webcam"]
    );
    assert_eq!(dataset.class_names[5], "laptop_computer");
    assert_eq!(
        (dataset.train.len(), dataset.test.len()),
        (4 * 10 * 3, 4 * 10 * 2)
    );
    for sample in dataset.train.iter().chain(&dataset.test) {
        // `root/<domain>/<class>/<file>`: the last two directories of the path.
        let path = sample.image.path().unwrap();
        let directories: Vec<&str> = path
            .strip_prefix(root.path())
            .unwrap()
            .iter()
            .map(|part| part.to_str().unwrap())
            .collect();
        let (domain_dir, class_dir) = (directories[0], directories[1]);
        assert_eq!(class_dir, dataset.class_names[sample.label]);
        assert_eq!(domain_dir, dataset.domain_names[sample.domain]);
        let ImageSource::File(file) = &sample.image else {
            unreachable!()
        };
        let pixel = fedotp_host::data::RgbImage::open(file).unwrap().pixel(0, 0);
        assert_eq!(usize::from(pixel[0]), sample.domain * 10 + sample.label);
    }
    let again = domain_tree(root.path(), DomainSet::OfficeCaltech10, split).unwrap();
    assert_eq!(dataset, again);
    let other_seed = domain_tree(
        root.path(),
        DomainSet::OfficeCaltech10,
        TreeSplit::Seeded {
            test_fraction: 0.4,
            seed: 4,
        },
    )
    .unwrap();
    assert_ne!(dataset.test, other_seed.test);

    std::fs::remove_dir_all(root.path().join("dslr/mug")).unwrap();
    assert_error_names(
        domain_tree(root.path(), DomainSet::OfficeCaltech10, split),
        &["dslr", "mug"],
    );
}

#[test]
fn domainnet_list_files_keep_the_ten_classes() {
    let root = tempfile::tempdir().unwrap();
    for domain in DomainSet::DomainNet.domains() {
        for list in ["train", "test"] {
            let lines = format!(
                "{domain}/zebra/{list}_1.jpg 344\n{domain}/aircraft_carrier/{list}_2.jpg 0\n{domain}/bird/{list}_3.jpg 30\n"
            );
            std::fs::write(root.path().join(format!("{domain}_{list}.txt")), lines).unwrap();
        }
    }
    let dataset = domain_tree(root.path(), DomainSet::DomainNet, TreeSplit::ListFiles).unwrap();
    assert_eq!((dataset.train.len(), dataset.test.len()), (12, 12));
    assert_eq!(dataset.labels(Split::Train)[..2], [9, 0]);
    assert_eq!(
        dataset.train[2].image.path().unwrap(),
        root.path().join("infograph/zebra/train_1.jpg")
    );
    assert_eq!(dataset.train[2].domain, 1);
    std::fs::write(root.path().join("real_test.txt"), "sketch/bird/x.jpg 1\n").unwrap();
    assert_error_names(
        domain_tree(root.path(), DomainSet::DomainNet, TreeSplit::ListFiles),
        &["real_test.txt", "line 1"],
    );
}

#[test]
fn digits_are_embedded_with_a_fixed_stratified_split() {
    let dataset = digits(8).unwrap();
    assert_eq!(dataset.train.len() + dataset.test.len(), 1797);
    assert_eq!(dataset.test.len(), 355);
    let mut per_class = [0usize; 10];
    for sample in &dataset.test {
        per_class[sample.label] += 1;
    }
    assert!(
        per_class.iter().all(|&n| (34..=37).contains(&n)),
        "{per_class:?}"
    );
    // Upright and plain: the first image is a zero (sklearn's first digit), white ink on black
    // with no ink in the corners.
    assert_eq!(dataset.train[0].label, 0);
    let ImageSource::Digit(_) = &dataset.train[0].image else {
        panic!("digits are drawn when loaded")
    };
    let image = dataset.train[0].image.load().unwrap();
    assert_eq!(image.pixel(0, 0), [0, 0, 0]);
    assert!(image.pixels().iter().any(|&v| v > 200));
}

#[test]
fn federated_digits_give_each_client_its_own_style() {
    let config = DigitsFederation {
        clients: 6,
        ..Default::default()
    };
    let fed = federated_digits(&config).unwrap();
    assert_eq!(fed, federated_digits(&config).unwrap());
    assert_eq!(fed.styles.len(), 6);
    fed.partition.validate(&fed.dataset).unwrap();
    let held: usize = fed
        .partition
        .clients
        .iter()
        .map(|c| c.train.len() + c.test.len())
        .sum();
    assert_eq!(held, 1797);
    for (client, split) in fed.partition.clients.iter().enumerate() {
        assert_eq!(split.domain, Some(client));
        assert!(split.train.len() >= 10 && split.test.len() >= 10);
        assert!(split
            .train
            .iter()
            .all(|&i| fed.dataset.train[i].domain == client));
        assert!(split
            .test
            .iter()
            .all(|&i| fed.dataset.test[i].domain == client));
    }
    // The background of every image is its client's paper colour.
    for sample in &fed.dataset.train {
        let image = sample.image.load().unwrap();
        assert_eq!(image.pixel(0, 0), fed.styles[sample.domain].paper);
    }
    let other = federated_digits(&DigitsFederation { seed: 1, ..config }).unwrap();
    assert_ne!(fed.styles, other.styles);
}

/// Symbolic links inside a class directory: a loop back to the dataset's root, a link to the
/// class directory itself, and a link to a real sub-directory listed twice. Each directory is
/// listed once and a class takes no other class's images.
#[cfg(unix)]
#[test]
fn symbolic_link_loops_do_not_repeat_images_or_swallow_classes() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let write = |path: &Path| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::new(4, 4).save(path).unwrap();
    };
    for split in ["train", "test"] {
        let base = root.path().join(split);
        write(&base.join("cat/a.png"));
        write(&base.join("cat/deep/b.png"));
        write(&base.join("dog/c.png"));
        symlink(&base, base.join("cat/to-root")).unwrap();
        symlink(base.join("cat"), base.join("cat/to-self")).unwrap();
        symlink(base.join("cat/deep"), base.join("cat/deep-again")).unwrap();
    }
    let dataset = image_folder(&root.path().join("train"), &root.path().join("test")).unwrap();
    let names = |split: &[fedotp_host::data::Sample]| -> Vec<(usize, String)> {
        split
            .iter()
            .map(|s| {
                let path = s.image.path().unwrap();
                (
                    s.label,
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                )
            })
            .collect()
    };
    let expected = vec![
        (0, "a.png".to_string()),
        (0, "b.png".into()),
        (1, "c.png".into()),
    ];
    assert_eq!(names(&dataset.train), expected);
    assert_eq!(names(&dataset.test), expected);
}

/// The stored values of the 16-bit test images: below, on and above the ramp of the window
/// centre 1000, width 401 (which runs over (799.5, 1199.5]), and the extremes.
const GRAY16: [u16; 8] = [0, 799, 800, 900, 1000, 1199, 1200, 65_535];

/// The first channel of each pixel (the three are equal for gray images).
fn levels(image: &RgbImage) -> Vec<u8> {
    for pixel in image.pixels().chunks_exact(3) {
        assert!(pixel[0] == pixel[1] && pixel[1] == pixel[2], "{pixel:?}");
    }
    image.pixels().iter().step_by(3).copied().collect()
}

/// A 16-bit grayscale ImageFolder (one plain 16-bit PNG, one with alpha, one 8-bit PNG) read
/// through `dataset.gray_window`: the levels are DICOM's linear function of the stored values,
/// computed here independently, and `from_gray16`'s on the raw values; the 8-bit file and, without
/// a window, every file decode as before (16-bit scaled by round(v / 257), which is also what
/// `"full_range"` gives).
#[test]
fn a_16_bit_gray_image_folder_is_read_through_its_window() {
    let root = tempfile::tempdir().unwrap();
    let (train, test) = (
        root.path().join("xray/train"),
        root.path().join("xray/test"),
    );
    let write16 = |path: &Path| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::ImageBuffer::<image::Luma<u16>, _>::from_raw(4, 2, GRAY16.to_vec())
            .unwrap()
            .save(path)
            .unwrap();
    };
    write16(&train.join("normal/a.png"));
    write16(&test.join("normal/t.png"));
    let with_alpha: Vec<u16> = GRAY16.iter().flat_map(|&v| [v, 0]).collect();
    image::ImageBuffer::<image::LumaA<u16>, _>::from_raw(4, 2, with_alpha)
        .unwrap()
        .save(train.join("normal/b.png"))
        .unwrap();
    let gray8: Vec<u8> = vec![0, 3, 4, 64, 128, 192, 254, 255];
    std::fs::create_dir_all(train.join("opacity")).unwrap();
    image::GrayImage::from_raw(4, 2, gray8.clone())
        .unwrap()
        .save(train.join("opacity/c.png"))
        .unwrap();

    let config = |window: &str| -> DatasetConfig {
        toml::from_str(&format!(
            "source = {{ kind = \"image_folder\", train = {train:?}, test = {test:?} }}\n\
             partition = {{ kind = \"iid\", clients = 1 }}\n{window}"
        ))
        .unwrap()
    };
    let load = |window: &str| {
        let config = config(window);
        config.validate().unwrap();
        let data = config.load(32, 0).unwrap();
        let mut all = data.dataset.train.clone();
        all.extend(data.dataset.test.clone());
        let images: Vec<Vec<u8>> = all
            .iter()
            .map(|s| levels(&s.image.load().unwrap()))
            .collect();
        (data.dataset, images)
    };

    let (centre, width) = (1000.0, 401.0);
    let (windowed, images) = load("gray_window = { centre = 1000.0, width = 401.0 }");
    assert!(windowed
        .train
        .iter()
        .all(|s| matches!(s.image, ImageSource::WindowedFile(_))));
    // a.png, b.png (alpha), c.png (8-bit), t.png.
    let expected: Vec<u8> = GRAY16
        .iter()
        .map(|&v| dicom_linear(v, centre, width))
        .collect();
    // By hand: 800 -> (800 - 999.5)/400 + 0.5 = 0.00125 -> 0.32 -> 0; 900 -> 0.25125 -> 64.07
    // -> 64; 1000 -> 0.50125 -> 127.82 -> 128; 1199 -> 0.99875 -> 254.68 -> 255.
    assert_eq!(expected, [0, 0, 0, 64, 128, 255, 255, 255]);
    let window = GrayWindow::CentreWidth { centre, width };
    let raw = RgbImage::from_gray16(
        RowLayout {
            width: 4,
            height: 2,
            row_stride: 4,
        },
        &GRAY16,
        window,
    )
    .unwrap();
    assert_eq!(levels(&raw), expected);
    assert_eq!(images, [&expected[..], &expected, &gray8, &expected]);

    // Without a window: the old decoding, round(v / 257), as `"full_range"` maps it.
    let old: Vec<u8> = GRAY16
        .iter()
        .map(|&v| (f64::from(v) / 257.0).round() as u8)
        .collect();
    assert_eq!(old, [0, 3, 3, 4, 4, 5, 5, 255]);
    let (plain, images) = load("");
    assert!(plain
        .train
        .iter()
        .all(|s| matches!(s.image, ImageSource::File(_))));
    assert_eq!(images, [&old[..], &old, &gray8, &old]);
    let (_, images) = load("gray_window = \"full_range\"");
    assert_eq!(images, [&old[..], &old, &gray8, &old]);

    // The model's input is the transform of the windowed image.
    let transform = Transform::eval(4);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let input = windowed
        .load_image(Split::Train, 0, &transform, &mut rng)
        .unwrap();
    assert_eq!(input, transform.apply(&raw, &mut rng).unwrap());
}
