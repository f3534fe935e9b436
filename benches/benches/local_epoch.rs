//! One FedOTP local epoch at the CIFAR-100 preset's shapes on the CPU or a CUDA GPU, beside the
//! same step in PyTorch (`benches/local_epoch.py`) timed in the same run on the same device:
//!
//! - ViT-B/16-shaped random weights (`ClipWeights::random(&ClipConfig::vit_b_16(), 0)`);
//! - 100 classes (CIFAR-100's names), 2 prompts (global, local), n_ctx 4, batch 32;
//! - the OT head at the paper's constants (eps 0.1, gamma 0.8, max_iter 100, tol 1e-3);
//! - SGD lr 0.001, momentum 0.9, weight decay 5e-4;
//! - 32 × 32 random images held in memory, brought to 224 × 224 as the reference's CIFAR
//!   pipeline does (stretch, CIFAR-100 statistics).
//!
//! Two modes, both through the library's own path (`PromptTrainer::train` over `SplitFeatures`):
//!
//! - **with the feature cache** (`SplitFeatures::fill_cache` ran once): a step is the text
//!   tower's forward and backward, the OT head, the loss and the SGD update;
//! - **without**: each step also preprocesses the batch's 32 images and runs the image tower.
//!
//! An epoch without the cache takes minutes on a 2-core machine, so the benchmark times a few
//! steps (the median after one warm-up step) and reports the epoch of a client holding 500 images
//! as 16 × that step time — computed, not timed as a whole. The one-time cost of filling the
//! cache is printed beside it.
//!
//! On the CPU PyTorch runs in fp32 with the same number of threads; on a GPU (`--device cuda`,
//! fedotp in its default TF32 math) PyTorch runs in fp16 as the released code does, its image
//! preprocessing on the GPU too.
//!
//!     cargo bench -p fedotp-benches --bench local_epoch [-- --steps N] [--device cpu|cuda]
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs one step of each mode on the
//! tiny model and skips the PyTorch reference, so the smoke test needs no Python.

