//! The store checked against a `BTreeMap` model: random sequences of writes
//! (values and tombstones with random versions), reads and reopens.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Op {
    Put { key: u8, value: Vec<u8>, ts: u64 },
    Delete { key: u8, ts: u64 },
    Get { key: u8 },
    Batch(Vec<(u8, Option<Vec<u8>>, u64)>),
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
        1 => Just(Op::Reopen),
    ]
}

fn key_bytes(k: u8) -> Bytes {
    Bytes::from(vec![b'k', k])
}

fn model_apply(model: &mut BTreeMap<Bytes, Record>, op: &WriteOp) -> WriteOutcome {
    match model.get(&op.key) {
        Some(cur) if cur.version >= op.record.version => WriteOutcome::Superseded {
            current: cur.version,
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
                    prop_assert_eq!(s.apply(&[Mutation::Put(w.clone())]).unwrap(), vec![model_apply(&mut model, &w)]);
                }
                Op::Delete { key, ts } => {
                    let w = write(key, None, ts);
                    prop_assert_eq!(s.apply(&[Mutation::Put(w.clone())]).unwrap(), vec![model_apply(&mut model, &w)]);
                }
                Op::Batch(items) => {
                    let ws: Vec<_> = items.into_iter().map(|(k, v, ts)| write(k, v, ts)).collect();
                    let expected: Vec<_> = ws.iter().map(|w| model_apply(&mut model, w)).collect();
                    let batch: Vec<_> = ws.into_iter().map(Mutation::Put).collect();
                    prop_assert_eq!(s.apply(&batch).unwrap(), expected);
                }
                Op::Get { key } => {
                    prop_assert_eq!(s.get(&key_bytes(key)).unwrap(), model.get(&key_bytes(key)).cloned());
                }
                Op::Reopen => {
                    drop(store.take());
                    store = Some(Store::open(dir.path(), "n1", false).unwrap());
                }
            }
        }
        let s = store.unwrap();
        prop_assert_eq!(s.len().unwrap(), model.len() as u64);
        for (k, r) in &model {
            let stored = s.get(k).unwrap();
            prop_assert_eq!(stored.as_ref(), Some(r));
        }
        // The tombstone index holds exactly the model's tombstones.
        let tombs: Vec<Bytes> = s.tombstones(None, usize::MAX).unwrap().into_iter().map(|(_, k, _)| k).collect();
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
        s.apply(&[Mutation::Put(write(1, Some(b"v".to_vec()), 5))])
            .unwrap();
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
        let out = s
            .apply(&[hint("n2", 1, 1), hint("n2", 2, 2), hint("n3", 3, 3)])
            .unwrap();
        assert_eq!(out[0], WriteOutcome::Hinted { dropped: 0 });
    }
    let s = Store::open(dir.path(), "n1", true).unwrap();
    assert_eq!(s.hint_tallies()["n2"].count, 2);
    let h = s.hints_for("n2", 10).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].1.key, key_bytes(1));
    assert_eq!(h[1].1.record.version, Version::new(2, 1));
    assert_eq!(h[0].1.stored_ms, 1001);
    // Ids assigned after a reopen never collide with the old ones.
    s.apply(&[hint("n2", 4, 4)]).unwrap();
    assert_eq!(s.hints_for("n2", 10).unwrap().len(), 3);
    let ids = vec![h[0].0.clone(), h[1].0.clone()];
    assert_eq!(
        s.apply(&[Mutation::DeleteHints(ids.clone())]).unwrap(),
        vec![WriteOutcome::Done { changed: true }]
    );
    assert_eq!(
        s.apply(&[Mutation::DeleteHints(ids)]).unwrap(),
        vec![WriteOutcome::Done { changed: false }]
    );
    let left = s.hints_for("n2", 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1.key, key_bytes(4));
    assert_eq!(s.hint_tallies()["n2"].count, 1);
    assert_eq!(s.hints_for("n3", 10).unwrap().len(), 1);
}

#[test]
fn hints_beyond_the_bound_drop_the_oldest_not_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let limits = HintLimits {
        max_count: 3,
        max_bytes: u64::MAX,
    };
    let s = Store::open_with(dir.path(), "n1", false, limits, 0).unwrap();
    for i in 0..3 {
        assert_eq!(
            s.apply(&[hint("n2", i, i as u64 + 1)]).unwrap()[0],
            WriteOutcome::Hinted { dropped: 0 }
        );
    }
    assert_eq!(
        s.apply(&[hint("n2", 9, 10)]).unwrap()[0],
        WriteOutcome::Hinted { dropped: 1 }
    );
    let keys: Vec<_> = s
        .hints_for("n2", 10)
        .unwrap()
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
    s.apply(&[
        Mutation::Put(write(1, None, 5)),
        Mutation::Put(write(2, None, 5)),
    ])
    .unwrap();
    // Key 2 was written again after the tombstone: its purge must not apply.
    s.apply(&[Mutation::Put(write(2, Some(b"back".to_vec()), 6))])
        .unwrap();
    let out = s
        .apply(&[
            Mutation::Purge {
                key: key_bytes(1),
                version: Version::new(5, 1),
            },
            Mutation::Purge {
                key: key_bytes(2),
                version: Version::new(5, 1),
            },
        ])
        .unwrap();
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
    assert!(s.tombstones(None, 10).unwrap().is_empty());
}

#[test]
fn generation_increases_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let g1 = Store::open(dir.path(), "n1", true)
        .unwrap()
        .bump_generation()
        .unwrap();
    let g2 = Store::open(dir.path(), "n1", true)
        .unwrap()
        .bump_generation()
        .unwrap();
    assert!(g2 > g1);
}

#[test]
fn scan_honours_token_bounds_and_resume_point() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), "n1", false).unwrap();
    let batch: Vec<_> = (0..50)
        .map(|i| Mutation::Put(write(i, Some(vec![i]), 1)))
        .collect();
    s.apply(&batch).unwrap();
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
