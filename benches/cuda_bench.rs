//! The CUDA backend beside PyTorch on the same GPU, in one invocation, as one table:
//!
//! - image tower: ViT-B/16 forward, batch 128, every token after `ln_post` and the projection
//!   (images/s);
//! - image tower: RN50 (the few-shot settings' backbone, where augmentation runs it every
//!   step) forward, batch 128, through the attention pool (images/s);
//! - text step: FedOTP's per-batch text work — 100 classes × 2 prompts, n_ctx 4, forward and
//!   backward to the context (ms); fedotp runs to the longest EOT, PyTorch padded to 77 as the
//!   released code does;
//! - OT head: 32 images × 100 classes of 196 × 2 problems — similarities, the solve at the
//!   paper's settings, the logits (µs).
//!
//! PyTorch runs `benches/cuda_bench.py` in fp16, as the released code does. For fedotp each row
//! also counts the work — flops of the matrix products, bytes the other layers must move — and
//! its floor on this GPU, measured in the same run: the products at the rate cuBLAS reaches on
//! the workload's own largest product, the bytes at the bandwidth of a streaming kernel. "gap"
//! is the time over that floor.
//!
//! The CIFAR-100-preset local epoch is the local-epoch bench's (`benches/benches/local_epoch.rs`,
//! `-- --device cuda`), which runs the training loop itself.
//!
//!     cargo run --release -p fedotp-benches --bin cuda_bench -- [--math tf32|f32|bf16]
//!         [--iterations N] [--no-torch]
//!     cargo run --release -p fedotp-benches --bin cuda_bench -- --smoke   # tiny shapes, CPU
//!
//! Without a usable GPU it exits with status 2 and the reason. `--smoke` runs the same code on
//! the CPU backend with tiny shapes (and PyTorch on the CPU), to check the benchmark itself on a
//! machine without a GPU; its figures mean nothing.

use std::process::ExitCode;
use std::time::Instant;

use fedotp_benches::{class_token_ids, run_python, N_CTX, N_PROMPTS};
use fedotp_core::ot::{BatchLayout, OtParams};
use fedotp_host::backend::{Backend, Cpu, Cuda, Linear, MathMode, MatmulDims};
use fedotp_host::clip::{
    text_backward, text_forward, vision_forward, ClipConfig, ClipWeights, PromptBatch,
    ResNetConfig, SpecialTokens, TextActivations, TextConfig, TextTower, VisionConfig,
    VisionWeights,
};
use fedotp_tests::inputs::Stream;

/// Options from the command line.
struct Options {
    math: MathMode,
    iterations: usize,
    torch: bool,
    smoke: bool,
}

/// Sizes of the workloads.
struct Sizes {
    /// The model's name in the table.
    model: &'static str,
    config: ClipConfig,
    /// The ResNet model's name and architecture.
    resnet_model: &'static str,
    resnet: ClipConfig,
    image_batch: usize,
    classes: usize,
    ot_images: usize,
}

impl Sizes {
    fn full() -> Self {
        Sizes {
            model: "ViT-B/16",
            config: ClipConfig::vit_b_16(),
            resnet_model: "RN50",
            resnet: ClipConfig::rn50(),
            image_batch: 128,
            classes: 100,
            ot_images: 32,
        }
    }

    fn smoke() -> Self {
        Sizes {
            model: "tiny ViT",
            config: ClipConfig::tiny(),
            resnet_model: "tiny ResNet",
            resnet: ClipConfig::tiny_resnet(),
            image_batch: 2,
            classes: 3,
            ot_images: 2,
        }
    }
}

/// One row of the table.
struct Row {
    name: String,
    /// Median seconds per run, fedotp.
    seconds: f64,
    /// Median seconds per run, PyTorch, or why there is none.
    torch: Result<f64, String>,
    /// Flops of the matrix products.
    flops: f64,
    /// Bytes the other layers must move.
    bytes: f64,
    /// The floor: the products at cuBLAS's rate plus the bytes at the streaming bandwidth.
    floor: f64,
    /// How the time is shown.
    unit: Unit,
}

