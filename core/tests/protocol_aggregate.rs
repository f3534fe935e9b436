//! The aggregation rule: weighted FedAvg against hand-computed and float64 references, each
//! refusal with its own error and no effect, and decoded updates feeding the aggregator.

use fedotp_core::protocol::{AggregateError, Aggregator, ClientUpdate, PromptShape};
use proptest::prelude::*;

type VecAggregator = Aggregator<Vec<f64>, Vec<u32>>;

fn shape(n_ctx: u32, width: u32) -> PromptShape {
    PromptShape::new(n_ctx, width).unwrap()
}

fn aggregator(shape: PromptShape, round: u32, capacity: usize) -> VecAggregator {
    Aggregator::new(shape, round, vec![0.0; shape.len()], vec![0; capacity]).unwrap()
}

fn update(round: u32, client: u32, samples: u32, prompt: &[f32]) -> ClientUpdate<'_> {
    let width = prompt.len() as u32;
    ClientUpdate {
        round,
        client,
        samples,
        shape: shape(1, width),
        prompt,
        loss: None,
        accuracy: None,
    }
}

fn finished(aggregator: &VecAggregator) -> Vec<f32> {
    let mut out = vec![0.0; aggregator.shape().len()];
    aggregator.finish(&mut out).unwrap();
    out
}

#[test]
fn weighted_average_of_a_hand_computed_round() {
    let mut server = aggregator(shape(1, 3), 5, 8);
    server.add(&update(5, 10, 1, &[1.0, 2.0, -4.0])).unwrap();
    server.add(&update(5, 11, 3, &[5.0, 6.0, 8.0])).unwrap();
    // (1·1 + 3·5) / 4 = 4, (1·2 + 3·6) / 4 = 5, (1·(-4) + 3·8) / 4 = 5
    assert_eq!(finished(&server), [4.0, 5.0, 5.0]);

    server.add(&update(5, 3, 4, &[-2.0, 0.5, 1.0])).unwrap();
    // (16 - 8) / 8 = 1, (20 + 2) / 8 = 2.75, (20 + 4) / 8 = 3
    assert_eq!(finished(&server), [1.0, 2.75, 3.0]);
    assert_eq!(server.total_samples(), 8);
    assert_eq!(server.clients(), [3, 10, 11]);
}

#[test]
fn unequal_weights_are_not_a_plain_mean() {
    // One client with 9 times the data pulls the average 9 times as hard.
    let mut server = aggregator(shape(1, 1), 0, 4);
    server.add(&update(0, 1, 900, &[1.0])).unwrap();
    server.add(&update(0, 2, 100, &[0.0])).unwrap();
    assert_eq!(finished(&server), [0.9]);
}

#[test]
fn f64_accumulation_keeps_what_f32_would_lose() {
    // 2^24 + 1 is not an f32: a running f32 sum of [2^24, 1, 1, 2] is 2^24 + 2 (each +1 is
    // rounded away) and its mean 4194304.5. The f64 accumulator keeps the ones.
    let mut server = aggregator(shape(1, 1), 0, 4);
    server.add(&update(0, 1, 1, &[16_777_216.0])).unwrap();
    server.add(&update(0, 2, 1, &[1.0])).unwrap();
    server.add(&update(0, 3, 1, &[1.0])).unwrap();
    server.add(&update(0, 4, 1, &[2.0])).unwrap();
    assert_eq!(finished(&server), [4_194_305.0]); // (2^24 + 4) / 4, exact
}

fn finite_value() -> impl Strategy<Value = f32> {
    -1.0e3f32..1.0e3
}

/// A round's worth of updates: distinct client ids, unequal weights, one 3×5 prompt each.
fn round_of_updates() -> impl Strategy<Value = Vec<(u32, u32, Vec<f32>)>> {
    prop::collection::btree_map(
        any::<u32>(),
        (1u32..100_000, prop::collection::vec(finite_value(), 15)),
        1..20,
    )
    .prop_map(|clients| {
        clients
            .into_iter()
            .map(|(client, (samples, prompt))| (client, samples, prompt))
            .collect()
    })
}

/// The float64 reference: `Σ (n_i / N) · p_i`, normalising the weights first (the released code's
/// form, docs/ALGORITHM.md §7.8), unlike the aggregator, which divides the weighted sum at the end.
fn reference(updates: &[(u32, u32, Vec<f32>)]) -> Vec<f64> {
    let total: f64 = updates.iter().map(|(_, n, _)| f64::from(*n)).sum();
    let mut mean = vec![0.0; 15];
    for (_, n, prompt) in updates {
        for (m, &p) in mean.iter_mut().zip(prompt) {
            *m += f64::from(*n) / total * f64::from(p);
        }
    }
    mean
}

fn add_all(server: &mut VecAggregator, round: u32, updates: &[(u32, u32, Vec<f32>)]) {
    for (client, samples, prompt) in updates {
        let update = ClientUpdate {
            round,
            client: *client,
            samples: *samples,
            shape: shape(3, 5),
            prompt,
            loss: None,
            accuracy: None,
        };
        server.add(&update).unwrap();
    }
}

