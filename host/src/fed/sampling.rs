//! Which clients train in a round.
//!
//! Round 0 trains every client; every later round samples `max(floor(frac · K), 1)` of the `K`
//! clients without replacement, as the reference's `max(int(frac * K), 1)` (so `frac = 0.29`,
//! `K = 100` gives 28: `0.29 · 100` is 28.999… in floating point, in Python too).
//!
//! A round's draw depends only on the seed and the round number — a ChaCha8 generator seeded
//! with the run's seed on stream `round` — so a resumed run samples exactly the clients the
//! uninterrupted run would have, with no generator state to save.

use rand::seq::index;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The client sampler of a run.
///
/// ```
/// use fedotp_host::fed::ClientSampler;
/// let sampler = ClientSampler::new(10, 0.3, 7);
/// assert_eq!(sampler.clients(0), (0..10).collect::<Vec<_>>()); // round 0: everyone
/// let round_5 = sampler.clients(5);
/// assert_eq!(round_5.len(), 3);
/// assert!(round_5.windows(2).all(|w| w[0] < w[1])); // sorted, distinct
/// assert_eq!(round_5, ClientSampler::new(10, 0.3, 7).clients(5)); // reproducible
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientSampler {
    clients: usize,
    frac: f64,
    seed: u64,
}

impl ClientSampler {
    /// A sampler over `clients` clients with fraction `frac` (clamped to at least one client
    /// and at most all) and `seed`.
    pub fn new(clients: usize, frac: f64, seed: u64) -> Self {
        ClientSampler {
            clients,
            frac,
            seed,
        }
    }

    /// Clients sampled per round after round 0: `max(floor(frac · K), 1)`, at most `K`.
    pub fn per_round(&self) -> usize {
        let m = (self.frac * self.clients as f64).floor();
        // `as` saturates: NaN and negative fractions give 0, hence at least 1.
        (m as usize).max(1).min(self.clients)
    }

    /// The clients that train in `round`, in increasing order.
    pub fn clients(&self, round: u32) -> Vec<usize> {
        if round == 0 || self.per_round() == self.clients {
            return (0..self.clients).collect();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(u64::from(round));
        let mut chosen = index::sample(&mut rng, self.clients, self.per_round()).into_vec();
        chosen.sort_unstable();
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_sizes_follow_the_reference_rounding() {
        let per_round = |k, frac| ClientSampler::new(k, frac, 0).per_round();
        assert_eq!(per_round(100, 0.1), 10);
        assert_eq!(per_round(100, 0.29), 28);
        assert_eq!(per_round(10, 1.0), 10);
        assert_eq!(per_round(10, 0.01), 1);
        assert_eq!(per_round(3, 0.5), 1);
    }

    #[test]
    fn every_client_is_sampled_about_equally_often() {
        let sampler = ClientSampler::new(20, 0.25, 3);
        let mut counts = [0usize; 20];
        let rounds = 4000;
        for round in 1..=rounds {
            let chosen = sampler.clients(round);
            assert_eq!(chosen.len(), 5);
            assert!(chosen.windows(2).all(|w| w[0] < w[1]));
            chosen.iter().for_each(|&c| counts[c] += 1);
        }
        // Each client is chosen with probability 1/4: 1000 expected, sd ≈ 27.
        for (client, &count) in counts.iter().enumerate() {
            assert!((850..1150).contains(&count), "client {client}: {count}");
        }
        // Different seeds, different draws.
        let other = ClientSampler::new(20, 0.25, 4);
        assert!((1..50).any(|r| other.clients(r) != sampler.clients(r)));
    }
}
