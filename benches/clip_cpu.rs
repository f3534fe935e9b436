//! CLIP on the CPU, one workload per process so peak memory is measured per workload:
//!
//! - `image`: ViT-B/16 image tower forward, batch 8, every token after `ln_post` and the
//!   projection;
//! - `image-rn50`: RN50 image tower forward at 224 px, batch 8, the attention pool queried at
//!   every position (1 + 49 tokens after `c_proj`);
//! - `text`: FedOTP's per-batch text step — 100 classes × 2 prompts, n_ctx 4, forward and
//!   backward to the context, run to the longest EOT;
//! - `text-bert`: the same step on BiomedCLIP's text tower (BERT-base: width 768, 12 layers, 12
//!   heads; `[CLS]` pooling and the MLP projection to 512) for 10 classes × 2 prompts, through
//!   the prompt learner, which runs each prompt length as its own unpadded group.
//!
//! Random weights of the real shapes (`ClipWeights::random` of `ClipConfig::vit_b_16()`, or
//! `ClipConfig::rn50()` for `image-rn50`). Prints one JSON line: seconds per iteration (each
//! iteration timed) and the process's peak RSS. `benches/clip_cpu.py` runs it beside the same
//! work in PyTorch and prints the comparison.
//!
//!     cargo run --release -p fedotp-benches --bin clip_cpu -- image|image-rn50|text|text-bert [iterations]

use std::time::Instant;

use fedotp_benches::{class_token_ids, IMAGE_BATCH, N_BERT_CLASSES, N_CTX, N_PROMPTS};
use fedotp_host::backend::{Backend, Cpu};
use fedotp_host::clip::{
    text_backward, text_forward, vision_forward, BertConfig, ClipConfig, ClipWeights, PromptBatch,
    SpecialTokens, TextActivations, TextTower, TextTowerConfig,
};
use fedotp_host::prompt::PromptLearner;

/// BiomedCLIP's text tower (PubMedBERT base, open_clip's `HFTextEncoder` with the MLP
/// projection), with a tiny image tower beside it: only the text tower is timed.
fn biomedclip_text() -> ClipConfig {
    let embed_dim = 512;
    ClipConfig {
        embed_dim,
        text: TextTowerConfig::Bert(BertConfig {
            width: 768,
            heads: 12,
            layers: 12,
            mlp_width: 3072,
            max_positions: 512,
            vocab_size: 30_522,
            context_length: 256,
            layer_norm_eps: 1e-12,
            embed_dim,
            proj_width: (768 + embed_dim) / 2,
        }),
        ..ClipConfig::tiny()
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let workload = args.get(1).map(String::as_str).unwrap_or("");
    let iterations: usize = args.get(2).map_or(Ok(3), |n| n.parse())?;
    let cpu = Cpu::new();
    let config = match workload {
        "image-rn50" => ClipConfig::rn50(),
        "text-bert" => biomedclip_text(),
        _ => ClipConfig::vit_b_16(),
    };
    let weights = ClipWeights::random(&config, 0)?.to_backend(&cpu)?;
    let mut times = Vec::with_capacity(iterations);
    match workload {
        "image" | "image-rn50" => {
            let size = weights.config.vision.image_size();
            let images = cpu.upload(&vec![0.1; IMAGE_BATCH * 3 * size * size])?;
            for i in 0..=iterations {
                let start = Instant::now();
                let out = vision_forward(&cpu, &weights.vision, &images, IMAGE_BATCH)?;
                std::hint::black_box(&out);
                if i > 0 {
                    times.push(start.elapsed().as_secs_f64()); // iteration 0 warms up
                }
            }
        }
        "text" => {
            let tower = &weights.text;
            let TextTower::Clip(text) = tower else {
                unreachable!("ViT-B/16's text tower is CLIP's")
            };
            let classes = class_token_ids();
            let prompts = PromptBatch::new(&classes, N_CTX, N_PROMPTS, 77, SpecialTokens::CLIP)?;
            let ctx = cpu.upload(&vec![0.02; N_PROMPTS * N_CTX * text.config.width])?;
            let d_features = cpu.upload(&vec![1e-3; prompts.len() * weights.config.embed_dim])?;
            let mut acts = TextActivations::new(&cpu)?;
            for i in 0..=iterations {
                let start = Instant::now();
                let embeddings = prompts.embed(&cpu, tower, &ctx)?;
                let eot = prompts.eot_positions();
                let seq = prompts.seq_len();
                let features = text_forward(&cpu, text, &embeddings, seq, eot, &mut acts)?;
                std::hint::black_box(&features);
                let d_embeddings = text_backward(&cpu, text, &mut acts, &d_features)?;
                let d_ctx = prompts.context_gradient(&cpu, tower, &d_embeddings)?;
                std::hint::black_box(&d_ctx);
                if i > 0 {
                    times.push(start.elapsed().as_secs_f64());
                }
            }
            eprintln!(
                "text: {} prompts of {} tokens",
                prompts.len(),
                prompts.seq_len()
            );
        }
        "text-bert" => {
            let text = &weights.text;
            let classes: Vec<Vec<u32>> =
                class_token_ids().into_iter().take(N_BERT_CLASSES).collect();
            // PubMedBERT's [CLS] and [SEP].
            let special = SpecialTokens { start: 2, end: 3 };
            let learner = PromptLearner::from_tokens(&classes, N_CTX, N_PROMPTS, text, special)?;
            let ctx = vec![0.02; learner.context_len()];
            let d_unit =
                cpu.upload(&vec![1e-3; N_PROMPTS * classes.len() * learner.embed_dim()])?;
            let mut state = learner.state(&cpu)?;
            for i in 0..=iterations {
                let start = Instant::now();
                learner.forward(&cpu, text, &ctx, &mut state)?;
                let d_ctx = learner.backward(&cpu, text, &mut state, &d_unit)?;
                std::hint::black_box(&d_ctx);
                if i > 0 {
                    times.push(start.elapsed().as_secs_f64());
                }
            }
            eprintln!(
                "text-bert: {} prompts, the longest of {} tokens",
                N_PROMPTS * classes.len(),
                learner.tokens_per_prompt()
            );
        }
        _ => return Err("usage: clip_cpu image|image-rn50|text|text-bert [iterations]".into()),
    }
    let threads = rayon::current_num_threads();
    let times: Vec<String> = times.iter().map(|t| format!("{t:.4}")).collect();
    println!(
        "{{\"impl\": \"fedotp\", \"workload\": \"{workload}\", \"threads\": {threads}, \"seconds\": [{}], \"peak_rss_mib\": {:.1}}}",
        times.join(", "),
        peak_rss_mib()
    );
    Ok(())
}
