//! The store checked against a `BTreeMap` model: random sequences of writes
//! (values and tombstones with random versions), reads and reopens.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        value: Vec<u8>,
        ts: u64,
    },
    Delete {
        key: u8,
        ts: u64,
    },
    Get {
        key: u8,
    },
    Batch(Vec<(u8, Option<Vec<u8>>, u64)>),
    /// Purges the key's tombstone at `ts` (nothing if it holds another).
    Purge {
        key: u8,
        ts: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..12;
    let ts = 1u64..40;
    prop_oneof![
        4 => (key.clone(), proptest::collection::vec(any::<u8>(), 0..64), ts.clone())
            .prop_map(|(key, value, ts)| Op::Put { key, value, ts }),
        2 => (key.clone(), ts.clone()).prop_map(|(key, ts)| Op::Delete { key, ts }),
        3 => key.clone().prop_map(|key| Op::Get { key }),
        1 => proptest::collection::vec(
            (key, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)), ts),
            1..8
        ).prop_map(Op::Batch),
        1 => (0u8..12, 1u64..40).prop_map(|(key, ts)| Op::Purge { key, ts }),
        1 => Just(Op::Reopen),
    ]
}

/// The partition roots of the trees the store keeps, and of trees built
/// from the model's records.
fn roots(s: &Store, model: &BTreeMap<Bytes, Record>) -> (Vec<u64>, Vec<u64>) {
    let bits = crate::layout::DEFAULT_PARTITION_BITS;
    let q = crate::layout::partition::count(bits);
    let live = s.with_trees(|t| (0..q).map(|p| t.root(p)).collect());
    let mut built = PartitionTrees::new(bits, DEFAULT_TREE_DEPTH);
    for (k, r) in model {
        built.insert(k, r.version);
    }
    (live, (0..q).map(|p| built.root(p)).collect())
}

/// The outcomes of a batch that committed, every mutation applied.
fn ok(results: Vec<ItemResult>) -> Vec<WriteOutcome> {
    results.into_iter().map(|r| r.expect("mutation")).collect()
}

fn apply(s: &Store, batch: &[Mutation]) -> Vec<WriteOutcome> {
    ok(s.apply(batch).expect("commit"))
}

fn key_bytes(k: u8) -> Bytes {
    Bytes::from(vec![b'k', k])
}

fn model_apply(model: &mut BTreeMap<Bytes, Record>, op: &WriteOp) -> WriteOutcome {
    match model.get(&op.key) {
        Some(cur) if cur.version >= op.record.version => WriteOutcome::Superseded {
            current: cur.version,
            tombstone: cur.is_tombstone(),
        },
        cur => {
            let replaced_live = cur.is_some_and(|r| !r.is_tombstone());
            model.insert(op.key.clone(), op.record.clone());
            WriteOutcome::Applied { replaced_live }
        }
    }
}