impl Row {
    /// An image tower's row: `model` on `batch` images in `seconds`, its products' `flops` at
    /// cuBLAS's `rate` and its other layers' `bytes` at `bandwidth` for the floor.
    fn tower(
        model: &str,
        batch: usize,
        seconds: f64,
        flops: f64,
        bytes: f64,
        rate: f64,
        bandwidth: f64,
    ) -> Row {
        Row {
            name: format!("image tower {model}, batch {batch}"),
            seconds,
            torch: Err("not run".into()),
            flops,
            bytes,
            floor: flops / rate + bytes / bandwidth,
            unit: Unit::PerSecond(batch, "images"),
        }
    }
}

#[derive(Clone, Copy)]
enum Unit {
    /// Items per second for `n` items per run.
    PerSecond(usize, &'static str),
    Milliseconds,
    Microseconds,
}

impl Unit {
    fn show(self, seconds: f64) -> String {
        match self {
            Unit::PerSecond(n, what) => format!("{:.0} {what}/s", n as f64 / seconds),
            Unit::Milliseconds => format!("{:.2} ms", seconds * 1e3),
            Unit::Microseconds => format!("{:.0} µs", seconds * 1e6),
        }
    }
}

/// Median seconds of `runs` runs of `f` after one warm-up, each run ended by `sync` (which
/// waits for the device).
fn time(runs: usize, sync: &dyn Fn(), mut f: impl FnMut()) -> f64 {
    f();
    sync();
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            sync();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Deterministic normal-ish values (sum of uniforms), for features and images.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut stream = Stream::new(seed);
    (0..len)
        .map(|_| (0..4).map(|_| stream.unit() - 0.5).sum())
        .collect()
}

/// Measured rates of the device: a streaming kernel's bandwidth (bytes/s) and cuBLAS's rate
/// on one product shape (flop/s).
struct Rates<'a, B: Backend> {
    backend: &'a B,
    sync: &'a dyn Fn(),
    iterations: usize,
}

impl<B: Backend> Rates<'_, B> {
    /// Bandwidth of `acc += x` over `len` floats (reads 8, writes 4 bytes per element).
    fn bandwidth(&self, len: usize) -> f64 {
        let b = self.backend;
        let mut acc = b.upload(&values(len, 1)).unwrap();
        let x = b.upload(&values(len, 2)).unwrap();
        let seconds = time(self.iterations, self.sync, || {
            b.add_assign(&mut acc, &x, len).unwrap()
        });
        12.0 * len as f64 / seconds
    }

    /// cuBLAS's rate (flop/s) on `rows × n_in → n_out`, in the backend's math mode.
    fn linear_rate(&self, rows: usize, n_in: usize, n_out: usize) -> f64 {
        let b = self.backend;
        let layer = Linear {
            weight: b.upload(&values(n_out * n_in, 3)).unwrap(),
            bias: None,
            in_features: n_in,
            out_features: n_out,
        };
        let x = b.upload(&values(rows * n_in, 4)).unwrap();
        let mut y = b.alloc(rows * n_out).unwrap();
        let seconds = time(self.iterations, self.sync, || {
            b.linear(&mut y, &x, &layer, rows).unwrap()
        });
        2.0 * (rows * n_in * n_out) as f64 / seconds
    }
}

/// Flops of the matrix products and bytes of the other layers of one pre-norm transformer
/// block over `rows = batch × seq` rows of width `w` (f32; per layer: two LayerNorms, bias
/// broadcasts, the softmax, QuickGELU, two residual adds).
fn block_work(batch: usize, seq: usize, w: usize, heads: usize, backward: bool) -> (f64, f64) {
    let rows = (batch * seq) as f64;
    let w = w as f64;
    let scores = (batch * heads * seq * seq) as f64;
    let linear = 24.0 * rows * w * w; // qkv 6, out 2, fc 8, proj 8 (×rows·w²)
    let attention = 4.0 * rows * seq as f64 * w; // QKᵀ and PV
    let bytes = 4.0 * (16.0 * rows * w + 36.0 * rows * w + 32.0 * rows * w + 24.0 * rows * w)
        + 8.0 * scores;
    if backward {
        // Input gradients only (frozen weights): one product per linear, four for attention.
        (2.0 * linear + 3.0 * attention, 2.0 * bytes)
    } else {
        (linear + attention, bytes)
    }
}

