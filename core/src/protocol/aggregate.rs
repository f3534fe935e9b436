//! The server step of a round: FedAvg of the clients' global prompts, weighted by training-set
//! size, one update at a time.

use core::fmt;

use super::message::{first_non_finite, ClientUpdate, PromptShape};

/// Streaming weighted FedAvg of one round's client updates.
///
/// After updates from clients `i` with sample counts `n_i` and prompts `p_i`,
/// [`finish`](Aggregator::finish) writes `Σ_i n_i · p_i / Σ_i n_i`. Each accepted update is added
/// at once into an `f64` accumulator of the prompt's length, so memory is O(prompt length)
/// whatever the number of clients, and the `f32` prompts lose nothing in the sum.
///
/// The storage comes from the caller: `Sum` holds the accumulator (`shape.len()` `f64`) and
/// `Seen` the ids of the clients counted this round (its length is the most clients a round can
/// take). Any `AsRef + AsMut` slice owner works: `&mut [f64]`, `[f64; N]`, `Vec<f64>`.
///
/// An update is refused — with its own [`AggregateError`], leaving the aggregator exactly as it
/// was — when it belongs to another round, has another shape or a prompt of the wrong length,
/// weighs zero samples, comes from a client already counted this round, finds the client list
/// full, or holds a NaN or infinity. The checks run in that order.
///
/// ```
/// use fedotp_core::protocol::{AggregateError, Aggregator, ClientUpdate, PromptShape};
///
/// let shape = PromptShape::new(1, 2).unwrap();
/// let mut server = Aggregator::new(shape, 0, [0.0f64; 2], [0u32; 16])?;
///
/// let update = |client, samples, prompt| ClientUpdate {
///     round: 0, client, samples, shape, prompt, loss: None, accuracy: None,
/// };
/// server.add(&update(1, 100, &[1.0, 2.0]))?;
/// server.add(&update(2, 300, &[3.0, 6.0]))?;
/// assert_eq!(
///     server.add(&update(2, 300, &[3.0, 6.0])),
///     Err(AggregateError::DuplicateClient { client: 2 }),
/// );
///
/// let mut global = [0.0f32; 2];
/// server.finish(&mut global)?;
/// assert_eq!(global, [2.5, 5.0]); // (100·1 + 300·3) / 400, (100·2 + 300·6) / 400
///
/// server.start_round(1);
/// assert_eq!(server.clients(), &[] as &[u32]);
/// # Ok::<(), AggregateError>(())
/// ```
#[derive(Clone)]
pub struct Aggregator<Sum, Seen> {
    shape: PromptShape,
    round: u32,
    /// `Σ n_i · p_i` over the updates accepted this round.
    weighted_sum: Sum,
    /// The first `counted` entries: ids of the clients accepted this round, ascending.
    seen: Seen,
    counted: usize,
    /// `Σ n_i`. Cannot overflow: at most 2^32 distinct client ids, each weighing below 2^32.
    total_samples: u64,
}