fn write(key: u8, value: Option<Vec<u8>>, ts: u64) -> WriteOp {
    WriteOp {
        key: key_bytes(key),
        record: Record {
            version: Version::new(ts, 1),
            value: value.map(Bytes::from),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn store_matches_btreemap_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Some(Store::open(dir.path(), "n1", false).unwrap());
        let mut model = BTreeMap::new();
        for op in ops {
            let s = store.as_ref().unwrap();
            match op {
                Op::Put { key, value, ts } => {
                    let w = write(key, Some(value), ts);
                    prop_assert_eq!(apply(s, &[Mutation::Put(w.clone())]), vec![model_apply(&mut model, &w)]);
                }
                Op::Delete { key, ts } => {
                    let w = write(key, None, ts);
                    prop_assert_eq!(apply(s, &[Mutation::Put(w.clone())]), vec![model_apply(&mut model, &w)]);
                }
                Op::Batch(items) => {
                    let ws: Vec<_> = items.into_iter().map(|(k, v, ts)| write(k, v, ts)).collect();
                    let expected: Vec<_> = ws.iter().map(|w| model_apply(&mut model, w)).collect();
                    let batch: Vec<_> = ws.into_iter().map(Mutation::Put).collect();
                    prop_assert_eq!(apply(s, &batch), expected);
                }
                Op::Get { key } => {
                    prop_assert_eq!(s.get(&key_bytes(key)).unwrap(), model.get(&key_bytes(key)).cloned());
                }
                Op::Purge { key, ts } => {
                    let k = key_bytes(key);
                    let version = Version::new(ts, 1);
                    apply(s, &[Mutation::Purge { key: k.clone(), version }]);
                    if model.get(&k).is_some_and(|r| r.is_tombstone() && r.version == version) {
                        model.remove(&k);
                    }
                }
                Op::Reopen => {
                    drop(store.take());
                    store = Some(Store::open(dir.path(), "n1", false).unwrap());
                }
            }
            // The partition trees follow every commit exactly (and are
            // rebuilt the same at a reopen).
            let (live, built) = roots(store.as_ref().unwrap(), &model);
            prop_assert_eq!(live, built);
        }
        let s = store.unwrap();
        prop_assert_eq!(s.len().unwrap(), model.len() as u64);
        for (k, r) in &model {
            let stored = s.get(k).unwrap();
            prop_assert_eq!(stored.as_ref(), Some(r));
        }
        // The tombstone index holds exactly the model's tombstones.
        let tombs: Vec<Bytes> = s.tombstones_before(u64::MAX, None, usize::MAX).unwrap().into_iter().map(|(_, k)| k).collect();
        let mut expected: Vec<Bytes> = model.iter().filter(|(_, r)| r.is_tombstone()).map(|(k, _)| k.clone()).collect();
        let mut got = tombs.clone();
        got.sort();
        expected.sort();
        prop_assert_eq!(got, expected);
        // A full-ring scan returns every record once, in token order.
        let all = s.scan(0, u64::MAX, None, usize::MAX).unwrap();
        prop_assert_eq!(all.len(), model.len());
        prop_assert!(all.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}

#[test]
fn durable_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), "n1", true).unwrap();
        apply(&s, &[Mutation::Put(write(1, Some(b"v".to_vec()), 5))]);
    }
    let s = Store::open(dir.path(), "n1", true).unwrap();
    assert_eq!(
        s.get(&key_bytes(1)).unwrap().unwrap().value.unwrap(),
        &b"v"[..]
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = Store::open(dir.path(), "n1", false).unwrap();
    let err = Store::open(dir.path(), "n1", false).err().unwrap();
    assert!(matches!(err, StoreError::AlreadyOpen(_)), "{err}");
    assert!(err.to_string().contains("already in use"));
}

#[test]
fn a_directory_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), "n1", false).unwrap());
    let err = Store::open(dir.path(), "n2", false).err().unwrap();
    assert!(err.to_string().contains("belongs to node 'n1'"), "{err}");
}

#[test]
fn precondition_checks_live_values_only() {
    let v = Version::new(3, 1);
    let live = Record::value(v, Bytes::from_static(b"x"));
    let dead = Record::tombstone(v);
    assert!(Precondition::Absent.holds(None));
    assert!(Precondition::Absent.holds(Some(&dead)));
    assert!(!Precondition::Absent.holds(Some(&live)));
    assert!(Precondition::Present.holds(Some(&live)));
    assert!(!Precondition::Present.holds(Some(&dead)));
    assert!(Precondition::Version(v).holds(Some(&live)));
    assert!(!Precondition::Version(v).holds(Some(&dead)));
    assert!(!Precondition::Version(Version::new(4, 1)).holds(Some(&live)));
}

fn hint(target: &str, key: u8, ts: u64) -> Mutation {
    Mutation::Hint(Hint {
        target: target.into(),
        key: key_bytes(key),
        record: Record::value(Version::new(ts, 1), Bytes::from_static(b"hinted")),
        stored_ms: 1000 + ts,
    })
}