proptest! {
    #[test]
    fn matches_the_float64_reference(updates in round_of_updates()) {
        let mut server = aggregator(shape(3, 5), 2, 32);
        add_all(&mut server, 2, &updates);
        for (got, want) in finished(&server).iter().zip(reference(&updates)) {
            // The f64 results agree to ~1e-13; what remains is the final rounding to f32.
            let tolerance = f64::from(f32::EPSILON) * want.abs().max(1e-30);
            prop_assert!((f64::from(*got) - want).abs() <= tolerance, "{} vs {}", got, want);
        }
        prop_assert_eq!(server.clients().len(), updates.len());
        let total: u64 = updates.iter().map(|(_, n, _)| u64::from(*n)).sum();
        prop_assert_eq!(server.total_samples(), total);
    }

    #[test]
    fn arrival_order_does_not_matter(updates in round_of_updates(), seed in any::<u64>()) {
        let mut shuffled = updates.clone();
        // A deterministic permutation from the seed (Fisher–Yates with a xorshift stream).
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut in_order = aggregator(shape(3, 5), 0, 32);
        let mut reordered = aggregator(shape(3, 5), 0, 32);
        add_all(&mut in_order, 0, &updates);
        add_all(&mut reordered, 0, &shuffled);
        for (a, b) in finished(&in_order).iter().zip(finished(&reordered)) {
            prop_assert!((a - b).abs() <= f32::EPSILON * a.abs(), "{} vs {}", a, b);
        }
        prop_assert_eq!(in_order.clients(), reordered.clients());
    }
}

/// Tries `bad` on an aggregator that already counted two updates and asserts the refusal is
/// `expected` and left everything — accumulator bits, client list, total — as it was.
fn assert_refused(server: &mut VecAggregator, bad: &ClientUpdate<'_>, expected: AggregateError) {
    let before = server.clone();
    let average_before: Vec<u32> = finished(server).iter().map(|v| v.to_bits()).collect();
    assert_eq!(server.add(bad), Err(expected));
    assert_eq!(*server, before);
    let average_after: Vec<u32> = finished(server).iter().map(|v| v.to_bits()).collect();
    assert_eq!(average_after, average_before);
}

#[test]
fn every_refusal_has_its_error_and_changes_nothing() {
    let mut server = aggregator(shape(1, 3), 4, 3);
    server.add(&update(4, 20, 7, &[0.1, 0.2, 0.3])).unwrap();
    server.add(&update(4, 30, 2, &[-1.0, 1.5, 9.0])).unwrap();

    let good = [1.0, 2.0, 3.0];
    assert_refused(
        &mut server,
        &update(3, 40, 5, &good),
        AggregateError::RoundMismatch {
            expected: 4,
            found: 3,
        },
    );
    assert_refused(
        &mut server,
        &ClientUpdate {
            shape: shape(3, 1),
            ..update(4, 40, 5, &good)
        },
        AggregateError::ShapeMismatch {
            expected: shape(1, 3),
            found: shape(3, 1),
        },
    );
    assert_refused(
        &mut server,
        &ClientUpdate {
            prompt: &good[..2],
            ..update(4, 40, 5, &good)
        },
        AggregateError::PromptLength {
            expected: 3,
            found: 2,
        },
    );
    assert_refused(
        &mut server,
        &update(4, 40, 0, &good),
        AggregateError::ZeroWeight { client: 40 },
    );
    assert_refused(
        &mut server,
        &update(4, 30, 5, &good),
        AggregateError::DuplicateClient { client: 30 },
    );
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_refused(
            &mut server,
            &update(4, 40, 5, &[1.0, 2.0, bad]),
            AggregateError::NonFinite {
                client: 40,
                index: 2,
            },
        );
    }

    server.add(&update(4, 10, 1, &good)).unwrap();
    assert_refused(
        &mut server,
        &update(4, 40, 5, &good),
        AggregateError::ClientListFull { capacity: 3 },
    );
    // A duplicate is still a duplicate when the list is full.
    assert_refused(
        &mut server,
        &update(4, 10, 5, &good),
        AggregateError::DuplicateClient { client: 10 },
    );
    assert_eq!(server.clients(), [10, 20, 30]);
}

#[test]
fn finishing_needs_an_update_and_a_buffer_of_the_right_length() {
    let mut server = aggregator(shape(2, 2), 9, 2);
    let mut out = [7.0f32; 4];
    assert_eq!(
        server.finish(&mut out),
        Err(AggregateError::NoUpdates { round: 9 })
    );
    // A refused update does not count either.
    assert!(server.add(&update(9, 1, 0, &[1.0; 4])).is_err());
    assert_eq!(
        server.finish(&mut out),
        Err(AggregateError::NoUpdates { round: 9 })
    );
    assert_eq!(out, [7.0; 4]);

    let prompt = [1.0; 4];
    server
        .add(&ClientUpdate {
            shape: shape(2, 2),
            ..update(9, 1, 3, &prompt)
        })
        .unwrap();
    let mut short = [7.0f32; 3];
    assert_eq!(
        server.finish(&mut short),
        Err(AggregateError::OutputLength {
            expected: 4,
            found: 3
        })
    );
    assert_eq!(short, [7.0; 3]);
    server.finish(&mut out).unwrap();
    assert_eq!(out, [1.0; 4]);
}

