//! One federated round of the prompt-aggregation protocol on the target, against the host's
//! encoding of the same round: `fixtures/protocol_round.bin`, written by
//! `tests/scripts/protocol_fixture.py` with an encoder of its own (from `docs/PROTOCOL.md`) and
//! the average in exact rational arithmetic.
//!
//! For each client update of the round (2 × 512-float prompts), the firmware encodes the update
//! from its fields and must produce the host's bytes, decodes the host's bytes and must get the
//! fields back, and adds the decoded update to an [`Aggregator`]. The aggregator must then refuse
//! a duplicate and an update of another round without changing, and its average must equal the
//! host's bit for bit. The next round's global prompt, encoded here, must be the host's message
//! and decode back to itself. In both kinds of message, a byte flipped past the first 12 must
//! be reported as a checksum mismatch.

use crate::Tally;
use cortex_m_semihosting::hprintln;
use fedotp_core::protocol::{
    AggregateError, Aggregator, ClientUpdate, DecodeError, EncodeError, GlobalPrompt, PromptShape,
};
use heapless::Vec;

/// The round, encoded and averaged on the host.
const FIXTURE: &[u8] = include_bytes!("../fixtures/protocol_round.bin");

/// The prompt shape of the round: 2 context tokens of CLIP's text width.
const SHAPE: PromptShape = match PromptShape::new(2, 512) {
    Some(shape) => shape,
    None => panic!("2 x 512 is a valid prompt shape"),
};
/// Floats in a prompt.
const PROMPT_LEN: usize = SHAPE.len();
/// Bytes of the larger message, a client update.
const MESSAGE_CAPACITY: usize = ClientUpdate::encoded_len(SHAPE);
/// Most clients the aggregator takes in a round.
const MAX_CLIENTS: usize = 8;

/// The protocol check's buffers, static like the solver's.
pub struct ProtocolBuffers {
    /// A prompt read from the fixture.
    prompt: [f32; PROMPT_LEN],
    /// A prompt decoded from a message, or the aggregator's average.
    received: [f32; PROMPT_LEN],
    /// The aggregator's `f64` accumulator.
    weighted_sum: [f64; PROMPT_LEN],
    /// The ids of the clients the aggregator counted.
    seen: [u32; MAX_CLIENTS],
    /// A message encoded here.
    message: [u8; MESSAGE_CAPACITY],
}

impl ProtocolBuffers {
    /// All zero, as a static's initialiser.
    pub const ZERO: ProtocolBuffers = ProtocolBuffers {
        prompt: [0.0; PROMPT_LEN],
        received: [0.0; PROMPT_LEN],
        weighted_sum: [0.0; PROMPT_LEN],
        seen: [0; MAX_CLIENTS],
        message: [0; MESSAGE_CAPACITY],
    };
}

