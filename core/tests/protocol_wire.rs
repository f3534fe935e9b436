//! The wire format: round trips, every defect's own error, and the worked example of
//! `docs/PROTOCOL.md` checked byte for byte against the encoder.

use fedotp_core::protocol::{
    ClientUpdate, DecodeError, EncodeError, Field, GlobalPrompt, MessageKind, PromptShape,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Independent references: a bitwise CRC-32 (zlib's) and the field offsets of docs/PROTOCOL.md.

/// CRC-32/ISO-HDLC, bit by bit: reflected polynomial 0xEDB88320, init and final xor 0xFFFFFFFF.
fn reference_crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Recomputes the trailing checksum after a test edited a message on purpose.
fn reseal(bytes: &mut [u8]) {
    let n = bytes.len() - 4;
    let crc = reference_crc32(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

const FLAGS: usize = 7;
const TOTAL_LEN: usize = 8;
const N_CTX: usize = 16;
const LOSS: usize = 32;
const ACCURACY: usize = 36;
const GLOBAL_PAYLOAD: usize = 24;
const CLIENT_PAYLOAD: usize = 40;

fn shape(n_ctx: u32, width: u32) -> PromptShape {
    PromptShape::new(n_ctx, width).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Fixed messages used by the deterministic tests.

const PROMPT: [f32; 4] = [1.0, -0.5, 0.25, 2.0];

fn example_global() -> GlobalPrompt<'static> {
    GlobalPrompt {
        round: 3,
        shape: shape(2, 2),
        prompt: &PROMPT,
    }
}

fn example_update() -> ClientUpdate<'static> {
    ClientUpdate {
        round: 3,
        client: 7,
        samples: 120,
        shape: shape(2, 2),
        prompt: &PROMPT,
        loss: Some(0.5),
        accuracy: Some(0.75),
    }
}

fn encode_global(message: &GlobalPrompt<'_>) -> Vec<u8> {
    let mut bytes = vec![0; GlobalPrompt::encoded_len(message.shape)];
    let n = message.encode(&mut bytes).unwrap();
    assert_eq!(n, bytes.len());
    bytes
}

fn encode_update(update: &ClientUpdate<'_>) -> Vec<u8> {
    let mut bytes = vec![0; ClientUpdate::encoded_len(update.shape)];
    let n = update.encode(&mut bytes).unwrap();
    assert_eq!(n, bytes.len());
    bytes
}

/// The encoded example message of `kind`.
fn example_bytes(kind: MessageKind) -> Vec<u8> {
    match kind {
        MessageKind::GlobalPrompt => encode_global(&example_global()),
        MessageKind::ClientUpdate => encode_update(&example_update()),
    }
}

/// Decodes `bytes` as a message of `kind` and `shape` into a buffer pre-filled with a
/// sentinel, expecting an error, and checks that the buffer still holds the sentinel.
fn decode_error(kind: MessageKind, bytes: &[u8], shape: PromptShape) -> DecodeError {
    const SENTINEL: u32 = 0x7fc0_1234;
    let mut out = vec![f32::from_bits(SENTINEL); shape.len()];
    let error = match kind {
        MessageKind::GlobalPrompt => GlobalPrompt::decode(bytes, shape, &mut out).map(|_| ()),
        MessageKind::ClientUpdate => ClientUpdate::decode(bytes, shape, &mut out).map(|_| ()),
    }
    .unwrap_err();
    assert!(
        out.iter().all(|v| v.to_bits() == SENTINEL),
        "{error:?} wrote the output"
    );
    error
}

fn decode_update_error(bytes: &[u8], shape: PromptShape) -> DecodeError {
    decode_error(MessageKind::ClientUpdate, bytes, shape)
}

fn decode_global_error(bytes: &[u8], shape: PromptShape) -> DecodeError {
    decode_error(MessageKind::GlobalPrompt, bytes, shape)
}

// ---------------------------------------------------------------------------------------------
// The worked example of docs/PROTOCOL.md.

/// The bytes of the hex block that follows `marker` in docs/PROTOCOL.md: pairs of hex digits,
/// with everything after a `#` on a line being commentary.
fn doc_hex_block(marker: &str) -> Vec<u8> {
    let doc = include_str!("../../docs/PROTOCOL.md");
    let after = &doc[doc.find(marker).expect("marker in PROTOCOL.md") + marker.len()..];
    let block = after
        .split("```")
        .nth(1)
        .expect("a fenced block after the marker");
    block
        .lines()
        .skip(1) // the fence's info string
        .flat_map(|line| line.split('#').next().unwrap().split_whitespace())
        .map(|pair| u8::from_str_radix(pair, 16).expect("hex byte"))
        .collect()
}

#[test]
fn documented_client_update_example_is_what_the_encoder_writes() {
    assert_eq!(
        encode_update(&example_update()),
        doc_hex_block("<!-- example: client update -->")
    );
}

#[test]
fn documented_global_prompt_example_is_what_the_encoder_writes() {
    assert_eq!(
        encode_global(&example_global()),
        doc_hex_block("<!-- example: global prompt -->")
    );
}

#[test]
fn checksum_is_zlibs_crc32() {
    // The standard check value of CRC-32/ISO-HDLC, validating the reference itself.
    assert_eq!(reference_crc32(b"123456789"), 0xCBF4_3926);
    let bytes = encode_update(&example_update());
    let n = bytes.len() - 4;
    assert_eq!(
        u32::from_le_bytes(bytes[n..].try_into().unwrap()),
        reference_crc32(&bytes[..n])
    );
}

#[test]
fn encoded_len_counts_header_payload_and_checksum() {
    assert_eq!(GlobalPrompt::encoded_len(shape(4, 512)), 24 + 4 * 2048 + 4);
    assert_eq!(ClientUpdate::encoded_len(shape(4, 512)), 40 + 4 * 2048 + 4);
    let largest = PromptShape::new(1, PromptShape::MAX_LEN as u32).unwrap();
    assert!(ClientUpdate::encoded_len(largest) <= u32::MAX as usize);
}

// ---------------------------------------------------------------------------------------------
// Round trips.

fn finite_f32() -> impl Strategy<Value = f32> {
    // Every finite bit pattern: subnormals, signed zeros, the extremes.
    any::<u32>()
        .prop_map(f32::from_bits)
        .prop_filter("finite", |v| v.is_finite())
}

fn shape_and_prompt() -> impl Strategy<Value = (PromptShape, Vec<f32>)> {
    (1u32..=4, 1u32..=9).prop_flat_map(|(n_ctx, width)| {
        let shape = shape(n_ctx, width);
        (
            Just(shape),
            prop::collection::vec(finite_f32(), shape.len()),
        )
    })
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

proptest! {
    #[test]
    fn global_prompt_round_trips(round in any::<u32>(), (shape, prompt) in shape_and_prompt()) {
        let message = GlobalPrompt { round, shape, prompt: &prompt };
        let bytes = encode_global(&message);
        let mut out = vec![0.0; shape.len()];
        let decoded = GlobalPrompt::decode(&bytes, shape, &mut out).unwrap();
        prop_assert_eq!(decoded.round, round);
        prop_assert_eq!(decoded.shape, shape);
        prop_assert_eq!(bits(decoded.prompt), bits(&prompt));
        prop_assert_eq!(encode_global(&decoded), bytes);
    }

    #[test]
    fn client_update_round_trips(
        round in any::<u32>(),
        client in any::<u32>(),
        samples in any::<u32>(),
        (shape, prompt) in shape_and_prompt(),
        loss in prop::option::of(finite_f32()),
        accuracy in prop::option::of(0.0f32..=1.0),
    ) {
        let update = ClientUpdate { round, client, samples, shape, prompt: &prompt, loss, accuracy };
        let bytes = encode_update(&update);
        let mut out = vec![0.0; shape.len()];
        let decoded = ClientUpdate::decode(&bytes, shape, &mut out).unwrap();
        prop_assert_eq!(
            (decoded.round, decoded.client, decoded.samples, decoded.shape),
            (round, client, samples, shape)
        );
        prop_assert_eq!(decoded.loss.map(f32::to_bits), loss.map(f32::to_bits));
        prop_assert_eq!(decoded.accuracy.map(f32::to_bits), accuracy.map(f32::to_bits));
        prop_assert_eq!(bits(decoded.prompt), bits(&prompt));
        prop_assert_eq!(encode_update(&decoded), bytes);
    }

    /// Any single corrupted byte past the first 12 (magic, version, kind, total length) is a
    /// checksum mismatch, whatever the message.
    #[test]
    fn corrupted_byte_after_the_fixed_fields_is_a_checksum_mismatch(
        (shape, prompt) in shape_and_prompt(),
        position in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let update = ClientUpdate {
            round: 1, client: 2, samples: 3, shape, prompt: &prompt, loss: None, accuracy: None,
        };
        let mut bytes = encode_update(&update);
        let offset = 12 + position.index(bytes.len() - 12);
        bytes[offset] ^= mask;
        let error = decode_update_error(&bytes, shape);
        prop_assert!(matches!(error, DecodeError::ChecksumMismatch { .. }), "{:?}", error);
    }

    /// Decoding arbitrary bytes either fails or yields a message that encodes back to exactly
    /// those bytes: the format has one encoding per message, and the decoder accepts nothing else.
    #[test]
    fn arbitrary_bytes_decode_only_to_their_own_encoding(
        mut bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..120),
            prop::collection::vec(any::<u8>(), 44), // a 2×2 global prompt's size
            prop::collection::vec(any::<u8>(), 60), // a 2×2 client update's size
        ],
        header in prop::sample::select(vec![None, Some(1u8), Some(2u8)]),
        shaped in any::<bool>(),
    ) {
        // Give two thirds of the cases a plausible header (and some the expected shape), sealed,
        // so that the checks after the checksum are reached too.
        if let (Some(kind), true) = (header, bytes.len() >= 28) {
            let len = bytes.len() as u32;
            let flags = bytes[7] & 3;
            bytes[..8].copy_from_slice(&[b'F', b'O', b'T', b'P', 1, 0, kind, flags]);
            put_u32(&mut bytes, TOTAL_LEN, len);
            if shaped {
                put_u32(&mut bytes, N_CTX, 2);
                put_u32(&mut bytes, N_CTX + 4, 2);
            }
            reseal(&mut bytes);
        }
        let shape = shape(2, 2);
        let mut out = [0.0; 4];
        match ClientUpdate::decode(&bytes, shape, &mut out) {
            Ok(update) => prop_assert_eq!(encode_update(&update), bytes.clone()),
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
        match GlobalPrompt::decode(&bytes, shape, &mut out) {
            Ok(message) => prop_assert_eq!(encode_global(&message), bytes),
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every defect, its own error.

#[test]
fn every_single_byte_corruption_gets_the_error_of_its_field() {
    for kind in [MessageKind::GlobalPrompt, MessageKind::ClientUpdate] {
        let original = example_bytes(kind);
        let len = original.len();
        let header_and_checksum = len - 4 * PROMPT.len();
        for offset in 0..len {
            for mask in 1..=255u8 {
                let mut bytes = original.clone();
                bytes[offset] ^= mask;
                let error = decode_error(kind, &bytes, shape(2, 2));
                let declared = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
                let expected = match offset {
                    0..=3 => DecodeError::BadMagic {
                        found: bytes[..4].try_into().unwrap(),
                    },
                    4..=5 => DecodeError::UnsupportedVersion {
                        found: u16::from_le_bytes([bytes[4], bytes[5]]),
                    },
                    6 => match bytes[6] {
                        1 | 2 => DecodeError::WrongKind {
                            expected: kind,
                            found: if bytes[6] == 1 {
                                MessageKind::GlobalPrompt
                            } else {
                                MessageKind::ClientUpdate
                            },
                        },
                        found => DecodeError::UnknownKind { found },
                    },
                    8..=11 if (declared as usize) < header_and_checksum => {
                        DecodeError::LengthMismatch {
                            declared,
                            expected: len as u64,
                        }
                    }
                    8..=11 if declared as usize > len => DecodeError::Truncated {
                        needed: declared as usize,
                        found: len,
                    },
                    8..=11 => DecodeError::TrailingBytes {
                        declared,
                        found: len,
                    },
                    _ => {
                        assert!(
                            matches!(error, DecodeError::ChecksumMismatch { .. }),
                            "{kind} offset {offset} mask {mask:#x}: {error:?}"
                        );
                        continue;
                    }
                };
                assert_eq!(error, expected, "{kind} offset {offset} mask {mask:#x}");
            }
        }
    }
}

#[test]
fn checksum_mismatch_reports_both_checksums() {
    let mut bytes = encode_update(&example_update());
    let n = bytes.len() - 4;
    let computed = reference_crc32(&bytes[..n]);
    bytes[n] ^= 0x10;
    let stored = u32::from_le_bytes(bytes[n..].try_into().unwrap());
    assert_eq!(
        decode_update_error(&bytes, shape(2, 2)),
        DecodeError::ChecksumMismatch { stored, computed }
    );
}

#[test]
fn every_truncation_is_reported_as_truncated() {
    for kind in [MessageKind::GlobalPrompt, MessageKind::ClientUpdate] {
        let bytes = example_bytes(kind);
        for cut in 0..bytes.len() {
            let needed = if cut < 24 { 24 } else { bytes.len() };
            assert_eq!(
                decode_error(kind, &bytes[..cut], shape(2, 2)),
                DecodeError::Truncated { needed, found: cut },
                "{kind} cut at {cut}"
            );
        }
    }
}

#[test]
fn bytes_after_the_message_are_refused() {
    let mut bytes = encode_update(&example_update());
    bytes.push(0);
    assert_eq!(
        decode_update_error(&bytes, shape(2, 2)),
        DecodeError::TrailingBytes {
            declared: 60,
            found: 61
        }
    );
}

#[test]
fn a_message_of_the_other_kind_is_refused() {
    assert_eq!(
        decode_update_error(&encode_global(&example_global()), shape(2, 2)),
        DecodeError::WrongKind {
            expected: MessageKind::ClientUpdate,
            found: MessageKind::GlobalPrompt
        }
    );
    assert_eq!(
        decode_global_error(&encode_update(&example_update()), shape(2, 2)),
        DecodeError::WrongKind {
            expected: MessageKind::GlobalPrompt,
            found: MessageKind::ClientUpdate
        }
    );
}

#[test]
fn a_newer_version_is_refused_even_with_a_valid_checksum() {
    let mut bytes = encode_update(&example_update());
    bytes[4] = 2;
    reseal(&mut bytes);
    assert_eq!(
        decode_update_error(&bytes, shape(2, 2)),
        DecodeError::UnsupportedVersion { found: 2 }
    );
}

#[test]
fn a_length_that_disagrees_with_the_shape_is_refused() {
    // The sender wrote n_ctx = 3 but a 2×2 payload, and sealed it: the lengths disagree.
    let mut bytes = encode_update(&example_update());
    put_u32(&mut bytes, N_CTX, 3);
    reseal(&mut bytes);
    assert_eq!(
        decode_update_error(&bytes, shape(2, 2)),
        DecodeError::LengthMismatch {
            declared: 60,
            expected: 60 + 4 * 2 // one more row of 2 floats
        }
    );
    // An absurd shape saturates rather than overflowing.
    put_u32(&mut bytes, N_CTX, u32::MAX);
    put_u32(&mut bytes, N_CTX + 4, u32::MAX);
    reseal(&mut bytes);
    assert_eq!(
        decode_update_error(&bytes, shape(2, 2)),
        DecodeError::LengthMismatch {
            declared: 60,
            expected: u64::MAX
        }
    );
}

#[test]
fn a_message_of_another_shape_is_refused() {
    let bytes = encode_update(&example_update());
    assert_eq!(
        decode_update_error(&bytes, shape(1, 4)),
        DecodeError::ShapeMismatch {
            expected: shape(1, 4),
            found_n_ctx: 2,
            found_width: 2
        }
    );
    let bytes = encode_global(&example_global());
    assert_eq!(
        decode_global_error(&bytes, shape(4, 1)),
        DecodeError::ShapeMismatch {
            expected: shape(4, 1),
            found_n_ctx: 2,
            found_width: 2
        }
    );
}

#[test]
fn reserved_bits_and_absent_metrics_must_be_zero() {
    let mut bytes = encode_update(&example_update());
    bytes[FLAGS] |= 0x04;
    reseal(&mut bytes);
    assert_eq!(
        decode_update_error(&bytes, shape(2, 2)),
        DecodeError::ReservedNotZero { offset: FLAGS }
    );

    let mut bytes = encode_global(&example_global());
    bytes[FLAGS] = 0x01; // a global prompt has no metrics to flag
    reseal(&mut bytes);
    assert_eq!(
        decode_global_error(&bytes, shape(2, 2)),
        DecodeError::ReservedNotZero { offset: FLAGS }
    );

    for (flag, offset) in [(0x01, LOSS), (0x02, ACCURACY)] {
        let mut bytes = encode_update(&example_update());
        bytes[FLAGS] &= !flag; // says absent, but the field still holds the value
        reseal(&mut bytes);
        assert_eq!(
            decode_update_error(&bytes, shape(2, 2)),
            DecodeError::ReservedNotZero { offset }
        );
    }
}

#[test]
fn non_finite_values_are_refused_with_their_offset() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for index in 0..PROMPT.len() {
            let mut bytes = encode_update(&example_update());
            let offset = CLIENT_PAYLOAD + 4 * index;
            bytes[offset..offset + 4].copy_from_slice(&bad.to_le_bytes());
            reseal(&mut bytes);
            assert_eq!(
                decode_update_error(&bytes, shape(2, 2)),
                DecodeError::NonFinite {
                    field: Field::Prompt { index },
                    offset
                }
            );

            let mut bytes = encode_global(&example_global());
            let offset = GLOBAL_PAYLOAD + 4 * index;
            bytes[offset..offset + 4].copy_from_slice(&bad.to_le_bytes());
            reseal(&mut bytes);
            assert_eq!(
                decode_global_error(&bytes, shape(2, 2)),
                DecodeError::NonFinite {
                    field: Field::Prompt { index },
                    offset
                }
            );
        }
        for (field, offset) in [(Field::Loss, LOSS), (Field::Accuracy, ACCURACY)] {
            let mut bytes = encode_update(&example_update());
            put_u32(&mut bytes, offset, bad.to_bits());
            reseal(&mut bytes);
            assert_eq!(
                decode_update_error(&bytes, shape(2, 2)),
                DecodeError::NonFinite { field, offset }
            );
        }
    }
}

#[test]
fn an_accuracy_outside_zero_one_is_refused() {
    for found in [1.5f32, -0.25, 75.0] {
        let mut bytes = encode_update(&example_update());
        put_u32(&mut bytes, ACCURACY, found.to_bits());
        reseal(&mut bytes);
        assert_eq!(
            decode_update_error(&bytes, shape(2, 2)),
            DecodeError::AccuracyOutOfRange { found }
        );
    }
}

#[test]
fn a_prompt_buffer_of_the_wrong_length_is_refused() {
    let bytes = encode_update(&example_update());
    let mut out = [0.0; 5];
    assert_eq!(
        ClientUpdate::decode(&bytes, shape(2, 2), &mut out),
        Err(DecodeError::OutputLength {
            expected: 4,
            found: 5
        })
    );
    assert_eq!(out, [0.0; 5]);
}

// ---------------------------------------------------------------------------------------------
// The encoder refuses what the decoder would refuse, and writes nothing then.

fn encode_update_error(update: &ClientUpdate<'_>, buffer_len: usize) -> EncodeError {
    let mut out = vec![0xAA; buffer_len];
    let error = update.encode(&mut out).unwrap_err();
    assert!(out.iter().all(|&b| b == 0xAA), "{error:?} wrote the output");
    error
}

#[test]
fn encoder_refuses_invalid_updates_and_small_buffers() {
    let len = ClientUpdate::encoded_len(shape(2, 2));
    let valid = example_update();

    let short = [1.0, 2.0, 3.0];
    assert_eq!(
        encode_update_error(
            &ClientUpdate {
                prompt: &short,
                ..valid
            },
            len
        ),
        EncodeError::PromptLength {
            expected: 4,
            found: 3
        }
    );
    let nan_at_2 = [1.0, 2.0, f32::NAN, 4.0];
    assert_eq!(
        encode_update_error(
            &ClientUpdate {
                prompt: &nan_at_2,
                ..valid
            },
            len
        ),
        EncodeError::NonFinite {
            field: Field::Prompt { index: 2 }
        }
    );
    assert_eq!(
        encode_update_error(
            &ClientUpdate {
                loss: Some(f32::INFINITY),
                ..valid
            },
            len
        ),
        EncodeError::NonFinite { field: Field::Loss }
    );
    assert_eq!(
        encode_update_error(
            &ClientUpdate {
                accuracy: Some(f32::NAN),
                ..valid
            },
            len
        ),
        EncodeError::NonFinite {
            field: Field::Accuracy
        }
    );
    assert_eq!(
        encode_update_error(
            &ClientUpdate {
                accuracy: Some(93.5),
                ..valid
            },
            len
        ),
        EncodeError::AccuracyOutOfRange { found: 93.5 }
    );
    assert_eq!(
        encode_update_error(&valid, len - 1),
        EncodeError::BufferTooSmall {
            needed: len,
            found: len - 1
        }
    );

    let mut out = vec![0xAA; 10];
    assert_eq!(
        example_global().encode(&mut out),
        Err(EncodeError::BufferTooSmall {
            needed: 44,
            found: 10
        })
    );
    assert!(out.iter().all(|&b| b == 0xAA));
}

#[test]
fn encoder_writes_only_the_message_into_a_larger_buffer() {
    let mut out = vec![0xAA; 100];
    let n = example_update().encode(&mut out).unwrap();
    assert_eq!(&out[..n], encode_update(&example_update()).as_slice());
    assert!(out[n..].iter().all(|&b| b == 0xAA));
}

// ---------------------------------------------------------------------------------------------
// Messages people read.

#[test]
fn errors_say_what_is_wrong_with_the_numbers() {
    let cases: [(DecodeError, &str); 6] = [
        (
            DecodeError::Truncated {
                needed: 60,
                found: 17,
            },
            "17 bytes given, at least 60 needed",
        ),
        (
            DecodeError::BadMagic { found: *b"GIF8" },
            "bad magic 47 49 46 38",
        ),
        (
            DecodeError::ChecksumMismatch {
                stored: 0xdeadbeef,
                computed: 0x12345678,
            },
            "message says 0xdeadbeef, its bytes give 0x12345678",
        ),
        (
            DecodeError::ShapeMismatch {
                expected: shape(4, 512),
                found_n_ctx: 16,
                found_width: 512,
            },
            "prompt shape 16×512 (n_ctx×width, offsets 16 and 20) but 4×512 expected",
        ),
        (
            DecodeError::NonFinite {
                field: Field::Prompt { index: 5 },
                offset: 60,
            },
            "prompt element 5 at byte offset 60 is not finite",
        ),
        (
            DecodeError::LengthMismatch {
                declared: 60,
                expected: 76,
            },
            "declared total length 60 (offset 8) disagrees with the 76 bytes",
        ),
    ];
    for (error, text) in cases {
        let shown = error.to_string();
        assert!(shown.contains(text), "{shown:?} lacks {text:?}");
    }
    assert_eq!(
        EncodeError::BufferTooSmall {
            needed: 60,
            found: 10
        }
        .to_string(),
        "output buffer holds 10 bytes but the message needs 60"
    );
}