impl<Sum, Seen> Aggregator<Sum, Seen>
where
    Sum: AsRef<[f64]> + AsMut<[f64]>,
    Seen: AsRef<[u32]> + AsMut<[u32]>,
{
    /// An aggregator for round `round` of prompts of `shape`, with no update yet.
    ///
    /// `weighted_sum` must hold exactly `shape.len()` values (it is zeroed); `seen_clients`
    /// bounds the number of clients per round (its contents are ignored).
    pub fn new(
        shape: PromptShape,
        round: u32,
        mut weighted_sum: Sum,
        seen_clients: Seen,
    ) -> Result<Self, AggregateError> {
        let found = weighted_sum.as_ref().len();
        if found != shape.len() {
            return Err(AggregateError::AccumulatorLength {
                expected: shape.len(),
                found,
            });
        }
        weighted_sum.as_mut().fill(0.0);
        Ok(Aggregator {
            shape,
            round,
            weighted_sum,
            seen: seen_clients,
            counted: 0,
            total_samples: 0,
        })
    }

    /// The prompt shape this aggregator averages.
    pub fn shape(&self) -> PromptShape {
        self.shape
    }

    /// The round whose updates it accepts.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// Ids of the clients counted this round, ascending.
    pub fn clients(&self) -> &[u32] {
        &self.seen.as_ref()[..self.counted]
    }

    /// Total sample count of the clients counted this round (the denominator of the average).
    pub fn total_samples(&self) -> u64 {
        self.total_samples
    }

    /// Counts `update` into the round's average, or refuses it and changes nothing.
    ///
    /// A [`ClientUpdate`] decoded from the wire goes in as it is.
    pub fn add(&mut self, update: &ClientUpdate<'_>) -> Result<(), AggregateError> {
        let slot = self.admit(update)?;

        let counted = self.counted;
        let seen = self.seen.as_mut();
        seen.copy_within(slot..counted, slot + 1);
        seen[slot] = update.client;
        self.counted += 1;

        let weight = f64::from(update.samples);
        let sum = self.weighted_sum.as_mut();
        for (acc, &value) in sum.iter_mut().zip(update.prompt) {
            *acc += weight * f64::from(value);
        }
        self.total_samples += u64::from(update.samples);
        Ok(())
    }

    /// Every refusal check of [`add`](Aggregator::add), without changing anything; on success,
    /// the position where the client's id goes in the sorted list of seen clients.
    fn admit(&self, update: &ClientUpdate<'_>) -> Result<usize, AggregateError> {
        if update.round != self.round {
            return Err(AggregateError::RoundMismatch {
                expected: self.round,
                found: update.round,
            });
        }
        if update.shape != self.shape {
            return Err(AggregateError::ShapeMismatch {
                expected: self.shape,
                found: update.shape,
            });
        }
        if update.prompt.len() != self.shape.len() {
            return Err(AggregateError::PromptLength {
                expected: self.shape.len(),
                found: update.prompt.len(),
            });
        }
        if update.samples == 0 {
            return Err(AggregateError::ZeroWeight {
                client: update.client,
            });
        }
        let slot = match self.clients().binary_search(&update.client) {
            Ok(_) => {
                return Err(AggregateError::DuplicateClient {
                    client: update.client,
                })
            }
            Err(slot) => slot,
        };
        let capacity = self.seen.as_ref().len();
        if self.counted == capacity {
            return Err(AggregateError::ClientListFull { capacity });
        }
        if let Some(index) = first_non_finite(update.prompt) {
            return Err(AggregateError::NonFinite {
                client: update.client,
                index,
            });
        }
        Ok(slot)
    }

    /// Writes the round's average, `Σ n_i · p_i / Σ n_i` rounded to `f32`, into `global_out`
    /// (`shape.len()` floats). The aggregator is unchanged: more updates may still come.
    pub fn finish(&self, global_out: &mut [f32]) -> Result<(), AggregateError> {
        if self.counted == 0 {
            return Err(AggregateError::NoUpdates { round: self.round });
        }
        if global_out.len() != self.shape.len() {
            return Err(AggregateError::OutputLength {
                expected: self.shape.len(),
                found: global_out.len(),
            });
        }
        // A weighted mean of finite f32 values lies within their range, so the cast is finite.
        let total = self.total_samples as f64;
        for (out, &sum) in global_out.iter_mut().zip(self.weighted_sum.as_ref()) {
            *out = (sum / total) as f32;
        }
        Ok(())
    }

    /// Forgets every update and starts accepting updates of `round`.
    pub fn start_round(&mut self, round: u32) {
        self.weighted_sum.as_mut().fill(0.0);
        self.counted = 0;
        self.total_samples = 0;
        self.round = round;
    }
}

/// Two aggregators are equal when they hold the same round: shape, round number, counted
/// clients, total weight and accumulator (the unused tail of the client list does not matter).
impl<Sum, Seen> PartialEq for Aggregator<Sum, Seen>
where
    Sum: AsRef<[f64]> + AsMut<[f64]>,
    Seen: AsRef<[u32]> + AsMut<[u32]>,
{
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape
            && self.round == other.round
            && self.clients() == other.clients()
            && self.total_samples == other.total_samples
            && self.weighted_sum.as_ref() == other.weighted_sum.as_ref()
    }
}