#[test]
fn the_accumulator_must_match_the_shape() {
    assert_eq!(
        Aggregator::new(shape(2, 3), 0, vec![0.0; 5], vec![0u32; 4]).unwrap_err(),
        AggregateError::AccumulatorLength {
            expected: 6,
            found: 5
        }
    );
}

#[test]
fn a_new_round_forgets_the_last_one() {
    let mut server = aggregator(shape(1, 2), 0, 2);
    server.add(&update(0, 1, 10, &[1.0, 1.0])).unwrap();
    server.add(&update(0, 2, 10, &[3.0, 3.0])).unwrap();
    assert_eq!(finished(&server), [2.0, 2.0]);

    server.start_round(1);
    assert_eq!(server.round(), 1);
    assert_eq!(server.clients(), [] as [u32; 0]);
    assert_eq!(server.total_samples(), 0);
    assert_eq!(
        server.add(&update(0, 3, 10, &[5.0, 5.0])),
        Err(AggregateError::RoundMismatch {
            expected: 1,
            found: 0
        })
    );
    // The same clients may report again, and only this round's updates count.
    server.add(&update(1, 2, 1, &[-4.0, 8.0])).unwrap();
    assert_eq!(finished(&server), [-4.0, 8.0]);
    assert_eq!(server, {
        let mut fresh = aggregator(shape(1, 2), 1, 2);
        fresh.add(&update(1, 2, 1, &[-4.0, 8.0])).unwrap();
        fresh
    });
}

#[test]
fn decoded_updates_feed_the_aggregator_like_direct_ones() {
    let shape = shape(2, 3);
    let clients: [(u32, u32, [f32; 6]); 3] = [
        (5, 40, [0.5, -0.25, 1.0, 2.0, 0.0, -3.0]),
        (1, 15, [1.5, 0.75, -1.0, 0.25, 4.0, 1.0]),
        (9, 77, [-0.5, 0.125, 3.0, -2.0, 1.0, 0.5]),
    ];
    let mut direct = aggregator(shape, 6, 8);
    let mut via_wire = aggregator(shape, 6, 8);
    for (client, samples, prompt) in &clients {
        let update = ClientUpdate {
            round: 6,
            client: *client,
            samples: *samples,
            shape,
            prompt,
            loss: Some(1.25),
            accuracy: Some(0.5),
        };
        direct.add(&update).unwrap();

        let mut bytes = [0u8; 40 + 4 * 6 + 4];
        update.encode(&mut bytes).unwrap();
        let mut received = [0.0f32; 6];
        let decoded = ClientUpdate::decode(&bytes, shape, &mut received).unwrap();
        via_wire.add(&decoded).unwrap();
    }
    assert_eq!(via_wire, direct);
    assert_eq!(finished(&via_wire), finished(&direct));
}

#[test]
fn any_slice_owner_is_storage() {
    let prompts = [[1.0f32, 2.0], [4.0, -2.0]];
    let shape = shape(1, 2);
    let mut expected = [0.0f32; 2];
    let mut from_vec = aggregator(shape, 0, 2);

    let (mut sum, mut seen) = ([0.0f64; 2], [0u32; 2]);
    let mut borrowed = Aggregator::new(shape, 0, &mut sum[..], &mut seen[..]).unwrap();
    let mut owned_arrays = Aggregator::new(shape, 0, [0.0f64; 2], [0u32; 2]).unwrap();
    for (client, prompt) in prompts.iter().enumerate() {
        let update = update(0, client as u32, 1 + client as u32, prompt);
        from_vec.add(&update).unwrap();
        borrowed.add(&update).unwrap();
        owned_arrays.add(&update).unwrap();
    }
    from_vec.finish(&mut expected).unwrap();
    // (1·1 + 2·4) / 3 = 3, (1·2 + 2·(-2)) / 3 = -2/3
    assert_eq!(expected, [3.0, (-2.0f64 / 3.0) as f32]);
    let mut out = [0.0f32; 2];
    borrowed.finish(&mut out).unwrap();
    assert_eq!(out, expected);
    owned_arrays.finish(&mut out).unwrap();
    assert_eq!(out, expected);
}

#[test]
fn errors_say_what_is_wrong_with_the_numbers() {
    let cases = [
        (
            AggregateError::RoundMismatch {
                expected: 4,
                found: 3,
            },
            "update from round 3 refused: the aggregator is collecting round 4",
        ),
        (
            AggregateError::ShapeMismatch {
                expected: shape(4, 512),
                found: shape(16, 512),
            },
            "update of prompt shape 16×512 refused: the aggregator averages 4×512",
        ),
        (
            AggregateError::DuplicateClient { client: 17 },
            "update from client 17 refused: the client is already counted this round",
        ),
        (
            AggregateError::NonFinite {
                client: 2,
                index: 511,
            },
            "update from client 2 refused: prompt element 511 is not finite",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}
