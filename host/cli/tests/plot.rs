//! `fedotp plot`: PNG and SVG files of several runs' accuracy per round, well-formed, with a
//! line and a legend entry per run and text drawn with the embedded font.

use std::path::{Path, PathBuf};

use clap::Parser;
use fedotp_cli::plot::{plot_accuracy, PlotError, Series};
use fedotp_cli::{run, Cli};
use fedotp_host::config::{Override, RunConfig};
use fedotp_host::run::{ClientRound, EvalStats, RoundMetrics, RunDir};

/// A run directory with `rounds` rounds of metrics, evaluated every other round.
fn fake_run(parent: &Path, name: &str, method: &str, rounds: u32, level: f64) -> PathBuf {
    let sets: Vec<Override> = [format!("name={name}"), format!("method.kind={method}")]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let config = RunConfig::quickstart_with(&sets).unwrap();
    let dir = RunDir::create(parent, &config.name).unwrap();
    dir.write_config(&config).unwrap();
    let mut writer = dir.metrics_writer().unwrap();
    for round in 0..rounds {
        let clients = (0..3)
            .map(|client| ClientRound {
                client,
                train: None,
                eval: (round % 2 == 1).then_some(EvalStats {
                    accuracy: level + 0.01 * f64::from(round) + 0.02 * client as f64,
                    macro_f1: level,
                    macro_f1_true_labels: level,
                }),
            })
            .collect();
        writer.append(&RoundMetrics { round, clients }).unwrap();
    }
    dir.path().to_path_buf()
}

#[test]
fn series_come_from_the_evaluated_mean_rows() {
    let parent = tempfile::tempdir().unwrap();
    let run = fake_run(parent.path(), "a", "fedotp", 6, 0.5);
    let series = Series::of_run(&run).unwrap();
    assert_eq!(series.label, "a — FedOTP");
    let rounds: Vec<u32> = series.points.iter().map(|p| p.0).collect();
    assert_eq!(rounds, [1, 3, 5]);
    // Mean of 0.5 + 0.01·1 + {0, 0.02, 0.04}, in percent.
    assert!((series.points[0].1 - 53.0).abs() < 1e-9);

    let empty = fake_run(parent.path(), "b", "fedotp", 1, 0.5);
    assert!(matches!(
        Series::of_run(&empty),
        Err(PlotError::NoEvaluations { .. })
    ));
    assert!(matches!(
        plot_accuracy(
            &[],
            &parent.path().join("x.png"),
            &parent.path().join("x.svg")
        ),
        Err(PlotError::NoRuns)
    ));
}

#[test]
fn the_plot_command_writes_a_png_and_an_svg_with_a_line_per_run() {
    let parent = tempfile::tempdir().unwrap();
    let runs = [
        fake_run(parent.path(), "cmp", "fedotp", 20, 0.6),
        fake_run(parent.path(), "cmp-promptfl", "promptfl", 20, 0.4),
        fake_run(parent.path(), "cmp-coop", "coop_local", 10, 0.3),
    ];
    let out = parent.path().join("plots/accuracy.png");
    std::fs::create_dir(parent.path().join("plots")).unwrap();
    let mut args = vec!["fedotp".to_string(), "plot".into()];
    args.extend(runs.iter().map(|r| r.display().to_string()));
    args.extend(["--out".into(), out.display().to_string()]);
    run(Cli::try_parse_from(args).unwrap()).unwrap();

    // PNG: signature, IHDR size, decodable, and dark pixels (text) in the caption band.
    let png = std::fs::read(&out).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1000, 640));
    let image = image::load_from_memory(&png).unwrap().to_rgb8();
    let dark_in_caption = (0..width)
        .flat_map(|x| (0..40).map(move |y| (x, y)))
        .filter(|&(x, y)| image.get_pixel(x, y).0.iter().all(|&c| c < 100))
        .count();
    assert!(
        dark_in_caption > 200,
        "caption text: {dark_in_caption} dark pixels"
    );

    // SVG: well-formed XML; per run a coloured polyline with a point per evaluated round and a
    // legend sample in the same colour; the labels as text.
    let svg = std::fs::read_to_string(parent.path().join("plots/accuracy.svg")).unwrap();
    let document = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(document.root_element().tag_name().name(), "svg");
    let mut coloured: Vec<(String, usize)> = document
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") != Some("#000000"))
        .map(|n| {
            let points = n.attribute("points").unwrap().split_whitespace().count();
            (n.attribute("stroke").unwrap().to_owned(), points)
        })
        .collect();
    coloured.sort();
    let colours: std::collections::BTreeSet<&String> = coloured.iter().map(|c| &c.0).collect();
    assert_eq!(colours.len(), 3, "{coloured:?}");
    let mut points: Vec<usize> = coloured.iter().map(|c| c.1).collect();
    points.sort_unstable();
    assert_eq!(points, [2, 2, 2, 5, 10, 10], "{coloured:?}");
    let texts: Vec<String> = document
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_owned()))
        .collect();
    for label in [
        "cmp — FedOTP",
        "cmp-promptfl — PromptFL",
        "cmp-coop — CoOp (local)",
        "round",
        "accuracy (%)",
    ] {
        assert!(
            texts.iter().any(|t| t == label),
            "no text {label:?} in {texts:?}"
        );
    }
}

#[test]
fn a_directory_out_gets_acc_files_and_impossible_accuracies_are_refused() {
    let parent = tempfile::tempdir().unwrap();
    let good = fake_run(parent.path(), "good", "fedotp", 4, 0.5);
    let plots = parent.path().join("plots");
    std::fs::create_dir(&plots).unwrap();
    let plot = |dir: &Path, out: &Path| {
        let args = [
            "fedotp",
            "plot",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        run(Cli::try_parse_from(args).unwrap())
    };
    plot(&good, &plots).unwrap();
    assert!(plots.join("acc.png").is_file() && plots.join("acc.svg").is_file());
    let hidden: Vec<_> = std::fs::read_dir(&plots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // Level 0.97: round 3's mean accuracy is 0.97 + 0.03 + 0.02 = 1.02.
    let bad = fake_run(parent.path(), "bad", "fedotp", 4, 0.97);
    let error = plot(&bad, &plots.join("bad.png")).unwrap_err().to_string();
    assert!(
        error.contains("metrics.jsonl") && error.contains("not a fraction in [0, 1]"),
        "{error}"
    );
    assert!(!plots.join("bad.png").exists());
}