/// Runs the round and reports each step.
pub fn run(buffers: &mut ProtocolBuffers, tally: &mut Tally) {
    let ProtocolBuffers {
        prompt,
        received,
        weighted_sum,
        seen,
        message,
    } = buffers;
    let mut fixture = Reader { rest: FIXTURE };
    assert_eq!(fixture.take(4), b"FPRT", "not a protocol fixture");
    assert_eq!(fixture.u32(), 1, "unknown protocol fixture version");
    assert_eq!(
        (fixture.u32(), fixture.u32()),
        (SHAPE.n_ctx(), SHAPE.width()),
        "the fixture's prompt shape"
    );
    let round = fixture.u32();
    let clients = fixture.u32() as usize;
    hprintln!(
        "\nProtocol: round {round}, {clients} client updates of {SHAPE} floats, against the \
         host's encoding (tests/scripts/protocol_fixture.py)"
    );

    let mut aggregator = Aggregator::new(SHAPE, round, &mut weighted_sum[..], &mut seen[..])
        .expect("the accumulator is sized by SHAPE");
    // The clients the aggregator must end up counting, from the fixture.
    let mut ids: Vec<u32, MAX_CLIENTS> = Vec::new();
    let mut total_samples = 0u64;
    let mut first_message: &[u8] = &[];
    for _ in 0..clients {
        let (client, samples) = (fixture.u32(), fixture.u32());
        let (loss, accuracy) = (fixture.optional_f32(), fixture.optional_f32());
        fixture.prompt_into(&mut prompt[..]);
        let host_message = fixture.message();
        if first_message.is_empty() {
            first_message = host_message;
        }
        ids.push(client)
            .expect("the fixture has at most MAX_CLIENTS clients");
        total_samples += u64::from(samples);

        let update = ClientUpdate {
            round,
            client,
            samples,
            shape: SHAPE,
            prompt: &prompt[..],
            loss,
            accuracy,
        };
        let encoded = update
            .encode(&mut message[..])
            .map(|n| &message[..n] == host_message);
        let decoded = ClientUpdate::decode(host_message, SHAPE, &mut received[..]);
        let matches = matches!(&decoded, Ok(back) if *back == update);
        let added = match &decoded {
            Ok(back) => Some(aggregator.add(back)),
            Err(_) => None,
        };
        let verdict = tally.record(encoded == Ok(true) && matches && added == Some(Ok(())));
        hprintln!(
            "client {client:2}, {samples:4} samples, loss {loss:?}, accuracy {accuracy:?}: {}; {}; {}  {verdict}",
            EncodeOutcome(encoded, host_message.len()),
            DecodeOutcome(&decoded, matches),
            AddOutcome(added),
        );
    }

    let flips_ok = flipped_bytes_fail_checksum(first_message, &mut message[..], |bytes| {
        ClientUpdate::decode(bytes, SHAPE, &mut received[..]).map(|_| ())
    });
    let verdict = tally.record(flips_ok);
    hprintln!(
        "client update with one byte flipped at offset {FLIPS:?} (and len-5, len-1): checksum \
         mismatch every time  {verdict}"
    );

    ids.sort_unstable();
    let verdict = tally.record(
        aggregator.clients() == ids.as_slice() && aggregator.total_samples() == total_samples,
    );
    hprintln!(
        "aggregator counted clients {:?}, {} samples  {verdict}",
        aggregator.clients(),
        aggregator.total_samples()
    );

    // Refusals leave the aggregate as it was: the average before and after must be the same.
    let before = aggregator.finish(&mut prompt[..]);
    let duplicate = ClientUpdate::decode(first_message, SHAPE, &mut received[..])
        .map(|update| aggregator.add(&update));
    let late = ClientUpdate::decode(first_message, SHAPE, &mut received[..]).map(|update| {
        aggregator.add(&ClientUpdate {
            round: round + 1,
            ..update
        })
    });
    let after = aggregator.finish(&mut received[..]);
    let unchanged = before.is_ok() && after.is_ok() && prompt[..] == received[..];
    let verdict = tally.record(
        matches!(duplicate, Ok(Err(AggregateError::DuplicateClient { .. })))
            && matches!(late, Ok(Err(AggregateError::RoundMismatch { .. })))
            && unchanged,
    );
    hprintln!(
        "the same update again: {duplicate:?}; one of round {}: {late:?}; aggregate unchanged: {unchanged}  {verdict}",
        round + 1
    );

    // `received` holds the average; the fixture's expectation goes into `prompt`.
    fixture.prompt_into(&mut prompt[..]);
    let differing = prompt
        .iter()
        .zip(received.iter())
        .filter(|(host, here)| host.to_bits() != here.to_bits())
        .count();
    let verdict = tally.record(after.is_ok() && differing == 0);
    hprintln!(
        "weighted average vs the host's exact one rounded to f32: {differing} of {PROMPT_LEN} \
         values differ in any bit  {verdict}"
    );

    let host_message = fixture.message();
    let next = GlobalPrompt {
        round: round + 1,
        shape: SHAPE,
        prompt: &received[..],
    };
    let encoded = next
        .encode(&mut message[..])
        .map(|n| &message[..n] == host_message);
    let decoded = GlobalPrompt::decode(host_message, SHAPE, &mut prompt[..]);
    let matches = matches!(&decoded, Ok(back) if *back == next);
    let verdict = tally.record(encoded == Ok(true) && matches);
    hprintln!(
        "global prompt of round {}: {}; {}  {verdict}",
        round + 1,
        EncodeOutcome(encoded, host_message.len()),
        DecodeOutcome(&decoded, matches),
    );
    let flips_ok = flipped_bytes_fail_checksum(host_message, &mut message[..], |bytes| {
        GlobalPrompt::decode(bytes, SHAPE, &mut prompt[..]).map(|_| ())
    });
    let verdict = tally.record(flips_ok);
    hprintln!(
        "global prompt with one byte flipped at offset {FLIPS:?} (and len-5, len-1): checksum \
         mismatch every time  {verdict}"
    );
    assert!(
        fixture.rest.is_empty(),
        "trailing bytes in the protocol fixture"
    );
}

