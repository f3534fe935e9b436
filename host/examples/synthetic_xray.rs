//! Writes a synthetic stand-in for `configs/medical-xray-imagefolder.toml`'s data: an ImageFolder
//! of 16-bit grayscale PNGs holding 12-bit values (0–4095), as X-ray exports do.
//!
//! ```sh
//! cargo run -p fedotp-host --example synthetic_xray -- /tmp/xray [TRAIN_PER_CLASS [TEST_PER_CLASS]]
//! ```
//!
//! writes `/tmp/xray/{train,test}/{normal,nodule,effusion}/NNNN.png` (60 and 20 per class by
//! default), 64 × 64 pixels, drawn from a fixed seed: a body and two darker lung fields with noise;
//! a nodule is a small bright disc in a lung, an effusion a bright band filling a lung's base. The
//! pictures are cartoons, not radiographs — figures measured on them say nothing about
//! medicine — but the files are what a hospital's export holds: read without a window they are
//! nearly black (4095 / 65535 of full scale), and the preset's window shows them.

use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Side of the images.
const SIDE: u32 = 64;
/// The classes, one directory each.
const CLASSES: [&str; 3] = ["normal", "nodule", "effusion"];
/// The largest stored value (12 bits).
const MAX_VALUE: f64 = 4095.0;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: synthetic_xray OUT_DIR [TRAIN_PER_CLASS [TEST_PER_CLASS]]";
    let out = PathBuf::from(args.next().ok_or(usage)?);
    let mut count = |default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args
            .next()
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (train, test) = (count(60)?, count(20)?);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for (split, per_class) in [("train", train), ("test", test)] {
        for (label, class) in CLASSES.iter().enumerate() {
            let dir = out.join(split).join(class);
            std::fs::create_dir_all(&dir)?;
            for index in 0..per_class {
                write_image(&dir.join(format!("{index:04}.png")), label, &mut rng)?;
            }
        }
    }
    println!(
        "wrote {} training and {} test images ({} classes) under {}",
        train * CLASSES.len(),
        test * CLASSES.len(),
        CLASSES.len(),
        out.display()
    );
    Ok(())
}

/// Whether (x, y) lies in the ellipse centred at (cx, cy) with half-axes (rx, ry).
fn in_ellipse(x: f64, y: f64, (cx, cy): (f64, f64), (rx, ry): (f64, f64)) -> bool {
    ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) <= 1.0
}

/// One image of class `label` (an index into [`CLASSES`]).
fn write_image(path: &Path, label: usize, rng: &mut ChaCha8Rng) -> image::ImageResult<()> {
    let side = f64::from(SIDE);
    // Exposure and positioning vary from image to image.
    let gain: f64 = rng.random_range(0.85..1.15);
    let shift = rng.random_range(-3.0..3.0);
    let body = ((side / 2.0 + shift, side / 2.0), (side * 0.42, side * 0.47));
    let lungs = [
        (
            (side * 0.33 + shift, side * 0.45),
            (side * 0.12, side * 0.25),
        ),
        (
            (side * 0.67 + shift, side * 0.45),
            (side * 0.12, side * 0.25),
        ),
    ];
    let sick_lung = lungs[rng.random_range(0..2)];
    let nodule = {
        let ((cx, cy), (rx, ry)) = sick_lung;
        let centre = (
            cx + rng.random_range(-0.5..0.5) * rx,
            cy + rng.random_range(-0.6..0.6) * ry,
        );
        (centre, rng.random_range(2.5..5.0))
    };
    // An effusion fills the lung from this row down.
    let fluid_level = sick_lung.0 .1 + rng.random_range(0.0..0.6) * sick_lung.1 .1;
    let mut values = Vec::with_capacity((SIDE * SIDE) as usize);
    for y in 0..SIDE {
        for x in 0..SIDE {
            let (x, y) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
            let mut value: f64 = 300.0;
            if in_ellipse(x, y, body.0, body.1) {
                value = 2600.0;
            }
            for &(centre, radii) in &lungs {
                if in_ellipse(x, y, centre, radii) {
                    value = 1000.0;
                }
            }
            let in_sick_lung = in_ellipse(x, y, sick_lung.0, sick_lung.1);
            match CLASSES[label] {
                "nodule" => {
                    let ((cx, cy), r) = nodule;
                    if (x - cx).hypot(y - cy) <= r {
                        value = 3100.0;
                    }
                }
                "effusion" if in_sick_lung && y >= fluid_level => value = 2300.0,
                _ => {}
            }
            let noisy: f64 = value * gain + rng.random_range(-120.0..120.0);
            values.push(noisy.clamp(0.0, MAX_VALUE).round() as u16);
        }
    }
    image::ImageBuffer::<image::Luma<u16>, _>::from_raw(SIDE, SIDE, values)
        .expect("SIDE x SIDE values")
        .save(path)
}
