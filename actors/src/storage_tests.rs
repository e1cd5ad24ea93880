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
                    prop_assert_eq!(s.apply(std::slice::from_ref(&w)).unwrap(), vec![model_apply(&mut model, &w)]);
                }
                Op::Delete { key, ts } => {
                    let w = write(key, None, ts);
                    prop_assert_eq!(s.apply(std::slice::from_ref(&w)).unwrap(), vec![model_apply(&mut model, &w)]);
                }
                Op::Batch(items) => {
                    let ws: Vec<_> = items.into_iter().map(|(k, v, ts)| write(k, v, ts)).collect();
                    let expected: Vec<_> = ws.iter().map(|w| model_apply(&mut model, w)).collect();
                    prop_assert_eq!(s.apply(&ws).unwrap(), expected);
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
            prop_assert_eq!(s.get(k).unwrap().as_ref(), Some(r));
        }
    }
}

#[test]
fn durable_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), "n1", true).unwrap();
        s.apply(&[write(1, Some(b"v".to_vec()), 5)]).unwrap();
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
