//! Micro-benchmarks of the pure cores: apply, the ordered buffer, and the
//! snapshot codec on a 1M-key State.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use shoal_bench::{envelopes, kv_state, set_entries};
use shoal_log::{decode_snapshot, encode_snapshot};
use shoal_model::{EventIdx, State};
use shoal_proto::ordered_buffer::{BufferLimits, OrderedBuffer};

fn apply(c: &mut Criterion) {
    let n = 10_000;
    let envs = envelopes(&set_entries(1, n));
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(n));
    g.bench_function("kv_set_10k", |b| {
        b.iter_batched(
            State::new,
            |mut s| {
                for e in &envs {
                    s.apply(e).unwrap();
                }
                s
            },
            BatchSize::LargeInput,
        )
    });
    let entries = set_entries(1, n);
    g.bench_function("decode_and_apply_10k", |b| {
        b.iter_batched(
            State::new,
            |mut s| {
                for e in &entries {
                    s.apply(&e.envelope().unwrap()).unwrap();
                }
                s
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn ordered_buffer(c: &mut Criterion) {
    let n = 10_000u64;
    let mut shuffled = set_entries(1, n);
    shuffled.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(3));
    let mut g = c.benchmark_group("ordered_buffer");
    g.throughput(Throughput::Elements(n));
    g.bench_function("shuffled_10k", |b| {
        b.iter_batched(
            || shuffled.clone(),
            |entries| {
                let mut buf = OrderedBuffer::new(EventIdx(1), BufferLimits::default());
                let mut out = 0;
                for e in entries {
                    buf.insert(e);
                    out += buf.pop_ready().len();
                }
                assert_eq!(out as u64, n);
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let n = 1_000_000;
    let state = kv_state(n);
    let (bytes, sha) = encode_snapshot(&state, 1);
    let mut g = c.benchmark_group("snapshot_1m_keys");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function("build", |b| b.iter(|| kv_state(n)));
    g.bench_function("encode", |b| b.iter(|| encode_snapshot(&state, 1)));
    g.bench_function("decode", |b| {
        b.iter(|| decode_snapshot(&bytes, &sha).unwrap())
    });
    g.finish();
}

criterion_group!(benches, apply, ordered_buffer, snapshot);
criterion_main!(benches);