use std::error::Error;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use fedotp_benches::{benchmarking, json_number, median_time, run_python, N_CTX, N_PROMPTS};
use fedotp_core::ot::OtParams;
use fedotp_host::backend::{Backend, Cpu, Cuda};
use fedotp_host::clip::classnames::classnames;
use fedotp_host::clip::{ClipConfig, ClipWeights};
use fedotp_host::data::{Dataset, ImageSource, Normalize, RgbImage, Sample, Split, Transform};
use fedotp_host::fed::{Sgd, SgdState};
use fedotp_host::prompt::OtStopping;
use fedotp_host::train::{
    CachePlace, ContextInit, FrozenClip, HeadChoice, LocalSchedule, PromptSetup, PromptTrainer,
    SplitFeatures,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Side of the stored images (CIFAR's).
const IMAGE_SIDE: u32 = 32;
/// Images a client holds in the reported epoch: 16 steps of 32 (the last one of 20).
const EPOCH_IMAGES: usize = 500;

/// The shapes of one run: the CIFAR-100 preset's, or the smoke test's tiny ones.
struct Shapes {
    model: &'static str,
    config: ClipConfig,
    classes: usize,
    batch: usize,
    /// Steps timed after the warm-up step.
    steps: usize,
}

impl Shapes {
    fn cifar100(steps: usize) -> Self {
        Shapes {
            model: "ViT-B/16",
            config: ClipConfig::vit_b_16(),
            classes: 100,
            batch: 32,
            steps,
        }
    }

    fn smoke() -> Self {
        Shapes {
            model: "tiny ViT",
            config: ClipConfig::tiny(),
            classes: 10,
            batch: 4,
            steps: 1,
        }
    }

    /// Steps of one epoch over `EPOCH_IMAGES` images.
    fn epoch_steps(&self) -> usize {
        EPOCH_IMAGES.div_ceil(self.batch)
    }
}

/// The FedOTP setup of the CIFAR-100 presets (`configs/cifar100-*.toml`).
fn fedotp_setup() -> PromptSetup {
    PromptSetup {
        n_ctx: N_CTX,
        sets: N_PROMPTS,
        shared_sets: 1,
        init: ContextInit::Normal { std: 0.02 },
        head: HeadChoice::Ot {
            params: OtParams::FEDOTP,
            stopping: OtStopping::PerProblem,
        },
        sgd: Sgd {
            lr: 0.001,
            momentum: 0.9,
            weight_decay: 5e-4,
        },
        proximal_mu: None,
    }
}

/// One batch of random 32 × 32 images held in memory, labelled round-robin over `classes`
/// of CIFAR-100's class names.
fn dataset(classes: usize, images: usize) -> Result<Dataset, Box<dyn Error>> {
    let names = classnames("cifar100").ok_or("CIFAR-100 class names are not shipped")?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let train = (0..images)
        .map(|i| {
            let mut pixels = vec![0u8; (IMAGE_SIDE * IMAGE_SIDE * 3) as usize];
            rng.fill_bytes(&mut pixels);
            Ok(Sample {
                image: ImageSource::Memory(RgbImage::new(IMAGE_SIDE, IMAGE_SIDE, pixels)?),
                label: i % classes,
                domain: 0,
            })
        })
        .collect::<Result<Vec<_>, Box<dyn Error>>>()?;
    let dataset = Dataset {
        name: "random images with CIFAR-100 classes".into(),
        class_names: names[..classes].iter().map(|n| n.to_string()).collect(),
        domain_names: vec!["random".into()],
        coarse: None,
        train,
        test: Vec::new(),
    };
    dataset.validate()?;
    Ok(dataset)
}

/// Median time of one local step (a one-batch call of `PromptTrainer::train`) over
/// `shapes.steps` steps after one warm-up step, with a fresh context and optimiser state.
fn step_time<B: Backend>(
    trainer: &mut PromptTrainer<B>,
    clip: &FrozenClip<B>,
    features: &SplitFeatures<'_>,
    steps: usize,
) -> Result<Duration, Box<dyn Error>> {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut ctx = trainer.init_context(trainer.context_len(), &mut rng);
    let mut optimizer = SgdState::default();
    let samples: Vec<usize> = (0..features.dataset().train.len()).collect();
    let schedule = LocalSchedule {
        epochs: 1,
        batch_size: samples.len(),
    };
    let mut failure = None;
    let time = median_time(steps, || {
        if failure.is_some() {
            return;
        }
        let stats = trainer.train(
            clip,
            &mut ctx,
            &mut optimizer,
            None,
            features,
            &samples,
            schedule,
            &mut rng,
            &mut |_, _| ControlFlow::Continue(()),
        );
        failure = match stats {
            Err(e) => Some(e.to_string()),
            // A skipped batch does no update: its time would not be a step's.
            Ok(stats) if stats.skipped_batches > 0 => Some("a step's batch was skipped".into()),
            Ok(_) => None,
        };
    });
    match failure {
        Some(why) => Err(why.into()),
        None => Ok(time),
    }
}

/// fedotp's figures.
struct Measured {
    cached_step: Duration,
    uncached_step: Duration,
    cache_fill: Duration,
}

/// fedotp's figures on `backend`. Every step downloads its loss, so a step's time includes the
/// device's work.
fn measure_fedotp<B: Backend>(backend: B, shapes: &Shapes) -> Result<Measured, Box<dyn Error>> {
    let clip = FrozenClip::new(backend, ClipWeights::random(&shapes.config, 0)?)?;
    let dataset = dataset(shapes.classes, shapes.batch)?;
    let mut trainer = PromptTrainer::new(&clip, &dataset.class_names, fedotp_setup())?;
    let transform =
        Transform::stretch(clip.image_size() as u32).with_normalize(Normalize::CIFAR100_REFERENCE);
    let mut features =
        SplitFeatures::new(&dataset, Split::Train, transform, trainer.feature_kind());

    let uncached_step = step_time(&mut trainer, &clip, &features, shapes.steps)?;

    let samples: Vec<usize> = (0..dataset.train.len()).collect();
    let cache_dir = std::env::temp_dir();
    let place = CachePlace {
        memory_budget: u64::MAX,
        disk_dir: &cache_dir,
        batch: shapes.batch,
        kept: None,
    };
    let start = Instant::now();
    features.fill_cache(&clip, &samples, place, &mut |_, _| {})?;
    let cache_fill = start.elapsed();
    let cached_step = step_time(&mut trainer, &clip, &features, shapes.steps)?;
    Ok(Measured {
        cached_step,
        uncached_step,
        cache_fill,
    })
}

/// PyTorch's median seconds per step with and without the cache, or why there are none.
fn measure_pytorch(
    shapes: &Shapes,
    device: Device,
    threads: usize,
) -> Result<(f64, f64, String), String> {
    if !benchmarking() {
        return Err("smoke run (cargo test): the PyTorch reference runs under cargo bench".into());
    }
    let (threads, steps) = (threads.to_string(), shapes.steps.to_string());
    let (classes, batch) = (shapes.classes.to_string(), shapes.batch.to_string());
    let json = run_python(
        "local_epoch.py",
        &[
            "--device",
            device.name(),
            "--threads",
            &threads,
            "--steps",
            &steps,
            "--classes",
            &classes,
            "--batch",
            &batch,
        ],
    )?;
    let number = |key| {
        json_number(&json, key).ok_or_else(|| format!("local_epoch.py printed no `{key}`: {json}"))
    };
    let version = json
        .split("\"torch\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("?")
        .to_string();
    Ok((
        number("cached_step_s")?,
        number("uncached_step_s")?,
        version,
    ))
}

fn print_table(
    shapes: &Shapes,
    device: Device,
    device_info: &str,
    threads: usize,
    ours: &Measured,
    torch: &Result<(f64, f64, String), String>,
) {
    let epoch_steps = shapes.epoch_steps();
    let title = if benchmarking() {
        "FedOTP local epoch, CIFAR-100 shapes"
    } else {
        "Smoke run of the local-epoch benchmark on the tiny model (its figures mean nothing)"
    };
    println!(
        "\n{title} ({}, {} classes, {} prompts, n_ctx {}, batch {}, OT eps 0.1 gamma 0.8 \
         max_iter 100 tol 1e-3, SGD), {device_info}, {threads} CPU threads each side",
        shapes.model, shapes.classes, N_PROMPTS, N_CTX, shapes.batch
    );
    println!(
        "per step: median of {} timed steps after 1 warm-up step; epoch = {epoch_steps} steps × \
         that (a client holding {EPOCH_IMAGES} images), computed, not timed whole",
        shapes.steps
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("load average at the end: {}", load.join(" "));
    }
    match torch {
        Ok((_, _, version)) => println!(
            "PyTorch {version}, {}, text padded to 77",
            device.torch_dtype()
        ),
        Err(why) => println!("PyTorch reference not run: {why}"),
    }
    println!(
        "| mode | fedotp ms/step | PyTorch ms/step | speed-up | fedotp epoch s | PyTorch epoch s |"
    );
    println!("|---|---|---|---|---|---|");
    let rows = [
        (
            "with feature cache",
            ours.cached_step,
            torch.as_ref().ok().map(|t| t.0),
        ),
        (
            "without cache (image tower per step)",
            ours.uncached_step,
            torch.as_ref().ok().map(|t| t.1),
        ),
    ];
    for (mode, ours, theirs) in rows {
        let ours = ours.as_secs_f64();
        let show = |t: Option<f64>, scale: f64, digits: usize| {
            t.map_or("n/a".into(), |t| format!("{:.*}", digits, t * scale))
        };
        println!(
            "| {mode} | {:.1} | {} | {} | {:.2} | {} |",
            ours * 1e3,
            show(theirs, 1e3, 1),
            theirs.map_or("n/a".into(), |t| format!("{:.2}×", t / ours)),
            ours * epoch_steps as f64,
            show(theirs, epoch_steps as f64, 2),
        );
    }
    println!(
        "filling the cache (once per client, image tower over its {} images): {:.2} s",
        shapes.batch,
        ours.cache_fill.as_secs_f64()
    );
}

/// Where both sides run.
#[derive(Clone, Copy)]
enum Device {
    Cpu,
    /// CUDA device 0.
    Cuda,
}

impl Device {
    /// The name `local_epoch.py --device` takes.
    fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    /// The precision PyTorch runs in there (the released code's fp16 on a GPU).
    fn torch_dtype(self) -> &'static str {
        match self {
            Device::Cpu => "fp32",
            Device::Cuda => "fp16",
        }
    }
}

/// `--steps N` and `--device cpu|cuda` from the command line (after `cargo bench ... --`).
fn arguments() -> Result<(usize, Device), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| -> Result<Option<&String>, String> {
        match args.iter().position(|a| a == name) {
            None => Ok(None),
            Some(i) => args
                .get(i + 1)
                .map(Some)
                .ok_or_else(|| format!("{name} needs a value")),
        }
    };
    let steps = match value("--steps")? {
        None => 3,
        Some(v) => match v.parse::<usize>() {
            Ok(0) => return Err("--steps must be at least 1".into()),
            Ok(steps) => steps,
            Err(e) => return Err(format!("--steps {v}: {e}").into()),
        },
    };
    let device = match value("--device")?.map(String::as_str) {
        None | Some("cpu") => Device::Cpu,
        Some("cuda") => Device::Cuda,
        Some(other) => return Err(format!("--device {other}: expected cpu or cuda").into()),
    };
    Ok((steps, device))
}

fn main() -> Result<(), Box<dyn Error>> {
    let (steps, device) = arguments()?;
    let shapes = if benchmarking() {
        Shapes::cifar100(steps)
    } else {
        Shapes::smoke()
    };
    let threads = rayon::current_num_threads();
    let (ours, device_info) = match device {
        Device::Cpu => (measure_fedotp(Cpu::new(), &shapes)?, "CPU".to_string()),
        Device::Cuda => {
            let gpu = Cuda::new(0).map_err(|e| format!("--device cuda: {e}"))?;
            let info = format!("{} (fedotp math {})", gpu.info(), gpu.math());
            (measure_fedotp(gpu, &shapes)?, info)
        }
    };
    let torch = measure_pytorch(&shapes, device, threads);
    print_table(&shapes, device, &device_info, threads, &ours, &torch);
    Ok(())
}