#[test]
fn hints_survive_reopen_in_order_and_delete_by_id() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), "n1", true).unwrap();
        let out = apply(&s, &[hint("n2", 1, 1), hint("n2", 2, 2), hint("n3", 3, 3)]);
        assert_eq!(out[0], WriteOutcome::Hinted { dropped: 0 });
    }
    let s = Store::open(dir.path(), "n1", true).unwrap();
    assert_eq!(s.hint_tallies()["n2"].count, 2);
    let h = s.hints_for("n2", None, 10, usize::MAX).unwrap().hints;
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].1.key, key_bytes(1));
    assert_eq!(h[1].1.record.version, Version::new(2, 1));
    assert_eq!(h[0].1.stored_ms, 1001);
    // Ids assigned after a reopen never collide with the old ones.
    apply(&s, &[hint("n2", 4, 4)]);
    assert_eq!(
        s.hints_for("n2", None, 10, usize::MAX).unwrap().hints.len(),
        3
    );
    let ids = vec![h[0].0.clone(), h[1].0.clone()];
    assert_eq!(
        apply(&s, &[Mutation::DeleteHints(ids.clone())]),
        vec![WriteOutcome::Done { changed: true }]
    );
    assert_eq!(
        apply(&s, &[Mutation::DeleteHints(ids)]),
        vec![WriteOutcome::Done { changed: false }]
    );
    let left = s.hints_for("n2", None, 10, usize::MAX).unwrap().hints;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1.key, key_bytes(4));
    assert_eq!(s.hint_tallies()["n2"].count, 1);
    assert_eq!(
        s.hints_for("n3", None, 10, usize::MAX).unwrap().hints.len(),
        1
    );
}

#[test]
fn hints_beyond_the_bound_drop_the_oldest_not_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let limits = HintLimits {
        max_count: 3,
        max_bytes: u64::MAX,
        evict: true,
    };
    let s = Store::open_with(dir.path(), "n1", with_limits(limits)).unwrap();
    for i in 0..3 {
        assert_eq!(
            apply(&s, &[hint("n2", i, i as u64 + 1)])[0],
            WriteOutcome::Hinted { dropped: 0 }
        );
    }
    assert_eq!(
        apply(&s, &[hint("n2", 9, 10)])[0],
        WriteOutcome::Hinted { dropped: 1 }
    );
    let keys: Vec<_> = s
        .hints_for("n2", None, 10, usize::MAX)
        .unwrap()
        .hints
        .into_iter()
        .map(|(_, h)| h.key)
        .collect();
    assert_eq!(keys, vec![key_bytes(1), key_bytes(2), key_bytes(9)]);
    assert_eq!(s.hint_tallies()["n2"].count, 3);
}

#[test]
fn purge_removes_only_the_unchanged_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", false).unwrap();
    apply(
        &s,
        &[
            Mutation::Put(write(1, None, 5)),
            Mutation::Put(write(2, None, 5)),
        ],
    );
    // Key 2 was written again after the tombstone: its purge must not apply.
    apply(&s, &[Mutation::Put(write(2, Some(b"back".to_vec()), 6))]);
    let out = apply(
        &s,
        &[
            Mutation::Purge {
                key: key_bytes(1),
                version: Version::new(5, 1),
            },
            Mutation::Purge {
                key: key_bytes(2),
                version: Version::new(5, 1),
            },
        ],
    );
    assert_eq!(
        out,
        vec![
            WriteOutcome::Done { changed: true },
            WriteOutcome::Done { changed: false }
        ]
    );
    assert_eq!(s.get(&key_bytes(1)).unwrap(), None);
    assert_eq!(
        s.get(&key_bytes(2)).unwrap().unwrap().value.unwrap(),
        &b"back"[..]
    );
    assert!(s.tombstones_before(u64::MAX, None, 10).unwrap().is_empty());
}

#[test]
fn generation_increases_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let g1 = Store::open(dir.path(), "n1", true)
        .unwrap()
        .bump_generation(1000)
        .unwrap();
    assert_eq!(g1, 1000, "the floor (the wall clock at start) wins");
    let g2 = Store::open(dir.path(), "n1", true)
        .unwrap()
        .bump_generation(5)
        .unwrap();
    assert_eq!(g2, 1001, "never below the previous generation");
}

#[test]
fn scan_honours_token_bounds_and_resume_point() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", false).unwrap();
    let batch: Vec<_> = (0..50)
        .map(|i| Mutation::Put(write(i, Some(vec![i]), 1)))
        .collect();
    apply(&s, &batch);
    let all = s.scan(0, u64::MAX, None, usize::MAX).unwrap();
    let mid = all[25].0;
    let low = s.scan(0, mid, None, usize::MAX).unwrap();
    assert!(low.iter().all(|(t, _, _)| *t <= mid));
    assert_eq!(low.len(), 26);
    let first = s.scan(0, u64::MAX, None, 10).unwrap();
    let resume = data_key(&first[9].1);
    let next = s.scan(0, u64::MAX, Some(&resume), 10).unwrap();
    assert_eq!(next[0].1, all[10].1);
}