fn image_row<B: Backend>(
    backend: &B,
    sync: &dyn Fn(),
    weights: &ClipWeights<B::Buf>,
    sizes: &Sizes,
    iterations: usize,
    rates: &Rates<B>,
    bandwidth: f64,
) -> Row {
    let VisionConfig::Vit(vit) = &sizes.config.vision else {
        unreachable!("the benchmark models are ViTs")
    };
    let batch = sizes.image_batch;
    let seconds = time_tower(
        backend,
        sync,
        &weights.vision,
        vit.image_size,
        batch,
        iterations,
    );
    let tokens = vit.tokens();
    let (block_flops, block_bytes) = block_work(batch, tokens, vit.width, vit.heads, false);
    let patch_len = 3 * vit.patch_size * vit.patch_size;
    let rows = (batch * tokens) as f64;
    let flops = vit.layers as f64 * block_flops
        + 2.0 * (batch * vit.patches()) as f64 * (patch_len * vit.width) as f64
        + 2.0 * rows * (vit.width * sizes.config.embed_dim) as f64;
    let bytes = vit.layers as f64 * block_bytes + 4.0 * 4.0 * rows * vit.width as f64;
    let rate = rates.linear_rate(batch * tokens, vit.width, vit.mlp_width);
    Row::tower(sizes.model, batch, seconds, flops, bytes, rate, bandwidth)
}

/// Median seconds of the image tower `vision` on `batch` random images of `side` pixels.
fn time_tower<B: Backend>(
    backend: &B,
    sync: &dyn Fn(),
    vision: &VisionWeights<B::Buf>,
    side: usize,
    batch: usize,
    iterations: usize,
) -> f64 {
    let images = backend.upload(&values(batch * 3 * side * side, 5)).unwrap();
    time(iterations, sync, || {
        std::hint::black_box(vision_forward(backend, vision, &images, batch).unwrap());
    })
}

/// Flops of one image through a ModifiedResNet (convolutions and the attention pool, the
/// projection applied at every position as fedotp does) and the bytes its other layers move:
/// batch-norm and ReLU read and write every convolution's output, an im2col matrix is written
/// and read once per 3×3 convolution.
fn resnet_work(rn: &ResNetConfig, embed_dim: usize) -> (f64, f64) {
    let (mut flops, mut bytes) = (0.0, 0.0);
    let mut conv = |side: usize, c_in: usize, c_out: usize, k: usize| {
        let positions = (side * side) as f64;
        flops += 2.0 * positions * (c_in * c_out * k * k) as f64;
        bytes += 4.0 * 4.0 * positions * c_out as f64;
        if k > 1 {
            bytes += 2.0 * 4.0 * positions * (c_in * k * k) as f64;
        }
    };
    let mut side = rn.image_size / 2;
    for (c_in, c_out, _) in rn.stem() {
        conv(side, c_in, c_out, 3);
    }
    side /= 2;
    for block in rn.blocks() {
        let out_side = side / block.stride;
        conv(side, block.in_channels, block.planes, 1);
        conv(side, block.planes, block.planes, 3);
        conv(out_side, block.planes, 4 * block.planes, 1);
        if block.downsample {
            conv(out_side, block.in_channels, 4 * block.planes, 1);
        }
        side = out_side;
    }
    let (tokens, width) = (rn.tokens() as f64, rn.pool_width() as f64);
    flops += 2.0 * tokens * width * width * 3.0
        + 4.0 * tokens * tokens * width
        + 2.0 * tokens * width * embed_dim as f64;
    (flops, bytes)
}

