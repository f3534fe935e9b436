//! The two messages of a federated round and the prompt shape they carry.
//!
//! These are plain views: a message borrows its prompt from the caller, so building one, encoding
//! it and feeding it to the [`Aggregator`](super::Aggregator) never copies or allocates.

use core::fmt;

/// The shape of the global prompt: `n_ctx` context rows of `width` floats each, row-major.
///
/// Both dimensions are at least 1 and the prompt holds at most [`PromptShape::MAX_LEN`] floats, so
/// its length and the size of any message that carries it fit in a `u32` on every target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PromptShape {
    n_ctx: u32,
    width: u32,
}

impl PromptShape {
    /// The largest prompt a shape may describe, in floats (2^24, i.e. 64 MiB of `f32`).
    ///
    /// FedOTP's prompts are far smaller (16 × 512 = 8,192 floats for the few-shot settings); the
    /// bound exists so that no length computation can overflow, even on a 32-bit microcontroller.
    pub const MAX_LEN: usize = 1 << 24;

    /// The shape `n_ctx × width`, or `None` when a dimension is zero or the prompt would hold
    /// more than [`PromptShape::MAX_LEN`] floats.
    ///
    /// ```
    /// use fedotp_core::protocol::PromptShape;
    /// let shape = PromptShape::new(4, 512).unwrap();
    /// assert_eq!(shape.len(), 2048);
    /// assert!(PromptShape::new(0, 512).is_none());
    /// ```
    pub const fn new(n_ctx: u32, width: u32) -> Option<Self> {
        let len = n_ctx as u64 * width as u64;
        if n_ctx == 0 || width == 0 || len > Self::MAX_LEN as u64 {
            None
        } else {
            Some(Self { n_ctx, width })
        }
    }

    /// Number of context rows (the prompt's learnable tokens).
    pub const fn n_ctx(self) -> u32 {
        self.n_ctx
    }

    /// Number of floats per row (the text tower's width).
    pub const fn width(self) -> u32 {
        self.width
    }

    /// Number of floats in the prompt, `n_ctx · width` (never zero).
    #[allow(clippy::len_without_is_empty)] // a valid shape is never empty
    pub const fn len(self) -> usize {
        // Cannot overflow: `new` bounds the product by MAX_LEN.
        self.n_ctx as usize * self.width as usize
    }
}

impl fmt::Display for PromptShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{}", self.n_ctx, self.width)
    }
}

/// Server → client: the global prompt every client starts round `round` from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GlobalPrompt<'p> {
    /// The federated round this prompt opens.
    pub round: u32,
    /// The prompt's shape; `prompt.len()` must equal `shape.len()`.
    pub shape: PromptShape,
    /// The global prompt, row-major, `shape.len()` finite floats.
    pub prompt: &'p [f32],
}

/// Client → server: one client's global prompt after its local training in round `round`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientUpdate<'p> {
    /// The round this update was trained in (the round of the global prompt it started from).
    pub round: u32,
    /// The client's identifier, unique among the clients of a federation.
    pub client: u32,
    /// The client's training-set size: its weight in the average. The aggregator refuses 0.
    pub samples: u32,
    /// The prompt's shape; `prompt.len()` must equal `shape.len()`.
    pub shape: PromptShape,
    /// The client's trained global prompt, row-major, `shape.len()` finite floats.
    pub prompt: &'p [f32],
    /// Mean training loss of the round, if the client reports it (finite).
    pub loss: Option<f32>,
    /// Training accuracy of the round as a fraction in `[0, 1]`, if the client reports it.
    pub accuracy: Option<f32>,
}

/// Which of the two messages a byte string holds (the wire's `kind` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    /// A [`GlobalPrompt`], server → client.
    GlobalPrompt = 1,
    /// A [`ClientUpdate`], client → server.
    ClientUpdate = 2,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageKind::GlobalPrompt => "global prompt",
            MessageKind::ClientUpdate => "client update",
        })
    }
}

/// Position of the first NaN or infinity in `values`: the check every entry point makes before
/// it accepts a prompt.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<usize> {
    // The branch-free pass vectorises; the search for the position runs only on bad input.
    let all_finite = values.iter().fold(true, |ok, value| ok & value.is_finite());
    if all_finite {
        None
    } else {
        values.iter().position(|value| !value.is_finite())
    }
}