fn with_limits(hint_limits: HintLimits) -> StoreOptions {
    StoreOptions {
        hint_limits,
        ..StoreOptions::new(false)
    }
}

/// Regression (05 finding 7): a hint larger than the per-target byte bound
/// used to evict itself right after it was acknowledged.
#[test]
fn a_hint_larger_than_the_bound_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let limits = HintLimits {
        max_count: 100,
        max_bytes: 1000,
        evict: true,
    };
    let s = Store::open_with(dir.path(), "n1", with_limits(limits)).unwrap();
    apply(&s, &[hint("n2", 1, 1)]);
    let big = Mutation::Hint(Hint {
        target: "n2".into(),
        key: key_bytes(2),
        record: Record::value(Version::new(2, 1), Bytes::from(vec![7u8; 5000])),
        stored_ms: 1,
    });
    assert_eq!(apply(&s, &[big])[0], WriteOutcome::Hinted { dropped: 1 });
    let left = s.hints_for("n2", None, 10, usize::MAX).unwrap().hints;
    assert_eq!(left.len(), 1, "the big hint stays, the older one made room");
    assert_eq!(left[0].1.key, key_bytes(2));
}

/// Regression (05 finding 7): one corrupt stored record used to fail the
/// whole group commit it was part of. Review of 16: it then failed every
/// write of its key for good, and anti-entropy re-sent it forever; a write
/// now replaces it, and its partition's tree is rebuilt from the data.
#[test]
fn a_corrupt_record_is_replaced_by_a_write_and_the_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", false).unwrap();
    apply(&s, &[Mutation::Put(write(1, Some(b"a".to_vec()), 1))]);
    s.corrupt_for_test(&key_bytes(1), &[9, 9, 9]);
    assert!(matches!(s.get(&key_bytes(1)), Err(StoreError::Corrupt(_))));
    let out = s
        .apply(&[
            Mutation::Put(write(1, Some(b"b".to_vec()), 2)),
            Mutation::Put(write(2, Some(b"c".to_vec()), 2)),
        ])
        .expect("the batch commits");
    for o in &out {
        assert_eq!(
            *o,
            Ok(WriteOutcome::Applied {
                replaced_live: false
            })
        );
    }
    assert_eq!(
        s.get(&key_bytes(1)).unwrap().unwrap().value.unwrap(),
        &b"b"[..]
    );
    assert_eq!(
        s.get(&key_bytes(2)).unwrap().unwrap().value.unwrap(),
        &b"c"[..]
    );
    assert_eq!(
        s.verify_trees().unwrap(),
        Vec::<u32>::new(),
        "the live trees match the data"
    );
}

#[test]
fn a_hint_target_with_nul_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", false).unwrap();
    let out = s.apply(&[hint("n2\0x", 1, 1), hint("n2", 2, 2)]).unwrap();
    assert!(matches!(out[0], Err(StoreError::Invalid(_))));
    assert!(out[1].is_ok());
    assert_eq!(s.hint_tallies().len(), 1);
}

#[test]
fn tombstones_are_indexed_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", false).unwrap();
    apply(
        &s,
        &[
            Mutation::Put(write(1, None, 30)),
            Mutation::Put(write(2, None, 10)),
            Mutation::Put(write(3, None, 20)),
            Mutation::Put(write(4, Some(b"live".to_vec()), 5)),
        ],
    );
    let keys = |before, after: Option<&[u8]>, limit| -> Vec<Bytes> {
        s.tombstones_before(before, after, limit)
            .unwrap()
            .into_iter()
            .map(|(_, k)| k)
            .collect()
    };
    assert_eq!(keys(25, None, 10), vec![key_bytes(2), key_bytes(3)]);
    assert_eq!(keys(u64::MAX, None, 10).len(), 3);
    let first = s.tombstones_before(u64::MAX, None, 1).unwrap();
    assert_eq!(
        keys(u64::MAX, Some(&first[0].0), 10),
        vec![key_bytes(3), key_bytes(1)]
    );
    // Overwriting a tombstone removes it from the index.
    apply(&s, &[Mutation::Put(write(2, Some(b"x".to_vec()), 11))]);
    assert_eq!(keys(25, None, 10), vec![key_bytes(3)]);
}

