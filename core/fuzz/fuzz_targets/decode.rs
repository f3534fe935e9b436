//! Fuzzes the wire decoder: any byte string must decode to a typed error or to a message that
//! re-encodes to exactly those bytes and that the aggregator averages back to itself.
//!
//! The first input byte picks a mode. In "sealed" mode the harness rewrites the checksum the
//! input declares before decoding, so that mutations also reach the checks the CRC guards.
//!
//! Run: `cargo +nightly fuzz run decode` from `core/` (or `RUSTC_BOOTSTRAP=1 cargo fuzz run decode`).
#![no_main]

use crc::{Crc, CRC_32_ISO_HDLC};
use fedotp_core::protocol::{AggregateError, Aggregator, ClientUpdate, GlobalPrompt, PromptShape};
use libfuzzer_sys::fuzz_target;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Largest shape the harness accepts from a header, to keep executions fast.
const MAX_FUZZ_LEN: usize = 4096;

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

/// Writes the CRC-32 of the message the header's total length delimits, when it fits `bytes`.
fn reseal(bytes: &mut [u8]) {
    let Some(declared) = u32_at(bytes, 8).map(|d| d as usize) else {
        return;
    };
    if (4..=bytes.len()).contains(&declared) {
        let crc = CRC32.checksum(&bytes[..declared - 4]);
        bytes[declared - 4..declared].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The shape the header claims, so that valid messages of every shape are decoded; 2×2 otherwise.
fn expected_shape(bytes: &[u8]) -> PromptShape {
    let fallback = PromptShape::new(2, 2).unwrap();
    match (u32_at(bytes, 16), u32_at(bytes, 20)) {
        (Some(n_ctx), Some(width)) => PromptShape::new(n_ctx, width)
            .filter(|shape| shape.len() <= MAX_FUZZ_LEN)
            .unwrap_or(fallback),
        _ => fallback,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        reseal(&mut bytes);
    }
    let shape = expected_shape(&bytes);
    let mut prompt = vec![0.0f32; shape.len()];

    match ClientUpdate::decode(&bytes, shape, &mut prompt) {
        Ok(update) => {
            let mut encoded = vec![0u8; ClientUpdate::encoded_len(shape)];
            assert_eq!(update.encode(&mut encoded), Ok(bytes.len()));
            assert_eq!(encoded, bytes, "decoded update re-encodes differently");

            // One client's average is its own prompt.
            let mut server =
                Aggregator::new(shape, update.round, vec![0.0; shape.len()], vec![0; 1]).unwrap();
            let mut average = vec![0.0f32; shape.len()];
            if update.samples == 0 {
                let refused = AggregateError::ZeroWeight {
                    client: update.client,
                };
                assert_eq!(server.add(&update), Err(refused));
            } else {
                server.add(&update).unwrap();
                server.finish(&mut average).unwrap();
                assert_eq!(average.as_slice(), update.prompt);
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }

    match GlobalPrompt::decode(&bytes, shape, &mut prompt) {
        Ok(message) => {
            let mut encoded = vec![0u8; GlobalPrompt::encoded_len(shape)];
            assert_eq!(message.encode(&mut encoded), Ok(bytes.len()));
            assert_eq!(
                encoded, bytes,
                "decoded global prompt re-encodes differently"
            );
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
