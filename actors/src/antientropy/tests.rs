use super::pages::{check_page, leaf_spans, user_key};
use super::*;
use crate::storage::trees::PartitionTrees;
use crate::storage::{Mutation, Store};
use crate::version::Version;
use crate::wire::ErrorCode;
use bytes::Bytes;

/// The anti-entropy service of n1 among `members` (N = `n`), over an empty
/// store in `dir`.
fn responder(dir: &std::path::Path, members: &[&str], n: usize) -> RepairService {
    let store = Store::open(dir, "n1", false).unwrap();
    let core = crate::coordinator::testing::node_core(store, members, n);
    let config = RepairConfig {
        interval: Duration::from_secs(600),
        bandwidth_bytes_per_sec: 16 << 20,
        gc_grace_ms: 60_000,
        max_frame: 16 << 20,
        max_value: 1 << 20,
        peer_budget: Duration::from_secs(60),
    };
    RepairService::new(core, config)
}

fn roots(svc: &RepairService, partitions: Vec<u32>) -> Request {
    Request::PartitionRoots {
        layout: svc.core.view().layout.fingerprint(),
        depth: svc.core.local.store.with_trees(|t| t.depth()),
        partitions,
    }
}

async fn answer(svc: &RepairService, from: &str, r: Request) -> Response {
    svc.handle(from, r).await.expect("an anti-entropy request")
}

fn put(svc: &RepairService, key: &str, ts: u64) {
    let w = crate::storage::WriteOp {
        key: Bytes::copy_from_slice(key.as_bytes()),
        record: crate::record::Record::value(Version::new(ts, 1), Bytes::from_static(b"v")),
    };
    svc.core.local.store.apply(&[Mutation::Put(w)]).unwrap();
}

/// Issue 16: a responder answers from the live trees — a committed write
/// shows in the next answer, with no tree built for the exchange.
#[actix::test]
async fn roots_are_answered_from_the_live_trees() {
    let dir = tempfile::tempdir().unwrap();
    let svc = responder(dir.path(), &["n1", "n2", "n3"], 3);
    let q = svc.core.view().layout.partitions();
    let all: Vec<u32> = (0..q).collect();
    let Response::Hashes { hashes } = answer(&svc, "n2", roots(&svc, all.clone())).await else {
        panic!("no hashes")
    };
    assert!(
        hashes.iter().all(|&h| h == 0),
        "an empty store has empty trees"
    );
    put(&svc, "k", 1_000 << 16);
    let p = svc.core.view().layout.partition_of_key(b"k");
    let Response::Hashes { hashes } = answer(&svc, "n2", roots(&svc, all)).await else {
        panic!("no hashes")
    };
    for (i, h) in hashes.iter().enumerate() {
        assert_eq!(*h != 0, i as u32 == p, "partition {i}");
    }
    // Its leaf's versions are there too.
    let leaf = svc.core.local.store.with_trees(|t| t.leaf_of_key(b"k").1);
    let depth = svc.core.local.store.with_trees(|t| t.depth());
    let r = Request::LeafVersions {
        partition: p,
        depth,
        leaves: vec![leaf],
        after: None,
        max_bytes: 1 << 16,
    };
    let Response::Versions { items, next } = answer(&svc, "n2", r).await else {
        panic!("no versions")
    };
    assert_eq!(items.len(), 1);
    assert_eq!(user_key(&items[0].0), Bytes::from_static(b"k"));
    assert!(next.is_none());
}

/// A peer may ask only about partitions it replicates with us, under our
/// layout and tree depth.
#[actix::test]
async fn questions_outside_what_we_share_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let svc = responder(dir.path(), &["n1", "n2", "n3", "n4"], 2);
    let layout = svc.core.view().layout.clone();
    let not_shared = (0..layout.partitions())
        .find(|&p| !layout.replicas(p).contains(&"n2") && layout.replicas(p).contains(&"n1"))
        .expect("a partition n1 holds without n2");
    let shared = layout.shared("n1", "n2")[0];
    let invalid = |r: Response| {
        matches!(
            r,
            Response::Error {
                code: ErrorCode::Invalid,
                ..
            }
        )
    };
    assert!(invalid(
        answer(&svc, "n2", roots(&svc, vec![not_shared])).await
    ));
    assert!(invalid(
        answer(&svc, "stranger", roots(&svc, vec![shared])).await
    ));
    assert!(invalid(
        answer(&svc, "n2", roots(&svc, vec![layout.partitions()])).await
    ));
    let other_layout = Request::PartitionRoots {
        layout: layout.fingerprint() ^ 1,
        depth: svc.core.local.store.with_trees(|t| t.depth()),
        partitions: vec![shared],
    };
    assert!(invalid(answer(&svc, "n2", other_layout).await));
    let deeper = Request::TreeHashes {
        partition: shared,
        layout: layout.fingerprint(),
        depth: 12,
        level: 0,
        indices: vec![0],
    };
    assert!(invalid(answer(&svc, "n2", deeper).await));
    let no_leaf = Request::LeafVersions {
        partition: shared,
        depth: svc.core.local.store.with_trees(|t| t.depth()),
        leaves: vec![u32::MAX],
        after: None,
        max_bytes: 1 << 16,
    };
    assert!(invalid(answer(&svc, "n2", no_leaf).await));
    assert!(!invalid(
        answer(&svc, "n2", roots(&svc, vec![shared])).await
    ));
}