/// A data directory written by the previous storage format (tombstones
/// indexed by key) opens, and its tombstones are found by time.
#[test]
fn format_2_directories_are_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx.open_table(META).unwrap();
            meta.insert(META_NODE_ID, b"n1".as_slice()).unwrap();
            meta.insert(META_FORMAT, [2u8].as_slice()).unwrap();
            let mut data = tx.open_table(DATA).unwrap();
            let mut old = tx.open_table(TOMBSTONES_V2).unwrap();
            let dk = data_key(&key_bytes(1));
            let rec = Record::tombstone(Version::new(42, 1));
            data.insert(dk.as_slice(), rec.encode().as_slice()).unwrap();
            old.insert(dk.as_slice(), 42).unwrap();
        }
        tx.commit().unwrap();
    }
    let s = Store::open(dir.path(), "n1", false).unwrap();
    let found = s.tombstones_before(43, None, 10).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1, key_bytes(1));
    drop(s);
    // Opening again is a no-op.
    let s = Store::open(dir.path(), "n1", false).unwrap();
    assert_eq!(s.tombstones_before(43, None, 10).unwrap().len(), 1);
}

#[test]
fn version_scans_are_bounded_in_bytes_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", false).unwrap();
    let batch: Vec<_> = (0..40)
        .map(|i| Mutation::Put(write(i, Some(vec![i; 100]), 1)))
        .collect();
    apply(&s, &batch);
    let page = s.scan_versions(0, u64::MAX, None, 1000, 100).unwrap();
    assert!(page.len() < 40 && !page.is_empty(), "{}", page.len());
    let mut all = page.clone();
    let mut after = page.last().unwrap().0.clone();
    loop {
        let next = s
            .scan_versions(0, u64::MAX, Some(&after), 1000, 100)
            .unwrap();
        let Some(last) = next.last() else { break };
        after = last.0.clone();
        all.extend(next);
    }
    assert_eq!(all.len(), 40);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    // At least one item even when the budget is smaller than one.
    assert_eq!(
        s.scan_versions(0, u64::MAX, None, 1000, 1).unwrap().len(),
        1
    );
}

#[test]
fn repair_pending_is_kept_until_cleared_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", true).unwrap();
    assert!(!s.repair_pending().unwrap());
    let set = |on| Mutation::RepairPending(on);
    assert_eq!(
        apply(&s, &[set(true)]),
        vec![WriteOutcome::Done { changed: true }]
    );
    assert_eq!(
        apply(&s, &[set(true)]),
        vec![WriteOutcome::Done { changed: false }]
    );
    drop(s);
    let s = Store::open(dir.path(), "n1", true).unwrap();
    assert!(s.repair_pending().unwrap());
    assert_eq!(
        apply(&s, &[set(false)]),
        vec![WriteOutcome::Done { changed: true }]
    );
    drop(s);
    let s = Store::open(dir.path(), "n1", true).unwrap();
    assert!(!s.repair_pending().unwrap());
}

#[test]
fn meta_records_liveness_and_only_raises_the_clock_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", false).unwrap();
    let meta = |alive, ceiling| Mutation::Meta {
        alive_ms: alive,
        clock_ceiling_ms: ceiling,
    };
    apply(&s, &[meta(Some(7), Some(100))]);
    apply(&s, &[meta(None, Some(50))]);
    assert_eq!(s.clock_ceiling_ms().unwrap(), Some(100));
    assert_eq!(s.last_alive_ms().unwrap(), Some(7));
    apply(&s, &[meta(Some(9), Some(150))]);
    assert_eq!(s.clock_ceiling_ms().unwrap(), Some(150));
    assert_eq!(s.last_alive_ms().unwrap(), Some(9));
}