fn resnet_row<B: Backend>(
    backend: &B,
    sync: &dyn Fn(),
    sizes: &Sizes,
    iterations: usize,
    rates: &Rates<B>,
    bandwidth: f64,
) -> Row {
    let VisionConfig::ResNet(rn) = &sizes.resnet.vision else {
        unreachable!("the ResNet row's model is a ResNet")
    };
    let weights = ClipWeights::random(&sizes.resnet, 0)
        .unwrap()
        .to_backend(backend)
        .unwrap();
    let batch = sizes.image_batch;
    let seconds = time_tower(
        backend,
        sync,
        &weights.vision,
        rn.image_size,
        batch,
        iterations,
    );
    let (flops, bytes) = resnet_work(rn, sizes.resnet.embed_dim);
    let (flops, bytes) = (batch as f64 * flops, batch as f64 * bytes);
    // The rate of a middle 3×3 convolution as it runs: its im2col matrix times the weight.
    let mid = rn.grid() * 2;
    let planes = 4 * rn.width;
    let rate = rates.linear_rate(batch * mid * mid, 9 * planes, planes);
    Row::tower(
        sizes.resnet_model,
        batch,
        seconds,
        flops,
        bytes,
        rate,
        bandwidth,
    )
}

fn text_row<B: Backend>(
    backend: &B,
    sync: &dyn Fn(),
    weights: &ClipWeights<B::Buf>,
    sizes: &Sizes,
    iterations: usize,
    rates: &Rates<B>,
    bandwidth: f64,
) -> Row {
    let tower = &weights.text;
    let TextTower::Clip(text) = tower else {
        unreachable!("the benchmarked models' text towers are CLIP's")
    };
    let TextConfig {
        width,
        layers,
        heads,
        mlp_width,
        ..
    } = text.config;
    let classes: Vec<Vec<u32>> = class_token_ids().into_iter().take(sizes.classes).collect();
    let prompts = PromptBatch::new(&classes, N_CTX, N_PROMPTS, 77, SpecialTokens::CLIP).unwrap();
    let ctx = backend
        .upload(&values(N_PROMPTS * N_CTX * width, 6))
        .unwrap();
    let d_features = backend
        .upload(&values(prompts.len() * weights.config.embed_dim, 7))
        .unwrap();
    let mut acts = TextActivations::new(backend).unwrap();
    let (seq, eot) = (prompts.seq_len(), prompts.eot_positions());
    let seconds = time(iterations, sync, || {
        let embeddings = prompts.embed(backend, tower, &ctx).unwrap();
        let features = text_forward(backend, text, &embeddings, seq, eot, &mut acts).unwrap();
        std::hint::black_box(&features);
        let d_embeddings = text_backward(backend, text, &mut acts, &d_features).unwrap();
        std::hint::black_box(
            prompts
                .context_gradient(backend, tower, &d_embeddings)
                .unwrap(),
        );
    });
    let batch = prompts.len();
    let (fwd_flops, fwd_bytes) = block_work(batch, seq, width, heads, false);
    let (bwd_flops, bwd_bytes) = block_work(batch, seq, width, heads, true);
    let projection = 4.0 * (batch * width * weights.config.embed_dim) as f64;
    let flops = layers as f64 * (fwd_flops + bwd_flops) + projection;
    let bytes = layers as f64 * (fwd_bytes + bwd_bytes) + 16.0 * (batch * seq * width) as f64;
    let rate = rates.linear_rate(batch * seq, width, mlp_width);
    Row {
        name: format!(
            "text step {}×{N_PROMPTS}, n_ctx {N_CTX}, fwd+bwd (fedotp {seq} tokens, PyTorch 77)",
            sizes.classes
        ),
        seconds,
        torch: Err("not run".into()),
        flops,
        bytes,
        floor: flops / rate + bytes / bandwidth,
        unit: Unit::Milliseconds,
    }
}

