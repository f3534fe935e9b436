//! Deterministic pseudo-random inputs: every test and benchmark that needs "some values" draws
//! them from one seeded xorshift stream, so a failure reproduces exactly and a benchmark sees
//! the same problems on every machine.

/// A xorshift64 stream (Marsaglia's 13/7/17 triple) of uniform values in `[0, 1)`.
#[derive(Debug, Clone)]
pub struct Stream {
    state: u64,
}

impl Stream {
    /// The stream of `seed`; every seed, zero included, gives a distinct non-zero state.
    pub fn new(seed: u64) -> Self {
        Stream {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// The next value, uniform in `[0, 1)` with 24 random bits (an `f32`'s mantissa).
    pub fn unit(&mut self) -> f32 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// `len` values uniform in `[-scale, scale)`, never exactly zero (a zero input can hide a
/// missing term), from the stream of `seed`.
pub fn uniform(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut stream = Stream::new(seed);
    (0..len)
        .map(|_| {
            let x = (stream.unit() * 2.0 - 1.0) * scale;
            if x == 0.0 {
                scale * 0.5
            } else {
                x
            }
        })
        .collect()
}

/// `len` indices below `bound`, uniform, from the stream of `seed`.
pub fn indices(len: usize, seed: u64, bound: usize) -> Vec<u32> {
    let mut stream = Stream::new(seed);
    (0..len)
        .map(|_| ((stream.unit() * bound as f32) as usize).min(bound - 1) as u32)
        .collect()
}

/// Similarities shaped like CLIP's cosines between patches and prompts: uniform in
/// `0.2 ± 0.05`, one in ten raised by 0.1 (a strong match).
pub fn clip_like_similarities(len: usize, seed: u64) -> Vec<f32> {
    let mut stream = Stream::new(seed);
    (0..len)
        .map(|_| {
            let base = 0.2 + 0.1 * (stream.unit() - 0.5);
            if stream.unit() < 0.1 {
                base + 0.1
            } else {
                base
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_seeds_differ() {
        assert_eq!(uniform(100, 7, 1.0), uniform(100, 7, 1.0));
        assert_ne!(uniform(100, 7, 1.0), uniform(100, 8, 1.0));
        assert_ne!(uniform(100, 0, 1.0), uniform(100, 1, 1.0));
    }

    #[test]
    fn uniform_values_fill_their_range_and_are_never_zero() {
        let values = uniform(100_000, 3, 2.0);
        assert!(values.iter().all(|&x| (-2.0..2.0).contains(&x) && x != 0.0));
        let mean = values.iter().map(|&x| x as f64).sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        let (min, max) = values
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(min < -1.99 && max > 1.99, "range [{min}, {max}]");
    }

    #[test]
    fn indices_cover_every_value_below_the_bound() {
        let drawn = indices(10_000, 5, 7);
        assert!(drawn.iter().all(|&i| i < 7));
        for i in 0..7 {
            assert!(drawn.contains(&i), "index {i} never drawn");
        }
    }

    #[test]
    fn clip_like_similarities_have_clips_range_and_one_strong_match_in_ten() {
        let sims = clip_like_similarities(100_000, 9);
        assert!(sims.iter().all(|&s| (0.15..0.35).contains(&s)));
        let strong = sims.iter().filter(|&&s| s >= 0.25).count() as f64 / sims.len() as f64;
        assert!((strong - 0.1).abs() < 0.01, "strong fraction {strong}");
    }
}
