//! Micro-benchmarks of the engine's hot pure code: key hashing, ring lookup
//! (preference lists), record encode/decode, Merkle hashing (building a tree,
//! as anti-entropy does per exchange, and comparing two).
//! Run: `cargo bench -p ringkv-bench --bench engine`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringkv_actors::layout::{Layout, Member};
use ringkv_actors::merkle::{diff_leaves, MerkleTree, DEFAULT_DEPTH};
use ringkv_actors::record::Record;
use ringkv_actors::token::key_token;
use ringkv_actors::version::Version;
use std::hint::black_box;

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("bench-{i}").into_bytes()).collect()
}

fn hashing(c: &mut Criterion) {
    let keys = keys(1024);
    let mut g = c.benchmark_group("key_token");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("1024 short keys", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for k in &keys {
                acc ^= key_token(black_box(k));
            }
            acc
        })
    });
    g.finish();
    let long = vec![b'k'; 1024];
    c.bench_function("key_token/1 KiB key", |b| {
        b.iter(|| key_token(black_box(&long)))
    });
}

fn ring_lookup(c: &mut Criterion) {
    let nodes = || ["n1", "n2", "n3"].map(Member::new);
    let ring = Layout::initial(nodes(), 3, 8);
    let keys = keys(1024);
    let mut g = c.benchmark_group("layout");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("preference_list(n=3) x1024, 3 nodes, 256 partitions", |b| {
        b.iter(|| {
            let mut total = 0usize;
            for k in &keys {
                total += ring.preference_list(black_box(k), 3).len();
            }
            total
        })
    });
    g.finish();
    c.bench_function("layout/initial 3 nodes, 256 partitions", |b| {
        b.iter(|| Layout::initial(black_box(nodes()), 3, 8))
    });
    let five = ["n1", "n2", "n3", "n4", "n5"].map(Member::new);
    c.bench_function("layout/next 5 -> 6 nodes, 4096 partitions", |b| {
        let from = Layout::initial(five.clone(), 3, 12);
        let six: Vec<Member> = five.iter().cloned().chain([Member::new("n6")]).collect();
        b.iter(|| from.next(black_box(six.clone())))
    });
}

fn record_codec(c: &mut Criterion) {
    let value = Bytes::from(vec![0x5a; 1024]);
    let record = Record::value(Version::new(0x0001_8c3a_0000_0005, 7), value);
    let encoded = record.encode();
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Bytes(encoded.len() as u64));
    g.bench_function("encode 1 KiB value", |b| {
        b.iter(|| black_box(&record).encode())
    });
    g.bench_function("decode 1 KiB value", |b| {
        b.iter(|| Record::decode(black_box(&encoded)).expect("valid record"))
    });
    g.bench_function("encode+decode 1 KiB value", |b| {
        b.iter_batched(
            || record.clone(),
            |r| Record::decode(&r.encode()).expect("valid record"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn merkle(c: &mut Criterion) {
    let entries: Vec<(u64, Vec<u8>, Version)> = keys(10_000)
        .into_iter()
        .enumerate()
        .map(|(i, k)| (key_token(&k), k, Version::new(i as u64 + 1, 7)))
        .collect();
    let mut g = c.benchmark_group("merkle");
    g.throughput(Throughput::Elements(entries.len() as u64));
    g.bench_function("build depth-10 tree over 10k entries", |b| {
        b.iter(|| {
            let mut t = MerkleTree::new(DEFAULT_DEPTH);
            for (token, key, v) in &entries {
                t.insert(*token, black_box(key), *v);
            }
            t.root()
        })
    });
    g.finish();
    let mut a = MerkleTree::new(DEFAULT_DEPTH);
    for (token, key, v) in &entries {
        a.insert(*token, key, *v);
    }
    let mut b_tree = a.clone();
    for (token, key, v) in entries.iter().step_by(100) {
        b_tree.replace(*token, key, *v, Version::new(v.ts + 1_000_000, 7));
    }
    c.bench_function(
        "merkle/diff depth-10 trees, 1% of 10k entries differ",
        |b| b.iter(|| diff_leaves(black_box(&a), black_box(&b_tree)).len()),
    );
}

criterion_group!(benches, hashing, ring_lookup, record_codec, merkle);
criterion_main!(benches);