fn ot_row<B: Backend>(
    backend: &B,
    sync: &dyn Fn(),
    sizes: &Sizes,
    iterations: usize,
    bandwidth: f64,
) -> Row {
    let dim = sizes.config.embed_dim;
    let VisionConfig::Vit(vit) = &sizes.config.vision else {
        unreachable!("the benchmark models are ViTs")
    };
    let layout = BatchLayout {
        images: sizes.ot_images,
        patches: vit.patches(),
        prompts: N_PROMPTS,
        classes: sizes.classes,
    };
    let (rows_f, rows_g) = (
        layout.images * layout.patches,
        layout.prompts * layout.classes,
    );
    // Unit-length random features, as the head receives them.
    let unit = |rows: usize, seed: u64| {
        let mut v = values(rows * dim, seed);
        for row in v.chunks_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        backend.upload(&v).unwrap()
    };
    let (image, text) = (unit(rows_f, 8), unit(rows_g, 9));
    let len = rows_f * rows_g;
    let problems = layout.images * layout.classes;
    let (mut sim, mut plans, mut logits) = (
        backend.alloc(len).unwrap(),
        backend.alloc(len).unwrap(),
        backend.alloc(problems).unwrap(),
    );
    let mm = MatmulDims {
        m: rows_f,
        n: rows_g,
        k: dim,
    };
    let params = OtParams::FEDOTP;
    let mut iterations_run = 0;
    let seconds = time(iterations, sync, || {
        backend.matmul_nt(&mut sim, &image, &text, mm, 1.0).unwrap();
        let report = backend.ot_plans(&mut plans, &sim, layout, &params).unwrap();
        backend
            .ot_logits(&mut logits, &sim, &plans, layout, 100.0)
            .unwrap();
        iterations_run = report.total_iterations / report.problems.max(1) as u64;
    });
    let gemm_seconds = time(iterations, sync, || {
        backend.matmul_nt(&mut sim, &image, &text, mm, 1.0).unwrap()
    });
    let flops = 2.0 * (rows_f * rows_g * dim) as f64;
    // After the product (timed on its own): the solve reads the similarities and writes the
    // plans, the logits read both and write one value per problem.
    let bytes = 4.0 * (4 * len + problems) as f64;
    Row {
        name: format!(
            "OT head {}×{} problems of {}×{} (mean {iterations_run} iterations)",
            layout.images, layout.classes, layout.patches, layout.prompts
        ),
        seconds,
        torch: Err("not run".into()),
        flops,
        bytes,
        floor: gemm_seconds + bytes / bandwidth,
        unit: Unit::Microseconds,
    }
}

/// Runs the PyTorch script and attaches its medians to the rows (`image`, `resnet`, `text`,
/// `ot`).
fn attach_torch(rows: &mut [Row], options: &Options, sizes: &Sizes) {
    let iterations = options.iterations.to_string();
    let (batch, classes, ot_images) = (
        sizes.image_batch.to_string(),
        sizes.classes.to_string(),
        sizes.ot_images.to_string(),
    );
    let mut args = vec![
        "--iterations",
        &iterations,
        "--image-batch",
        &batch,
        "--classes",
        &classes,
        "--ot-images",
        &ot_images,
    ];
    if options.smoke {
        args.push("--smoke");
    }
    let output = run_python("cuda_bench.py", &args);
    for (row, key) in rows.iter_mut().zip(["image", "resnet", "text", "ot"]) {
        row.torch = match &output {
            Err(why) => Err(why.clone()),
            Ok(text) => text
                .lines()
                .find_map(|line| {
                    let mut words = line.split_whitespace();
                    match (words.next(), words.next()) {
                        (Some("RESULT"), Some(k)) if k == key => Some(
                            words
                                .next()
                                .and_then(|s| s.parse().ok())
                                .ok_or_else(|| format!("unreadable result line `{line}`")),
                        ),
                        (Some("SKIP"), Some(k)) if k == key => {
                            Some(Err(words.collect::<Vec<_>>().join(" ")))
                        }
                        _ => None,
                    }
                })
                .unwrap_or_else(|| Err(format!("cuda_bench.py printed no `{key}` result"))),
        };
    }
}

