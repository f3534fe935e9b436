//! Shared inputs for the benchmarks.

/// Images per image-tower forward in the CLIP benchmark.
pub const IMAGE_BATCH: usize = 8;
/// Classes in the CLIP text-step benchmark (CIFAR-100).
pub const N_CLASSES: usize = 100;
/// Prompts per class (FedOTP's global and local prompt).
pub const N_PROMPTS: usize = 2;
/// Context vectors per prompt (FedOTP's CIFAR presets).
pub const N_CTX: usize = 4;

/// Token ids of `N_CLASSES` class names ending in "." (id 269), with the lengths of typical
/// class names: class `c` has `1 + (7·c mod 5)` name tokens, so 2 to 6 tokens with the period —
/// the longest prompt is `[SOT] + 4 ctx + 6 + [EOT]` = 12 tokens. `benches/clip_cpu.py` builds
/// the same ids.
pub fn class_token_ids() -> Vec<Vec<u32>> {
    (0..N_CLASSES)
        .map(|c| {
            let words = 1 + (7 * c) % 5;
            let mut ids: Vec<u32> = (0..words).map(|w| (1000 + 37 * c + w) as u32).collect();
            ids.push(269);
            ids
        })
        .collect()
}