impl<Sum, Seen> fmt::Debug for Aggregator<Sum, Seen>
where
    Sum: AsRef<[f64]> + AsMut<[f64]>,
    Seen: AsRef<[u32]> + AsMut<[u32]>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aggregator")
            .field("shape", &self.shape)
            .field("round", &self.round)
            .field("clients", &self.clients())
            .field("total_samples", &self.total_samples)
            .field("weighted_sum", &self.weighted_sum.as_ref())
            .finish()
    }
}

/// Why the aggregator refused a buffer, an update or a request for the average.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggregateError {
    /// The accumulator given to [`Aggregator::new`] does not hold `shape.len()` values.
    AccumulatorLength {
        /// `shape.len()`.
        expected: usize,
        /// The accumulator's length.
        found: usize,
    },
    /// The update belongs to another round.
    RoundMismatch {
        /// The aggregator's round.
        expected: u32,
        /// The update's round.
        found: u32,
    },
    /// The update's prompt has another shape.
    ShapeMismatch {
        /// The aggregator's shape.
        expected: PromptShape,
        /// The update's shape.
        found: PromptShape,
    },
    /// The update's prompt slice does not hold `shape.len()` floats.
    PromptLength {
        /// `shape.len()`.
        expected: usize,
        /// The prompt's length.
        found: usize,
    },
    /// The update weighs zero samples.
    ZeroWeight {
        /// The client that sent it.
        client: u32,
    },
    /// The client was already counted this round.
    DuplicateClient {
        /// The client.
        client: u32,
    },
    /// The list of seen clients is full: the round takes no more clients.
    ClientListFull {
        /// The list's length.
        capacity: usize,
    },
    /// The update's prompt holds a NaN or an infinity.
    NonFinite {
        /// The client that sent it.
        client: u32,
        /// Position of the first non-finite element, row-major.
        index: usize,
    },
    /// [`Aggregator::finish`] before any update was accepted this round.
    NoUpdates {
        /// The aggregator's round.
        round: u32,
    },
    /// The output buffer given to [`Aggregator::finish`] does not hold `shape.len()` floats.
    OutputLength {
        /// `shape.len()`.
        expected: usize,
        /// The buffer's length.
        found: usize,
    },
}

impl fmt::Display for AggregateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggregateError::AccumulatorLength { expected, found } => write!(
                f,
                "accumulator holds {found} values but the prompt shape needs {expected}"
            ),
            AggregateError::RoundMismatch { expected, found } => write!(
                f,
                "update from round {found} refused: the aggregator is collecting round {expected}"
            ),
            AggregateError::ShapeMismatch { expected, found } => write!(
                f,
                "update of prompt shape {found} refused: the aggregator averages {expected}"
            ),
            AggregateError::PromptLength { expected, found } => write!(
                f,
                "update refused: its prompt has {found} floats, the shape needs {expected}"
            ),
            AggregateError::ZeroWeight { client } => {
                write!(
                    f,
                    "update from client {client} refused: it weighs 0 samples"
                )
            }
            AggregateError::DuplicateClient { client } => write!(
                f,
                "update from client {client} refused: the client is already counted this round"
            ),
            AggregateError::ClientListFull { capacity } => write!(
                f,
                "update refused: the round already counts {capacity} clients, its list's capacity"
            ),
            AggregateError::NonFinite { client, index } => write!(
                f,
                "update from client {client} refused: prompt element {index} is not finite"
            ),
            AggregateError::NoUpdates { round } => {
                write!(f, "round {round} has no accepted update to average")
            }
            AggregateError::OutputLength { expected, found } => write!(
                f,
                "output buffer holds {found} floats but the prompt shape needs {expected}"
            ),
        }
    }
}

impl core::error::Error for AggregateError {}