fn print_table(device: &str, options: &Options, rows: &[Row], bandwidth: f64) {
    println!("device: {device}");
    let (ours, theirs) = if options.smoke {
        ("CPU backend".to_string(), "fp32 on the CPU")
    } else {
        (format!("math {} (head products f32)", options.math), "fp16")
    };
    println!(
        "fedotp: {ours}; PyTorch: {theirs}; medians of {} runs; streaming bandwidth {:.0} GB/s",
        options.iterations,
        bandwidth / 1e9
    );
    println!(
        "| workload | fedotp | PyTorch | speed-up | GFLOP | MB moved | floor | gap to floor |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        let (torch, speedup) = match &row.torch {
            Ok(t) => (row.unit.show(*t), format!("{:.2}×", t / row.seconds)),
            Err(why) => (format!("n/a ({why})"), "n/a".into()),
        };
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.1} | {} | {:.2}× |",
            row.name,
            row.unit.show(row.seconds),
            torch,
            speedup,
            row.flops / 1e9,
            row.bytes / 1e6,
            row.unit.show(row.floor),
            row.seconds / row.floor
        );
    }
    println!(
        "The CIFAR-100 local epoch has its own table: \
         `cargo bench -p fedotp-benches --bench local_epoch -- --device cuda`."
    );
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        math: MathMode::default(),
        iterations: 10,
        torch: true,
        smoke: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--math" => options.math = args.next().ok_or("--math needs a value")?.parse()?,
            "--iterations" => {
                options.iterations = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--iterations needs a positive number")?
            }
            "--no-torch" => options.torch = false,
            "--smoke" => options.smoke = true,
            // `cargo bench` passes --bench to every target.
            "--bench" => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(options)
}

/// The rows on `backend`.
fn run<B: Backend>(
    backend: &B,
    sync: &dyn Fn(),
    sizes: &Sizes,
    options: &Options,
) -> (Vec<Row>, f64) {
    let runs = options.iterations;
    let rates = Rates {
        backend,
        sync,
        iterations: runs,
    };
    let bandwidth = rates.bandwidth(if options.smoke { 1 << 16 } else { 1 << 26 });
    let weights = ClipWeights::random(&sizes.config, 0)
        .unwrap()
        .to_backend(backend)
        .unwrap();
    let rows = vec![
        image_row(backend, sync, &weights, sizes, runs, &rates, bandwidth),
        resnet_row(backend, sync, sizes, runs, &rates, bandwidth),
        text_row(backend, sync, &weights, sizes, runs, &rates, bandwidth),
        ot_row(backend, sync, sizes, runs, bandwidth),
    ];
    (rows, bandwidth)
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(why) => {
            eprintln!("cuda_bench: {why}");
            return ExitCode::from(1);
        }
    };
    let (sizes, device, (mut rows, bandwidth)) = if options.smoke {
        let sizes = Sizes::smoke();
        let cpu = Cpu::new();
        let result = run(&cpu, &|| {}, &sizes, &options);
        (
            sizes,
            "CPU (smoke test: tiny shapes, figures mean nothing)".to_string(),
            result,
        )
    } else {
        let gpu = match Cuda::with_math(0, options.math) {
            Ok(gpu) => gpu,
            Err(why) => {
                eprintln!("cuda_bench needs a CUDA GPU and found none usable: {why}");
                return ExitCode::from(2);
            }
        };
        let sizes = Sizes::full();
        let sync = || gpu.synchronize().unwrap();
        let result = run(&gpu, &sync, &sizes, &options);
        (sizes, gpu.info().to_string(), result)
    };
    if options.torch {
        attach_torch(&mut rows, &options, &sizes);
    } else {
        for row in &mut rows {
            row.torch = Err("--no-torch".into());
        }
    }
    print_table(&device, &options, &rows, bandwidth);
    ExitCode::SUCCESS
}