#[test]
fn hint_pages_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", false).unwrap();
    let batch: Vec<_> = (0..10).map(|i| hint("n2", i, i as u64 + 1)).collect();
    apply(&s, &batch);
    let one = s.hints_for("n2", None, 100, 1).unwrap().hints;
    assert_eq!(one.len(), 1, "at least one, even over the budget");
    let some = s.hints_for("n2", None, 100, 600).unwrap().hints;
    assert!(some.len() > 1 && some.len() < 10, "{}", some.len());
    assert_eq!(
        s.hints_for("n2", None, 3, usize::MAX).unwrap().hints.len(),
        3
    );
    let rest = s
        .hints_for("n2", Some(&one[0].0), 100, usize::MAX)
        .unwrap()
        .hints;
    assert_eq!(rest.len(), 9, "the cursor skips what was already read");
}

/// A failed fsync is an I/O failure the caller must treat as fatal (the
/// replica actor stops the node), not a full disk.
#[test]
fn a_failed_fsync_is_a_fatal_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let options = StoreOptions {
        faults: faults.clone(),
        ..StoreOptions::new(true)
    };
    let s = Store::open_with(dir.path(), "n1", options).unwrap();
    apply(&s, &[Mutation::Put(write(1, Some(b"a".to_vec()), 1))]);
    faults.apply("fail_fsync = true");
    let err = s
        .apply(&[Mutation::Put(write(2, Some(b"b".to_vec()), 1))])
        .unwrap_err();
    assert!(err.is_fatal(), "{err:?}");
    faults.apply("");
    drop(s);
    // Recovery reads the file again: the committed write is there.
    let s = Store::open(dir.path(), "n1", true).unwrap();
    assert_eq!(
        s.get(&key_bytes(1)).unwrap().unwrap().value.unwrap(),
        &b"a"[..]
    );
}

/// Regression (review of 05): pages were filled by stored size, and the
/// batch they became was larger on the wire than the smallest frame allowed.
#[test]
fn a_page_of_hints_always_fits_in_a_frame() {
    use crate::limits::{batch_budget, BACKGROUND_BATCH_ITEMS, MAX_KEY_BYTES};
    use crate::wire::{encode_frame, Frame, Request, WireRecord};
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", false).unwrap();
    let max_value = 1 << 20;
    // The smallest frame the configuration accepts for this value limit.
    let max_frame = max_value + MAX_KEY_BYTES + crate::limits::FRAME_OVERHEAD;
    for (count, value_len) in [(5000usize, 222usize), (50, 40_000), (3, max_value)] {
        let batch: Vec<_> = (0..count)
            .map(|i| {
                Mutation::Hint(Hint {
                    target: "n2".into(),
                    key: Bytes::from(format!("key-{i}")),
                    record: Record::value(Version::new(1, 1), Bytes::from(vec![1u8; value_len])),
                    stored_ms: 1,
                })
            })
            .collect();
        apply(&s, &batch);
        let mut after: Option<HintId> = None;
        loop {
            let page = s
                .hints_for(
                    "n2",
                    after.as_deref(),
                    BACKGROUND_BATCH_ITEMS,
                    batch_budget(max_frame),
                )
                .unwrap();
            let Some(next) = page.next else { break };
            after = Some(next);
            let items = page
                .hints
                .into_iter()
                .map(|(_, h)| (h.key, WireRecord::from(h.record)))
                .collect();
            let frame = Frame::Request {
                id: u64::MAX,
                body: Request::WriteBatch { items },
            };
            encode_frame(&frame, max_frame).expect("the page fits in a frame");
        }
        let ids: Vec<HintId> = s
            .hints_for("n2", None, usize::MAX, usize::MAX)
            .unwrap()
            .hints
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        apply(&s, &[Mutation::DeleteHints(ids)]);
    }
}

