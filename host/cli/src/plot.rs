//! `fedotp plot`: mean client accuracy per round of several runs, one line each, as PNG and SVG.
//!
//! Each run directory contributes the mean rows of its `metrics.jsonl` that have an accuracy
//! (its evaluated rounds) and is labelled `<name> — <method>` from its `config.toml`, so a
//! FedOTP-versus-baselines comparison is `fedotp plot runs/a runs/b runs/c`. PNG text is drawn
//! with an embedded subset of DejaVu Sans (`host/cli/assets/fonts`), so no system font is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::{ExtendedColorType, ImageEncoder};
use plotters::coord::Shift;
use plotters::prelude::*;

use fedotp_host::run::{metrics, RunDir, RunError};

/// The embedded font (see `host/cli/assets/README.md`).
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-plot.ttf");
/// The family name the font is registered under.
const FONT_FAMILY: &str = "sans-serif";
/// Size of both images in pixels (the SVG's view box).
const SIZE: (u32, u32) = (1000, 640);
/// Line colours, in order (the "tableau" palette: distinct, and legible on white).
const COLOURS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// A failure to read a run or to draw or write a plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// A run directory or its files could not be read.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A run has no evaluated round to draw.
    #[error("{}: no evaluated round in its metrics.jsonl", path.display())]
    NoEvaluations {
        /// The run directory.
        path: PathBuf,
    },
    /// Nothing to plot.
    #[error("no run to plot")]
    NoRuns,
    /// A recorded accuracy is not a fraction in [0, 1]: the metrics are damaged.
    #[error("{}: round {round}'s mean accuracy is {accuracy}, not a fraction in [0, 1]", path.display())]
    ImpossibleAccuracy {
        /// The metrics file.
        path: PathBuf,
        /// The round.
        round: u32,
        /// The value recorded.
        accuracy: f64,
    },
    /// The embedded font could not be registered with plotters.
    #[error("the embedded plot font is not a valid TrueType file")]
    Font,
    /// plotters failed to draw.
    #[error("{}: cannot draw the plot: {reason}", path.display())]
    Draw {
        /// The image being drawn.
        path: PathBuf,
        /// What plotters said.
        reason: String,
    },
}

/// One line of the plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub label: String,
    /// (round, mean client accuracy in percent), by round.
    pub points: Vec<(u32, f64)>,
}

impl Series {
    /// The evaluated rounds of the run in `dir`, labelled with its name and method; an
    /// accuracy outside [0, 1] is an error naming the round, not a point drawn at the edge.
    pub fn of_run(dir: &Path) -> Result<Series, PlotError> {
        let run = RunDir::open(dir)?;
        let config = run.read_config()?;
        let mut points: Vec<(u32, f64)> = Vec::new();
        for row in metrics::evaluated_means(&run.read_metrics()?) {
            let Some(accuracy) = row.accuracy else {
                continue;
            };
            if !(0.0..=1.0).contains(&accuracy) {
                return Err(PlotError::ImpossibleAccuracy {
                    path: run.metrics_jsonl_path(),
                    round: row.round,
                    accuracy,
                });
            }
            points.push((row.round, 100.0 * accuracy));
        }
        if points.is_empty() {
            return Err(PlotError::NoEvaluations {
                path: dir.to_path_buf(),
            });
        }
        Ok(Series {
            label: format!("{} — {}", config.name, config.method_label()),
            points,
        })
    }
}

/// The PNG and SVG paths for `out`: its extension (`.png` or `.svg`, if any) replaced by each;
/// for a directory, `acc.png` and `acc.svg` inside it.
///
/// ```
/// use std::path::PathBuf;
/// let (png, svg) = fedotp_cli::plot::output_paths("plots/accuracy.png".as_ref());
/// assert_eq!((png, svg), (PathBuf::from("plots/accuracy.png"), PathBuf::from("plots/accuracy.svg")));
/// let dir = tempfile::tempdir().unwrap();
/// let (png, _) = fedotp_cli::plot::output_paths(dir.path());
/// assert_eq!(png, dir.path().join("acc.png"));
/// ```
pub fn output_paths(out: &Path) -> (PathBuf, PathBuf) {
    let stem = match out.extension().and_then(|e| e.to_str()) {
        _ if out.is_dir() => out.join("acc"),
        Some("png" | "svg") => out.with_extension(""),
        _ => out.to_path_buf(),
    };
    let with = |ext: &str| {
        let mut name = stem.as_os_str().to_owned();
        name.push(".");
        name.push(ext);
        PathBuf::from(name)
    };
    (with("png"), with("svg"))
}

/// Draws `series` into `png` and `svg` (each written atomically).
pub fn plot_accuracy(series: &[Series], png: &Path, svg: &Path) -> Result<(), PlotError> {
    if series.is_empty() {
        return Err(PlotError::NoRuns);
    }
    register_font()?;
    let draw_error = |path: &Path| {
        let path = path.to_path_buf();
        move |reason: String| PlotError::Draw { path, reason }
    };

    let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        draw(&root, series).map_err(draw_error(png))?;
        root.present().map_err(|e| draw_error(png)(e.to_string()))?;
    }
    let mut encoded = Vec::new();
    image::codecs::png::PngEncoder::new(&mut encoded)
        .write_image(&pixels, SIZE.0, SIZE.1, ExtendedColorType::Rgb8)
        .map_err(|e| draw_error(png)(e.to_string()))?;
    fedotp_host::run::write_atomic(png, &encoded)?;

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        draw(&root, series).map_err(draw_error(svg))?;
        root.present().map_err(|e| draw_error(svg)(e.to_string()))?;
    }
    fedotp_host::run::write_atomic(svg, text.as_bytes())?;
    Ok(())
}

/// Registers the embedded font with plotters, once per process.
fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT).is_ok()
    });
    if *registered {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// The chart: a line per series with a marker at each evaluated round, axes, legend.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[Series],
) -> Result<(), String> {
    let error = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(error)?;
    let last_round = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(0);
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    // A margin of 5 points around the data, within [0, 100].
    let y_range = (low - 5.0).max(0.0)..(high + 5.0).min(100.0).max(low + 1.0);
    let x_range = 0u32..last_round.max(1);

    let mut chart = ChartBuilder::on(root)
        .caption("Mean client accuracy", (FONT_FAMILY, 26))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y_range)
        .map_err(error)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("accuracy (%)")
        .label_style((FONT_FAMILY, 16))
        .axis_desc_style((FONT_FAMILY, 18))
        .draw()
        .map_err(error)?;
    for (i, s) in series.iter().enumerate() {
        // More runs than colours reuse them; the legend still tells them apart by order.
        let color = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(error)?
            .label(s.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&point| Circle::new(point, 3, color.filled())),
            )
            .map_err(error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT_FAMILY, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_font_parses() {
        assert!(plotters::style::register_font("test-font", FontStyle::Normal, FONT).is_ok());
    }
}
