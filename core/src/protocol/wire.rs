//! The wire format of the two messages: fixed little-endian header, `f32` payload, CRC-32 trailer.
//!
//! `docs/PROTOCOL.md` describes it byte by byte. In short, every message is
//!
//! ```text
//! offset  size  field
//!      0     4  magic "FOTP"
//!      4     2  version (u16) = 1
//!      6     1  kind (u8): 1 = global prompt, 2 = client update
//!      7     1  flags (u8): client update bit 0 = loss present, bit 1 = accuracy present
//!      8     4  total length of the message in bytes, checksum included (u32)
//!     12     4  round (u32)
//!     16     4  n_ctx (u32)        prompt rows
//!     20     4  width (u32)        prompt columns
//!     24    16  client update only: client id (u32), sample count (u32), loss (f32), accuracy (f32)
//!      …  4·n  the prompt: n = n_ctx·width f32, row-major
//!      …     4  CRC-32/ISO-HDLC of every byte before it (u32)
//! ```
//!
//! Decoding checks the fields in a fixed order and reports the first defect; the order is chosen
//! so that the checksum is verified as soon as the message's extent is known, and everything the
//! checksum protects is interpreted only after it passed: a byte corrupted in transit at offset 12
//! or later is always reported as [`DecodeError::ChecksumMismatch`].

use core::fmt;

use crc::{Crc, Table, CRC_32_ISO_HDLC};

use super::message::{first_non_finite, ClientUpdate, GlobalPrompt, MessageKind, PromptShape};

/// The four bytes every message starts with: ASCII `FOTP`.
pub const MAGIC: [u8; 4] = *b"FOTP";

/// The wire-format version this crate writes, and the only one it reads.
pub const VERSION: u16 = 1;

/// CRC-32/ISO-HDLC, the checksum of zlib, PNG and Ethernet, so any language can verify it.
const CRC32: Crc<u32, CrcTable> = Crc::<u32, CrcTable>::new(&CRC_32_ISO_HDLC);

/// Servers check many messages: slice-by-16 is ~5× faster there, for a 16 KiB table.
#[cfg(target_pointer_width = "64")]
type CrcTable = Table<16>;
/// On a microcontroller, flash matters more: one 1 KiB table, a byte at a time.
#[cfg(not(target_pointer_width = "64"))]
type CrcTable = Table<1>;

/// Byte offsets of the header fields.
mod at {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const KIND: usize = 6;
    pub const FLAGS: usize = 7;
    pub const TOTAL_LEN: usize = 8;
    pub const ROUND: usize = 12;
    pub const N_CTX: usize = 16;
    pub const WIDTH: usize = 20;
    /// End of the header both kinds share; a global prompt's payload starts here.
    pub const COMMON_END: usize = 24;
    pub const CLIENT: usize = 24;
    pub const SAMPLES: usize = 28;
    pub const LOSS: usize = 32;
    pub const ACCURACY: usize = 36;
    /// End of a client update's header; its payload starts here.
    pub const CLIENT_END: usize = 40;
}

const CHECKSUM_LEN: usize = 4;

/// Client-update flag bits: which optional metrics the message carries.
const FLAG_LOSS: u8 = 1 << 0;
const FLAG_ACCURACY: u8 = 1 << 1;

impl MessageKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(MessageKind::GlobalPrompt),
            2 => Some(MessageKind::ClientUpdate),
            _ => None,
        }
    }

    /// Bytes before the payload.
    const fn header_len(self) -> usize {
        match self {
            MessageKind::GlobalPrompt => at::COMMON_END,
            MessageKind::ClientUpdate => at::CLIENT_END,
        }
    }

    /// The flag bits this kind may set; every other bit is reserved and must be zero.
    const fn allowed_flags(self) -> u8 {
        match self {
            MessageKind::GlobalPrompt => 0,
            MessageKind::ClientUpdate => FLAG_LOSS | FLAG_ACCURACY,
        }
    }

    /// Exact size of a message of this kind carrying a prompt of `shape` (at most 2^26 + 44).
    const fn encoded_len(self, shape: PromptShape) -> usize {
        self.header_len() + 4 * shape.len() + CHECKSUM_LEN
    }

    /// The size a header's (untrusted) shape implies, saturating rather than overflowing.
    fn implied_len(self, n_ctx: u32, width: u32) -> u64 {
        let floats = u64::from(n_ctx) * u64::from(width);
        floats
            .saturating_mul(4)
            .saturating_add((self.header_len() + CHECKSUM_LEN) as u64)
    }
}