/// Regression (review of 05): one undecodable hint failed the whole page,
/// so nothing else was ever replayed to its target.
#[test]
fn a_corrupt_hint_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", false).unwrap();
    apply(&s, &[hint("n2", 1, 1), hint("n2", 2, 2), hint("n2", 3, 3)]);
    let ids: Vec<HintId> = s
        .hints_for("n2", None, 10, usize::MAX)
        .unwrap()
        .hints
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    {
        let tx = s.db().unwrap().begin_write().unwrap();
        tx.open_table(HINTS)
            .unwrap()
            .insert(ids[1].as_slice(), [1u8, 2].as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let page = s.hints_for("n2", None, 10, usize::MAX).unwrap();
    assert_eq!(page.hints.len(), 2);
    assert_eq!(page.corrupt, vec![ids[1].clone()]);
    assert_eq!(page.next.as_ref(), Some(&ids[2]));
}

/// With sloppy quorum a hint may be an acknowledged write's only extra copy:
/// a full hint store refuses the new hint instead of dropping an old one.
#[test]
fn without_eviction_a_full_hint_store_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let limits = HintLimits {
        max_count: 2,
        max_bytes: u64::MAX,
        evict: false,
    };
    let s = Store::open_with(dir.path(), "n1", with_limits(limits)).unwrap();
    apply(&s, &[hint("n2", 1, 1), hint("n2", 2, 2)]);
    let out = s.apply(&[hint("n2", 3, 3), hint("n3", 4, 4)]).unwrap();
    assert!(matches!(out[0], Err(StoreError::Overloaded(_))), "{out:?}");
    assert!(out[1].is_ok());
    assert_eq!(
        s.hints_for("n2", None, 10, usize::MAX).unwrap().hints.len(),
        2
    );
}

/// The hint floor is the oldest version any stored hint carries, across
/// stores, deletes, evictions and reopens.
#[test]
fn the_hint_floor_follows_the_oldest_hint() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), "n1", false).unwrap();
        assert_eq!(s.hints_floor(), u64::MAX);
        apply(
            &s,
            &[hint("n2", 1, 30), hint("n3", 2, 10), hint("n2", 3, 20)],
        );
        assert_eq!(s.hints_floor(), 10);
    }
    let s = Store::open(dir.path(), "n1", false).unwrap();
    assert_eq!(s.hints_floor(), 10, "rebuilt at open");
    let ids: Vec<HintId> = s
        .hints_for("n3", None, 10, usize::MAX)
        .unwrap()
        .hints
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    apply(&s, &[Mutation::DeleteHints(ids)]);
    assert_eq!(s.hints_floor(), 20);
}

/// Review of the sweep: repair mode is recorded through `apply`, which
/// refused every batch below `min_free_bytes` — a node low on disk could
/// neither start in repair mode nor leave it. Bookkeeping now commits on a
/// full disk; data is still refused.
#[test]
fn bookkeeping_commits_on_a_full_disk_and_data_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        // More than any disk has free: every data write is "disk full".
        min_free_bytes: u64::MAX / 4,
        ..StoreOptions::new(true)
    };
    let s = Store::open_with(dir.path(), "n1", options).unwrap();
    let err = s
        .apply(&[Mutation::Put(write(1, Some(b"a".to_vec()), 1))])
        .unwrap_err();
    assert!(matches!(err, StoreError::DiskFull(_)), "{err:?}");
    apply(&s, &[Mutation::RepairPending(true)]);
    assert!(s.repair_pending().unwrap());
    let alive = Mutation::Meta {
        alive_ms: Some(42),
        clock_ceiling_ms: None,
    };
    apply(&s, &[alive, Mutation::RepairPending(false)]);
    assert!(!s.repair_pending().unwrap());
    assert_eq!(s.last_alive_ms().unwrap(), Some(42));
}

/// Third review of issue 16: a value limit lowered under stored values
/// left their hints undeliverable (each batch refused whole) and with them
/// tombstone GC held back. A data directory now refuses a limit below one
/// it ran with, across a reopen; raising it is fine.
#[test]
fn a_value_limit_below_one_the_directory_ran_with_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), "n1", true).unwrap();
        store.admit_value_limit(1000).unwrap();
        store.admit_value_limit(2000).unwrap();
        store.admit_value_limit(2000).unwrap();
        let e = store.admit_value_limit(1500).unwrap_err().to_string();
        assert!(e.contains("1500") && e.contains("at least 2000"), "{e}");
    }
    let store = Store::open(dir.path(), "n1", true).unwrap();
    assert!(
        store.admit_value_limit(1999).is_err(),
        "kept across a reopen"
    );
    store.admit_value_limit(4000).unwrap();
}
