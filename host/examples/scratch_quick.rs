use fedotp::backend::{Backend, Cpu};
use fedotp::clip::{tokenizer::Tokenizer, ClipConfig, ClipWeights};
use fedotp::data::{digits, Split, Transform};
use fedotp::prompt::{encode_images, Head, PromptLearner, PromptModel};
use fedotp_core::ot::OtParams;
use rand::SeedableRng;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n_ctx: usize = args[1].parse().unwrap();
    let lr: f32 = args[2].parse().unwrap();
    let ot: bool = args[3] == "ot";
    let cpu = Cpu::new();
    let cfg = ClipConfig::tiny();
    let weights = ClipWeights::random(&cfg, 0)
        .unwrap()
        .to_backend(&cpu)
        .unwrap();
    let ds = digits(32).unwrap();
    let t = Transform::eval(32);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let enc = |split: Split, n: usize, rng: &mut rand_chacha::ChaCha8Rng| {
        let idx: Vec<usize> = (0..n).collect();
        let imgs = ds.load_batch(split, &idx, &t, rng).unwrap();
        let b = cpu.upload(&imgs).unwrap();
        encode_images(&cpu, &weights.vision, &b, n).unwrap()
    };
    let ntr = ds.samples(Split::Train).len().min(800);
    let nte = ds.samples(Split::Test).len();
    let tr = enc(Split::Train, ntr, &mut rng);
    let te = enc(Split::Test, nte, &mut rng);
    let ltr: Vec<u32> = ds.labels(Split::Train)[..ntr]
        .iter()
        .map(|&l| l as u32)
        .collect();
    let lte: Vec<u32> = ds.labels(Split::Test).iter().map(|&l| l as u32).collect();
    let names: Vec<String> = ds.class_names.clone();
    println!("classes {names:?}");
    let tok = Tokenizer::openai().unwrap();
    let sets = if ot { 2 } else { 1 };
    let learner = PromptLearner::new(tok, &names, n_ctx, sets, &weights.text).unwrap();
    let head = if ot {
        Head::Ot {
            params: OtParams::FEDOTP,
            patches: tr.patches_per_image,
        }
    } else {
        Head::Cosine
    };
    let scale: f32 = args[4].parse().unwrap();
    let epochs: usize = args[5].parse().unwrap();
    let model = PromptModel {
        learner,
        head,
        scale,
    };
    let mut ws = model.workspace(&cpu).unwrap();
    let mut ctx: Vec<f32> = (0..model.learner.context_len())
        .map(|i| 0.02 * (((i * 7919) % 1000) as f32 / 500.0 - 1.0))
        .collect();
    let mut mom = vec![0.0f32; ctx.len()];
    let feats = |f: &fedotp::prompt::ImageBatchFeatures| {
        if ot {
            f.patches.clone()
        } else {
            f.pooled.clone()
        }
    };
    let per = model.image_feature_len();
    let trf = feats(&tr);
    let tef = feats(&te);
    let t0 = std::time::Instant::now();
    for epoch in 0..epochs {
        let mut tot = 0.0;
        for (bi, chunk) in ltr.chunks(32).enumerate() {
            let start = bi * 32;
            let img = cpu
                .upload(&trf[start * per..(start + chunk.len()) * per])
                .unwrap();
            let out = model
                .loss_and_gradient(&cpu, &weights.text, &ctx, &img, chunk, &mut ws)
                .unwrap();
            tot += out.loss;
            for i in 0..ctx.len() {
                let g = out.d_ctx[i] + 5e-4 * ctx[i];
                mom[i] = 0.9 * mom[i] + g;
                ctx[i] -= lr * mom[i];
            }
        }
        model.prepare(&cpu, &weights.text, &ctx, &mut ws).unwrap();
        let img = cpu.upload(&tef).unwrap();
        let (logits, _) = model.logits(&cpu, &img, nte, &mut ws).unwrap();
        let correct = logits
            .chunks(10)
            .zip(&lte)
            .filter(|(r, &l)| {
                let am = r
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.partial_cmp(b.1).unwrap())
                    .unwrap()
                    .0;
                am as u32 == l
            })
            .count();
        println!(
            "epoch {epoch} loss {:.3} test acc {:.3} t {:.1}s",
            tot / (ltr.len() as f32 / 32.0),
            correct as f32 / nte as f32,
            t0.elapsed().as_secs_f32()
        );
    }
}