#[test]
fn leaf_spans_refuse_leaves_that_do_not_exist() {
    let trees = PartitionTrees::new(2, 3);
    assert!(leaf_spans(&trees, 0, &[8]).is_none());
    let spans = leaf_spans(&trees, 1, &[1, 0, 1]).unwrap();
    assert_eq!(spans, vec![trees.leaf_span(1, 0), trees.leaf_span(1, 1)]);
    assert!(spans[0].1 < spans[1].0);
    assert_eq!(spans[0].0, 1u64 << 62);
}

/// Data keys of three keys, in token order.
fn three_keys() -> [Bytes; 3] {
    let mut keys: Vec<Bytes> = ["a", "b", "c"]
        .iter()
        .map(|k| Bytes::from(crate::storage::data_key(k.as_bytes())))
        .collect();
    keys.sort();
    [keys[0].clone(), keys[1].clone(), keys[2].clone()]
}

/// Review of 05: a peer that answered the same page with a resume point
/// forever kept the exchange (and every later pass) running forever.
#[test]
fn pages_that_repeat_or_stray_are_refused() {
    use crate::storage::data_key_token;
    let [a, b, c] = three_keys();
    let (ta, tc) = (data_key_token(&a), data_key_token(&c));
    let spans = [(ta, ta), (tc, tc)];
    let page = vec![(a.clone(), 1, 1), (c.clone(), 1, 1)];
    let next = c.clone();
    assert!(check_page(&page, Some(&next), None, &spans).is_ok());
    // The same page again after it: out of order.
    assert!(check_page(&page, Some(&next), Some(&next), &spans).is_err());
    let stray = vec![(b, 1, 1)];
    assert!(check_page(&stray, None, None, &spans).is_err());
    let backwards = vec![(c, 1, 1), (a.clone(), 1, 1)];
    assert!(check_page(&backwards, None, None, &spans).is_err());
    assert!(check_page(&[], Some(&next), None, &spans).is_err());
    let behind = a;
    assert!(check_page(&page, Some(&behind), None, &spans).is_err());
}

#[test]
fn user_keys_of_malformed_data_keys_are_empty() {
    assert_eq!(user_key(&Bytes::from_static(b"abc")), Bytes::new());
    assert_eq!(
        user_key(&Bytes::from_static(b"12345678k")),
        Bytes::from_static(b"k")
    );
}

/// Third review of issue 16: a record over the value limit (stored before
/// the limit was lowered) is answered as absent to a pull, as a corrupt
/// one is: the asker would refuse it, and it would outgrow the answer.
#[actix::test]
async fn a_record_over_the_value_limit_is_answered_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let svc = responder(dir.path(), &["n1", "n2", "n3"], 3);
    let big = crate::storage::WriteOp {
        key: Bytes::from_static(b"big"),
        record: crate::record::Record::value(
            Version::new(1_000 << 16, 1),
            Bytes::from(vec![b'x'; (1 << 20) + 1]),
        ),
    };
    svc.core.local.store.apply(&[Mutation::Put(big)]).unwrap();
    put(&svc, "small", 1_000 << 16);
    let r = Request::ReadMany {
        keys: vec![Bytes::from_static(b"big"), Bytes::from_static(b"small")],
        max_bytes: 1 << 24,
    };
    let Response::Records { items } = answer(&svc, "n2", r).await else {
        panic!("no records")
    };
    assert_eq!(items.len(), 2);
    assert!(items[0].1.is_none(), "the oversized record is left out");
    assert!(items[1].1.is_some());
}