/// A value of a message, to say which one an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// Element `index` of the prompt (row-major).
    Prompt {
        /// Position in the prompt, `row · width + column`.
        index: usize,
    },
    /// The client update's training loss.
    Loss,
    /// The client update's training accuracy.
    Accuracy,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Prompt { index } => write!(f, "prompt element {index}"),
            Field::Loss => f.write_str("loss"),
            Field::Accuracy => f.write_str("accuracy"),
        }
    }
}

/// Why a message could not be encoded. Nothing is written to the output buffer on error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EncodeError {
    /// The prompt slice does not hold `shape.len()` floats.
    PromptLength {
        /// `shape.len()`.
        expected: usize,
        /// `prompt.len()`.
        found: usize,
    },
    /// A prompt element or a metric is NaN or infinite.
    NonFinite {
        /// The first offending value.
        field: Field,
    },
    /// The accuracy is outside `[0, 1]` (it is a fraction, not a percentage).
    AccuracyOutOfRange {
        /// The accuracy given.
        found: f32,
    },
    /// The output buffer is shorter than the message.
    BufferTooSmall {
        /// The message's size, as `encoded_len` returns it.
        needed: usize,
        /// The buffer's length.
        found: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::PromptLength { expected, found } => write!(
                f,
                "prompt has {found} floats but its shape needs {expected}"
            ),
            EncodeError::NonFinite { field } => write!(f, "{field} is not finite"),
            EncodeError::AccuracyOutOfRange { found } => {
                write!(f, "accuracy {found} is outside [0, 1]")
            }
            EncodeError::BufferTooSmall { needed, found } => write!(
                f,
                "output buffer holds {found} bytes but the message needs {needed}"
            ),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Why a byte string is not a valid message of the expected kind and shape.
///
/// Decoding reports the first defect in the order of the variants below (after `OutputLength`,
/// which is about the caller's buffer, not the message). Nothing is written to the caller's
/// prompt buffer on error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DecodeError {
    /// The caller's prompt buffer does not hold `shape.len()` floats.
    OutputLength {
        /// The expected shape's length.
        expected: usize,
        /// The buffer's length.
        found: usize,
    },
    /// The byte string ends before the 24-byte common header, or before the total length the
    /// header declares.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        found: usize,
    },
    /// The first four bytes are not `FOTP`.
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The version field is not [`VERSION`].
    UnsupportedVersion {
        /// The version field.
        found: u16,
    },
    /// The kind byte is neither 1 (global prompt) nor 2 (client update).
    UnknownKind {
        /// The kind byte.
        found: u8,
    },
    /// The message is valid so far but of the other kind.
    WrongKind {
        /// The kind asked for.
        expected: MessageKind,
        /// The kind in the message.
        found: MessageKind,
    },
    /// The declared total length differs from the size implied by the kind and the declared
    /// shape (or is too small to hold the header and checksum at all).
    LengthMismatch {
        /// The total-length field (offset 8).
        declared: u32,
        /// Header + 4 · n_ctx · width + checksum, from the header's own fields; saturates at
        /// `u64::MAX` for absurd shapes.
        expected: u64,
    },
    /// The byte string is longer than the declared total length.
    TrailingBytes {
        /// The total-length field (offset 8).
        declared: u32,
        /// Bytes given.
        found: usize,
    },
    /// The CRC-32 in the last four bytes does not match the bytes before it.
    ChecksumMismatch {
        /// The checksum stored in the message.
        stored: u32,
        /// The checksum of the message's bytes.
        computed: u32,
    },
    /// A reserved flag bit, or the field of a metric the flags say is absent, is not zero.
    ReservedNotZero {
        /// Byte offset of the field.
        offset: usize,
    },
    /// The message's prompt shape is not the one the receiver expects.
    ShapeMismatch {
        /// The shape the receiver expects.
        expected: PromptShape,
        /// The message's `n_ctx` (offset 16).
        found_n_ctx: u32,
        /// The message's `width` (offset 20).
        found_width: u32,
    },
    /// A metric or a prompt element is NaN or infinite.
    NonFinite {
        /// The first offending value.
        field: Field,
        /// Its byte offset in the message.
        offset: usize,
    },
    /// The accuracy is finite but outside `[0, 1]`.
    AccuracyOutOfRange {
        /// The accuracy in the message.
        found: f32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::OutputLength { expected, found } => write!(
                f,
                "prompt buffer holds {found} floats but the expected shape needs {expected}"
            ),
            DecodeError::Truncated { needed, found } => write!(
                f,
                "message truncated: {found} bytes given, at least {needed} needed"
            ),
            DecodeError::BadMagic { found } => write!(
                f,
                "bad magic {:02x} {:02x} {:02x} {:02x} at offset 0: expected 46 4f 54 50 (\"FOTP\")",
                found[0], found[1], found[2], found[3]
            ),
            DecodeError::UnsupportedVersion { found } => write!(
                f,
                "unsupported protocol version {found} at offset {}: this decoder reads version {VERSION}",
                at::VERSION
            ),
            DecodeError::UnknownKind { found } => write!(
                f,
                "unknown message kind {found} at offset {}: expected 1 (global prompt) or 2 (client update)",
                at::KIND
            ),
            DecodeError::WrongKind { expected, found } => {
                write!(f, "expected a {expected} message, got a {found} message")
            }
            DecodeError::LengthMismatch { declared, expected } => write!(
                f,
                "declared total length {declared} (offset {}) disagrees with the {expected} bytes its kind and shape need",
                at::TOTAL_LEN
            ),
            DecodeError::TrailingBytes { declared, found } => write!(
                f,
                "{found} bytes given but the message declares {declared}: trailing bytes after the checksum"
            ),
            DecodeError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: message says {stored:#010x}, its bytes give {computed:#010x} (corrupted in transit?)"
            ),
            DecodeError::ReservedNotZero { offset } => {
                write!(f, "reserved field at byte offset {offset} is not zero")
            }
            DecodeError::ShapeMismatch {
                expected,
                found_n_ctx,
                found_width,
            } => write!(
                f,
                "prompt shape {found_n_ctx}×{found_width} (n_ctx×width, offsets {} and {}) but {expected} expected",
                at::N_CTX,
                at::WIDTH
            ),
            DecodeError::NonFinite { field, offset } => {
                write!(f, "{field} at byte offset {offset} is not finite")
            }
            DecodeError::AccuracyOutOfRange { found } => write!(
                f,
                "accuracy {found} at byte offset {} is outside [0, 1]",
                at::ACCURACY
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

impl<'p> GlobalPrompt<'p> {
    /// Exact size in bytes of a global-prompt message for `shape`: `4 · shape.len() + 28`.
    pub const fn encoded_len(shape: PromptShape) -> usize {
        MessageKind::GlobalPrompt.encoded_len(shape)
    }

    /// Writes the message to `out[..n]` and returns `n` = [`GlobalPrompt::encoded_len`].
    ///
    /// Refuses a prompt whose length differs from its shape's or that holds a non-finite value,
    /// and a buffer shorter than the message; on error `out` is untouched.
    ///
    /// ```
    /// use fedotp_core::protocol::{GlobalPrompt, PromptShape};
    ///
    /// let shape = PromptShape::new(2, 3).unwrap();
    /// let prompt = [0.5, -1.0, 2.0, 0.0, 0.25, 3.0];
    /// let message = GlobalPrompt { round: 7, shape, prompt: &prompt };
    ///
    /// let mut bytes = [0u8; 64];
    /// let n = message.encode(&mut bytes)?;
    /// assert_eq!(n, GlobalPrompt::encoded_len(shape));
    ///
    /// let mut received = [0.0f32; 6];
    /// let decoded = GlobalPrompt::decode(&bytes[..n], shape, &mut received)?;
    /// assert_eq!(decoded, message);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        check_prompt(self.shape, self.prompt)?;
        let out = message_buffer(out, Self::encoded_len(self.shape))?;
        write_common_header(out, MessageKind::GlobalPrompt, 0, self.round, self.shape);
        write_payload_and_checksum(out, at::COMMON_END, self.prompt);
        Ok(out.len())
    }

    /// Validates `bytes` as one global-prompt message of `shape`, copies its prompt into
    /// `prompt_out` (which must hold `shape.len()` floats) and returns the message.
    ///
    /// Never panics; every defect has its own [`DecodeError`], and `prompt_out` is written only
    /// on success.
    pub fn decode(
        bytes: &[u8],
        shape: PromptShape,
        prompt_out: &'p mut [f32],
    ) -> Result<Self, DecodeError> {
        let header = open(bytes, MessageKind::GlobalPrompt, shape, prompt_out.len())?;
        read_payload(bytes, at::COMMON_END, prompt_out)?;
        Ok(GlobalPrompt {
            round: header.round,
            shape,
            prompt: prompt_out,
        })
    }
}

impl<'p> ClientUpdate<'p> {
    /// Exact size in bytes of a client-update message for `shape`: `4 · shape.len() + 44`.
    pub const fn encoded_len(shape: PromptShape) -> usize {
        MessageKind::ClientUpdate.encoded_len(shape)
    }

    /// Writes the message to `out[..n]` and returns `n` = [`ClientUpdate::encoded_len`].
    ///
    /// Refuses a prompt whose length differs from its shape's, a non-finite prompt value or
    /// metric, an accuracy outside `[0, 1]`, and a buffer shorter than the message; on error
    /// `out` is untouched.
    ///
    /// ```
    /// use fedotp_core::protocol::{ClientUpdate, PromptShape};
    ///
    /// let shape = PromptShape::new(1, 4).unwrap();
    /// let prompt = [0.1, 0.2, 0.3, 0.4];
    /// let update = ClientUpdate {
    ///     round: 3,
    ///     client: 12,
    ///     samples: 640,
    ///     shape,
    ///     prompt: &prompt,
    ///     loss: Some(0.82),
    ///     accuracy: None,
    /// };
    /// let mut bytes = [0u8; ClientUpdate::encoded_len(PromptShape::new(1, 4).unwrap())];
    /// update.encode(&mut bytes)?;
    ///
    /// let mut received = [0.0f32; 4];
    /// assert_eq!(ClientUpdate::decode(&bytes, shape, &mut received)?, update);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        check_prompt(self.shape, self.prompt)?;
        let (loss_bits, loss_flag) = match self.loss {
            None => (0, 0),
            Some(loss) if loss.is_finite() => (loss.to_bits(), FLAG_LOSS),
            Some(_) => return Err(EncodeError::NonFinite { field: Field::Loss }),
        };
        let (accuracy_bits, accuracy_flag) = match self.accuracy {
            None => (0, 0),
            Some(accuracy) if !accuracy.is_finite() => {
                return Err(EncodeError::NonFinite {
                    field: Field::Accuracy,
                })
            }
            Some(accuracy) if !(0.0..=1.0).contains(&accuracy) => {
                return Err(EncodeError::AccuracyOutOfRange { found: accuracy })
            }
            Some(accuracy) => (accuracy.to_bits(), FLAG_ACCURACY),
        };
        let out = message_buffer(out, Self::encoded_len(self.shape))?;
        let flags = loss_flag | accuracy_flag;
        write_common_header(
            out,
            MessageKind::ClientUpdate,
            flags,
            self.round,
            self.shape,
        );
        put_u32(out, at::CLIENT, self.client);
        put_u32(out, at::SAMPLES, self.samples);
        put_u32(out, at::LOSS, loss_bits);
        put_u32(out, at::ACCURACY, accuracy_bits);
        write_payload_and_checksum(out, at::CLIENT_END, self.prompt);
        Ok(out.len())
    }

    /// Validates `bytes` as one client-update message of `shape`, copies its prompt into
    /// `prompt_out` (which must hold `shape.len()` floats) and returns the update, ready for
    /// [`Aggregator::add`](super::Aggregator::add).
    ///
    /// Never panics; every defect has its own [`DecodeError`], and `prompt_out` is written only
    /// on success. A zero sample count is not a wire defect: the aggregator refuses it.
    pub fn decode(
        bytes: &[u8],
        shape: PromptShape,
        prompt_out: &'p mut [f32],
    ) -> Result<Self, DecodeError> {
        let header = open(bytes, MessageKind::ClientUpdate, shape, prompt_out.len())?;
        let loss = read_metric(bytes, header.flags & FLAG_LOSS != 0, at::LOSS, Field::Loss)?;
        let accuracy = read_metric(
            bytes,
            header.flags & FLAG_ACCURACY != 0,
            at::ACCURACY,
            Field::Accuracy,
        )?;
        if let Some(found) = accuracy.filter(|a| !(0.0..=1.0).contains(a)) {
            return Err(DecodeError::AccuracyOutOfRange { found });
        }
        read_payload(bytes, at::CLIENT_END, prompt_out)?;
        Ok(ClientUpdate {
            round: header.round,
            client: u32_at(bytes, at::CLIENT),
            samples: u32_at(bytes, at::SAMPLES),
            shape,
            prompt: prompt_out,
            loss,
            accuracy,
        })
    }
}