/// Offsets flipped in every message, besides the last payload byte and a checksum byte: the
/// round, the shape, the client-update fields (the first payload bytes of a global prompt).
const FLIPS: [usize; 8] = [12, 16, 20, 24, 28, 32, 36, 40];

/// Copies `host` into `scratch`, flips one byte at a time (each offset of [`FLIPS`], the last
/// payload byte and the last checksum byte) and checks that `decode` reports a checksum mismatch
/// each time. Every one of these bytes lies past the first 12, which the checksum guards first.
fn flipped_bytes_fail_checksum(
    host: &[u8],
    scratch: &mut [u8],
    mut decode: impl FnMut(&[u8]) -> Result<(), DecodeError>,
) -> bool {
    let n = host.len();
    let scratch = &mut scratch[..n];
    scratch.copy_from_slice(host);
    let intact = decode(scratch).is_ok();
    intact
        && FLIPS.iter().chain(&[n - 5, n - 1]).all(|&offset| {
            scratch[offset] ^= 0xFF;
            let result = decode(scratch);
            scratch[offset] ^= 0xFF;
            matches!(result, Err(DecodeError::ChecksumMismatch { .. }))
        })
}

/// Reads the fixture front to back; panics on a malformed file (it is ours).
struct Reader {
    rest: &'static [u8],
}

impl Reader {
    fn take(&mut self, n: usize) -> &'static [u8] {
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        head
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }

    /// A presence flag (u32) and a value (f32).
    fn optional_f32(&mut self) -> Option<f32> {
        let present = self.u32() != 0;
        let value = f32::from_bits(self.u32());
        present.then_some(value)
    }

    fn prompt_into(&mut self, out: &mut [f32]) {
        let bytes = self.take(4 * out.len());
        for (value, le) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *value = f32::from_le_bytes(le.try_into().unwrap());
        }
    }

    /// A length (u32) and that many bytes.
    fn message(&mut self) -> &'static [u8] {
        let n = self.u32() as usize;
        self.take(n)
    }
}

/// "encodes to the host's N bytes", or how it does not.
struct EncodeOutcome(Result<bool, EncodeError>, usize);

impl core::fmt::Display for EncodeOutcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Ok(true) => write!(f, "encodes to the host's {} bytes", self.1),
            Ok(false) => f.write_str("encodes to bytes other than the host's"),
            Err(error) => write!(f, "encoding refused: {error}"),
        }
    }
}

/// "the host's bytes decode to the same message", or how they do not.
struct DecodeOutcome<'r, T>(&'r Result<T, DecodeError>, bool);

impl<T> core::fmt::Display for DecodeOutcome<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match (self.0, self.1) {
            (Ok(_), true) => f.write_str("the host's bytes decode to the same message"),
            (Ok(_), false) => f.write_str("the host's bytes decode to another message"),
            (Err(error), _) => write!(f, "decoding the host's bytes failed: {error}"),
        }
    }
}

/// "aggregated", or why not.
struct AddOutcome(Option<Result<(), AggregateError>>);

impl core::fmt::Display for AddOutcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(Ok(())) => f.write_str("aggregated"),
            Some(Err(error)) => write!(f, "the aggregator refused it: {error}"),
            None => f.write_str("not aggregated"),
        }
    }
}
