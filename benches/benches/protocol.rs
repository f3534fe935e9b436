//! The prompt-aggregation protocol: one round's server step at the scale (100 client
//! updates of a 2,048-float prompt, 4 × 512) and the codec of one such prompt.
//!
//! The arithmetic floor, for comparison: aggregation reads 100 × 8 KiB of prompts and does one
//! multiply-add per float (204,800 in f64); encode and decode move 8 KiB and run CRC-32 over it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fedotp_core::protocol::{Aggregator, ClientUpdate, GlobalPrompt, PromptShape};

const CLIENTS: usize = 100;

fn shape() -> PromptShape {
    PromptShape::new(4, 512).unwrap()
}

/// Deterministic prompt values of CLIP's context-vector scale (std ≈ 0.02), distinct per client.
fn client_prompt(client: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let phase = (client * 7919 + i * 104_729) % 10_007;
            (phase as f32 / 10_007.0 - 0.5) * 0.07
        })
        .collect()
}

fn update<'p>(client: usize, prompt: &'p [f32]) -> ClientUpdate<'p> {
    ClientUpdate {
        round: 0,
        client: client as u32,
        samples: 50 + client as u32, // unequal weights, as after a Dirichlet split
        shape: shape(),
        prompt,
        loss: Some(1.5),
        accuracy: Some(0.5),
    }
}

fn aggregation(c: &mut Criterion) {
    let shape = shape();
    let prompts: Vec<Vec<f32>> = (0..CLIENTS)
        .map(|i| client_prompt(i, shape.len()))
        .collect();
    let mut weighted_sum = vec![0.0f64; shape.len()];
    let mut seen = vec![0u32; CLIENTS];
    let mut global = vec![0.0f32; shape.len()];

    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Elements((CLIENTS * shape.len()) as u64));
    group.bench_function("aggregate 100 updates of 2048 floats", |b| {
        b.iter(|| {
            let mut server = Aggregator::new(shape, 0, &mut weighted_sum[..], &mut seen[..])
                .expect("accumulator fits the shape");
            for (client, prompt) in prompts.iter().enumerate() {
                server
                    .add(black_box(&update(client, prompt)))
                    .expect("valid update");
            }
            server.finish(&mut global).expect("updates were added");
            black_box(&global);
        })
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let shape = shape();
    let prompt = client_prompt(0, shape.len());
    let client_update = update(0, &prompt);
    let global = GlobalPrompt {
        round: 0,
        shape,
        prompt: &prompt,
    };
    let mut update_bytes = vec![0u8; ClientUpdate::encoded_len(shape)];
    let mut global_bytes = vec![0u8; GlobalPrompt::encoded_len(shape)];
    client_update
        .encode(&mut update_bytes)
        .expect("valid update");
    global.encode(&mut global_bytes).expect("valid prompt");
    let mut received = vec![0.0f32; shape.len()];

    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Bytes(update_bytes.len() as u64));
    group.bench_function("encode client update of 2048 floats", |b| {
        b.iter(|| {
            black_box(&client_update)
                .encode(&mut update_bytes)
                .expect("fits")
        })
    });
    group.bench_function("decode client update of 2048 floats", |b| {
        b.iter(|| {
            let decoded = ClientUpdate::decode(black_box(&update_bytes), shape, &mut received)
                .expect("valid message");
            black_box(decoded.samples);
        })
    });
    group.throughput(Throughput::Bytes(global_bytes.len() as u64));
    group.bench_function("encode global prompt of 2048 floats", |b| {
        b.iter(|| black_box(&global).encode(&mut global_bytes).expect("fits"))
    });
    group.bench_function("decode global prompt of 2048 floats", |b| {
        b.iter(|| {
            let decoded = GlobalPrompt::decode(black_box(&global_bytes), shape, &mut received)
                .expect("valid message");
            black_box(decoded.round);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // No plots: criterion's plotters backend needs system fonts, which CI machines lack.
    config = Criterion::default().without_plots();
    targets = aggregation, codec
}
criterion_main!(benches);