/// The encoder's checks on a prompt: right length, every value finite.
fn check_prompt(shape: PromptShape, prompt: &[f32]) -> Result<(), EncodeError> {
    if prompt.len() != shape.len() {
        return Err(EncodeError::PromptLength {
            expected: shape.len(),
            found: prompt.len(),
        });
    }
    match first_non_finite(prompt) {
        Some(index) => Err(EncodeError::NonFinite {
            field: Field::Prompt { index },
        }),
        None => Ok(()),
    }
}

/// The first `needed` bytes of `out`, or the error saying it is too short.
fn message_buffer(out: &mut [u8], needed: usize) -> Result<&mut [u8], EncodeError> {
    let found = out.len();
    out.get_mut(..needed)
        .ok_or(EncodeError::BufferTooSmall { needed, found })
}

/// Writes the 24 bytes both kinds share; `out` is exactly the message.
fn write_common_header(
    out: &mut [u8],
    kind: MessageKind,
    flags: u8,
    round: u32,
    shape: PromptShape,
) {
    // A message is at most 2^26 + 44 bytes (PromptShape::MAX_LEN), so its length fits a u32.
    let total_len = out.len() as u32;
    out[at::MAGIC..at::MAGIC + 4].copy_from_slice(&MAGIC);
    out[at::VERSION..at::VERSION + 2].copy_from_slice(&VERSION.to_le_bytes());
    out[at::KIND] = kind as u8;
    out[at::FLAGS] = flags;
    put_u32(out, at::TOTAL_LEN, total_len);
    put_u32(out, at::ROUND, round);
    put_u32(out, at::N_CTX, shape.n_ctx());
    put_u32(out, at::WIDTH, shape.width());
}

/// Writes the prompt from `payload_at` on, then the checksum of everything before it.
fn write_payload_and_checksum(out: &mut [u8], payload_at: usize, prompt: &[f32]) {
    let (body, checksum) = out.split_at_mut(out.len() - CHECKSUM_LEN);
    for (bytes, value) in body[payload_at..].chunks_exact_mut(4).zip(prompt) {
        bytes.copy_from_slice(&value.to_le_bytes());
    }
    checksum.copy_from_slice(&CRC32.checksum(body).to_le_bytes());
}

/// What `open` establishes about a message: the fields the two kinds share.
struct Header {
    round: u32,
    flags: u8,
}

/// Checks everything up to the kind-specific fields, in the documented order: the caller's
/// buffer, the fixed header, the extent of the message, its checksum, then the fields the
/// checksum protects. After `Ok`, `bytes` is exactly one message of `kind` and `shape`.
fn open(
    bytes: &[u8],
    kind: MessageKind,
    shape: PromptShape,
    out_len: usize,
) -> Result<Header, DecodeError> {
    if out_len != shape.len() {
        return Err(DecodeError::OutputLength {
            expected: shape.len(),
            found: out_len,
        });
    }
    if bytes.len() < at::COMMON_END {
        return Err(DecodeError::Truncated {
            needed: at::COMMON_END,
            found: bytes.len(),
        });
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != MAGIC {
        return Err(DecodeError::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes([bytes[at::VERSION], bytes[at::VERSION + 1]]);
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let kind_byte = bytes[at::KIND];
    let found_kind =
        MessageKind::from_byte(kind_byte).ok_or(DecodeError::UnknownKind { found: kind_byte })?;
    if found_kind != kind {
        return Err(DecodeError::WrongKind {
            expected: kind,
            found: found_kind,
        });
    }

    // The message's extent: the declared length must at least cover the header and checksum,
    // and the byte string must be exactly that long.
    let declared = u32_at(bytes, at::TOTAL_LEN);
    let n_ctx = u32_at(bytes, at::N_CTX);
    let width = u32_at(bytes, at::WIDTH);
    let expected_len = kind.implied_len(n_ctx, width);
    let length_mismatch = DecodeError::LengthMismatch {
        declared,
        expected: expected_len,
    };
    let total_len = declared as usize;
    if total_len < kind.header_len() + CHECKSUM_LEN {
        return Err(length_mismatch);
    }
    if bytes.len() < total_len {
        return Err(DecodeError::Truncated {
            needed: total_len,
            found: bytes.len(),
        });
    }
    if bytes.len() > total_len {
        return Err(DecodeError::TrailingBytes {
            declared,
            found: bytes.len(),
        });
    }

    let (body, checksum) = bytes.split_at(total_len - CHECKSUM_LEN);
    let stored = u32_at(checksum, 0);
    let computed = CRC32.checksum(body);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }

    // From here on the bytes are as the sender wrote them; what is wrong now, the sender did.
    if u64::from(declared) != expected_len {
        return Err(length_mismatch);
    }
    let flags = bytes[at::FLAGS];
    if flags & !kind.allowed_flags() != 0 {
        return Err(DecodeError::ReservedNotZero { offset: at::FLAGS });
    }
    if (n_ctx, width) != (shape.n_ctx(), shape.width()) {
        return Err(DecodeError::ShapeMismatch {
            expected: shape,
            found_n_ctx: n_ctx,
            found_width: width,
        });
    }
    Ok(Header {
        round: u32_at(bytes, at::ROUND),
        flags,
    })
}

/// An optional metric: zero bits when absent, a finite `f32` when present.
fn read_metric(
    bytes: &[u8],
    present: bool,
    offset: usize,
    field: Field,
) -> Result<Option<f32>, DecodeError> {
    let bits = u32_at(bytes, offset);
    match (present, f32::from_bits(bits)) {
        (false, _) if bits != 0 => Err(DecodeError::ReservedNotZero { offset }),
        (false, _) => Ok(None),
        (true, value) if value.is_finite() => Ok(Some(value)),
        (true, _) => Err(DecodeError::NonFinite { field, offset }),
    }
}

/// Checks every payload value is finite, then copies them to `out` (whose length `open` checked
/// against the message's), so that `out` is written only when the whole message is valid.
fn read_payload(bytes: &[u8], payload_at: usize, out: &mut [f32]) -> Result<(), DecodeError> {
    let payload = &bytes[payload_at..bytes.len() - CHECKSUM_LEN];
    let values = || {
        payload
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if let Some(index) = values().position(|value| !value.is_finite()) {
        return Err(DecodeError::NonFinite {
            field: Field::Prompt { index },
            offset: payload_at + 4 * index,
        });
    }
    for (slot, value) in out.iter_mut().zip(values()) {
        *slot = value;
    }
    Ok(())
}

/// The little-endian `u32` at `offset`; callers have checked `bytes` is long enough.
fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

fn put_u32(out: &mut [u8], offset: usize, value: u32) {
    out[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}
